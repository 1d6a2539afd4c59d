//! The proxy end to end over real HTTP on loopback: Basic auth, identity, stripping,
//! paths, errors, audit. Each test's name says the shape of its input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use support::*;

#[tokio::test]
async fn basic_right_user_right_password_reaches_jira_as_that_user() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "alice");
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("alice"));
    assert!(
        seen.headers.get("authorization").is_none(),
        "the password must stay with the proxy"
    );
    let id = r.header("x-request-id").expect("request id echoed");
    assert_eq!(seen.headers.get("x-request-id").unwrap(), id);
}

#[tokio::test]
async fn basic_right_user_wrong_password_is_401_and_never_reaches_jira() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &basic("alice", "wrong"))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"Jira\", charset=\"UTF-8\"")
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}})
    );
    assert_eq!(jira.count(), 0);
    let line = proxy.audit().pop().unwrap();
    assert_eq!(
        (line["outcome"].as_str(), line["reason"].as_str()),
        (Some("rejected"), Some("bad_password"))
    );
}

#[tokio::test]
async fn basic_unknown_user_is_401_and_still_runs_one_argon2_verification() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("nobody", "pw"))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        proxy.basic_verifications(),
        1,
        "unknown users must cost what known ones do"
    );
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "unknown_user");
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn basic_same_credential_many_times_verifies_once() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    for _ in 0..20 {
        let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw"))]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(proxy.basic_verifications(), 1);
    // A different password for the same user is a different credential: verified, refused.
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw2"))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(proxy.basic_verifications(), 2);
}

#[tokio::test]
async fn basic_user_name_is_case_insensitive_and_forwarded_as_configured() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("ALICE", "alice-pw"))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn basic_repeated_failures_lock_the_account_then_even_the_right_password_waits() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    for _ in 0..3 {
        let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "guess"))]).await;
        assert_eq!(r.status, 401);
    }
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw"))]).await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 600, "retry-after {retry}");
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "locked_out");
    assert_eq!(proxy.basic_verifications(), 3, "a locked account costs no argon2");
    assert_eq!(jira.count(), 0);
    // Other users are unaffected.
    let r = get(&proxy.url("/x"), &[("authorization", &basic("bob", "bob-pw"))]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn basic_a_cached_password_is_refused_once_its_account_is_locked_and_others_go_on() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let alice = basic("alice", "alice-pw");
    let bob = basic("bob", "bob-pw");
    for auth in [&alice, &bob, &alice, &bob] {
        let r = get(&proxy.url("/x"), &[("authorization", auth)]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        proxy.basic_verifications(),
        2,
        "the second requests came from the cache"
    );
    // Someone guesses alice's password until her account locks.
    for _ in 0..3 {
        let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "guess"))]).await;
        assert_eq!(r.status, 401);
    }
    // Her own password, verified and cached before, waits out the lockout too.
    let r = get(&proxy.url("/x"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    // Bob's cached password goes on, read from the cache.
    let r = get(&proxy.url("/x"), &[("authorization", &bob)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("bob"));
    assert_eq!(proxy.basic_verifications(), 5, "three guesses, and no check for bob");
    assert_eq!(jira.count(), 5);
}

#[tokio::test]
async fn basic_a_flood_of_new_user_names_cannot_wipe_out_a_lockout() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    // A small state store, so that the flood below fills it many times over.
    let proxy = Proxy::start(&basic_config("[state]\nmax_entries = 40\n"), jira.addr).await;
    for _ in 0..3 {
        let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "guess"))]).await;
        assert_eq!(r.status, 401);
    }
    // From another address: 20 guesses under new names are checked (the address's limit),
    // then each is refused before any check and leaves a counter at zero behind, which
    // costs the attacker nothing.
    let statuses = guesses_under_new_names(&proxy, 200).await;
    assert_eq!(statuses, [(401, 20), (429, 180)].into_iter().collect());
    // Alice is still locked out, whatever the flood made the store drop.
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw"))]).await;
    assert_eq!(r.status, 429);
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn basic_unknown_user_locks_the_same_way_so_lockout_reveals_nothing() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            get(&proxy.url("/x"), &[("authorization", &basic("ghost", "guess"))])
                .await
                .status,
        );
    }
    assert_eq!(statuses, vec![401, 401, 401, 429]);
}

