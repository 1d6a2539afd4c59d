//! The request path, top to bottom. Read `handle` and see DESIGN.md's picture:
//! admit → (local endpoints) → authenticate → identify → authorize → forward → audit.

pub mod admit;
pub mod path;

use std::net::{IpAddr, SocketAddr};
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Limited};

use crate::auth::oauth1::provider;
use crate::auth::session::{self, SessionAuth};
use crate::auth::{AuthKind, AuthRequest, Principal, Verdict};
use crate::config::{Effect, RateSpec};
use crate::error::{Body, ProxyError};
use crate::runtime::Runtime;
use crate::server::Answer;
use crate::wire::HeaderLines;
use path::NormalPath;

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Everything decided about one request. Identity lives here, never in a header a
/// client could have set.
pub struct RequestCtx {
    pub id: admit::RequestId,
    /// The caller's `Authorization` (the only one: `admit` refuses two), taken by `admit`.
    pub authorization: Option<HeaderValue>,
    pub started: Instant,
    pub time: SystemTime,
    pub conn: ConnInfo,
    pub method: Method,
    /// The path as sent, kept only when the request ends before `admit` normalises it.
    pub raw_path: String,
    /// Set by `admit`; every later phase uses this one path.
    pub path: Option<NormalPath>,
    /// The query to forward (Seraph's `os_*` login parameters removed).
    pub query: Option<String>,
    /// The client address we believe (see `server.trusted_proxies`).
    pub client_ip: IpAddr,
    /// `X-Forwarded-For` to send upstream.
    pub forwarded_for: admit::ForwardedFor,
    pub forwarded_proto: &'static str,
    pub host: Option<HeaderValue>,
    pub principal: Option<Principal>,
    pub auth_kind: Option<AuthKind>,
    pub jira_user: Option<String>,
    pub outcome: &'static str,
    pub reason: Option<&'static str>,
    pub rule: Option<usize>,
    /// Report-mode rules that would have denied this request.
    pub would_deny: String,
    /// The rate limit the deciding rule applied, for the response's headers.
    pub rate: Option<RateHeaders>,
    /// Time from sending to Jira to Jira's response head.
    pub upstream_time: Option<std::time::Duration>,
    /// When Jira's answer head arrived: the request's last reading of the clock, which
    /// also ends its total time (what follows is the answer's own few header fields).
    pub answered: Option<Instant>,
    /// Jira's `X-AREQUESTID`.
    pub jira_request_id: Option<HeaderValue>,
    /// The proxy's own session cookie values, taken out of the request by `admit`.
    pub session_ids: Vec<String>,
    /// The fields of Jira's answer that pass as Jira wrote them (`wire::HeaderLines`).
    pub lines: Option<HeaderLines>,
}

impl RequestCtx {
    /// What authenticators see of this request.
    fn auth_request<'a>(
        &'a self,
        parts: &'a http::request::Parts,
        form: Option<&'a [(String, String)]>,
    ) -> AuthRequest<'a> {
        AuthRequest {
            parts,
            authorization: self.authorization.as_ref(),
            client_ip: self.client_ip,
            now: self.time,
            at: self.started,
            form,
            tls: self.forwarded_proto == "https",
            session_ids: &self.session_ids,
            basic: Default::default(),
            bearer: Default::default(),
        }
    }

    fn new(conn: ConnInfo, req: &Request<Body>) -> Self {
        // The request's one reading of the clock (see `crate::time::wall_at`).
        let started = Instant::now();
        RequestCtx {
            id: admit::RequestId::Sent(HeaderValue::from_static("-")),
            authorization: None,
            started,
            time: crate::time::wall_at(started),
            conn,
            method: req.method().clone(),
            // Set only when the request ends before its path is normalised.
            raw_path: String::new(),
            path: None,
            query: None,
            client_ip: conn.peer.ip(),
            forwarded_for: admit::ForwardedFor::None,
            forwarded_proto: if conn.tls { "https" } else { "http" },
            host: None,
            principal: None,
            auth_kind: None,
            jira_user: None,
            outcome: "bad_request",
            reason: None,
            rule: None,
            would_deny: String::new(),
            rate: None,
            upstream_time: None,
            answered: None,
            jira_request_id: None,
            session_ids: Vec::new(),
            lines: None,
        }
    }
}

