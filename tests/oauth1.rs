//! OAuth 1.0a two-legged requests signed the way Jira's consumers sign them, checked by the
//! proxy: signatures over URL, query and form body; Jira's impersonation rules; timestamp
//! window; single-use nonces; Jira's `oauth_problem` names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use jira_auth_proxy::auth::oauth1::rfc5849;
use support::oauth1::*;
use support::*;

const PUBLIC: &str = "https://jira.example.com";
const SECRET: &str = "consumer-secret-of-the-reporting-app";

fn config(extra_consumer: &str) -> String {
    basic_config("")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:0\"\npublic_url = \"{PUBLIC}\""),
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            "[[auth.chain]]\ntype = \"oauth1\"\nmax_clock_skew = \"5m\"\n[[auth.chain]]\ntype = \"basic\"",
        )
        + &format!(
            r#"
[[oauth1.consumers]]
key = "reporting"
name = "Reporting scripts"
secret = "{SECRET}"
two_legged = {{ allowed = true, run_as = "reporting-bot", impersonation = false }}

[[oauth1.consumers]]
key = "applink"
secret = "applink-secret"
two_legged = {{ allowed = false, impersonation = true }}
{extra_consumer}
"#
        )
}

struct Signed {
    path_and_query: String,
    authorization: String,
}

/// Signs like an OAuth client would: over the public URL, the query and `form`.
/// `who` is (consumer key, secret); `fresh` is (timestamp, nonce).
fn sign(
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    form: &[(&str, &str)],
    who: (&str, &str),
    fresh: (u64, &str),
) -> Signed {
    let ((consumer, secret), (ts, nonce)) = (who, fresh);
    let oauth: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), consumer.into()),
        ("oauth_token".into(), "".into()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), ts.to_string()),
        ("oauth_nonce".into(), nonce.into()),
        ("oauth_version".into(), "1.0".into()),
    ];
    let q: Vec<(String, String)> = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let f: Vec<(String, String)> = form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let all = rfc5849::collect(&oauth, &q, &f).unwrap();
    let base = rfc5849::base_string(
        method,
        &rfc5849::base_uri("https", "jira.example.com", None, path),
        &all,
    );
    let sig = rfc5849::sign_hmac_sha1(&base, secret.as_bytes(), b"");
    let mut header = String::from("OAuth realm=\"https%3A%2F%2Fjira.example.com\"");
    for (k, v) in oauth.iter().chain([("oauth_signature".to_string(), sig)].iter()) {
        header += &format!(", {}=\"{}\"", rfc5849::encode(k), rfc5849::encode(v));
    }
    let qs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", rfc5849::encode(k), rfc5849::encode(v)))
        .collect();
    let path_and_query = if qs.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", qs.join("&"))
    };
    Signed {
        path_and_query,
        authorization: header,
    }
}

async fn go(proxy: &Proxy, method: &str, s: &Signed, body: Option<&str>) -> Resp {
    let mut headers = vec![("authorization", s.authorization.as_str())];
    if body.is_some() {
        headers.push(("content-type", "application/x-www-form-urlencoded"));
    }
    send(
        method,
        &proxy.url(&s.path_and_query),
        &headers,
        Bytes::from(body.unwrap_or("").to_string()),
    )
    .await
}

#[tokio::test]
async fn two_legged_request_runs_as_the_consumers_run_as_user() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let s = sign(
        "GET",
        "/rest/api/2/search",
        &[("jql", "project = X")],
        &[],
        ("reporting", SECRET),
        (now(), "n1"),
    );
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!(r.status, 200, "{:?}", r.header("www-authenticate"));
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("reporting-bot"));
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(proxy.audit().pop().unwrap()["auth"], "oauth1");
}

#[tokio::test]
async fn form_body_parameters_are_covered_by_the_signature_and_forwarded() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let s = sign(
        "POST",
        "/rest/api/2/issue/X-1/comment",
        &[],
        &[("body", "hello world")],
        ("reporting", SECRET),
        (now(), "n2"),
    );
    let r = go(&proxy, "POST", &s, Some("body=hello+world")).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().body_len, "body=hello+world".len() as u64);
    // The same signature over a changed body is refused.
    let s = sign(
        "POST",
        "/rest/api/2/issue/X-1/comment",
        &[],
        &[("body", "hello world")],
        ("reporting", SECRET),
        (now(), "n3"),
    );
    let r = go(&proxy, "POST", &s, Some("body=goodbye")).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "signature_invalid"));
}

