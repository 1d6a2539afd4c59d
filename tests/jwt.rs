//! OAuth 2.0 / OIDC bearer tokens end to end: keys generated here, served by a test
//! identity provider over HTTP, tokens checked the way RFC 8725 asks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use jsonwebtoken::{Algorithm, Header};
use serde_json::json;
use support::idp::{CLIENT_ID, CLIENT_SECRET, Idp, SigningKey, now};
use support::*;

fn jwt_config(idp: &Idp, extra: &str) -> String {
    let extra = if extra.contains("jwks_refetch_interval") {
        extra.to_string()
    } else {
        format!("jwks_refetch_interval = \"50ms\"\n{extra}")
    };
    format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{{jira}}"
[[auth.chain]]
type = "jwt"
issuer = "{}"
discovery = true
audiences = ["jira", "jira-cli"]
algorithms = ["RS256", "ES256", "EdDSA"]
user_claim = "preferred_username"
groups_claim = "groups"
leeway = "30s"
{extra}
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#,
        idp.issuer
    )
}

struct Setup {
    idp: Idp,
    jira: FakeJira,
    proxy: Proxy,
    rsa: SigningKey,
    ec: SigningKey,
    ed: SigningKey,
}

async fn setup(extra: &str) -> Setup {
    let rsa = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let ec = SigningKey::generate(Algorithm::ES256, "ec-1");
    let ed = SigningKey::generate(Algorithm::EdDSA, "ed-1");
    let idp = Idp::start(&[&rsa, &ec, &ed]).await;
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&jwt_config(&idp, extra), jira.addr).await;
    Setup {
        idp,
        jira,
        proxy,
        rsa,
        ec,
        ed,
    }
}

