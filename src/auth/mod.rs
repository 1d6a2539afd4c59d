//! Authentication: the [`Authenticator`] trait, the [`Principal`] only authenticators can
//! make, and the [`Chain`] that runs the configured members in order.
//!
//! Chain semantics: the first `Authenticated` wins; the first `Rejected` stops with 401
//! and is never rescued by a later member; a dependency error stops with 503 (fail
//! closed); when every member answers `NotPresent` the caller is anonymous.

pub mod api_key;
pub mod basic;
pub mod cache;
pub mod introspection;
pub mod jwt;
pub mod oauth1;
pub mod password;
pub mod session;
pub mod totp;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use http::HeaderValue;
use http::request::Parts;

use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthKind {
    Basic,
    ApiKey,
    OAuth1,
    Jwt,
    Introspection,
    Session,
    /// A bearer token the proxy does not know, handed to Jira to check
    /// (`auth.passthrough_unknown_bearer`); no principal.
    JiraToken,
}

impl AuthKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthKind::Basic => "basic",
            AuthKind::ApiKey => "api_key",
            AuthKind::OAuth1 => "oauth1",
            AuthKind::Jwt => "jwt",
            AuthKind::Introspection => "introspection",
            AuthKind::Session => "session",
            AuthKind::JiraToken => "jira_token",
        }
    }

    pub const ALL: [AuthKind; 7] = [
        AuthKind::Basic,
        AuthKind::ApiKey,
        AuthKind::OAuth1,
        AuthKind::Jwt,
        AuthKind::Introspection,
        AuthKind::Session,
        AuthKind::JiraToken,
    ];

    pub fn parse(s: &str) -> Option<AuthKind> {
        AuthKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A verified caller. Fields are private and the constructor is visible only inside
/// `auth`, so the forwarding code cannot be handed an identity nobody verified.
///
/// Shared, not copied: a verdict cached by a member (a Basic credential, a verified
/// token) or made once for a key is handed to each request as one more reference, to the
/// copy its listener thread keeps ([`SharedPrincipal`], [`cache::TtlMap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(Arc<Verified>);

/// A principal many requests are given (an API key's): one copy per listener thread, made
/// on that thread's first use, so a request takes its reference on a count only its own
/// thread writes. (One copy for every thread would have each thread's requests write the
/// same count, and its cache line move between their cores twice a request.)
pub(in crate::auth) struct SharedPrincipal {
    principal: Principal,
    copies: Box<[std::sync::OnceLock<Principal>]>,
}

impl SharedPrincipal {
    /// For `threads` listener threads (other threads share `principal` itself).
    pub(in crate::auth) fn new(principal: Principal, threads: usize) -> Self {
        SharedPrincipal {
            principal,
            copies: (0..threads).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    /// The calling thread's copy.
    pub(in crate::auth) fn here(&self) -> Principal {
        match crate::server::listener_thread().and_then(|i| self.copies.get(i)) {
            Some(copy) => copy.get_or_init(|| self.principal.own_copy()).clone(),
            None => self.principal.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Verified {
    kind: AuthKind,
    subject: String,
    groups: Vec<String>,
    scopes: Vec<String>,
    credential_id: Option<String>,
}

impl Principal {
    pub(in crate::auth) fn new(kind: AuthKind, subject: String, groups: Vec<String>) -> Self {
        Principal(Arc::new(Verified {
            kind,
            subject,
            groups,
            scopes: Vec::new(),
            credential_id: None,
        }))
    }

    pub(in crate::auth) fn with_scopes(mut self, scopes: Vec<String>) -> Self {
        Arc::make_mut(&mut self.0).scopes = scopes;
        self
    }

    pub(in crate::auth) fn with_credential_id(mut self, id: String) -> Self {
        Arc::make_mut(&mut self.0).credential_id = Some(id);
        self
    }

    /// A copy that shares nothing with this one, not even its reference count.
    pub(in crate::auth) fn own_copy(&self) -> Self {
        Principal(Arc::new((*self.0).clone()))
    }

    /// For unit tests elsewhere in the crate only.
    #[cfg(test)]
    pub(crate) fn for_tests(kind: AuthKind, subject: &str, groups: &[&str]) -> Self {
        Principal::new(kind, subject.into(), groups.iter().map(|g| g.to_string()).collect())
    }

    pub fn kind(&self) -> AuthKind {
        self.0.kind
    }
    pub fn subject(&self) -> &str {
        &self.0.subject
    }
    pub fn groups(&self) -> &[String] {
        &self.0.groups
    }
    /// Adds groups learnt about the authenticated user elsewhere (Jira's own groups), to
    /// this request's principal only.
    pub(crate) fn add_groups(&mut self, groups: Vec<String>) {
        let known = |mine: &[String], g: &str| mine.iter().any(|h| h.eq_ignore_ascii_case(g));
        // A shared principal is copied only when there is something to add.
        if groups.iter().all(|g| known(&self.0.groups, g)) {
            return;
        }
        let mine = &mut Arc::make_mut(&mut self.0).groups;
        for g in groups {
            if !known(mine, &g) {
                mine.push(g);
            }
        }
    }
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }
    pub fn credential_id(&self) -> Option<&str> {
        self.0.credential_id.as_deref()
    }
}

/// Why a presented credential was refused. `code` goes to the audit log and metrics
/// (bounded set of values); the client only ever sees a generic 401 (or 429).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectReason {
    pub code: &'static str,
    /// Set when the caller should wait (lockout): answered as 429 with Retry-After.
    pub retry_after: Option<Duration>,
    /// Set when retrying cannot help and the caller must be told why: answered as 403
    /// with this fixed message (e.g. Jira's CAPTCHA lock).
    pub forbidden: Option<&'static str>,
    /// RFC 6750 §3 `error` and `error_description` for the Bearer challenge (fixed texts;
    /// never the token).
    pub bearer_error: Option<(&'static str, &'static str)>,
    /// OAuth 1.0a `oauth_problem` for the OAuth challenge (Jira's problem names).
    pub oauth_problem: Option<&'static str>,
}

impl RejectReason {
    pub fn new(code: &'static str) -> Self {
        RejectReason {
            code,
            retry_after: None,
            forbidden: None,
            bearer_error: None,
            oauth_problem: None,
        }
    }

    pub fn with_oauth_problem(mut self, problem: &'static str) -> Self {
        self.oauth_problem = Some(problem);
        self
    }

    pub fn with_bearer_error(mut self, error: &'static str, description: &'static str) -> Self {
        self.bearer_error = Some((error, description));
        self
    }
}

pub enum Outcome {
    NotPresent,
    Authenticated(Principal),
    Rejected(RejectReason),
}

/// A dependency the authenticator needs failed; the request fails closed (503).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential check failed: {0}")]
    Internal(String),
}

/// What an authenticator sees: the request head (already admitted), the client address,
/// (later: small form bodies for OAuth 1.0a) and the time.
pub struct AuthRequest<'a> {
    pub parts: &'a Parts,
    /// The request's `Authorization` (admit refuses a request with two), looked up once
    /// for every member that reads it.
    pub authorization: Option<&'a HeaderValue>,
    pub client_ip: IpAddr,
    pub now: SystemTime,
    /// The same moment on the monotonic clock (cache lifetimes).
    pub at: std::time::Instant,
    /// The parameters of a small form-encoded body, read only for OAuth 1.0a signatures.
    pub form: Option<&'a [(String, String)]>,
    /// Whether the client's connection is TLS (to us, or to a trusted balancer).
    pub tls: bool,
    /// Values of the proxy's own session cookie (taken out of the request in admit).
    pub session_ids: &'a [String],
    /// The `Authorization: Basic` credential, parsed by the first member that asks (see
    /// [`AuthRequest::basic`]); start with `Default::default()`.
    pub basic: BasicOnce,
    /// The bearer token and its SHA-256, each found by the first member that asks (see
    /// [`AuthRequest::bearer`], [`AuthRequest::bearer_digest`]); start with
    /// `Default::default()`.
    pub bearer: BearerOnce<'a>,
}

/// A request's bearer token and its digest, each worked out at most once however many
/// members read the token or look it up by its digest (API keys, verified JWTs,
/// introspection answers): a JWT is hundreds of bytes, each checked and hashed.
#[derive(Default)]
pub struct BearerOnce<'a> {
    token: std::sync::OnceLock<Option<&'a str>>,
    digest: std::sync::OnceLock<Option<cache::Digest>>,
}

/// A request's Basic credential, parsed at most once however many members read it.
#[derive(Default)]
pub struct BasicOnce(std::sync::OnceLock<Option<Result<basic::Credential, &'static str>>>);

impl<'a> AuthRequest<'a> {
    /// The request's bearer token (see [`bearer_of`]), if it has one.
    pub fn bearer(&self) -> Option<&'a str> {
        *self.bearer.token.get_or_init(|| self.authorization.and_then(bearer_of))
    }

    /// The SHA-256 of the request's bearer token (see [`bearer_of`]), if it has one.
    pub fn bearer_digest(&self) -> Option<&cache::Digest> {
        self.bearer
            .digest
            .get_or_init(|| self.bearer().map(|t| cache::sha256(t.as_bytes())))
            .as_ref()
    }

    /// The request's `Authorization: Basic` user and password: `None` when there is no
    /// Basic credential, `Some(Err(code))` when it is malformed (see [`basic::parse`]).
    pub fn basic(&self) -> Option<Result<(&str, &str), &'static str>> {
        let parsed = self.basic.0.get_or_init(|| self.authorization.and_then(basic::parse));
        parsed
            .as_ref()
            .map(|r| r.as_ref().map(|c| (c.user(), c.password())).map_err(|code| *code))
    }
}

