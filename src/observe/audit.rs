//! The audit log: one JSON line per request, written before the response leaves, so a
//! client that has its answer can find its line. Fields are fixed and never carry a
//! secret: no header values, no query string, no credential.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::config::AuditTarget;
use crate::pipeline::RequestCtx;
use crate::pipeline::admit::RequestId;
use crate::wire::itoa;

/// Appends a JSON string (quoted and escaped).
fn string(out: &mut Vec<u8>, s: &str) {
    // Most fields need no escape (a path, a user name, an id): copied whole, as JSON
    // allows any character but a quote, a backslash and the controls below U+0020.
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// True when `s` holds a quote, a backslash or a control below U+0020; eight bytes at a
/// time (a byte is below `n` when subtracting `n` borrows into its top bit).
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & TOPS;
    let bad = |w: &[u8]| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        below(x, 0x20) | below(x ^ (ONES * u64::from(b'"')), 1) | below(x ^ (ONES * u64::from(b'\\')), 1) != 0
    };
    if s.len() < 8 {
        return s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    let mut words = s.chunks_exact(8);
    if words.any(bad) {
        return true;
    }
    // The last bytes as the last eight, overlapping words already looked at.
    !words.remainder().is_empty() && bad(&s[s.len() - 8..])
}

/// Appends a JSON string that needs no escape by construction: a kind of credential (one
/// of [`crate::auth::AuthKind`]'s names), a method (an HTTP token, which `http::Method`
/// holds only without quote, backslash or control), a request id (hex, or a caller's id of
/// letters, digits and `-_.:` only).
fn plain(out: &mut Vec<u8>, s: impl AsRef<[u8]>) {
    let s = s.as_ref();
    debug_assert!(!needs_escape(s), "{s:?} needs escapes");
    out.push(b'"');
    out.extend_from_slice(s);
    out.push(b'"');
}

fn optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// One audit line, fields in a fixed order (`would_deny` only when some rule would have
/// denied), appended straight to `out`: this runs for every request.
fn line(out: &mut Vec<u8>, ctx: &RequestCtx, rule: Option<&str>, status: StatusCode, total: Duration) {
    out.extend_from_slice(b"{\"time\":\"");
    crate::time::write_rfc3339(out, ctx.time);
    out.extend_from_slice(b"\",\"request_id\":");
    plain(out, ctx.id.as_bytes());
    out.extend_from_slice(b",\"client_ip\":\"");
    crate::pipeline::admit::write_ip(out, ctx.client_ip);
    out.extend_from_slice(b"\",\"method\":");
    plain(out, ctx.method.as_str());
    out.extend_from_slice(b",\"path\":");
    string(
        out,
        ctx.path.as_ref().map_or(ctx.raw_path.as_str(), |p| p.decoded.as_str()),
    );
    out.extend_from_slice(b",\"auth\":");
    match ctx.auth_kind {
        Some(k) => plain(out, k.as_str()),
        None => out.extend_from_slice(b"null"),
    }
    // Outcomes and reasons are the proxy's own words too, but written in many places:
    // they are checked as any string is.
    out.extend_from_slice(b",\"outcome\":");
    string(out, ctx.outcome);
    out.extend_from_slice(b",\"reason\":");
    optional(out, ctx.reason);
    out.extend_from_slice(b",\"user\":");
    optional(out, ctx.jira_user.as_deref());
    out.extend_from_slice(b",\"rule\":");
    optional(out, rule);
    if !ctx.would_deny.is_empty() {
        out.extend_from_slice(b",\"would_deny\":");
        string(out, &ctx.would_deny);
    }
    out.extend_from_slice(b",\"jira_request_id\":");
    optional(out, ctx.jira_request_id.as_ref().and_then(|v| v.to_str().ok()));
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa(u64::from(status.as_u16()), &mut [0u8; 20]));
    out.extend_from_slice(b",\"duration_ms\":");
    milliseconds(out, total);
    out.extend_from_slice(b"}\n");
}

