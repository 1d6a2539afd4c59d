//! The attack suite: named hostile inputs, each with the safe outcome it must get. Most are
//! raw bytes on a fresh connection (what an HTTP client library would refuse to send);
//! "reaches Jira" cases then check what Jira saw, "never reaches Jira" cases that it saw
//! nothing. One proxy: Basic for alice (jira-users) and bob (jira-administrators), sessions,
//! OAuth 1.0a, a rule keeping non-admins off admin pages and one keeping everyone off
//! `WEB-INF`/`META-INF` (Jira's own CVE paths).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use support::oauth1::*;
use support::*;

const RULES: &str = r#"
[[access.rules]]
name = "no servlet internals"
paths = ["/**/WEB-INF/**", "/**/META-INF/**"]
effect = "deny"
[[access.rules]]
name = "admin pages for admins"
paths = ["/secure/admin/**"]
groups_not = ["jira-administrators"]
effect = "deny"
[[access.rules]]
name = "public status"
paths = ["/status"]
anonymous = true
methods = ["GET"]
effect = "allow"
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#;

async fn setup() -> (FakeJira, Proxy) {
    let base = basic_config("")
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\npublic_url = \"https://jira.example.com\"\n[admin]\nlisten = \"127.0.0.1:0\"",
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            "[[auth.chain]]\ntype = \"session\"\n[[auth.chain]]\ntype = \"oauth1\"\n[[auth.chain]]\ntype = \"basic\"",
        );
    let text = with_rules(
        &base,
        &format!(
            "[[oauth1.consumers]]\nkey = \"reporting\"\nsecret = \"consumer-secret\"\n\
             two_legged = {{ allowed = true, run_as = \"reporting-bot\" }}\n{RULES}"
        ),
    );
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&text, jira.addr).await;
    (jira, proxy)
}

/// What a hostile request must come to.
#[derive(Debug)]
enum Safe {
    /// Refused with this status; Jira saw nothing.
    Refused(u16),
    /// Reached Jira as `user` (None: anonymous) at exactly `target`.
    Reached(Option<&'static str>, &'static str),
}

struct Case {
    name: &'static str,
    request: String,
    safe: Safe,
}

fn alice() -> String {
    basic("alice", "alice-pw")
}

/// `GET target` as alice with extra header lines.
fn as_alice(target: &str, extra: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n{extra}Connection: close\r\n\r\n",
        alice()
    )
}

fn anonymous(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n")
}

fn case(name: &'static str, request: String, safe: Safe) -> Case {
    Case { name, request, safe }
}

