//! Redis going away, hanging and coming back, on a private redis-server this test starts
//! (the shared one on 6379 is left alone): what needs the store fails closed with 503 and
//! never lets a replay or a locked-out user through; what does not need it keeps working;
//! `/readyz` says so; everything recovers without a restart. And Redis over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::oauth1::*;
use support::*;

struct PrivateRedis {
    child: Child,
}

impl PrivateRedis {
    fn start(port: u16) -> PrivateRedis {
        Self::start_with(port, &["--port", &port.to_string()])
    }

    /// TLS only, with the test PKI's certificate for localhost.
    fn start_tls(port: u16, pki: &TestPki) -> PrivateRedis {
        let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
        Self::start_with(
            port,
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                &path(&pki.cert_pem),
                "--tls-key-file",
                &path(&pki.key_pem),
                "--tls-ca-cert-file",
                &path(&pki.ca_pem),
                "--tls-auth-clients",
                "no",
            ],
        )
    }

    fn start_with(port: u16, args: &[&str]) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(args)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server runs (bash .ci/run installs it)");
        let r = PrivateRedis { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

const KEY: &str = "jap_faultsfaultsfaultsfaultsfaultsfaultsfaultsf";

async fn proxy(redis_port: u16, jira: &FakeJira) -> Proxy {
    proxy_on(&format!("url = \"redis://127.0.0.1:{redis_port}\""), jira).await
}

async fn proxy_on(state: &str, jira: &FakeJira) -> Proxy {
    let key_hash = jira_auth_proxy::auth::api_key::format_digest(&jira_auth_proxy::auth::api_key::digest_key(KEY));
    let text = basic_config("")
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\npublic_url = \"https://jira.example.com\"\n[admin]\nlisten = \"127.0.0.1:0\"",
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            "[[auth.chain]]\ntype = \"api_key\"\n[[auth.chain]]\ntype = \"session\"\n[[auth.chain]]\ntype = \"oauth1\"\n\
             [[auth.chain]]\ntype = \"basic\"",
        )
        .replace(
            "[[access.rules]]",
            &format!(
                "[state]\nbackend = \"redis\"\n{state}\n\
                 connect_timeout = \"300ms\"\nresponse_timeout = \"300ms\"\n\
                 [[api_keys]]\nid = \"ci\"\nhash = \"{key_hash}\"\nuser = \"ci-bot\"\n\
                 [[oauth1.consumers]]\nkey = \"reporting\"\nsecret = \"s3cret\"\n\
                 two_legged = {{ allowed = true, run_as = \"reporting-bot\" }}\n\
                 [[access.rules]]"
            ),
        );
    Proxy::start(&text, jira.addr).await
}

async fn readyz(p: &Proxy) -> u16 {
    get(&format!("http://{}/readyz", p.running.admin_addr.unwrap()), &[])
        .await
        .status
}