async fn call(s: &Setup, token: &str) -> Resp {
    get(
        &s.proxy.url("/rest/api/2/myself"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

fn reason(s: &Setup) -> String {
    s.proxy.audit().pop().unwrap()["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn bearer_rs256_es256_and_eddsa_tokens_are_accepted() {
    let s = setup("").await;
    for (key, user) in [(&s.rsa, "alice"), (&s.ec, "bob"), (&s.ed, "carol")] {
        let r = call(&s, &key.sign(&s.idp.claims(user))).await;
        assert_eq!(r.status, 200, "{:?}", key.alg);
        let seen = s.jira.last();
        assert_eq!(seen.user.as_deref(), Some(user));
        assert!(
            seen.headers.get("authorization").is_none(),
            "the token stays with the proxy"
        );
    }
    assert_eq!(s.proxy.audit().pop().unwrap()["auth"], "jwt");
}

#[tokio::test]
async fn bearer_audience_list_claim_matches_any_configured_audience() {
    let s = setup("").await;
    let mut c = s.idp.claims("alice");
    c["aud"] = json!(["account", "jira-cli"]);
    assert_eq!(call(&s, &s.rsa.sign(&c)).await.status, 200);
}

async fn refused(s: &Setup, token: &str, why: &str) {
    let r = call(s, token).await;
    assert_eq!(r.status, 401, "{why}");
    assert_eq!(reason(s), why);
    let challenge = r.header("www-authenticate").unwrap().to_string();
    assert!(
        challenge.starts_with("Bearer realm=\"Jira\", error=\"invalid_token\""),
        "{challenge}"
    );
    assert!(!challenge.contains(token), "the token must not be echoed");
}

#[tokio::test]
async fn bearer_expired_not_yet_valid_and_future_iat_are_refused() {
    let s = setup("").await;
    let mut c = s.idp.claims("alice");
    c["exp"] = json!(now() - 120);
    refused(&s, &s.rsa.sign(&c), "token_expired").await;
    let r = call(&s, &s.rsa.sign(&c)).await;
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("error_description=\"The access token expired\"")
    );
    let mut c = s.idp.claims("alice");
    c["nbf"] = json!(now() + 600);
    refused(&s, &s.rsa.sign(&c), "token_not_yet_valid").await;
    let mut c = s.idp.claims("alice");
    c["iat"] = json!(now() + 600);
    refused(&s, &s.rsa.sign(&c), "issued_in_future").await;
    // Within the leeway is fine.
    let mut c = s.idp.claims("alice");
    c["exp"] = json!(now() - 10);
    assert_eq!(call(&s, &s.rsa.sign(&c)).await.status, 200);
    assert_eq!(s.jira.count(), 1);
}

#[tokio::test]
async fn bearer_wrong_audience_and_missing_or_mistyped_exp_are_refused() {
    let s = setup("").await;
    let mut c = s.idp.claims("alice");
    c["aud"] = json!("confluence");
    refused(&s, &s.rsa.sign(&c), "wrong_audience").await;
    let mut c = s.idp.claims("alice");
    c.as_object_mut().unwrap().remove("exp");
    refused(&s, &s.rsa.sign(&c), "missing_claim").await;
    let mut c = s.idp.claims("alice");
    c["exp"] = json!(format!("{}", now() + 3600));
    refused(&s, &s.rsa.sign(&c), "missing_claim").await;
    assert_eq!(s.jira.count(), 0);
}

#[tokio::test]
async fn bearer_from_another_issuer_is_refused_as_unrecognised() {
    let s = setup("").await;
    let mut c = s.idp.claims("alice");
    c["iss"] = json!("https://evil.example.com");
    refused(&s, &s.rsa.sign(&c), "unknown_bearer").await;
}

#[tokio::test]
async fn bearer_alg_none_is_refused() {
    let s = setup("").await;
    let b64 =
        |v: serde_json::Value| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v.to_string());
    for alg in ["none", "None", "NONE"] {
        let token = format!(
            "{}.{}.",
            b64(json!({"alg": alg, "typ": "JWT"})),
            b64(s.idp.claims("admin"))
        );
        refused(&s, &token, "malformed_jwt").await;
    }
    assert_eq!(s.jira.count(), 0);
}

#[tokio::test]
async fn bearer_hs256_signed_with_the_rsa_public_key_is_refused() {
    let s = setup("").await;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let forged_key = jsonwebtoken::EncodingKey::from_secret(s.rsa.public_pem.as_bytes());
    let token = jsonwebtoken::encode(&h, &s.idp.claims("admin"), &forged_key).unwrap();
    refused(&s, &token, "algorithm_not_allowed").await;
    assert_eq!(s.jira.count(), 0);
}

#[tokio::test]
async fn bearer_hs256_member_never_verifies_with_a_public_key() {
    let secret = "a-shared-secret-of-at-least-32-bytes!";
    let s = setup("").await;
    let text = jwt_config(&s.idp, &format!("hs256_secret = \"{secret}\"")).replace(
        "algorithms = [\"RS256\", \"ES256\", \"EdDSA\"]",
        "algorithms = [\"RS256\", \"HS256\"]",
    );
    let proxy = Proxy::start(&text, s.jira.addr).await;
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("rsa-1".into());
    let send = |key: jsonwebtoken::EncodingKey| {
        let token = jsonwebtoken::encode(&h, &s.idp.claims("alice"), &key).unwrap();
        let url = proxy.url("/x");
        async move { get(&url, &[("authorization", &format!("Bearer {token}"))]).await.status }
    };
    assert_eq!(
        send(jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())).await,
        200
    );
    assert_eq!(
        send(jsonwebtoken::EncodingKey::from_secret(s.rsa.public_pem.as_bytes())).await,
        401
    );
}

#[tokio::test]
async fn bearer_embedded_jwk_header_is_ignored() {
    let s = setup("").await;
    let attacker = SigningKey::generate(Algorithm::RS256, "attacker");
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("attacker".into());
    h.jwk = Some(attacker.jwk.clone());
    h.jku = Some("http://evil.example.com/jwks".into());
    refused(
        &s,
        &attacker.sign_with_header(h, &s.idp.claims("admin")),
        "unknown_key_id",
    )
    .await;
    // Same kid as a real key, signed by the attacker's key: bad signature.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    refused(
        &s,
        &attacker.sign_with_header(h, &s.idp.claims("admin")),
        "bad_signature",
    )
    .await;
}

