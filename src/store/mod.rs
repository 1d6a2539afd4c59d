//! Shared state: lockout counters, OAuth 1.0a nonces and tokens, sessions, rate limits.
//! One [`StateStore`] trait with two backends: in memory (one replica) and Redis (several
//! replicas acting as one). Every key has a TTL.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use memory::{Clock, ManualClock, MemoryStore, SystemClock};
pub use redis::{
    EXPECTED as REDIS_URL_EXPECTED, RedisSettings, RedisStore, Scheme as RedisScheme, url_scheme as redis_url_scheme,
};

/// Where the counters that lock callers out live (`lockout:basic:<user>`, …): the keys
/// [`StateStore::may_hold_lockouts`] answers for.
pub const LOCKOUT_PREFIX: &str = "lockout:";
/// Where the rate limits' buckets live ([`rate_key`]).
pub const RATE_PREFIX: &str = "rate:";
/// Where Jira's demands for a CAPTCHA, learnt from its answers to Basic checks, live.
pub const CAPTCHA_PREFIX: &str = "captcha:";
/// Where the used OAuth 1.0a nonces live: each refuses a replay of its request.
pub const NONCE_PREFIX: &str = "oauth1:nonce:";
/// Where the used TOTP codes live: each refuses its code a second time.
pub const TOTP_USED_PREFIX: &str = "totp-used:";

/// The bucket of a rule's rate limit for a caller: the Jira user's
/// (`rate:<rule>:u:<user>`), or the client address's for an anonymous caller
/// (`rate:<rule>:ip:<address>`). The rule's name is percent-encoded, so the first `:`
/// after it ends it.
pub fn rate_key(rule: &str, user: Option<&str>, ip: std::net::IpAddr) -> String {
    let rule = crate::auth::oauth1::rfc5849::encode(rule);
    match user {
        Some(u) => format!("{RATE_PREFIX}{rule}:u:{}", u.to_lowercase()),
        None => format!("{RATE_PREFIX}{rule}:ip:{ip}"),
    }
}

/// Whether `key` is an anonymous caller's rate bucket ([`rate_key`]): one any caller
/// makes from a new address at no cost.
pub fn is_anonymous_bucket(key: &str) -> bool {
    key.strip_prefix(RATE_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(_, who)| who.starts_with("ip:"))
}

/// [`StateStore::fullness`]: the entries held now (expired ones not yet swept among them),
/// the bound, and the entries dropped to make room since the store began, by rank, in the
/// order a full store drops them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fullness {
    pub entries: usize,
    pub max_entries: usize,
    pub dropped: Vec<(&'static str, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// The answer of a token bucket to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    pub allowed: bool,
    /// Requests that could follow at once.
    pub remaining: u32,
    /// When refused: how long until the next token.
    pub retry_after: Duration,
}

