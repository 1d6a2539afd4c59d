//! Forwarding to Jira: kept-alive HTTP/1.1 connections per listener thread (plain or
//! rustls TLS with the system roots or a configured CA file), bodies streamed both ways,
//! and the identity asserted by the configured mode. Only this module writes the
//! identity header.

pub mod fetch;
mod h1;
pub mod headers;
pub mod oauth1;
pub mod pool;

use std::borrow::Cow;
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, HOST};
use http::request::Parts;
use http::uri::{Authority, Scheme};
use http::{HeaderName, HeaderValue, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::{IdentityMode, UpstreamConfig};
use crate::error::{Body, ProxyError};
use crate::pipeline::RequestCtx;
use h1::Fields;
use pool::{Pool, Pooled, SendError};

/// A forwarded answer, and the fields of Jira's answer that pass as Jira wrote them.
pub type Answer = (Response<Body>, Option<crate::wire::HeaderLines>);

/// Jira's verdict on a Basic credential (see `Upstream::check_basic`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JiraAnswer {
    /// The credential is valid; Jira's name for the user.
    Valid(String),
    /// Refused; the reason code for the audit log.
    Invalid(&'static str),
    /// Jira wants a CAPTCHA for this account (too many failed logins).
    Captcha,
}

/// Largest `/myself` answer read while checking a credential.
const CHECK_BODY_LIMIT: usize = 256 * 1024;

/// oauth1 mode: Jira's session per user (the `JSESSIONID` Jira set on a signed request
/// Jira ran as that user), so that user's later safe requests skip the RSA signature.
/// Keyed by the exact (lowercased) user it was issued for; bounded; entries expire.
struct JiraSessions {
    ttl: Duration,
    map: std::sync::Mutex<std::collections::HashMap<String, (HeaderValue, std::time::Instant)>>,
}

/// Most users with a reusable Jira session at once.
const JIRA_SESSIONS_MAX: usize = 100_000;

impl JiraSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (HeaderValue, std::time::Instant)>> {
        // Every mutation is one insert or remove: a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, user: &str) -> Option<HeaderValue> {
        let map = self.lock();
        map.get(&user.to_lowercase())
            .filter(|(_, exp)| *exp > std::time::Instant::now())
            .map(|(c, _)| c.clone())
    }

    fn put(&self, user: &str, cookie: HeaderValue) {
        let now = std::time::Instant::now();
        let mut map = self.lock();
        if map.len() >= JIRA_SESSIONS_MAX {
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= JIRA_SESSIONS_MAX {
                return;
            }
        }
        map.insert(user.to_lowercase(), (cookie, now + self.ttl));
    }

    fn forget(&self, user: &str) {
        self.lock().remove(&user.to_lowercase());
    }
}

pub struct Upstream {
    /// Connections kept per listener thread (see `server::worker_index`): a request goes
    /// out and its answer comes back on the thread that read it.
    pool: Pool,
    /// Jira's authority as a `Host` header value.
    host: HeaderValue,
    scheme: Scheme,
    authority: Authority,
    response_timeout: Duration,
    preserve_host: bool,
    identity: IdentityMode,
    asserted: Vec<HeaderName>,
    sessions: Option<JiraSessions>,
}

fn roots(ca_file: Option<&std::path::Path>, https: bool) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs =
                CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("bad PEM in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("no certificates in {}", path.display()));
            }
        }
        None if https => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // An unparsable system root is skipped, as every TLS client does.
                let _ = roots.add(cert);
            }
        }
        None => {}
    }
    Ok(roots)
}

/// A rustls client configuration (aws-lc-rs) trusting `ca_file` only, or the system
/// roots for https when no file is given; it offers HTTP/1.1 by ALPN.
pub(crate) fn client_tls(ca_file: Option<&std::path::Path>, https: bool) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca_file, https)?)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

