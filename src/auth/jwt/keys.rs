//! Verification keys for one issuer: from a JWKS document (fetched, or a static file) or a
//! static PEM key, cached, refreshed when old, refetched on an unknown `kid` at most once
//! per interval, and kept (stale but valid) when the issuer is briefly unreachable.
//!
//! A key only verifies the algorithms it fits (RFC 8725 §3.1): RSA keys RS*/PS*, EC keys
//! the ES* of their curve, Ed25519 keys EdDSA; a key's own `alg` narrows that to one; a
//! key whose `use` is not `sig` is skipped; symmetric (`oct`) keys are never taken from a
//! JWKS (HS256 needs a configured secret).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::Uri;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::upstream::fetch::Fetcher;

#[derive(Clone)]
pub struct KeyEntry {
    pub kid: Option<String>,
    /// Algorithms this key may verify.
    pub algs: Vec<Algorithm>,
    pub key: DecodingKey,
    /// The key parsed once, for the one algorithm `fast` verifies with it.
    pub parsed: Option<(Algorithm, Arc<aws_lc_rs::signature::ParsedPublicKey>)>,
}

impl KeyEntry {
    pub fn from_jwk(jwk: &Jwk) -> Option<KeyEntry> {
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return None;
        }
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        };
        let algs = match jwk.common.key_algorithm.and_then(|ka| Algorithm::try_from(ka).ok()) {
            Some(a) if family.contains(&a) => vec![a],
            Some(_) => return None,
            None if jwk.common.key_algorithm.is_some() => return None,
            None => family,
        };
        let key = DecodingKey::from_jwk(jwk).ok()?;
        let parsed = super::fast::parsed_key(jwk, &algs).map(|(alg, k)| (alg, Arc::new(k)));
        Some(KeyEntry {
            kid: jwk.common.key_id.clone(),
            algs,
            key,
            parsed,
        })
    }

    /// A static PEM public key (SPKI), for the allowed algorithms it can serve.
    pub fn from_pem(pem: &[u8], allowed: &[Algorithm]) -> Result<KeyEntry, String> {
        let rsa: Vec<Algorithm> = allowed
            .iter()
            .copied()
            .filter(|a| {
                matches!(
                    a,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
            })
            .collect();
        if let Ok(key) = DecodingKey::from_rsa_pem(pem)
            && !rsa.is_empty()
        {
            return Ok(KeyEntry {
                kid: None,
                algs: rsa,
                key,
                parsed: None,
            });
        }
        for alg in [Algorithm::ES256, Algorithm::ES384] {
            if allowed.contains(&alg)
                && let Ok(key) = DecodingKey::from_ec_pem(pem)
            {
                return Ok(KeyEntry {
                    kid: None,
                    algs: vec![alg],
                    key,
                    parsed: None,
                });
            }
        }
        if allowed.contains(&Algorithm::EdDSA)
            && let Ok(key) = DecodingKey::from_ed_pem(pem)
        {
            return Ok(KeyEntry {
                kid: None,
                algs: vec![Algorithm::EdDSA],
                key,
                parsed: None,
            });
        }
        Err("not a PEM public key for any of the allowed algorithms".into())
    }
}

/// Parses a JWKS document into the keys we can use (others are skipped, not fatal).
pub fn parse_jwks(doc: &serde_json::Value) -> Result<Vec<KeyEntry>, String> {
    let set: JwkSet = serde_json::from_value(doc.clone()).map_err(|e| format!("not a JWKS document: {e}"))?;
    Ok(set.keys.iter().filter_map(KeyEntry::from_jwk).collect())
}

struct Snapshot {
    keys: Arc<Vec<KeyEntry>>,
    fetched: Instant,
}

/// Where the keys come from.
pub enum Source {
    Static(Vec<KeyEntry>),
    /// `discovery`: the OpenID configuration URL; else the JWKS URL directly.
    Remote {
        discovery: Option<Uri>,
        jwks_uri: Option<Uri>,
        fetcher: Box<Fetcher>,
    },
}

pub struct KeyStore {
    source: Source,
    current: RwLock<Option<Snapshot>>,
    /// Serialises fetches and remembers when the last one started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    discovered: Mutex<Option<Uri>>,
    min_interval: Duration,
    max_age: Duration,
    failures: AtomicU64,
    fetches: AtomicU64,
}

