//! One suite, two backends: every case runs on the memory store (time moved by hand), on
//! real Redis at 127.0.0.1:6379 (real, short waits), each Redis case under a key prefix of
//! its own, and on a private redis-server reached over a Unix socket (`unix://`). Redis is
//! required: a missing server fails these tests, it never skips them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jira_auth_proxy::config::Secret;
use jira_auth_proxy::store::{ManualClock, MemoryStore, RedisSettings, RedisStore, StateStore};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

struct Fixture {
    store: Arc<dyn StateStore>,
    clock: Option<Arc<ManualClock>>,
    prefix: String,
    /// The private redis-server of a `unix://` case, stopped with the fixture.
    _server: Option<UnixRedis>,
}

/// A redis-server listening on a Unix socket only (no TCP port), in a directory of its own.
struct UnixRedis {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl UnixRedis {
    fn start() -> UnixRedis {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // Short: a Unix socket's path has room for about a hundred bytes.
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("jap-{}-{n}", std::process::id()));
        let socket = dir.join("redis.sock");
        assert!(
            socket.as_os_str().len() < 100,
            "socket path too long: {}",
            socket.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("redis.log");
        let spawned = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("redis-server runs (bash .ci/run installs it): {e}");
            }
        };
        let mut server = UnixRedis { child, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let exited = server.child.try_wait().unwrap();
            if exited.is_some() || std::time::Instant::now() > deadline {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                panic!(
                    "redis-server did not start on {} ({exited:?}):\n{said}",
                    socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self) -> String {
        format!("unix://{}?db=1", self.dir.join("redis.sock").display())
    }
}

impl Drop for UnixRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique_prefix() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "jap-conformance-{}-{nanos}-{}:",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

fn redis_store(prefix: &str) -> RedisStore {
    redis_store_at(REDIS_URL, prefix)
}

fn redis_store_at(url: &str, prefix: &str) -> RedisStore {
    RedisStore::new(RedisSettings {
        url: Secret::from_bytes(url.as_bytes().to_vec()),
        key_prefix: prefix.into(),
        connect_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
        ca_file: None,
    })
    .unwrap()
}

impl Fixture {
    fn memory() -> Fixture {
        let clock = Arc::new(ManualClock::default());
        Fixture {
            store: Arc::new(MemoryStore::with_clock(100_000, clock.clone())),
            clock: Some(clock),
            prefix: String::new(),
            _server: None,
        }
    }

    async fn redis() -> Fixture {
        let prefix = unique_prefix();
        let store = redis_store(&prefix);
        store
            .ping()
            .await
            .expect("Redis must run at 127.0.0.1:6379 (bash .ci/run starts it)");
        Fixture {
            store: Arc::new(store),
            clock: None,
            prefix,
            _server: None,
        }
    }

    /// A private redis-server over its Unix socket, database 1 (`unix://…?db=1`).
    async fn redis_unix() -> Fixture {
        let server = UnixRedis::start();
        let prefix = unique_prefix();
        let store = redis_store_at(&server.url(), &prefix);
        store
            .ping()
            .await
            .expect("the private redis-server answers on its socket");
        Fixture {
            store: Arc::new(store),
            clock: None,
            prefix,
            _server: Some(server),
        }
    }

    /// Lets `d` pass: by hand for memory, for real for Redis.
    async fn pass(&self, d: Duration) {
        match &self.clock {
            Some(c) => c.advance(d),
            None => tokio::time::sleep(d).await,
        }
    }
}

const TTL: Duration = Duration::from_millis(300);
const MARGIN: Duration = Duration::from_millis(100);

async fn values_live_until_their_ttl(f: &Fixture) {
    let s = &f.store;
    s.put("k", Bytes::from_static(b"v"), TTL).await.unwrap();
    assert_eq!(s.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    let left = s.ttl("k").await.unwrap().expect("has a ttl");
    assert!(left <= TTL && left > TTL / 2, "{left:?}");
    assert_eq!(s.ttl("missing").await.unwrap(), None);
    f.pass(TTL + MARGIN).await;
    assert_eq!(s.get("k").await.unwrap(), None);
    assert_eq!(s.ttl("k").await.unwrap(), None);
}

async fn several_keys_are_read_at_once_in_their_order(f: &Fixture) {
    let s = &f.store;
    s.put("a", Bytes::from_static(b"1"), TTL).await.unwrap();
    s.put("short", Bytes::from_static(b"x"), TTL / 3).await.unwrap();
    s.incr("n", 7, TTL * 3).await.unwrap();
    let got = s.get_many(&["n", "missing", "a", "short"]).await.unwrap();
    let got: Vec<Option<&[u8]>> = got.iter().map(|v| v.as_deref()).collect();
    assert_eq!(got, [Some(&b"7"[..]), None, Some(&b"1"[..]), Some(&b"x"[..])]);
    f.pass(TTL / 3 + MARGIN).await;
    let got = s.get_many(&["short", "a"]).await.unwrap();
    assert_eq!(
        got,
        [None, Some(Bytes::from_static(b"1"))],
        "an expired key reads as absent"
    );
    assert!(s.get_many(&[]).await.unwrap().is_empty());
}

/// A store in this process answers reads at once (`get_now`, `get_many_now`), and those
/// answers are the awaited ones; a store across the network answers only when awaited.
async fn reads_answered_at_once_agree_with_awaited_reads(f: &Fixture) {
    let s = &f.store;
    s.put("a", Bytes::from_static(b"1"), TTL).await.unwrap();
    s.put("short", Bytes::from_static(b"x"), TTL / 3).await.unwrap();
    s.incr("n", -3, TTL * 3).await.unwrap();
    let keys = ["n", "missing", "a", "short"];
    for _ in 0..2 {
        let (now, many_now) = (s.get_now("short"), s.get_many_now(&keys));
        assert_eq!(
            now.is_some(),
            f.clock.is_some(),
            "only the memory store answers at once"
        );
        assert_eq!(many_now.is_some(), f.clock.is_some());
        if let (Some(now), Some(many_now)) = (now, many_now) {
            assert_eq!(now.unwrap(), s.get("short").await.unwrap());
            assert_eq!(many_now.unwrap(), s.get_many(&keys).await.unwrap());
        }
        f.pass(TTL / 3 + MARGIN).await;
    }
    if let Some(gone) = s.get_now("short") {
        assert_eq!(gone.unwrap(), None, "an expired key reads as absent at once too");
    }
}

async fn set_if_absent_admits_exactly_one_of_many_racing_tasks(f: &Fixture) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            s.put_if_absent("nonce", Bytes::from(format!("task {i}")), TTL)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert!(!f.store.put_if_absent("nonce", Bytes::new(), TTL).await.unwrap());
    f.pass(TTL + MARGIN).await;
    assert!(
        f.store.put_if_absent("nonce", Bytes::new(), TTL).await.unwrap(),
        "free again after expiry"
    );
}

async fn replace_updates_a_live_key_and_never_brings_one_back(f: &Fixture) {
    assert!(
        !f.store.replace("s", Bytes::from_static(b"new"), TTL).await.unwrap(),
        "absent: not stored"
    );
    assert_eq!(f.store.get("s").await.unwrap(), None);
    f.store.put("s", Bytes::from_static(b"old"), TTL).await.unwrap();
    assert!(f.store.replace("s", Bytes::from_static(b"new"), TTL).await.unwrap());
    assert_eq!(f.store.get("s").await.unwrap().as_deref(), Some(&b"new"[..]));
    f.store.delete("s").await.unwrap();
    assert!(
        !f.store.replace("s", Bytes::from_static(b"again"), TTL).await.unwrap(),
        "deleted: stays deleted"
    );
    assert_eq!(f.store.get("s").await.unwrap(), None);
    f.store.put("s", Bytes::from_static(b"old"), TTL).await.unwrap();
    f.pass(TTL + MARGIN).await;
    assert!(
        !f.store.replace("s", Bytes::from_static(b"late"), TTL).await.unwrap(),
        "expired: stays gone"
    );
    assert_eq!(f.store.get("s").await.unwrap(), None);
}

async fn counters_count_in_a_fixed_window_even_when_raced(f: &Fixture) {
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move { s.incr("c", 1, TTL).await.unwrap() }));
    }
    let mut seen: Vec<i64> = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>(), "every increment counted once");
    assert_eq!(f.store.incr("c", -5, TTL).await.unwrap(), 15);
    assert!(f.store.ttl("c").await.unwrap().expect("a counter has a ttl") <= TTL);
    f.pass(TTL + MARGIN).await;
    assert_eq!(f.store.incr("c", 1, TTL).await.unwrap(), 1, "a new window");
}

