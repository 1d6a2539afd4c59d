//! Caches of verification results, all bounded and all keyed by a 32-byte digest of the
//! whole credential (never the credential itself).
//!
//! [`TtlMap`] is the bounded map with per-entry expiry every authenticator uses.
//! [`CredentialCache`] keys it by SHA-256 of a per-process random salt and the credential,
//! so a password is never held, a changed password is a new entry, and two credentials can
//! only share an entry by a SHA-256 collision. Only successes go in there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

use super::Principal;

pub type Digest = [u8; 32];

/// The id a secret (a token, a session id) is stored and listed under: 128 bits of its
/// SHA-256, hex. It identifies the secret without revealing it.
pub fn id_of(secret: &str) -> String {
    hex(&sha256(secret.as_bytes())[..16])
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    // Hex digits are ASCII: never the empty default.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` in lower-case hex into the front of `out` (two bytes per byte; what does
/// not fit is left out).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// SHA-256 of `bytes` (for random tokens and keys, where a fast hash is right).
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Whether two digests are equal, in time independent of where they differ: `subtle`'s
/// comparison over four 64-bit words, so one optimisation barrier per word instead of one
/// per byte (32) as over the bytes.
pub fn digests_equal(a: &Digest, b: &Digest) -> bool {
    use subtle::ConstantTimeEq;
    let words = |d: &Digest| -> [u64; 4] {
        let mut w = [0u64; 4];
        for (w, chunk) in w.iter_mut().zip(d.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_ne_bytes(b);
        }
        w
    };
    words(a)[..].ct_eq(&words(b)[..]).into()
}

/// Hashes a [`Digest`] key with one keyed multiply of its first sixteen bytes. A digest is
/// already uniform (a SHA-256 of a salted credential, a token or a key), so the standard
/// library's SipHash over all 32 bytes buys little; the per-map random key still keeps
/// anyone from choosing tokens (e.g. for a negative cache) whose digests share buckets.
#[derive(Clone, Copy)]
pub struct DigestState([u64; 2]);

impl Default for DigestState {
    fn default() -> Self {
        let mut seed = [0u8; 16];
        // Only fails if the system RNG is broken; the map still works, merely unkeyed.
        let _ = aws_lc_rs::rand::fill(&mut seed);
        let (a, b) = seed.split_at(8);
        DigestState([word(a), word(b)])
    }
}

impl std::hash::BuildHasher for DigestState {
    type Hasher = DigestHasher;

    fn build_hasher(&self) -> DigestHasher {
        DigestHasher { key: self.0, acc: 0 }
    }
}

pub struct DigestHasher {
    key: [u64; 2],
    acc: u64,
}

/// Up to eight bytes as a little-endian word.
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(w)
}

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.acc
    }

    fn write(&mut self, bytes: &[u8]) {
        // A 32-byte array hashes as its length, then its bytes: both are folded in.
        let x = word(bytes) ^ self.key[0] ^ self.acc;
        let y = word(bytes.get(8..).unwrap_or(&[])) ^ self.key[1];
        let product = u128::from(x) * u128::from(y);
        self.acc = (product as u64) ^ ((product >> 64) as u64);
    }
}

/// A map keyed by digests, hashed with [`DigestState`].
pub type DigestMap<V> = HashMap<Digest, V, DigestState>;

/// Hashes the keys of a set built once from the configuration and only read by requests
/// (the users who own an API key): a keyed folded multiply per eight bytes. Requests
/// cannot add keys, so whatever they look up they cannot lengthen its probe chains, and
/// SipHash's defence against chosen keys buys nothing there while it costs a Basic
/// request ~170 instructions for a short user name.
#[derive(Clone, Copy)]
pub struct ConfiguredState([u64; 2]);

impl Default for ConfiguredState {
    fn default() -> Self {
        let DigestState([a, b]) = DigestState::default();
        ConfiguredState([a, b | 1])
    }
}

impl std::hash::BuildHasher for ConfiguredState {
    type Hasher = ConfiguredHasher;

    fn build_hasher(&self) -> ConfiguredHasher {
        ConfiguredHasher { key: self.0, acc: 0 }
    }
}

pub struct ConfiguredHasher {
    key: [u64; 2],
    acc: u64,
}

