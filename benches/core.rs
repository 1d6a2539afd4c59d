//! Micro-benchmarks of the per-request hot path: path normalisation, Basic parsing, each
//! authenticator through the chain (warm Basic, API key, session cookie, JWT RS256 / ES256 /
//! EdDSA verified and from the verified-token cache), the five-member chain, OAuth 1.0a
//! RSA-SHA1 signing and verification, and rule matching at 10 / 1,000 / 10,000 rules.
//! Run with `cargo bench --bench core`; BENCHMARKS.md has the latest figures.

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;

use jira_auth_proxy::auth::api_key;
use jira_auth_proxy::auth::basic::parse;

const API_KEY: &str = "jap_benchbenchbenchbenchbenchbenchbenchbenchben";
use jira_auth_proxy::auth::{AuthRequest, Chain, Verdict};
use jira_auth_proxy::config::Config;
use jira_auth_proxy::pipeline::path::normalize;
use jira_auth_proxy::runtime::Runtime;

fn config() -> Config {
    let hash = jira_auth_proxy::auth::password::hash_with(b"alice-pw", 1024, 1).expect("hash");
    let key_hash = api_key::format_digest(&api_key::digest_key(API_KEY));
    let text = format!(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[audit]\nto = \"off\"\n\
         [[auth.chain]]\ntype = \"api_key\"\n[[auth.chain]]\ntype = \"basic\"\n\
         [[api_keys]]\nid = \"bench\"\nhash = \"{key_hash}\"\nuser = \"ci-bot\"\n[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[access.rules]]\nname = \"admins\"\npaths = [\"/secure/admin/**\"]\ngroups_not = [\"admins\"]\neffect = \"deny\"\n\
         [[access.rules]]\nname = \"all\"\nauthenticated = true\neffect = \"allow\"\n"
    );
    Config::parse(&text, std::path::Path::new(".")).expect("config")
}

fn benches(c: &mut Criterion) {
    c.bench_function("normalize_plain_path", |b| {
        b.iter(|| normalize("/rest/api/2/issue/ABC-123/comment"))
    });
    c.bench_function("normalize_hostile_path", |b| {
        b.iter(|| normalize("/rest/api/2/..;/%2e%2e/secure;jsessionid=x/admin//users/%41%42"))
    });
    let v = HeaderValue::from_static("Basic YWxpY2U6YWxpY2UtcHc=");
    c.bench_function("basic_parse", |b| b.iter(|| parse(&v)));

    let cfg = config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let runtime = Runtime::build(&cfg).expect("runtime");
    let chain = &runtime.chain;
    bench_chain(c, &rt, chain, "basic_warm_cache_chain", "Basic YWxpY2U6YWxpY2UtcHc=");
    bench_chain(c, &rt, chain, "api_key_bearer_chain", &format!("Bearer {API_KEY}"));
    five_member_chain(c, &rt);
}

