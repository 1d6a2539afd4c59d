//! Test harness: the real proxy in-process on 127.0.0.1:0 in front of a fake Jira that
//! records what it received and checks what Jira's header authenticator would check.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod idp;
pub mod oauth1;

use jira_auth_proxy::config::Config;
use jira_auth_proxy::error::{Body as ProxyBody, full};
use jira_auth_proxy::server::{self, Running};

/// The secret the fake Jira's header authenticator requires (when configured so).
pub const SHARED_SECRET: &str = "test-shared-secret";

/// A loopback address nothing listens on (for the moment): a port the system has just
/// given out and taken back.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A new, empty folder. Never one left by an earlier test process: process ids are reused
/// during a long test run, and a left-over audit log would add lines to a test's own.
pub fn temp_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    loop {
        let d = std::env::temp_dir().join(format!(
            "jap-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        match std::fs::create_dir(&d) {
            Ok(()) => return d,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", d.display()),
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A cheap argon2id hash (tests only; the parameters are in the PHC string).
pub fn hash(password: &str) -> String {
    jira_auth_proxy::auth::password::hash_with(password.as_bytes(), 1024, 1).unwrap()
}

/// One request as the fake Jira received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body_sha256: String,
    /// What the fake Jira's header authenticator concluded.
    pub user: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum JiraTrust {
    /// Trust X-Forwarded-User as is.
    Header,
    /// Trust it only with X-Proxy-Secret: SHARED_SECRET.
    HeaderWithSecret,
    /// Jira's application-link OAuth: a valid RSA-SHA1 two-legged signature from the
    /// configured consumer runs the request as `xoauth_requestor_id` (when impersonation
    /// is honoured), otherwise anonymously.
    OAuth1,
}

/// Jira's own password check, as Seraph answers on `/rest/api/2/myself` with Basic:
/// right password = 200 with the user; wrong = 401 and a failure counted; after
/// `CAPTCHA_AFTER` consecutive failures the account needs a CAPTCHA (403 with
/// `X-Authentication-Denied-Reason: CAPTCHA_CHALLENGE`) even with the right password.
/// User `ghost200` gets Jira's odd answer: 200, served anonymously, with
/// `X-Seraph-LoginReason: AUTHENTICATED_FAILED`.
pub const CAPTCHA_AFTER: u32 = 3;

#[derive(Default)]
struct Account {
    password: String,
    failures: u32,
}

#[derive(Default)]
pub struct JiraState {
    seen: Mutex<Vec<Seen>>,
    accounts: Mutex<std::collections::HashMap<String, Account>>,
    /// Basic credentials Jira itself checked.
    pub basic_checks: AtomicU64,
    /// `JiraTrust::OAuth1`: the consumer key and its public key (SPKI DER).
    pub oauth_consumer: Mutex<Option<(String, Vec<u8>)>>,
    /// `JiraTrust::OAuth1`: whether impersonation is allowed for the consumer.
    pub honour_impersonation: std::sync::atomic::AtomicBool,
    /// Group lookups answered (`GET /rest/api/2/user?expand=groups` by the service account).
    pub group_lookups: AtomicU64,
}

/// The service account Jira's group lookups need, and the groups Jira knows.
pub const SERVICE_AUTH: (&str, &str) = ("svc-proxy", "svc-pw");
const JIRA_GROUPS: &[(&str, &[&str])] = &[
    ("alice", &["jira-software-users"]),
    ("bob", &["jira-administrators", "jira-software-users"]),
];

pub struct FakeJira {
    pub addr: SocketAddr,
    pub state: Arc<JiraState>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FakeJira {
    /// Jira goes away: no new connections (open ones finish what they are doing).
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FakeJira {
    pub async fn start(trust: JiraTrust) -> FakeJira {
        Self::start_with(trust, None).await
    }

    pub async fn start_tls(trust: JiraTrust, acceptor: tokio_rustls::TlsAcceptor) -> FakeJira {
        Self::start_with(trust, Some(acceptor)).await
    }

    /// A fake Jira that also checks Basic credentials itself, for these accounts.
    pub async fn with_accounts(accounts: &[(&str, &str)]) -> FakeJira {
        let jira = Self::start_with(JiraTrust::Header, None).await;
        let mut map = jira.state.accounts.lock().unwrap();
        for (u, p) in accounts {
            map.insert(
                u.to_string(),
                Account {
                    password: p.to_string(),
                    failures: 0,
                },
            );
        }
        drop(map);
        jira
    }

    pub fn failures(&self, user: &str) -> u32 {
        self.state.accounts.lock().unwrap().get(user).map_or(0, |a| a.failures)
    }

    pub fn basic_checks(&self) -> u64 {
        self.state.basic_checks.load(Ordering::SeqCst)
    }

    /// A fake Jira on a given port (to bring one back where another was).
    pub async fn start_on(port: u16) -> FakeJira {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        Self::serve(listener, JiraTrust::Header, None)
    }

    async fn start_with(trust: JiraTrust, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeJira {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, trust, tls)
    }

    fn serve(listener: TcpListener, trust: JiraTrust, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeJira {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(JiraState::default());
        let seen2 = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = seen2.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| jira(req, trust, state.clone()));
                    let b = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(acc) => {
                            if let Ok(s) = acc.accept(stream).await {
                                let _ = b.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        FakeJira { addr, state, accept }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("Jira saw no request")
    }

    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }
}

fn query_param(target: &str, name: &str) -> Option<u64> {
    let q = target.split_once('?')?.1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// Jira's two-legged OAuth check, as an application link with impersonation runs it.
fn oauth_user(state: &JiraState, parts: &http::request::Parts, form: &[(String, String)]) -> Option<String> {
    use jira_auth_proxy::auth::oauth1::rfc5849;
    let (consumer, spki) = state.oauth_consumer.lock().unwrap().clone()?;
    let header = parts.headers.get("authorization")?.to_str().ok()?;
    let params = rfc5849::parse_header(header)?.ok()?;
    let query = parts.uri.query().map(rfc5849::form_pairs).unwrap_or_default();
    let all = rfc5849::collect(&params, &query, form).ok()?;
    let get = |n: &str| all.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    if get("oauth_consumer_key")? != consumer || !get("oauth_token").unwrap_or_default().is_empty() {
        return None;
    }
    let host = parts.headers.get("host")?.to_str().ok()?;
    let (h, port) = host.rsplit_once(':').map_or((host, None), |(h, p)| (h, p.parse().ok()));
    let base = rfc5849::base_string(
        parts.method.as_str(),
        &rfc5849::base_uri("http", h, port, parts.uri.path()),
        &all,
    );
    let key = rfc5849::rsa_public_key(&spki).ok()?;
    if !rfc5849::verify_rsa_sha1(&base, &get("oauth_signature")?, &key) {
        return None;
    }
    get("xoauth_requestor_id").filter(|_| state.honour_impersonation.load(Ordering::SeqCst))
}

/// Seraph's Basic check on `/rest/api/2/myself`, when the fake has accounts.
fn seraph(state: &JiraState, headers: &HeaderMap) -> Option<Response<ProxyBody>> {
    use base64::Engine;
    let auth = headers.get("authorization")?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(auth).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    let mut accounts = state.accounts.lock().unwrap();
    if accounts.is_empty() {
        return None;
    }
    state.basic_checks.fetch_add(1, Ordering::SeqCst);
    let denied = |status: StatusCode, reason: &str| {
        let mut r = json(
            status,
            serde_json::json!({"errorMessages": ["Login failed"], "errors": {}}),
            None,
        );
        r.headers_mut().insert("x-seraph-loginreason", reason.parse().unwrap());
        r
    };
    if user == "ghost200" {
        let mut r = json(StatusCode::OK, serde_json::json!({"name": null}), None);
        r.headers_mut()
            .insert("x-seraph-loginreason", "AUTHENTICATED_FAILED".parse().unwrap());
        return Some(r);
    }
    let Some(account) = accounts.get_mut(user) else {
        return Some(denied(StatusCode::UNAUTHORIZED, "AUTHENTICATED_FAILED"));
    };
    if account.failures >= CAPTCHA_AFTER {
        let mut r = denied(StatusCode::FORBIDDEN, "AUTHENTICATION_DENIED");
        r.headers_mut().insert(
            "x-authentication-denied-reason",
            "CAPTCHA_CHALLENGE; login-url=http://jira/login.jsp".parse().unwrap(),
        );
        return Some(r);
    }
    if account.password != password {
        account.failures += 1;
        return Some(denied(StatusCode::UNAUTHORIZED, "AUTHENTICATED_FAILED"));
    }
    account.failures = 0;
    let body = serde_json::json!({"name": user, "key": format!("JIRAUSER-{user}"), "active": true});
    let mut r = json(StatusCode::OK, body, Some(user));
    r.headers_mut().insert("x-seraph-loginreason", "OK".parse().unwrap());
    Some(r)
}

async fn jira(
    req: Request<Incoming>,
    trust: JiraTrust,
    state: Arc<JiraState>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let secret_ok = parts
        .headers
        .get("x-proxy-secret")
        .is_some_and(|v| v.as_bytes() == SHARED_SECRET.as_bytes());
    let header_user = |ok: bool| {
        parts
            .headers
            .get("x-forwarded-user")
            .filter(|_| ok)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    // Stream the body through a digest: never hold it whole (small forms are kept, as
    // Jira reads their parameters like query parameters).
    let is_form = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded"));
    let mut form_bytes = Vec::new();
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut len = 0u64;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(d) = frame.data_ref() {
            len += d.len() as u64;
            ctx.update(d);
            if is_form && form_bytes.len() < 65536 {
                form_bytes.extend_from_slice(d);
            }
        }
    }
    let form = jira_auth_proxy::auth::oauth1::rfc5849::form_pairs(&String::from_utf8_lossy(&form_bytes));
    let user = match trust {
        JiraTrust::Header => header_user(true),
        JiraTrust::HeaderWithSecret => header_user(secret_ok),
        JiraTrust::OAuth1 => oauth_user(&state, &parts, &form),
    };
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body_len: len,
        body_sha256: hex(ctx.finish().as_ref()),
        user: user.clone(),
    });
    let path = parts.uri.path();
    if path == "/rest/api/2/myself"
        && let Some(r) = seraph(&state, &parts.headers)
    {
        return Ok(r);
    }
    // A credential check Jira is slow to answer.
    if let Some(ms) = path.strip_prefix("/test/slow-myself/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        if let Some(r) = seraph(&state, &parts.headers) {
            return Ok(r);
        }
    }
    if let Some(ms) = path.strip_prefix("/test/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if path == "/test/download" {
        let n = query_param(&target, "bytes").unwrap_or(0);
        let mut r = Response::new(PatternBody::new(n).boxed());
        r.headers_mut().insert("content-length", n.into());
        return Ok(r);
    }
    if let Some(r) = jira_rest(&state, &parts, path, user.as_deref(), len) {
        return Ok(r);
    }
    if path == "/test/hop" {
        let mut r = Response::new(full("hop"));
        let h = r.headers_mut();
        h.insert("connection", "x-secret-internal".parse().unwrap());
        h.insert("x-secret-internal", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-ordinary", "kept".parse().unwrap());
        h.insert("x-request-id", "jira-side".parse().unwrap());
        return Ok(r);
    }
    if path == "/rest/api/2/myself" && user.is_none() {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errorMessages": ["not authenticated"], "errors": {}}),
            None,
        ));
    }
    let body = serde_json::json!({"name": user, "len": len, "sha256": hex(&[])});
    Ok(json(StatusCode::OK, body, user.as_deref()))
}

/// The few REST resources the real clients in tests/interop need, answered as Jira
/// answers them: server info, creating and reading an issue, attaching a file (which,
/// like Jira, needs `X-Atlassian-Token: no-check`), and a response that sets Jira's
/// session cookies (`/test/cookies`).
fn jira_rest(
    state: &JiraState,
    parts: &http::request::Parts,
    path: &str,
    user: Option<&str>,
    len: u64,
) -> Option<Response<ProxyBody>> {
    let base = "http://jira.example.com";
    let method = parts.method.as_str();
    let r = match (method, path) {
        ("GET", "/rest/api/2/user") => {
            let service = basic(SERVICE_AUTH.0, SERVICE_AUTH.1);
            if parts
                .headers
                .get("authorization")
                .is_none_or(|v| v.as_bytes() != service.as_bytes())
            {
                return Some(json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"errorMessages": ["not authenticated"], "errors": {}}),
                    None,
                ));
            }
            state.group_lookups.fetch_add(1, Ordering::SeqCst);
            let target = parts.uri.query().unwrap_or("");
            let name = jira_auth_proxy::auth::oauth1::rfc5849::form_pairs(target)
                .into_iter()
                .find(|(k, _)| k == "username")
                .map(|(_, v)| v)
                .unwrap_or_default();
            match JIRA_GROUPS.iter().find(|(u, _)| *u == name) {
                Some((u, groups)) => {
                    let items: Vec<_> = groups.iter().map(|g| serde_json::json!({"name": g})).collect();
                    json(
                        StatusCode::OK,
                        serde_json::json!({"name": u, "groups": {"size": items.len(), "items": items}}),
                        Some(SERVICE_AUTH.0),
                    )
                }
                None => json(
                    StatusCode::NOT_FOUND,
                    serde_json::json!({"errorMessages": [format!("The user named '{name}' does not exist")], "errors": {}}),
                    Some(SERVICE_AUTH.0),
                ),
            }
        }
        ("GET", "/rest/api/2/serverInfo") => json(
            StatusCode::OK,
            serde_json::json!({"baseUrl": base, "version": "9.12.2", "versionNumbers": [9, 12, 2],
                "deploymentType": "Server", "buildNumber": 9120002, "serverTitle": "Jira"}),
            user,
        ),
        _ if user.is_none() && path.starts_with("/rest/api/2/issue") => json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errorMessages": ["You are not authenticated."], "errors": {}}),
            None,
        ),
        ("POST", "/rest/api/2/issue") => json(
            StatusCode::CREATED,
            serde_json::json!({"id": "10001", "key": "X-1", "self": format!("{base}/rest/api/2/issue/10001")}),
            user,
        ),
        ("GET", "/rest/api/2/issue/X-1") => json(
            StatusCode::OK,
            serde_json::json!({"id": "10001", "key": "X-1", "self": format!("{base}/rest/api/2/issue/10001"),
                "fields": {"summary": "made through the proxy", "project": {"key": "X"},
                           "reporter": {"name": user}}}),
            user,
        ),
        ("POST", "/rest/api/2/issue/X-1/attachments") => {
            let no_check = parts
                .headers
                .get("x-atlassian-token")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no-check"));
            if !no_check {
                return Some(json(
                    StatusCode::FORBIDDEN,
                    serde_json::json!({"errorMessages": ["XSRF check failed"], "errors": {}}),
                    user,
                ));
            }
            json(
                StatusCode::OK,
                serde_json::json!([{"id": "20001", "self": format!("{base}/rest/api/2/attachment/20001"),
                    "filename": "notes.txt", "size": len, "mimeType": "text/plain",
                    "content": format!("{base}/secure/attachment/20001/notes.txt"),
                    "author": {"name": user}}]),
                user,
            )
        }
        ("GET", "/test/cookies") => {
            let mut r = json(StatusCode::OK, serde_json::json!({"name": user}), user);
            let h = r.headers_mut();
            for c in [
                "JSESSIONID=ABCDEF0123; Path=/; HttpOnly",
                "atlassian.xsrf.token=BQ93|lin; Path=/",
                "seraph.rememberme.cookie=1234%3Aabcd; Path=/; HttpOnly",
                "theme=dark; Path=/",
            ] {
                h.append("set-cookie", c.parse().unwrap());
            }
            r
        }
        _ => return None,
    };
    Some(r)
}

