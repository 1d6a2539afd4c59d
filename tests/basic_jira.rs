//! Basic auth checked by Jira itself (`backend = "jira"`): one check per credential per
//! TTL, Jira's odd answers understood, and the proxy's lockout tripping before Jira's
//! CAPTCHA so guessing through the proxy never locks a real user out of Jira.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

fn jira_backend_config(lockout: &str) -> String {
    format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{{jira}}"
response_timeout = "2s"
connect_timeout = "1s"
[[auth.chain]]
type = "basic"
backend = "jira"
cache_ttl = "5m"
{lockout}
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#
    )
}

async fn setup(lockout: &str) -> (FakeJira, Proxy) {
    let jira = FakeJira::with_accounts(&[("alice", "alice-jira-pw"), ("bob", "bob-jira-pw")]).await;
    let proxy = Proxy::start(&jira_backend_config(lockout), jira.addr).await;
    (jira, proxy)
}

#[tokio::test]
async fn jira_checks_a_credential_once_for_a_hundred_requests() {
    let (jira, proxy) = setup("").await;
    for _ in 0..100 {
        let r = get(
            &proxy.url("/rest/api/2/issue/X-1"),
            &[("authorization", &basic("alice", "alice-jira-pw"))],
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(jira.basic_checks(), 1);
    let forwarded: Vec<_> = jira
        .seen()
        .into_iter()
        .filter(|s| s.target == "/rest/api/2/issue/X-1")
        .collect();
    assert_eq!(forwarded.len(), 100);
    assert!(
        forwarded
            .iter()
            .all(|s| s.user.as_deref() == Some("alice") && s.headers.get("authorization").is_none())
    );
}

#[tokio::test]
async fn jira_says_wrong_password_so_401_and_not_cached() {
    let (jira, proxy) = setup("").await;
    for _ in 0..2 {
        let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "nope"))]).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(jira.basic_checks(), 2, "failures are never cached");
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "jira_rejected");
}

#[tokio::test]
async fn jira_200_with_authenticated_failed_is_a_failure() {
    let (jira, proxy) = setup("").await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("ghost200", "x"))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "jira_rejected");
    assert_eq!(jira.basic_checks(), 1);
}

#[tokio::test]
async fn jira_captcha_lock_is_a_clear_403_and_stops_further_checks() {
    // Lockout off so the test reaches Jira's own CAPTCHA (as if the user failed elsewhere).
    let (jira, proxy) = setup("lockout = { max_failures = 0, window = \"1m\" }").await;
    for _ in 0..CAPTCHA_AFTER {
        get(&proxy.url("/x"), &[("authorization", &basic("bob", "guess"))]).await;
    }
    let checks = jira.basic_checks();
    let r = get(&proxy.url("/x"), &[("authorization", &basic("bob", "bob-jira-pw"))]).await;
    assert_eq!(r.status, 403);
    let msg = r.json()["errorMessages"][0].as_str().unwrap().to_string();
    assert!(msg.contains("CAPTCHA") && msg.contains("browser"), "{msg}");
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "jira_captcha");
    assert_eq!(jira.basic_checks(), checks + 1);
    for _ in 0..5 {
        let r = get(&proxy.url("/x"), &[("authorization", &basic("bob", "bob-jira-pw"))]).await;
        assert_eq!(r.status, 403);
    }
    assert_eq!(
        jira.basic_checks(),
        checks + 1,
        "a CAPTCHA-locked user's attempts no longer go to Jira"
    );
}

#[tokio::test]
async fn brute_force_through_the_proxy_never_trips_jiras_captcha() {
    let (jira, proxy) = setup("").await;
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(
            get(
                &proxy.url("/x"),
                &[("authorization", &basic("alice", &format!("guess{i}")))],
            )
            .await
            .status,
        );
    }
    assert_eq!(&statuses[..2], &[401, 401]);
    assert!(statuses[2..].iter().all(|s| *s == 429), "{statuses:?}");
    assert!(
        jira.failures("alice") < CAPTCHA_AFTER,
        "Jira counted {} failures",
        jira.failures("alice")
    );
    assert_eq!(jira.basic_checks(), 2);
}

/// Polls `done` every 20 ms for up to 10 s.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Sends a Basic login over HTTP/2 and resets the stream while Jira is still checking it
/// (Jira takes 300 ms), then waits until Jira has answered the check.
async fn abandon_mid_check(jira: &FakeJira, proxy: &Proxy, user: &str, password: &str) {
    let checks = || {
        jira.seen()
            .iter()
            .filter(|s| s.target.starts_with("/test/slow-myself/"))
            .count()
    };
    let (asked, answered) = (checks(), jira.basic_checks());
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get("http://proxy/rest/api/2/issue/X-1")
        .header("authorization", basic(user, password))
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(req, true).unwrap();
    until("the check to reach Jira", || checks() > asked).await;
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    // Jira's check goes on without the client.
    until("Jira to answer the check", || jira.basic_checks() > answered).await;
}

