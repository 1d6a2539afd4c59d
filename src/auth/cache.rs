//! Verification cache: a slow check (argon2) is paid once per credential per TTL.
//!
//! Keyed by HMAC-SHA256 of the *whole* credential under a per-process random key, so the
//! cache never holds a password, a changed password is a new entry, and two credentials
//! can only share an entry by an HMAC collision. Only successes are stored; bounded size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;

use super::Principal;

type Digest = [u8; 32];

pub struct CredentialCache {
    key: hmac::Key,
    ttl: Duration,
    max_entries: usize,
    map: Mutex<HashMap<Digest, (Instant, Principal)>>,
}

impl CredentialCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Only fails if the system RNG is broken, in which case no key is safe to use.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("system random number generator failed");
        CredentialCache {
            key,
            ttl,
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, (Instant, Principal)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, digest: &Digest) -> Option<Principal> {
        if !self.enabled() {
            return None;
        }
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(digest) {
            Some((exp, p)) if *exp > now => Some(p.clone()),
            Some(_) => {
                map.remove(digest);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, digest: Digest, principal: Principal) {
        if !self.enabled() {
            return;
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.max_entries {
            map.retain(|_, (exp, _)| *exp > now);
            if map.len() >= self.max_entries {
                // Still full of live entries: start over rather than grow. Costs one
                // re-verification per active credential.
                map.clear();
            }
        }
        map.insert(digest, (now + self.ttl, principal));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
