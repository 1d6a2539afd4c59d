//! OAuth 2.0 / OpenID Connect bearer tokens as JWTs (RFC 7519, RFC 9068), validated as
//! RFC 8725 asks: an explicit algorithm allow-list per issuer, `none` never, HS256 only
//! with a configured secret and never with a public key, the key's `alg`/`kty`/`use`
//! must fit, `iss` exact, `aud` must contain a configured audience, `exp` required and a
//! number, `nbf`/`iat` honoured with a leeway, an optional `typ` check.
//!
//! One member per issuer: a token whose (unverified) `iss` is another issuer's is left
//! to the next member; a token for this issuer is accepted or refused here.

mod fast;
pub mod keys;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::cache::{Digest, TtlMap};
use super::{AuthError, AuthKind, AuthRequest, Authenticator, Outcome, Principal, RejectReason};
use crate::config::JwtConfig;
use keys::{KeyStore, Lookup};

pub struct JwtAuth {
    cfg: JwtConfig,
    keys: KeyStore,
    hmac: Option<DecodingKey>,
    challenge: Option<HeaderValue>,
    /// Tokens already verified, by SHA-256 of the whole token, until their `exp` (at
    /// most `token_cache_ttl`, so a key withdrawn from the JWKS stops counting soon).
    verified: TtlMap<Principal>,
    /// Signature verifications run (cache misses), for tests and metrics.
    verifications: AtomicU64,
}

/// A refusal with its RFC 6750 `error_description` (fixed text; never the token).
fn refuse(code: &'static str, description: &'static str) -> Outcome {
    Outcome::Rejected(RejectReason::new(code).with_bearer_error("invalid_token", description))
}

impl JwtAuth {
    /// `threads`: the listener threads its cache of verified tokens is shared out among.
    pub fn new(cfg: JwtConfig, keys: KeyStore, realm: &str, threads: usize) -> JwtAuth {
        let hmac = cfg.hs256_secret.as_ref().map(|s| DecodingKey::from_secret(s.expose()));
        let challenge = HeaderValue::from_str(&format!("Bearer realm=\"{realm}\"")).ok();
        let cfg_max = cfg.token_cache_max_entries;
        JwtAuth {
            cfg,
            keys,
            hmac,
            challenge,
            verified: TtlMap::new(cfg_max, threads),
            verifications: AtomicU64::new(0),
        }
    }

    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// (failed key-set fetches, key-set fetches), for tests, metrics and readiness.
    pub fn key_counters(&self) -> (u64, u64) {
        self.keys.counters()
    }

    /// The issuer's signing keys are loaded (see `KeyStore::ready`).
    pub async fn ready(&self) -> Result<(), String> {
        self.keys
            .ready()
            .await
            .map_err(|e| format!("signing keys of {}: {e}", self.cfg.issuer))
    }

    /// Hits and misses of the verified-token cache.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.verified.stats()
    }

    /// Remembers a verified token until its `exp`, at most `token_cache_ttl`.
    fn remember(&self, key: Digest, claims: &Map<String, Value>, now: SystemTime, p: &Principal) {
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        if let Some(exp) = claims.get("exp").and_then(Value::as_u64) {
            let ttl = self
                .cfg
                .token_cache_ttl
                .min(Duration::from_secs(exp.saturating_sub(now_s)));
            self.verified.insert(key, p.clone(), ttl);
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.cfg.leeway.as_secs();
        v.validate_nbf = true;
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&self.cfg.audiences);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v
    }

    async fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Result<Map<String, Value>, Outcome>, AuthError> {
        let candidates: Vec<keys::KeyEntry> = if alg == Algorithm::HS256 {
            match &self.hmac {
                Some(k) => vec![keys::KeyEntry {
                    kid: None,
                    algs: vec![Algorithm::HS256],
                    key: k.clone(),
                    parsed: None,
                }],
                None => {
                    return Ok(Err(refuse(
                        "algorithm_not_allowed",
                        "The token's algorithm is not accepted",
                    )));
                }
            }
        } else {
            match self.keys.lookup(kid, alg).await {
                Lookup::Found(keys) => keys,
                Lookup::NoKey => {
                    return Ok(Err(refuse(
                        "unknown_key_id",
                        "The token was signed with an unknown key",
                    )));
                }
                Lookup::Unavailable(e) => return Err(AuthError::Internal(format!("issuer keys unavailable: {e}"))),
            }
        };
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let expect = fast::Expect {
            issuer: &self.cfg.issuer,
            audiences: &self.cfg.audiences,
            leeway: self.cfg.leeway.as_secs(),
        };
        // jsonwebtoken's Validation only for keys the fast path does not serve.
        let mut validation = None;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let mut last = ErrorKind::InvalidSignature;
        for entry in &candidates {
            let decoded = match &entry.parsed {
                Some((a, key)) if *a == alg => fast::decode(token, key, &expect, now),
                _ => jsonwebtoken::decode::<Map<String, Value>>(
                    token,
                    &entry.key,
                    validation.get_or_insert_with(|| self.validation(alg)),
                )
                .map(|data| data.claims)
                .map_err(|e| e.into_kind()),
            };
            match decoded {
                Ok(claims) => return Ok(Ok(claims)),
                Err(e) => last = e,
            }
        }
        Ok(Err(match last {
            ErrorKind::ExpiredSignature => refuse("token_expired", "The access token expired"),
            ErrorKind::ImmatureSignature => refuse("token_not_yet_valid", "The access token is not valid yet"),
            ErrorKind::InvalidAudience => refuse("wrong_audience", "The access token is not meant for this service"),
            ErrorKind::InvalidIssuer => refuse("wrong_issuer", "The access token is from another issuer"),
            ErrorKind::MissingRequiredClaim(_) => refuse("missing_claim", "The access token lacks a required claim"),
            ErrorKind::InvalidSignature => refuse("bad_signature", "The access token's signature is invalid"),
            ErrorKind::InvalidAlgorithm => refuse("algorithm_not_allowed", "The token's algorithm is not accepted"),
            _ => refuse("invalid_token", "The access token is malformed"),
        }))
    }

    /// `iat`/`nbf` must be numbers; `iat` may not be in the future beyond the leeway.
    fn check_times(&self, claims: &Map<String, Value>, now: SystemTime) -> Option<Outcome> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        for name in ["iat", "nbf", "exp"] {
            if let Some(v) = claims.get(name)
                && !v.is_u64()
            {
                return Some(refuse(
                    "malformed_claim",
                    "A time claim of the access token is not a number",
                ));
            }
        }
        if claims
            .get("iat")
            .and_then(Value::as_u64)
            .is_some_and(|iat| iat > now + self.cfg.leeway.as_secs())
        {
            return Some(refuse("issued_in_future", "The access token is issued in the future"));
        }
        None
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, Outcome> {
        let user = match claim_path(claims, &self.cfg.user_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(refuse(
                    "user_claim_not_a_string",
                    "The access token names no usable user",
                ));
            }
            None => return Err(refuse("user_claim_missing", "The access token names no user")),
        };
        let groups = self
            .cfg
            .groups_claim
            .as_deref()
            .and_then(|c| claim_path(claims, c))
            .map(string_list)
            .unwrap_or_default();
        let scopes = claims
            .get("scope")
            .or_else(|| claims.get("scp"))
            .map(string_list)
            .unwrap_or_default();
        Ok(Principal::new(AuthKind::Jwt, user, groups).with_scopes(scopes))
    }
}

