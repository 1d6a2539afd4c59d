//! Opaque bearer tokens checked by the issuer's introspection endpoint (RFC 7662): a POST
//! of `token=...&token_type_hint=access_token` with the proxy's client credentials (HTTP
//! Basic, RFC 6749 §2.3.1). Active answers are cached until the token's `exp` (bounded by
//! `cache_ttl`), inactive ones briefly; the endpoint failing fails closed (503).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use http::{HeaderValue, Uri};
use serde_json::Value;

use super::cache::TtlMap;
use super::jwt::string_list;
use super::{AuthError, AuthKind, AuthRequest, Authenticator, Outcome, Principal, RejectReason};
use crate::config::IntrospectionConfig;
use crate::upstream::fetch::Fetcher;

pub struct IntrospectionAuth {
    url: Uri,
    client_auth: HeaderValue,
    user_claim: String,
    groups_claim: Option<String>,
    cache_ttl: Duration,
    negative_ttl: Duration,
    fetcher: Fetcher,
    /// Answers by SHA-256 of the token: a principal (active) or `None` (inactive).
    cache: TtlMap<Option<Principal>>,
    challenge: Option<HeaderValue>,
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl IntrospectionAuth {
    /// `threads`: the listener threads its cache is shared out among.
    pub fn new(cfg: &IntrospectionConfig, fetcher: Fetcher, realm: &str, threads: usize) -> Result<Self, String> {
        // RFC 6749 §2.3.1: client id and secret are form-encoded before Basic encoding.
        let secret =
            String::from_utf8(cfg.client_secret.expose().to_vec()).map_err(|_| "client_secret is not UTF-8")?;
        let pair = format!("{}:{}", form_encode(&cfg.client_id), form_encode(&secret));
        let mut client_auth = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ))
        .map_err(|e| e.to_string())?;
        client_auth.set_sensitive(true);
        Ok(IntrospectionAuth {
            url: cfg.url.clone(),
            client_auth,
            user_claim: cfg.user_claim.clone(),
            groups_claim: cfg.groups_claim.clone(),
            cache_ttl: cfg.cache_ttl,
            negative_ttl: cfg.negative_cache_ttl,
            fetcher,
            cache: TtlMap::new(cfg.cache_max_entries, threads),
            challenge: HeaderValue::from_str(&format!("Bearer realm=\"{realm}\"")).ok(),
        })
    }

    /// The answer to a principal and how long it may be cached, or `None` when inactive.
    fn read_answer(&self, v: &Value, now: SystemTime) -> Result<Option<(Principal, Duration)>, &'static str> {
        if v.get("active").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        let ttl = match v.get("exp") {
            None => self.cache_ttl,
            Some(e) => match e.as_u64() {
                Some(exp) if exp <= now_s => return Ok(None),
                Some(exp) => self.cache_ttl.min(Duration::from_secs(exp - now_s)),
                None => return Err("malformed_claim"),
            },
        };
        let user = v
            .get(&self.user_claim)
            .or_else(|| {
                if self.user_claim == "username" {
                    v.get("sub")
                } else {
                    None
                }
            })
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("user_claim_missing")?;
        let groups = self
            .groups_claim
            .as_ref()
            .and_then(|g| v.get(g))
            .map(string_list)
            .unwrap_or_default();
        let scopes = v.get("scope").map(string_list).unwrap_or_default();
        Ok(Some((
            Principal::new(AuthKind::Introspection, user.to_owned(), groups).with_scopes(scopes),
            ttl,
        )))
    }
}

#[async_trait]
impl Authenticator for IntrospectionAuth {
    fn kind(&self) -> AuthKind {
        AuthKind::Introspection
    }

    fn challenge(&self) -> Option<HeaderValue> {
        self.challenge.clone()
    }

    fn accepts_bearer(&self) -> bool {
        true
    }

    /// No bearer token, or one of the proxy's own API keys (never sent to an identity
    /// provider, whatever the chain order).
    fn at_once(&self, req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        match req.bearer() {
            Some(token) if !token.starts_with(super::api_key::PREFIX) => None,
            _ => Some(Ok(Outcome::NotPresent)),
        }
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        if let Some(r) = self.at_once(req) {
            return r;
        }
        let Some(token) = req.bearer() else {
            return Ok(Outcome::NotPresent);
        };
        let inactive = || {
            Outcome::Rejected(
                RejectReason::new("token_inactive")
                    .with_bearer_error("invalid_token", "The access token is not active"),
            )
        };
        let Some(&key) = req.bearer_digest() else {
            return Ok(Outcome::NotPresent);
        };
        match self.cache.get(&key, req.at) {
            Some(Some(p)) => return Ok(Outcome::Authenticated(p)),
            Some(None) => return Ok(inactive()),
            None => {}
        }
        let form = format!("token={}&token_type_hint=access_token", form_encode(token));
        let (status, answer) = self
            .fetcher
            .post_form(&self.url, &self.client_auth, form)
            .await
            .map_err(|e| AuthError::Internal(format!("introspection: {e}")))?;
        if status != 200 {
            // 401/400: the endpoint refused OUR client credentials: a configuration fault.
            return Err(AuthError::Internal(format!("introspection endpoint answered {status}")));
        }
        match self.read_answer(&answer, req.now) {
            Ok(Some((p, ttl))) => {
                self.cache.insert(key, Some(p.clone()), ttl);
                Ok(Outcome::Authenticated(p))
            }
            Ok(None) => {
                self.cache.insert(key, None, self.negative_ttl);
                Ok(inactive())
            }
            Err(code) => Ok(Outcome::Rejected(
                RejectReason::new(code).with_bearer_error("invalid_token", "The access token names no usable user"),
            )),
        }
    }
}
