//! Several replicas behaving as one: two proxies, one real Redis (127.0.0.1:6379, a key
//! prefix per test), one fake Jira. Sessions, OAuth 1.0a nonces and tokens, rate limits
//! and lockouts started on one replica hold on the other.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use support::oauth1::*;
use support::*;

const SECRET: &str = "reporting-consumer-secret";
const REPORTING: (&str, &str) = ("reporting", SECRET);

fn prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("jap-replicas-{}-{nanos}:", std::process::id())
}

/// The config both replicas run: sessions, OAuth 1.0a, Basic with a lockout of 3, a rate
/// limit for bob, all state in Redis under `prefix`.
fn config(prefix: &str) -> String {
    basic_config("")
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\npublic_url = \"https://jira.example.com\"",
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            "[[auth.chain]]\ntype = \"session\"\n[[auth.chain]]\ntype = \"oauth1\"\n[[auth.chain]]\ntype = \"basic\"",
        )
        .replace(
            "[[access.rules]]",
            &format!(
                "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n\
                 [[oauth1.consumers]]\nkey = \"reporting\"\nname = \"Reporting\"\nsecret = \"{SECRET}\"\n\
                 two_legged = {{ allowed = true, run_as = \"reporting-bot\" }}\n\
                 [[access.rules]]\nname = \"bob is limited\"\nusers = [\"bob\"]\nrate = \"3/m\"\neffect = \"allow\"\n\
                 [[access.rules]]"
            ),
        )
}

async fn two_replicas() -> (FakeJira, Proxy, Proxy) {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = config(&prefix());
    let a = Proxy::start(&text, jira.addr).await;
    let b = Proxy::start(&text, jira.addr).await;
    (jira, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_one_replica_works_on_the_other_and_a_logout_ends_it_everywhere() {
    let (_jira, a, b) = two_replicas().await;
    let cookie = format!("JAPSESSION={}", alice_session(&a).await);
    let who = |p: &Proxy| {
        let (url, cookie) = (p.url("/rest/auth/1/session"), cookie.clone());
        async move { get(&url, &[("cookie", &cookie)]).await }
    };
    assert_eq!(who(&b).await.json()["name"], "alice");
    // Both replicas have now read (and keep decoded) the session.
    assert_eq!(who(&a).await.json()["name"], "alice");
    let r = send(
        "DELETE",
        &b.url("/rest/auth/1/session"),
        &[("cookie", &cookie)],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(who(&a).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_record_changed_in_the_store_is_read_again_on_its_next_use() {
    use jira_auth_proxy::store::StateStore;

    let prefix = prefix();
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = format!("{}\n[admin]\nlisten = \"127.0.0.1:0\"\n", config(&prefix));
    let a = Proxy::start(&text, jira.addr).await;
    let id = alice_session(&a).await;
    let cookie = format!("JAPSESSION={id}");
    let url = a.url("/rest/auth/1/session");
    let headers = [("cookie", cookie.as_str())];
    let who = || get(&url, &headers);
    for _ in 0..2 {
        assert_eq!(get(&a.url("/rest/api/2/myself"), &headers).await.status, 200);
    }
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
    // The same record read twice was decoded once.
    let (_, metrics) = a.admin("/metrics").await;
    assert!(
        metrics.contains("jap_cache_hits_total{cache=\"session\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("jap_cache_misses_total{cache=\"session\"} 1\n"),
        "{metrics}"
    );

    // Someone else (another replica, an admin) rewrites the record: the next request
    // uses what the store now holds, not the decoding kept from before.
    let store = redis_store(
        "redis://127.0.0.1:6379",
        &prefix,
        std::time::Duration::from_secs(2),
        std::time::Duration::from_secs(2),
    );
    let key = format!("session:{}", jira_auth_proxy::auth::cache::id_of(&id));
    let mut record: serde_json::Value = serde_json::from_slice(&store.get(&key).await.unwrap().unwrap()).unwrap();
    record["user"] = "bob".into();
    let bytes = Bytes::from(serde_json::to_vec(&record).unwrap());
    store
        .put(&key, bytes, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(who().await.json()["name"], "bob");
    // An unreadable record is no session, decoded copy or not.
    store
        .put(&key, Bytes::from_static(b"{"), std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(who().await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth_nonce_used_on_one_replica_is_refused_on_the_other() {
    let (jira, a, b) = two_replicas().await;
    let signer = Signer {
        consumer: "reporting",
        secret: SECRET,
        token: "",
        token_secret: "",
        extra: vec![],
    };
    let auth = signer.sign("GET", "/rest/api/2/myself", "replayed-nonce");
    assert_eq!(
        get(&a.url("/rest/api/2/myself"), &[("authorization", &auth)])
            .await
            .status,
        200
    );
    let r = get(&b.url("/rest/api/2/myself"), &[("authorization", &auth)]).await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "nonce_used"));
    assert_eq!(jira.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_issued_through_one_replica_works_on_the_other_and_is_revoked_on_both() {
    let (_jira, a, b) = two_replicas().await;
    // The approval page comes from a, the user's Allow lands on b.
    let token = dance_across(&a, &b, REPORTING, ("alice", "alice-pw"), "x")
        .await
        .map_err(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
        .unwrap();
    assert_eq!(call_with(&b, REPORTING, &token, "on-b").await.status, 200);
    let id = jira_auth_proxy::auth::oauth1::tokens::token_id(&token.0);
    let r = send(
        "DELETE",
        &b.url(&format!("/plugins/servlet/oauth/users/access-tokens/{id}")),
        &[("authorization", &basic("alice", "alice-pw"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204);
    let r = call_with(&a, REPORTING, &token, "on-a").await;
    assert_eq!((r.status, problem(&r).as_str()), (401, "token_rejected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_is_one_bucket_across_replicas() {
    let (jira, a, b) = two_replicas().await;
    let bob = basic("bob", "bob-pw");
    for p in [&a, &b, &a] {
        assert_eq!(get(&p.url("/x"), &[("authorization", &bob)]).await.status, 200);
    }
    let r = get(&b.url("/x"), &[("authorization", &bob)]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(jira.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_earned_on_one_replica_holds_on_the_other() {
    let (jira, a, b) = two_replicas().await;
    for _ in 0..3 {
        let r = get(&a.url("/x"), &[("authorization", &basic("alice", "guess"))]).await;
        assert_eq!(r.status, 401);
    }
    let r = get(&b.url("/x"), &[("authorization", &basic("alice", "alice-pw"))]).await;
    assert_eq!(r.status, 429, "locked out on b too, right password or not");
    assert!(r.header("retry-after").is_some());
    assert_eq!(jira.count(), 0);
}
