//! A small HTTPS client for the proxy's own calls to identity providers: OIDC discovery,
//! JWKS documents and token introspection (RFC 7662). Timeouts on every call, bodies
//! read under a cap, system roots or a configured CA file.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{Body, full};

/// Largest document read from an identity provider.
const BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Body>,
    timeout: Duration,
}

impl Fetcher {
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Fetcher, String> {
        let tls = super::client_tls(ca_file, true)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(Fetcher { client, timeout })
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

    async fn send_json(&self, req: Request<Body>) -> Result<(u16, serde_json::Value), String> {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
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