async fn deletes_remove_and_deleting_nothing_is_fine(f: &Fixture) {
    f.store.put("d", Bytes::from_static(b"x"), TTL).await.unwrap();
    f.store.delete("d").await.unwrap();
    f.store.delete("never-there").await.unwrap();
    assert_eq!(f.store.get("d").await.unwrap(), None);
}

async fn large_and_binary_values_round_trip(f: &Fixture) {
    let big: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    f.store
        .put("big", Bytes::from(big.clone()), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(f.store.get("big").await.unwrap().as_deref(), Some(&big[..]));
    let odd = "key with spaces, ünïcode and *glob?[chars]";
    f.store.put(odd, Bytes::from_static(b"\0\xff"), TTL).await.unwrap();
    assert_eq!(f.store.get(odd).await.unwrap().as_deref(), Some(&b"\0\xff"[..]));
}

async fn scans_list_a_prefix_in_key_order_within_a_limit(f: &Fixture) {
    for k in ["tok:b", "tok:a", "tok:c", "tokx", "other:a", "tok*:glob"] {
        f.store
            .put(k, Bytes::from(k.to_string()), Duration::from_secs(10))
            .await
            .unwrap();
    }
    let keys = |v: Vec<(String, Bytes)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(f.store.scan("tok:", 100).await.unwrap()),
        ["tok:a", "tok:b", "tok:c"]
    );
    assert_eq!(f.store.scan("tok:", 2).await.unwrap().len(), 2);
    assert_eq!(
        keys(f.store.scan("tok*", 100).await.unwrap()),
        ["tok*:glob"],
        "glob characters are literal"
    );
    let (k, v) = &f.store.scan("other:", 10).await.unwrap()[0];
    assert_eq!((k.as_str(), v.as_ref()), ("other:a", &b"other:a"[..]));
}

