//! OAuth 1.0a tokens in the state store, so every replica sees them: request tokens
//! (short-lived, single use) and access tokens (Jira's default lifetime: 5 years).
//!
//! Tokens are stored under an id derived from a SHA-256 of the token, never under the
//! token itself, so a listing (or a look at Redis) shows ids that cannot be used to sign.
//! Each access token also has an index entry under its user, for "my tokens" pages.

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

/// The id a token is stored and listed under: 128 bits of its SHA-256, hex.
pub fn token_id(token: &str) -> String {
    crate::auth::cache::id_of(token)
}

fn rt_key(token: &str) -> String {
    format!("oauth1:rt:{}", token_id(token))
}

const AT_PREFIX: &str = "oauth1:at:";

fn at_key_by_id(id: &str) -> String {
    format!("{AT_PREFIX}{id}")
}

fn user_prefix(user: &str) -> String {
    format!("oauth1:user:{}:", super::rfc5849::encode(user))
}

/// Most tokens one listing shows.
pub const LIST_LIMIT: usize = 10_000;

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
    get(store, &at_key_by_id(&token_id(token))).await
}

/// Stores an access token and its entry in the user's index.
pub async fn put_access(store: &dyn StateStore, token: &str, t: &AccessToken, ttl: Duration) -> Result<(), StoreError> {
    let id = token_id(token);
    put(store, &at_key_by_id(&id), t, ttl).await?;
    store
        .put(&format!("{}{id}", user_prefix(&t.user)), Bytes::new(), ttl)
        .await
}

/// An access token as listings show it: its id, never the token or its secret.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub id: String,
    pub consumer: String,
    pub user: String,
    pub created: u64,
    pub expires: u64,
}

fn listed(id: &str, t: AccessToken) -> Listed {
    Listed {
        id: id.to_owned(),
        consumer: t.consumer,
        user: t.user,
        created: t.created,
        expires: t.expires,
    }
}

/// Every access token (for admins), oldest first.
pub async fn list_all(store: &dyn StateStore) -> Result<Vec<Listed>, StoreError> {
    let mut out: Vec<Listed> = store
        .scan(AT_PREFIX, LIST_LIMIT)
        .await?
        .into_iter()
        .filter_map(|(k, v)| {
            let t: AccessToken = serde_json::from_slice(&v).ok()?;
            Some(listed(k.strip_prefix(AT_PREFIX)?, t))
        })
        .collect();
    out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(out)
}

/// One user's access tokens, oldest first.
pub async fn list_for_user(store: &dyn StateStore, user: &str) -> Result<Vec<Listed>, StoreError> {
    let prefix = user_prefix(user);
    let mut out = Vec::new();
    for (k, _) in store.scan(&prefix, LIST_LIMIT).await? {
        let Some(id) = k.strip_prefix(&prefix) else { continue };
        match get::<AccessToken>(store, &at_key_by_id(id)).await? {
            Some(t) if t.user == user => out.push(listed(id, t)),
            // Revoked elsewhere: the index entry goes too.
            _ => store.delete(&k).await?,
        }
    }
    out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(out)
}

/// Revokes the access token with this id; with `owner`, only if it belongs to that user.
/// Returns the revoked token's listing, or `None` when there was no such token.
pub async fn revoke(store: &dyn StateStore, id: &str, owner: Option<&str>) -> Result<Option<Listed>, StoreError> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let id = id.to_ascii_lowercase();
    let Some(t) = get::<AccessToken>(store, &at_key_by_id(&id)).await? else {
        return Ok(None);
    };
    if owner.is_some_and(|o| o != t.user) {
        return Ok(None);
    }
    store.delete(&at_key_by_id(&id)).await?;
    store.delete(&format!("{}{id}", user_prefix(&t.user))).await?;
    Ok(Some(listed(&id, t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn token(consumer: &str, user: &str, created: u64) -> AccessToken {
        AccessToken {
            consumer: consumer.into(),
            secret: "s".into(),
            user: user.into(),
            created,
            expires: created + 100,
        }
    }

    #[tokio::test]
    async fn listings_show_ids_per_user_and_revoking_ends_a_token() {
        let store = MemoryStore::new(1000);
        let ttl = Duration::from_secs(60);
        put_access(&store, "tok-a1", &token("ci", "alice", 1), ttl)
            .await
            .expect("put");
        put_access(&store, "tok-a2", &token("bot", "alice", 2), ttl)
            .await
            .expect("put");
        put_access(&store, "tok-b1", &token("ci", "bob", 3), ttl)
            .await
            .expect("put");

        let all = list_all(&store).await.expect("all");
        assert_eq!(
            all.iter().map(|t| t.user.as_str()).collect::<Vec<_>>(),
            ["alice", "alice", "bob"]
        );
        assert!(all.iter().all(|t| t.id.len() == 32 && !t.id.contains("tok")));
        let alice = list_for_user(&store, "alice").await.expect("alice");
        assert_eq!(
            alice.iter().map(|t| t.consumer.as_str()).collect::<Vec<_>>(),
            ["ci", "bot"]
        );

        // Bob cannot revoke Alice's token; an admin (no owner) can.
        let id = alice[0].id.clone();
        assert!(revoke(&store, &id, Some("bob")).await.expect("revoke").is_none());
        assert!(get_access(&store, "tok-a1").await.expect("get").is_some());
        assert_eq!(
            revoke(&store, &id, None).await.expect("revoke").map(|t| t.user),
            Some("alice".into())
        );
        assert!(get_access(&store, "tok-a1").await.expect("get").is_none());
        assert_eq!(list_for_user(&store, "alice").await.expect("alice").len(), 1);
        assert!(revoke(&store, "not-an-id", None).await.expect("revoke").is_none());
    }
}
