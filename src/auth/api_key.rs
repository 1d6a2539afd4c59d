//! API keys: 256-bit random secrets with a recognisable prefix (`jap_`), stored only as
//! a SHA-256 digest of the whole key and looked up by it in O(1) (keys imported from
//! elsewhere, without our prefix, work the same). A fast hash is right here: the keys
//! are random, not passwords.
//!
//! Accepted as a configured header (`X-API-Key`), as `Authorization: Bearer <key>`, and as
//! the password of Basic `<user>:<key>` (the user must own the key), which is how
//! Atlassian's own API tokens are used. A bearer or Basic value that is not one of our
//! keys (and lacks our prefix) is another member's business; an unknown value WITH our
//! prefix, or any unknown value in the key header, is refused.

use std::net::IpAddr;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::{AuthError, AuthKind, AuthRequest, Authenticator, Outcome, Principal, RejectReason, SharedPrincipal};
use crate::config::{ApiKeyConfig, ApiKeyEntry, LocalUser};

/// The prefix of keys this proxy issues; secret scanners can look for it.
pub const PREFIX: &str = "jap_";

pub type KeyDigest = [u8; 32];

/// SHA-256 of the whole key.
pub fn digest_key(key: &str) -> KeyDigest {
    super::cache::sha256(key.as_bytes())
}

/// The config form of a digest: `sha256:<64 hex>`.
pub fn format_digest(d: &KeyDigest) -> String {
    format!("sha256:{}", super::cache::hex(d))
}

pub fn parse_digest(s: &str) -> Result<KeyDigest, String> {
    let hex = s.strip_prefix("sha256:").ok_or("must be \"sha256:<64 hex digits>\"")?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be \"sha256:<64 hex digits>\"".into());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// A new key (`jap_` + 43 base64url characters = 256 random bits) and a short public id.
pub fn generate() -> Result<(String, String), String> {
    let mut secret = [0u8; 32];
    let mut id = [0u8; 6];
    aws_lc_rs::rand::fill(&mut secret).map_err(|_| "system random number generator failed")?;
    aws_lc_rs::rand::fill(&mut id).map_err(|_| "system random number generator failed")?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    Ok((format!("{PREFIX}{}", b64.encode(secret)), b64.encode(id)))
}

struct Key {
    user: String,
    digest: KeyDigest,
    expires: Option<SystemTime>,
    revoked: bool,
    allowed_ips: Vec<IpNet>,
    /// Who the key authenticates, made once: each request shares its thread's copy.
    principal: SharedPrincipal,
}

pub struct ApiKeyAuth {
    keys: super::cache::DigestMap<Key>,
    /// Users (ASCII lower case) who own a key: only their Basic passwords can be keys.
    owners: super::cache::ConfiguredSet<String>,
    headers: Vec<HeaderName>,
    bearer: bool,
    basic: bool,
    challenge: Option<HeaderValue>,
}

/// Where a presented value came from.
enum Source<'a> {
    Header,
    Bearer,
    /// The password of a Basic credential with this user.
    Basic(&'a str),
}

impl ApiKeyAuth {
    /// `threads`: the listener threads, each given its own copy of a key's principal.
    pub fn new(cfg: &ApiKeyConfig, keys: &[ApiKeyEntry], users: &[LocalUser], realm: &str, threads: usize) -> Self {
        let groups_of = |user: &str| {
            users
                .iter()
                .find(|u| u.name.eq_ignore_ascii_case(user))
                .map(|u| u.groups.clone())
                .unwrap_or_default()
        };
        let owners = keys.iter().map(|k| k.user.to_ascii_lowercase()).collect();
        let keys = keys
            .iter()
            .map(|k| {
                let key = Key {
                    user: k.user.clone(),
                    digest: k.digest,
                    expires: k.expires,
                    revoked: k.revoked,
                    allowed_ips: k.allowed_ips.clone(),
                    principal: SharedPrincipal::new(
                        Principal::new(AuthKind::ApiKey, k.user.clone(), groups_of(&k.user))
                            .with_scopes(k.scopes.clone())
                            .with_credential_id(k.id.clone()),
                        threads,
                    ),
                };
                (k.digest, key)
            })
            .collect();
        let challenge = if cfg.bearer {
            HeaderValue::from_str(&format!("Bearer realm=\"{realm}\"")).ok()
        } else {
            None
        };
        ApiKeyAuth {
            keys,
            owners,
            headers: cfg.headers.clone(),
            bearer: cfg.bearer,
            basic: cfg.basic,
            challenge,
        }
    }

    /// The member's answer, all of it from memory.
    fn decide(&self, req: &AuthRequest<'_>) -> Outcome {
        let (value, source) = match self.presented(req) {
            Ok(Some(p)) => p,
            Ok(None) => return Outcome::NotPresent,
            Err(code) => return Outcome::Rejected(RejectReason::new(code)),
        };
        // A bearer token's digest is shared with the other members that look it up.
        let d = match (&source, req.bearer_digest()) {
            (Source::Bearer, Some(d)) if req.bearer() == Some(value) => *d,
            _ => digest_key(value),
        };
        match self.keys.get(&d) {
            // The map lookup is by a digest of a 256-bit secret; the constant-time
            // comparison makes the final decision independent of where bytes differ.
            Some(key) if super::cache::digests_equal(&key.digest, &d) => {
                match self.check(key, &source, req.client_ip, req.now) {
                    Ok(p) => Outcome::Authenticated(p),
                    Err(code) => Outcome::Rejected(RejectReason::new(code)),
                }
            }
            _ => match source {
                Source::Header => Outcome::Rejected(RejectReason::new("unknown_key")),
                _ if value.starts_with(PREFIX) => Outcome::Rejected(RejectReason::new("unknown_key")),
                _ => Outcome::NotPresent,
            },
        }
    }