#[tokio::test]
async fn bearer_unknown_kid_triggers_one_refetch_and_rotation_is_picked_up() {
    let s = setup("").await.with_config("jwks_refetch_interval = \"0s\"").await;
    assert_eq!(call(&s, &s.rsa.sign(&s.idp.claims("alice"))).await.status, 200);
    let fetches = s.idp.jwks_fetches();
    let rotated = SigningKey::generate(Algorithm::RS256, "rsa-2");
    refused(&s, &rotated.sign(&s.idp.claims("alice")), "unknown_key_id").await;
    assert_eq!(s.idp.jwks_fetches(), fetches + 1, "an unknown kid refetches the JWKS");
    s.idp.publish(&[&s.rsa, &rotated]);
    assert_eq!(call(&s, &rotated.sign(&s.idp.claims("alice"))).await.status, 200);
}

#[tokio::test]
async fn bearer_unknown_kids_refetch_at_most_once_per_interval() {
    let s = setup("").await.with_config("jwks_refetch_interval = \"1h\"").await;
    assert_eq!(call(&s, &s.rsa.sign(&s.idp.claims("alice"))).await.status, 200);
    let fetches = s.idp.jwks_fetches();
    for i in 0..10 {
        let k = SigningKey::generate(Algorithm::ES256, &format!("junk-{i}"));
        assert_eq!(call(&s, &k.sign(&s.idp.claims("alice"))).await.status, 401);
    }
    assert!(
        s.idp.jwks_fetches() <= fetches + 1,
        "{} fetches",
        s.idp.jwks_fetches() - fetches
    );
}

#[tokio::test]
async fn bearer_keys_keep_serving_while_the_issuer_is_down() {
    // jwks_max_age 0s: every request finds the key set old and tries to refresh it.
    let s = setup("")
        .await
        .with_config("jwks_refetch_interval = \"0s\"\njwks_max_age = \"0s\"")
        .await;
    assert_eq!(call(&s, &s.rsa.sign(&s.idp.claims("alice"))).await.status, 200);
    s.idp.set_down(true);
    assert_eq!(
        call(&s, &s.ec.sign(&s.idp.claims("bob"))).await.status,
        200,
        "stale but valid keys serve"
    );
    let failures: u64 = s.proxy.running.runtime().jwt.iter().map(|j| j.key_counters().0).sum();
    assert!(failures >= 1, "the failed refresh is counted");
}

#[tokio::test]
async fn bearer_with_the_issuer_down_and_no_keys_yet_fails_closed_with_503() {
    let s = setup("").await;
    s.idp.set_down(true);
    let r = call(&s, &s.rsa.sign(&s.idp.claims("alice"))).await;
    assert_eq!(r.status, 503);
    assert_eq!(s.jira.count(), 0);
}