#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// The values of several keys, in their order, in one step (one round trip to Redis).
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>, StoreError> {
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            values.push(self.get(key).await?);
        }
        Ok(values)
    }
    /// [`StateStore::get`]'s answer when the store has it without waiting (a store in
    /// this process); `None` from a store across the network, which is then awaited.
    fn get_now(&self, _key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        None
    }
    /// Whether [`StateStore::get_now`] answers (the store is in this process).
    fn answers_now(&self) -> bool {
        false
    }
    /// [`StateStore::get_many`]'s answer when the store has it without waiting.
    fn get_many_now(&self, _keys: &[&str]) -> Option<Result<Vec<Option<Bytes>>, StoreError>> {
        None
    }
    /// Whether a live entry under [`LOCKOUT_PREFIX`] may hold a count above zero. False
    /// only when the store knows, without a lookup, that none does (a store in this
    /// process that has seen no failure in the window, or none since a success took it
    /// back): then no caller is locked out, and a request need not read its counters. A
    /// store that cannot tell answers true.
    fn may_hold_lockouts(&self) -> bool {
        true
    }
    /// How full a store bounded by this process is, and what it has dropped to make room;
    /// `None` from a store that bounds itself (Redis).
    fn fullness(&self) -> Option<Fullness> {
        None
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError>;
    /// Stores only if the key is absent (or expired); true when stored.
    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError>;
    /// Stores only if the key is present (and not expired); true when stored. For updates
    /// that must not bring back what was deleted meanwhile (a session ended elsewhere).
    async fn replace(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError>;
    /// Adds `by` to a counter; a new counter starts at 0 and gets `ttl`, an existing one
    /// keeps its expiry (a fixed window). Returns the new value.
    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError>;
    /// Time left before `key` expires, if it exists.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Up to `limit` live entries whose keys start with `prefix`, in key order. For
    /// listings (admin tools, a user's own tokens), not for the request path.
    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>, StoreError>;
    /// Takes one token from the bucket at `key` (GCRA: a token every `interval`, at most
    /// `burst` saved up), atomically. A refusal takes nothing.
    async fn throttle(&self, key: &str, interval: Duration, burst: u32) -> Result<Throttle, StoreError>;
    /// Whether the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// GCRA on a stored "theoretical arrival time" (microseconds): the new TAT to store
/// (with its time to live) when allowed, and the answer.
pub(crate) fn gcra(
    stored_tat: Option<i64>,
    now: i64,
    interval: Duration,
    burst: u32,
) -> (Option<(i64, Duration)>, Throttle) {
    let t = (interval.as_micros() as i64).max(1);
    let tat = stored_tat.unwrap_or(now).max(now);
    let new_tat = tat + t;
    let allow_at = new_tat - t * i64::from(burst.max(1));
    if now < allow_at {
        let wait = Duration::from_micros((allow_at - now) as u64);
        return (
            None,
            Throttle {
                allowed: false,
                remaining: 0,
                retry_after: wait,
            },
        );
    }
    let remaining = ((now - allow_at) / t).clamp(0, i64::from(u32::MAX)) as u32;
    (
        Some((new_tat, Duration::from_micros((new_tat - now) as u64))),
        Throttle {
            allowed: true,
            remaining,
            retry_after: Duration::ZERO,
        },
    )
}

/// A store whose failures are counted (the `jap_store_errors_total` metric).
pub struct Counted {
    inner: std::sync::Arc<dyn StateStore>,
    metrics: std::sync::Arc<crate::observe::metrics::Metrics>,
}

impl Counted {
    pub fn new(
        inner: std::sync::Arc<dyn StateStore>,
        metrics: std::sync::Arc<crate::observe::metrics::Metrics>,
    ) -> Self {
        Counted { inner, metrics }
    }

    fn count<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.metrics.store_error();
        }
        r
    }
}

#[async_trait]
impl StateStore for Counted {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        self.count(self.inner.get(key).await)
    }
    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>, StoreError> {
        self.count(self.inner.get_many(keys).await)
    }
    fn get_now(&self, key: &str) -> Option<Result<Option<Bytes>, StoreError>> {
        self.inner.get_now(key).map(|r| self.count(r))
    }
    fn answers_now(&self) -> bool {
        self.inner.answers_now()
    }
    fn get_many_now(&self, keys: &[&str]) -> Option<Result<Vec<Option<Bytes>>, StoreError>> {
        self.inner.get_many_now(keys).map(|r| self.count(r))
    }
    fn may_hold_lockouts(&self) -> bool {
        self.inner.may_hold_lockouts()
    }
    fn fullness(&self) -> Option<Fullness> {
        self.inner.fullness()
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.count(self.inner.put(key, value, ttl).await)
    }
    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        self.count(self.inner.put_if_absent(key, value, ttl).await)
    }
    async fn replace(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        self.count(self.inner.replace(key, value, ttl).await)
    }
    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        self.count(self.inner.incr(key, by, ttl).await)
    }
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        self.count(self.inner.ttl(key).await)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.count(self.inner.delete(key).await)
    }
    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.count(self.inner.scan(prefix, limit).await)
    }
    async fn throttle(&self, key: &str, interval: Duration, burst: u32) -> Result<Throttle, StoreError> {
        self.count(self.inner.throttle(key, interval, burst).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.count(self.inner.ping().await)
    }
}