async fn token_buckets_give_their_burst_then_refill(f: &Fixture) {
    let interval = Duration::from_millis(200);
    for left in [1, 0] {
        let t = f.store.throttle("bucket", interval, 2).await.unwrap();
        assert!(t.allowed);
        assert_eq!(t.remaining, left);
    }
    let t = f.store.throttle("bucket", interval, 2).await.unwrap();
    assert!(!t.allowed);
    assert!(
        t.retry_after > Duration::ZERO && t.retry_after <= interval,
        "{:?}",
        t.retry_after
    );
    f.pass(interval + MARGIN).await;
    assert!(f.store.throttle("bucket", interval, 2).await.unwrap().allowed);
}

async fn racing_requests_never_overdraw_a_bucket(f: &Fixture) {
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            s.throttle("race", Duration::from_secs(60), 5).await.unwrap().allowed
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Fixture::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::Fixture::redis().await).await;
                }
            )*
        }
        mod redis_unix {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::Fixture::redis_unix().await).await;
                }
            )*
        }
    };
}

both_backends!(
    values_live_until_their_ttl,
    several_keys_are_read_at_once_in_their_order,
    reads_answered_at_once_agree_with_awaited_reads,
    set_if_absent_admits_exactly_one_of_many_racing_tasks,
    replace_updates_a_live_key_and_never_brings_one_back,
    counters_count_in_a_fixed_window_even_when_raced,
    deletes_remove_and_deleting_nothing_is_fine,
    large_and_binary_values_round_trip,
    scans_list_a_prefix_in_key_order_within_a_limit,
    token_buckets_give_their_burst_then_refill,
    racing_requests_never_overdraw_a_bucket,
);

#[tokio::test]
async fn two_proxies_with_different_prefixes_share_one_redis_without_seeing_each_other() {
    let a = Fixture::redis().await;
    let b = Fixture::redis().await;
    assert_ne!(a.prefix, b.prefix);
    a.store.put("session:x", Bytes::from_static(b"a's"), TTL).await.unwrap();
    b.store.put("session:x", Bytes::from_static(b"b's"), TTL).await.unwrap();
    assert_eq!(a.store.get("session:x").await.unwrap().as_deref(), Some(&b"a's"[..]));
    assert_eq!(b.store.get("session:x").await.unwrap().as_deref(), Some(&b"b's"[..]));
    assert!(a.store.put_if_absent("n", Bytes::new(), TTL).await.unwrap());
    assert!(b.store.put_if_absent("n", Bytes::new(), TTL).await.unwrap());
    assert_eq!(a.store.scan("", 100).await.unwrap().len(), 2);
    a.store.delete("session:x").await.unwrap();
    assert!(b.store.get("session:x").await.unwrap().is_some());
}

#[tokio::test]
async fn an_unreachable_redis_fails_every_operation_quickly_instead_of_hanging() {
    let closed = support::free_addr();
    let store = RedisStore::new(RedisSettings {
        url: Secret::from_bytes(format!("redis://{closed}").into_bytes()),
        key_prefix: "x:".into(),
        connect_timeout: Duration::from_millis(200),
        response_timeout: Duration::from_millis(200),
        ca_file: None,
    })
    .unwrap();
    let started = std::time::Instant::now();
    assert!(store.get("k").await.is_err());
    assert!(store.put_if_absent("k", Bytes::new(), TTL).await.is_err());
    assert!(store.incr("k", 1, TTL).await.is_err());
    assert!(store.throttle("k", TTL, 1).await.is_err());
    assert!(store.ping().await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