#[tokio::test]
async fn basic_parallel_guesses_cannot_overrun_the_lockout() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let url = proxy.url("/x");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (url, auth) = (url.clone(), basic("alice", &format!("guess{i}")));
            tokio::spawn(async move { get(&url, &[("authorization", &auth)]).await.status })
        })
        .collect();
    let mut n401 = 0;
    for t in tasks {
        match t.await.unwrap() {
            401 => n401 += 1,
            429 => {}
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(n401, 3, "only max_failures guesses may be checked");
    assert_eq!(proxy.basic_verifications(), 3);
}

#[tokio::test]
async fn basic_malformed_header_is_401_never_anonymous() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let extra = "[[access.rules]]\nname = \"open\"\npaths = [\"/open\"]\nanonymous = true\neffect = \"allow\"\n";
    let proxy = Proxy::start(&basic_config(extra), jira.addr).await;
    for bad in ["Basic", "Basic ***", "Basic bm9jb2xvbg=="] {
        let r = get(&proxy.url("/open"), &[("authorization", bad)]).await;
        assert_eq!(r.status, 401, "{bad}");
    }
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn two_authorization_headers_are_400() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(
        &proxy.url("/x"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            ("authorization", &basic("bob", "bob-pw")),
        ],
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn no_credentials_denied_by_default_is_401_with_the_challenge() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(&proxy.url("/rest/api/2/myself"), &[]).await;
    assert_eq!(r.status, 401);
    let challenges: Vec<_> = r.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(challenges.len(), 1);
    assert_eq!(jira.count(), 0);
    assert_eq!(proxy.audit().pop().unwrap()["outcome"], "anonymous");
}

#[tokio::test]
async fn no_credentials_on_a_public_rule_reaches_jira_without_identity() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let extra = "[[access.rules]]\nname = \"public\"\npaths = [\"/rest/api/2/serverInfo\"]\neffect = \"allow\"\n";
    let proxy = Proxy::start(&basic_config(extra), jira.addr).await;
    let r = get(&proxy.url("/rest/api/2/serverInfo"), &[("x-forwarded-user", "admin")]).await;
    assert_eq!(r.status, 200);
    let seen = jira.last();
    assert_eq!(
        seen.user, None,
        "a spoofed header on an anonymous call must not reach Jira"
    );
    assert_eq!(proxy.audit().pop().unwrap()["rule"], "public");
}

/// Sends alice's request with the `extra` fields written as they are (any spelling), and
/// gives the fields Jira saw whose names `pick` picks, as `name: "value"`.
async fn fields_jira_saw(proxy: &Proxy, jira: &FakeJira, extra: &str, pick: impl Fn(&str) -> bool) -> Vec<String> {
    let request = format!(
        "GET /rest/api/2/myself HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n{extra}Connection: close\r\n\r\n",
        basic("alice", "alice-pw")
    );
    let answer = raw(proxy.addr, request.as_bytes()).await;
    assert_eq!(raw_status(&answer), 200);
    jira.last()
        .headers
        .iter()
        .filter(|(k, _)| pick(k.as_str()))
        .map(|(k, v)| format!("{k}: {v:?}"))
        .collect()
}

#[tokio::test]
async fn spoofed_identity_header_in_every_spelling_never_reaches_jira() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let values = fields_jira_saw(
        &proxy,
        &jira,
        "X-Forwarded-User: admin\r\nx-forwarded-user: admin2\r\nX_Forwarded_User: admin3\r\n\
         x-FORWARDED_user: admin4\r\nX-Remote-User: admin5\r\n",
        |k| k.replace('_', "-").contains("forwarded-user") || k.contains("remote"),
    )
    .await;
    assert_eq!(values, vec!["x-forwarded-user: \"alice\"".to_string()]);
}