#[tokio::test]
async fn a_login_abandoned_mid_check_counts_as_what_jira_decided() {
    let lockout = "check_path = \"/test/slow-myself/300\"\nlockout = { max_failures = 2, window = \"10m\" }";
    let (jira, proxy) = setup(lockout).await;
    let status = |user: &'static str, password: &'static str| {
        let url = proxy.url("/rest/api/2/issue/X-1");
        async move { get(&url, &[("authorization", &basic(user, password))]).await.status }
    };
    // The right password, abandoned: no failure left behind, and the success is cached.
    abandon_mid_check(&jira, &proxy, "alice", "alice-jira-pw").await;
    assert_eq!(status("alice", "alice-jira-pw").await, 200);
    assert_eq!(jira.basic_checks(), 1, "the abandoned check's success was cached");
    // So two guesses are allowed (an abandoned check left standing as a failure would make
    // the second one 429), and the third is refused.
    assert_eq!(status("alice", "guess1").await, 401);
    assert_eq!(status("alice", "guess2").await, 401);
    assert_eq!(status("alice", "guess3").await, 429);
    // A wrong password abandoned after it reached Jira still counts: Jira counted it.
    for guess in ["guess1", "guess2"] {
        abandon_mid_check(&jira, &proxy, "bob", guess).await;
    }
    assert_eq!(jira.failures("bob"), 2);
    assert_eq!(
        status("bob", "bob-jira-pw").await,
        429,
        "two abandoned guesses are two failures"
    );
}

#[tokio::test]
async fn a_request_joins_the_check_under_way_even_when_its_starter_goes_away() {
    // Jira takes a second: the second request arrives well within it.
    let (jira, proxy) = setup("check_path = \"/test/slow-myself/1000\"").await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get("http://proxy/rest/api/2/issue/X-1")
        .header("authorization", basic("alice", "alice-jira-pw"))
        .body(())
        .unwrap();
    let (response, mut stream) = client.send_request(req, true).unwrap();
    until("the check to reach Jira", || jira.count() == 1).await;
    // A second request with the same credential, then the first goes away.
    let url = proxy.url("/rest/api/2/issue/X-1");
    let second = tokio::spawn(async move {
        get(&url, &[("authorization", &basic("alice", "alice-jira-pw"))])
            .await
            .status
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    stream.send_reset(h2::Reason::CANCEL);
    drop(response);
    assert_eq!(second.await.unwrap(), 200);
    assert_eq!(jira.basic_checks(), 1, "one check answered");
    let asked = jira
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/test/slow-myself/"))
        .count();
    assert_eq!(asked, 1, "one check asked, shared by both requests");
}

#[tokio::test]
async fn many_users_guessed_from_one_address_hit_the_address_limit() {
    let (jira, proxy) = setup("lockout = { max_failures = 2, max_failures_per_address = 4, window = \"10m\" }").await;
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(
            get(
                &proxy.url("/x"),
                &[("authorization", &basic(&format!("user{i}"), "guess"))],
            )
            .await
            .status,
        );
    }
    assert_eq!(statuses, vec![401, 401, 401, 401, 429, 429, 429, 429]);
    assert_eq!(jira.basic_checks(), 4);
}

#[tokio::test]
async fn jira_unreachable_during_the_check_fails_closed_with_503() {
    let closed = free_addr();
    let proxy = Proxy::start(&jira_backend_config(""), closed).await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-jira-pw"))]).await;
    assert_eq!(r.status, 503);
    assert!(r.json()["errorMessages"].is_array());
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "dependency_failed");
}

#[tokio::test]
async fn passthrough_mode_sends_the_checked_credential_on_to_jira() {
    let jira = FakeJira::with_accounts(&[("alice", "alice-jira-pw")]).await;
    let text = jira_backend_config("").replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\n[upstream.identity]\nmode = \"passthrough\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let auth = basic("alice", "alice-jira-pw");
    let r = get(&proxy.url("/rest/api/2/project/X"), &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().headers.get("authorization").unwrap(), auth.as_str());
    assert_eq!(jira.last().user, None);
}

/// Credential checks Jira has been asked on the slow check path, answered or not.
fn slow_checks_asked(jira: &FakeJira) -> usize {
    jira.seen()
        .iter()
        .filter(|s| s.target.starts_with("/test/slow-myself/"))
        .count()
}

#[tokio::test]
async fn at_most_64_credential_checks_run_at_once_and_a_reload_keeps_that_count() {
    // Jira takes 2.5 s over each check; 70 different credentials arrive together, from
    // one address allowed that many failures.
    let lockout = "lockout = { max_failures = 5, max_failures_per_address = 1000, window = \"10m\" }";
    let config = jira_backend_config(&format!("check_path = \"/test/slow-myself/2500\"\n{lockout}"))
        .replace("response_timeout = \"2s\"", "response_timeout = \"20s\"");
    let jira = FakeJira::with_accounts(&[("alice", "alice-jira-pw")]).await;
    let proxy = Proxy::start(&config, jira.addr).await;
    let guess = |n: usize| {
        let url = proxy.url("/rest/api/2/issue/X-1");
        tokio::spawn(async move {
            get(&url, &[("authorization", &basic(&format!("guesser{n}"), "pw"))])
                .await
                .status
        })
    };
    let mut answers: Vec<_> = (0..70).map(guess).collect();
    until("64 checks to reach Jira", || slow_checks_asked(&jira) >= 64).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(slow_checks_asked(&jira), 64, "six wait for a place");
    // A reload builds a new Basic member: the checks under way still hold their places,
    // so new credentials wait too instead of starting 64 more checks.
    proxy.reload_with(&config, jira.addr).await.expect("reload");
    answers.extend((70..76).map(guess));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(slow_checks_asked(&jira), 64, "twelve wait for a place after the reload");
    for a in answers {
        assert_eq!(a.await.unwrap(), 401);
    }
    assert_eq!(jira.basic_checks(), 76, "every credential was checked once");
}