#[tokio::test]
async fn impersonation_only_for_consumers_that_may() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let s = sign(
        "GET",
        "/rest/api/2/myself",
        &[("xoauth_requestor_id", "alice")],
        &[],
        ("applink", "applink-secret"),
        (now(), "i1"),
    );
    assert_eq!(go(&proxy, "GET", &s, None).await.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
    let s = sign(
        "GET",
        "/rest/api/2/myself",
        &[("xoauth_requestor_id", "admin")],
        &[],
        ("reporting", SECRET),
        (now(), "i2"),
    );
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "permission_denied"));
    // A consumer without plain two-legged access must name a user.
    let s = sign(
        "GET",
        "/rest/api/2/myself",
        &[],
        &[],
        ("applink", "applink-secret"),
        (now(), "i3"),
    );
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "permission_denied"));
}

#[tokio::test]
async fn replayed_nonce_is_refused() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let s = sign("GET", "/x", &[], &[], ("reporting", SECRET), (now(), "once"));
    assert_eq!(go(&proxy, "GET", &s, None).await.status, 200);
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "nonce_used"));
    assert_eq!(jira.count(), 1);
}

#[tokio::test]
async fn stale_or_future_timestamps_are_refused() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    for ts in [now() - 600, now() + 600] {
        let s = sign("GET", "/x", &[], &[], ("reporting", SECRET), (ts, &format!("t{ts}")));
        let r = go(&proxy, "GET", &s, None).await;
        assert_eq!((r.status, problem(&r).as_str()), (401, "timestamp_refused"));
    }
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn wrong_secret_unknown_consumer_and_tampered_query_are_refused() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let s = sign("GET", "/x", &[], &[], ("reporting", "guessed-secret"), (now(), "w1"));
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "signature_invalid"));
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("OAuth realm=\"https%3A%2F%2Fjira.example.com\"")
    );
    let s = sign("GET", "/x", &[], &[], ("nobody", SECRET), (now(), "w2"));
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "consumer_key_unknown"));
    let mut s = sign(
        "GET",
        "/rest/api/2/search",
        &[("jql", "project = X")],
        &[],
        ("reporting", SECRET),
        (now(), "w3"),
    );
    s.path_and_query = s.path_and_query.replace("X", "SECRET");
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "signature_invalid"));
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn duplicated_protocol_parameters_and_three_legged_tokens_are_refused() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let mut s = sign("GET", "/x", &[], &[], ("reporting", SECRET), (now(), "d1"));
    s.path_and_query += "?oauth_nonce=other";
    let r = go(&proxy, "GET", &s, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "parameter_rejected"));
    let s = sign("GET", "/x", &[], &[], ("reporting", SECRET), (now(), "d2"));
    let with_token = Signed {
        authorization: s.authorization.replace("oauth_token=\"\"", "oauth_token=\"abc\""),
        ..s
    };
    let r = go(&proxy, "GET", &with_token, None).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "token_rejected"));
}

#[tokio::test]
async fn oversized_oauth_form_body_is_413() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let big = format!("body={}", "x".repeat(100 * 1024));
    let s = sign("POST", "/x", &[], &[], ("reporting", SECRET), (now(), "big"));
    assert_eq!(go(&proxy, "POST", &s, Some(&big)).await.status, 413);
    assert_eq!(jira.count(), 0);
}