/// `a.b.c` through nested objects.
fn claim_path<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut v = claims.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    Some(v)
}

/// A list of strings, or one space-separated string (OAuth `scope`).
pub(crate) fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

/// The parts of a JWT this member needs before verifying: algorithm, key id, type, and
/// the issuer it claims. `None` when the token is not a JWT at all.
struct Peek {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
    iss: Option<String>,
}

fn peek(token: &str) -> Option<Result<Peek, ()>> {
    if token.split('.').count() != 3 {
        return None;
    }
    let raw_header = token.split('.').next()?;
    let header_json = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw_header).ok()?;
    let header: Value = serde_json::from_slice(&header_json).ok()?;
    header.get("alg")?;
    // From here on it is a JWT: anything odd is a refusal, not "someone else's token".
    let Ok(h) = jsonwebtoken::decode_header(token) else {
        return Some(Err(()));
    };
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<Value>,
    }
    let Ok(claims) = jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token) else {
        return Some(Err(()));
    };
    let iss = claims.iss.and_then(|v| v.as_str().map(str::to_owned));
    Some(Ok(Peek {
        alg: h.alg,
        kid: h.kid,
        typ: h.typ,
        iss,
    }))
}

#[async_trait]
impl Authenticator for JwtAuth {
    fn kind(&self) -> AuthKind {
        AuthKind::Jwt
    }

    fn challenge(&self) -> Option<HeaderValue> {
        self.challenge.clone()
    }

    fn accepts_bearer(&self) -> bool {
        true
    }

    /// No bearer token, or one verified before (until its `exp`).
    fn at_once(&self, req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        let Some(digest) = req.bearer_digest() else {
            return Some(Ok(Outcome::NotPresent));
        };
        // Counted here when found; a miss is counted once, by `authenticate`.
        let p = self.verified.peek(digest, req.at)?;
        self.verified.hit();
        Some(Ok(Outcome::Authenticated(p)))
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        if let Some(r) = self.at_once(req) {
            return r;
        }
        self.verified.miss();
        let (Some(token), Some(&digest)) = (req.bearer(), req.bearer_digest()) else {
            return Ok(Outcome::NotPresent);
        };
        let p = match peek(token) {
            None => return Ok(Outcome::NotPresent),
            Some(Err(())) => return Ok(refuse("malformed_jwt", "The access token is malformed")),
            Some(Ok(p)) => p,
        };
        if p.iss.as_deref() != Some(self.cfg.issuer.as_str()) {
            // Another issuer's token (or none named): the next member may know it.
            return Ok(Outcome::NotPresent);
        }
        if !self.cfg.algorithms.contains(&p.alg) {
            return Ok(refuse("algorithm_not_allowed", "The token's algorithm is not accepted"));
        }
        if let Some(want) = &self.cfg.typ {
            let typ = p.typ.as_deref().unwrap_or("").to_ascii_lowercase();
            if typ != *want && typ.strip_prefix("application/") != Some(want.as_str()) {
                return Ok(refuse("wrong_token_type", "The token is not an access token"));
            }
        }
        // Boxed: every request through the chain builds this member's future, and the
        // signature check's state (a JWKS fetch among it) would make it kilobytes.
        let claims = match Box::pin(self.verify(token, p.alg, p.kid.as_deref())).await? {
            Ok(c) => c,
            Err(outcome) => return Ok(outcome),
        };
        if let Some(outcome) = self.check_times(&claims, req.now) {
            return Ok(outcome);
        }
        Ok(match self.principal(&claims) {
            Ok(p) => {
                self.remember(digest, &claims, req.now, &p);
                Outcome::Authenticated(p)
            }
            Err(o) => o,
        })
    }
}