/// The chain an admin with every kind of client configures: API key, JWT, OAuth 1.0a,
/// session cookie, Basic. A Basic caller (warm cache) passes the four before it; a session
/// cookie is looked up in the state store.
fn five_member_chain(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use http_body_util::BodyExt;
    let dir = std::env::temp_dir().join(format!("jap-bench-five-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
    let ec_key = jsonwebtoken::EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec pem");
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&ec_key, jsonwebtoken::Algorithm::ES256).expect("jwk");
    std::fs::write(dir.join("jwks.json"), serde_json::json!({ "keys": [jwk] }).to_string()).expect("jwks");
    let hash = jira_auth_proxy::auth::password::hash_with(b"alice-pw", 1024, 1).expect("hash");
    let key_hash = api_key::format_digest(&api_key::digest_key(API_KEY));
    let text = format!(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://jira.example.com\"\n\
         [upstream]\nurl = \"http://127.0.0.1:1\"\n[audit]\nto = \"off\"\n\
         [[auth.chain]]\ntype = \"api_key\"\n\
         [[auth.chain]]\ntype = \"jwt\"\nissuer = \"urn:bench\"\njwks_file = \"jwks.json\"\naudiences = [\"jira\"]\n\
         [[auth.chain]]\ntype = \"oauth1\"\n\
         [[auth.chain]]\ntype = \"session\"\n\
         [[auth.chain]]\ntype = \"basic\"\n\
         [[oauth1.consumers]]\nkey = \"reporting\"\nsecret = \"s3cret\"\n\
         [[api_keys]]\nid = \"bench\"\nhash = \"{key_hash}\"\nuser = \"ci-bot\"\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[access.rules]]\nname = \"all\"\nauthenticated = true\neffect = \"allow\"\n"
    );
    let cfg = Config::parse(&text, &dir).expect("five-member config");
    let runtime = Runtime::build(&cfg).expect("runtime");
    bench_chain(
        c,
        rt,
        &runtime.chain,
        "five_member_chain_basic_last",
        "Basic YWxpY2U6YWxpY2UtcHc=",
    );

    // A session from the proxy's own login endpoint, then looked up by its cookie.
    let session = runtime.session.as_ref().expect("session member");
    let login = http::Request::post("/rest/auth/1/session")
        .header("content-type", "application/json")
        .body(())
        .expect("req");
    let (parts, _) = login.into_parts();
    let body = http_body_util::Full::new(bytes::Bytes::from_static(
        br#"{"username":"alice","password":"alice-pw"}"#,
    ))
    .map_err(|never| match never {})
    .boxed();
    let (resp, failure) = rt
        .block_on(session.login(&parts, body, [127, 0, 0, 1].into(), None, SystemTime::now()))
        .expect("login");
    assert!(failure.is_none(), "login failed: {failure:?}");
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("JAPSESSION="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();
    bench_request(c, rt, &runtime.chain, "session_cookie_chain", None, &[cookie]);
}

/// Benchmarks the chain on a request carrying `authorization`, after checking it succeeds.
fn bench_chain(c: &mut Criterion, rt: &tokio::runtime::Runtime, chain: &Chain, name: &str, authorization: &str) {
    bench_request(c, rt, chain, name, Some(authorization), &[]);
}

/// Benchmarks the chain on a request with an `Authorization` header and/or the proxy's
/// session cookie values, after checking it succeeds.
fn bench_request(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    chain: &Chain,
    name: &str,
    authorization: Option<&str>,
    session_ids: &[String],
) {
    let mut req = http::Request::get("/rest/api/2/myself");
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    let (parts, _) = req.body(()).expect("req").into_parts();
    // A new AuthRequest each time: it holds the credential once parsed.
    let areq = || AuthRequest {
        parts: &parts,
        authorization: parts.headers.get(http::header::AUTHORIZATION),
        client_ip: [127, 0, 0, 1].into(),
        now: SystemTime::now(),
        at: std::time::Instant::now(),
        form: None,
        tls: false,
        session_ids,
        basic: Default::default(),
        bearer: Default::default(),
    };
    assert!(
        matches!(rt.block_on(chain.authenticate(&areq())), Verdict::Authenticated(_)),
        "{name}"
    );
    c.bench_function(name, |b| b.iter(|| rt.block_on(chain.authenticate(&areq()))));
}

/// A cold JWT verification through the chain (no verified-token cache yet): RS256 and
/// ES256, keys from a JWKS file.
fn jwt_benches(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("rsa");
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("ec");
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
    let rsa_key = EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).expect("rsa pem");
    let ec_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("ec pem");
    let ed_key = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).expect("ed pem");
    let mut jwks = Vec::new();
    for (key, alg, kid) in [(&rsa_key, Algorithm::RS256, "r"), (&ec_key, Algorithm::ES256, "e")] {
        let mut jwk = Jwk::from_encoding_key(key, alg).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        jwks.push(serde_json::to_value(jwk).expect("jwk json"));
    }
    // An Ed25519 JWK (RFC 8037): the raw public key as `x`.
    use base64::Engine as _;
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ed.public_key_raw());
    jwks.push(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "d", "alg": "EdDSA"}));
    let dir = std::env::temp_dir().join(format!("jap-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("jwks.json"), serde_json::json!({ "keys": jwks }).to_string()).expect("write");
    let text = "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
        [audit]\nto = \"off\"\n[[auth.chain]]\ntype = \"jwt\"\nissuer = \"urn:bench\"\njwks_file = \"jwks.json\"\n\
        audiences = [\"jira\"]\nalgorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\nuser_claim = \"sub\"\n\
        token_cache_ttl = \"0s\"\n";
    let cfg = Config::parse(text, &dir).expect("config");
    let runtime = Runtime::build(&cfg).expect("runtime");
    // The same issuer with the verified-token cache on (its default): a repeat caller.
    let cached = Config::parse(&text.replace("token_cache_ttl = \"0s\"\n", ""), &dir).expect("config");
    let cached = Runtime::build(&cached).expect("runtime");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let exp = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"iss": "urn:bench", "aud": "jira", "sub": "bench-user", "exp": exp});
    for (key, alg, kid, name) in [
        (&rsa_key, Algorithm::RS256, "r", "jwt_rs256"),
        (&ec_key, Algorithm::ES256, "e", "jwt_es256"),
        (&ed_key, Algorithm::EdDSA, "d", "jwt_eddsa"),
    ] {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        let token = jsonwebtoken::encode(&h, &claims, key).expect("sign");
        bench_chain(
            c,
            &rt,
            &runtime.chain,
            &format!("{name}_verify_chain"),
            &format!("Bearer {token}"),
        );
        bench_chain(
            c,
            &rt,
            &cached.chain,
            &format!("{name}_cached_chain"),
            &format!("Bearer {token}"),
        );
    }
}

