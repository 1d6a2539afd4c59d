//! The demo does what the README promises: success, 401, spoofing stripped, anonymous
//! 401, a public rule, an ambiguous path refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;

use jira_auth_proxy::demo::{self, DEMO_PASSWORD, DEMO_USER};
use support::*;

#[tokio::test]
async fn demo_shows_success_401_and_spoofing_stripped() {
    let d = demo::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let base = format!("http://{}", d.proxy.addr);
    let alice = basic(DEMO_USER, DEMO_PASSWORD);

    let r = get(&format!("{base}/rest/api/2/myself"), &[("authorization", &alice)]).await;
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("alice")));
    assert!(r.header("x-stand-in-jira").is_some());

    let hits = d.jira_hits.load(Ordering::SeqCst);
    let r = get(
        &format!("{base}/rest/api/2/myself"),
        &[("authorization", &basic(DEMO_USER, "wrong"))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(d.jira_hits.load(Ordering::SeqCst), hits, "nothing reached Jira");

    let r = get(
        &format!("{base}/rest/api/2/myself"),
        &[
            ("authorization", &alice),
            ("x-forwarded-user", "admin"),
            ("x_forwarded_user", "admin"),
        ],
    )
    .await;
    assert_eq!((r.status, r.json()["name"].as_str()), (200, Some("alice")));

    let r = get(&format!("{base}/rest/api/2/myself"), &[]).await;
    assert_eq!(r.status, 401);
    let challenges: Vec<_> = r
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic realm=")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer realm=")),
        "{challenges:?}"
    );

    let r = get(&format!("{base}/rest/api/2/serverInfo"), &[]).await;
    assert_eq!(r.status, 200);

    let r = get(&format!("{base}/rest/api/2/issue/DEMO-1"), &[("x-api-key", &d.api_key)]).await;
    assert_eq!(
        (r.status, r.json()["fields"]["reporter"]["name"].as_str()),
        (200, Some("ci-bot"))
    );
    let r = send(
        "POST",
        &format!("{base}/rest/api/2/issue"),
        &[("x-api-key", &d.api_key)],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 403);

    let answer = raw(
        d.proxy.addr,
        b"GET /rest/api/2/..%2f..%2fsecure/admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400);
    d.proxy.shutdown().await;
}
