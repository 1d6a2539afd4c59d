//! Session cookies the way Jira's REST clients use them: `POST /rest/auth/1/session` with
//! `{"username", "password"}` (checked by the Basic member's backend and lockout, plus a
//! TOTP code for `totp_groups`) starts a session; its cookie then authenticates. The
//! proxy answers these endpoints itself; Jira never sees the login or the cookie.
//!
//! Sessions live in the state store under a hash of their id (256 random bits), with the
//! user, groups, creation and last-seen times and the session's form token. They end
//! after `idle_timeout` without use, after `absolute_timeout` in any case, and on logout;
//! every login makes a fresh id. A cookie the store does not know is treated like no
//! cookie (Jira does the same), so rules decide what an anonymous caller may do.
//!
//! XSRF: a cookie-authenticated request that changes state (not GET/HEAD/OPTIONS/TRACE)
//! must carry `X-Atlassian-Token: no-check`, an `Origin` (or `Referer`) of
//! `server.public_url`'s origin, or the session's form token as `atl_token` (query or form
//! body); otherwise it is refused with 403 "XSRF check failed" and never reaches Jira.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::basic::BasicAuth;
use super::cache::{Digest, TtlMap};
use super::{AuthError, AuthKind, AuthRequest, Authenticator, Outcome, Principal, RejectReason};
use crate::config::{LocalUser, SessionConfig};
use crate::error::{Body, full};
use crate::store::{StateStore, StoreError};

/// Jira's login endpoints (`1` and `latest`).
pub fn is_endpoint(path: &str) -> bool {
    matches!(path, "/rest/auth/1/session" | "/rest/auth/latest/session")
}

/// Largest login body read.
const LOGIN_BODY_LIMIT: usize = 16 * 1024;

#[derive(Clone, Serialize, Deserialize)]
struct Record {
    user: String,
    groups: Vec<String>,
    /// Unix milliseconds.
    created: u64,
    last_seen: u64,
    /// The session's form token (`atl_token`).
    xsrf: String,
}

/// At most this many sessions are kept decoded (see [`Decoded`]).
const DECODED_MAX: usize = 10_000;

/// A session record as the store last gave it, decoded once: the bytes it was decoded
/// from, and the principal a request on it is authenticated as. The store stays the
/// authority: every request reads the record there, and this decoding is used only while
/// those bytes are unchanged.
struct Decoded {
    raw: Bytes,
    record: Record,
    principal: Principal,
}

impl super::cache::OwnCopy for Decoded {
    fn own_copy(&self) -> Self {
        Decoded {
            raw: Bytes::copy_from_slice(&self.raw),
            record: self.record.clone(),
            principal: self.principal.own_copy(),
        }
    }
}

/// How [`SessionAuth::save`] writes a record.
enum Write {
    /// A new session.
    New,
    /// Over the session's record, only while it is still there.
    Replace,
}

/// A session's store key, `session:` and the hex of its id's hash ([`super::cache::id_of`];
/// the id itself is never stored), held inline.
struct StoreKey([u8; 40]);

impl StoreKey {
    /// The key of the session whose id's SHA-256 is `digest`.
    fn new(digest: &Digest) -> StoreKey {
        let mut key = [0u8; 40];
        key[..8].copy_from_slice(b"session:");
        super::cache::hex_into(&digest[..16], &mut key[8..]);
        StoreKey(key)
    }

    fn of(id: &str) -> StoreKey {
        StoreKey::new(&super::cache::sha256(id.as_bytes()))
    }

    fn as_str(&self) -> &str {
        // ASCII throughout: never the fallback.
        std::str::from_utf8(&self.0).unwrap_or("session:")
    }

    /// The session's id hash, as [`super::cache::id_of`] gives it.
    fn id_hash(&self) -> &str {
        &self.as_str()[8..]
    }
}

pub struct SessionAuth {
    cfg: SessionConfig,
    store: Arc<dyn StateStore>,
    decoded: TtlMap<Arc<Decoded>>,
    basic: Arc<BasicAuth>,
    /// TOTP secrets and configured groups, by lowercase user name.
    totp: HashMap<String, crate::config::Secret>,
    groups: HashMap<String, Vec<String>>,
    xsrf_cookie: String,
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
    otp: Option<String>,
}

fn now_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn login_failed() -> Response<Body> {
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({"errorMessages": ["Login failed"], "errors": {}}),
    )
}

