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

use super::rfc5849;
use super::tokens;
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

/// Whether a request carries OAuth 1.0a protocol parameters: in its `Authorization`
/// (the one `admit` took, as every authenticator reads it) or in its query.
pub fn carries_oauth(authorization: Option<&HeaderValue>, uri: &http::Uri) -> bool {
    let header = authorization.and_then(|v| v.to_str().ok());
    header.is_some_and(|h| h.len() > 6 && h[..6].eq_ignore_ascii_case("oauth "))
        || uri.query().is_some_and(|q| q.contains("oauth_consumer_key="))
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

    fn signature_ok(
        &self,
        c: &Consumer,
        method: &str,
        base: &str,
        sig: &str,
        token_secret: &[u8],
        tls: bool,
    ) -> Result<bool, &'static str> {
        match (&c.verifier, method) {
            // RSA-SHA1 signs with the consumer's key alone (RFC 5849 §3.4.3).
            (Verifier::Rsa(key), "RSA-SHA1") => Ok(rfc5849::verify_rsa_sha1(base, sig, key)),
            (Verifier::Secret(s), "HMAC-SHA1") => Ok(rfc5849::verify_hmac_sha1(base, sig, s.expose(), token_secret)),
            // PLAINTEXT sends the secret itself: only over TLS (RFC 5849 §3.4.4).
            (Verifier::Secret(s), "PLAINTEXT") if tls => Ok(rfc5849::verify_plaintext(sig, s.expose(), token_secret)),
            _ => Err("signature_method_rejected"),
        }
    }

    /// Who a two-legged request runs as, following Jira's rules.
    fn two_legged_user(&self, c: &OAuth1Consumer, params: &[(String, String)]) -> Result<String, &'static str> {
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let requested = get("xoauth_requestor_id")
            .or_else(|| get("user_id"))
            .filter(|u| !u.is_empty());
        match requested {
            Some(u) if c.impersonation => Ok(u),
            Some(_) => Err("permission_denied"),
            None if c.two_legged => c.run_as.clone().ok_or("permission_denied"),
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

    /// No OAuth 1.0a parameters.
    fn at_once(&self, req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        (!carries_oauth(req.authorization, &req.parts.uri)).then_some(Ok(Outcome::NotPresent))
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        if let Some(r) = self.at_once(req) {
            return r;
        }
        let v = match self.verify(req, Expect::Resource).await? {
            Ok(v) => v,
            Err(problem) => return Ok(self.refuse(problem)),
        };
        let user = match v.access {
            // A consumer no longer allowed three-legged access loses its tokens' use too.
            Some(_) if !v.consumer.three_legged => Err("permission_denied"),
            Some(t) => Ok(t.user),
            None => self.two_legged_user(&v.consumer, &v.params),
        };
        let user = user.and_then(|u| {
            if v.consumer.may_act_as(&u) {
                Ok(u)
            } else {
                Err("permission_denied")
            }
        });
        match user {
            Ok(user) => Ok(Outcome::Authenticated(
                Principal::new(AuthKind::OAuth1, user, Vec::new()).with_credential_id(v.consumer.key.clone()),
            )),
            Err(p) => Ok(self.refuse(p)),
        }
    }
}

/// Which token a signed request must carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `request-token`: none.
    NoToken,
    /// `access-token`: an approved request token.
    RequestToken,
    /// A REST call: none (two-legged) or an access token (three-legged).
    Resource,
}

/// A request whose signature, timestamp and nonce were checked.
pub struct Verified {
    pub consumer: OAuth1Consumer,
    pub params: Vec<(String, String)>,
    pub token: String,
    pub request: Option<tokens::RequestToken>,
    pub access: Option<tokens::AccessToken>,
}