/// The answer to `req`, with the fields of Jira's answer that pass as Jira wrote them and
/// the request's id (written after the answer's own by the listener).
// An async block, not an `async fn`: a block works on what it captured where it lies,
// where an `async fn` first moves each argument into a place of its own in its state
// (a request is 240 bytes; see benches/HISTORY.md).
#[expect(clippy::manual_async_fn, reason = "the captures are used in place")]
pub fn handle(rt: crate::server::Held, conn: ConnInfo, req: Request<Body>) -> impl Future<Output = Answer> + Send {
    async move {
        let mut ctx = RequestCtx::new(conn, &req);
        // audit.required: while the audit log cannot be written, nothing goes through.
        let result = if rt.audit_required && !rt.audit.healthy() {
            ctx.outcome = "error";
            ctx.raw_path = admit::as_sent(req.uri().path());
            Err(ProxyError::Dependency("the audit log cannot be written".into()))
        } else {
            run(&rt, &mut ctx, req).await
        };
        // Jira's fields go with Jira's answer only.
        let mut lines = ctx.lines.take().filter(|_| result.is_ok());
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if ctx.reason.is_none() {
                    ctx.reason = Some(error_reason(&e));
                }
                e.into_response()
            }
        };
        // The id is the proxy's: one from Jira gives way to it.
        if !resp.headers().is_empty() {
            resp.headers_mut().remove(crate::upstream::headers::X_REQUEST_ID);
        }
        if let Some(rate) = &ctx.rate {
            for (name, value) in rate.values() {
                resp.headers_mut().insert(name, value);
            }
        }
        // One reading of the clock for the audit line and the metrics, or none when Jira's
        // answer has just been timed.
        let total = ctx.answered.unwrap_or_else(Instant::now) - ctx.started;
        let rule = ctx.rule.and_then(|i| rt.policy.rule_name(i));
        if !rt.audit.record(&ctx, rule, resp.status(), total) {
            rt.metrics.audit_failure();
            if rt.audit_required {
                ctx.reason = Some("audit_unwritable");
                resp = ProxyError::Dependency("the audit log cannot be written".into()).into_response();
                lines = None;
            }
        }
        let denied = ctx.reason == Some("denied_by_rule") || ctx.reason == Some("insufficient_scope");
        rt.metrics.record(&crate::observe::metrics::Sample {
            auth: ctx.auth_kind.map_or("none", |k| k.as_str()),
            outcome: ctx.outcome,
            reason: ctx.reason,
            status: resp.status().as_u16(),
            rule,
            denied,
            total,
            upstream: ctx.upstream_time,
        });
        Answer {
            response: resp,
            lines,
            request_id: Some(ctx.id),
        }
    }
}