fn not_authenticated() -> Response<Body> {
    json(
        StatusCode::UNAUTHORIZED,
        serde_json::json!({
            "errorMessages": ["You are not authenticated. Authentication required to perform this operation."],
            "errors": {}
        }),
    )
}

impl SessionAuth {
    /// `threads`: the listener threads its cache of decoded records is shared out among.
    pub fn new(
        cfg: &SessionConfig,
        users: &[LocalUser],
        store: Arc<dyn StateStore>,
        basic: Arc<BasicAuth>,
        threads: usize,
    ) -> Self {
        SessionAuth {
            xsrf_cookie: format!("{}-XSRF", cfg.cookie),
            cfg: cfg.clone(),
            store,
            decoded: TtlMap::new(DECODED_MAX, threads),
            basic,
            totp: users
                .iter()
                .filter_map(|u| Some((u.name.to_lowercase(), u.totp_secret.clone()?)))
                .collect(),
            groups: users
                .iter()
                .map(|u| (u.name.to_lowercase(), u.groups.clone()))
                .collect(),
        }
    }

    /// The cookies the proxy owns: never forwarded to Jira.
    pub fn cookie_names(&self) -> [&str; 2] {
        [&self.cfg.cookie, &self.xsrf_cookie]
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cfg.cookie
    }

    /// How long a session's record should live from `now`: its idle time, capped by what
    /// is left of its absolute lifetime.
    fn ttl(&self, created: u64, now: u64) -> Duration {
        let left = (created + self.cfg.absolute_timeout.as_millis() as u64).saturating_sub(now);
        self.cfg
            .idle_timeout
            .min(Duration::from_millis(left))
            .max(Duration::from_millis(1))
    }

    /// The live session whose id's SHA-256 is `digest`, read from the store at `at` (`now`
    /// in Unix milliseconds); an expired one is deleted.
    async fn load(&self, digest: &Digest, now: u64, at: Instant) -> Result<Option<Arc<Decoded>>, StoreError> {
        let key = StoreKey::new(digest);
        let found = match self.store.get_now(key.as_str()) {
            Some(found) => found?,
            None => self.store.get(key.as_str()).await?,
        };
        let Some(raw) = found else {
            return Ok(None);
        };
        let Some((d, kept)) = self.decode(digest, &key, raw, at) else {
            return Ok(None);
        };
        self.keep(digest, &d, kept);
        if self.expired(&d.record, now) {
            self.store.delete(key.as_str()).await?;
            return Ok(None);
        }
        Ok(Some(d))
    }

    /// The stored bytes `raw` of the session at `key` decoded: the decoding kept from an
    /// earlier request if it was made from these same bytes (then true), else a new one
    /// (see [`SessionAuth::keep`]). None for a record that does not decode.
    fn decode(&self, digest: &Digest, key: &StoreKey, raw: Bytes, at: Instant) -> Option<(Arc<Decoded>, bool)> {
        if let Some(d) = self.decoded.peek(digest, at)
            && d.raw == raw
        {
            return Some((d, true));
        }
        let record = serde_json::from_slice::<Record>(&raw).ok()?;
        let principal = Principal::new(AuthKind::Session, record.user.clone(), record.groups.clone())
            .with_credential_id(key.id_hash()[..12].to_owned());
        Some((Arc::new(Decoded { raw, record, principal }), false))
    }

    /// Keeps a decoding just made for the requests that follow, and counts whether the
    /// one used was kept (a hit) or made (a miss).
    fn keep(&self, digest: &Digest, d: &Arc<Decoded>, kept: bool) {
        if kept {
            self.decoded.hit();
        } else {
            self.decoded.miss();
            self.decoded.insert(*digest, Arc::clone(d), self.cfg.idle_timeout);
        }
    }

    /// Whether the session has ended at `now` (idle too long, or past its absolute lifetime).
    fn expired(&self, r: &Record, now: u64) -> bool {
        let idle_over = r.last_seen + self.cfg.idle_timeout.as_millis() as u64 <= now;
        let absolute_over = r.created + self.cfg.absolute_timeout.as_millis() as u64 <= now;
        idle_over || absolute_over
    }

    /// Whether the session's last-seen time is due to be written at `now`: at most every
    /// tenth of the idle time (between a second and a minute), not on every request.
    fn seen_due(&self, r: &Record, now: u64) -> bool {
        let every = (self.cfg.idle_timeout.as_millis() as u64 / 10).clamp(1_000, 60_000);
        now.saturating_sub(r.last_seen) >= every
    }