async fn login(p: &Proxy) -> Resp {
    send(
        "POST",
        &p.url("/rest/auth/1/session"),
        &[("content-type", "application/json")],
        Bytes::from(r#"{"username":"bob","password":"bob-pw"}"#),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_what_needs_it_and_recovers_when_it_returns() {
    let port = free_addr().port();
    let redis = PrivateRedis::start(port);
    let jira = FakeJira::start(JiraTrust::Header).await;
    let p = proxy(port, &jira).await;
    let alice = basic("alice", "alice-pw");
    let key = ("x-api-key", KEY);
    assert_eq!(get(&p.url("/x"), &[("authorization", &alice)]).await.status, 200);
    let r = login(&p).await;
    assert_eq!(r.status, 200);
    let cookie = format!("JAPSESSION={}", r.json()["session"]["value"].as_str().unwrap());
    assert_eq!(readyz(&p).await, 200);
    // Two failed guesses for alice, one short of the lockout.
    for _ in 0..2 {
        assert_eq!(
            get(&p.url("/x"), &[("authorization", &basic("alice", "guess"))])
                .await
                .status,
            401
        );
    }
    let signed = Signer {
        consumer: "reporting",
        secret: "s3cret",
        token: "",
        token_secret: "",
        extra: vec![],
    }
    .sign("GET", "/x", "the-nonce");
    let before = jira.count();

    redis.stop();
    let started = Instant::now();
    assert_eq!(get(&p.url("/x"), &[key]).await.status, 200, "API keys need no store");
    let warm = get(&p.url("/x"), &[("authorization", &alice)]).await;
    assert_eq!(warm.status, 503, "a cached password still needs the lockout check");
    assert!(warm.json()["errorMessages"].is_array());
    assert_eq!(
        get(&p.url("/x"), &[("authorization", &basic("bob", "bob-pw"))])
            .await
            .status,
        503
    );
    assert_eq!(get(&p.url("/x"), &[("cookie", &cookie)]).await.status, 503);
    assert_eq!(
        get(&p.url("/x"), &[("authorization", &signed)]).await.status,
        503,
        "no nonce check, no entry"
    );
    assert_eq!(login(&p).await.status, 503);
    assert_eq!(readyz(&p).await, 503);
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(jira.count(), before + 1, "only the API key call reached Jira");

    // Back (empty: this Redis keeps nothing on disk).
    let redis = PrivateRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&p).await != 200 {
        assert!(Instant::now() < deadline, "never became ready again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(get(&p.url("/x"), &[("authorization", &alice)]).await.status, 200);
    assert_eq!(login(&p).await.status, 200);
    let r = get(&p.url("/x"), &[("authorization", &signed)]).await;
    assert_eq!(r.status, 200, "the nonce was never accepted before, so it is fresh");
    let r = get(&p.url("/x"), &[("authorization", &signed)]).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "nonce_used"));
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_request_its_timeout_not_forever() {
    let port = free_addr().port();
    let redis = PrivateRedis::start(port);
    let jira = FakeJira::start(JiraTrust::Header).await;
    let p = proxy(port, &jira).await;
    let alice = basic("alice", "alice-pw");
    assert_eq!(get(&p.url("/x"), &[("authorization", &alice)]).await.status, 200);

    redis.signal("-STOP");
    let started = Instant::now();
    let r = get(&p.url("/x"), &[("authorization", &alice)]).await;
    let took = started.elapsed();
    redis.signal("-CONT");
    assert_eq!(r.status, 503);
    assert!(
        took < Duration::from_millis(1500),
        "bounded by the 300 ms timeouts: {took:?}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&p.url("/x"), &[("authorization", &alice)]).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {}", r.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_speak_tls_and_trust_only_the_configured_ca() {
    let pki = pki();
    let port = free_addr().port();
    let _redis = PrivateRedis::start_tls(port, &pki);
    let jira = FakeJira::start(JiraTrust::Header).await;
    let trusted = format!(
        "url = \"rediss://localhost:{port}\"\nca_file = \"{}\"",
        pki.ca_pem.display()
    );
    let p = proxy_on(&trusted, &jira).await;
    assert_eq!(login(&p).await.status, 200, "sessions live in Redis, over TLS");
    assert_eq!(readyz(&p).await, 200);
    // Without the CA, the server's certificate is not trusted: fail closed.
    let untrusted = proxy_on(&format!("url = \"rediss://localhost:{port}\""), &jira).await;
    assert_eq!(login(&untrusted).await.status, 503);
    assert_eq!(readyz(&untrusted).await, 503);
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--no-auth-warning"])
        .args(args)
        .output()
        .expect("redis-cli runs (bash .ci/run installs it)");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_user_password_and_database_from_the_url_are_used_and_a_wrong_password_fails_closed() {
    let port = free_addr().port();
    let _redis = PrivateRedis::start_with(
        port,
        &[
            "--port",
            &port.to_string(),
            "--requirepass",
            "default-pw",
            "--user",
            "jap",
            "on",
            ">jap-pw",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let jira = FakeJira::start(JiraTrust::Header).await;
    let p = proxy_on(&format!("url = \"redis://jap:jap-pw@127.0.0.1:{port}/2\""), &jira).await;
    assert_eq!(login(&p).await.status, 200);
    assert_eq!(readyz(&p).await, 200);
    let as_jap = ["--user", "jap", "--pass", "jap-pw"];
    let keys = |db: &str| redis_cli(port, &[&as_jap[..], &["-n", db, "DBSIZE"]].concat());
    assert_ne!(keys("2").trim(), "0", "the session is in database 2");
    assert_eq!(keys("0").trim(), "0");

    // The default user, by password alone (`redis://:password@`).
    let p = proxy_on(&format!("url = \"redis://:default-pw@127.0.0.1:{port}\""), &jira).await;
    assert_eq!(login(&p).await.status, 200);

    let p = proxy_on(&format!("url = \"redis://jap:wrong-pw@127.0.0.1:{port}/2\""), &jira).await;
    let r = login(&p).await;
    assert_eq!(r.status, 503);
    assert!(!String::from_utf8_lossy(&r.body).contains("wrong-pw"));
    assert_eq!(readyz(&p).await, 503);
    // No password at all: Redis refuses every command.
    let p = proxy_on(&format!("url = \"redis://127.0.0.1:{port}\""), &jira).await;
    assert_eq!(login(&p).await.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_thread_keeps_one_redis_connection_and_a_dropped_one_is_replaced() {
    let port = free_addr().port();
    let _redis = PrivateRedis::start(port);
    let jira = FakeJira::start(JiraTrust::Header).await;
    let p = proxy_on(&format!("url = \"redis://127.0.0.1:{port}\"\n"), &jira).await;
    let r = login(&p).await;
    assert_eq!(r.status, 200);
    let cookie = format!("JAPSESSION={}", r.json()["session"]["value"].as_str().unwrap());
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let (url, cookie) = (p.url("/x"), cookie.clone());
            tokio::spawn(async move { get(&url, &[("cookie", &cookie)]).await.status })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(readyz(&p).await, 200);
    // One per listener thread (the default: one per core) and one for the rest
    // (the readiness check), whatever the number of requests.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let clients = redis_cli(port, &["CLIENT", "LIST"]).lines().count() - 1;
    assert!(clients >= 1 && clients <= workers + 1, "{clients} connections");

    redis_cli(port, &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        redis_cli(port, &["CLIENT", "LIST"]).lines().count(),
        1,
        "only redis-cli"
    );
    assert_eq!(get(&p.url("/x"), &[("cookie", &cookie)]).await.status, 200);
    assert_eq!(readyz(&p).await, 200);
}

#[tokio::test]
async fn calls_arriving_while_a_connection_opens_wait_for_it_instead_of_opening_their_own() {
    use jira_auth_proxy::store::StateStore;
    let port = free_addr().port();
    let _redis = PrivateRedis::start(port);
    let accepted = || {
        redis_cli(port, &["INFO", "stats"])
            .lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .map(|n| n.trim().parse::<u64>().unwrap())
            .unwrap()
    };
    let before = accepted();
    let store = std::sync::Arc::new(redis_store(
        &format!("redis://127.0.0.1:{port}"),
        "t:",
        Duration::from_secs(2),
        Duration::from_secs(2),
    ));
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.get(&format!("k{i}")).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), None);
    }
    // redis-cli's own INFO connection is the other one.
    assert_eq!(accepted() - before, 2, "one connection for all fifty calls");
}

#[tokio::test]
async fn a_connection_redis_stops_reading_is_given_up_not_kept_writing_forever() {
    use jira_auth_proxy::store::StateStore;
    use tokio::io::AsyncReadExt;
    // A "Redis" that accepts and then never reads.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let store = redis_store(
        &format!("redis://{addr}"),
        "t:",
        Duration::from_millis(500),
        Duration::from_millis(300),
    );
    let accepted = tokio::spawn(async move { server.accept().await.unwrap().0 });
    // More than the socket buffers hold: the write has to wait.
    let big = Bytes::from(vec![b'x'; 64 << 20]);
    let started = Instant::now();
    assert!(store.put("big", big, Duration::from_secs(60)).await.is_err());
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The proxy's side gives the connection up once the write has waited its limit:
    // read now, it ends before the whole command (what was still to be written is gone),
    // where a connection kept writing would deliver all of it once read.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut peer = accepted.await.unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut got = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match peer.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stuck connection was never closed");
    assert!(got < 64 << 20, "{got} bytes: the write went on");
}

/// The client side of each established TCP connection to `port` on 127.0.0.1, from
/// /proc/net/tcp: its timer kind (2: keep-alive) and when it fires, in 1/100 s.
#[cfg(target_os = "linux")]
fn client_timers(port: u16) -> Vec<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when ...; 01 is ESTABLISHED.
            (f.len() > 5 && f[2] == remote && f[3] == "01").then(|| {
                let (kind, when) = f[5].split_once(':').unwrap();
                (
                    u8::from_str_radix(kind, 16).unwrap(),
                    u64::from_str_radix(when, 16).unwrap(),
                )
            })
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn connections_to_redis_keep_alive_so_a_silent_middlebox_or_a_vanished_host_is_noticed() {
    let port = free_addr().port();
    let _redis = PrivateRedis::start(port);
    let jira = FakeJira::start(JiraTrust::Header).await;
    let p = proxy(port, &jira).await;
    assert_eq!(login(&p).await.status, 200);
    // Idle now: without keep-alive an established connection runs no timer at all.
    let mut timers = Vec::new();
    for _ in 0..50 {
        timers = client_timers(port);
        if !timers.is_empty() && timers.iter().all(|(kind, _)| *kind == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!timers.is_empty(), "no connection to Redis found");
    for (kind, when) in timers {
        assert_eq!(kind, 2, "the keep-alive timer runs on every connection to Redis");
        assert!(when <= 60 * 100, "first probe within a minute, not {when}/100 s");
    }
}
