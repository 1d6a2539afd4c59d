//! `StateStore` on Redis, for several replicas: one multiplexed connection that reconnects
//! by itself (`ConnectionManager`), every key under `key_prefix` and with a TTL, and the
//! operations correctness depends on done atomically in Redis (`SET NX PX` for
//! set-if-absent; a Lua script for counters, so a new counter and its expiry appear
//! together). Every call is bounded by the response timeout; a failure is
//! `StoreError::Unavailable`, which callers turn into a 503 (fail closed).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{StateStore, StoreError, Throttle};

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS), with optional user, password and database; a
    /// secret, since it may hold the password.
    pub url: crate::config::Secret,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// For `rediss://`: trust only these roots (PEM); default the system roots.
    pub ca_file: Option<std::path::PathBuf>,
}

pub struct RedisStore {
    client: redis::Client,
    settings: RedisSettings,
    conn: OnceCell<ConnectionManager>,
    incr: redis::Script,
    throttle: redis::Script,
}

/// GCRA (see `super::gcra`) on Redis's own clock, so every replica agrees. Returns
/// {allowed, remaining, retry_after_us}.
const THROTTLE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then return {0, 0, allow_at - now} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), 0}";

/// Adds to a counter; a new counter gets the TTL, an existing one keeps its expiry.
const INCR_SCRIPT: &str = r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v";

fn unavailable(e: redis::RedisError) -> StoreError {
    // The error's text never holds the URL's password: redis-rs prints the kind and the
    // server's message only.
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0).
fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// A glob-safe `SCAN MATCH` pattern for keys starting with `prefix`.
fn match_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

impl RedisStore {
    /// Checks the URL; connects on first use (and reconnects after failures by itself).
    pub fn new(settings: RedisSettings) -> Result<Self, String> {
        let url = std::str::from_utf8(settings.url.expose()).map_err(|_| "the Redis URL is not UTF-8".to_string())?;
        // For rediss://, redis-rs builds its rustls config from the process's default
        // crypto provider: make sure there is one (a no-op when already set).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = match &settings.ca_file {
            None => redis::Client::open(url),
            Some(path) => {
                let root = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )
            }
        }
        .map_err(|e| format!("not a usable Redis URL: {e}"))?;
        Ok(RedisStore {
            client,
            settings,
            conn: OnceCell::new(),
            incr: redis::Script::new(INCR_SCRIPT),
            throttle: redis::Script::new(THROTTLE_SCRIPT),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let c = self
            .conn
            .get_or_try_init(|| async {
                let cfg = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.settings.connect_timeout))
                    .set_response_timeout(Some(self.settings.response_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(self.client.clone(), cfg)
            })
            .await
            .map_err(unavailable)?;
        Ok(c.clone())
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.settings.key_prefix)
    }

    /// Bounds a call by the response timeout even while (re)connecting.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let limit = self.settings.response_timeout + self.settings.connect_timeout;
        match tokio::time::timeout(limit, call).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable("redis: timed out".into())),
        }
    }

    /// One command.
    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        self.bounded(cmd.query_async::<T>(&mut c)).await
    }

    /// `SET` with a condition (`NX`: only if absent, `XX`: only if present); true when set.
    async fn set_if(&self, key: &str, value: Bytes, ttl: Duration, condition: &str) -> Result<bool, StoreError> {
        let set: Option<String> = self
            .run(
                redis::cmd("SET")
                    .arg(self.key(key))
                    .arg(value.as_ref())
                    .arg(condition)
                    .arg("PX")
                    .arg(millis(ttl)),
            )
            .await?;
        Ok(set.is_some())
    }

    /// One script call.
    async fn invoke<T: redis::FromRedisValue>(&self, inv: redis::ScriptInvocation<'_>) -> Result<T, StoreError> {
        let mut c = self.conn().await?;
        self.bounded(inv.invoke_async::<T>(&mut c)).await
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let v: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(self.key(key))).await?;
        Ok(v.map(Bytes::from))
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key));
        }
        let values: Vec<Option<Vec<u8>>> = self.run(&cmd).await?;
        Ok(values.into_iter().map(|v| v.map(Bytes::from)).collect())
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.run::<()>(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value.as_ref())
                .arg("PX")
                .arg(millis(ttl)),
        )
        .await
    }

    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, "NX").await
    }

    async fn replace(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, "XX").await
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        let mut inv = self.incr.prepare_invoke();
        inv.key(self.key(key)).arg(by).arg(millis(ttl));
        self.invoke(inv).await
    }

    async fn throttle(&self, key: &str, interval: Duration, burst: u32) -> Result<Throttle, StoreError> {
        let mut inv = self.throttle.prepare_invoke();
        inv.key(self.key(key))
            .arg((interval.as_micros() as u64).max(1))
            .arg(burst.max(1));
        let (allowed, remaining, wait): (i64, i64, i64) = self.invoke(inv).await?;
        Ok(Throttle {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            retry_after: Duration::from_micros(wait.max(0) as u64),
        })
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let ms: i64 = self.run(redis::cmd("PTTL").arg(self.key(key))).await?;
        Ok(match ms {
            -2 => None,
            // No expiry (never written so by the proxy): report it as long-lived.
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.run::<i64>(redis::cmd("DEL").arg(self.key(key))).await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>, StoreError> {
        let full = self.key(prefix);
        let pattern = match_prefix(&full);
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            keys.extend(batch.into_iter().filter(|k| k.starts_with(&full)));
            cursor = next;
            if cursor == 0 || keys.len() >= limit {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys.truncate(limit);
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<Vec<u8>>> = self.run(redis::cmd("MGET").arg(chunk)).await?;
            for (k, v) in chunk.iter().zip(values) {
                // A key that expired between SCAN and MGET is simply gone.
                if let Some(v) = v {
                    out.push((k[self.settings.key_prefix.len()..].to_owned(), Bytes::from(v)));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::match_prefix;

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(match_prefix("jap:oauth1:at:"), "jap:oauth1:at:*");
        assert_eq!(match_prefix("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