    /// The outcome of a request on the live session `session`: its principal, unless the
    /// request changes state without proof it is not cross-site.
    fn outcome(&self, req: &AuthRequest<'_>, session: &Decoded) -> Outcome {
        let logout = is_endpoint(req.parts.uri.path()) && req.parts.method == Method::DELETE;
        if !logout && !self.xsrf_ok(req, &session.record) {
            let mut r = RejectReason::new("xsrf_check_failed");
            r.forbidden = Some("XSRF check failed");
            return Outcome::Rejected(r);
        }
        Outcome::Authenticated(session.principal.clone())
    }

    /// The outcome for the session `id` when the store answers without waiting and nothing
    /// must be written (no expiry to delete, no last-seen due); None otherwise.
    fn at_hand(&self, req: &AuthRequest<'_>, id: &str) -> Option<Result<Outcome, AuthError>> {
        if !self.store.answers_now() {
            return None;
        }
        let digest = super::cache::sha256(id.as_bytes());
        let key = StoreKey::new(&digest);
        let raw = match self.store.get_now(key.as_str())? {
            Ok(Some(raw)) => raw,
            Ok(None) => return Some(Ok(Outcome::NotPresent)),
            Err(e) => return Some(Err(e.into())),
        };
        let Some((session, kept)) = self.decode(&digest, &key, raw, req.at) else {
            return Some(Ok(Outcome::NotPresent));
        };
        let now = now_ms(req.now);
        if self.expired(&session.record, now) || self.seen_due(&session.record, now) {
            // `authenticate` reads it again, decodes (and keeps, and counts) and writes.
            return None;
        }
        self.keep(&digest, &session, kept);
        Some(Ok(self.outcome(req, &session)))
    }

