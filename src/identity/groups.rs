//! Groups from Jira (`[identity.groups_from_jira]`): a user's groups looked up with a
//! service credential and kept in the state store for `cache_ttl`, so rules can name Jira
//! groups whatever the credential was. Looked up only when some rule names groups.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

use crate::config::GroupsFromJira;
use crate::store::{StateStore, StoreError};
use crate::upstream::Upstream;

pub struct JiraGroups {
    upstream: Arc<Upstream>,
    store: Arc<dyn StateStore>,
    authorization: HeaderValue,
    path: String,
    ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupsError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("group lookup: {0}")]
    Jira(String),
}

impl JiraGroups {
    pub fn new(cfg: &GroupsFromJira, upstream: Arc<Upstream>, store: Arc<dyn StateStore>) -> Result<Self, String> {
        let mut authorization =
            HeaderValue::from_bytes(cfg.authorization.expose()).map_err(|_| "credential not a header value")?;
        authorization.set_sensitive(true);
        Ok(JiraGroups {
            upstream,
            store,
            authorization,
            path: cfg.path.clone(),
            ttl: cfg.cache_ttl,
        })
    }

    /// The user's Jira groups, from the store or from Jira.
    pub async fn of(&self, user: &str) -> Result<Vec<String>, GroupsError> {
        let key = format!("jira-groups:{}", user.to_lowercase());
        if let Some(cached) = self.store.get(&key).await?
            && let Ok(groups) = serde_json::from_slice::<Vec<String>>(&cached)
        {
            return Ok(groups);
        }
        let groups = self
            .upstream
            .user_groups(&self.path, user, &self.authorization)
            .await
            .map_err(GroupsError::Jira)?;
        let bytes = serde_json::to_vec(&groups).unwrap_or_default();
        self.store.put(&key, Bytes::from(bytes), self.ttl).await?;
        Ok(groups)
    }
}