// An async block for the same reason as `handle`'s.
#[expect(clippy::manual_async_fn, reason = "as `handle`")]
fn run(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    req: Request<Body>,
) -> impl Future<Output = Result<Response<Body>, ProxyError>> + Send {
    async move {
        let (mut parts, body) = req.into_parts();
        admit::admit(rt, ctx, &mut parts)?;
        let (form, body) = read_form(rt, &parts, ctx.authorization.as_ref(), &ctx.session_ids, body).await?;
        // Local endpoints: Jira's OAuth 1.0a token endpoints (checked by consumer signature)...
        if let Some(resp) = oauth1_token_endpoint(rt, ctx, &parts, form.as_deref()).await? {
            return Ok(resp);
        }
        // ...and the session login, checked by the password backend itself.
        let session_endpoint =
            rt.session.is_some() && ctx.path.as_ref().is_some_and(|p| session::is_endpoint(&p.decoded));
        if let (true, Some(s), &Method::POST) = (session_endpoint, &rt.session, &parts.method) {
            ctx.outcome = "login";
            ctx.auth_kind = Some(AuthKind::Session);
            let old = ctx.session_ids.first().map(String::as_str);
            let (resp, failure) = Box::pin(s.login(&parts, body, ctx.client_ip, old, ctx.time))
                .await
                .map_err(|e| ProxyError::Dependency(e.to_string()))?;
            ctx.reason = failure;
            return Ok(resp);
        }
        authenticate(rt, ctx, &parts, form.as_deref()).await?;
        identify(rt, ctx)?;
        jira_groups(rt, ctx).await?;
        if let (true, Some(s)) = (session_endpoint, &rt.session) {
            return session_endpoint_answer(s, ctx, &parts).await;
        }
        authorize(rt, ctx, &parts.headers).await?;
        // ...and the approval and token pages, for a signed-in user the rules let through.
        let page = |path: &str| {
            let tokens = path
                .strip_prefix(provider::USER_TOKENS)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            (tokens || path == provider::AUTHORIZE).then_some(tokens)
        };
        // Only these two pages cost a copy of the path; every other request passes untouched.
        if let Some(p) = &rt.oauth1_provider
            && let Some((path, tokens_page)) = ctx
                .path
                .as_ref()
                .and_then(|p| page(&p.decoded).map(|tokens| (p.decoded.clone(), tokens)))
        {
            // Only a signed-in user approves a consumer or sees their tokens.
            let Some(user) = ctx.jira_user.clone() else {
                return Err(ProxyError::AuthRequired {
                    challenges: rt.chain.challenges().to_vec(),
                });
            };
            if tokens_page {
                ctx.outcome = "oauth1_tokens";
                return p.user_tokens(&parts, &path, body, &user).await;
            }
            return Box::pin(oauth1_authorize(p, &parts, body, &user, rt.server.max_read_body_bytes)).await;
        }
        let sent = Instant::now();
        let resp = rt.upstream.forward(ctx, &mut parts, body, form.as_deref(), sent).await;
        let answered = Instant::now();
        ctx.upstream_time = Some(answered - sent);
        ctx.answered = Some(answered);
        resp.map(|(r, lines)| {
            ctx.jira_request_id = r.headers().get("x-arequestid").cloned();
            ctx.lines = lines;
            r
        })
    }
}

/// `GET` (who am I) and `DELETE` (log out) on Jira's session endpoint.
async fn session_endpoint_answer(
    s: &SessionAuth,
    ctx: &mut RequestCtx,
    parts: &http::request::Parts,
) -> Result<Response<Body>, ProxyError> {
    let dep = |e: crate::auth::AuthError| ProxyError::Dependency(e.to_string());
    ctx.outcome = "session_endpoint";
    match parts.method {
        Method::GET => {
            let xsrf = s.live(&ctx.session_ids, ctx.time).await.map_err(dep)?.map(|(_, x)| x);
            Ok(s.current(ctx.jira_user.as_deref(), xsrf.as_deref()))
        }
        Method::DELETE => s.logout(&ctx.session_ids, ctx.time).await.map_err(dep),
        _ => Err(ProxyError::BadRequest(
            "Use POST to log in, GET to see the session, DELETE to log out.",
        )),
    }
}

/// Jira's OAuth 1.0a token endpoints are answered here, before the chain: the consumer's
/// signature is what they check (`Provider`), not a user's credential.
async fn oauth1_token_endpoint(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    parts: &http::request::Parts,
    form: Option<&[(String, String)]>,
) -> Result<Option<Response<Body>>, ProxyError> {
    let (Some(p), Some(path)) = (&rt.oauth1_provider, ctx.path.as_ref()) else {
        return Ok(None);
    };
    let is_request = path.decoded == provider::REQUEST_TOKEN;
    if !is_request && path.decoded != provider::ACCESS_TOKEN {
        return Ok(None);
    }
    ctx.outcome = "oauth1_endpoint";
    ctx.auth_kind = Some(AuthKind::OAuth1);
    let req = ctx.auth_request(parts, form);
    // Boxed, as every rarely taken branch with a large state: the request path's future
    // is sized for its largest branch, and every request's future is copied when it starts.
    let answer = if is_request {
        Box::pin(p.request_token(&req)).await
    } else {
        Box::pin(p.access_token(&req)).await
    };
    answer.map(Some).map_err(|e| ProxyError::Dependency(e.to_string()))
}

