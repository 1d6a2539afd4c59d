//! A small HTTPS client for the proxy's own calls to identity providers: OIDC discovery,
//! JWKS documents and token introspection (RFC 7662). Timeouts on every call, bodies
//! read under a cap, system roots or a configured CA file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Limited};

use super::pool::{Limits, Origin, Pool};
use crate::error::{Body, full};

/// Largest document read from an identity provider.
const BODY_LIMIT: usize = 1024 * 1024;

/// Idle connections kept per provider origin.
const MAX_IDLE: usize = 4;

#[derive(Clone)]
pub struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    /// Kept-alive connections per origin (`scheme://host:port`); a provider has a few.
    pools: Arc<Mutex<HashMap<String, Arc<Pool>>>>,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Fetcher, String> {
        Ok(Fetcher {
            tls: Arc::new(super::client_tls(ca_file, true)?),
            pools: Arc::default(),
            timeout,
        })
    }

    /// The pool for `uri`'s origin, made on first use.
    fn pool(&self, uri: &Uri) -> Result<Arc<Pool>, String> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str())
        );
        // Every mutation is one insert: a poisoned map is still whole.
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(&key) {
            return Ok(Arc::clone(pool));
        }
        let limits = Limits {
            connect_timeout: self.timeout,
            idle_timeout: Duration::from_secs(60),
            max_idle: MAX_IDLE,
        };
        let pool = Arc::new(Pool::new(Origin::of(uri, &self.tls)?, limits, 1));
        pools.insert(key, Arc::clone(&pool));
        Ok(pool)
    }

    /// GET a JSON document.
    pub async fn get_json(&self, uri: &Uri) -> Result<serde_json::Value, String> {
        let req = Request::get(uri.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "jira-auth-proxy")
            .body(full(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.send_json(req).await.map(|(_, v)| v)
    }

    /// POST a form with HTTP Basic client authentication; returns (status, JSON).
    pub async fn post_form(
        &self,
        uri: &Uri,
        authorization: &HeaderValue,
        form: String,
    ) -> Result<(u16, serde_json::Value), String> {
        let mut auth = authorization.clone();
        auth.set_sensitive(true);
        let req = Request::post(uri.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(USER_AGENT, "jira-auth-proxy")
            .header(AUTHORIZATION, auth)
            .body(full(form))
            .map_err(|e| e.to_string())?;
        self.send_json(req).await
    }

    async fn send_json(&self, mut req: Request<Body>) -> Result<(u16, serde_json::Value), String> {
        let what = format!("{} {}", req.method(), req.uri());
        let pool = self.pool(req.uri())?;
        // Origin form on the wire, the authority in `Host`.
        if let Some(authority) = req.uri().authority() {
            let host = HeaderValue::from_str(authority.as_str()).map_err(|e| format!("{what}: {e}"))?;
            req.headers_mut().insert(HOST, host);
        }
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = Uri::try_from(path).map_err(|e| format!("{what}: {e}"))?;
        let resp = tokio::time::timeout(self.timeout, pool.send(req))
            .await
            .map_err(|_| format!("{what}: no answer within {:?}", self.timeout))?
            .map_err(|e| format!("{what}: {e}"))?;
        let status = resp.status().as_u16();
        let body = tokio::time::timeout(self.timeout, Limited::new(resp.into_body(), BODY_LIMIT).collect())
            .await
            .map_err(|_| format!("{what}: body not read within {:?}", self.timeout))?
            .map_err(|e| format!("{what}: reading the body: {e}"))?
            .to_bytes();
        if !(200..300).contains(&status) && status != 401 && status != 400 {
            return Err(format!("{what}: answered {status}"));
        }
        let json = serde_json::from_slice(&body).map_err(|_| format!("{what}: answer is not JSON"))?;
        Ok((status, json))
    }
}