/// OAuth 1.0a: RSA-SHA1 signing for the `oauth1` identity mode (per forwarded request) and
/// inbound verification.
fn oauth1_benches(c: &mut Criterion) {
    use jira_auth_proxy::auth::oauth1::rfc5849;
    use jira_auth_proxy::upstream::oauth1::Signer;
    use rustls_pki_types::pem::PemObject;
    let kp = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).expect("rsa");
    let signer = Signer::from_pem("bench", &kp.serialize_pem()).expect("signer");
    let query = vec![
        ("jql".to_string(), "project = X".to_string()),
        ("xoauth_requestor_id".to_string(), "alice".to_string()),
    ];
    let uri = "http://jira:8080/rest/api/2/search";
    c.bench_function("oauth1_rsa_sha1_sign", |b| {
        b.iter(|| signer.authorization("GET", uri, &query, 1_700_000_000))
    });
    let header = signer.authorization("GET", uri, &query, 1_700_000_000).expect("sign");
    let params = rfc5849::parse_header(&header).expect("oauth").expect("ok");
    let all = rfc5849::collect(&params, &query, &[]).expect("collect");
    let sig = params
        .iter()
        .find(|(k, _)| k == "oauth_signature")
        .map(|(_, v)| v.clone())
        .expect("sig");
    let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(kp.public_key_pem().as_bytes()).expect("spki");
    let key = rfc5849::rsa_public_key(spki.as_ref()).expect("key");
    c.bench_function("oauth1_rsa_sha1_verify_with_base_string", |b| {
        b.iter(|| rfc5849::verify_rsa_sha1(&rfc5849::base_string("GET", uri, &all), &sig, &key))
    });
}

/// Rule matching as the list grows: N rules, one per project path and team, then a catch-all.
/// One request matches a rule in the middle, one falls through to the catch-all (the worst
/// case for a scan of every rule).
fn rule_benches(c: &mut Criterion) {
    use jira_auth_proxy::access::{Policy, Subject};
    use jira_auth_proxy::config::{AccessConfig, AccessMode, Effect, RuleConfig};
    let rule = |name: String, paths: Vec<String>, groups: Vec<String>| RuleConfig {
        name,
        effect: Effect::Allow,
        methods: Vec::new(),
        paths,
        auth: Vec::new(),
        users: Vec::new(),
        users_not: Vec::new(),
        groups,
        groups_not: Vec::new(),
        source: Vec::new(),
        scopes: Vec::new(),
        anonymous: None,
        authenticated: Some(true),
        headers: Vec::new(),
        report: false,
        rate: None,
    };
    for n in [10usize, 1_000, 10_000] {
        let mut rules: Vec<RuleConfig> = (0..n)
            .map(|i| {
                rule(
                    format!("project P{i}"),
                    vec![format!("/rest/api/2/project/P{i}/**")],
                    vec![format!("team-{i}")],
                )
            })
            .collect();
        rules.push(rule("everyone".into(), Vec::new(), Vec::new()));
        let policy = Policy::compile(&AccessConfig {
            default: Effect::Deny,
            mode: AccessMode::Enforce,
            rules,
        })
        .expect("rules");
        let groups = vec![format!("team-{}", n / 2), "jira-users".to_string()];
        fn subject<'a>(path: &'a str, groups: &'a [String]) -> Subject<'a> {
            Subject {
                method: &http::Method::GET,
                path,
                kind: Some(jira_auth_proxy::auth::AuthKind::Basic),
                authenticated: true,
                user: Some("alice"),
                groups,
                scopes: &[],
                client_ip: std::net::IpAddr::from([10, 0, 0, 1]),
                headers: None,
            }
        }
        let middle = format!("/rest/api/2/project/P{}/versions", n / 2);
        let hit = subject(&middle, &groups);
        assert_eq!(policy.decide(&hit).rule, Some(&*format!("project P{}", n / 2)));
        c.bench_function(&format!("rules_{n}_matching_project_rule"), |b| {
            b.iter(|| policy.decide(&hit))
        });
        let through = subject("/rest/api/2/issue/X-1", &groups);
        assert_eq!(policy.decide(&through).rule, Some("everyone"));
        c.bench_function(&format!("rules_{n}_falling_through_to_the_last"), |b| {
            b.iter(|| policy.decide(&through))
        });
    }
}

criterion_group!(core, benches, jwt_benches, oauth1_benches, rule_benches);
criterion_main!(core);