    /// Hits and misses of the decoded-session cache.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.decoded.stats()
    }

    /// Writes the record `r` at `key`: a new one, or over the one there (`Replace`, which
    /// writes nothing when it is gone). True when written.
    async fn save(&self, key: &StoreKey, r: &Record, now: u64, how: Write) -> Result<bool, StoreError> {
        let bytes = Bytes::from(serde_json::to_vec(r).map_err(|e| StoreError::Unavailable(e.to_string()))?);
        let ttl = self.ttl(r.created, now);
        match how {
            Write::New => self.store.put(key.as_str(), bytes, ttl).await.map(|()| true),
            Write::Replace => self.store.replace(key.as_str(), bytes, ttl).await,
        }
    }

    fn set_cookie(&self, name: &str, value: &str, http_only: bool, max_age: Option<u64>) -> Option<HeaderValue> {
        let mut c = format!("{name}={value}; Path=/; SameSite=Lax");
        if http_only {
            c.push_str("; HttpOnly");
        }
        if self.cfg.secure {
            c.push_str("; Secure");
        }
        if let Some(age) = max_age {
            c.push_str(&format!("; Max-Age={age}"));
        }
        HeaderValue::from_str(&c).ok()
    }

    /// The XSRF rules for a cookie-authenticated request.
    fn xsrf_ok(&self, req: &AuthRequest<'_>, record: &Record) -> bool {
        let parts = req.parts;
        if !self.cfg.xsrf
            || matches!(
                parts.method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
            )
        {
            return true;
        }
        let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok());
        if header("x-atlassian-token").is_some_and(|v| v.trim().eq_ignore_ascii_case("no-check")) {
            return true;
        }
        if let Some(origin) = &self.cfg.public_origin {
            if let Some(o) = header("origin") {
                return o.trim_end_matches('/').eq_ignore_ascii_case(origin);
            }
            if let Some(r) = header("referer") {
                let r = r.to_ascii_lowercase();
                if r.strip_prefix(origin.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                {
                    return true;
                }
            }
        }
        let from_query = parts
            .uri
            .query()
            .map(super::oauth1::rfc5849::form_pairs)
            .unwrap_or_default();
        let from_form = req.form.unwrap_or(&[]);
        from_query
            .iter()
            .chain(from_form)
            .filter(|(k, _)| k == "atl_token")
            .any(|(_, v)| bool::from(v.as_bytes().ct_eq(record.xsrf.as_bytes())))
    }

    fn needs_totp(&self, user: &str, groups: &[String]) -> bool {
        let configured = self.groups.get(&user.to_lowercase()).map(Vec::as_slice).unwrap_or(&[]);
        groups
            .iter()
            .chain(configured)
            .any(|g| self.cfg.totp_groups.contains(g))
    }

    /// A wrong second factor counts against the user like a wrong password: after the
    /// lockout's `max_failures` (5 when lockout is off) in its window, logins stop.
    async fn totp_ok(&self, user: &str, otp: Option<&str>, now: u64) -> Result<bool, StoreError> {
        let (max, window) = self.basic.lockout().map_or((5, Duration::from_secs(900)), |l| {
            (i64::from(l.max_failures.max(1)), l.window)
        });
        let fail_key = format!("lockout:totp:{}", user.to_lowercase());
        let failures = self.store.get(&fail_key).await?;
        if failures
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<i64>().ok())
            .unwrap_or(0)
            >= max
        {
            return Ok(false);
        }
        let step = match (self.totp.get(&user.to_lowercase()), otp) {
            (Some(secret), Some(code)) => super::totp::verify(secret.expose(), code, now),
            _ => None,
        };
        let fresh = match step {
            // Each code works once (RFC 6238 §5.2).
            Some(step) => {
                self.store
                    .put_if_absent(
                        &format!("{}{}:{step}", crate::store::TOTP_USED_PREFIX, user.to_lowercase()),
                        Bytes::from_static(b"1"),
                        Duration::from_secs(3 * super::totp::STEP_SECS),
                    )
                    .await?
            }
            None => false,
        };
        if !fresh {
            self.store.incr(&fail_key, 1, window).await?;
        }
        Ok(fresh)
    }

    /// `POST /rest/auth/1/session`: checks the login and starts a session with a fresh id
    /// (ending `old`, the caller's previous session, if any).
    pub async fn login(
        &self,
        parts: &http::request::Parts,
        body: Body,
        client_ip: IpAddr,
        old: Option<&str>,
        now: std::time::SystemTime,
    ) -> Result<(Response<Body>, Option<&'static str>), AuthError> {
        use http_body_util::BodyExt;
        let bad = |m: &str| {
            json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"errorMessages": [m], "errors": {}}),
            )
        };
        let is_json = crate::upstream::headers::media_type_is(&parts.headers, "application/json");
        if !is_json {
            // Only JSON: a cross-site form cannot log a browser into someone else's account.
            let mut r = bad("Send the login as application/json.");
            *r.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Ok((r, None));
        }
        let bytes = match http_body_util::Limited::new(body, LOGIN_BODY_LIMIT).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Ok((bad("The login body is too large or could not be read."), None)),
        };
        let Ok(login) = serde_json::from_slice::<Login>(&bytes) else {
            return Ok((bad("Expected {\"username\": ..., \"password\": ...}."), None));
        };
        let principal = match self
            .basic
            .check_password(&login.username, &login.password, client_ip)
            .await?
        {
            Outcome::Authenticated(p) => p,
            Outcome::Rejected(r) => {
                let mut resp = login_failed();
                if let Some(wait) = r.retry_after
                    && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
                {
                    resp.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
                if let Some(message) = r.forbidden {
                    resp = json(
                        StatusCode::FORBIDDEN,
                        serde_json::json!({"errorMessages": [message], "errors": {}}),
                    );
                }
                return Ok((resp, Some(r.code)));
            }
            Outcome::NotPresent => return Ok((login_failed(), Some("bad_credentials"))),
        };
        let ms = now_ms(now);
        if self.needs_totp(principal.subject(), principal.groups())
            && !self
                .totp_ok(principal.subject(), login.otp.as_deref(), ms / 1000)
                .await?
        {
            return Ok((login_failed(), Some("bad_otp")));
        }
        if let Some(old) = old {
            self.store.delete(StoreKey::of(old).as_str()).await?;
        }
        let (id, xsrf) = (
            super::oauth1::tokens::random_token()?,
            super::oauth1::tokens::random_token()?,
        );
        let mut groups = principal.groups().to_vec();
        for g in self
            .groups
            .get(&principal.subject().to_lowercase())
            .into_iter()
            .flatten()
        {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
        let record = Record {
            user: principal.subject().to_owned(),
            groups,
            created: ms,
            last_seen: ms,
            xsrf: xsrf.clone(),
        };
        self.save(&StoreKey::of(&id), &record, ms, Write::New).await?;
        let info = self.login_info(&record.user, ms / 1000).await?;
        let mut resp = json(
            StatusCode::OK,
            serde_json::json!({
                "session": {"name": self.cfg.cookie, "value": id},
                "loginInfo": info,
            }),
        );
        let h = resp.headers_mut();
        if let Some(c) = self.set_cookie(&self.cfg.cookie, &id, true, None) {
            h.append(http::header::SET_COOKIE, c);
        }
        if let Some(c) = self.set_cookie(&self.xsrf_cookie, &xsrf, false, None) {
            h.append(http::header::SET_COOKIE, c);
        }
        Ok((resp, None))
    }

    /// Jira's `loginInfo`: this user's login count and the previous login's time.
    async fn login_info(&self, user: &str, now: u64) -> Result<serde_json::Value, StoreError> {
        const KEEP: Duration = Duration::from_secs(400 * 86_400);
        let u = user.to_lowercase();
        let count = self.store.incr(&format!("logins:{u}"), 1, KEEP).await?;
        let previous = self.store.get(&format!("last-login:{u}")).await?;
        self.store
            .put(&format!("last-login:{u}"), Bytes::from(now.to_string()), KEEP)
            .await?;
        let mut info = serde_json::json!({"loginCount": count});
        if let Some(t) = previous.and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok()) {
            info["previousLoginTime"] = crate::time::rfc3339_secs(t).into();
        }
        Ok(info)
    }

    /// `GET /rest/auth/1/session`: who the caller is (any credential the chain accepted).
    pub fn current(&self, user: Option<&str>, xsrf: Option<&str>) -> Response<Body> {
        let Some(user) = user else {
            return not_authenticated();
        };
        let base = self.cfg.public_url.as_deref().unwrap_or("");
        let mut body = serde_json::json!({
            "self": format!("{base}/rest/api/latest/user?username={}", super::oauth1::rfc5849::encode(user)),
            "name": user,
            "loginInfo": {},
        });
        if let Some(x) = xsrf {
            body["atl_token"] = x.into();
        }
        json(StatusCode::OK, body)
    }

    /// The caller's session, if their cookie names a live one (for `GET` and logout).
    pub async fn live(
        &self,
        ids: &[String],
        now: std::time::SystemTime,
    ) -> Result<Option<(String, String)>, AuthError> {
        let [id] = ids else { return Ok(None) };
        let digest = super::cache::sha256(id.as_bytes());
        let found = self.load(&digest, now_ms(now), Instant::now()).await?;
        Ok(found.map(|d| (id.clone(), d.record.xsrf.clone())))
    }

    /// `DELETE /rest/auth/1/session`: ends the session server-side and clears the cookies.
    pub async fn logout(&self, ids: &[String], now: std::time::SystemTime) -> Result<Response<Body>, AuthError> {
        let Some((id, _)) = self.live(ids, now).await? else {
            return Ok(not_authenticated());
        };
        self.store.delete(StoreKey::of(&id).as_str()).await?;
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        for name in self.cookie_names() {
            if let Some(c) = self.set_cookie(name, "", name == self.cfg.cookie, Some(0)) {
                r.headers_mut().append(http::header::SET_COOKIE, c);
            }
        }
        Ok(r)
    }
}