impl Upstream {
    /// Builds the client. The error names what is wrong (for `upstream.ca_file`).
    pub fn new(cfg: &UpstreamConfig, workers: usize) -> Result<Self, String> {
        let https = cfg.scheme == Scheme::HTTPS;
        let tls = std::sync::Arc::new(client_tls(cfg.ca_file.as_deref(), https)?);
        let limits = pool::Limits {
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.pool_idle_timeout,
            max_idle: cfg.pool_max_idle,
        };
        let origin = pool::Origin::new(https, &cfg.authority, &tls).map_err(|e| format!("upstream.url: {e}"))?;
        let pool = Pool::new(origin, limits, workers);
        let asserted = match &cfg.identity {
            IdentityMode::Header { name, secret } => {
                let mut v = vec![name.clone()];
                v.extend(secret.as_ref().map(|(h, _)| h.clone()));
                v
            }
            IdentityMode::Passthrough | IdentityMode::OAuth1 { .. } => Vec::new(),
        };
        let sessions = match &cfg.identity {
            IdentityMode::OAuth1 {
                session_reuse: Some(ttl),
                ..
            } => Some(JiraSessions {
                ttl: *ttl,
                map: Default::default(),
            }),
            _ => None,
        };
        let host = HeaderValue::from_str(cfg.authority.as_str()).map_err(|e| format!("upstream.url: {e}"))?;
        Ok(Upstream {
            pool,
            host,
            scheme: cfg.scheme.clone(),
            authority: cfg.authority.clone(),
            response_timeout: cfg.response_timeout,
            preserve_host: cfg.preserve_host,
            identity: cfg.identity.clone(),
            asserted,
            sessions,
        })
    }

    /// oauth1 mode: Jira names the user it ran the request as in `X-AUSERNAME`; anything
    /// but the user we asserted (e.g. `anonymous` when the application link does not allow
    /// impersonation) means the answer belongs to someone else: 502, never passed on.
    fn check_jira_user(&self, ctx: &RequestCtx, headers: &http::HeaderMap) -> Result<(), ProxyError> {
        let Some(user) = self.oauth_user(ctx) else {
            return Ok(());
        };
        let ran_as = headers
            .get(headers::X_AUSERNAME)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ran_as.eq_ignore_ascii_case(user) {
            return Ok(());
        }
        tracing::error!(request_id = ?ctx.id, asserted = user, jira_ran_as = ran_as, "Jira did not run the request as the asserted user");
        Err(ProxyError::IdentityNotHonoured)
    }

    /// oauth1 mode signs form bodies too, so they are read (see the pipeline).
    pub fn signs_forms(&self) -> bool {
        matches!(self.identity, IdentityMode::OAuth1 { .. })
    }

    /// Headers only the proxy may set upstream (client copies are stripped in admit).
    pub fn asserted_headers(&self) -> &[HeaderName] {
        &self.asserted
    }