/// The approval page (GET) and decision (POST) for a signed-in user.
async fn oauth1_authorize(
    p: &provider::Provider,
    parts: &http::request::Parts,
    body: Body,
    user: &str,
    limit: usize,
) -> Result<Response<Body>, ProxyError> {
    match parts.method {
        Method::GET => p
            .authorize_page(parts.uri.query(), user)
            .await
            .map_err(|e| ProxyError::Dependency(e.to_string())),
        Method::POST => {
            let form = provider::read_small_form(body, limit).await?;
            p.authorize_decision(&form, user).await
        }
        _ => Err(ProxyError::BadRequest("Use GET or POST.")),
    }
}

/// OAuth 1.0a signs form-encoded bodies (RFC 5849 §3.4.1.3.1): when a request carries
/// OAuth parameters and such a body, it is read (under a cap) and forwarded from memory;
/// every other body streams untouched.
async fn read_form(
    rt: &Runtime,
    parts: &http::request::Parts,
    authorization: Option<&HeaderValue>,
    ctx_session_ids: &[String],
    body: Body,
) -> Result<(Option<Vec<(String, String)>>, Body), ProxyError> {
    // A cookie call's form may carry its form token (`atl_token`).
    let cookie_change =
        !ctx_session_ids.is_empty() && !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let wanted = (rt.reads_oauth_forms && crate::auth::oauth1::inbound::carries_oauth(authorization, &parts.uri))
        || rt.upstream.signs_forms()
        || cookie_change;
    if !wanted || !crate::upstream::headers::media_type_is(&parts.headers, "application/x-www-form-urlencoded") {
        return Ok((None, body));
    }
    let bytes = match Limited::new(body, rt.server.max_read_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(ProxyError::PayloadTooLarge);
        }
        Err(_) => return Err(ProxyError::BadRequest("The request body could not be read.")),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| ProxyError::BadRequest("The form body is not UTF-8."))?;
    let pairs = crate::auth::oauth1::rfc5849::form_pairs(text);
    // Jira reads form parameters like query parameters: when the proxy signs for Jira, a
    // body must not carry the user to run as, nor OAuth protocol parameters.
    if rt.upstream.signs_forms() && pairs.iter().any(|(k, _)| admit::is_reserved_param(k)) {
        return Err(ProxyError::BadRequest(
            "The form body carries reserved login or OAuth parameters.",
        ));
    }
    Ok((Some(pairs), crate::error::full(bytes)))
}

async fn authenticate(
    rt: &Runtime,
    ctx: &mut RequestCtx,
    parts: &http::request::Parts,
    form: Option<&[(String, String)]>,
) -> Result<(), ProxyError> {
    let req = ctx.auth_request(parts, form);
    match rt.chain.authenticate(&req).await {
        Verdict::Anonymous => {
            ctx.outcome = "anonymous";
            Ok(())
        }
        Verdict::Delegated => {
            ctx.outcome = "delegated";
            ctx.auth_kind = Some(AuthKind::JiraToken);
            Ok(())
        }
        Verdict::Authenticated(p) => {
            ctx.outcome = "authenticated";
            ctx.auth_kind = Some(p.kind());
            ctx.principal = Some(p);
            Ok(())
        }
        Verdict::Rejected(kind, reason) => {
            ctx.outcome = "rejected";
            ctx.auth_kind = Some(kind);
            ctx.reason = Some(reason.code);
            Err(match (reason.retry_after, reason.forbidden) {
                (Some(retry_after), _) => ProxyError::LockedOut { retry_after },
                (None, Some(message)) => ProxyError::Refused(message),
                (None, None) => ProxyError::AuthFailed {
                    challenges: challenges(rt, &reason),
                },
            })
        }
        Verdict::Failed(kind, e) => {
            ctx.outcome = "error";
            ctx.auth_kind = Some(kind);
            ctx.reason = Some("dependency_failed");
            tracing::error!(request_id = ?ctx.id, auth = kind.as_str(), error = %e, "authenticator failed; failing closed");
            Err(ProxyError::Dependency(e.to_string()))
        }
    }
}