#[tokio::test]
async fn bearer_user_claim_missing_not_a_string_or_unsafe_is_refused() {
    let s = setup("").await;
    let mut c = s.idp.claims("alice");
    c["preferred_username"] = json!(42);
    refused(&s, &s.rsa.sign(&c), "user_claim_not_a_string").await;
    let mut c = s.idp.claims("alice");
    c.as_object_mut().unwrap().remove("preferred_username");
    refused(&s, &s.rsa.sign(&c), "user_claim_missing").await;
    let r = call(&s, &s.rsa.sign(&s.idp.claims("al ice"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(reason(&s), "username_unsafe");
    assert_eq!(s.jira.count(), 0);
}

#[tokio::test]
async fn bearer_claim_paths_groups_and_scopes_reach_the_rules() {
    let s = setup("").await;
    let text = jwt_config(&s.idp, "")
        .replace("user_claim = \"preferred_username\"", "user_claim = \"ext.jira_user\"")
        .replace(
            "[[access.rules]]\nname = \"authenticated\"",
            "[[access.rules]]\nname = \"writers\"\nscopes = [\"write\"]\ngroups = [\"jira-users\"]\neffect = \"allow\"\n\
             [[access.rules]]\nname = \"authenticated\"\nmethods = [\"GET\"]",
        );
    let proxy = Proxy::start(&text, s.jira.addr).await;
    let mut c = s.idp.claims("ignored");
    c["ext"] = json!({"jira_user": "dave"});
    c["scope"] = json!("openid write");
    let token = s.rsa.sign(&c);
    let r = send(
        "POST",
        &proxy.url("/rest/api/2/issue"),
        &[("authorization", &format!("Bearer {token}"))],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(s.jira.last().user.as_deref(), Some("dave"));
    assert_eq!(proxy.audit().pop().unwrap()["rule"], "writers");
    c["scope"] = json!("openid read");
    let token = s.rsa.sign(&c);
    let r = send(
        "POST",
        &proxy.url("/rest/api/2/issue"),
        &[("authorization", &format!("Bearer {token}"))],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 403);
    let challenge = r.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"") && challenge.contains("scope=\"write\""),
        "{challenge}"
    );
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "insufficient_scope");
}

#[tokio::test]
async fn bearer_typ_check_wants_an_access_token() {
    let s = setup("").await.with_config("typ = \"at+jwt\"").await;
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    refused(
        &s,
        &s.rsa.sign_with_header(h.clone(), &s.idp.claims("alice")),
        "wrong_token_type",
    )
    .await;
    h.typ = Some("at+jwt".into());
    assert_eq!(
        call(&s, &s.rsa.sign_with_header(h.clone(), &s.idp.claims("alice")))
            .await
            .status,
        200
    );
    h.typ = Some("application/at+jwt".into());
    assert_eq!(
        call(&s, &s.rsa.sign_with_header(h, &s.idp.claims("alice")))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn two_issuers_each_verify_their_own_tokens() {
    let s = setup("").await;
    let other_key = SigningKey::generate(Algorithm::ES256, "other-1");
    let other = Idp::start(&[&other_key]).await;
    let text = jwt_config(&s.idp, "").replace(
        "[[access.rules]]",
        &format!(
            "[[auth.chain]]\ntype = \"jwt\"\nissuer = \"{}\"\njwks_uri = \"{}/jwks\"\naudiences = [\"jira\"]\n\
             algorithms = [\"ES256\"]\nuser_claim = \"sub\"\n[[access.rules]]",
            other.issuer, other.issuer
        ),
    );
    let proxy = Proxy::start(&text, s.jira.addr).await;
    let t1 = s.rsa.sign(&s.idp.claims("alice"));
    let t2 = other_key.sign(&other.claims("bob"));
    for (t, user) in [(t1, "alice"), (t2, "id-bob")] {
        let r = get(&proxy.url("/x"), &[("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!(r.status, 200);
        assert_eq!(s.jira.last().user.as_deref(), Some(user));
    }
    // A token signed by one issuer's key but claiming the other issuer fails verification.
    let forged = s.rsa.sign(&other.claims("bob"));
    let r = get(&proxy.url("/x"), &[("authorization", &format!("Bearer {forged}"))]).await;
    assert_eq!(r.status, 401);
}

fn introspection_config(idp: &Idp, secret: &str) -> String {
    format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{{jira}}"
[[auth.chain]]
type = "introspection"
url = "{}/introspect"
client_id = "{CLIENT_ID}"
client_secret = "{secret}"
cache_ttl = "5m"
negative_cache_ttl = "10s"
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#,
        idp.issuer
    )
}

#[tokio::test]
async fn opaque_token_active_by_introspection_is_accepted_and_cached() {
    let idp = Idp::start(&[]).await;
    idp.state.tokens.lock().unwrap().insert(
        "opaque-1".into(),
        json!({"active": true, "username": "erin", "exp": now() + 600, "scope": "read write"}),
    );
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&introspection_config(&idp, CLIENT_SECRET), jira.addr).await;
    for _ in 0..5 {
        let r = get(&proxy.url("/x"), &[("authorization", "Bearer opaque-1")]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(jira.last().user.as_deref(), Some("erin"));
    assert_eq!(
        idp.state.introspections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached after one call"
    );
    assert_eq!(proxy.audit().pop().unwrap()["auth"], "introspection");
}

#[tokio::test]
async fn opaque_token_inactive_or_expired_is_401_and_negative_answers_are_cached() {
    let idp = Idp::start(&[]).await;
    idp.state.tokens.lock().unwrap().insert(
        "stale".into(),
        json!({"active": true, "username": "erin", "exp": now() - 5}),
    );
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&introspection_config(&idp, CLIENT_SECRET), jira.addr).await;
    for token in ["never-issued", "never-issued", "stale"] {
        let r = get(&proxy.url("/x"), &[("authorization", &format!("Bearer {token}"))]).await;
        assert_eq!(r.status, 401);
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
    }
    assert_eq!(idp.state.introspections.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn introspection_endpoint_down_or_refusing_our_client_fails_closed() {
    let idp = Idp::start(&[]).await;
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&introspection_config(&idp, "wrong-secret"), jira.addr).await;
    assert_eq!(
        get(&proxy.url("/x"), &[("authorization", "Bearer t")]).await.status,
        503
    );
    let proxy = Proxy::start(&introspection_config(&idp, CLIENT_SECRET), jira.addr).await;
    idp.set_down(true);
    assert_eq!(
        get(&proxy.url("/x"), &[("authorization", "Bearer t")]).await.status,
        503
    );
    assert_eq!(jira.count(), 0);
}

impl Setup {
    /// The same setup with more lines in the JWT member's config.
    async fn with_config(self, extra: &str) -> Setup {
        let proxy = Proxy::start(&jwt_config(&self.idp, extra), self.jira.addr).await;
        Setup { proxy, ..self }
    }
}

#[tokio::test]
async fn unknown_bearer_goes_to_jira_unchanged_when_passthrough_is_on() {
    let s = setup("").await;
    let text = jwt_config(&s.idp, "").replace("[[auth.chain]]", "[auth]\npassthrough_unknown_bearer = true\n[[auth.chain]]").replace(
        "[[access.rules]]\nname = \"authenticated\"",
        "[[access.rules]]\nname = \"jira checks its own tokens\"\nauth = [\"jira_token\"]\neffect = \"allow\"\n[[access.rules]]\nname = \"authenticated\"",
    );
    let proxy = Proxy::start(&text, s.jira.addr).await;
    let pat = "NjQ4MjkxNzM1OTAyOkJ0kZ3vhYlC1Ctqwl5dUiqeG2QG";
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[
            ("authorization", &format!("Bearer {pat}")),
            ("x-forwarded-user", "admin"),
        ],
    )
    .await;
    assert_eq!(
        r.status, 401,
        "the fake Jira does not know the PAT: it answers for itself"
    );
    let seen = s.jira.last();
    assert_eq!(seen.headers.get("authorization").unwrap(), &format!("Bearer {pat}"));
    assert_eq!(
        seen.user, None,
        "no identity is asserted for a token the proxy did not check"
    );
    let line = proxy.audit().pop().unwrap();
    assert_eq!(
        (line["outcome"].as_str(), line["auth"].as_str()),
        (Some("delegated"), Some("jira_token"))
    );
    // A JWT of the configured issuer is still checked by the proxy, not delegated.
    let mut c = s.idp.claims("alice");
    c["exp"] = json!(now() - 3600);
    let r = get(
        &proxy.url("/x"),
        &[("authorization", &format!("Bearer {}", s.rsa.sign(&c)))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "token_expired");
}

#[tokio::test]
async fn bearer_verified_token_is_cached_until_exp_and_the_cache_can_be_off() {
    let s = setup("").await;
    let token = s.rsa.sign(&s.idp.claims("alice"));
    for _ in 0..10 {
        assert_eq!(call(&s, &token).await.status, 200);
    }
    let verifications = |p: &Proxy| p.running.runtime().jwt.iter().map(|j| j.verifications()).sum::<u64>();
    assert_eq!(verifications(&s.proxy), 1);
    // Each request counted once: the first a miss, the nine after it hits.
    let stats = |p: &Proxy| {
        p.running
            .runtime()
            .jwt
            .iter()
            .map(|j| j.cache_stats())
            .collect::<Vec<_>>()
    };
    assert_eq!(stats(&s.proxy), [(9, 1)]);
    // A different token (same user, other signature) is verified on its own.
    let other = s.ec.sign(&s.idp.claims("alice"));
    assert_eq!(call(&s, &other).await.status, 200);
    assert_eq!(verifications(&s.proxy), 2);
    // A tampered copy of the cached token is not a cache hit.
    let i = token.len() - 10;
    let flipped = if &token[i..=i] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &token[..i], &token[i + 1..]);
    assert_eq!(call(&s, &tampered).await.status, 401);

    let s = s.with_config("token_cache_ttl = \"0s\"").await;
    for _ in 0..3 {
        assert_eq!(call(&s, &token).await.status, 200);
    }
    assert_eq!(verifications(&s.proxy), 3);
}

#[tokio::test]
async fn our_api_keys_are_never_sent_to_the_introspection_endpoint() {
    let idp = Idp::start(&[]).await;
    let jira = FakeJira::start(JiraTrust::Header).await;
    let key = "jap_neverleavestheproxyneverleavestheproxynever";
    let text = introspection_config(&idp, CLIENT_SECRET).replace(
        "[[access.rules]]",
        &format!(
            "[[auth.chain]]\ntype = \"api_key\"\n[[api_keys]]\nid = \"k\"\nhash = \"{}\"\nuser = \"bot\"\n[[access.rules]]",
            jira_auth_proxy::auth::api_key::format_digest(&jira_auth_proxy::auth::api_key::digest_key(key))
        ),
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let r = get(&proxy.url("/x"), &[("authorization", &format!("Bearer {key}"))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("bot"));
    assert_eq!(idp.state.introspections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bearer_psychic_ecdsa_signatures_and_x5u_headers_are_refused() {
    let s = setup("").await;
    let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b);
    let header = b64(json!({"alg": "ES256", "typ": "JWT", "kid": "ec-1"})
        .to_string()
        .as_bytes());
    let claims = b64(s.idp.claims("admin").to_string().as_bytes());
    // CVE-2022-21449: r = s = 0 verifies every message with a broken ECDSA check.
    for sig in [vec![0u8; 64], vec![0u8; 8], vec![]] {
        let token = format!("{header}.{claims}.{}", b64(&sig));
        let r = call(&s, &token).await;
        assert_eq!(r.status, 401, "signature of {} zero bytes", sig.len());
    }
    // A header pointing at the attacker's certificate chain is not followed.
    let attacker = SigningKey::generate(Algorithm::RS256, "rsa-1");
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-1".into());
    h.x5u = Some("http://evil.example.com/chain.pem".into());
    refused(
        &s,
        &attacker.sign_with_header(h, &s.idp.claims("admin")),
        "bad_signature",
    )
    .await;
    assert_eq!(s.jira.count(), 0);
}