    /// oauth1 mode: the user Jira must run this request as (none for anonymous requests
    /// and for Jira's own tokens passed through).
    fn oauth_user<'a>(&self, ctx: &'a RequestCtx) -> Option<&'a str> {
        match (&self.identity, ctx.jira_user.as_deref()) {
            (IdentityMode::OAuth1 { .. }, Some(u)) if ctx.auth_kind != Some(crate::auth::AuthKind::JiraToken) => {
                Some(u)
            }
            _ => None,
        }
    }

    /// Sends the request of head `parts`, read at `sent`: the response timeout runs from
    /// then.
    async fn send(
        &self,
        parts: &Parts,
        body: Body,
        set: &Fields<'_>,
        sent: Instant,
    ) -> Result<Response<Pooled>, ProxyError> {
        let deadline = crate::time::deadline(sent, self.response_timeout);
        match self.pool.send_with(parts, body, set, sent, Some(deadline)).await {
            Err(SendError::Timeout) => Err(ProxyError::UpstreamTimeout),
            Err(SendError::Failed(e)) => Err(ProxyError::UpstreamUnreachable(e)),
            Ok(resp) => Ok(resp),
        }
    }

    /// Sends the request to Jira as `ctx` decided. Its head `parts` is made ready for
    /// Jira where it lies (target, version, Jira's session cookie), not moved.
    pub async fn forward(
        &self,
        ctx: &RequestCtx,
        parts: &mut Parts,
        mut body: Body,
        form: Option<&[(String, String)]>,
        mut sent: Instant,
    ) -> Result<Answer, ProxyError> {
        let user = self.oauth_user(ctx);
        // oauth1 mode: a safe request without a body rides on the user's Jira session when
        // there is one. If Jira no longer runs it as the user (the session ended), the
        // answer is dropped and the request is sent again, signed.
        let reuse = match (&self.sessions, user) {
            (Some(s), Some(u))
                if matches!(parts.method, http::Method::GET | http::Method::HEAD)
                    && hyper::body::Body::is_end_stream(&body) =>
            {
                s.get(u).map(|cookie| (s, u, cookie))
            }
            _ => None,
        };
        if let Some((sessions, u, cookie)) = reuse {
            // Boxed: the common path's future stays free of this one's state.
            match Box::pin(self.on_session(ctx, parts, body, form, (sessions, u, cookie), sent)).await? {
                Some(resp) => return Ok(resp),
                // Sent again, signed, with a response timeout of its own.
                None => (body, sent) = (crate::error::full(bytes::Bytes::new()), Instant::now()),
            }
        }
        let mut set = Fields::new();
        self.build_request(ctx, parts, form, None, &mut set)?;
        let resp = self.send(parts, body, &set, sent).await?;
        // Hop-by-hop headers stayed on the connection (`h1`).
        let (mut head, mut body) = resp.into_parts();
        self.check_jira_user(ctx, &head.headers)?;
        if !matches!(self.identity, IdentityMode::Passthrough) {
            let session = headers::take_jira_cookies(&mut head.headers);
            if let (Some(s), Some(u), Some(cookie)) = (&self.sessions, user, session) {
                s.put(u, cookie);
            }
        }
        let lines = body.take_lines();
        Ok((Response::from_parts(head, body.boxed()), lines))
    }

    /// oauth1 mode: sends the request on the user's Jira session (a copy of `parts` with
    /// the session's cookie). `None` when Jira no longer runs that session as the user:
    /// the request is then to be signed and sent again.
    async fn on_session(
        &self,
        ctx: &RequestCtx,
        parts: &Parts,
        body: Body,
        form: Option<&[(String, String)]>,
        (sessions, u, cookie): (&JiraSessions, &str, HeaderValue),
        sent: Instant,
    ) -> Result<Option<Answer>, ProxyError> {
        let mut parts = parts.clone();
        let mut set = Fields::new();
        self.build_request(ctx, &mut parts, form, Some(cookie), &mut set)?;
        let resp = self.send(&parts, body, &set, sent).await?;
        let (mut head, mut body) = resp.into_parts();
        let ran_as = head.headers.get(headers::X_AUSERNAME).and_then(|v| v.to_str().ok());
        if ran_as.is_some_and(|r| r.eq_ignore_ascii_case(u)) {
            if let Some(newer) = headers::take_jira_cookies(&mut head.headers) {
                sessions.put(u, newer);
            }
            let lines = body.take_lines();
            return Ok(Some((Response::from_parts(head, body.boxed()), lines)));
        }
        sessions.forget(u);
        tracing::debug!(request_id = ?ctx.id, "Jira session no longer runs as the user; signing instead");
        Ok(None)
    }

    /// Makes `parts` the head of the request for Jira, and puts in `set` the header fields
    /// the proxy sets on it (written on the wire after the caller's own, each replacing
    /// the caller's fields of its name).
    fn build_request<'a>(
        &'a self,
        ctx: &'a RequestCtx,
        parts: &mut Parts,
        form: Option<&[(String, String)]>,
        session: Option<HeaderValue>,
        set: &mut Fields<'a>,
    ) -> Result<(), ProxyError> {
        let path = ctx.path.as_ref().map_or("/", |p| p.encoded());
        let delegated = ctx.auth_kind == Some(crate::auth::AuthKind::JiraToken);
        // oauth1 mode: the user goes in the query, inside the signature (Jira's 2LOi);
        // or the request carries the user's Jira session instead.
        let oauth_user = self.oauth_user(ctx).filter(|_| session.is_none());
        let mut query = ctx.query.clone();
        if let Some(u) = oauth_user {
            let extra = format!("xoauth_requestor_id={}", crate::auth::oauth1::rfc5849::encode(u));
            query = Some(match query {
                Some(q) => format!("{q}&{extra}"),
                None => extra,
            });
        }
        // Origin form: the connection already goes to Jira, and `Host` names it. Only its
        // path and query are written, so a target that normalising and filtering left as
        // the caller sent it is used as it is, not built and parsed again.
        if parts.uri.path() != path || parts.uri.query() != query.as_deref() {
            let pq = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.to_owned(),
            };
            parts.uri = Uri::try_from(pq).map_err(|e| ProxyError::Internal(format!("upstream uri: {e}")))?;
        }
        parts.version = Version::HTTP_11;
        // Set on the wire rather than in the header map: each would cost a map insert,
        // and the map is only read once more, to be written out.
        let internal = ProxyError::Internal;
        let mut push =
            |name: &'a HeaderName, value: Option<&'a [u8]>| set.push(name, value.map(Cow::Borrowed)).map_err(internal);
        let host = match (&ctx.host, self.preserve_host) {
            (Some(host), true) => host,
            _ => &self.host,
        };
        push(&X_FORWARDED_HOST_NAME, ctx.host.as_ref().map(HeaderValue::as_bytes))?;
        push(&HOST_NAME, Some(host.as_bytes()))?;
        push(&X_FORWARDED_PROTO_NAME, Some(ctx.forwarded_proto.as_bytes()))?;
        push(&X_FORWARDED_FOR_NAME, ctx.forwarded_for.as_bytes())?;
        push(&X_REQUEST_ID_NAME, Some(ctx.id.as_bytes()))?;
        if !delegated {
            self.assert_identity(set, ctx.jira_user.as_deref()).map_err(internal)?;
        }
        if let Some(cookie) = session {
            parts.headers.append(http::header::COOKIE, cookie);
        }
        if let (IdentityMode::OAuth1 { signer, signed_url, .. }, Some(_)) = (&self.identity, oauth_user) {
            let base = if signed_url.is_empty() {
                format!("{}://{}", self.scheme, self.authority)
            } else {
                signed_url.clone()
            };
            let mut params = query
                .as_deref()
                .map(crate::auth::oauth1::rfc5849::form_pairs)
                .unwrap_or_default();
            params.extend(form.unwrap_or(&[]).iter().cloned());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let auth = signer
                .authorization(parts.method.as_str(), &format!("{base}{path}"), &params, now)
                .map_err(ProxyError::Internal)?;
            set.push_checked(&AUTHORIZATION_NAME, Some(Cow::Owned(auth.into_bytes())))
                .map_err(internal)?;
        }
        Ok(())
    }

    /// The identity Jira is to trust, as fields for `set` (a field without a value removes
    /// the caller's fields of that name).
    fn assert_identity<'a>(&'a self, set: &mut Fields<'a>, user: Option<&'a str>) -> Result<(), String> {
        match &self.identity {
            IdentityMode::Header { name, secret } => {
                // The caller's own credential stays with the proxy.
                set.push(&AUTHORIZATION_NAME, None)?;
                set.push_checked(name, user.map(|u| Cow::Borrowed(u.as_bytes())))?;
                // Checked as a field value when the configuration was loaded: not again
                // on every request.
                if let Some((sname, s)) = secret {
                    set.push(sname, Some(Cow::Borrowed(s.expose())))?;
                }
            }
            IdentityMode::Passthrough => {}
            // The signed Authorization replaces the caller's (see build_request).
            IdentityMode::OAuth1 { .. } => set.push(&AUTHORIZATION_NAME, None)?,
        }
        Ok(())
    }
}