impl OAuth1Auth {
    /// Checks an OAuth 1.0a request: parameters, consumer, timestamp, token, signature
    /// (with the token's secret), then the nonce. `Err` carries Jira's problem name.
    pub async fn verify(
        &self,
        req: &AuthRequest<'_>,
        expect: Expect,
    ) -> Result<Result<Verified, &'static str>, AuthError> {
        let header = match req
            .authorization
            .and_then(|v| v.to_str().ok())
            .map(rfc5849::parse_header)
        {
            Some(Some(Ok(p))) => p,
            Some(Some(Err(_))) => return Ok(Err("parameter_rejected")),
            _ => Vec::new(),
        };
        let query = req.parts.uri.query().map(rfc5849::form_pairs).unwrap_or_default();
        let Ok(params) = rfc5849::collect(&header, &query, req.form.unwrap_or(&[])) else {
            return Ok(Err("parameter_rejected"));
        };
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let (Some(key), Some(method), Some(sig), Some(ts), Some(nonce)) = (
            get("oauth_consumer_key"),
            get("oauth_signature_method"),
            get("oauth_signature"),
            get("oauth_timestamp"),
            get("oauth_nonce"),
        ) else {
            return Ok(Err("parameter_absent"));
        };
        if get("oauth_version").is_some_and(|v| v != "1.0") {
            return Ok(Err("version_rejected"));
        }
        let Some(consumer) = self.consumers.get(&key) else {
            return Ok(Err("consumer_key_unknown"));
        };
        let now = req.now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
        match ts.parse::<i64>() {
            Ok(t) if (now - t).unsigned_abs() <= self.max_skew.as_secs() => {}
            _ => return Ok(Err("timestamp_refused")),
        }
        let token = get("oauth_token").unwrap_or_default();
        let (mut request, mut access, mut token_secret) = (None, None, String::new());
        match (expect, token.is_empty()) {
            (Expect::NoToken, false) => return Ok(Err("token_rejected")),
            (Expect::NoToken, true) | (Expect::Resource, true) => {}
            (Expect::RequestToken, true) => return Ok(Err("parameter_absent")),
            (Expect::RequestToken, false) => match tokens::get_request(&*self.store, &token).await? {
                Some(t) if t.consumer == key => {
                    token_secret = t.secret.clone();
                    request = Some(t);
                }
                _ => return Ok(Err("token_rejected")),
            },
            (Expect::Resource, false) => match tokens::get_access(&*self.store, &token).await? {
                Some(t) if t.consumer != key => return Ok(Err("token_rejected")),
                Some(t) if t.expires <= now as u64 => return Ok(Err("token_expired")),
                Some(t) => {
                    token_secret = t.secret.clone();
                    access = Some(t);
                }
                None => return Ok(Err("token_rejected")),
            },
        }
        let base = self.base_string(req, &params);
        match self.signature_ok(consumer, &method, &base, &sig, token_secret.as_bytes(), req.tls) {
            Err(p) => return Ok(Err(p)),
            Ok(false) => return Ok(Err("signature_invalid")),
            Ok(true) => {}
        }
        // After the signature, so nobody can burn another's nonces.
        let token_part = if token.is_empty() {
            String::new()
        } else {
            tokens::token_id(&token)
        };
        let nonce_key = format!(
            "{}{}:{token_part}:{ts}:{}",
            crate::store::NONCE_PREFIX,
            rfc5849::encode(&key),
            rfc5849::encode(&nonce)
        );
        if !self
            .store
            .put_if_absent(&nonce_key, Bytes::from_static(b"1"), self.max_skew * 2)
            .await?
        {
            return Ok(Err("nonce_used"));
        }
        Ok(Ok(Verified {
            consumer: consumer.cfg.clone(),
            params,
            token,
            request,
            access,
        }))
    }

    /// The consumer's display name.
    pub fn consumer_name(&self, key: &str) -> Option<&str> {
        self.consumers.get(key).map(|c| c.cfg.name.as_str())
    }

    /// The consumer's settings.
    pub fn consumer(&self, key: &str) -> Option<&OAuth1Consumer> {
        self.consumers.get(key).map(|c| &c.cfg)
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }
}
