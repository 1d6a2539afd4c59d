//! A test identity provider on loopback: OIDC discovery, a JWKS it can rotate or take
//! down, keys generated in the test (RSA, P-256, Ed25519), tokens minted with them, and an
//! RFC 7662 introspection endpoint that checks the proxy's client credentials.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use jira_auth_proxy::error::{Body as ProxyBody, full};

pub const CLIENT_ID: &str = "jira-proxy";
pub const CLIENT_SECRET: &str = "introspection-secret";

/// A signing key and its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    pub public_pem: String,
}

impl SigningKey {
    pub fn generate(alg: Algorithm, kid: &str) -> SigningKey {
        use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256, RsaKeySize};
        let kp = match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap()
            }
            Algorithm::ES256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            Algorithm::EdDSA => KeyPair::generate_for(&PKCS_ED25519).unwrap(),
            other => panic!("no test key for {other:?}"),
        };
        let pem = kp.serialize_pem();
        let encoding = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        };
        let mut jwk = if alg == Algorithm::EdDSA {
            // jsonwebtoken derives EdDSA JWKs only from PKCS#8 v1 keys; build it from the raw key.
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(kp.public_key_raw());
            serde_json::from_value(json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"})).unwrap()
        } else {
            Jwk::from_encoding_key(&encoding, alg).unwrap()
        };
        jwk.common.key_id = Some(kid.to_string());
        SigningKey {
            alg,
            kid: kid.to_string(),
            encoding,
            jwk,
            public_pem: kp.public_key_pem(),
        }
    }

    /// A token signed with this key (header `kid` and `alg` set).
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.encoding).unwrap()
    }

    pub fn sign_with_header(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[derive(Default)]
pub struct IdpState {
    pub keys: Mutex<Vec<Jwk>>,
    pub down: AtomicBool,
    pub jwks_fetches: AtomicU64,
    pub introspections: AtomicU64,
    /// token -> introspection answer
    pub tokens: Mutex<HashMap<String, Value>>,
    /// When set, the JWKS is this file's content (written by another program).
    pub jwks_file: Mutex<Option<std::path::PathBuf>>,
}

pub struct Idp {
    pub addr: SocketAddr,
    pub issuer: String,
    pub state: Arc<IdpState>,
}

impl Idp {
    pub async fn start(keys: &[&SigningKey]) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}/realms/test");
        let state = Arc::new(IdpState::default());
        *state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
        let (st, iss) = (state.clone(), issuer.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, iss) = (st.clone(), iss.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| answer(req, st.clone(), iss.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Idp { addr, issuer, state }
    }

    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.state.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    pub fn jwks_fetches(&self) -> u64 {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Standard claims for `user`, valid for an hour, for audience `jira`.
    pub fn claims(&self, user: &str) -> Value {
        json!({"iss": self.issuer, "aud": "jira", "sub": format!("id-{user}"), "preferred_username": user,
               "exp": now() + 3600, "iat": now(), "nbf": now() - 5, "groups": ["jira-users"], "scope": "openid read"})
    }
}

fn reply(status: StatusCode, v: Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

async fn answer(req: Request<Incoming>, st: Arc<IdpState>, issuer: String) -> Result<Response<ProxyBody>, Infallible> {
    if st.down.load(Ordering::SeqCst) {
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"})));
    }
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    Ok(match path.as_str() {
        "/realms/test/.well-known/openid-configuration" => reply(
            StatusCode::OK,
            json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}),
        ),
        "/realms/test/jwks" => {
            st.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            let file = st.jwks_file.lock().unwrap().clone();
            match file {
                Some(f) => reply(
                    StatusCode::OK,
                    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap(),
                ),
                None => reply(StatusCode::OK, json!({"keys": *st.keys.lock().unwrap()})),
            }
        }
        "/realms/test/introspect" => {
            st.introspections.fetch_add(1, Ordering::SeqCst);
            let want = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            );
            if auth.as_deref() != Some(want.as_str()) {
                return Ok(reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"})));
            }
            let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
            let token = form.get("token").cloned().unwrap_or_default();
            let ans = st
                .tokens
                .lock()
                .unwrap()
                .get(&token)
                .cloned()
                .unwrap_or(json!({"active": false}));
            reply(StatusCode::OK, ans)
        }
        _ => reply(StatusCode::NOT_FOUND, json!({})),
    })
}
