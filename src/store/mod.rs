//! Shared state: lockout counters, OAuth 1.0a nonces and tokens, sessions, rate limits.
//! One [`StateStore`] trait with two backends: in memory (one replica) and Redis (several
//! replicas acting as one). Every key has a TTL.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use memory::{Clock, ManualClock, MemoryStore, SystemClock};
pub use redis::{RedisSettings, RedisStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError>;
    /// Stores only if the key is absent (or expired); true when stored.
    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError>;
    /// Adds `by` to a counter; a new counter starts at 0 and gets `ttl`, an existing one
    /// keeps its expiry (a fixed window). Returns the new value.
    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError>;
    /// Time left before `key` expires, if it exists.
    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError>;
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Up to `limit` live entries whose keys start with `prefix`, in key order. For
    /// listings (admin tools, a user's own tokens), not for the request path.
    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>, StoreError>;
}
