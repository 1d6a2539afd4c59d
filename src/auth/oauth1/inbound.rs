//! The proxy as an OAuth 1.0a provider, checking signed requests the way Jira's own
//! provider does (`AuthenticatorImpl`): all of `oauth_consumer_key`, `oauth_signature_method`,
//! `oauth_signature`, `oauth_timestamp`, `oauth_nonce` must be present; an empty (or absent)
//! `oauth_token` is two-legged, run as `xoauth_requestor_id` (deprecated: `user_id`) when
//! the consumer may impersonate, else as the consumer's `run_as` user. Signatures are over
//! the URL the client used (`server.public_url` + the request path as sent), the query,
//! the header's parameters and a small form-encoded body. Timestamps must lie within
//! `max_clock_skew`; a nonce is accepted once per consumer and token within that window
//! (through the state store, so replicas share it). Refusals carry Jira's `oauth_problem`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use aws_lc_rs::signature::ParsedPublicKey;
use bytes::Bytes;
use http::HeaderValue;
use http::header::AUTHORIZATION;

use super::rfc5849::{self, ParamError};
use crate::auth::{AuthError, AuthKind, AuthRequest, Authenticator, Outcome, Principal, RejectReason};
use crate::config::{OAuth1Config, OAuth1Consumer, Secret};
use crate::store::StateStore;

enum Verifier {
    Rsa(ParsedPublicKey),
    Secret(Secret),
}

struct Consumer {
    cfg: OAuth1Consumer,
    verifier: Verifier,
}

pub struct OAuth1Auth {
    consumers: HashMap<String, Consumer>,
    max_skew: Duration,
    /// scheme, host, port of `server.public_url`, for base strings.
    origin: (String, String, Option<u16>),
    store: Arc<dyn StateStore>,
    challenge: HeaderValue,
}

/// The protocol parameters a request carries, and where from.
pub fn carries_oauth(parts: &http::request::Parts) -> bool {
    let header = parts.headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    header.is_some_and(|h| h.len() > 6 && h[..6].eq_ignore_ascii_case("oauth "))
        || parts.uri.query().is_some_and(|q| q.contains("oauth_consumer_key="))
}

impl OAuth1Auth {
    pub fn new(cfg: &OAuth1Config, store: Arc<dyn StateStore>) -> Result<Self, String> {
        let mut consumers = HashMap::new();
        for c in &cfg.consumers {
            let verifier = match (&c.public_key_der, &c.secret) {
                (Some(der), _) => {
                    Verifier::Rsa(rfc5849::rsa_public_key(der).map_err(|e| format!("consumer {}: {e}", c.key))?)
                }
                (None, Some(s)) => Verifier::Secret(s.clone()),
                (None, None) => return Err(format!("consumer {} has neither public_key nor secret", c.key)),
            };
            consumers.insert(
                c.key.clone(),
                Consumer {
                    cfg: c.clone(),
                    verifier,
                },
            );
        }
        let challenge = HeaderValue::from_str(&format!("OAuth realm=\"{}\"", rfc5849::encode(&cfg.public_url)))
            .map_err(|e| e.to_string())?;
        Ok(OAuth1Auth {
            consumers,
            max_skew: cfg.max_clock_skew,
            origin: cfg.origin.clone(),
            store,
            challenge,
        })
    }

    fn refuse(&self, problem: &'static str) -> Outcome {
        Outcome::Rejected(RejectReason::new(problem).with_oauth_problem(problem))
    }

    fn base_string(&self, req: &AuthRequest<'_>, params: &[(String, String)]) -> String {
        let (scheme, host, port) = &self.origin;
        let uri = rfc5849::base_uri(scheme, host, *port, req.parts.uri.path());
        rfc5849::base_string(req.parts.method.as_str(), &uri, params)
    }

