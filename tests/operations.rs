//! Running it: hot reload (rules, a bad file, TLS certificates), the admin listener
//! (`/healthz`, `/readyz`, `/metrics`), and the audit log (Jira's request id, required
//! audit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use support::*;

const ADMIN: &str = "listen = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"";

fn config(rules: &str) -> String {
    with_rules(&basic_config("").replacen("listen = \"127.0.0.1:0\"", ADMIN, 1), rules)
}

const ALLOW_ALL: &str = "[[access.rules]]\nname = \"authenticated\"\nauthenticated = true\neffect = \"allow\"\n";
const NO_SLOW: &str = "[[access.rules]]\nname = \"no slow pages\"\npaths = [\"/test/slow/**\"]\neffect = \"deny\"\n\
                       [[access.rules]]\nname = \"authenticated\"\nauthenticated = true\neffect = \"allow\"\n";

/// One kept-alive HTTP/1.1 connection to the proxy.
async fn connection(proxy: &Proxy) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn on(send: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>, path: &str) -> u16 {
    send.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", "proxy")
        .header("authorization", basic("alice", "alice-pw"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_rule_applies_on_an_open_connection_and_requests_in_flight_finish_on_theirs() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(ALLOW_ALL), jira.addr).await;
    let mut conn = connection(&proxy).await;
    assert_eq!(on(&mut conn, "/test/slow/0").await, 200);
    // A slow request starts under the old rules...
    let url = proxy.url("/test/slow/600");
    let in_flight = tokio::spawn(async move { get(&url, &[("authorization", &basic("alice", "alice-pw"))]).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.reload_with(&config(NO_SLOW), jira.addr).await.unwrap();
    // ...and finishes under them; the open connection meets the new ones at once.
    assert_eq!(on(&mut conn, "/test/slow/0").await, 403);
    assert_eq!(in_flight.await.unwrap().status, 200);
    assert_eq!(
        on(&mut conn, "/rest/api/2/myself").await,
        200,
        "the same connection, still open"
    );
    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(metrics.contains("jap_reloads_total{result=\"ok\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_threads_serve_each_with_their_own_jira_pool_and_keep_serving_when_a_reload_changes_their_number() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let with_workers = |n: usize| config(ALLOW_ALL).replacen("[server]\n", &format!("[server]\nworkers = {n}\n"), 1);
    let proxy = Proxy::start(&with_workers(3), jira.addr).await;
    // New connections land on whichever thread accepts them; every one is answered.
    let round = || async {
        for _ in 0..12 {
            let mut conn = connection(&proxy).await;
            assert_eq!(on(&mut conn, "/rest/api/2/myself").await, 200);
            assert_eq!(on(&mut conn, "/rest/api/2/myself").await, 200);
        }
    };
    round().await;
    // Fewer pools in the new runtime than threads: each thread still finds one.
    proxy.reload_with(&with_workers(1), jira.addr).await.unwrap();
    round().await;
    proxy.reload_with(&with_workers(4), jira.addr).await.unwrap();
    round().await;
    assert_eq!(jira.count(), 72, "every request reached Jira once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_other_socket_can_bind_the_proxys_port_even_with_so_reuseport() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(ALLOW_ALL), jira.addr).await;
    // What a second process of the same user would try to take a share of the connections.
    let beside = tokio::net::TcpSocket::new_v4().unwrap();
    beside.set_reuseport(true).unwrap();
    assert!(beside.bind(proxy.addr).is_err(), "the port is the proxy's alone");
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_on_reload_is_refused_with_every_error_and_the_old_one_keeps_serving() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(ALLOW_ALL), jira.addr).await;
    let bad = config(ALLOW_ALL)
        .replace("response_timeout = \"2s\"", "response_timeout = \"soon\"")
        .replace("effect = \"allow\"", "effect = \"maybe\"");
    let err = proxy.reload_with(&bad, jira.addr).await.unwrap_err();
    assert!(err.contains("upstream.response_timeout"), "{err}");
    assert!(err.contains("access.rules[0].effect"), "{err}");
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw"))]).await;
    assert_eq!(r.status, 200);
    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(metrics.contains("jap_reloads_total{result=\"failed\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_in_the_memory_store_survive_a_reload() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = config(ALLOW_ALL).replace(
        "[[auth.chain]]\ntype = \"basic\"",
        "[[auth.chain]]\ntype = \"session\"\n[[auth.chain]]\ntype = \"basic\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let cookie = format!("JAPSESSION={}", alice_session(&proxy).await);
    proxy
        .reload_with(
            &text.replace("name = \"authenticated\"", "name = \"anyone signed in\""),
            jira.addr,
        )
        .await
        .unwrap();
    let r = get(&proxy.url("/x"), &[("cookie", &cookie)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(proxy.audit().last().unwrap()["rule"], "anyone signed in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_connections_while_old_ones_stay_up() {
    let (old_pki, new_pki) = (pki(), pki());
    let jira = FakeJira::start(JiraTrust::Header).await;
    let dir = temp_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&old_pki.cert_pem, &cert).unwrap();
    std::fs::copy(&old_pki.key_pem, &key).unwrap();
    let text = config(ALLOW_ALL).replacen(
        "[admin]",
        "[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n[admin]",
        1,
    );
    let proxy = Proxy::start_in(&text, jira.addr, dir.clone()).await;
    let handshake = |pki: &TestPki| {
        let connector = tokio_rustls::TlsConnector::from(tls_client(pki, &[b"http/1.1"]));
        let addr = proxy.addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await
        }
    };
    let old_conn = handshake(&old_pki).await.expect("the old certificate at first");
    assert!(handshake(&new_pki).await.is_err());
    std::fs::copy(&new_pki.cert_pem, &cert).unwrap();
    std::fs::copy(&new_pki.key_pem, &key).unwrap();
    proxy.running.reload().await.unwrap();
    assert!(
        handshake(&new_pki).await.is_ok(),
        "new connections get the new certificate"
    );
    assert!(handshake(&old_pki).await.is_err());
    // The connection made before the reload still carries requests.
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old_conn))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(on(&mut send, "/x").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_sequence_of_requests_with_bounded_labels() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(ALLOW_ALL), jira.addr).await;
    let alice = basic("alice", "alice-pw");
    for _ in 0..2 {
        assert_eq!(
            get(&proxy.url("/rest/api/2/issue/X-1"), &[("authorization", &alice)])
                .await
                .status,
            200
        );
    }
    assert_eq!(
        get(&proxy.url("/x"), &[("authorization", &basic("alice", "nope"))])
            .await
            .status,
        401
    );
    assert_eq!(get(&proxy.url("/x"), &[]).await.status, 401);
    let (status, m) = proxy.admin("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "jap_requests_total{auth=\"basic\",outcome=\"authenticated\",status=\"2xx\"} 2",
        "jap_requests_total{auth=\"basic\",outcome=\"rejected\",status=\"4xx\"} 1",
        "jap_requests_total{auth=\"none\",outcome=\"anonymous\",status=\"4xx\"} 1",
        "jap_refusals_total{reason=\"bad_password\"} 1",
        "jap_decisions_total{rule=\"authenticated\",effect=\"allow\"} 2",
        "jap_upstream_duration_seconds_count 2",
        "jap_proxy_overhead_seconds_count 4",
        "jap_cache_hits_total{cache=\"basic\"} 1",
        // The first right password and the wrong one; each request counted once.
        "jap_cache_misses_total{cache=\"basic\"} 2",
        "jap_open_connections ",
        "jap_reloads_total{result=\"ok\"} 0",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    assert!(!m.contains("alice") && !m.contains("X-1"), "no users, no paths:\n{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_jira_going_away_and_coming_back() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let port = jira.addr.port();
    let proxy = Proxy::start(&config(ALLOW_ALL), jira.addr).await;
    assert_eq!(proxy.admin("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(proxy.admin("/readyz").await.0, 200);
    drop(jira);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let r = proxy.admin("/readyz").await;
        if r.0 != 200 || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not ready: Jira at"), "{body}");
    assert_eq!(proxy.admin("/healthz").await.0, 200, "alive, just not ready");
    let _back = FakeJira::start_on(port).await;
    assert_eq!(proxy.admin("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_carry_jiras_request_id_to_join_the_two_logs() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(ALLOW_ALL), jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            ("x-request-id", "ci-run-7"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let line = proxy.audit().pop().unwrap();
    for field in [
        "time",
        "request_id",
        "client_ip",
        "method",
        "path",
        "auth",
        "outcome",
        "user",
        "rule",
        "status",
        "duration_ms",
    ] {
        assert!(line.get(field).is_some(), "{field} missing: {line}");
    }
    assert_eq!(line["request_id"], "ci-run-7");
    assert_eq!(line["jira_request_id"], "932x1234x1");
    assert!(!proxy.audit_text().contains("alice-pw"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_refuses_requests_when_required_and_is_counted_when_not() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let alice = basic("alice", "alice-pw");
    let required = format!("{}\n[audit]\nto = \"/dev/full\"\nrequired = true\n", config(ALLOW_ALL));
    let proxy = Proxy::start(&required, jira.addr).await;
    let r = get(&proxy.url("/x"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 503, "the line could not be written: no answer goes out");
    let before = jira.count();
    let r = get(&proxy.url("/x"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 503);
    assert_eq!(jira.count(), before, "while the log is broken nothing reaches Jira");

    let optional = format!("{}\n[audit]\nto = \"/dev/full\"\n", config(ALLOW_ALL));
    let proxy = Proxy::start(&optional, jira.addr).await;
    assert_eq!(get(&proxy.url("/x"), &[("authorization", &alice)]).await.status, 200);
    let (_, m) = proxy.admin("/metrics").await;
    assert!(m.contains("jap_audit_write_failures_total 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reopens_the_audit_file_as_logrotate_expects() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(ALLOW_ALL), jira.addr).await;
    let alice = basic("alice", "alice-pw");
    assert_eq!(
        get(&proxy.url("/before"), &[("authorization", &alice)]).await.status,
        200
    );
    // logrotate moves the file away, then signals.
    std::fs::rename(proxy.dir.join("audit.log"), proxy.dir.join("audit.log.1")).unwrap();
    proxy.reload_with(&config(ALLOW_ALL), jira.addr).await.unwrap();
    assert_eq!(
        get(&proxy.url("/after"), &[("authorization", &alice)]).await.status,
        200
    );
    let rotated = std::fs::read_to_string(proxy.dir.join("audit.log.1")).unwrap();
    let fresh = proxy.audit();
    assert!(rotated.contains("/before") && !rotated.contains("/after"));
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0]["path"], "/after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_a_caller_sent_reaches_the_audit_log_or_the_metrics() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = config(ALLOW_ALL).replace(
        "[[auth.chain]]\ntype = \"basic\"",
        "[[auth.chain]]\ntype = \"session\"\n[[auth.chain]]\ntype = \"basic\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let secrets = [
        "alice-pw",
        "wrong-password-9",
        "jap_notarealkeynotarealkeynotarealkeynotarealk",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
        "cookie-value-123",
        "query-token-456",
    ];
    get(&proxy.url("/a"), &[("authorization", &basic("alice", secrets[0]))]).await;
    get(&proxy.url("/b"), &[("authorization", &basic("alice", secrets[1]))]).await;
    get(
        &proxy.url("/c"),
        &[("authorization", &format!("Bearer {}", secrets[2]))],
    )
    .await;
    get(
        &proxy.url("/d"),
        &[("authorization", &format!("Bearer {}", secrets[3]))],
    )
    .await;
    get(&proxy.url("/e"), &[("cookie", &format!("JAPSESSION={}", secrets[4]))]).await;
    get(&proxy.url(&format!("/f?os_password={0}&token={0}", secrets[5])), &[]).await;
    send(
        "POST",
        &proxy.url("/rest/auth/1/session"),
        &[("content-type", "application/json")],
        Bytes::from(format!(r#"{{"username":"alice","password":"{}"}}"#, secrets[1])),
    )
    .await;
    let audit = proxy.audit_text();
    assert_eq!(audit.lines().count(), 7);
    for line in audit.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
    }
    let (_, metrics) = proxy.admin("/metrics").await;
    for s in secrets {
        assert!(!audit.contains(s), "{s} in the audit log:\n{audit}");
        assert!(!metrics.contains(s), "{s} in the metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_reuse_port_every_listener_thread_serves_and_a_taken_address_is_refused() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = config(ALLOW_ALL).replacen("[server]", "[server]\nworkers = 2\nreuse_port = true", 1);
    let proxy = Proxy::start(&text, jira.addr).await;
    // A burst of kept-alive connections, as a client pool opens them: every one is served,
    // and the kernel has dealt them to both listener threads.
    let mut pool = Vec::new();
    for _ in 0..32 {
        pool.push(connection(&proxy).await);
    }
    for send in &mut pool {
        assert_eq!(on(send, "/rest/api/2/myself").await, 200);
    }
    let (_, metrics) = proxy.admin("/metrics").await;
    let open = |listener: &str| -> i64 {
        let series = format!("jap_listener_connections{{listener=\"{listener}\"}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&series))
            .unwrap_or_else(|| panic!("{metrics}"));
        line[series.len()..].parse().unwrap()
    };
    assert_eq!(open("0") + open("1"), 32, "{metrics}");
    assert!(open("0") > 0 && open("1") > 0, "{metrics}");
    // A second instance on the same address does not join the first one's sockets.
    let taken = text.replacen("127.0.0.1:0", &proxy.addr.to_string(), 1);
    let dir = temp_dir();
    let cfg = jira_auth_proxy::config::Config::parse(&taken.replace("{jira}", &jira.addr.to_string()), &dir).unwrap();
    let err = jira_auth_proxy::server::start_from(cfg, None)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("Address already in use"), "{err}");
}