/// `d` in milliseconds to the microsecond, as a JSON number (`1.234`, `0.05`, `12.0`),
/// written from integers: no float formatting on the request path.
fn milliseconds(out: &mut Vec<u8>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    out.extend_from_slice(itoa(micros / 1000, &mut [0u8; 20]));
    out.push(b'.');
    let frac = micros % 1000;
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    // Trailing zeros dropped, one digit kept.
    let keep = if frac % 100 == 0 {
        1
    } else if frac % 10 == 0 {
        2
    } else {
        3
    };
    out.extend_from_slice(&digits[..keep]);
}

/// Where lines go. A file is opened for appending and written without a lock: each write
/// is one `write(2)` of whole lines at the end of the file (O_APPEND), so listener threads
/// never wait for each other's disk writes.
enum Sink {
    File(File),
    /// Standard output's own line buffer, under its own lock: a line goes out whole.
    Stdout(io::Stdout),
}

impl Sink {
    fn write(&self, text: &[u8]) -> bool {
        match self {
            Sink::File(f) => (&*f).write_all(text).is_ok(),
            Sink::Stdout(out) => {
                // Whole lines pass its line buffer straight to write(2); the flush leaves
                // nothing behind in it, so an error here is lines not written.
                let mut out = out.lock();
                out.write_all(text).and_then(|_| out.flush()).is_ok()
            }
        }
    }
}

/// Lines gathered before they are written (`audit.flush`): one buffer per listener thread
/// (see `server::worker_index`), so a thread only ever waits for the flusher, briefly.
struct Gathered {
    every: Duration,
    buffers: Vec<crate::server::ThreadOwned<Mutex<Vec<u8>>>>,
}

/// A thread's gathered lines are written once they reach this many bytes.
const GATHER_LIMIT: usize = 64 * 1024;

pub struct Audit {
    out: Option<Sink>,
    gathered: Option<Gathered>,
    failures: AtomicU64,
    healthy: std::sync::atomic::AtomicBool,
}