#[test]
fn oauth1_needs_public_url_and_consumer_keys_are_checked() {
    let text = config("")
        .replace(&format!("\npublic_url = \"{PUBLIC}\""), "")
        .replace("{jira}", "127.0.0.1:1");
    let errs = jira_auth_proxy::config::Config::parse(&text, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(errs.contains("needs server.public_url"), "{errs}");
    let text = config("[[oauth1.consumers]]\nkey = \"bad\"\npublic_key = \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\"\n")
        .replace("{jira}", "127.0.0.1:1");
    let errs = jira_auth_proxy::config::Config::parse(&text, std::path::Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(errs.contains("oauth1.consumers[2].public_key"), "{errs}");
}

#[tokio::test]
async fn three_legged_dance_request_token_approval_access_token_then_calls_as_the_user() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let alice = basic("alice", "alice-pw");

    // 1. The consumer asks for a request token.
    let s = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: "",
        token_secret: "",
        extra: vec![("oauth_callback", "oob".into())],
    };
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/request-token"),
        &[(
            "authorization",
            &s.sign("POST", "/plugins/servlet/oauth/request-token", "r1"),
        )],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.header("www-authenticate"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let (rt, rts) = (
        form_value(&text, "oauth_token"),
        form_value(&text, "oauth_token_secret"),
    );
    assert_eq!(form_value(&text, "oauth_callback_confirmed"), "true");

    // 2. The user signs in and sees the approval page naming the consumer.
    let r = get(
        &proxy.url(&format!("/plugins/servlet/oauth/authorize?oauth_token={rt}")),
        &[],
    )
    .await;
    assert_eq!(r.status, 401, "signing in comes first");
    let r = get(
        &proxy.url(&format!("/plugins/servlet/oauth/authorize?oauth_token={rt}")),
        &[("authorization", &alice)],
    )
    .await;
    assert_eq!(r.status, 200);
    let html = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        html.contains("Reporting scripts") && html.contains("<b>alice</b>"),
        "{html}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    let atl = between(&html, "name=\"atl_token\" value=\"", "\"").to_string();

    // A forged form token is refused; bob cannot use alice's form token.
    let forged = format!("oauth_token={rt}&atl_token=00&approve=Allow");
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/authorize"),
        &[("authorization", &alice), ct],
        Bytes::from(forged),
    )
    .await;
    assert_eq!(r.status, 403);
    let stolen = format!("oauth_token={rt}&atl_token={atl}&approve=Allow");
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/authorize"),
        &[("authorization", &basic("bob", "bob-pw")), ct],
        Bytes::from(stolen),
    )
    .await;
    assert_eq!(r.status, 403);

    // 3. Allow: an out-of-band verifier is shown.
    let approve = format!("oauth_token={rt}&atl_token={atl}&approve=Allow");
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/authorize"),
        &[("authorization", &alice), ct],
        Bytes::from(approve),
    )
    .await;
    assert_eq!(r.status, 200);
    let verifier = between(std::str::from_utf8(&r.body).unwrap(), "<code>", "</code>").to_string();
    assert!(verifier.len() > 20);

    // 4. The consumer trades the request token for an access token.
    let s = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: &rt,
        token_secret: &rts,
        extra: vec![("oauth_verifier", verifier.clone())],
    };
    let auth = s.sign("POST", "/plugins/servlet/oauth/access-token", "a1");
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/access-token"),
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.header("www-authenticate"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let (at, ats) = (
        form_value(&text, "oauth_token"),
        form_value(&text, "oauth_token_secret"),
    );
    assert_eq!(form_value(&text, "oauth_expires_in"), "157680000");
    // Single use: the same request token cannot be traded again.
    let auth = s.sign("POST", "/plugins/servlet/oauth/access-token", "a2");
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/access-token"),
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "token_rejected"));

    // 5. Calls signed with the access token run as alice.
    let s = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: &at,
        token_secret: &ats,
        extra: vec![],
    };
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &s.sign("GET", "/rest/api/2/myself", "c1"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
    // Without the token secret the signature fails; another consumer cannot use the token.
    let s = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: &at,
        token_secret: "",
        extra: vec![],
    };
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &s.sign("GET", "/rest/api/2/myself", "c2"))],
    )
    .await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "signature_invalid"));
    let s = Signer {
        consumer: "applink",
        secret: "applink-secret",
        token: &at,
        token_secret: &ats,
        extra: vec![],
    };
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &s.sign("GET", "/rest/api/2/myself", "c3"))],
    )
    .await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "token_rejected"));
}