    /// The presented key and where it came from; `Err` for ambiguous or malformed input.
    fn presented<'a>(&self, req: &'a AuthRequest<'_>) -> Result<Option<(&'a str, Source<'a>)>, &'static str> {
        let h = &req.parts.headers;
        let mut from_header = None;
        for name in &self.headers {
            let mut values = h.get_all(name).iter();
            if let Some(v) = values.next() {
                if values.next().is_some() || from_header.is_some() {
                    return Err("ambiguous_credentials");
                }
                let v = v.to_str().map_err(|_| "malformed_key")?.trim();
                from_header = Some(v);
            }
        }
        let auth = req.authorization;
        if let Some(key) = from_header {
            if auth.is_some() {
                return Err("ambiguous_credentials");
            }
            return Ok(Some((key, Source::Header)));
        }
        let Some(auth) = auth else { return Ok(None) };
        let bytes = auth.as_bytes();
        if self.bearer && bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            // The request's bearer token as every member reads it; only a token that is
            // not visible ASCII (no generated key, rarely an imported one) is parsed again
            // here, so such a value is still looked up, and refused as a key if prefixed.
            let token = match req.bearer() {
                Some(token) => token,
                None => std::str::from_utf8(&bytes[7..]).map_err(|_| "malformed_key")?.trim(),
            };
            return Ok(Some((token, Source::Bearer)));
        }
        if self.basic
            && let Some(Ok((user, password))) = req.basic()
        {
            // Only a user who owns a key can present one as a password, and only a value
            // with our prefix is refused as an unknown key: any other password is the
            // Basic member's to check, without hashing it here first.
            // Most names are lower case already: looked up as they are, without a copy.
            let owner = if user.bytes().any(|b| b.is_ascii_uppercase()) {
                self.owners.contains(&user.to_ascii_lowercase())
            } else {
                self.owners.contains(user)
            };
            if password.starts_with(PREFIX) || owner {
                return Ok(Some((password, Source::Basic(user))));
            }
        }
        Ok(None)
    }

    fn check(&self, key: &Key, source: &Source<'_>, ip: IpAddr, now: SystemTime) -> Result<Principal, &'static str> {
        if key.revoked {
            return Err("revoked_key");
        }
        if key.expires.is_some_and(|e| now >= e) {
            return Err("expired_key");
        }
        if !key.allowed_ips.is_empty() && !key.allowed_ips.iter().any(|n| n.contains(&ip)) {
            return Err("key_ip_not_allowed");
        }
        if let Source::Basic(user) = source
            && !user.eq_ignore_ascii_case(&key.user)
        {
            return Err("key_wrong_owner");
        }
        Ok(key.principal.here())
    }
}

#[async_trait]
impl Authenticator for ApiKeyAuth {
    fn kind(&self) -> AuthKind {
        AuthKind::ApiKey
    }

    fn challenge(&self) -> Option<HeaderValue> {
        self.challenge.clone()
    }

    fn accepts_bearer(&self) -> bool {
        self.bearer
    }

    /// Keys are checked in memory: every answer is ready at once.
    fn at_once(&self, req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        Some(Ok(self.decide(req)))
    }

    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        Ok(self.decide(req))
    }
}

/// What `keys new` / `keys import` print: the `[[api_keys]]` block for a key.
pub struct NewKeyBlock<'a> {
    pub id: &'a str,
    pub digest: &'a KeyDigest,
    pub user: &'a str,
    pub name: Option<&'a str>,
    pub expires: Option<SystemTime>,
    pub scopes: &'a [String],
    pub allowed_ips: &'a [String],
}

impl NewKeyBlock<'_> {
    pub fn to_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let list = |v: &[String]| format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", "));
        let mut out = String::from("[[api_keys]]\n");
        out += &format!("id = {}\n", q(self.id));
        out += &format!("hash = {}\n", q(&format_digest(self.digest)));
        out += &format!("user = {}\n", q(self.user));
        if let Some(n) = self.name {
            out += &format!("name = {}\n", q(n));
        }
        if let Some(e) = self.expires {
            let t = crate::time::rfc3339(e);
            out += &format!("expires = {}\n", q(&format!("{}Z", &t[..19])));
        }
        if !self.scopes.is_empty() {
            out += &format!("scopes = {}\n", list(self.scopes));
        }
        if !self.allowed_ips.is_empty() {
            out += &format!("allowed_ips = {}\n", list(self.allowed_ips));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_prefix_256_bits_and_differ() {
        let (a, id) = generate().expect("key");
        let (b, _) = generate().expect("key");
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert_eq!(id.len(), 8);
        assert_ne!(a, b);
    }

    #[test]
    fn digest_round_trips_through_its_config_form() {
        let d = digest_key("jap_example");
        assert_eq!(parse_digest(&format_digest(&d)), Ok(d));
        assert!(parse_digest("sha256:abc").is_err());
        assert!(parse_digest("md5:00").is_err());
    }
}