impl Audit {
    /// Opens the sink. `flush` zero writes each line as its request ends; more gathers
    /// each of `threads` listener threads' lines and writes them together.
    pub fn open(target: &AuditTarget, flush: Duration, threads: usize) -> io::Result<Audit> {
        let out = match target {
            AuditTarget::Off => None,
            AuditTarget::Stdout => Some(Sink::Stdout(io::stdout())),
            AuditTarget::File(path) => Some(Sink::File(OpenOptions::new().create(true).append(true).open(path)?)),
        };
        let gathered = (out.is_some() && !flush.is_zero()).then(|| Gathered {
            every: flush,
            buffers: (0..threads.max(1)).map(|_| Default::default()).collect(),
        });
        Ok(Audit {
            out,
            gathered,
            failures: AtomicU64::new(0),
            healthy: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Lines that could not be written.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// How often gathered lines must be written (`None`: each is written at once).
    pub fn flush_every(&self) -> Option<Duration> {
        self.gathered.as_ref().map(|g| g.every)
    }

    /// Writes the request's line (or gathers it, with `audit.flush`); false when it
    /// could not be written.
    /// `rule`: the name of the rule that decided; `total`: the request's time from arrival
    /// to its answer.
    pub fn record(&self, ctx: &RequestCtx, rule: Option<&str>, status: StatusCode, total: Duration) -> bool {
        self.push(Some(&ctx.id), |out| line(out, ctx, rule, status, total))
    }

    /// Appends one line made by `make` (for request `id`), writing it now or gathering it.
    fn push(&self, id: Option<&RequestId>, make: impl FnOnce(&mut Vec<u8>)) -> bool {
        let Some(out) = &self.out else { return true };
        match &self.gathered {
            None => {
                let mut text = Vec::with_capacity(384);
                make(&mut text);
                let ok = out.write(&text);
                if !ok {
                    let id = id.map_or(std::borrow::Cow::Borrowed("-"), |i| {
                        String::from_utf8_lossy(i.as_bytes())
                    });
                    tracing::error!(request_id = %id, "audit line could not be written");
                }
                self.wrote(ok, 1)
            }
            Some(g) => {
                let mine = &g.buffers[crate::server::worker_index() % g.buffers.len()];
                let mut buf = mine.lock().unwrap_or_else(|p| p.into_inner());
                make(&mut buf);
                if buf.len() < GATHER_LIMIT {
                    return self.healthy();
                }
                self.write_out(out, &mut buf)
            }
        }
    }

    /// Writes what every thread has gathered. Runs every `flush_every`, at shutdown and
    /// when the config is replaced.
    pub fn flush(&self) {
        if let (Some(out), Some(g)) = (&self.out, &self.gathered) {
            for b in &g.buffers {
                let mut buf = b.lock().unwrap_or_else(|p| p.into_inner());
                if !buf.is_empty() {
                    self.write_out(out, &mut buf);
                }
            }
        }
    }

    fn write_out(&self, out: &Sink, buf: &mut Vec<u8>) -> bool {
        let ok = out.write(buf);
        // Lines are counted only when they are lost: a pass over every byte written (about
        // 1.2k instructions per line) buys nothing when the write succeeds.
        let lines = if ok {
            0
        } else {
            buf.iter().filter(|&&b| b == b'\n').count() as u64
        };
        buf.clear();
        if !ok {
            tracing::error!(lines, "gathered audit lines could not be written");
        }
        self.wrote(ok, lines)
    }

    fn wrote(&self, ok: bool, lines: u64) -> bool {
        if !ok {
            self.failures.fetch_add(lines, Ordering::Relaxed);
        }
        // Written only when it changes: every thread's requests read it.
        if self.healthy.load(Ordering::Relaxed) != ok {
            self.healthy.store(ok, Ordering::Relaxed);
        }
        ok
    }

    /// The last write succeeded (or nothing was written yet).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

impl Drop for Audit {
    /// A replaced config's gathered lines are written when its last request ends.
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_milliseconds_to_the_microsecond() {
        let cases = [
            (Duration::ZERO, "0.0"),
            (Duration::from_nanos(999), "0.0"),
            (Duration::from_micros(50), "0.05"),
            (Duration::from_micros(1_234), "1.234"),
            (Duration::from_micros(12_000), "12.0"),
            (Duration::from_micros(100_700), "100.7"),
            (Duration::from_secs(3_600), "3600000.0"),
        ];
        for (d, text) in cases {
            let mut out = Vec::new();
            milliseconds(&mut out, d);
            assert_eq!(String::from_utf8_lossy(&out), text, "{d:?}");
        }
        for micros in (0..20_000u64).chain([999_999, 1_000_001, u64::from(u32::MAX)]) {
            let mut out = Vec::new();
            milliseconds(
                &mut out,
                Duration::from_micros(micros) + Duration::from_nanos(micros % 1000),
            );
            let read: f64 = serde_json::from_slice(&out).expect("a JSON number");
            assert_eq!(read, micros as f64 / 1000.0, "{micros} us");
        }
    }

    /// A test's own directory for an audit file, removed when the test ends (pass or fail).
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("jap-audit-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            Scratch(dir)
        }

        fn file(&self) -> std::path::PathBuf {
            self.0.join("audit.log")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn numbered(out: &mut Vec<u8>, thread: usize, n: usize) {
        // Long enough that a thread's buffer fills, and is written, many times over.
        out.extend_from_slice(
            format!("{{\"thread\":{thread},\"n\":{n},\"pad\":\"{}\"}}\n", "x".repeat(200)).as_bytes(),
        );
    }

    #[test]
    fn escapes_are_found_wherever_they_lie() {
        for len in [0usize, 1, 7, 8, 9, 16, 23] {
            for pos in 0..len {
                for b in 0u8..=255 {
                    let mut s = vec![b'a'; len];
                    s[pos] = b;
                    let naive = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(&s), naive, "byte {b:#x} at {pos} of {len}");
                }
            }
        }
    }

    #[test]
    fn strings_are_json_whether_or_not_they_need_escapes() {
        for s in [
            "/rest/api/2/issue/ABC-1",
            "",
            "ünïcode ✓ \u{2028}",
            "quote \" and backslash \\",
            "line\nbreak\ttab\u{1}\u{1f}",
            "\u{7f}del",
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            let back: String = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(back, s);
            assert!(!out.iter().any(|b| *b < 0x20), "no raw control byte in {s:?}");
        }
    }

    #[test]
    fn what_is_written_without_an_escape_scan_never_needs_one() {
        for k in crate::auth::AuthKind::ALL {
            assert!(!needs_escape(k.as_str().as_bytes()), "{k:?}");
        }
        // Any method a request can carry, on either protocol, is an `http::Method`: one
        // with a quote, a backslash or a control cannot be made.
        for m in ["GET", "PROPFIND", "X-CUSTOM!#$%&'*+-.^_`|~1"] {
            let m = http::Method::from_bytes(m.as_bytes()).expect("a token");
            assert!(!needs_escape(m.as_str().as_bytes()), "{m}");
        }
        for bad in ["GE\"T", "GE\\T", "GE\tT", "GE\nT", "GE T"] {
            assert!(http::Method::from_bytes(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn gathered_lines_from_many_threads_are_all_written_whole() {
        let scratch = Scratch::new("threads");
        let path = scratch.file();
        let audit = std::sync::Arc::new(
            Audit::open(&AuditTarget::File(path.clone()), Duration::from_secs(60), 4).expect("open"),
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let audit = audit.clone();
                std::thread::spawn(move || {
                    crate::server::set_worker_index(t);
                    for n in 0..5_000 {
                        assert!(audit.push(None, |out| numbered(out, t, n)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let before_flush = std::fs::read_to_string(&path).expect("read").lines().count();
        assert!(before_flush > 0, "full buffers are written without waiting for a flush");
        assert!(before_flush < 20_000, "the last partial buffers wait for the flush");
        audit.flush();
        let text = std::fs::read_to_string(&path).expect("read");
        let mut seen = std::collections::HashSet::new();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line is whole JSON");
            assert!(
                seen.insert((v["thread"].as_u64(), v["n"].as_u64())),
                "written once: {l}"
            );
        }
        assert_eq!(seen.len(), 20_000);
        assert_eq!(audit.failures(), 0);
    }

    #[test]
    fn gathered_lines_are_written_when_the_audit_is_dropped() {
        let scratch = Scratch::new("drop");
        let path = scratch.file();
        let audit = Audit::open(&AuditTarget::File(path.clone()), Duration::from_secs(60), 2).expect("open");
        for n in 0..3 {
            audit.push(None, |out| numbered(out, 0, n));
        }
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
        drop(audit);
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 3);
    }

    #[test]
    fn without_flush_each_line_is_written_at_once() {
        let scratch = Scratch::new("direct");
        let path = scratch.file();
        let audit = Audit::open(&AuditTarget::File(path.clone()), Duration::ZERO, 2).expect("open");
        assert_eq!(audit.flush_every(), None);
        audit.push(None, |out| numbered(out, 0, 1));
        assert_eq!(std::fs::read_to_string(&path).expect("read").lines().count(), 1);
    }

    #[test]
    fn a_failed_gathered_write_counts_every_line_lost() {
        // /dev/full refuses every write with ENOSPC.
        let audit = Audit::open(&AuditTarget::File("/dev/full".into()), Duration::from_secs(60), 1).expect("open");
        for n in 0..7 {
            audit.push(None, |out| numbered(out, 0, n));
        }
        assert!(audit.healthy(), "nothing was written yet");
        audit.flush();
        assert_eq!(audit.failures(), 7);
        assert!(!audit.healthy());
    }
}