#[tokio::test]
async fn access_token_needs_the_users_verifier_and_approval_can_be_denied() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let s = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: "",
        token_secret: "",
        extra: vec![("oauth_callback", "https://app.example.com/cb?x=1".into())],
    };
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/request-token"),
        &[(
            "authorization",
            &s.sign("POST", "/plugins/servlet/oauth/request-token", "q1"),
        )],
        Bytes::new(),
    )
    .await;
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let (rt, rts) = (
        form_value(&text, "oauth_token"),
        form_value(&text, "oauth_token_secret"),
    );
    // Not yet approved: no access token, whatever the verifier.
    let s2 = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: &rt,
        token_secret: &rts,
        extra: vec![("oauth_verifier", "guess".into())],
    };
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/access-token"),
        &[(
            "authorization",
            &s2.sign("POST", "/plugins/servlet/oauth/access-token", "q2"),
        )],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "permission_unknown"));
    // Approve: a redirect to the callback with token and verifier.
    let alice = basic("alice", "alice-pw");
    let page = get(
        &proxy.url(&format!("/plugins/servlet/oauth/authorize?oauth_token={rt}")),
        &[("authorization", &alice)],
    )
    .await;
    let atl = between(
        std::str::from_utf8(&page.body).unwrap(),
        "name=\"atl_token\" value=\"",
        "\"",
    )
    .to_string();
    let ct = ("content-type", "application/x-www-form-urlencoded");
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/authorize"),
        &[("authorization", &alice), ct],
        Bytes::from(format!("oauth_token={rt}&atl_token={atl}&approve=Allow")),
    )
    .await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap().to_string();
    assert!(
        location.starts_with(&format!(
            "https://app.example.com/cb?x=1&oauth_token={rt}&oauth_verifier="
        )),
        "{location}"
    );
    // A wrong verifier is refused.
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/access-token"),
        &[(
            "authorization",
            &s2.sign("POST", "/plugins/servlet/oauth/access-token", "q3"),
        )],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "permission_denied"));
    // A request token for a bad callback is never issued.
    let s = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: "",
        token_secret: "",
        extra: vec![("oauth_callback", "javascript:alert(1)".into())],
    };
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/request-token"),
        &[(
            "authorization",
            &s.sign("POST", "/plugins/servlet/oauth/request-token", "q4"),
        )],
        Bytes::new(),
    )
    .await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "parameter_rejected"));
    assert_eq!(jira.count(), 0, "the OAuth endpoints are the proxy's own");
}

const REPORTING: (&str, &str) = ("reporting", SECRET);
const TOKENS: &str = "/plugins/servlet/oauth/users/access-tokens";