fn identify(rt: &Runtime, ctx: &mut RequestCtx) -> Result<(), ProxyError> {
    let Some(p) = &ctx.principal else { return Ok(()) };
    match rt.identity.resolve(p) {
        Ok(user) => {
            ctx.jira_user = Some(user);
            Ok(())
        }
        Err(e) => {
            ctx.outcome = "rejected";
            ctx.reason = Some(e.code());
            ctx.principal = None;
            Err(ProxyError::AuthFailed {
                challenges: rt.chain.challenges().to_vec(),
            })
        }
    }
}

/// Adds the user's Jira groups (`[identity.groups_from_jira]`) when a rule names groups.
/// A failed lookup fails closed: rules about groups cannot be decided without them.
async fn jira_groups(rt: &Runtime, ctx: &mut RequestCtx) -> Result<(), ProxyError> {
    let (Some(lookup), Some(user), Some(principal)) = (&rt.jira_groups, &ctx.jira_user, &mut ctx.principal) else {
        return Ok(());
    };
    if !rt.policy.uses_groups() {
        return Ok(());
    }
    match Box::pin(lookup.of(user)).await {
        Ok(groups) => {
            principal.add_groups(groups);
            Ok(())
        }
        Err(e) => {
            ctx.reason = Some("dependency_failed");
            tracing::error!(request_id = ?ctx.id, error = %e, "Jira group lookup failed; failing closed");
            Err(ProxyError::Dependency(e.to_string()))
        }
    }
}

async fn authorize(rt: &Runtime, ctx: &mut RequestCtx, headers: &http::HeaderMap) -> Result<(), ProxyError> {
    // API keys' own scopes: "read" alone allows only safe methods. (Token scopes from an
    // identity provider mean whatever that provider says; rules decide about those.)
    if let Some(p) = &ctx.principal
        && p.kind() == AuthKind::ApiKey
        && !crate::access::scope_allows(p.scopes(), &ctx.method)
    {
        ctx.reason = Some("insufficient_scope");
        return Err(insufficient_scope(rt, &["write".to_string()]));
    }
    let path = ctx.path.as_ref().map_or("/", |p| p.decoded.as_str());
    let decision = rt.policy.decide(&crate::access::Subject {
        method: &ctx.method,
        path,
        kind: ctx.auth_kind,
        authenticated: ctx.principal.is_some(),
        user: ctx.jira_user.as_deref(),
        groups: ctx.principal.as_ref().map_or(&[], |p| p.groups()),
        scopes: ctx.principal.as_ref().map_or(&[], |p| p.scopes()),
        client_ip: ctx.client_ip,
        headers: Some(headers),
    });
    ctx.rule = decision.rule_index;
    if !decision.would_deny.is_empty() {
        // Report-mode rules: logged (the audit line names them), never enforced.
        ctx.reason = Some("would_deny");
        ctx.would_deny = decision.would_deny.join(", ");
    }
    if decision.effect == Effect::Deny && !decision.enforced {
        ctx.reason = Some("would_deny");
        if let Some(rule) = decision.rule {
            ctx.would_deny = rule.to_string();
        }
        return Ok(());
    }
    if !decision.denies() {
        if let (Some((_, spec)), Some(rule)) = (decision.rate, decision.rule) {
            return throttle(rt, ctx, rule, spec).await;
        }
        return Ok(());
    }
    ctx.reason = Some("denied_by_rule");
    if ctx.principal.is_none() {
        // Anonymous callers learn they should authenticate (and how).
        return Err(ProxyError::AuthRequired {
            challenges: rt.chain.challenges().to_vec(),
        });
    }
    let bearer = matches!(
        ctx.auth_kind,
        Some(AuthKind::Jwt | AuthKind::Introspection | AuthKind::ApiKey)
    );
    match decision.missing_scopes {
        Some(scopes) if bearer => {
            ctx.reason = Some("insufficient_scope");
            Err(insufficient_scope(rt, &scopes))
        }
        _ => Err(ProxyError::Forbidden),
    }
}

