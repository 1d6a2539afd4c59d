//! Prometheus metrics in the text exposition format, on the admin listener's `/metrics`.
//! Labels stay bounded: auth kinds, outcomes and reasons are fixed sets, rule names come
//! from the config; never a user, a key or a raw path. One `Metrics` lives for the whole
//! process: reloads keep counting.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::server::ThreadOwned;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// A latency histogram. Each listener thread keeps its own, in its shard of [`Counts`]
/// under the lock it already holds, so observing writes no memory another thread writes.
#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum_micros: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum_micros += d.as_micros() as u64;
    }

    fn add(&mut self, other: &Histogram) {
        for (t, c) in self.counts.iter_mut().zip(&other.counts) {
            *t += c;
        }
        self.count += other.count;
        self.sum_micros += other.sum_micros;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// One finished request, as the metrics see it.
pub struct Sample<'a> {
    pub auth: &'static str,
    pub outcome: &'static str,
    pub reason: Option<&'static str>,
    pub status: u16,
    pub rule: Option<&'a str>,
    pub denied: bool,
    pub total: Duration,
    pub upstream: Option<Duration>,
}

/// A multiply-xor hash eight bytes at a time, for the counters' label keys: they come
/// from fixed sets and the config, never from a request, so a keyed hash (SipHash,
/// several times the cost) protects nothing. Each word is mixed in by a multiplication,
/// and `finish` folds the high half (where a product gathers its input) into the low
/// half the map indexes by.
#[derive(Clone, Copy)]
struct LabelHash(u64);

impl Default for LabelHash {
    fn default() -> Self {
        // Not zero: leading zero words then still move the state.
        LabelHash(0xcbf2_9ce4_8422_2325)
    }
}

impl LabelHash {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
    }
}

impl std::hash::Hasher for LabelHash {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^ (h >> 32)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.mix(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        // The length in the top byte: "a" and "a\0" differ.
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i) | 1 << 60);
    }

    fn write_u16(&mut self, i: u16) {
        self.mix(u64::from(i) | 2 << 60);
    }
}

type LabelMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<LabelHash>>;

/// The labelled counters, one set per shard.
#[derive(Default)]
struct Counts {
    requests: LabelMap<(&'static str, &'static str, u16), u64>,
    reasons: LabelMap<&'static str, u64>,
    /// By rule name: (allowed, denied).
    decisions: LabelMap<String, (u64, u64)>,
    /// Time from sending a request to Jira to Jira's response head.
    upstream: Histogram,
    /// Time the proxy adds to a request.
    overhead: Histogram,
}

pub struct Metrics {
    /// The per-request counters, a shard per listener thread (at least one): each listener
    /// thread counts in its own, under a lock no other thread takes but `/metrics`, which
    /// adds them up. However many listener threads there are, no two share one (a thread
    /// that is no listener's, in tests and tools, counts in the first).
    shards: Box<[ThreadOwned<Mutex<Counts>>]>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    store_errors: AtomicU64,
    audit_failures: AtomicU64,
    rapid_resets: AtomicU64,
    /// Open connections, a count per listener thread and a last one for any other
    /// thread's: opening or closing one writes only the thread's own count, and the
    /// total is their sum.
    open: Box<[ThreadOwned<AtomicI64>]>,
}

