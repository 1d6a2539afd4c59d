//! `jira-auth-proxy demo`: a stand-in Jira on loopback (clearly NOT Jira: it only knows a
//! few REST endpoints and trusts the proxy's identity header when the shared secret
//! matches, like a header authenticator configured in Jira) plus the proxy in front of
//! it, with curl commands that show a success, a 401 and a spoofing attempt stripped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::{Body, full};
use crate::server::{self, Running};

pub const DEMO_USER: &str = "alice";
pub const DEMO_PASSWORD: &str = "alice-demo-password";
const SECRET: &str = "demo-shared-secret-not-for-production";

/// A running demo.
pub struct Demo {
    pub proxy: Running,
    pub jira: SocketAddr,
    /// Requests that reached the stand-in Jira.
    pub jira_hits: Arc<AtomicU64>,
    /// A read-only API key for `ci-bot`, made for this run.
    pub api_key: String,
}

/// The demo's config, as an admin would write it.
pub fn config_text(listen: SocketAddr, jira: SocketAddr, alice_hash: &str, key_hash: &str) -> String {
    format!(
        r#"version = 1

[server]
listen = "{listen}"

[upstream]
url = "http://{jira}"

[upstream.identity]
mode = "header"
header = "X-Forwarded-User"
secret_header = "X-Proxy-Secret"
secret = "{SECRET}"

[audit]
to = "stdout"

[[auth.chain]]
type = "api_key"

[[auth.chain]]
type = "basic"
cache_ttl = "5m"
lockout = {{ max_failures = 5, window = "15m" }}

[[api_keys]]
id = "demo"
hash = "{key_hash}"
user = "ci-bot"
name = "demo key"
scopes = ["read"]

[[users]]
name = "{DEMO_USER}"
password_hash = "{alice_hash}"
groups = ["jira-users"]

[access]
default = "deny"

[[access.rules]]
name = "server info is public"
paths = ["/rest/api/2/serverInfo"]
effect = "allow"

[[access.rules]]
name = "everyone authenticated"
authenticated = true
effect = "allow"
"#
    )
}

pub async fn start(listen: SocketAddr) -> anyhow::Result<Demo> {
    let jira_listener = TcpListener::bind("127.0.0.1:0").await?;
    let jira = jira_listener.local_addr()?;
    let jira_hits = Arc::new(AtomicU64::new(0));
    tokio::spawn(stand_in_jira(jira_listener, jira_hits.clone()));
    let hash = crate::auth::password::hash(DEMO_PASSWORD.as_bytes()).map_err(anyhow::Error::msg)?;
    let (api_key, _) = crate::auth::api_key::generate().map_err(anyhow::Error::msg)?;
    let key_hash = crate::auth::api_key::format_digest(&crate::auth::api_key::digest_key(&api_key));
    let cfg = Config::parse(&config_text(listen, jira, &hash, &key_hash), std::path::Path::new("."))
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let proxy = server::start(cfg).await?;
    Ok(Demo {
        proxy,
        jira,
        jira_hits,
        api_key,
    })
}

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let mut signals = server::ShutdownSignal::new()?;
    let demo = start(listen).await?;
    let p = format!("http://{}", demo.proxy.addr);
    let (u, pw) = (DEMO_USER, DEMO_PASSWORD);
    eprintln!(
        r#"
  jira-auth-proxy demo
  stand-in Jira (NOT a real Jira; it answers /rest/api/2/myself, /serverInfo, /issue/KEY)
      http://{jira}
  proxy (Basic auth, header identity mode; audit lines go to stdout)
      {p}

  Try these in another terminal:

  # 1. Success: the proxy checks alice's password, Jira is told "alice"
  curl -s -u {u}:{pw} {p}/rest/api/2/myself

  # 2. Wrong password: 401 with WWW-Authenticate, nothing reaches Jira
  curl -si -u {u}:wrong {p}/rest/api/2/myself

  # 3. Spoofing: the client's own X-Forwarded-User is stripped; Jira still sees alice
  curl -s -u {u}:{pw} -H 'X-Forwarded-User: admin' -H 'X_Forwarded_User: admin' {p}/rest/api/2/myself

  # 4. No credentials: 401 and the challenge
  curl -si {p}/rest/api/2/myself

  # 5. A rule lets anonymous callers read the server info
  curl -s {p}/rest/api/2/serverInfo

  # 6. A read-only API key for ci-bot (made for this run): reads pass, writes are refused
  curl -s -H 'X-API-Key: {key}' {p}/rest/api/2/issue/DEMO-1
  curl -si -X POST -H 'X-API-Key: {key}' {p}/rest/api/2/issue

  # 7. An ambiguous path is refused before anything else
  curl -si --path-as-is '{p}/rest/api/2/..%2f..%2fsecure/admin'

  Ctrl-C stops the demo.
"#,
        jira = demo.jira,
        key = demo.api_key,
    );
    signals.wait().await;
    demo.proxy.shutdown().await;
    eprintln!(
        "  {} request(s) reached the stand-in Jira.",
        demo.jira_hits.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn stand_in_jira(listener: TcpListener, hits: Arc<AtomicU64>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let hits = hits.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                hits.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, Infallible>(jira_answer(&req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn json(status: StatusCode, user: Option<&str>, body: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        "content-type",
        http::HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.insert(
        "x-stand-in-jira",
        http::HeaderValue::from_static("jira-auth-proxy demo; not a real Jira"),
    );
    let au = user.and_then(|u| http::HeaderValue::from_str(u).ok());
    h.insert("x-ausername", au.unwrap_or(http::HeaderValue::from_static("anonymous")));
    r
}

/// Like a Jira header authenticator: trust the header only with the proxy's secret.
fn jira_answer(req: &Request<Incoming>) -> Response<Body> {
    let trusted = req
        .headers()
        .get("x-proxy-secret")
        .is_some_and(|v| v.as_bytes() == SECRET.as_bytes());
    let user = req
        .headers()
        .get("x-forwarded-user")
        .filter(|_| trusted)
        .and_then(|v| v.to_str().ok());
    eprintln!(
        "  [stand-in Jira] {} {} as {}",
        req.method(),
        req.uri().path(),
        user.unwrap_or("anonymous")
    );
    let path = req.uri().path();
    if path == "/rest/api/2/serverInfo" {
        let body = serde_json::json!({"version": "0.0.0-stand-in", "deploymentType": "Server",
            "serverTitle": "Stand-in Jira (jira-auth-proxy demo)"});
        return json(StatusCode::OK, user, body);
    }
    let Some(user) = user else {
        let body = serde_json::json!({"errorMessages": ["You are not authenticated. Authentication required to perform this operation."], "errors": {}});
        return json(StatusCode::UNAUTHORIZED, None, body);
    };
    if path == "/rest/api/2/myself" {
        let body = serde_json::json!({"name": user, "key": user, "displayName": user, "active": true,
            "self": format!("/rest/api/2/user?username={user}")});
        return json(StatusCode::OK, Some(user), body);
    }
    if let Some(key) = path.strip_prefix("/rest/api/2/issue/") {
        let body =
            serde_json::json!({"key": key, "fields": {"summary": "A stand-in issue", "reporter": {"name": user}}});
        return json(StatusCode::OK, Some(user), body);
    }
    let body = serde_json::json!({"errorMessages": ["Not found on the stand-in Jira."], "errors": {}});
    json(StatusCode::NOT_FOUND, Some(user), body)
}
