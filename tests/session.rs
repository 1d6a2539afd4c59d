//! Session cookies from `POST /rest/auth/1/session`, answered by the proxy: login in Jira's
//! shape, the cookie's attributes and lifetimes, logout, fixation, XSRF rules, Jira's own
//! cookies kept out both ways, and a TOTP second factor for chosen groups.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::*;

/// 20 bytes "12345678901234567890" in base32: RFC 6238's test secret.
const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const LOGIN: &str = "/rest/auth/1/session";

fn config(session: &str) -> String {
    basic_config("")
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\npublic_url = \"https://jira.example.com\"",
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            &format!("[[auth.chain]]\ntype = \"session\"\n{session}\n[[auth.chain]]\ntype = \"basic\""),
        )
}

async fn start(session: &str) -> (FakeJira, Proxy) {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(session), jira.addr).await;
    (jira, proxy)
}

async fn login(proxy: &Proxy, body: serde_json::Value, cookie: Option<&str>) -> Resp {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    send("POST", &proxy.url(LOGIN), &headers, Bytes::from(body.to_string())).await
}

fn creds(user: &str, password: &str) -> serde_json::Value {
    serde_json::json!({"username": user, "password": password})
}

/// `NAME=value` of the session cookie the answer set.
fn session_cookie(r: &Resp) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("JAPSESSION="))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie in {:?}", r.headers))
        .to_string()
}

async fn with_cookie(proxy: &Proxy, method: &str, path: &str, cookie: &str, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("cookie", cookie)];
    headers.extend_from_slice(extra);
    send(method, &proxy.url(path), &headers, Bytes::from_static(b"{}")).await
}

