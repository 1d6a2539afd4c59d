//! HTTP Basic (RFC 7617) against the local `[[users]]` with argon2 hashes.
//!
//! The credential is split at the FIRST colon (user-ids cannot contain one, passwords
//! can); both halves must be UTF-8 (the charset we advertise). Unknown users cost one
//! argon2 verification like known ones. Failed attempts count toward a per-user lockout
//! window in the state store, reserved *before* the slow check so parallel guesses cannot
//! overrun it; only successes are cached.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::PasswordHash;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderValue;
use http::header::AUTHORIZATION;

use super::cache::CredentialCache;
use super::password::Verifier;
use super::{AuthError, AuthKind, AuthRequest, Authenticator, Outcome, Principal, RejectReason};
use crate::config::{BasicConfig, LocalUser, LockoutConfig};
use crate::store::StateStore;

/// Longest user-id we accept (Jira's own limit is 255 characters).
const MAX_USER_BYTES: usize = 255;

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses an `Authorization` value. `None`: not Basic (another member's business).
/// `Some(Err(code))`: Basic, but malformed.
pub fn parse(value: &HeaderValue) -> Option<Result<(String, String), &'static str>> {
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Some(Err("malformed_basic"));
    }
    let Ok(decoded) = B64.decode(token) else {
        return Some(Err("malformed_basic"));
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Some(Err("malformed_basic"));
    };
    let Some((user, password)) = text.split_once(':') else {
        return Some(Err("malformed_basic"));
    };
    if user.is_empty() || user.len() > MAX_USER_BYTES || user.chars().any(char::is_control) {
        return Some(Err("malformed_basic"));
    }
    Some(Ok((user.to_owned(), password.to_owned())))
}

struct Account {
    name: String,
    hash: Arc<PasswordHash>,
    groups: Vec<String>,
}

pub struct BasicAuth {
    accounts: HashMap<String, Account>,
    verifier: Verifier,
    cache: CredentialCache,
    lockout: Option<LockoutConfig>,
    store: Arc<dyn StateStore>,
    challenge: HeaderValue,
}

impl BasicAuth {
    pub fn new(
        cfg: &BasicConfig,
        users: &[LocalUser],
        store: Arc<dyn StateStore>,
        realm: &str,
    ) -> Result<Self, String> {
        let mut accounts = HashMap::new();
        for u in users {
            let hash = PasswordHash::new(&u.password_hash).map_err(|e| format!("user {}: {e}", u.name))?;
            accounts.insert(
                u.name.to_lowercase(),
                Account {
                    name: u.name.clone(),
                    hash: Arc::new(hash),
                    groups: u.groups.clone(),
                },
            );
        }
        let verifier = Verifier::new(accounts.values().next().map(|a| &*a.hash))?;
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
            .map_err(|_| "realm is not a valid header value".to_string())?;
        Ok(BasicAuth {
            accounts,
            verifier,
            cache: CredentialCache::new(cfg.cache_ttl, cfg.cache_max_entries),
            lockout: cfg.lockout,
            store,
            challenge,
        })
    }

    /// Argon2 verifications run so far (tests and metrics).
    pub fn verifications(&self) -> u64 {
        self.verifier.verifications()
    }

    fn lockout_key(user: &str) -> String {
        format!("lockout:basic:{}", user.to_lowercase())
    }

    async fn locked(&self, key: &str, reserve: bool) -> Result<Option<RejectReason>, AuthError> {
        let Some(l) = self.lockout else { return Ok(None) };
        let count = if reserve {
            self.store.incr(key, 1, l.window).await?
        } else {
            match self.store.get(key).await? {
                Some(b) => std::str::from_utf8(&b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
                None => 0,
            }
        };
        // With `reserve`, this attempt is already counted: the (max+1)th is refused.
        let over = if reserve {
            count > i64::from(l.max_failures)
        } else {
            count >= i64::from(l.max_failures)
        };
        if !over {
            return Ok(None);
        }
        let retry_after = self.store.ttl(key).await?.unwrap_or(l.window);
        Ok(Some(RejectReason {
            code: "locked_out",
            retry_after: Some(retry_after),
        }))
    }
}

#[async_trait]
impl Authenticator for BasicAuth {
    fn kind(&self) -> AuthKind {
        AuthKind::Basic
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        let Some(value) = req.parts.headers.get(AUTHORIZATION) else {
            return Ok(Outcome::NotPresent);
        };
        let (user, password) = match parse(value) {
            None => return Ok(Outcome::NotPresent),
            Some(Err(code)) => return Ok(Outcome::Rejected(RejectReason::new(code))),
            Some(Ok(c)) => c,
        };
        let key = Self::lockout_key(&user);
        let digest = self
            .cache
            .digest(&[b"basic", user.to_lowercase().as_bytes(), password.as_bytes()]);
        if let Some(p) = self.cache.get(&digest) {
            if let Some(r) = self.locked(&key, false).await? {
                return Ok(Outcome::Rejected(r));
            }
            return Ok(Outcome::Authenticated(p));
        }
        if let Some(r) = self.locked(&key, true).await? {
            return Ok(Outcome::Rejected(r));
        }
        let account = self.accounts.get(&user.to_lowercase());
        let ok = self
            .verifier
            .verify(password.as_bytes(), account.map(|a| a.hash.clone()))
            .await?;
        match account {
            Some(a) if ok => {
                if self.lockout.is_some() {
                    self.store.delete(&key).await?;
                }
                let p = Principal::new(AuthKind::Basic, a.name.clone(), a.groups.clone());
                self.cache.insert(digest, p.clone());
                Ok(Outcome::Authenticated(p))
            }
            Some(_) => Ok(Outcome::Rejected(RejectReason::new("bad_password"))),
            None => Ok(Outcome::Rejected(RejectReason::new("unknown_user"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn basic_password_with_colons_splits_at_first() {
        let v = hv(&format!("Basic {}", b64(b"alice:pa:ss:word")));
        assert_eq!(parse(&v), Some(Ok(("alice".into(), "pa:ss:word".into()))));
    }

    #[test]
    fn basic_scheme_is_case_insensitive_and_padding_optional() {
        let v = hv(&format!("bAsIc   {}", b64(b"bob:x").trim_end_matches('=')));
        assert_eq!(parse(&v), Some(Ok(("bob".into(), "x".into()))));
    }

    #[test]
    fn basic_utf8_user_and_password() {
        let v = hv(&format!("Basic {}", b64("jürgen:pässwörd".as_bytes())));
        assert_eq!(parse(&v), Some(Ok(("jürgen".into(), "pässwörd".into()))));
    }

    #[test]
    fn basic_malformed_shapes_are_rejected_not_skipped() {
        for v in [
            "Basic".to_string(),
            "Basic !!!notbase64".to_string(),
            format!("Basic {}", b64(b"no-colon")),
            format!("Basic {}", b64(b":empty-user")),
            format!("Basic {}", b64(b"\xff\xfe:latin1")),
            format!("Basic {}", b64(b"us\x01er:pw")),
            format!("Basic {}", b64(format!("{}:pw", "u".repeat(300)).as_bytes())),
        ] {
            assert_eq!(parse(&hv(&v)), Some(Err("malformed_basic")), "{v}");
        }
    }

    #[test]
    fn other_schemes_are_not_basic() {
        assert_eq!(parse(&hv("Bearer abc")), None);
        assert_eq!(parse(&hv("Basicx abc")), None);
    }
}
