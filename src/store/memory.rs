//! In-memory `StateStore`: a mutex-guarded map with per-entry expiry, an injectable clock
//! for tests, and a hard bound on entries (expired ones are swept first, then the entries
//! closest to expiry are dropped: those any caller can make first, then those only a
//! proven caller makes, lock-out counters above zero last) so a flood of unique keys
//! cannot grow it without bound, nor wipe out a lockout, nor push out a session or a used
//! nonce while the flood's own entries are a tenth of the store's.
//! It counts the entries that may lock a caller out, so that a request can learn without a
//! lookup that nobody is locked out ([`StateStore::may_hold_lockouts`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    CAPTCHA_PREFIX, Fullness, LOCKOUT_PREFIX, NONCE_PREFIX, StateStore, StoreError, TOTP_USED_PREFIX, Throttle,
    is_anonymous_bucket,
};

/// Monotonic time as seen by the store.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
}

/// Real monotonic time since the clock was made.
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// A clock tests move by hand.
#[derive(Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::SeqCst))
    }
}

enum Value {
    Bytes(Bytes),
    Counter(i64),
}

struct Entry {
    value: Value,
    expires: Duration,
}

/// Whether the entry at `key` may lock a caller out: under [`LOCKOUT_PREFIX`] and not a
/// counter at zero or below (a counter a success has taken back). A value written with
/// `put` there counts, whatever it holds: the count may be too high, never too low.
fn may_lock(key: &str, entry: &Entry) -> bool {
    key.starts_with(LOCKOUT_PREFIX) && !matches!(entry.value, Value::Counter(n) if n <= 0)
}

/// Which entries a full store drops first: the lowest rank, and within a rank those
/// closest to expiry. What any caller can make at no cost goes before what only a proven
/// caller makes, so that a flood of the first cannot push out the second while its own
/// entries are left to drop.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Rank {
    /// A lock-out counter at zero or below (a refused guess under a new name leaves one,
    /// a success takes a failure back to one): it reads as no counter at all, so dropping
    /// it changes nothing but when the next failure's window starts.
    Zero,
    /// Made by any caller without proving who they are: an anonymous caller's rate bucket
    /// (one per address), Jira's demand for a CAPTCHA (which Jira enforces itself).
    Unproven,
    /// Made only for a caller who proved who they are: a session, an OAuth 1.0a token, a
    /// user's rate bucket, a cached group list, a login count.
    Proven,
    /// A used nonce or TOTP code, also made only for a proven caller: dropped before its
    /// expiry it would let its request or code be replayed.
    ReplayGuard,
    /// A lock-out counter above zero ([`may_lock`]): each cost a password check.
    Lockout,
}

impl Rank {
    const ALL: [Rank; 5] = [
        Rank::Zero,
        Rank::Unproven,
        Rank::Proven,
        Rank::ReplayGuard,
        Rank::Lockout,
    ];

    /// The rank's name in the `jap_state_dropped_total` metric.
    fn name(self) -> &'static str {
        match self {
            Rank::Zero => "zero_counter",
            Rank::Unproven => "unproven",
            Rank::Proven => "proven",
            Rank::ReplayGuard => "replay_guard",
            Rank::Lockout => "lockout",
        }
    }
}

fn rank(key: &str, entry: &Entry) -> Rank {
    if key.starts_with(LOCKOUT_PREFIX) {
        return if may_lock(key, entry) {
            Rank::Lockout
        } else {
            Rank::Zero
        };
    }
    if key.starts_with(CAPTCHA_PREFIX) || is_anonymous_bucket(key) {
        Rank::Unproven
    } else if key.starts_with(NONCE_PREFIX) || key.starts_with(TOTP_USED_PREFIX) {
        Rank::ReplayGuard
    } else {
        Rank::Proven
    }
}

/// A reading of the store's clock as a whole number (nanoseconds), for an atomic.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Entry {
    /// The value as `get` answers it (a counter as its decimal text, as Redis has it).
    fn bytes(&self) -> Bytes {
        match &self.value {
            Value::Bytes(b) => b.clone(),
            Value::Counter(n) => counter_text(*n),
        }
    }
}