/// The names of the fields the proxy sets, as statics: the fields borrow their names.
static HOST_NAME: HeaderName = HOST;
static AUTHORIZATION_NAME: HeaderName = AUTHORIZATION;
static X_FORWARDED_HOST_NAME: HeaderName = headers::X_FORWARDED_HOST;
static X_FORWARDED_PROTO_NAME: HeaderName = headers::X_FORWARDED_PROTO;
static X_FORWARDED_FOR_NAME: HeaderName = headers::X_FORWARDED_FOR;
static X_REQUEST_ID_NAME: HeaderName = headers::X_REQUEST_ID;

impl Upstream {
    /// Asks Jira whether a Basic credential is valid: `GET check_path` with it, as Jira's
    /// own REST clients would. Jira's answers, from its Seraph login layer:
    /// 200 with a user = valid, unless `X-Seraph-LoginReason: AUTHENTICATED_FAILED` (Jira
    /// served the call anonymously); 401 = invalid; 403 with
    /// `X-Authentication-Denied-Reason: CAPTCHA_CHALLENGE` = CAPTCHA lock. Anything else
    /// is an error (the caller fails closed).
    pub async fn check_basic(&self, check_path: &str, authorization: &HeaderValue) -> Result<JiraAnswer, String> {
        let resp = self.ask(check_path, authorization).await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let login_reason = header("x-seraph-loginreason");
        let denied = header("x-authentication-denied-reason");
        let user_header = header("x-ausername");
        match resp.status().as_u16() {
            401 => Ok(JiraAnswer::Invalid("jira_rejected")),
            403 if denied.to_ascii_uppercase().contains("CAPTCHA") => Ok(JiraAnswer::Captcha),
            403 => Ok(JiraAnswer::Invalid("jira_denied")),
            200 if login_reason.to_ascii_uppercase().contains("FAILED")
                || login_reason.to_ascii_uppercase().contains("DENIED")
                || user_header.eq_ignore_ascii_case("anonymous") =>
            {
                Ok(JiraAnswer::Invalid("jira_rejected"))
            }
            200 => {
                let body = http_body_util::Limited::new(resp.into_body(), CHECK_BODY_LIMIT)
                    .collect()
                    .await
                    .map_err(|e| format!("reading Jira's answer: {e}"))?
                    .to_bytes();
                let json: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|_| "Jira's /myself answer is not JSON".to_string())?;
                match json.get("name").and_then(|n| n.as_str()) {
                    Some(name) if !name.is_empty() => Ok(JiraAnswer::Valid(name.to_owned())),
                    _ => Err("Jira's /myself answer has no user name".into()),
                }
            }
            s => Err(format!("Jira answered {s} to the credential check")),
        }
    }
}

