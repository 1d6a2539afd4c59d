//! Caches of verification results, all bounded and all keyed by a 32-byte digest of the
//! whole credential (never the credential itself).
//!
//! [`TtlMap`] is the bounded map with per-entry expiry every authenticator uses.
//! [`CredentialCache`] keys it by HMAC-SHA256 of the credential under a per-process random
//! key, so a password is never held, a changed password is a new entry, and two credentials
//! can only share an entry by an HMAC collision. Only successes go in there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::{digest, hmac};

use super::Principal;

pub type Digest = [u8; 32];

/// The id a secret (a token, a session id) is stored and listed under: 128 bits of its
/// SHA-256, hex. It identifies the secret without revealing it.
pub fn id_of(secret: &str) -> String {
    sha256(secret.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 of `bytes` (for random tokens and keys, where a fast hash is right).
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// A bounded map from digests to values that expire. When full, expired entries are
/// swept; if it is still full it starts over (costing one re-verification per active
/// credential) rather than grow.
pub struct TtlMap<V> {
    max_entries: usize,
    map: Mutex<HashMap<Digest, (Instant, V)>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl<V: Clone> TtlMap<V> {
    pub fn new(max_entries: usize) -> Self {
        TtlMap {
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, (Instant, V)>> {
        // Every mutation is one insert/remove/retain: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &Digest) -> Option<V> {
        let now = Instant::now();
        let mut map = self.lock();
        let found = match map.get(key) {
            Some((until, v)) if *until > now => Some(v.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// Lookups that found a live entry, and those that did not.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }

    /// Stores `value` for `ttl` (a zero TTL stores nothing).
    pub fn insert(&self, key: Digest, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.max_entries {
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(key, (now + ttl, value));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct CredentialCache {
    key: hmac::Key,
    ttl: Duration,
    map: TtlMap<Principal>,
}

impl CredentialCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Only fails if the system RNG is broken, in which case no key is safe to use.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system random number generator failed");
        CredentialCache {
            key,
            ttl,
            map: TtlMap::new(max_entries),
        }
    }

    /// The cache key for a credential made of several parts (e.g. user and password);
    /// parts are length-prefixed so ("ab","c") and ("a","bc") differ.
    pub fn digest(&self, parts: &[&[u8]]) -> Digest {
        let mut ctx = hmac::Context::with_key(&self.key);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> (u64, u64) {
        self.map.stats()
    }

    pub fn get(&self, digest: &Digest) -> Option<Principal> {
        self.map.get(digest)
    }

    pub fn insert(&self, digest: Digest, principal: Principal) {
        self.map.insert(digest, principal, self.ttl);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthKind;

    #[test]
    fn length_prefix_separates_credentials_that_concatenate_alike() {
        let c = CredentialCache::new(Duration::from_secs(60), 10);
        assert_ne!(c.digest(&[b"ab", b"c"]), c.digest(&[b"a", b"bc"]));
        assert_eq!(c.digest(&[b"a", b"b"]), c.digest(&[b"a", b"b"]));
    }

    #[test]
    fn two_caches_never_share_keys() {
        let a = CredentialCache::new(Duration::from_secs(60), 10);
        let b = CredentialCache::new(Duration::from_secs(60), 10);
        assert_ne!(a.digest(&[b"alice", b"pw"]), b.digest(&[b"alice", b"pw"]));
    }

    #[test]
    fn zero_ttl_disables_and_bound_holds() {
        let off = CredentialCache::new(Duration::ZERO, 10);
        let d = off.digest(&[b"x"]);
        off.insert(d, Principal::for_tests(AuthKind::Basic, "x", &[]));
        assert!(off.get(&d).is_none());
        let c = CredentialCache::new(Duration::from_secs(60), 3);
        for i in 0..10u8 {
            c.insert(c.digest(&[&[i]]), Principal::for_tests(AuthKind::Basic, "x", &[]));
        }
        assert!(c.len() <= 3);
    }

    #[test]
    fn entries_expire() {
        let m: TtlMap<u8> = TtlMap::new(10);
        m.insert(sha256(b"a"), 1, Duration::from_millis(1));
        m.insert(sha256(b"b"), 2, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!((m.get(&sha256(b"a")), m.get(&sha256(b"b"))), (None, Some(2)));
    }
}