    fn signature_ok(&self, c: &Consumer, method: &str, base: &str, sig: &str, tls: bool) -> Result<bool, &'static str> {
        match (&c.verifier, method) {
            (Verifier::Rsa(key), "RSA-SHA1") => Ok(rfc5849::verify_rsa_sha1(base, sig, key)),
            (Verifier::Secret(s), "HMAC-SHA1") => Ok(rfc5849::verify_hmac_sha1(base, sig, s.expose(), b"")),
            // PLAINTEXT sends the secret itself: only over TLS (RFC 5849 §3.4.4).
            (Verifier::Secret(s), "PLAINTEXT") if tls => Ok(rfc5849::verify_plaintext(sig, s.expose(), b"")),
            _ => Err("signature_method_rejected"),
        }
    }

    /// Who a two-legged request runs as, following Jira's rules.
    fn two_legged_user(&self, c: &Consumer, params: &[(String, String)]) -> Result<String, &'static str> {
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let requested = get("xoauth_requestor_id")
            .or_else(|| get("user_id"))
            .filter(|u| !u.is_empty());
        match requested {
            Some(u) if c.cfg.impersonation => Ok(u),
            Some(_) => Err("permission_denied"),
            None if c.cfg.two_legged => c.cfg.run_as.clone().ok_or("permission_denied"),
            None => Err("permission_denied"),
        }
    }
}

#[async_trait]
impl Authenticator for OAuth1Auth {
    fn kind(&self) -> AuthKind {
        AuthKind::OAuth1
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        let header = match req
            .parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(rfc5849::parse_header)
        {
            Some(Some(Ok(p))) => p,
            Some(Some(Err(_))) => return Ok(self.refuse("parameter_rejected")),
            _ if carries_oauth(req.parts) => Vec::new(),
            _ => return Ok(Outcome::NotPresent),
        };
        let query = req.parts.uri.query().map(rfc5849::form_pairs).unwrap_or_default();
        let body = req.form.unwrap_or(&[]);
        let params = match rfc5849::collect(&header, &query, body) {
            Ok(p) => p,
            Err(ParamError::Duplicated | ParamError::Malformed) => return Ok(self.refuse("parameter_rejected")),
        };
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let (Some(key), Some(method), Some(sig), Some(ts), Some(nonce)) = (
            get("oauth_consumer_key"),
            get("oauth_signature_method"),
            get("oauth_signature"),
            get("oauth_timestamp"),
            get("oauth_nonce"),
        ) else {
            return Ok(self.refuse("parameter_absent"));
        };
        if get("oauth_version").is_some_and(|v| v != "1.0") {
            return Ok(self.refuse("version_rejected"));
        }
        let Some(consumer) = self.consumers.get(key) else {
            return Ok(self.refuse("consumer_key_unknown"));
        };
        let now = req.now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
        let Ok(ts_n) = ts.parse::<i64>() else {
            return Ok(self.refuse("timestamp_refused"));
        };
        if (now - ts_n).unsigned_abs() > self.max_skew.as_secs() {
            return Ok(self.refuse("timestamp_refused"));
        }
        let token = get("oauth_token").unwrap_or("");
        if !token.is_empty() {
            // Three-legged access tokens are issued by the provider endpoints (not yet here).
            return Ok(self.refuse("token_rejected"));
        }
        let base = self.base_string(req, &params);
        match self.signature_ok(consumer, method, &base, sig, req.tls) {
            Err(p) => return Ok(self.refuse(p)),
            Ok(false) => return Ok(self.refuse("signature_invalid")),
            Ok(true) => {}
        }
        // After the signature, so nobody can burn another's nonces.
        let nonce_key = format!(
            "oauth1:nonce:{}:{token}:{ts}:{}",
            rfc5849::encode(key),
            rfc5849::encode(nonce)
        );
        if !self
            .store
            .put_if_absent(&nonce_key, Bytes::from_static(b"1"), self.max_skew * 2)
            .await?
        {
            return Ok(self.refuse("nonce_used"));
        }
        match self.two_legged_user(consumer, &params) {
            Ok(user) => Ok(Outcome::Authenticated(
                Principal::new(AuthKind::OAuth1, user, Vec::new()).with_credential_id(consumer.cfg.key.clone()),
            )),
            Err(p) => Ok(self.refuse(p)),
        }
    }
}