/// Counts an open connection on its thread's count while it lives.
pub struct ConnectionGuard<'a>(&'a AtomicI64);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    /// Metrics without listener threads (tests, tools): one shard, and only the total of
    /// open connections.
    fn default() -> Metrics {
        Metrics::with_listeners(0)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counters only: a poisoned map is still a map of counts.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Prometheus label values: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// Metrics for a server with `workers` listener threads.
    pub fn with_listeners(workers: usize) -> Metrics {
        Metrics {
            shards: (0..workers.max(1)).map(|_| ThreadOwned::default()).collect(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            audit_failures: AtomicU64::new(0),
            rapid_resets: AtomicU64::new(0),
            open: (0..=workers).map(|_| ThreadOwned::default()).collect(),
        }
    }

    /// The listener threads' open-connection counts (the last count is other threads').
    fn listeners(&self) -> &[ThreadOwned<AtomicI64>] {
        &self.open[..self.open.len() - 1]
    }

    pub fn record(&self, s: &Sample<'_>) {
        let class = s.status / 100 * 100;
        // A listener thread's index is below the shards' count: no division needed.
        let mut shard = lock(
            self.shards
                .get(crate::server::worker_index())
                .unwrap_or(&self.shards[0]),
        );
        *shard.requests.entry((s.auth, s.outcome, class)).or_default() += 1;
        if let Some(r) = s.reason {
            *shard.reasons.entry(r).or_default() += 1;
        }
        if let Some(rule) = s.rule {
            let d = &mut shard.decisions;
            // Looked up by &str: a rule's name is allocated once, not per request.
            let counts = match d.get_mut(rule) {
                Some(c) => c,
                None => d.entry(rule.to_owned()).or_default(),
            };
            if s.denied {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
        }
        if let Some(up) = s.upstream {
            shard.upstream.observe(up);
            shard.overhead.observe(s.total.saturating_sub(up));
        } else {
            shard.overhead.observe(s.total);
        }
    }

    pub fn reloaded(&self, ok: bool) {
        let c = if ok { &self.reloads_ok } else { &self.reloads_failed };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_failure(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP/2 connection shut down for cancelling more streams than it let be answered.
    pub fn rapid_reset(&self) {
        self.rapid_resets.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a connection served by the calling listener thread while the guard lives.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        let others = self.open.len() - 1;
        let i = crate::server::listener_thread()
            .filter(|i| *i < others)
            .unwrap_or(others);
        let count = &self.open[i].0;
        count.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(count)
    }

    /// The memory state store's part of the text exposition (none for Redis, which bounds
    /// itself).
    pub fn render_state(out: &mut String, f: &crate::store::Fullness) {
        let _ = writeln!(
            out,
            "# HELP jap_state_entries Entries in the memory state store now.\n# TYPE jap_state_entries gauge\njap_state_entries {}",
            f.entries
        );
        let _ = writeln!(
            out,
            "# HELP jap_state_max_entries The memory state store's bound (state.max_entries).\n# TYPE jap_state_max_entries gauge\njap_state_max_entries {}",
            f.max_entries
        );
        out.push_str(
            "# HELP jap_state_dropped_total Entries the full memory state store dropped to make room, by rank, in the order it drops them.\n\
             # TYPE jap_state_dropped_total counter\n",
        );
        for (rank, n) in &f.dropped {
            let _ = writeln!(out, "jap_state_dropped_total{{rank=\"{rank}\"}} {n}");
        }
    }

    /// The text exposition; `caches` are (name, hits, misses) of the current runtime.
    pub fn render(&self, caches: &[(&str, u64, u64)]) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP jap_requests_total Requests by how the caller authenticated, the outcome and the status class.\n# TYPE jap_requests_total counter\n");
        let mut totals = Counts::default();
        for shard in &self.shards {
            let shard = lock(shard);
            for (k, v) in &shard.requests {
                *totals.requests.entry(*k).or_default() += v;
            }
            for (k, v) in &shard.reasons {
                *totals.reasons.entry(*k).or_default() += v;
            }
            for (k, (a, d)) in &shard.decisions {
                let t = totals.decisions.entry(k.clone()).or_default();
                t.0 += a;
                t.1 += d;
            }
            totals.upstream.add(&shard.upstream);
            totals.overhead.add(&shard.overhead);
        }
        let mut rows: Vec<_> = totals.requests.iter().map(|(k, v)| (*k, *v)).collect();
        rows.sort();
        for ((auth, outcome, class), n) in rows {
            let _ = writeln!(
                out,
                "jap_requests_total{{auth=\"{auth}\",outcome=\"{outcome}\",status=\"{}xx\"}} {n}",
                class / 100
            );
        }
        out.push_str("# HELP jap_refusals_total Requests with a reason (refusals, report-mode denials, failures).\n# TYPE jap_refusals_total counter\n");
        let mut rows: Vec<_> = totals.reasons.iter().map(|(k, v)| (*k, *v)).collect();
        rows.sort();
        for (reason, n) in rows {
            let _ = writeln!(out, "jap_refusals_total{{reason=\"{reason}\"}} {n}");
        }
        out.push_str("# HELP jap_decisions_total Access decisions by the rule that made them.\n# TYPE jap_decisions_total counter\n");
        let mut rows: Vec<_> = totals.decisions.into_iter().collect();
        rows.sort();
        for (rule, (allowed, denied)) in rows {
            for (effect, n) in [("allow", allowed), ("deny", denied)] {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "jap_decisions_total{{rule=\"{}\",effect=\"{effect}\"}} {n}",
                        label(&rule)
                    );
                }
            }
        }
        totals.upstream.render(
            &mut out,
            "jap_upstream_duration_seconds",
            "Time from sending a request to Jira to Jira's response head.",
        );
        totals.overhead.render(
            &mut out,
            "jap_proxy_overhead_seconds",
            "Time the proxy adds to a request (total minus Jira's part).",
        );
        out.push_str("# HELP jap_cache_hits_total Cache hits (verified credentials and tokens, decoded sessions).\n# TYPE jap_cache_hits_total counter\n");
        for (name, hits, _) in caches {
            let _ = writeln!(out, "jap_cache_hits_total{{cache=\"{name}\"}} {hits}");
        }
        out.push_str("# HELP jap_cache_misses_total Cache misses.\n# TYPE jap_cache_misses_total counter\n");
        for (name, _, misses) in caches {
            let _ = writeln!(out, "jap_cache_misses_total{{cache=\"{name}\"}} {misses}");
        }
        let simple = [
            (
                "jap_reloads_total{result=\"ok\"}",
                "counter",
                "jap_reloads_total",
                "Config reloads.",
                self.reloads_ok.load(Ordering::Relaxed) as i64,
            ),
            (
                "jap_reloads_total{result=\"failed\"}",
                "",
                "",
                "",
                self.reloads_failed.load(Ordering::Relaxed) as i64,
            ),
            (
                "jap_store_errors_total",
                "counter",
                "jap_store_errors_total",
                "State store operations that failed.",
                self.store_errors.load(Ordering::Relaxed) as i64,
            ),
            (
                "jap_audit_write_failures_total",
                "counter",
                "jap_audit_write_failures_total",
                "Audit lines that could not be written.",
                self.audit_failures.load(Ordering::Relaxed) as i64,
            ),
            (
                "jap_http2_rapid_reset_total",
                "counter",
                "jap_http2_rapid_reset_total",
                "HTTP/2 connections shut down for cancelling more streams than they let be answered.",
                self.rapid_resets.load(Ordering::Relaxed) as i64,
            ),
            (
                "jap_open_connections",
                "gauge",
                "jap_open_connections",
                "Client connections open now.",
                self.open.iter().map(|c| c.load(Ordering::Relaxed)).sum(),
            ),
        ];
        for (series, kind, name, help, v) in simple {
            if !kind.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
            let _ = writeln!(out, "{series} {v}");
        }
        if !self.listeners().is_empty() {
            out.push_str(
                "# HELP jap_listener_connections Client connections open now, by listener thread (server.workers).\n\
                 # TYPE jap_listener_connections gauge\n",
            );
            for (i, c) in self.listeners().iter().enumerate() {
                let _ = writeln!(
                    out,
                    "jap_listener_connections{{listener=\"{i}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_hash_apart_and_spread_over_the_low_bits() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<LabelHash>::default();
        let mut seen = std::collections::HashSet::new();
        let mut keys = 0;
        for auth in crate::auth::AuthKind::ALL.iter().map(|k| k.as_str()).chain(["none"]) {
            for outcome in [
                "authenticated",
                "anonymous",
                "rejected",
                "error",
                "bad_request",
                "login",
                "delegated",
            ] {
                for class in [100u16, 200, 300, 400, 500] {
                    seen.insert(build.hash_one((auth, outcome, class)));
                    keys += 1;
                }
            }
        }
        assert_eq!(seen.len(), keys, "every request series hashes apart");
        // Rule names, as an admin numbers them: their low bits spread as random ones would
        // (1,000 random values fill about 632 of 1,024 slots).
        let names: Vec<String> = (0..1000).map(|i| format!("rule-{i}")).collect();
        let slots: std::collections::HashSet<u64> = names.iter().map(|n| build.hash_one(n.as_str()) & 1023).collect();
        assert!(slots.len() > 580, "{} of 1,024 slots", slots.len());
        assert_ne!(build.hash_one("a"), build.hash_one("a\0"));
        let words = |b: &[u8]| {
            let mut h = LabelHash::default();
            std::hash::Hasher::write(&mut h, b);
            std::hash::Hasher::finish(&h)
        };
        assert_ne!(words(b""), words(&[0; 8]), "zero words still count");
    }

    #[test]
    fn the_memory_stores_fullness_is_a_gauge_and_its_drops_a_counter_by_rank() {
        let mut out = String::new();
        let f = crate::store::Fullness {
            entries: 39,
            max_entries: 40,
            dropped: vec![("zero_counter", 160), ("proven", 0)],
        };
        Metrics::render_state(&mut out, &f);
        for line in [
            "# TYPE jap_state_entries gauge\njap_state_entries 39\n",
            "# TYPE jap_state_max_entries gauge\njap_state_max_entries 40\n",
            "# TYPE jap_state_dropped_total counter\n",
            "jap_state_dropped_total{rank=\"zero_counter\"} 160\n",
            "jap_state_dropped_total{rank=\"proven\"} 0\n",
        ] {
            assert!(out.contains(line), "{line:?} not in {out}");
        }
    }

    #[test]
    fn counts_from_every_listener_thread_add_up() {
        let m = std::sync::Arc::new(Metrics::with_listeners(4));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let m = m.clone();
                std::thread::spawn(move || {
                    crate::server::set_worker_index(i);
                    for _ in 0..=i {
                        m.record(&Sample {
                            auth: "api_key",
                            outcome: "authenticated",
                            reason: Some("denied_by_rule"),
                            status: 403,
                            rule: Some("deny-all"),
                            denied: true,
                            total: Duration::from_millis(1),
                            upstream: None,
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let text = m.render(&[]);
        assert!(
            text.contains("jap_requests_total{auth=\"api_key\",outcome=\"authenticated\",status=\"4xx\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("jap_decisions_total{rule=\"deny-all\",effect=\"deny\"} 10"),
            "{text}"
        );
        assert!(text.contains("denied_by_rule\"} 10"), "{text}");
        // Each thread's latencies are its own shard's; the histogram adds them up.
        assert!(
            text.contains("jap_proxy_overhead_seconds_bucket{le=\"0.001\"} 10"),
            "{text}"
        );
        assert!(text.contains("jap_proxy_overhead_seconds_count 10"), "{text}");
        assert!(text.contains("jap_proxy_overhead_seconds_sum 0.01\n"), "{text}");
        assert!(text.contains("jap_upstream_duration_seconds_count 0"), "{text}");
    }

    #[test]
    fn no_two_listener_threads_count_under_one_lock() {
        // Thread 0's shard held (as a scrape holds each in turn): thread 16 of 20 still
        // counts at once, where a fixed number of shards would have it wait for 0's.
        let m = std::sync::Arc::new(Metrics::with_listeners(20));
        let held = lock(&m.shards[0]);
        let (done, finished) = std::sync::mpsc::channel();
        let counter = m.clone();
        let t = std::thread::spawn(move || {
            crate::server::set_worker_index(16);
            counter.record(&Sample {
                auth: "basic",
                outcome: "authenticated",
                reason: None,
                status: 200,
                rule: None,
                denied: false,
                total: Duration::from_millis(1),
                upstream: None,
            });
            let _ = done.send(());
        });
        let counted = finished.recv_timeout(Duration::from_secs(10));
        drop(held);
        t.join().expect("thread");
        assert!(counted.is_ok(), "thread 16 waited for thread 0's lock");
        assert!(m.render(&[]).contains("jap_proxy_overhead_seconds_count 1\n"));
    }

    #[test]
    fn histograms_are_cumulative_and_labels_are_escaped() {
        let m = Metrics::default();
        for (ms, rule) in [(1, Some("a \"quoted\" rule")), (3, None), (2000, None)] {
            m.record(&Sample {
                auth: "basic",
                outcome: "authenticated",
                reason: None,
                status: 200,
                rule,
                denied: false,
                total: Duration::from_millis(ms + 1),
                upstream: Some(Duration::from_millis(ms)),
            });
        }
        let text = m.render(&[("basic", 5, 1)]);
        assert!(text.contains("jap_requests_total{auth=\"basic\",outcome=\"authenticated\",status=\"2xx\"} 3"));
        assert!(
            text.contains("jap_upstream_duration_seconds_bucket{le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("jap_upstream_duration_seconds_bucket{le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(text.contains("jap_upstream_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("jap_upstream_duration_seconds_count 3"));
        assert!(
            text.contains("jap_decisions_total{rule=\"a \\\"quoted\\\" rule\",effect=\"allow\"} 1"),
            "{text}"
        );
        assert!(text.contains("jap_cache_hits_total{cache=\"basic\"} 5"));
        let guard = m.connection();
        assert!(m.render(&[]).contains("jap_open_connections 1"));
        drop(guard);
        assert!(m.render(&[]).contains("jap_open_connections 0"));
    }

    #[test]
    fn open_connections_are_counted_by_listener_thread() {
        let m = std::sync::Arc::new(Metrics::with_listeners(2));
        crate::server::set_worker_index(1);
        let guard = m.connection();
        crate::server::set_worker_index(0);
        let text = m.render(&[]);
        assert!(text.contains("jap_listener_connections{listener=\"0\"} 0\n"), "{text}");
        assert!(text.contains("jap_listener_connections{listener=\"1\"} 1\n"), "{text}");
        assert!(text.contains("jap_open_connections 1\n"), "{text}");
        // A connection on a thread that is no listener's, or on a listener beyond those
        // counted, adds to the total only.
        let elsewhere = std::thread::spawn({
            let m = m.clone();
            move || {
                let guard = m.connection();
                let text = m.render(&[]);
                drop(guard);
                text
            }
        });
        let text = elsewhere.join().expect("thread");
        assert!(text.contains("jap_open_connections 2\n"), "{text}");
        assert!(text.contains("jap_listener_connections{listener=\"0\"} 0\n"), "{text}");
        assert!(text.contains("jap_listener_connections{listener=\"1\"} 1\n"), "{text}");
        crate::server::set_worker_index(5);
        let beyond = m.connection();
        let text = m.render(&[]);
        assert!(text.contains("jap_open_connections 2\n"), "{text}");
        assert!(text.contains("jap_listener_connections{listener=\"1\"} 1\n"), "{text}");
        assert!(!text.contains("listener=\"5\""), "{text}");
        drop(beyond);
        crate::server::set_worker_index(0);
        drop(guard);
        assert!(m.render(&[]).contains("jap_listener_connections{listener=\"1\"} 0\n"));
        // Without listener threads (tests, tools): only the total.
        assert!(!Metrics::default().render(&[]).contains("jap_listener_connections"));
    }
}