/// Runs every case on its own connection and checks its outcome and Jira's view.
async fn run(cases: Vec<Case>) -> usize {
    let (jira, proxy) = setup().await;
    let mut failures = Vec::new();
    for c in &cases {
        let before = jira.count();
        let answer = raw(proxy.addr, c.request.as_bytes()).await;
        let status = raw_status(&answer);
        let ok = match &c.safe {
            Safe::Refused(want) => status == *want && jira.count() == before,
            Safe::Reached(user, target) => {
                jira.count() == before + 1 && {
                    let seen = jira.last();
                    seen.user.as_deref() == *user && seen.target == *target && !leaked(&seen)
                }
            }
        };
        if !ok {
            let seen = (jira.count() > before).then(|| {
                let s = jira.last();
                format!("jira saw {} as {:?}, headers {:?}", s.target, s.user, s.headers)
            });
            failures.push(format!("{}: wanted {:?}, got {status}; {seen:?}", c.name, c.safe));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

/// Anything a client smuggled that Jira must never see.
fn leaked(seen: &Seen) -> bool {
    let h = &seen.headers;
    let spoofed = h
        .get_all("x-forwarded-user")
        .iter()
        .any(|v| v.as_bytes().starts_with(b"admin"))
        || h.get_all("x-forwarded-user").iter().count() > 1;
    let other_identity = [
        "x-remote-user",
        "remote-user",
        "x-authenticated-user",
        "x-auth-user",
        "upgrade",
        "http2-settings",
    ]
    .iter()
    .any(|n| h.contains_key(*n));
    let cookies = h.get("cookie").and_then(|v| v.to_str().ok()).is_some_and(|c| {
        c.to_ascii_lowercase().contains("jsessionid") || c.contains("seraph") || c.contains("JAPSESSION")
    });
    let params = seen.target.to_ascii_lowercase().contains("os_") || seen.target.contains("xoauth_requestor_id");
    spoofed || other_identity || cookies || params
}

#[tokio::test]
async fn identity_spoofing_never_reaches_jira() {
    let me = Safe::Reached(Some("alice"), "/rest/api/2/myself");
    let n = run(vec![
        case("identity header", as_alice("/rest/api/2/myself", "X-Forwarded-User: admin\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("identity header, upper case", as_alice("/rest/api/2/myself", "X-FORWARDED-USER: admin\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("identity header, underscores", as_alice("/rest/api/2/myself", "X_Forwarded_User: admin\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("identity header, twice", as_alice("/rest/api/2/myself", "X-Forwarded-User: admin\r\nX-Forwarded-User: admin2\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("identity header named in Connection", format!("GET /rest/api/2/myself HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close, X-Forwarded-User\r\nX-Forwarded-User: admin\r\n\r\n", alice()), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("credential named in Connection", format!("GET /rest/api/2/myself HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close, Authorization\r\n\r\n", alice()), Safe::Refused(401)),
        case("other identity headers", as_alice("/rest/api/2/myself", "X-Remote-User: admin\r\nRemote-User: admin\r\nX-Authenticated-User: admin\r\nX-Auth-User: admin\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("identity header, anonymous on a public path", anonymous("/status", "X-Forwarded-User: admin\r\n"), Safe::Reached(None, "/status")),
        case("Jira's session cookie", as_alice("/rest/api/2/myself", "Cookie: JSESSIONID=stolen\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("Jira's session cookie, lower case", as_alice("/rest/api/2/myself", "Cookie: jsessionid=stolen\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("Jira's session cookie behind RFC 2109's comma", as_alice("/rest/api/2/myself", "Cookie: $Version=1; theme=dark, JSESSIONID=stolen\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("Seraph's remember-me cookie", as_alice("/rest/api/2/myself", "Cookie: seraph.rememberme.cookie=stolen\r\n"), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("Seraph's login parameters", as_alice("/rest/api/2/myself?os_username=admin&os_password=x", ""), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("Seraph's login parameters, upper case", as_alice("/rest/api/2/myself?OS_USERNAME=admin", ""), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("Seraph's login parameters, encoded", as_alice("/rest/api/2/myself?os%5Fusername=admin", ""), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("the OAuth requestor parameter", as_alice("/rest/api/2/myself?xoauth_requestor_id=admin", ""), Safe::Reached(Some("alice"), "/rest/api/2/myself")),
        case("Basic user name with a control character", format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n", basic("ali\u{1}ce", "alice-pw")), Safe::Refused(401)),
        case("Basic user name with trailing whitespace", format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n", basic("alice ", "alice-pw")), Safe::Refused(401)),
        case("spoofed Forwarded and X-Real-IP", as_alice("/rest/api/2/myself", "Forwarded: for=10.0.0.1;by=admin\r\nX-Real-IP: 10.0.0.1\r\n"), me),
    ])
    .await;
    assert_eq!(n, 19);
}

#[tokio::test]
async fn path_confusion_reaches_jira_only_as_the_rules_saw_it() {
    let forbidden = || Safe::Refused(403);
    let n = run(vec![
        case("admin page", as_alice("/secure/admin/ViewUsers.jspa", ""), forbidden()),
        case("dot-dot into admin", as_alice("/rest/api/2/../../../secure/admin/x", ""), forbidden()),
        case("encoded dot-dot into admin", as_alice("/rest/%2e%2e/secure/admin/x", ""), forbidden()),
        case("encoded letter", as_alice("/secure/%61dmin/x", ""), forbidden()),
        case("encoded slash", as_alice("/secure%2Fadmin/x", ""), Safe::Refused(400)),
        case("encoded backslash", as_alice("/secure%5Cadmin/x", ""), Safe::Refused(400)),
        case("path parameter on a segment", as_alice("/secure/admin;jsessionid=abc/x", ""), forbidden()),
        case("dot-dot-semicolon", as_alice("/rest/..;/secure/admin/x", ""), forbidden()),
        case("double slashes", as_alice("//secure//admin/x", ""), forbidden()),
        case("dot segment", as_alice("/secure/./admin/x", ""), forbidden()),
        case("trailing semicolon", as_alice("/secure/admin/x;", ""), forbidden()),
        case("NUL byte", as_alice("/secure/admin/x%00.js", ""), Safe::Refused(400)),
        case("above the root", as_alice("/../secure/admin/x", ""), Safe::Refused(400)),
        case("overlong UTF-8 dots", as_alice("/%c0%ae%c0%ae/secure/admin", ""), Safe::Refused(400)),
        case("absolute-form target", format!("GET http://evil.example/secure/admin/x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\n\r\n", alice()), forbidden()),
        case("CVE-2021-26086: ;/WEB-INF", as_alice("/s/x/_/;/WEB-INF/web.xml", ""), forbidden()),
        case("CVE-2021-26086: encoded dot before WEB-INF", as_alice("/s/x/_/%2e/WEB-INF/web.xml", ""), forbidden()),
        case("CVE-2021-26085: ;/META-INF", as_alice("/s/x/_/;/META-INF/maven/com.atlassian.jira/atlassian-jira-webapp/pom.xml", ""), forbidden()),
        case("CVE-2019-8442: META-INF via a plugin resource", as_alice("/s/x/_/META-INF/maven/com.atlassian.jira/jira-core/pom.xml", ""), forbidden()),
        case("double-encoded slash stays one segment", as_alice("/secure/admin%252Fx", ""), Safe::Reached(Some("alice"), "/secure/admin%252Fx")),
        case("upper-case path is another path for Tomcat too", as_alice("/SECURE/ADMIN/x", ""), Safe::Reached(Some("alice"), "/SECURE/ADMIN/x")),
        case("parameters stripped on the way to Jira too", as_alice("/rest/api/2/issue;x=1/X-1", ""), Safe::Reached(Some("alice"), "/rest/api/2/issue/X-1")),
    ])
    .await;
    assert_eq!(n, 22);
}

#[tokio::test]
async fn malformed_basic_credentials_are_refused_never_anonymous() {
    let with =
        |value: &str| format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\nConnection: close\r\n\r\n");
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let huge = format!("Basic {}", b64(format!("alice:{}", "x".repeat(20_000)).as_bytes()));
    let n = run(vec![
        case("empty Basic", with("Basic "), Safe::Refused(401)),
        case(
            "Basic that is not base64",
            with("Basic !!!notbase64"),
            Safe::Refused(401),
        ),
        case(
            "Basic without a colon",
            with(&format!("Basic {}", b64(b"alice"))),
            Safe::Refused(401),
        ),
        case(
            "Basic with non-UTF-8 bytes",
            with(&format!("Basic {}", b64(b"alice:\xff\xfe"))),
            Safe::Refused(401),
        ),
        case(
            "Basic with an empty user",
            with(&format!("Basic {}", b64(b":alice-pw"))),
            Safe::Refused(401),
        ),
        case("Basic over 16 KiB", with(&huge), Safe::Refused(401)),
        case("unknown scheme", with("Negotiate YIIB"), Safe::Refused(401)),
        case(
            "Basic, lower-case scheme, right password",
            with(&format!("basic {}", b64(b"alice:alice-pw"))),
            Safe::Reached(Some("alice"), "/x"),
        ),
        case(
            "Basic, password with colons",
            with(&format!("Basic {}", b64(b"alice:alice-pw:extra"))),
            Safe::Refused(401),
        ),
    ])
    .await;
    assert_eq!(n, 9);
}

#[tokio::test]
async fn request_smuggling_and_malformed_framing_get_one_request_or_a_400() {
    let auth = alice();
    let smuggled = format!("GET /status HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
    let n = run(vec![
        // RFC 9112 §6.1: framed by Transfer-Encoding alone, and the connection closes, so the
        // bytes after the chunked body are never read as a request of their own.
        case("Content-Length and Transfer-Encoding", format!("POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"), Safe::Refused(400)),
        case("Content-Length with a plus sign", format!("POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: +3\r\nConnection: close\r\n\r\nabc"), Safe::Refused(400)),
        case("two different Content-Lengths", format!("POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: 3\r\nContent-Length: 40\r\nConnection: close\r\n\r\nabc"), Safe::Refused(400)),
        case("Transfer-Encoding not ending in chunked", format!("POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n0\r\n\r\n"), Safe::Refused(400)),
        case("obs-fold continuation line", format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-Folded: a\r\n b\r\nConnection: close\r\n\r\n"), Safe::Refused(400)),
        case("space before the colon", format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-Forwarded-User : admin\r\nConnection: close\r\n\r\n"), Safe::Refused(400)),
        case("NUL in a header value", format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nX-A: a\0b\r\nConnection: close\r\n\r\n"), Safe::Refused(400)),
        case("h2c upgrade", as_alice("/x", "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"), Safe::Reached(Some("alice"), "/x")),
        case("websocket upgrade", as_alice("/x", "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"), Safe::Reached(Some("alice"), "/x")),
        case("two Host headers", format!("GET /x HTTP/1.1\r\nHost: x\r\nHost: y\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"), Safe::Refused(400)),
        case("two Authorization headers", format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n", basic("bob", "bob-pw")), Safe::Refused(400)),
        case("a 40 KiB header", as_alice("/x", &format!("X-Big: {}\r\n", "a".repeat(40_000))), Safe::Refused(431)),
        case("1 MB of headers", as_alice("/x", &"X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(16_000)), Safe::Refused(431)),
        case("200 headers", as_alice("/x", &"X-N: 1\r\n".repeat(200)), Safe::Refused(431)),
        case("space inside the target", format!("GET /x y HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"), Safe::Refused(400)),
    ])
    .await;
    assert_eq!(n, 15);
}

#[tokio::test]
async fn oauth_replays_skews_duplicates_and_unsigned_bodies_are_refused() {
    let (jira, proxy) = setup().await;
    let signer = Signer {
        consumer: "reporting",
        secret: "consumer-secret",
        token: "",
        token_secret: "",
        extra: vec![],
    };
    let call = |auth: String, target: &str| {
        let url = proxy.url(target);
        async move { get(&url, &[("authorization", &auth)]).await }
    };
    let once = signer.sign("GET", "/x", "n-1");
    assert_eq!(call(once.clone(), "/x").await.status, 200);
    let cases: Vec<(&str, Resp, &str)> = vec![
        ("replayed request", call(once.clone(), "/x").await, "nonce_used"),
        (
            "a timestamp an hour old",
            call(
                signer
                    .sign("GET", "/x", "n-2")
                    .replace(&now().to_string(), &(now() - 3600).to_string()),
                "/x",
            )
            .await,
            "timestamp_refused",
        ),
        (
            "a nonce both in the header and the query",
            call(signer.sign("GET", "/x", "n-3"), "/x?oauth_nonce=n-3").await,
            "parameter_rejected",
        ),
        (
            "an unknown consumer",
            call(signer.sign("GET", "/x", "n-4").replace("reporting", "intruder"), "/x").await,
            "consumer_key_unknown",
        ),
        (
            "signed for another path",
            call(signer.sign("GET", "/x", "n-5"), "/secure/admin/x").await,
            "signature_invalid",
        ),
        (
            "a query added after signing",
            call(signer.sign("GET", "/x", "n-6"), "/x?jql=1").await,
            "signature_invalid",
        ),
        (
            "a requestor the consumer may not name",
            call(signer.sign("GET", "/x", "n-7"), "/x?xoauth_requestor_id=bob").await,
            "signature_invalid",
        ),
    ];
    for (name, r, problem_name) in &cases {
        assert_eq!((r.status, problem(r).as_str()), (401, *problem_name), "{name}");
    }
    // A form body the signature does not cover, and one too large to check.
    let signed = signer.sign("POST", "/x", "n-8");
    let r = send(
        "POST",
        &proxy.url("/x"),
        &[
            ("authorization", &signed),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Bytes::from_static(b"body=not+signed"),
    )
    .await;
    assert_eq!(
        (r.status, problem(&r).as_str()),
        (401, "signature_invalid"),
        "form body not covered"
    );
    let r = send(
        "POST",
        &proxy.url("/x"),
        &[
            ("authorization", &signer.sign("POST", "/x", "n-9")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Bytes::from(format!("a={}", "b".repeat(1 << 20))),
    )
    .await;
    assert_eq!(r.status, 413, "a 1 MB form body is not read to check it");
    assert_eq!(jira.count(), 1, "only the first, honest call reached Jira");
}

#[tokio::test]
async fn a_cookie_field_that_connection_names_never_reaches_jira() {
    let (jira, proxy) = setup().await;
    // `Connection` makes the field this hop's: none of its cookies goes on, not even those
    // the proxy would otherwise pass.
    let hop = as_alice(
        "/rest/api/2/myself",
        "Cookie: theme=dark; JSESSIONID=stolen\r\nConnection: Cookie\r\n",
    );
    assert_eq!(raw_status(&raw(proxy.addr, hop.as_bytes()).await), 200);
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("alice"));
    assert!(!seen.headers.contains_key("cookie"), "{:?}", seen.headers);
    // Without `Connection` naming it, the harmless cookie goes on and Jira's does not.
    let sent = as_alice("/rest/api/2/myself", "Cookie: theme=dark; JSESSIONID=stolen\r\n");
    assert_eq!(raw_status(&raw(proxy.addr, sent.as_bytes()).await), 200);
    let cookies: Vec<_> = jira.last().headers.get_all("cookie").iter().cloned().collect();
    assert_eq!(cookies, ["theme=dark"]);
    assert_eq!(jira.count(), 2);
}

#[tokio::test]
async fn session_fixation_duplicate_cookies_and_logout_reuse_are_refused() {
    let (jira, proxy) = setup().await;
    let login = |cookie: Option<String>| {
        let url = proxy.url("/rest/auth/1/session");
        async move {
            let mut h = vec![("content-type".to_string(), "application/json".to_string())];
            if let Some(c) = cookie {
                h.push(("cookie".into(), c));
            }
            let hs: Vec<(&str, &str)> = h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            send(
                "POST",
                &url,
                &hs,
                Bytes::from(r#"{"username":"alice","password":"alice-pw"}"#),
            )
            .await
        }
    };
    let planted = "JAPSESSION=chosen-by-the-attacker".to_string();
    let r = login(Some(planted.clone())).await;
    let issued = format!("JAPSESSION={}", r.json()["session"]["value"].as_str().unwrap());
    assert_ne!(issued, planted, "fixation: the planted id is not adopted");
    assert_eq!(get(&proxy.url("/x"), &[("cookie", &planted)]).await.status, 401);
    let both = format!("{issued}; {planted}");
    assert_eq!(
        get(&proxy.url("/x"), &[("cookie", &both)]).await.status,
        401,
        "two cookies of the name"
    );
    assert_eq!(get(&proxy.url("/x"), &[("cookie", &issued)]).await.status, 200);
    // A Cookie field that `Connection` names is this hop's: it goes before anything reads
    // it, as an `Authorization` so named does, and the session in it is not used.
    let hop = format!("GET /x HTTP/1.1\r\nHost: x\r\nCookie: {issued}\r\nConnection: close, Cookie\r\n\r\n");
    assert_eq!(
        raw_status(&raw(proxy.addr, hop.as_bytes()).await),
        401,
        "a session cookie in a field Connection names"
    );
    let r = send(
        "DELETE",
        &proxy.url("/rest/auth/1/session"),
        &[("cookie", &issued)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        get(&proxy.url("/x"), &[("cookie", &issued)]).await.status,
        401,
        "logout reuse"
    );
    assert_eq!(jira.count(), 1);
}

/// The basic config with `[server]` limits added.
async fn limited(limits: &str) -> (FakeJira, Proxy) {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:0\"\n{limits}"),
        1,
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    (jira, proxy)
}

async fn keep_alive_request(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n", alice());
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_millis(800), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let (_jira, proxy) = limited("max_connections = 2").await;
    let mut a = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut b = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert!(
        keep_alive_request(&mut a)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    );
    assert!(
        keep_alive_request(&mut b)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
    );
    let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert!(
        keep_alive_request(&mut c).await.is_none(),
        "a third connection is not served yet"
    );
    drop(a);
    let mut buf = vec![0u8; 4096];
    use tokio::io::AsyncReadExt;
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "served once a slot is free"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() {
    let (_jira, proxy) = limited("header_read_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    assert!(keep_alive_request(&mut s).await.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed by the proxy");
}

#[tokio::test]
async fn bodies_the_proxy_reads_itself_are_capped_by_max_read_body_bytes() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("")
        .replacen(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nmax_read_body_bytes = 2048",
            1,
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            "[[auth.chain]]\ntype = \"session\"\n[[auth.chain]]\ntype = \"basic\"",
        );
    let proxy = Proxy::start(&text, jira.addr).await;
    let cookie = format!("JAPSESSION={}", alice_session(&proxy).await);
    // A cookie call's form is read for its form token, under the cap.
    let r = send(
        "POST",
        &proxy.url("/x"),
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-atlassian-token", "no-check"),
        ],
        Bytes::from(format!("a={}", "b".repeat(4096))),
    )
    .await;
    assert_eq!(r.status, 413);
    // Bodies the proxy does not read stream through whatever their size.
    let r = send(
        "POST",
        &proxy.url("/x"),
        &[
            ("authorization", &alice()),
            ("content-type", "application/octet-stream"),
        ],
        Bytes::from(vec![7u8; 1 << 20]),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().body_len, 1 << 20);
}

/// Opens streams and cancels each (HEADERS then RST_STREAM, CVE-2023-44487) for as long as
/// the proxy lets the connection live, at most `limit`; `pace` is a wait between a stream's
/// HEADERS and its cancel; `body`: the HEADERS leave the request body open (the cancel then
/// cuts it off) rather than ending the stream. Jira takes seconds to answer, so no stream
/// is answered before its cancel arrives, however the two sides are scheduled. Returns the
/// streams sent, once the connection has ended.
async fn reset_flood(proxy: &Proxy, pace: Option<std::time::Duration>, body: bool, limit: usize) -> usize {
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let mut sent = 0;
    let mut ended_by = None;
    while sent < limit {
        let req = http::Request::get("http://proxy/test/slow/5000")
            .header("authorization", alice())
            .body(())
            .unwrap();
        let (response, mut stream) = match client.send_request(req, !body) {
            Ok(x) => x,
            Err(e) => {
                ended_by = Some(e);
                break;
            }
        };
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        sent += 1;
        if sent % 64 == 0 {
            // Let the connection's task write what is queued, so the flood is on the wire.
            tokio::task::yield_now().await;
        }
        client = match client.ready().await {
            Ok(c) => c,
            Err(e) => {
                ended_by = Some(e);
                break;
            }
        };
    }
    assert!(
        sent < limit,
        "the connection was still open after {sent} cancelled streams"
    );
    // Paced, the proxy's own tally ends the connection, and the client is told (GOAWAY)
    // rather than cut off. Unpaced, the HTTP/2 library's count of cancels waiting to be
    // taken up may get there first: it closes at once, and a client writing as fast as it
    // can may see its next write fail before it reads the GOAWAY.
    if pace.is_some() {
        assert!(
            ended_by.as_ref().is_some_and(|e| e.is_go_away() && e.is_remote()),
            "{ended_by:?}"
        );
    }
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), connection).await;
    assert!(
        ended.is_ok(),
        "the proxy closed the flooding connection (after {sent} streams)"
    );
    sent
}

/// After a flood: the work it started was bounded, and everyone else is still served.
async fn served_after_a_flood(jira: &FakeJira, proxy: &Proxy, sent: usize) {
    // The cancel budget (twice the default 128 streams at once), plus the streams open
    // when the connection was closed.
    let reached = jira.count();
    assert!(
        reached <= 2 * 128 + 128,
        "{reached} of {sent} cancelled streams reached Jira"
    );
    assert_eq!(get(&proxy.url("/status"), &[]).await.status, 200);
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::get("http://proxy/status").body(()).unwrap();
    let (response, _) = client.send_request(req, true).unwrap();
    assert_eq!(
        response.await.unwrap().status(),
        200,
        "a new HTTP/2 connection is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_flood_ends_the_connection_not_the_proxy() {
    for body in [false, true] {
        let (jira, proxy) = setup().await;
        let sent = reset_flood(&proxy, None, body, 200_000).await;
        served_after_a_flood(&jira, &proxy, sent).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_flood_paced_so_each_stream_is_taken_up_first_ends_the_connection_too() {
    // Each cancel arrives after the proxy took its stream up, so the HTTP/2 library's own
    // count of streams cancelled while waiting never moves; the proxy's tally does.
    // With a body left open, the cancel cuts it off and the proxy answers at once, to
    // nobody: that is counted too.
    for body in [false, true] {
        let (jira, proxy) = setup().await;
        let sent = reset_flood(&proxy, Some(std::time::Duration::from_millis(5)), body, 2_000).await;
        served_after_a_flood(&jira, &proxy, sent).await;
        let metrics = proxy.admin("/metrics").await.1;
        assert!(
            metrics.contains("\njap_http2_rapid_reset_total 1\n"),
            "counted once:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancelling_one_stream_in_three_keeps_its_connection() {
    let (_jira, proxy) = setup().await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // As HTTP/2 clients do: a reset is not held back until the previous frame is acked.
    tcp.set_nodelay(true).unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let status = async |client: &mut h2::client::SendRequest<Bytes>| {
        let req = http::Request::get("http://proxy/status").body(()).unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        response.await.unwrap().status()
    };
    // 300 cancels: more than the 256 a connection may make in a row, each after two answers.
    for _ in 0..300 {
        for _ in 0..2 {
            assert_eq!(status(&mut client).await, 200);
        }
        let req = http::Request::get("http://proxy/test/slow/5000")
            .header("authorization", alice())
            .body(())
            .unwrap();
        let (response, mut stream) = client.send_request(req, true).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        stream.send_reset(h2::Reason::CANCEL);
        drop(response);
        client = client.ready().await.unwrap();
    }
    assert_eq!(status(&mut client).await, 200, "still served on the same connection");
    assert!(!connection.is_finished());
}

/// An HTTP/2 frame: 9-byte header (length, type, flags, stream) and payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

#[tokio::test]
async fn an_http2_continuation_flood_is_cut_off_not_buffered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (jira, proxy) = setup().await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    s.write_all(&frame(0x4, 0, 0, &[])).await.unwrap(); // SETTINGS
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end the block:
    // up to 8 MB of header block if nobody stops it.
    s.write_all(&frame(0x1, 0x1, 1, &[0x82, 0x86, 0x84])).await.unwrap();
    let chunk = vec![0x40u8; 16_384];
    let mut written = 0usize;
    for _ in 0..512 {
        if s.write_all(&frame(0x9, 0, 1, &chunk)).await.is_err() {
            break;
        }
        written += chunk.len();
    }
    // The proxy answers with GOAWAY and closes: reading reaches the end.
    let mut buf = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(
        closed,
        "the connection was closed ({written} bytes of header block written)"
    );
    assert_eq!(jira.count(), 0);
    assert_eq!(get(&proxy.url("/status"), &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_neither_block_others_nor_stay_open() {
    // 5 s: room for 4,000 connects and a cold argon2 check (debug build, a machine busy
    // with the other tests) before the first idle connections time out.
    let (_jira, proxy) = limited("header_read_timeout = \"5s\"\n[admin]\nlisten = \"127.0.0.1:0\"").await;
    let mut idle = Vec::new();
    for _ in 0..4_000 {
        idle.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    let open = |m: &str| -> i64 {
        m.lines()
            .find_map(|l| l.strip_prefix("jap_open_connections "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    };
    // Connected is not yet accepted: on a busy machine the proxy may still be taking the
    // last ones from the backlog.
    let accepted = std::time::Instant::now() + std::time::Duration::from_secs(4);
    loop {
        let n = open(&proxy.admin("/metrics").await.1);
        if n >= 3_900 {
            break;
        }
        assert!(std::time::Instant::now() < accepted, "only {n} connections accepted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = get(&proxy.url("/x"), &[("authorization", &alice())]).await;
    assert_eq!(r.status, 200, "served beside 4,000 idle connections");
    // Sending nothing is not a way to hold a connection: each is closed after the header
    // read timeout.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = open(&proxy.admin("/metrics").await.1);
        if n <= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{n} connections still open");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(idle);
}