impl ConfiguredHasher {
    fn fold(&mut self, x: u64) {
        let product = u128::from(self.acc ^ x ^ self.key[0]) * u128::from(self.key[1]);
        self.acc = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl std::hash::Hasher for ConfiguredHasher {
    fn finish(&self) -> u64 {
        self.acc
    }

    fn write(&mut self, bytes: &[u8]) {
        // The length first, so that zeros at the end of a piece still count.
        self.fold(bytes.len() as u64);
        for chunk in bytes.chunks(8) {
            self.fold(word(chunk));
        }
    }
}

/// A set built from the configuration, hashed with [`ConfiguredState`].
pub type ConfiguredSet<T> = std::collections::HashSet<T, ConfiguredState>;

/// A value a [`TtlMap`] can give each listener thread a copy of that shares nothing with
/// the others' (not even a reference count).
pub trait OwnCopy {
    fn own_copy(&self) -> Self;
}

impl OwnCopy for Principal {
    fn own_copy(&self) -> Self {
        Principal::own_copy(self)
    }
}

impl<T: OwnCopy> OwnCopy for Option<T> {
    fn own_copy(&self) -> Self {
        self.as_ref().map(T::own_copy)
    }
}

impl<T: OwnCopy> OwnCopy for std::sync::Arc<T> {
    fn own_copy(&self) -> Self {
        std::sync::Arc::new(T::own_copy(self))
    }
}

/// A bounded map from digests to values that expire, in one shard per listener thread
/// (each on cache lines of its own): a thread finds, counts and takes its entries in its
/// own shard, so a hit writes no memory another thread writes. A thread that misses looks
/// in the other shards before the caller verifies anything, and takes its own copy of
/// what it finds there: a credential is still verified once, not once per thread.
///
/// Each shard holds up to its share of `max_entries` (rounded up), and a credential used
/// on several threads takes a place in each one's shard. When full, a shard's expired
/// entries are swept; if it is still full it starts over (costing one re-verification per
/// active credential) rather than grow.
pub struct TtlMap<V> {
    shards: Box<[crate::server::ThreadOwned<Shard<V>>]>,
}

struct Shard<V> {
    max_entries: usize,
    map: Mutex<DigestMap<(Instant, V)>>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

impl<V> Shard<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, DigestMap<(Instant, V)>> {
        // Every mutation is one insert/remove/retain: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, key: Digest, until: Instant, value: V, now: Instant) {
        let mut map = self.lock();
        if map.len() >= self.max_entries {
            map.retain(|_, (until, _)| *until > now);
            if map.len() >= self.max_entries {
                map.clear();
            }
        }
        map.insert(key, (until, value));
    }
}

impl<V: Clone + OwnCopy> TtlMap<V> {
    /// `max_entries` shared out among `threads` listener threads.
    pub fn new(max_entries: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let each = max_entries.max(1).div_ceil(threads);
        TtlMap {
            shards: (0..threads)
                .map(|_| {
                    crate::server::ThreadOwned(Shard {
                        max_entries: each,
                        map: Mutex::new(DigestMap::default()),
                        hits: Default::default(),
                        misses: Default::default(),
                    })
                })
                .collect(),
        }
    }

    /// The calling thread's shard (the first for any other thread).
    fn mine(&self) -> &Shard<V> {
        &self.shards[crate::server::worker_index() % self.shards.len()]
    }

    /// The live entry for `key` at `now` (the request's reading of the clock).
    pub fn get(&self, key: &Digest, now: Instant) -> Option<V> {
        let found = self.peek(key, now);
        let mine = self.mine();
        let counter = if found.is_some() { &mine.hits } else { &mine.misses };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// As [`TtlMap::get`], uncounted: for a first look that either answers (and counts
    /// itself a [`TtlMap::hit`]) or is followed by a counted one.
    pub fn peek(&self, key: &Digest, now: Instant) -> Option<V> {
        let mine = self.mine();
        {
            let mut map = mine.lock();
            match map.get(key) {
                Some((until, v)) if *until > now => return Some(v.clone()),
                // Expired here; another thread may have verified it again since.
                Some(_) => {
                    map.remove(key);
                }
                None => {}
            }
        }
        // Found by another thread: this thread takes its own copy, until the same moment.
        let (until, theirs) = self
            .shards
            .iter()
            .filter(|s| !std::ptr::eq::<Shard<V>>(&***s, mine))
            .find_map(|s| match s.lock().get(key) {
                Some((until, v)) if *until > now => Some((*until, v.own_copy())),
                _ => None,
            })?;
        mine.insert(*key, until, theirs.clone(), now);
        Some(theirs)
    }

    /// Counts a hit found by [`TtlMap::peek`].
    pub fn hit(&self) {
        self.mine().hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a miss found by [`TtlMap::peek`].
    pub fn miss(&self) {
        self.mine().misses.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Lookups that found a live entry, and those that did not.
    pub fn stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.shards.iter().fold((0, 0), |(h, m), s| {
            (h + s.hits.load(Relaxed), m + s.misses.load(Relaxed))
        })
    }

    /// Stores `value` for `ttl` (a zero TTL stores nothing), in the calling thread's shard.
    pub fn insert(&self, key: Digest, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        self.mine().insert(key, now + ttl, value, now);
    }

    /// Entries in every shard (one credential found by several threads counts once for
    /// each).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bytes of random salt in front of every credential a [`CredentialCache`] digests: with
/// a short credential the whole message fits one SHA-256 block.
const SALT_BYTES: usize = 16;

pub struct CredentialCache {
    salt: [u8; SALT_BYTES],
    ttl: Duration,
    map: TtlMap<Principal>,
}

impl CredentialCache {
    /// `threads`: the listener threads it is shared out among ([`TtlMap`]).
    pub fn new(ttl: Duration, max_entries: usize, threads: usize) -> Self {
        let mut salt = [0u8; SALT_BYTES];
        // Only fails if the system RNG is broken, in which case no salt is safe to use.
        aws_lc_rs::rand::fill(&mut salt).expect("system random number generator failed");
        CredentialCache {
            salt,
            ttl,
            map: TtlMap::new(max_entries, threads),
        }
    }

    /// The cache key for a credential made of several parts (e.g. user and password);
    /// parts are length-prefixed so ("ab","c") and ("a","bc") differ.
    ///
    /// A salted SHA-256 rather than an HMAC: the digest is a map key inside this process,
    /// never shown to anyone, so no one can extend it or check a guess against it; what
    /// counts is that it does not collide and that the map alone, without the salt, does
    /// not let anyone test guesses offline. It costs one SHA-256 block for a user name
    /// and password up to about 40 bytes together; an HMAC costs two.
    ///
    /// The salt and the parts go to SHA-256 in one call from a buffer on the stack when
    /// they fit in it (a user name and password nearly always do): a hashing context of
    /// the library costs an allocation and a release of its own, and a call per piece.
    pub fn digest(&self, parts: &[&[u8]]) -> Digest {
        const AT_ONCE: usize = 256;
        let len = SALT_BYTES + parts.iter().map(|p| 4 + p.len()).sum::<usize>();
        if len <= AT_ONCE {
            let mut buf = [0u8; AT_ONCE];
            buf[..SALT_BYTES].copy_from_slice(&self.salt);
            let mut at = SALT_BYTES;
            for p in parts {
                buf[at..at + 4].copy_from_slice(&(p.len() as u32).to_be_bytes());
                buf[at + 4..at + 4 + p.len()].copy_from_slice(p);
                at += 4 + p.len();
            }
            return sha256(&buf[..at]);
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.salt);
        for p in parts {
            // A header value is far below 4 GiB: the prefix is exact.
            ctx.update(&(p.len() as u32).to_be_bytes());
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// Hits and misses so far.
    pub fn stats(&self) -> (u64, u64) {
        self.map.stats()
    }

    pub fn get(&self, digest: &Digest, now: Instant) -> Option<Principal> {
        self.map.get(digest, now)
    }

    /// See [`TtlMap::peek`].
    pub fn peek(&self, digest: &Digest, now: Instant) -> Option<Principal> {
        self.map.peek(digest, now)
    }

    /// See [`TtlMap::hit`].
    pub fn hit(&self) {
        self.map.hit();
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
    fn digests_are_equal_only_when_every_byte_is() {
        let a = sha256(b"jap_key");
        assert!(digests_equal(&a, &a));
        assert!(digests_equal(&a, &sha256(b"jap_key")));
        // A difference in any byte, and in any bit of it, is seen: the first and last
        // byte of each 64-bit word included.
        for i in 0..32 {
            for bit in [0x01u8, 0x80] {
                let mut b = a;
                b[i] ^= bit;
                assert!(!digests_equal(&a, &b), "byte {i}, bit {bit:#x}");
            }
        }
        assert!(!digests_equal(&a, &sha256(b"jap_kez")));
    }

    #[test]
    fn ids_are_the_first_half_of_the_sha256_in_lower_case_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(id_of("abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    #[test]
    fn length_prefix_separates_credentials_that_concatenate_alike() {
        let c = CredentialCache::new(Duration::from_secs(60), 10, 1);
        assert_ne!(c.digest(&[b"ab", b"c"]), c.digest(&[b"a", b"bc"]));
        assert_eq!(c.digest(&[b"a", b"b"]), c.digest(&[b"a", b"b"]));
    }

    #[test]
    fn a_credential_digest_is_sha256_of_the_salt_and_each_part_after_its_length() {
        let c = CredentialCache::new(Duration::from_secs(60), 10, 1);
        // Both ways in: on the stack (up to 256 bytes in all: 16 + 4 + 122 + 4 + 110) and
        // piece by piece.
        for (user, pw) in [(1, 0), (5, 8), (122, 110), (123, 110), (300, 2000)] {
            let (user, pw) = (vec![b'u'; user], vec![b'p'; pw]);
            let mut whole = c.salt.to_vec();
            for part in [&user, &pw] {
                whole.extend_from_slice(&(part.len() as u32).to_be_bytes());
                whole.extend_from_slice(part);
            }
            let expected: Digest = digest::digest(&digest::SHA256, &whole)
                .as_ref()
                .try_into()
                .expect("32 bytes");
            assert_eq!(c.digest(&[&user, &pw]), expected, "{} + {} bytes", user.len(), pw.len());
        }
    }

    #[test]
    fn two_caches_never_share_keys() {
        let a = CredentialCache::new(Duration::from_secs(60), 10, 1);
        let b = CredentialCache::new(Duration::from_secs(60), 10, 1);
        assert_ne!(a.digest(&[b"alice", b"pw"]), b.digest(&[b"alice", b"pw"]));
    }

    #[test]
    fn zero_ttl_disables_and_bound_holds() {
        let off = CredentialCache::new(Duration::ZERO, 10, 1);
        let d = off.digest(&[b"x"]);
        off.insert(d, Principal::for_tests(AuthKind::Basic, "x", &[]));
        assert!(off.get(&d, Instant::now()).is_none());
        let c = CredentialCache::new(Duration::from_secs(60), 3, 1);
        for i in 0..10u8 {
            c.insert(c.digest(&[&[i]]), Principal::for_tests(AuthKind::Basic, "x", &[]));
        }
        assert!(c.len() <= 3);
    }

    #[test]
    fn configured_sets_find_every_name_and_spread_them() {
        use std::hash::BuildHasher;
        let names: Vec<String> = (0..2000).map(|i| format!("user{i:04}")).collect();
        let set: ConfiguredSet<String> = names.iter().cloned().collect();
        for n in &names {
            assert!(set.contains(n.as_str()), "{n}");
        }
        for absent in ["", "user", "user2000", "User0001", "user0001\0"] {
            assert!(!set.contains(absent), "{absent:?}");
        }
        // Names that differ in one byte anywhere (the last of a word included) fall in
        // different places: the low bits that pick a bucket differ for nearly all.
        let state = ConfiguredState::default();
        let buckets: std::collections::HashSet<u64> = names.iter().map(|n| state.hash_one(n) & 0xfff).collect();
        assert!(buckets.len() > 1400, "2000 names in {} of 4096 buckets", buckets.len());
    }

    #[test]
    fn digest_maps_are_keyed_per_map_and_spread_digests() {
        use std::hash::BuildHasher;
        let (a, b) = (DigestState::default(), DigestState::default());
        let d = sha256(b"token");
        assert_ne!(a.hash_one(d), b.hash_one(d), "each map has its own key");
        let buckets: std::collections::HashSet<u64> = (0..1000u32)
            .map(|i| a.hash_one(sha256(&i.to_be_bytes())) & 1023)
            .collect();
        assert!(buckets.len() > 500, "{} of 1024 buckets used", buckets.len());
        let mut m: DigestMap<u32> = DigestMap::default();
        m.insert(d, 7);
        assert_eq!(m.get(&d), Some(&7));
        assert_eq!(m.get(&sha256(b"other")), None);
    }

    impl OwnCopy for u8 {
        fn own_copy(&self) -> Self {
            *self
        }
    }

    /// Runs `f` on a thread that counts as listener thread `i`, and gives its result.
    fn on_thread<V, R>(m: &std::sync::Arc<TtlMap<V>>, i: usize, f: impl FnOnce(&TtlMap<V>) -> R + Send + 'static) -> R
    where
        V: Send + Sync + 'static,
        R: Send + 'static,
    {
        let m = m.clone();
        std::thread::spawn(move || {
            crate::server::set_worker_index(i);
            f(&m)
        })
        .join()
        .expect("thread")
    }

    #[test]
    fn each_thread_keeps_its_own_copy_and_a_credential_is_verified_once() {
        use std::sync::Arc;
        let m: Arc<TtlMap<Principal>> = Arc::new(TtlMap::new(10, 2));
        let key = sha256(b"token");
        let first = Principal::for_tests(AuthKind::Jwt, "alice", &["devs"]);
        let stored = first.clone();
        on_thread(&m, 0, move |m| m.insert(key, stored, Duration::from_secs(60)));
        // The other thread finds it (nothing to verify again) as a copy of its own...
        let theirs = on_thread(&m, 1, move |m| m.get(&key, Instant::now())).expect("found by the other thread");
        assert_eq!(theirs, first);
        assert!(!Arc::ptr_eq(&theirs.0, &first.0), "a copy, not the same count");
        // ...which it keeps: both shards hold the entry now.
        assert_eq!(m.len(), 2);
        let again = on_thread(&m, 1, move |m| m.get(&key, Instant::now())).expect("kept");
        assert!(Arc::ptr_eq(&again.0, &theirs.0));
        let mine = on_thread(&m, 0, move |m| m.get(&key, Instant::now())).expect("still there");
        assert!(Arc::ptr_eq(&mine.0, &first.0));
        assert_eq!(m.stats(), (3, 0), "hits counted on both threads");
    }

    #[test]
    fn an_entry_expired_everywhere_answers_nowhere_and_a_fresh_one_is_found_by_all() {
        let m: std::sync::Arc<TtlMap<u8>> = std::sync::Arc::new(TtlMap::new(10, 3));
        let key = sha256(b"token");
        on_thread(&m, 0, move |m| m.insert(key, 1, Duration::from_secs(60)));
        assert_eq!(on_thread(&m, 1, move |m| m.get(&key, Instant::now())), Some(1));
        // Past its lifetime, neither the thread that verified it nor another is answered.
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(on_thread(&m, 2, move |m| m.get(&key, later)), None);
        assert_eq!(on_thread(&m, 1, move |m| m.get(&key, later)), None);
        // Verified again on one thread: a thread whose own copy expired finds the new one.
        on_thread(&m, 0, move |m| m.insert(key, 2, Duration::from_secs(600)));
        assert_eq!(on_thread(&m, 1, move |m| m.get(&key, later)), Some(2));
        assert_eq!(m.stats(), (2, 2));
    }

    #[test]
    fn each_thread_holds_its_share_of_the_bound() {
        let m: TtlMap<u8> = TtlMap::new(10, 4);
        // Three per shard: this thread (not a listener) uses the first, which starts over
        // when full.
        for i in 0..3u8 {
            m.insert(sha256(&[i]), i, Duration::from_secs(60));
        }
        assert_eq!(m.len(), 3);
        m.insert(sha256(b"fourth"), 4, Duration::from_secs(60));
        assert_eq!(m.len(), 1);
        assert_eq!(m.get(&sha256(b"fourth"), Instant::now()), Some(4));
    }

    #[test]
    fn entries_expire() {
        let m: TtlMap<u8> = TtlMap::new(10, 1);
        m.insert(sha256(b"a"), 1, Duration::from_millis(1));
        m.insert(sha256(b"b"), 2, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        assert_eq!((m.get(&sha256(b"a"), now), m.get(&sha256(b"b"), now)), (None, Some(2)));
        // Read at a moment past its lifetime, an entry is gone for good.
        assert_eq!(m.get(&sha256(b"b"), now + Duration::from_secs(61)), None);
        assert_eq!(m.get(&sha256(b"b"), now), None);
    }
}