#[tokio::test]
async fn a_client_copy_of_the_shared_secret_header_in_any_spelling_never_reaches_jira() {
    // `X-Proxy-Secret` is none of the common identity headers: it is stripped because the
    // proxy asserts it, in every spelling, and only the proxy's own value reaches Jira.
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\n[upstream.identity]\nmode = \"header\"\nheader = \"X-Forwarded-User\"\n\
         secret_header = \"X-Proxy-Secret\"\nsecret = \"the-proxys-own-secret-value\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let values = fields_jira_saw(
        &proxy,
        &jira,
        "X_Proxy_Secret: guess1\r\nx-proxy-secret: guess2\r\nX-PROXY_SECRET: guess3\r\n",
        |k| k.replace('_', "-") == "x-proxy-secret",
    )
    .await;
    assert_eq!(values, ["x-proxy-secret: \"the-proxys-own-secret-value\"".to_string()]);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn connection_header_naming_the_identity_header_cannot_smuggle_it() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(
        &proxy.url("/x"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            ("connection", "x-forwarded-user"),
            ("x-forwarded-user", "admin"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn jira_session_cookies_and_seraph_login_params_are_stripped() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/search?jql=project%3DX&os_username=admin&os_password=pw&os_authType=basic"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            (
                "cookie",
                "JSESSIONID=stolen; seraph.rememberme.cookie=stolen2; theme=dark",
            ),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = jira.last();
    assert_eq!(seen.target, "/rest/api/2/search?jql=project%3DX");
    assert_eq!(seen.headers.get("cookie").unwrap(), "theme=dark");
}

#[tokio::test]
async fn ambiguous_paths_are_400_and_never_reach_jira() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let auth = basic("alice", "alice-pw");
    for path in [
        "/rest/api/2/..%2f..%2fsecure/admin",
        "/rest%5capi",
        "/rest\\api",
        "/rest/%00",
        "/rest/%0d%0aX-Evil:%201",
        "/../etc/passwd",
        "/rest/%2e%2e/%2e%2e/..",
        "/bad%zzescape",
        "/%c0%ae%c0%ae/",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
        let answer = raw(proxy.addr, req.as_bytes()).await;
        assert_eq!(raw_status(&answer), 400, "{path}: {answer}");
        assert!(
            answer.contains("\"errorMessages\""),
            "{path}: Jira-shaped body expected"
        );
    }
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn dot_segments_and_path_params_are_resolved_before_rules_and_forwarding() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let extra = "[[access.rules]]\nname = \"admin for admins\"\npaths = [\"/secure/admin/**\"]\n\
                 groups_not = [\"jira-administrators\"]\neffect = \"deny\"\n";
    let proxy = Proxy::start(&basic_config(extra), jira.addr).await;
    let alice = basic("alice", "alice-pw");
    for path in [
        "/rest/api/2/../../../secure/admin/users",
        "/rest/..;/secure/admin/users",
        "/secure;x=y/admin/users",
        "/rest/%2e%2e/secure/./admin//users",
        "//secure/admin/users/",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {alice}\r\nConnection: close\r\n\r\n");
        assert_eq!(raw_status(&raw(proxy.addr, req.as_bytes()).await), 403, "{path}");
    }
    assert_eq!(jira.count(), 0);
    let bob = basic("bob", "bob-pw");
    let req = format!(
        "GET /rest/..;/secure/admin/a%20b HTTP/1.1\r\nHost: x\r\nAuthorization: {bob}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status(&raw(proxy.addr, req.as_bytes()).await), 200);
    assert_eq!(
        jira.last().target,
        "/secure/admin/a%20b",
        "Jira gets the path the rules saw"
    );
}

#[tokio::test]
async fn upstream_down_is_502_with_jira_shaped_json() {
    let closed = free_addr();
    let proxy = Proxy::start(&basic_config(""), closed).await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw"))]).await;
    assert_eq!(r.status, 502);
    let j = r.json();
    assert!(j["errorMessages"][0].as_str().unwrap().contains("Jira"));
    assert_eq!(j["errors"], serde_json::json!({}));
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "upstream_unreachable");
}