#[async_trait]
pub trait Authenticator: Send + Sync {
    fn kind(&self) -> AuthKind;
    /// This scheme's `WWW-Authenticate` challenge, sent on every 401.
    fn challenge(&self) -> Option<HeaderValue>;
    /// Whether this member reads `Authorization: Bearer` tokens (see `Chain::authenticate`).
    fn accepts_bearer(&self) -> bool {
        false
    }
    /// The answer when this member has it at once, with nothing to wait for: no credential
    /// of its kind, a malformed one, a verdict already cached. The chain then does not
    /// call `authenticate`, which starts from this answer itself, so the two never differ.
    fn at_once(&self, _req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        None
    }
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError>;
}

/// The chain's verdict for one request.
pub enum Verdict {
    Anonymous,
    Authenticated(Principal),
    Rejected(AuthKind, RejectReason),
    Failed(AuthKind, AuthError),
    /// A bearer token nobody recognised, to be checked by Jira itself.
    Delegated,
}

pub struct Chain {
    /// Shared: the session member and the OAuth 1.0a provider use the same Basic and
    /// OAuth 1.0a members the chain holds.
    members: Vec<Arc<dyn Authenticator>>,
    challenges: Vec<HeaderValue>,
    delegate_unknown_bearer: bool,
}

/// `name` in lower case (Unicode), borrowed when it is lower-case ASCII already, as most
/// user names are.
pub fn lowercase(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.to_lowercase())
    }
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1), if any.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_of(parts.headers.get(http::header::AUTHORIZATION)?)
}

