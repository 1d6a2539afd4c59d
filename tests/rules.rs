//! Access rules end to end: rate limits with Jira Data Center's headers, report mode (for
//! the whole list and per rule), header matchers, denials in Jira's shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;

/// The basic config with `rules` in place of its single "authenticated" rule.
fn rules_config(rules: &str) -> String {
    with_rules(&basic_config(""), rules)
}

#[tokio::test]
async fn a_caller_over_the_rate_gets_429_with_jiras_headers_then_recovers() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(
        &rules_config(
            "[[access.rules]]\nname = \"everyone\"\nauthenticated = true\nrate = \"4/s burst 2\"\neffect = \"allow\"\n",
        ),
        jira.addr,
    )
    .await;
    let alice = basic("alice", "alice-pw");
    let url = proxy.url("/rest/api/2/myself");
    for left in ["1", "0"] {
        let r = get(&url, &[("authorization", &alice)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-ratelimit-remaining"), Some(left));
        assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    }
    let r = get(&url, &[("authorization", &alice)]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("x-ratelimit-interval-seconds"), Some("1"));
    assert_eq!(r.header("x-ratelimit-fillrate"), Some("4"));
    assert!(r.json()["errorMessages"][0].as_str().unwrap().contains("Rate limit"));
    assert_eq!(jira.count(), 2, "the refused request never reached Jira");
    assert_eq!(proxy.audit().last().unwrap()["reason"], "rate_limited");
    // Another user has a bucket of their own.
    let r = get(&url, &[("authorization", &basic("bob", "bob-pw"))]).await;
    assert_eq!(r.status, 200);
    // A token every 250 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(&url, &[("authorization", &alice)]).await.status, 200);
    assert_eq!(get(&url, &[("authorization", &alice)]).await.status, 429);
}

#[tokio::test]
async fn anonymous_callers_are_limited_per_client_address() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(
        &rules_config(
            "[[access.rules]]\nname = \"status\"\nanonymous = true\npaths = [\"/status\"]\nrate = \"1/m\"\neffect = \"allow\"\n",
        ),
        jira.addr,
    )
    .await;
    assert_eq!(get(&proxy.url("/status"), &[]).await.status, 200);
    let r = get(&proxy.url("/status"), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(r.header("x-ratelimit-interval-seconds"), Some("60"));
}

#[tokio::test]
async fn report_mode_lets_everything_through_and_logs_the_would_be_denials() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let rules = "[access]\nmode = \"report\"\n[[access.rules]]\nname = \"no deletes\"\nmethods = [\"DELETE\"]\neffect = \"deny\"\n\
                 [[access.rules]]\nname = \"authenticated\"\nauthenticated = true\neffect = \"allow\"\n";
    let proxy = Proxy::start(&rules_config(rules), jira.addr).await;
    let r = send(
        "DELETE",
        &proxy.url("/rest/api/2/issue/X-1"),
        &[("authorization", &basic("alice", "alice-pw"))],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "report mode denies nothing");
    let anon = get(&proxy.url("/rest/api/2/project"), &[]).await;
    assert_eq!(anon.status, 200, "not even anonymous callers");
    let audit = proxy.audit();
    assert_eq!(
        (audit[0]["reason"].as_str(), audit[0]["rule"].as_str()),
        (Some("would_deny"), Some("no deletes"))
    );
    assert_eq!(audit[0]["would_deny"], "no deletes");
    assert_eq!(audit[1]["reason"], "would_deny");
    assert_eq!(jira.count(), 2);
}