/// A rule's rate limit: one token from the bucket of (rule, caller). The caller is the
/// Jira user, or the client address for anonymous callers.
async fn throttle(rt: &Runtime, ctx: &mut RequestCtx, rule: &str, spec: RateSpec) -> Result<(), ProxyError> {
    let key = crate::store::rate_key(rule, ctx.jira_user.as_deref(), ctx.client_ip);
    let interval = std::time::Duration::from_micros((spec.interval_ms() * 1000.0) as u64);
    let t = rt
        .store
        .throttle(&key, interval, spec.burst)
        .await
        .map_err(|e| ProxyError::Dependency(e.to_string()))?;
    let limits = RateHeaders {
        spec,
        remaining: t.remaining,
    };
    if t.allowed {
        ctx.rate = Some(limits);
        return Ok(());
    }
    ctx.reason = Some("rate_limited");
    Err(ProxyError::RateLimited {
        retry_after: t.retry_after,
        headers: limits.values(),
    })
}

/// Jira Data Center's rate-limit headers, which its clients read.
#[derive(Debug, Clone, Copy)]
pub struct RateHeaders {
    spec: RateSpec,
    remaining: u32,
}

impl RateHeaders {
    pub fn values(&self) -> Vec<(&'static str, HeaderValue)> {
        vec![
            ("x-ratelimit-limit", HeaderValue::from(self.spec.burst)),
            ("x-ratelimit-remaining", HeaderValue::from(self.remaining)),
            ("x-ratelimit-interval-seconds", HeaderValue::from(self.spec.per_secs)),
            ("x-ratelimit-fillrate", HeaderValue::from(self.spec.count)),
        ]
    }
}

/// RFC 6750 §3.1: 403 with a Bearer challenge naming the scopes that would have helped.
fn insufficient_scope(rt: &Runtime, scopes: &[String]) -> ProxyError {
    let scope: String = scopes
        .join(" ")
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
        .collect();
    let challenge = HeaderValue::from_str(&format!(
        "Bearer realm=\"{}\", error=\"insufficient_scope\", error_description=\"The access token lacks a required scope\", scope=\"{scope}\"",
        rt.server.realm
    ))
    .ok();
    ProxyError::InsufficientScope { challenge }
}

/// The chain's challenges; a refused bearer token adds RFC 6750 §3 `error` and
/// `error_description` to the Bearer challenge (fixed texts, never the token), a refused
/// OAuth 1.0a request adds `oauth_problem` to the OAuth one (Jira's problem names).
fn challenges(rt: &Runtime, reason: &crate::auth::RejectReason) -> Vec<HeaderValue> {
    let mut out = rt.chain.challenges().to_vec();
    if let Some(problem) = reason.oauth_problem {
        for c in out.iter_mut() {
            if c.as_bytes().starts_with(b"OAuth ")
                && let Ok(v) = HeaderValue::from_str(&format!(
                    "{}, oauth_problem=\"{problem}\"",
                    c.to_str().unwrap_or("OAuth")
                ))
            {
                *c = v;
            }
        }
    }
    if let Some((error, description)) = reason.bearer_error {
        for c in out.iter_mut() {
            if c.as_bytes().starts_with(b"Bearer ")
                && let Ok(v) = HeaderValue::from_str(&format!(
                    "{}, error=\"{error}\", error_description=\"{description}\"",
                    c.to_str().unwrap_or("Bearer")
                ))
            {
                *c = v;
            }
        }
    }
    out
}

fn error_reason(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::BadRequest(_) => "bad_request",
        ProxyError::AuthRequired { .. } => "auth_required",
        ProxyError::AuthFailed { .. } => "auth_failed",
        ProxyError::LockedOut { .. } => "locked_out",
        ProxyError::RateLimited { .. } => "rate_limited",
        ProxyError::Forbidden => "forbidden",
        ProxyError::Refused(_) => "refused",
        ProxyError::InsufficientScope { .. } => "insufficient_scope",
        ProxyError::PayloadTooLarge => "payload_too_large",
        ProxyError::IdentityNotHonoured => "identity_not_honoured",
        ProxyError::UpstreamUnreachable(_) => "upstream_unreachable",
        ProxyError::UpstreamTimeout => "upstream_timeout",
        ProxyError::Dependency(_) => "dependency_failed",
        ProxyError::Internal(_) => "internal",
    }
}