/// Why no key could be found.
pub enum Lookup {
    Found(Vec<KeyEntry>),
    NoKey,
    Unavailable(String),
}

impl KeyStore {
    pub fn new(source: Source, min_interval: Duration, max_age: Duration) -> KeyStore {
        KeyStore {
            source,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
            discovered: Mutex::new(None),
            min_interval,
            max_age,
            failures: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    /// Fetches that failed, and fetches made (for tests, metrics and readiness).
    pub fn counters(&self) -> (u64, u64) {
        (
            self.failures.load(Ordering::Relaxed),
            self.fetches.load(Ordering::Relaxed),
        )
    }

    /// Keys are at hand (static, or fetched once at least); tries a fetch when not.
    pub async fn ready(&self) -> Result<(), String> {
        match &self.source {
            Source::Static(_) => Ok(()),
            Source::Remote { .. } if self.snapshot().is_some() => Ok(()),
            Source::Remote { .. } => self.refresh().await.map(|_| ()),
        }
    }

    fn snapshot(&self) -> Option<(Arc<Vec<KeyEntry>>, Instant)> {
        let cur = self.current.read().unwrap_or_else(|p| p.into_inner());
        cur.as_ref().map(|s| (s.keys.clone(), s.fetched))
    }

    /// Keys that may verify a token with this `kid` and algorithm.
    pub async fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let keys = match &self.source {
            Source::Static(keys) => return found(keys, kid, alg),
            Source::Remote { .. } => match self.snapshot() {
                Some((keys, fetched)) if fetched.elapsed() < self.max_age => keys,
                // Old or missing: refresh (rate limited); an old set keeps serving if that fails.
                other => match (self.refresh().await, other) {
                    (Ok(keys), _) => keys,
                    (Err(_), Some((keys, _))) => keys,
                    (Err(e), None) => return Lookup::Unavailable(e),
                },
            },
        };
        match found(&keys, kid, alg) {
            Lookup::NoKey => match self.refresh().await {
                // An unknown kid may mean the issuer rotated its keys.
                Ok(fresh) => found(&fresh, kid, alg),
                Err(_) => Lookup::NoKey,
            },
            hit => hit,
        }
    }

    /// Fetches the key set unless another fetch started less than `min_interval` ago
    /// (then the current set is returned, or an error if there is none).
    async fn refresh(&self) -> Result<Arc<Vec<KeyEntry>>, String> {
        let mut last = self.fetching.lock().await;
        if let Some(t) = *last
            && t.elapsed() < self.min_interval
        {
            return self
                .snapshot()
                .map(|(k, _)| k)
                .ok_or_else(|| "signing keys are not available".to_string());
        }
        *last = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
                *cur = Some(Snapshot {
                    keys: keys.clone(),
                    fetched: Instant::now(),
                });
                Ok(keys)
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "fetching signing keys failed");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<KeyEntry>, String> {
        let Source::Remote {
            discovery,
            jwks_uri,
            fetcher,
        } = &self.source
        else {
            return Err("static keys are not fetched".into());
        };
        let uri = match jwks_uri {
            Some(u) => u.clone(),
            None => self.discover(discovery.as_ref(), fetcher).await?,
        };
        parse_jwks(&fetcher.get_json(&uri).await?)
    }

    async fn discover(&self, discovery: Option<&Uri>, fetcher: &Fetcher) -> Result<Uri, String> {
        if let Some(u) = self.discovered.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(u);
        }
        let url = discovery.ok_or("no jwks_uri and no discovery")?;
        let doc = fetcher.get_json(url).await?;
        let uri: Uri = doc
            .get("jwks_uri")
            .and_then(|v| v.as_str())
            .ok_or("the OpenID configuration has no jwks_uri")?
            .parse()
            .map_err(|_| "the OpenID configuration's jwks_uri is not a URL")?;
        *self.discovered.lock().unwrap_or_else(|p| p.into_inner()) = Some(uri.clone());
        Ok(uri)
    }
}

fn found(keys: &[KeyEntry], kid: Option<&str>, alg: Algorithm) -> Lookup {
    let hits: Vec<KeyEntry> = keys
        .iter()
        .filter(|k| k.algs.contains(&alg) && (kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid))
        .cloned()
        .collect();
    if hits.is_empty() {
        Lookup::NoKey
    } else {
        Lookup::Found(hits)
    }
}