fn json(status: StatusCode, v: serde_json::Value, user: Option<&str>) -> Response<ProxyBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("x-ausername", user.unwrap_or("anonymous").parse().unwrap());
    // Jira's own request id, as it sends on every answer.
    r.headers_mut().insert("x-arequestid", "932x1234x1".parse().unwrap());
    r
}

/// A deterministic body of `n` bytes produced chunk by chunk (never held whole).
pub struct PatternBody {
    remaining: u64,
    chunk: Bytes,
}

impl PatternBody {
    pub fn new(n: u64) -> Self {
        let chunk: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(31).wrapping_add(7) % 251) as u8)
            .collect();
        PatternBody {
            remaining: n,
            chunk: Bytes::from(chunk),
        }
    }

    /// The SHA-256 a receiver must compute for `n` bytes of this pattern.
    pub fn sha256(n: u64) -> String {
        let mut b = PatternBody::new(n);
        let mut ctx = digest::Context::new(&digest::SHA256);
        while b.remaining > 0 {
            let take = b.remaining.min(b.chunk.len() as u64) as usize;
            ctx.update(&b.chunk[..take]);
            b.remaining -= take as u64;
        }
        hex(ctx.finish().as_ref())
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = jira_auth_proxy::error::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, jira_auth_proxy::error::BodyError>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let take = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= take as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..take)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A proxy started from config text. `{jira}` in the text becomes the fake Jira's
/// address, `{dir}` the test's temp folder; the audit log goes to `{dir}/audit.log`.
pub struct Proxy {
    pub running: Running,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Proxy {
    pub async fn start(text: &str, jira: SocketAddr) -> Proxy {
        Self::start_in(text, jira, temp_dir()).await
    }

    /// As `start`, with relative paths in the config resolved against `dir`.
    pub async fn start_in(text: &str, jira: SocketAddr, dir: PathBuf) -> Proxy {
        let text = text
            .replace("{jira}", &jira.to_string())
            .replace("{dir}", dir.to_str().unwrap());
        let text = if text.contains("[audit]") {
            text
        } else {
            format!("{text}\n[audit]\nto = \"{}\"\n", dir.join("audit.log").display())
        };
        let cfg = Config::parse(&text, &dir).unwrap_or_else(|e| panic!("test config:\n{e}\n---\n{text}"));
        // Kept beside the audit log, for tests that run the command line on it and for
        // reloads (which read it again).
        std::fs::write(dir.join("config.toml"), &text).unwrap();
        let running = server::start_from(cfg, Some(dir.join("config.toml")))
            .await
            .expect("proxy starts");
        let addr = running.addr;
        Proxy { running, addr, dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Writes a new config (same substitutions as at start) and reloads it.
    pub async fn reload_with(&self, text: &str, jira: SocketAddr) -> Result<(), String> {
        let text = text
            .replace("{jira}", &jira.to_string())
            .replace("{dir}", self.dir.to_str().unwrap());
        let text = if text.contains("[audit]") {
            text
        } else {
            format!("{text}\n[audit]\nto = \"{}\"\n", self.dir.join("audit.log").display())
        };
        std::fs::write(self.dir.join("config.toml"), text).unwrap();
        self.running.reload().await
    }

    /// The admin listener's answer to `path` (status, body).
    pub async fn admin(&self, path: &str) -> (u16, String) {
        let addr = self.running.admin_addr.expect("an [admin] listener");
        let r = get(&format!("http://{addr}{path}"), &[]).await;
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    }

    /// Audit lines written so far.
    pub fn audit(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default()
    }

    pub fn basic_verifications(&self) -> u64 {
        self.running.runtime().basic.as_ref().map_or(0, |b| b.verifications())
    }
}

/// The session id from alice's login (`alice-pw`) at `proxy`'s session endpoint.
pub async fn alice_session(proxy: &Proxy) -> String {
    let r = send(
        "POST",
        &proxy.url("/rest/auth/1/session"),
        &[("content-type", "application/json")],
        Bytes::from(r#"{"username":"alice","password":"alice-pw"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "alice's login");
    r.json()["session"]["value"].as_str().unwrap().to_owned()
}

/// A config with one Basic member, users alice (password "alice-pw") and bob
/// ("bob-pw", group jira-administrators), header identity mode, default deny, and
/// authenticated callers allowed.
pub fn basic_config(extra: &str) -> String {
    format!(
        r#"version = 1
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://{{jira}}"
response_timeout = "2s"
connect_timeout = "1s"
[[auth.chain]]
type = "basic"
lockout = {{ max_failures = 3, window = "10m" }}
[[users]]
name = "alice"
password_hash = "{}"
groups = ["jira-users"]
[[users]]
name = "bob"
password_hash = "{}"
groups = ["jira-administrators"]
{extra}
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#,
        hash("alice-pw"),
        hash("bob-pw")
    )
}

/// `config` (a `basic_config`, perhaps altered) with `rules` in place of its access rules.
pub fn with_rules(config: &str, rules: &str) -> String {
    let cut = config.find("[[access.rules]]").expect("a config with rules");
    format!("{}{rules}", &config[..cut])
}

pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a GET with the given headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    send("GET", url, headers, Bytes::new()).await
}

pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> Resp {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = client()
        .request(b.body(Full::new(body)).unwrap())
        .await
        .expect("request sent");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// Writes raw bytes to `addr` and returns everything read until the server closes
/// (or 5 s pass). For requests an HTTP client library would refuse to send. A server may
/// answer and close before it has read all of a huge request (a 431, say): the write then
/// fails, and what it answered is still read and returned.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    exchange(TcpStream::connect(addr).await.unwrap(), request).await
}

/// `n` Basic guesses at `proxy` from 127.0.0.2, each under a new user name (`user0`,
/// `user1`, …) on a connection of its own: the statuses of the answers, counted.
pub async fn guesses_under_new_names(proxy: &Proxy, n: usize) -> std::collections::BTreeMap<u16, usize> {
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..n {
        let auth = basic(&format!("user{i}"), "guess");
        let request = format!("GET /x HTTP/1.1\r\nHost: jira\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
        let answer = raw_from(other, proxy.addr, request.as_bytes()).await;
        *statuses.entry(raw_status(&answer)).or_insert(0) += 1;
    }
    statuses
}

/// [`raw`] from another loopback address (`from`, e.g. 127.0.0.2): what a second client
/// machine would send.
pub async fn raw_from(from: std::net::Ipv4Addr, addr: SocketAddr, request: &[u8]) -> String {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((from, 0).into()).unwrap();
    exchange(socket.connect(addr).await.unwrap(), request).await
}

async fn exchange(mut s: TcpStream, request: &[u8]) -> String {
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A test CA and a leaf for localhost / 127.0.0.1, written as PEM files.
pub struct TestPki {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub ca_der: rustls_pki_types::CertificateDer<'static>,
}

pub fn pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = temp_dir();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let p = TestPki {
        ca_pem: dir.join("ca.pem"),
        cert_pem: dir.join("cert.pem"),
        key_pem: dir.join("key.pem"),
        ca_der: ca_cert.der().clone(),
    };
    std::fs::write(&p.ca_pem, ca_cert.pem()).unwrap();
    std::fs::write(&p.cert_pem, leaf.pem()).unwrap();
    std::fs::write(&p.key_pem, leaf_key.serialize_pem()).unwrap();
    p
}

/// A rustls client config trusting only the test CA, offering the given ALPN protocols.
pub fn tls_client(pki: &TestPki, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A Redis store at `url` (plain, no CA file) with its keys under `prefix`.
pub fn redis_store(
    url: &str,
    prefix: &str,
    connect_timeout: Duration,
    response_timeout: Duration,
) -> jira_auth_proxy::store::RedisStore {
    jira_auth_proxy::store::RedisStore::new(jira_auth_proxy::store::RedisSettings {
        url: jira_auth_proxy::config::Secret::from_bytes(url.as_bytes().to_vec()),
        key_prefix: prefix.into(),
        connect_timeout,
        response_timeout,
        ca_file: None,
    })
    .expect("a usable Redis URL")
}
