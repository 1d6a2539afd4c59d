//! OAuth 1.0a tokens in the state store, so every replica sees them: request tokens
//! (short-lived, single use) and access tokens (Jira's default lifetime: 5 years).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::{StateStore, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestToken {
    pub consumer: String,
    pub secret: String,
    pub callback: String,
    /// Set once a user approved it.
    pub user: Option<String>,
    pub verifier: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    pub consumer: String,
    pub secret: String,
    pub user: String,
    pub created: u64,
    pub expires: u64,
}

/// 256 random bits, base64url.
pub fn random_token() -> Result<String, StoreError> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| StoreError::Unavailable("random number generator failed".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn rt_key(token: &str) -> String {
    format!("oauth1:rt:{token}")
}

fn at_key(token: &str) -> String {
    format!("oauth1:at:{token}")
}

async fn get<T: for<'de> Deserialize<'de>>(store: &dyn StateStore, key: &str) -> Result<Option<T>, StoreError> {
    Ok(store.get(key).await?.and_then(|b| serde_json::from_slice(&b).ok()))
}

async fn put<T: Serialize>(store: &dyn StateStore, key: &str, v: &T, ttl: Duration) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(v).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    store.put(key, Bytes::from(bytes), ttl).await
}

pub async fn get_request(store: &dyn StateStore, token: &str) -> Result<Option<RequestToken>, StoreError> {
    get(store, &rt_key(token)).await
}

pub async fn put_request(
    store: &dyn StateStore,
    token: &str,
    t: &RequestToken,
    ttl: Duration,
) -> Result<(), StoreError> {
    put(store, &rt_key(token), t, ttl).await
}

pub async fn delete_request(store: &dyn StateStore, token: &str) -> Result<(), StoreError> {
    store.delete(&rt_key(token)).await
}

pub async fn get_access(store: &dyn StateStore, token: &str) -> Result<Option<AccessToken>, StoreError> {
    get(store, &at_key(token)).await
}

pub async fn put_access(store: &dyn StateStore, token: &str, t: &AccessToken, ttl: Duration) -> Result<(), StoreError> {
    put(store, &at_key(token), t, ttl).await
}