/// The token of an `Authorization` value of the Bearer scheme. The scheme is looked at
/// before any text check, so another scheme's credential costs nothing more.
pub fn bearer_of(value: &HeaderValue) -> Option<&str> {
    let v = value.as_bytes();
    let space = v.iter().position(|b| *b == b' ')?;
    if !v[..space].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = value.to_str().ok()?.get(space + 1..)?.trim();
    (!token.is_empty()).then_some(token)
}

impl Chain {
    /// Bearer tokens no member recognises go to Jira (see `Verdict::Delegated`).
    pub fn delegating_unknown_bearer(mut self, on: bool) -> Self {
        self.delegate_unknown_bearer = on;
        self
    }

    pub fn new(members: Vec<Arc<dyn Authenticator>>) -> Self {
        let mut challenges: Vec<HeaderValue> = Vec::new();
        for c in members.iter().filter_map(|m| m.challenge()) {
            if !challenges.contains(&c) {
                challenges.push(c);
            }
        }
        Chain {
            members,
            challenges,
            delegate_unknown_bearer: false,
        }
    }

    pub fn challenges(&self) -> &[HeaderValue] {
        &self.challenges
    }

    pub fn kinds(&self) -> Vec<AuthKind> {
        self.members.iter().map(|m| m.kind()).collect()
    }

    pub async fn authenticate(&self, req: &AuthRequest<'_>) -> Verdict {
        for m in &self.members {
            // Most members answer most requests at once; only the others build a future.
            let outcome = match m.at_once(req) {
                Some(r) => r,
                None => m.authenticate(req).await,
            };
            match outcome {
                Ok(Outcome::NotPresent) => continue,
                Ok(Outcome::Authenticated(p)) => return Verdict::Authenticated(p),
                Ok(Outcome::Rejected(r)) => return Verdict::Rejected(m.kind(), r),
                Err(e) => return Verdict::Failed(m.kind(), e),
            }
        }
        // A bearer token that no member recognised is refused, never taken as anonymous
        // (unless the admin hands such tokens to Jira, e.g. for Jira's own PATs).
        if req.bearer().is_some() && self.delegate_unknown_bearer {
            return Verdict::Delegated;
        }
        if req.bearer().is_some()
            && let Some(m) = self.members.iter().find(|m| m.accepts_bearer())
        {
            let reason = RejectReason::new("unknown_bearer")
                .with_bearer_error("invalid_token", "The access token is not recognised");
            return Verdict::Rejected(m.kind(), reason);
        }
        Verdict::Anonymous
    }
}

#[cfg(test)]
mod tests;