/// A counter's decimal text. The lockout counters read on every request are nearly
/// always a single digit (zero once a success has taken its attempt back): those are
/// answered without an allocation.
fn counter_text(n: i64) -> Bytes {
    const DIGITS: &[u8; 10] = b"0123456789";
    match usize::try_from(n) {
        Ok(d) if d < DIGITS.len() => Bytes::from_static(&DIGITS[d..d + 1]),
        _ => Bytes::from(n.to_string()),
    }
}

/// Which writes [`MemoryStore::write`] makes.
#[derive(Clone, Copy)]
enum When {
    Always,
    /// Only when the key is absent or expired.
    Absent,
    /// Only when the key is live.
    Present,
}

pub struct MemoryStore {
    map: Mutex<HashMap<String, Entry>>,
    clock: std::sync::Arc<dyn Clock>,
    max_entries: usize,
    /// The entries in `map` for which [`may_lock`] holds, live or expired. Changed only by
    /// [`MemoryStore::insert`] and [`MemoryStore::removed`], under `map`'s lock, raised
    /// before such an entry goes in and lowered as it leaves: never below the true count
    /// once the lock is released.
    lockouts: AtomicUsize,
    /// The latest expiry (store clock, nanoseconds) of any entry ever counted in
    /// `lockouts`: once the clock has passed it, every such entry has expired.
    lockouts_until: AtomicU64,
    /// Entries dropped to make room, by [`Rank`] (its place in [`Rank::ALL`]).
    dropped: [AtomicU64; 5],
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        Self::with_clock(max_entries, std::sync::Arc::new(SystemClock::default()))
    }

    pub fn with_clock(max_entries: usize, clock: std::sync::Arc<dyn Clock>) -> Self {
        MemoryStore {
            map: Mutex::new(HashMap::new()),
            clock,
            max_entries: max_entries.max(1),
            lockouts: AtomicUsize::new(0),
            lockouts_until: AtomicU64::new(0),
            dropped: Default::default(),
        }
    }

    /// Every write to the map goes through here (with `map`'s lock held), so the count
    /// of entries that may lock a caller out stays whole.
    fn insert(&self, map: &mut HashMap<String, Entry>, key: &str, entry: Entry) {
        if may_lock(key, &entry) {
            self.lockouts_until.fetch_max(nanos(entry.expires), Ordering::SeqCst);
            self.lockouts.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(old) = map.insert(key.to_owned(), entry) {
            self.removed(key, &old);
        }
    }

    /// Every entry that leaves the map (overwritten, deleted, swept, dropped for room)
    /// is told here, after it has left.
    fn removed(&self, key: &str, entry: &Entry) {
        if may_lock(key, entry) {
            self.lockouts.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Keeps the entries for which `keep` holds, telling [`MemoryStore::removed`] of the
    /// others.
    fn retain(&self, map: &mut HashMap<String, Entry>, mut keep: impl FnMut(&str, &Entry) -> bool) {
        map.retain(|key, entry| {
            let kept = keep(key, entry);
            if !kept {
                self.removed(key, entry);
            }
            kept
        });
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries that [`may_lock`], counted one by one (tests hold the running count
    /// to it).
    #[cfg(test)]
    fn lockouts_counted_anew(&self) -> (usize, usize) {
        let map = self.lock();
        let anew = map.iter().filter(|(k, e)| may_lock(k, e)).count();
        (anew, self.lockouts.load(Ordering::SeqCst))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (every
        // mutation is a single insert/remove), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more entry: sweep expired, then drop the tenth of the entries
    /// that lock no one out that comes first in ([`Rank`], expiry) order: those any
    /// caller can make go before those only a proven caller makes, so a flood of the
    /// first (a refused guess leaves a counter at zero behind, a new address a rate
    /// bucket) drops no session, token or nonce while its own entries are a tenth of
    /// those. Lock-out counters above zero go only when nothing else is left: otherwise
    /// such a flood would drop a user's failures, and with them the lockout. Making
    /// counters above zero costs a password check each.
    fn make_room(&self, map: &mut HashMap<String, Entry>, now: Duration) {
        if map.len() < self.max_entries {
            return;
        }
        self.retain(map, |_, e| e.expires > now);
        if map.len() < self.max_entries {
            return;
        }
        let mut order: Vec<(Rank, Duration)> = map
            .iter()
            .map(|(k, e)| (rank(k, e), e.expires))
            .filter(|(r, _)| *r < Rank::Lockout)
            .collect();
        let spare_lockouts = !order.is_empty();
        if !spare_lockouts {
            order = map.values().map(|e| (Rank::Lockout, e.expires)).collect();
        }
        let cut = (order.len() / 10).max(1);
        let (_, nth, _) = order.select_nth_unstable(cut - 1);
        let threshold = *nth;
        // While any is spared, a counter above zero ranks above the threshold.
        self.retain(map, |k, e| {
            let r = rank(k, e);
            let kept = (r, e.expires) > threshold;
            if !kept {
                self.dropped[r as usize].fetch_add(1, Ordering::Relaxed);
            }
            kept
        });
    }

    /// Stores `value` at `key` for `ttl` when the key's state allows (`when`); true when
    /// stored.
    fn write(&self, key: &str, value: Bytes, ttl: Duration, when: When) -> bool {
        let now = self.clock.now();
        let mut map = self.lock();
        // One lookup: whether the key is there at all, and whether it is live.
        let (present, live) = map.get(key).map_or((false, false), |e| (true, e.expires > now));
        match when {
            When::Absent if live => return false,
            When::Present if !live => return false,
            _ => {}
        }
        if !present {
            self.make_room(&mut map, now);
        }
        self.insert(
            &mut map,
            key,
            Entry {
                value: Value::Bytes(value),
                expires: now + ttl,
            },
        );
        true
    }

    fn live<'a>(map: &'a HashMap<String, Entry>, key: &str, now: Duration) -> Option<&'a Entry> {
        map.get(key).filter(|e| e.expires > now)
    }

    fn read(&self, key: &str) -> Option<Bytes> {
        let now = self.clock.now();
        Self::live(&self.lock(), key, now).map(Entry::bytes)
    }

    fn read_many(&self, keys: &[&str]) -> Vec<Option<Bytes>> {
        let now = self.clock.now();
        let map = self.lock();
        keys.iter()
            .map(|key| Self::live(&map, key, now).map(Entry::bytes))
            .collect()
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.read(key))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>, StoreError> {
        Ok(self.read_many(keys))
    }

    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        Some(Ok(self.read(key)))
    }

    fn answers_now(&self) -> bool {
        true
    }

    fn get_many_now(&self, keys: &[&str]) -> Option<Result<Vec<Option<Bytes>>, StoreError>> {
        Some(Ok(self.read_many(keys)))
    }

    /// The entries now, the bound, and what [`MemoryStore::make_room`] dropped by rank.
    fn fullness(&self) -> Option<Fullness> {
        Some(Fullness {
            entries: self.len(),
            max_entries: self.max_entries,
            dropped: Rank::ALL
                .iter()
                .map(|r| (r.name(), self.dropped[*r as usize].load(Ordering::Relaxed)))
                .collect(),
        })
    }

    /// False while no entry that may lock a caller out is in the map: one atomic read.
    /// When there are some and the clock has passed the latest expiry among them, they
    /// are all expired: they are swept, and the answer is false again.
    fn may_hold_lockouts(&self) -> bool {
        if self.lockouts.load(Ordering::SeqCst) == 0 {
            return false;
        }
        let now = self.clock.now();
        if nanos(now) < self.lockouts_until.load(Ordering::SeqCst) {
            return true;
        }
        let mut map = self.lock();
        // Another request may have swept meanwhile, or a failure been counted: asked
        // again under the lock, so the map is swept once, not by every request waiting.
        if self.lockouts.load(Ordering::SeqCst) == 0 {
            return false;
        }
        if nanos(now) < self.lockouts_until.load(Ordering::SeqCst) {
            return true;
        }
        self.retain(&mut map, |_, e| e.expires > now);
        self.lockouts.load(Ordering::SeqCst) > 0
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.write(key, value, ttl, When::Always);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.write(key, value, ttl, When::Absent))
    }

    async fn replace(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        Ok(self.write(key, value, ttl, When::Present))
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        let now = self.clock.now();
        let mut map = self.lock();
        let current = match Self::live(&map, key, now) {
            Some(Entry {
                value: Value::Counter(n),
                expires,
            }) => Some((*n, *expires)),
            Some(Entry {
                value: Value::Bytes(b),
                expires,
            }) => {
                let n = std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok());
                match n {
                    Some(n) => Some((n, *expires)),
                    None => return Err(StoreError::Unavailable(format!("{key} is not a counter"))),
                }
            }
            None => None,
        };
        let (value, expires) = match current {
            Some((n, exp)) => (n.saturating_add(by), exp),
            None => {
                self.make_room(&mut map, now);
                (by, now + ttl)
            }
        };
        self.insert(
            &mut map,
            key,
            Entry {
                value: Value::Counter(value),
                expires,
            },
        );
        Ok(value)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = self.clock.now();
        let map = self.lock();
        Ok(Self::live(&map, key, now).map(|e| e.expires - now))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut map = self.lock();
        if let Some(old) = map.remove(key) {
            self.removed(key, &old);
        }
        Ok(())
    }

    async fn throttle(&self, key: &str, interval: Duration, burst: u32) -> Result<Throttle, StoreError> {
        let now = self.clock.now();
        let now_us = now.as_micros() as i64;
        let mut map = self.lock();
        let stored = match Self::live(&map, key, now) {
            Some(Entry {
                value: Value::Counter(tat),
                ..
            }) => Some(*tat),
            _ => None,
        };
        let (store, answer) = super::gcra(stored, now_us, interval, burst);
        if let Some((tat, ttl)) = store {
            if stored.is_none() {
                self.make_room(&mut map, now);
            }
            self.insert(
                &mut map,
                key,
                Entry {
                    value: Value::Counter(tat),
                    expires: now + ttl,
                },
            );
        }
        Ok(answer)
    }

    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>, StoreError> {
        let now = self.clock.now();
        let map = self.lock();
        let mut out: Vec<(String, Bytes)> = map
            .iter()
            .filter(|(k, e)| k.starts_with(prefix) && e.expires > now)
            .map(|(k, e)| (k.clone(), e.bytes()))
            .collect();
        drop(map);
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.truncate(limit);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn store(max: usize) -> (MemoryStore, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        (MemoryStore::with_clock(max, clock.clone()), clock)
    }

    #[tokio::test]
    async fn counters_read_as_their_decimal_text() {
        let (s, _) = store(100);
        let ttl = Duration::from_secs(60);
        for (step, total) in [
            (0, 0),
            (3, 3),
            (6, 9),
            (1, 10),
            (-12, -2),
            (i64::MAX - 10, i64::MAX - 12),
        ] {
            assert_eq!(s.incr("c", step, ttl).await.expect("incr"), total);
            let read = s.get("c").await.expect("get").expect("present");
            assert_eq!(read, Bytes::from(total.to_string()), "{total}");
            let many = s.get_many_now(&["c"]).expect("at once").expect("read");
            assert_eq!(many, vec![Some(read)]);
        }
    }

    #[tokio::test]
    async fn values_expire_with_the_clock() {
        let (s, clock) = store(100);
        s.put("k", Bytes::from_static(b"v"), Duration::from_secs(10))
            .await
            .expect("put");
        assert_eq!(s.get("k").await.expect("get").as_deref(), Some(&b"v"[..]));
        assert_eq!(s.ttl("k").await.expect("ttl"), Some(Duration::from_secs(10)));
        clock.advance(Duration::from_secs(10));
        assert_eq!(s.get("k").await.expect("get"), None);
    }

    #[tokio::test]
    async fn put_if_absent_only_once_until_expiry() {
        let (s, clock) = store(100);
        let ttl = Duration::from_secs(5);
        assert!(s.put_if_absent("n", Bytes::new(), ttl).await.expect("1"));
        assert!(!s.put_if_absent("n", Bytes::new(), ttl).await.expect("2"));
        clock.advance(ttl);
        assert!(s.put_if_absent("n", Bytes::new(), ttl).await.expect("3"));
    }

    #[tokio::test]
    async fn counters_keep_a_fixed_window() {
        let (s, clock) = store(100);
        let w = Duration::from_secs(60);
        assert_eq!(s.incr("c", 1, w).await.expect("incr"), 1);
        clock.advance(Duration::from_secs(59));
        assert_eq!(s.incr("c", 1, w).await.expect("incr"), 2);
        clock.advance(Duration::from_secs(1));
        assert_eq!(s.incr("c", 1, w).await.expect("incr"), 1, "window restarted");
        s.delete("c").await.expect("delete");
        assert_eq!(s.get("c").await.expect("get"), None);
    }

    #[tokio::test]
    async fn a_bucket_gives_its_burst_then_one_token_per_interval() {
        let (s, clock) = store(100);
        let (interval, burst) = (Duration::from_millis(500), 3);
        for left in [2, 1, 0] {
            let t = s.throttle("b", interval, burst).await.expect("throttle");
            assert!(t.allowed);
            assert_eq!(t.remaining, left);
        }
        let refused = s.throttle("b", interval, burst).await.expect("throttle");
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, interval);
        clock.advance(Duration::from_millis(499));
        assert!(
            !s.throttle("b", interval, burst).await.expect("throttle").allowed,
            "a refusal takes nothing"
        );
        clock.advance(Duration::from_millis(1));
        assert!(s.throttle("b", interval, burst).await.expect("throttle").allowed);
        // An idle bucket fills up to its burst, no further.
        clock.advance(Duration::from_secs(60));
        let t = s.throttle("b", interval, burst).await.expect("throttle");
        assert_eq!((t.allowed, t.remaining), (true, 2));
    }

    #[tokio::test]
    async fn lockouts_are_known_to_be_absent_until_a_counter_is_above_zero() {
        let (s, clock) = store(100);
        let w = Duration::from_secs(60);
        assert!(!s.may_hold_lockouts(), "an empty store holds none");
        // Counters and values elsewhere do not count.
        s.incr("logins:alice", 5, w).await.expect("incr");
        s.put("session:x", Bytes::from_static(b"1"), w).await.expect("put");
        s.throttle("rate:alice", Duration::from_millis(10), 3)
            .await
            .expect("throttle");
        assert!(!s.may_hold_lockouts());
        // A failure counted; taken back by a success.
        assert_eq!(s.incr("lockout:basic-addr:10.0.0.7", 1, w).await.expect("incr"), 1);
        assert!(s.may_hold_lockouts());
        assert_eq!(s.incr("lockout:basic-addr:10.0.0.7", -1, w).await.expect("incr"), 0);
        assert!(!s.may_hold_lockouts(), "a counter at zero locks no one out");
        // A failure cleared by a delete.
        s.incr("lockout:basic:alice", 1, w).await.expect("incr");
        s.incr("lockout:basic:alice", 1, w).await.expect("incr");
        assert!(s.may_hold_lockouts());
        s.delete("lockout:basic:alice").await.expect("delete");
        assert!(!s.may_hold_lockouts());
        // A value put there counts, whatever it holds.
        s.put("lockout:basic:bob", Bytes::from_static(b"0"), w)
            .await
            .expect("put");
        assert!(s.may_hold_lockouts());
        s.delete("lockout:basic:bob").await.expect("delete");
        assert!(!s.may_hold_lockouts());
        // A failure that nobody takes back holds until its window has passed, then is swept.
        s.put("session:long", Bytes::from_static(b"1"), Duration::from_secs(3600))
            .await
            .expect("put");
        s.incr("lockout:basic:carol", 1, w).await.expect("incr");
        clock.advance(Duration::from_secs(59));
        assert!(s.may_hold_lockouts());
        clock.advance(Duration::from_secs(1));
        assert!(!s.may_hold_lockouts(), "expired at the end of its window");
        assert_eq!(s.len(), 1, "and swept with every other expired entry");
        assert!(s.get("session:long").await.expect("get").is_some());
        // An expired counter counted again from zero.
        s.incr("lockout:basic:carol", 1, w).await.expect("incr");
        assert!(s.may_hold_lockouts());
    }

    #[tokio::test]
    async fn a_flood_of_keys_drops_other_entries_before_a_lockout() {
        let (s, _clock) = store(10);
        let w = Duration::from_secs(900);
        // Alice's failures, closest to expiry of all, and a session.
        s.incr("lockout:basic:alice", 3, Duration::from_secs(60))
            .await
            .expect("incr");
        s.put("session:x", Bytes::from_static(b"1"), Duration::from_secs(120))
            .await
            .expect("put");
        // A flood of refused attempts under new names: counters left at zero.
        for i in 0..100 {
            refused_guess(&s, i, w).await;
        }
        assert!(s.len() <= 10, "store grew to {}", s.len());
        assert_eq!(
            s.get("lockout:basic:alice").await.expect("get").as_deref(),
            Some(&b"3"[..]),
            "kept while anything else could go"
        );
        assert_eq!(
            s.get("session:x").await.expect("get").as_deref(),
            Some(&b"1"[..]),
            "a proven caller's entry is kept while the flood's own can go"
        );
        assert!(s.may_hold_lockouts());
    }

    #[test]
    fn every_kind_of_entry_has_its_rank() {
        let counter = |n| Entry {
            value: Value::Counter(n),
            expires: Duration::ZERO,
        };
        let bytes = Entry {
            value: Value::Bytes(Bytes::from_static(b"1")),
            expires: Duration::ZERO,
        };
        let ip = std::net::IpAddr::from([10, 0, 0, 7]);
        assert_eq!(rank("lockout:basic:alice", &counter(0)), Rank::Zero);
        assert_eq!(rank("lockout:basic-addr:10.0.0.7", &counter(-1)), Rank::Zero);
        assert_eq!(rank("lockout:basic:alice", &counter(2)), Rank::Lockout);
        assert_eq!(rank("lockout:totp:alice", &bytes), Rank::Lockout);
        assert_eq!(
            rank(&super::super::rate_key("r", None, ip), &counter(9)),
            Rank::Unproven
        );
        // The rule's name is percent-encoded: a colon in it cannot pass a user's bucket
        // off as an address's, nor the other way round.
        assert_eq!(
            rank(&super::super::rate_key("a:ip:b", Some("Alice"), ip), &counter(9)),
            Rank::Proven
        );
        assert_eq!(
            rank(&super::super::rate_key("a:u:b", None, ip), &counter(9)),
            Rank::Unproven
        );
        assert_eq!(rank("captcha:basic:bob", &bytes), Rank::Unproven);
        for key in ["session:x", "oauth1:at:x", "jira-groups:alice", "logins:alice"] {
            assert_eq!(rank(key, &bytes), Rank::Proven, "{key}");
        }
        for key in ["oauth1:nonce:c::1:n", "totp-used:alice:7"] {
            assert_eq!(rank(key, &bytes), Rank::ReplayGuard, "{key}");
        }
    }

    #[tokio::test]
    async fn counters_at_zero_go_before_anything_else_and_used_nonces_after_sessions() {
        let (s, _clock) = store(10);
        let w = Duration::from_secs(900);
        // A nonce and a session closest to expiry of all, an address's bucket next.
        s.put("oauth1:nonce:c::1:n", Bytes::from_static(b"1"), Duration::from_secs(10))
            .await
            .expect("put");
        s.put("session:x", Bytes::from_static(b"1"), Duration::from_secs(20))
            .await
            .expect("put");
        s.put("rate:r:ip:10.0.0.7", Bytes::from_static(b"1"), Duration::from_secs(30))
            .await
            .expect("put");
        for i in 0..40 {
            refused_guess(&s, i, w).await;
        }
        for key in ["oauth1:nonce:c::1:n", "session:x", "rate:r:ip:10.0.0.7"] {
            assert!(
                s.get(key).await.expect("get").is_some(),
                "{key} went before a counter at zero"
            );
        }
        // Nothing left to drop but these three: the bucket goes first, the nonce last.
        for i in 0..40 {
            s.delete(&format!("lockout:basic:guess{i}")).await.expect("delete");
        }
        for i in 0..7 {
            s.put(&format!("jira-groups:u{i}"), Bytes::new(), w).await.expect("put");
        }
        s.put("jira-groups:u7", Bytes::new(), w).await.expect("put");
        assert_eq!(s.get("rate:r:ip:10.0.0.7").await.expect("get"), None);
        assert!(s.get("session:x").await.expect("get").is_some());
        s.put("jira-groups:u8", Bytes::new(), w).await.expect("put");
        assert_eq!(s.get("session:x").await.expect("get"), None);
        assert!(s.get("oauth1:nonce:c::1:n").await.expect("get").is_some());
        // What was dropped, by rank (the 40 counters less the 5 still there when deleted).
        let f = s.fullness().expect("a bounded store");
        assert_eq!((f.entries, f.max_entries), (10, 10));
        assert_eq!(
            f.dropped,
            vec![
                ("zero_counter", 35),
                ("unproven", 1),
                ("proven", 1),
                ("replay_guard", 0),
                ("lockout", 0)
            ]
        );
    }

    /// What a guess refused by the address's limit leaves behind: the counter of a new
    /// name `guess{i}`, reserved and taken back, at zero for `window`.
    async fn refused_guess(s: &MemoryStore, i: u64, window: Duration) {
        let key = format!("lockout:basic:guess{i}");
        s.incr(&key, 1, window).await.expect("incr");
        s.incr(&key, -1, window).await.expect("incr");
    }

    /// Sessions `session:0` .. `session:{n-1}`, each living a second longer than the one
    /// before from `ttl`; the store's bound holds after each.
    async fn put_sessions(s: &MemoryStore, n: u64, ttl: Duration) {
        for i in 0..n {
            s.put(
                &format!("session:{i}"),
                Bytes::from_static(b"1"),
                ttl + Duration::from_secs(i),
            )
            .await
            .expect("put");
            assert!(s.len() <= s.max_entries, "store grew to {}", s.len());
        }
    }

    #[tokio::test]
    async fn a_lockout_outlasts_sessions_and_used_nonces() {
        let (s, _clock) = store(10);
        let long = Duration::from_secs(3600);
        // Alice's failures, closest to expiry of all.
        s.incr("lockout:basic:alice", 2, Duration::from_secs(5))
            .await
            .expect("incr");
        s.put("oauth1:nonce:c::1:n", Bytes::from_static(b"1"), long)
            .await
            .expect("put");
        put_sessions(&s, 40, long).await;
        assert_eq!(s.get("session:0").await.expect("get"), None, "sessions went");
        assert!(s.get("oauth1:nonce:c::1:n").await.expect("get").is_some());
        assert_eq!(
            s.get("lockout:basic:alice").await.expect("get").as_deref(),
            Some(&b"2"[..]),
            "kept while anything else could go"
        );
        let f = s.fullness().expect("a bounded store");
        // 40 sessions, 8 left beside the nonce and alice's counter.
        assert!(f.dropped.contains(&("proven", 32)), "{:?}", f.dropped);
        assert!(f.dropped.contains(&("lockout", 0)), "{:?}", f.dropped);
    }

    #[tokio::test]
    async fn a_flood_from_unproven_callers_drops_its_own_entries_before_a_proven_callers() {
        let (s, _clock) = store(20);
        let short = Duration::from_secs(60);
        let long = Duration::from_secs(3600);
        // A proven caller's entries, each closer to expiry than anything the flood makes.
        let proven = [
            "session:a",
            "session:b",
            "oauth1:nonce:c::1:n",
            "totp-used:alice:7",
            "rate:r:u:alice",
        ];
        for key in proven {
            s.put(key, Bytes::from_static(b"1"), short).await.expect("put");
        }
        // Counters at zero under new names, buckets of new addresses, CAPTCHA marks.
        for i in 0..300 {
            let w = long + Duration::from_secs(i);
            refused_guess(&s, i, w).await;
            s.throttle(
                &format!("rate:r:ip:10.0.{}.{}", i / 256, i % 256),
                Duration::from_secs(1),
                5,
            )
            .await
            .expect("throttle");
            s.put(&format!("captcha:basic:guess{i}"), Bytes::new(), w)
                .await
                .expect("put");
            assert!(s.len() <= 20, "store grew to {}", s.len());
        }
        for key in proven {
            assert!(s.get(key).await.expect("get").is_some(), "{key} dropped by the flood");
        }
        // Once nothing but a proven caller's entries are left, the bound still holds:
        // those closest to expiry go.
        put_sessions(&s, 30, long).await;
        assert!(s.len() <= 20, "store grew to {}", s.len());
        assert_eq!(
            s.get("session:a").await.expect("get"),
            None,
            "closest to expiry, dropped"
        );
        assert!(s.get("session:29").await.expect("get").is_some());
    }

    #[tokio::test]
    async fn lockouts_dropped_to_make_room_are_no_longer_counted() {
        let (s, _clock) = store(10);
        // Nothing but counters above zero: the bound still holds, the oldest go.
        s.incr("lockout:basic:alice", 1, Duration::from_secs(1))
            .await
            .expect("incr");
        assert!(s.may_hold_lockouts());
        for i in 0..20 {
            s.incr(&format!("lockout:basic:u{i}"), 1, Duration::from_secs(900))
                .await
                .expect("incr");
        }
        assert!(s.len() <= 10, "store grew to {}", s.len());
        assert_eq!(s.get("lockout:basic:alice").await.expect("get"), None, "dropped first");
        let (anew, running) = s.lockouts_counted_anew();
        assert_eq!(running, anew);
        for i in 0..20 {
            s.delete(&format!("lockout:basic:u{i}")).await.expect("delete");
        }
        assert!(!s.may_hold_lockouts());
    }

    /// One step of [`lockout_count_is_never_below_the_truth`]'s random runs.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Incr(usize, i64, u64),
        Put(usize, u64),
        PutIfAbsent(usize, u64),
        Replace(usize, u64),
        Delete(usize),
        Throttle(usize),
        Advance(u64),
    }

    const KEYS: [&str; 4] = ["lockout:basic:a", "lockout:basic-addr:b", "lockout:totp:c", "logins:d"];

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let key = 0..KEYS.len();
        prop_oneof![
            4 => (key.clone(), -2i64..3, 1u64..30).prop_map(|(k, by, ttl)| Step::Incr(k, by, ttl)),
            1 => (key.clone(), 1u64..30).prop_map(|(k, ttl)| Step::Put(k, ttl)),
            1 => (key.clone(), 1u64..30).prop_map(|(k, ttl)| Step::PutIfAbsent(k, ttl)),
            1 => (key.clone(), 1u64..30).prop_map(|(k, ttl)| Step::Replace(k, ttl)),
            2 => key.clone().prop_map(Step::Delete),
            1 => key.prop_map(Step::Throttle),
            2 => (0u64..20).prop_map(Step::Advance),
        ]
    }

    /// Whether some live entry under the lock-out prefix could lock a caller out, read
    /// key by key as a request would.
    async fn truly_held(s: &MemoryStore) -> bool {
        for key in KEYS.iter().filter(|k| k.starts_with(LOCKOUT_PREFIX)) {
            if let Some(v) = s.get(key).await.expect("get") {
                let n = std::str::from_utf8(&v).ok().and_then(|t| t.parse::<i64>().ok());
                if n.is_none_or(|n| n > 0) {
                    return true;
                }
            }
        }
        false
    }

    proptest::proptest! {
        /// Whatever the writes, deletes, expiries and drops for room: when a counter
        /// could lock a caller out, the store never says there is none; and once every
        /// such key is deleted, it says so.
        #[test]
        fn lockout_count_is_never_below_the_truth(
            steps in proptest::collection::vec(step(), 1..60),
            room in 2usize..6,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(async {
                let (s, clock) = store(room);
                let secs = Duration::from_secs;
                for st in steps {
                    match st {
                        Step::Incr(k, by, ttl) => {
                            // A value that is not a number is refused, as Redis does.
                            let _ = s.incr(KEYS[k], by, secs(ttl)).await;
                        }
                        Step::Put(k, ttl) => s.put(KEYS[k], Bytes::from_static(b"1"), secs(ttl)).await.expect("put"),
                        Step::PutIfAbsent(k, ttl) => {
                            s.put_if_absent(KEYS[k], Bytes::from_static(b"x"), secs(ttl)).await.expect("put");
                        }
                        Step::Replace(k, ttl) => {
                            s.replace(KEYS[k], Bytes::from_static(b"-1"), secs(ttl)).await.expect("replace");
                        }
                        Step::Delete(k) => s.delete(KEYS[k]).await.expect("delete"),
                        Step::Throttle(k) => {
                            s.throttle(KEYS[k], Duration::from_millis(500), 2).await.expect("throttle");
                        }
                        Step::Advance(n) => clock.advance(secs(n)),
                    }
                    let (anew, running) = s.lockouts_counted_anew();
                    assert_eq!(running, anew, "the running count after {st:?}");
                    let held = truly_held(&s).await;
                    let may = s.may_hold_lockouts();
                    assert!(may || !held, "a live counter above zero was not counted");
                    let (anew, running) = s.lockouts_counted_anew();
                    assert_eq!(running, anew, "the running count after a sweep");
                }
                for key in KEYS {
                    s.delete(key).await.expect("delete");
                }
                assert!(!s.may_hold_lockouts(), "a count was left behind");
            });
        }
    }

    #[tokio::test]
    async fn a_flood_of_unique_keys_stays_bounded() {
        let (s, _clock) = store(1000);
        for i in 0..10_000 {
            s.incr(&format!("fail:{i}"), 1, Duration::from_secs(900))
                .await
                .expect("incr");
        }
        assert!(s.len() <= 1000, "store grew to {}", s.len());
    }
}