#[async_trait]
impl Authenticator for SessionAuth {
    fn kind(&self) -> AuthKind {
        AuthKind::Session
    }

    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    /// No session cookie, or two of them; or one whose session the store has at hand.
    fn at_once(&self, req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        match req.session_ids {
            [] => Some(Ok(Outcome::NotPresent)),
            [id] => self.at_hand(req, id),
            // Two cookies of our name (cookie tossing from a sibling domain or path):
            // which one the browser meant cannot be told.
            _ => Some(Ok(Outcome::Rejected(RejectReason::new("ambiguous_session")))),
        }
    }

    /// For one cookie, the answer [`Authenticator::at_once`] gives when it has one, by
    /// the path that may wait for the store and write to it (not starting from `at_once`,
    /// which the chain has just asked: that would read the session twice).
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        let [id] = req.session_ids else {
            return self.at_once(req).unwrap_or(Ok(Outcome::NotPresent));
        };
        let now = now_ms(req.now);
        // The id's hash is both the store key and the credential id the audit names.
        let digest = super::cache::sha256(id.as_bytes());
        let Some(session) = self.load(&digest, now, req.at).await? else {
            return Ok(Outcome::NotPresent);
        };
        let outcome = self.outcome(req, &session);
        if matches!(outcome, Outcome::Authenticated(_)) && self.seen_due(&session.record, now) {
            let record = Record {
                last_seen: now,
                ..session.record.clone()
            };
            // Only over a record still there: a logout (on any replica) between the read
            // and this write must not bring the session back.
            if !self.save(&StoreKey::new(&digest), &record, now, Write::Replace).await? {
                return Ok(Outcome::NotPresent);
            }
        }
        Ok(outcome)
    }
}