#[tokio::test]
async fn a_report_mode_rule_shows_who_still_uses_basic_auth_without_blocking_them() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let rules = r#"
[[access.rules]]
name = "no basic auth for staff"
auth = ["basic"]
groups = ["jira-users"]
mode = "report"
effect = "deny"
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#;
    let proxy = Proxy::start(&rules_config(rules), jira.addr).await;
    assert_eq!(
        get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw"))])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&proxy.url("/x"), &[("authorization", &basic("bob", "bob-pw"))])
            .await
            .status,
        200
    );
    let audit = proxy.audit();
    assert_eq!(audit[0]["user"], "alice");
    assert_eq!(audit[0]["would_deny"], "no basic auth for staff");
    assert_eq!(audit[0]["rule"], "authenticated");
    assert!(
        audit[1].get("would_deny").is_none(),
        "bob is not in jira-users: {:?}",
        audit[1]
    );
}

#[tokio::test]
async fn a_header_rule_and_a_denial_in_jiras_shape_naming_the_rule_only_in_the_audit_log() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let rules = r#"
[[access.rules]]
name = "jenkins may delete"
methods = ["DELETE"]
headers = { "X-Client" = "jenkins" }
effect = "allow"
[[access.rules]]
name = "secret rule name"
methods = ["DELETE"]
effect = "deny"
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#;
    let proxy = Proxy::start(&rules_config(rules), jira.addr).await;
    let alice = basic("alice", "alice-pw");
    let del = |h: Vec<(&'static str, String)>| {
        let url = proxy.url("/rest/api/2/issue/X-1");
        async move {
            let hs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send("DELETE", &url, &hs, bytes::Bytes::new()).await
        }
    };
    let r = del(vec![("authorization", alice.clone())]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json(),
        serde_json::json!({"errorMessages": ["You do not have permission to perform this operation."], "errors": {}})
    );
    assert!(!String::from_utf8_lossy(&r.body).contains("secret rule name"));
    assert_eq!(proxy.audit().last().unwrap()["rule"], "secret rule name");
    let r = del(vec![("authorization", alice.clone()), ("x-client", "jenkins".into())]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.count(), 1);
}

#[tokio::test]
async fn rules_can_name_jira_groups_looked_up_with_a_service_account_and_cached() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let rules = format!(
        r#"
[identity.groups_from_jira]
username = "{}"
password = "{}"
cache_ttl = "1m"
[[access.rules]]
name = "admin pages for Jira admins"
paths = ["/secure/admin/**"]
groups_not = ["jira-administrators"]
effect = "deny"
[[access.rules]]
name = "software users"
groups = ["jira-software-users"]
effect = "allow"
"#,
        SERVICE_AUTH.0, SERVICE_AUTH.1
    );
    let proxy = Proxy::start(&rules_config(&rules), jira.addr).await;
    let (alice, bob) = (basic("alice", "alice-pw"), basic("bob", "bob-pw"));
    assert_eq!(
        get(&proxy.url("/secure/admin/x"), &[("authorization", &bob)])
            .await
            .status,
        200
    );
    assert_eq!(
        get(&proxy.url("/secure/admin/x"), &[("authorization", &alice)])
            .await
            .status,
        403
    );
    // Alice's [[users]] entry says only jira-users: jira-software-users comes from Jira.
    assert_eq!(
        get(&proxy.url("/rest/api/2/project"), &[("authorization", &alice)])
            .await
            .status,
        200
    );
    assert_eq!(
        jira.state.group_lookups.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "one per user, then cached"
    );
    let seen = jira.seen();
    assert!(
        seen.iter()
            .filter(|s| s.target.starts_with("/rest/api/2/user"))
            .all(|s| s.user.is_none()),
        "lookups carry the service credential, not a user's identity"
    );
}

#[tokio::test]
async fn a_failed_group_lookup_fails_closed() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let rules = r#"
[identity.groups_from_jira]
username = "svc-proxy"
password = "wrong"
[[access.rules]]
name = "software users"
groups = ["jira-software-users"]
effect = "allow"
"#;
    let proxy = Proxy::start(&rules_config(rules), jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/project"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(!proxy.audit_text().contains("wrong"));
    assert_eq!(jira.count(), 1, "only the lookup reached Jira");
}
