//! In-memory `StateStore`: a mutex-guarded map with per-entry expiry, an injectable clock
//! for tests, and a hard bound on entries (expired ones are swept first, then the entries
//! closest to expiry are dropped) so a flood of unique keys cannot grow it without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::{StateStore, StoreError, Throttle};

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
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (every
        // mutation is a single insert/remove), so a poisoned lock is still usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more entry: sweep expired, then drop the tenth closest to expiry.
    fn make_room(map: &mut HashMap<String, Entry>, now: Duration, max: usize) {
        if map.len() < max {
            return;
        }
        map.retain(|_, e| e.expires > now);
        if map.len() < max {
            return;
        }
        let mut expiries: Vec<Duration> = map.values().map(|e| e.expires).collect();
        let cut = (expiries.len() / 10).max(1);
        let (_, nth, _) = expiries.select_nth_unstable(cut - 1);
        let threshold = *nth;
        map.retain(|_, e| e.expires > threshold);
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
            Self::make_room(&mut map, now, self.max_entries);
        }
        map.insert(
            key.to_owned(),
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
                Self::make_room(&mut map, now, self.max_entries);
                (by, now + ttl)
            }
        };
        map.insert(
            key.to_owned(),
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
        self.lock().remove(key);
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
                Self::make_room(&mut map, now, self.max_entries);
            }
            map.insert(
                key.to_owned(),
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