#[tokio::test]
async fn users_list_and_revoke_their_own_access_tokens() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let a1 = dance(&proxy, REPORTING, ("alice", "alice-pw"), "a1")
        .await
        .map_err(|r| r.status)
        .unwrap();
    let a2 = dance(&proxy, REPORTING, ("alice", "alice-pw"), "a2")
        .await
        .map_err(|r| r.status)
        .unwrap();
    let _b1 = dance(&proxy, REPORTING, ("bob", "bob-pw"), "b1")
        .await
        .map_err(|r| r.status)
        .unwrap();
    let (alice, bob) = (basic("alice", "alice-pw"), basic("bob", "bob-pw"));
    let json = ("accept", "application/json");

    let r = get(&proxy.url(TOKENS), &[]).await;
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|c| c.starts_with("OAuth ") || c.starts_with("Basic "))
    );

    let r = get(&proxy.url(TOKENS), &[("authorization", &alice), json]).await;
    assert_eq!(r.status, 200);
    let list = r.json()["accessTokens"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(
        list.iter()
            .all(|t| t["consumerName"] == "Reporting scripts" && t["consumerKey"] == "reporting")
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(
        !text.contains(&a1.0) && !text.contains(&a1.1),
        "tokens and secrets are never listed"
    );
    let id = jira_auth_proxy::auth::oauth1::tokens::token_id(&a1.0);
    assert!(list.iter().any(|t| t["id"] == id.as_str()), "{list:?}");
    let r = get(&proxy.url(TOKENS), &[("authorization", &bob), json]).await;
    assert_eq!(r.json()["accessTokens"].as_array().unwrap().len(), 1);

    // The HTML page names the application and carries a form token for revoking.
    let r = get(&proxy.url(TOKENS), &[("authorization", &alice)]).await;
    let html = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(html.contains("Reporting scripts") && html.contains(&id), "{html}");
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    let atl = between(&html, "name=\"atl_token\" value=\"", "\"").to_string();

    // Bob cannot revoke Alice's token, nor use her page's form token.
    let by_id = proxy.url(&format!("{TOKENS}/{id}"));
    let r = send("DELETE", &by_id, &[("authorization", &bob)], Bytes::new()).await;
    assert_eq!(r.status, 404);
    let form = ("content-type", "application/x-www-form-urlencoded");
    let r = send(
        "POST",
        &proxy.url(TOKENS),
        &[("authorization", &bob), form],
        Bytes::from(format!("revoke={id}&atl_token={atl}")),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(call_with(&proxy, REPORTING, &a1, "u1").await.status, 200);

    // Alice revokes the first from the page: that token stops working at once.
    let r = send(
        "POST",
        &proxy.url(TOKENS),
        &[("authorization", &alice), form],
        Bytes::from(format!("revoke={id}&atl_token={atl}")),
    )
    .await;
    assert_eq!((r.status, r.header("location")), (303, Some(TOKENS)));
    let r = call_with(&proxy, REPORTING, &a1, "u2").await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "token_rejected"));
    assert_eq!(call_with(&proxy, REPORTING, &a2, "u3").await.status, 200);

    // And the second over REST.
    let r = get(&proxy.url(TOKENS), &[("authorization", &alice), json]).await;
    let id2 = r.json()["accessTokens"][0]["id"].as_str().unwrap().to_string();
    let r = send(
        "DELETE",
        &proxy.url(&format!("{TOKENS}/{id2}")),
        &[("authorization", &alice)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = call_with(&proxy, REPORTING, &a2, "u4").await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "token_rejected"));
    let r = get(&proxy.url(TOKENS), &[("authorization", &alice), json]).await;
    assert_eq!(r.json()["accessTokens"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_consumer_limited_to_users_or_to_two_legged_cannot_be_approved_otherwise() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let extra = r#"
[[oauth1.consumers]]
key = "limited"
name = "Alice's tool"
secret = "limited-secret"
allowed_users = ["Alice"]

[[oauth1.consumers]]
key = "machine"
secret = "machine-secret"
three_legged = false
two_legged = { allowed = true, run_as = "reporting-bot" }
"#;
    let proxy = Proxy::start(&config(extra), jira.addr).await;
    let limited = ("limited", "limited-secret");
    // Bob signs in to approve it: refused, whoever approves.
    let r = dance(&proxy, limited, ("bob", "bob-pw"), "l1")
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("may not be given access as <b>bob</b>"));
    let token = dance(&proxy, limited, ("alice", "alice-pw"), "l2")
        .await
        .map_err(|r| r.status)
        .unwrap();
    assert_eq!(call_with(&proxy, limited, &token, "l3").await.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));

    // A two-legged-only consumer gets no request token.
    let r = dance(&proxy, ("machine", "machine-secret"), ("alice", "alice-pw"), "m1")
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!((r.status, problem(&r).as_str()), (401, "permission_denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_and_revoke_tokens_with_the_command_line_on_redis() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let prefix = format!("jap-test-{}:", std::process::id() as u64 * 1000 + now() % 1000);
    let text = config("").replace(
        "[[access.rules]]",
        &format!("[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n\n[[access.rules]]"),
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let token = dance(&proxy, REPORTING, ("alice", "alice-pw"), "c1")
        .await
        .map_err(|r| r.status)
        .unwrap();
    let config_file = proxy.dir.join("config.toml");
    // The command line reads Redis itself; the proxy is not involved (nor blocked).
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jira-auth-proxy"))
            .args(["oauth1", "tokens", "--config"])
            .arg(&config_file)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["--json"]);
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(
        (lines[0]["user"].as_str(), lines[0]["consumer"].as_str()),
        (Some("alice"), Some("reporting"))
    );
    assert!(!out.contains(&token.0), "the token itself is never printed");
    let id = lines[0]["id"].as_str().unwrap().to_string();
    let cli2 = |args: Vec<String>| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, _) = cli(&a);
        (ok, out)
    };
    let (ok, out) = cli2(vec!["--user".into(), "ALICE".into()]);
    assert!(ok && out.contains(&id) && out.contains("reporting"), "{out}");
    assert_eq!(call_with(&proxy, REPORTING, &token, "c2").await.status, 200);
    let (ok, out) = cli2(vec!["--revoke".into(), id.clone()]);
    assert!(ok && out.contains("revoked"), "{out}");
    let r = call_with(&proxy, REPORTING, &token, "c3").await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "token_rejected"));
    let (ok, _) = cli2(vec!["--revoke".into(), id]);
    assert!(!ok, "revoking twice is an error");
}