impl Upstream {
    /// `GET path_and_query` on Jira with the proxy's own credential for a question of its
    /// own (a password check, a group lookup), bounded by the response timeout.
    async fn ask(&self, path_and_query: &str, authorization: &HeaderValue) -> Result<Response<Pooled>, String> {
        let uri = Uri::try_from(path_and_query).map_err(|e| e.to_string())?;
        let mut auth = authorization.clone();
        auth.set_sensitive(true);
        let req = Request::get(uri)
            .header(HOST, self.host.clone())
            .header(AUTHORIZATION, auth)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "jira-auth-proxy")
            .body(crate::error::full(bytes::Bytes::new()))
            .map_err(|e| e.to_string())?;
        let mut resp = tokio::time::timeout(self.response_timeout, self.pool.send(req))
            .await
            .map_err(|_| "Jira did not answer in time".to_string())??;
        // Whatever the caller reads, it finds in the map.
        if let Some(lines) = resp.body_mut().take_lines() {
            lines.into_map(resp.headers_mut());
        }
        Ok(resp)
    }

    /// Jira accepts TCP connections (for readiness; no request is sent).
    pub async fn reachable(&self, timeout: Duration) -> Result<(), String> {
        let addr = self.pool.origin().addr();
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("Jira at {}: {e}", self.authority)),
            Err(_) => Err(format!("Jira at {}: no answer within {timeout:?}", self.authority)),
        }
    }

    /// A user's groups as Jira knows them: `GET {path}?username=U&expand=groups` with a
    /// service credential. A user Jira does not know has none; anything else but an
    /// answer is an error (the caller fails closed).
    pub async fn user_groups(
        &self,
        path: &str,
        user: &str,
        authorization: &HeaderValue,
    ) -> Result<Vec<String>, String> {
        let query = format!(
            "{path}?username={}&expand=groups",
            crate::auth::oauth1::rfc5849::encode(user)
        );
        let resp = self.ask(&query, authorization).await?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(Vec::new()),
            s => {
                return Err(format!(
                    "Jira answered {s} to the group lookup (check the service credential)"
                ));
            }
        }
        let body = http_body_util::Limited::new(resp.into_body(), CHECK_BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| format!("reading Jira's answer: {e}"))?
            .to_bytes();
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| "Jira's user answer is not JSON".to_string())?;
        let items = json
            .pointer("/groups/items")
            .and_then(|i| i.as_array())
            .ok_or_else(|| "Jira's user answer has no groups".to_string())?;
        Ok(items
            .iter()
            .filter_map(|g| g.get("name").and_then(|n| n.as_str()).map(str::to_owned))
            .collect())
    }
}