#[tokio::test]
async fn upstream_slower_than_response_timeout_is_504() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(
        &basic_config("").replace("response_timeout = \"2s\"", "response_timeout = \"200ms\""),
        jira.addr,
    )
    .await;
    let r = get(
        &proxy.url("/test/slow/2000"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 504);
    assert!(r.json()["errorMessages"].is_array());
}

#[tokio::test]
async fn hop_by_hop_response_headers_from_jira_are_removed() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(
        &proxy.url("/test/hop"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("x-secret-internal").is_none());
    assert!(r.headers.get("keep-alive").is_none());
    assert_eq!(r.header("x-ordinary"), Some("kept"));
    // The request id is the proxy's: Jira's own gives way to it.
    let ids: Vec<_> = r.headers.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(ids[0], jira.last().headers["x-request-id"]);
}

#[tokio::test]
async fn x_forwarded_headers_from_an_untrusted_peer_are_replaced() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let r = get(
        &proxy.url("/x"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("host", "jira.example.com"),
            ("x-request-id", "abc-123"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let h = jira.last().headers;
    // The proxy's own fields replace the caller's: one of each reaches Jira.
    for name in [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
    ] {
        assert_eq!(h.get_all(name).iter().count(), 1, "{name}");
    }
    assert_eq!(h.get("x-request-id").unwrap(), "abc-123");
    assert!(
        h.get("authorization").is_none(),
        "the caller's credential stays with the proxy"
    );
    assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(h.get("x-forwarded-host").unwrap(), "jira.example.com");
    assert_eq!(h.get("host").unwrap(), "jira.example.com");
    assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
    assert_eq!(proxy.audit().pop().unwrap()["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn x_forwarded_for_from_a_trusted_proxy_names_the_client_for_rules() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config(
        "[[access.rules]]\nname = \"office only\"\nsource = [\"10.0.0.0/8\"]\nusers_not = [\"nobody\"]\n\
         methods = [\"DELETE\"]\neffect = \"allow\"\n[[access.rules]]\nname = \"no deletes\"\nmethods = [\"DELETE\"]\neffect = \"deny\"\n",
    )
    .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]");
    let proxy = Proxy::start(&text, jira.addr).await;
    let alice = basic("alice", "alice-pw");
    let from = |xff: &'static str| [("authorization", alice.clone()), ("x-forwarded-for", xff.to_string())];
    let h = from("10.1.2.3");
    let r = send(
        "DELETE",
        &proxy.url("/x"),
        &[(h[0].0, &h[0].1), (h[1].0, &h[1].1)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        jira.last().headers.get("x-forwarded-for").unwrap(),
        "10.1.2.3, 127.0.0.1"
    );
    let h = from("8.8.8.8");
    let r = send(
        "DELETE",
        &proxy.url("/x"),
        &[(h[0].0, &h[0].1), (h[1].0, &h[1].1)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(proxy.audit().pop().unwrap()["client_ip"], "8.8.8.8");
    // A trusted proxy's request with no forwarding field at all names the peer itself.
    let r = get(&proxy.url("/x"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().headers.get("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(jira.last().headers.get("x-forwarded-proto").unwrap(), "http");
    assert_eq!(proxy.audit().pop().unwrap()["client_ip"], "127.0.0.1");
}

#[tokio::test]
async fn request_id_sane_is_kept_hostile_is_replaced() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let alice = basic("alice", "alice-pw");
    let r = get(
        &proxy.url("/x"),
        &[("authorization", &alice), ("x-request-id", "build-42.7")],
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("build-42.7"));
    assert_eq!(jira.last().headers.get("x-request-id").unwrap(), "build-42.7");
    let r = get(
        &proxy.url("/x"),
        &[("authorization", &alice), ("x-request-id", "a b<c>")],
    )
    .await;
    let id = r.header("x-request-id").unwrap();
    assert_eq!(id.len(), 32);
    assert_eq!(proxy.audit().pop().unwrap()["request_id"], id);
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(
        &basic_config("").replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_header_bytes = 8192",
        ),
        jira.addr,
    )
    .await;
    let big = "a".repeat(20_000);
    let req = format!("GET /x HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    assert_eq!(raw_status(&raw(proxy.addr, req.as_bytes()).await), 431);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET /x HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_eq!(raw_status(&raw(proxy.addr, req.as_bytes()).await), 431);
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn identity_mapping_lowercases_strips_domain_and_maps() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replace("name = \"alice\"", "name = \"Alice@Example.com\"")
        + "\n[identity]\nlowercase = true\nstrip_domain = \"example.com\"\nmap = { \"bob\" = \"robert\" }\n";
    let proxy = Proxy::start(&text, jira.addr).await;
    let r = get(
        &proxy.url("/x"),
        &[("authorization", &basic("alice@example.com", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
    let r = get(&proxy.url("/x"), &[("authorization", &basic("bob", "bob-pw"))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("robert"));
}

#[tokio::test]
async fn username_mapping_to_an_unsafe_name_is_refused_before_jira() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("") + "\n[identity]\nmap = { \"bob\" = \"bob,admin\" }\n";
    let proxy = Proxy::start(&text, jira.addr).await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("bob", "bob-pw"))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "username_unsafe");
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn header_mode_with_shared_secret_is_trusted_by_jira_and_client_copies_are_stripped() {
    let jira = FakeJira::start(JiraTrust::HeaderWithSecret).await;
    let text = basic_config("").replace(
        "connect_timeout = \"1s\"",
        &format!("connect_timeout = \"1s\"\n[upstream.identity]\nmode = \"header\"\nsecret_header = \"X-Proxy-Secret\"\nsecret = \"{SHARED_SECRET}\""),
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            ("x_proxy_secret", "guess"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
    assert_eq!(jira.last().headers.get_all("x-proxy-secret").iter().count(), 1);
    assert!(!proxy.audit_text().contains(SHARED_SECRET));
}

#[tokio::test]
async fn passthrough_mode_sends_the_callers_authorization_and_no_identity_header() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\n[upstream.identity]\nmode = \"passthrough\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let alice = basic("alice", "alice-pw");
    let r = get(
        &proxy.url("/x"),
        &[("authorization", &alice), ("x-forwarded-user", "admin")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = jira.last();
    assert_eq!(seen.headers.get("authorization").unwrap(), alice.as_str());
    assert_eq!(seen.user, None);
}

#[tokio::test]
async fn audit_lines_carry_the_fields_and_never_a_secret() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    get(
        &proxy.url("/rest/api/2/issue/X-1?os_password=hunter2"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    get(
        &proxy.url("/x"),
        &[("authorization", &basic("alice", "wrong-secret-pw"))],
    )
    .await;
    let text = proxy.audit_text();
    for secret in ["alice-pw", "wrong-secret-pw", "hunter2", "YWxpY2U6"] {
        assert!(!text.contains(secret), "{secret} leaked into the audit log");
    }
    let lines = proxy.audit();
    assert_eq!(lines.len(), 2);
    let ok = &lines[0];
    for field in [
        "time",
        "request_id",
        "client_ip",
        "method",
        "path",
        "auth",
        "outcome",
        "user",
        "status",
        "duration_ms",
    ] {
        assert!(!ok[field].is_null(), "missing {field} in {ok}");
    }
    assert_eq!(ok["path"], "/rest/api/2/issue/X-1");
    assert_eq!(
        (ok["user"].as_str(), ok["status"].as_u64(), ok["auth"].as_str()),
        (Some("alice"), Some(200), Some("basic"))
    );
    assert_eq!(lines[1]["status"], 401);
    assert!(lines[1]["user"].is_null());
}

#[tokio::test]
async fn gathered_audit_lines_are_written_within_the_flush_interval() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let extra = "[audit]\nto = \"{dir}/audit.log\"\nflush = \"200ms\"\n";
    let proxy = Proxy::start(&basic_config(extra), jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    for _ in 0..300 {
        if !proxy.audit().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let lines = proxy.audit();
    assert_eq!(lines.len(), 1, "the line is written by the flush timer");
    assert_eq!(lines[0]["user"], "alice");
}

#[tokio::test]
async fn gathered_audit_lines_are_all_written_at_shutdown() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let extra = "[audit]\nto = \"{dir}/audit.log\"\nflush = \"60s\"\n";
    let proxy = Proxy::start(&basic_config(extra), jira.addr).await;
    for user in ["alice", "bob", "alice"] {
        let r = get(
            &proxy.url("/rest/api/2/myself"),
            &[("authorization", &basic(user, &format!("{user}-pw")))],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert!(proxy.audit().is_empty(), "gathered, not yet written");
    let Proxy { running, dir, .. } = proxy;
    running.shutdown().await;
    let text = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    let mut users: Vec<String> = text
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["user"].as_str().unwrap().to_owned()
        })
        .collect();
    // Each listener thread writes its own gathered lines: the order across
    // threads is not the order of the requests (the README says so).
    users.sort();
    assert_eq!(users, ["alice", "alice", "bob"]);
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_request_finish() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let url = proxy.url("/test/slow/600");
    let auth = basic("alice", "alice-pw");
    let inflight = tokio::spawn(async move { get(&url, &[("authorization", &auth)]).await.status });
    // Wait until the request is at Jira (it sleeps there), then shut down.
    for _ in 0..200 {
        if jira.count() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(jira.count(), 1, "request reached Jira before shutdown");
    let addr = proxy.addr;
    proxy.running.shutdown().await;
    assert_eq!(inflight.await.unwrap(), 200);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn slow_request_head_is_cut_off_after_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nheader_read_timeout = \"300ms\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut out = Vec::new();
    // The server must close the connection on its own; 5 s is far beyond the 300 ms limit.
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "connection still open: slowloris defence missing");
    assert_eq!(jira.count(), 0);
}

/// The HTTP parser (the `http` crate) drops a fragment from the request target before
/// anything sees it, so rules and Jira both see the path without it and cannot disagree.
#[tokio::test]
async fn request_target_with_a_fragment_is_judged_and_forwarded_without_it() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let extra = "[[access.rules]]\nname = \"no admin\"\npaths = [\"/secure/**\"]\neffect = \"deny\"\n";
    let proxy = Proxy::start(&basic_config(extra), jira.addr).await;
    let auth = basic("alice", "alice-pw");
    let req = format!(
        "GET /rest/api/2/myself#/../../../secure/admin HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status(&raw(proxy.addr, req.as_bytes()).await), 200);
    assert_eq!(jira.last().target, "/rest/api/2/myself");
    assert_eq!(proxy.audit().pop().unwrap()["path"], "/rest/api/2/myself");
}

/// A path that cannot be normalised ends the request with a 400 before it has a path of
/// its own: the audit line names the path as the caller sent it.
#[tokio::test]
async fn a_path_refused_before_it_is_normalised_is_audited_as_sent() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let auth = basic("alice", "alice-pw");
    let req = format!(
        "GET /rest/../../secure/admin HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status(&raw(proxy.addr, req.as_bytes()).await), 400);
    let long = format!("/{}/../../x", "a".repeat(600));
    let req = format!("GET {long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(raw_status(&raw(proxy.addr, req.as_bytes()).await), 400);
    assert_eq!(jira.count(), 0);
    let lines = proxy.audit();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["path"], "/rest/../../secure/admin");
    assert_eq!(lines[0]["status"], 400);
    assert_eq!(lines[1]["path"], &long[..512], "cut at 512 bytes");
}

#[tokio::test]
async fn basic_cold_cache_burst_of_the_right_password_is_one_check_and_never_locked_out() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let url = proxy.url("/x");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                get(&url, &[("authorization", &basic("alice", "alice-pw"))])
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(proxy.basic_verifications(), 1);
}