#[tokio::test]
async fn login_answers_in_jiras_shape_and_the_cookie_then_authenticates() {
    let (jira, proxy) = start("").await;
    let r = login(&proxy, creds("alice", "alice-pw"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let body = r.json();
    assert_eq!(body["session"]["name"], "JAPSESSION");
    let value = body["session"]["value"].as_str().unwrap().to_string();
    assert!(value.len() >= 43, "256 random bits");
    assert_eq!(body["loginInfo"]["loginCount"], 1);
    let set = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("JAPSESSION="))
        .unwrap();
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Secure"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    assert_eq!(jira.count(), 0, "the login never reaches Jira");

    let cookie = format!("{}; theme=dark", session_cookie(&r));
    let r = with_cookie(&proxy, "GET", "/rest/api/2/myself", &cookie, &[]).await;
    assert_eq!(r.status, 200);
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("alice"));
    let forwarded = seen.headers.get("cookie").map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        forwarded.as_deref(),
        Some("theme=dark"),
        "the proxy's cookie never reaches Jira"
    );
    let audit = proxy.audit();
    assert_eq!(audit.last().unwrap()["auth"], "session");

    let r = with_cookie(&proxy, "GET", LOGIN, &cookie, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["name"], "alice");
    assert_eq!(
        r.json()["self"],
        "https://jira.example.com/rest/api/latest/user?username=alice"
    );
    let r = login(&proxy, creds("alice", "alice-pw"), None).await;
    assert_eq!(r.json()["loginInfo"]["loginCount"], 2);
    assert!(r.json()["loginInfo"]["previousLoginTime"].is_string());
    // /rest/auth/latest/session is the same endpoint.
    let r = send(
        "POST",
        &proxy.url("/rest/auth/latest/session"),
        &[("content-type", "application/json")],
        Bytes::from(creds("bob", "bob-pw").to_string()),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn failed_logins_say_login_failed_and_the_lockout_applies() {
    let (jira, proxy) = start("").await;
    for _ in 0..3 {
        let r = login(&proxy, creds("alice", "wrong"), None).await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.json(),
            serde_json::json!({"errorMessages": ["Login failed"], "errors": {}})
        );
        assert!(r.header("set-cookie").is_none());
    }
    // The Basic member's lockout (3 failures here) holds for the right password too.
    let r = login(&proxy, creds("alice", "alice-pw"), None).await;
    assert_eq!(r.status, 401);
    assert!(r.header("retry-after").is_some());
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 429, "and it is the same lockout as Basic's");
    // Not JSON, or not the expected shape.
    let r = send(
        "POST",
        &proxy.url(LOGIN),
        &[("content-type", "application/x-www-form-urlencoded")],
        Bytes::from_static(b"username=bob&password=bob-pw"),
    )
    .await;
    assert_eq!(r.status, 415);
    let r = login(&proxy, serde_json::json!({"user": "bob"}), None).await;
    assert_eq!(r.status, 400);
    let audit = proxy.audit();
    assert!(audit.iter().any(|l| l["reason"] == "bad_password"), "{audit:?}");
    assert!(!proxy.audit_text().contains("alice-pw") && !proxy.audit_text().contains("wrong"));
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server_and_clears_the_cookie() {
    let (jira, proxy) = start("").await;
    let cookie = session_cookie(&login(&proxy, creds("alice", "alice-pw"), None).await);
    let r = with_cookie(&proxy, "DELETE", LOGIN, &cookie, &[]).await;
    assert_eq!(r.status, 204);
    let cleared: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("JAPSESSION=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    // The old cookie is worthless now: anonymous, and anonymous callers are refused.
    let r = with_cookie(&proxy, "GET", "/rest/api/2/myself", &cookie, &[]).await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    let r = with_cookie(&proxy, "GET", LOGIN, &cookie, &[]).await;
    assert_eq!(r.status, 401);
    let r = with_cookie(&proxy, "DELETE", LOGIN, &cookie, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn every_login_makes_a_fresh_id_and_ends_the_one_it_replaces() {
    let (_jira, proxy) = start("").await;
    let first = session_cookie(&login(&proxy, creds("alice", "alice-pw"), None).await);
    let second = session_cookie(&login(&proxy, creds("alice", "alice-pw"), Some(&first)).await);
    assert_ne!(first, second);
    assert_eq!(with_cookie(&proxy, "GET", LOGIN, &first, &[]).await.status, 401);
    assert_eq!(with_cookie(&proxy, "GET", LOGIN, &second, &[]).await.status, 200);
    // An id the proxy never issued (planted by an attacker) is no session at all; the login
    // that follows gets a new one.
    let planted = "JAPSESSION=attacker-chosen-id";
    assert_eq!(
        with_cookie(&proxy, "GET", "/rest/api/2/myself", planted, &[])
            .await
            .status,
        401
    );
    let third = session_cookie(&login(&proxy, creds("alice", "alice-pw"), Some(planted)).await);
    assert_ne!(third, planted);
    // Two cookies of the session's name cannot be told apart: refused.
    let two = format!("{second}; {third}");
    let r = with_cookie(&proxy, "GET", "/rest/api/2/myself", &two, &[]).await;
    assert_eq!(r.status, 401);
    assert!(proxy.audit_text().contains("ambiguous_session"));
}

#[tokio::test]
async fn sessions_end_after_the_idle_time_and_after_the_absolute_time() {
    let (_jira, proxy) = start("idle_timeout = \"2s\"\nabsolute_timeout = \"3s\"").await;
    let idle = session_cookie(&login(&proxy, creds("alice", "alice-pw"), None).await);
    let busy = session_cookie(&login(&proxy, creds("bob", "bob-pw"), None).await);
    // Bob keeps using his session; Alice does not.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(with_cookie(&proxy, "GET", LOGIN, &busy, &[]).await.status, 200);
    }
    assert_eq!(
        with_cookie(&proxy, "GET", LOGIN, &idle, &[]).await.status,
        401,
        "idle too long"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        with_cookie(&proxy, "GET", LOGIN, &busy, &[]).await.status,
        401,
        "past the absolute lifetime, however busy"
    );
}

#[tokio::test]
async fn cookie_calls_that_change_state_need_proof_they_are_not_cross_site() {
    let (jira, proxy) = start("").await;
    let r = login(&proxy, creds("alice", "alice-pw"), None).await;
    let cookie = session_cookie(&r);
    let xsrf_cookie = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("JAPSESSION-XSRF="))
        .unwrap();
    assert!(!xsrf_cookie.contains("HttpOnly"), "page scripts read the form token");
    let atl = xsrf_cookie["JAPSESSION-XSRF=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(
        with_cookie(&proxy, "GET", LOGIN, &cookie, &[]).await.json()["atl_token"],
        atl.as_str()
    );
    let before = jira.count();
    let post = |extra: &'static [(&'static str, &'static str)]| {
        let (proxy, cookie) = (&proxy, cookie.clone());
        async move { with_cookie(proxy, "POST", "/rest/api/2/issue", &cookie, extra).await }
    };

    let refused = post(&[]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.json(),
        serde_json::json!({"errorMessages": ["XSRF check failed"], "errors": {}})
    );
    assert_eq!(post(&[("origin", "https://evil.example")]).await.status, 403);
    assert_eq!(
        post(&[("referer", "https://jira.example.com.evil.example/x")])
            .await
            .status,
        403
    );
    assert_eq!(post(&[("x-atlassian-token", "nocheck")]).await.status, 403);
    assert_eq!(jira.count(), before, "nothing refused reached Jira");

    assert_eq!(post(&[("x-atlassian-token", "no-check")]).await.status, 201);
    assert_eq!(post(&[("origin", "https://jira.example.com")]).await.status, 201);
    assert_eq!(
        post(&[("referer", "https://jira.example.com/browse/X-1")]).await.status,
        201
    );
    let with_token = with_cookie(
        &proxy,
        "POST",
        &format!("/rest/api/2/issue?atl_token={atl}"),
        &cookie,
        &[],
    )
    .await;
    assert_eq!(with_token.status, 201);
    let wrong = with_cookie(&proxy, "POST", "/rest/api/2/issue?atl_token=guess", &cookie, &[]).await;
    assert_eq!(wrong.status, 403);
    // The form token in a form body.
    let r = send(
        "POST",
        &proxy.url("/rest/api/2/issue"),
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Bytes::from(format!("summary=x&atl_token={atl}")),
    )
    .await;
    assert_eq!(r.status, 201);
    // Reads need nothing; header credentials are not subject to it.
    assert_eq!(
        with_cookie(&proxy, "GET", "/rest/api/2/myself", &cookie, &[])
            .await
            .status,
        200
    );
    let r = send(
        "POST",
        &proxy.url("/rest/api/2/issue"),
        &[("authorization", &basic("bob", "bob-pw"))],
        Bytes::from_static(b"{}"),
    )
    .await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn jiras_own_session_cookies_are_kept_out_both_ways() {
    let (jira, proxy) = start("").await;
    let r = get(
        &proxy.url("/test/cookies"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            ("cookie", "JSESSIONID=stolen; seraph.rememberme.cookie=x; theme=light"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    let sent = jira
        .last()
        .headers
        .get("cookie")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(sent.as_deref(), Some("theme=light"));
    let set: Vec<_> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set, ["theme=dark; Path=/"], "only Jira's non-session cookie comes back");
}

#[tokio::test]
async fn members_of_totp_groups_add_a_one_time_code_and_others_do_not() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = config("totp_groups = [\"jira-users\"]").replace(
        "name = \"alice\"",
        &format!("name = \"alice\"\ntotp_secret = \"{TOTP_SECRET}\""),
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let secret = jira_auth_proxy::auth::totp::base32_decode(TOTP_SECRET).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = jira_auth_proxy::auth::totp::code_at(&secret, now / 30);
    let with_otp = |otp: &str| serde_json::json!({"username": "alice", "password": "alice-pw", "otp": otp});

    assert_eq!(
        login(&proxy, creds("alice", "alice-pw"), None).await.status,
        401,
        "no code"
    );
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(login(&proxy, with_otp(wrong), None).await.status, 401, "wrong code");
    let r = login(&proxy, with_otp(&code), None).await;
    assert_eq!(r.status, 200, "right code");
    assert_eq!(
        login(&proxy, with_otp(&code), None).await.status,
        401,
        "a code works once"
    );
    // Bob (an employee, not in jira-users) signs in with his password alone.
    assert_eq!(login(&proxy, creds("bob", "bob-pw"), None).await.status, 200);
    let audit = proxy.audit_text();
    assert!(audit.contains("bad_otp"));
    assert!(!audit.contains(&code));
}

#[tokio::test]
async fn a_flood_of_refused_guesses_under_new_names_cannot_push_sessions_out_of_a_full_store() {
    // A small memory store, filled many times over by the flood below; the sessions end
    // sooner than the flood's counters, so expiry alone would drop them first.
    let text = format!(
        "{}\n[state]\nmax_entries = 40\n",
        config("idle_timeout = \"5m\"").replacen("[upstream]", "[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]", 1)
    );
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&text, jira.addr).await;
    let alice = session_cookie(&login(&proxy, creds("alice", "alice-pw"), None).await);
    let bob = session_cookie(&login(&proxy, creds("bob", "bob-pw"), None).await);
    // From another address: 20 guesses under new names are checked (the address's
    // limit), then each is refused before any check and leaves a counter at zero behind.
    let statuses = guesses_under_new_names(&proxy, 200).await;
    assert_eq!(statuses, [(401, 20), (429, 180)].into_iter().collect());
    for (user, cookie) in [("alice", &alice), ("bob", &bob)] {
        let r = with_cookie(&proxy, "GET", "/rest/api/2/myself", cookie, &[]).await;
        assert_eq!(r.status, 200, "{user}'s session was pushed out");
        assert_eq!(jira.last().user.as_deref(), Some(user));
    }
    // The admin sees that the store was full, and what it dropped.
    let (_, metrics) = proxy.admin("/metrics").await;
    assert!(metrics.contains("jap_state_max_entries 40\n"), "{metrics}");
    let dropped = |rank: &str| -> u64 {
        let series = format!("jap_state_dropped_total{{rank=\"{rank}\"}} ");
        let line = metrics.lines().find(|l| l.starts_with(&series));
        line.and_then(|l| l[series.len()..].parse().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    };
    assert!(dropped("zero_counter") >= 140, "{metrics}");
    assert_eq!(
        (dropped("proven"), dropped("replay_guard"), dropped("lockout")),
        (0, 0, 0)
    );
}
