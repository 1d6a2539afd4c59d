//! HTTP Basic (RFC 7617), checked against the local `[[users]]` (argon2 hashes) or
//! against Jira itself (`backend = "jira"`), either way once per credential per cache TTL.
//!
//! The credential is split at the FIRST colon (user-ids cannot contain one, passwords
//! can); both halves must be UTF-8 (the charset we advertise). Unknown local users cost
//! one argon2 verification like known ones. Failed attempts count toward a per-user and a
//! per-address lockout window in the state store, reserved *before* the slow check so
//! parallel guesses cannot overrun it; only successes are cached. Against Jira the
//! lockout trips before Jira's own CAPTCHA threshold, so guessing through the proxy never
//! locks a real user out of Jira; a CAPTCHA answer from Jira is remembered per user and
//! not retried until `captcha_backoff` has passed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::PasswordHash;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderValue;
use tokio::sync::{Semaphore, watch};

use super::cache::{CredentialCache, Digest};
use super::password::Verifier;
use super::{AuthError, AuthKind, AuthRequest, Authenticator, Outcome, Principal, RejectReason};
use crate::config::{BasicBackend, BasicConfig, LocalUser, LockoutConfig};
use crate::store::StateStore;
use crate::upstream::{JiraAnswer, Upstream};

/// Longest user-id we accept (Jira's own limit is 255 characters).
const MAX_USER_BYTES: usize = 255;

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A decoded Basic credential: `user:password` as sent, held once.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    text: String,
    colon: usize,
}

impl Credential {
    pub fn user(&self) -> &str {
        self.text.get(..self.colon).unwrap_or_default()
    }

    pub fn password(&self) -> &str {
        self.text.get(self.colon + 1..).unwrap_or_default()
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log, even through a debug print.
        f.debug_struct("Credential")
            .field("user", &self.user())
            .finish_non_exhaustive()
    }
}

/// Parses an `Authorization` value. `None`: not Basic (another member's business).
/// `Some(Err(code))`: Basic, but malformed.
pub fn parse(value: &HeaderValue) -> Option<Result<Credential, &'static str>> {
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(i) => (&bytes[..i], &bytes[i..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Some(Err("malformed_basic"));
    }
    let Ok(decoded) = B64.decode(token) else {
        return Some(Err("malformed_basic"));
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return Some(Err("malformed_basic"));
    };
    let Some(colon) = text.bytes().position(|b| b == b':') else {
        return Some(Err("malformed_basic"));
    };
    // The decoded text is kept whole: user and password are its two parts, not copies.
    let user = &text[..colon];
    let control = if user.is_ascii() {
        user.bytes().any(|b| b.is_ascii_control())
    } else {
        user.chars().any(char::is_control)
    };
    if user.is_empty() || user.len() > MAX_USER_BYTES || control {
        return Some(Err("malformed_basic"));
    }
    Some(Ok(Credential { text, colon }))
}

/// `prefix` and the user name in lower case (as `str::to_lowercase` has it).
fn keyed(prefix: &str, user: &str) -> String {
    let mut key = String::with_capacity(prefix.len() + user.len());
    key.push_str(prefix);
    if user.is_ascii() {
        key.push_str(user);
        key[prefix.len()..].make_ascii_lowercase();
    } else {
        key.push_str(&user.to_lowercase());
    }
    key
}

struct Account {
    name: String,
    hash: Arc<PasswordHash>,
    groups: Vec<String>,
}

/// Who checks the password.
enum Backend {
    /// `[[users]]` with argon2 hashes.
    Local {
        accounts: HashMap<String, Account>,
        verifier: Verifier,
    },
    /// Jira itself (`GET /rest/api/2/myself` with the credential), once per cache TTL.
    Jira {
        upstream: Arc<Upstream>,
        check_path: String,
        captcha_backoff: Duration,
    },
}

pub struct BasicAuth {
    /// The slow check, the verified-credential cache, the store and the lockout settings,
    /// shared with the tasks that run the checks.
    checker: Arc<Checker>,
    challenge: HeaderValue,
}

/// Slow checks that may run at once. Each goes on without its request, so this bounds
/// what a client that starts checks and goes away can leave running; a request waits for
/// a place before anything is counted against the user.
const CHECKS_AT_ONCE: usize = 64;

/// The places for slow checks ([`CHECKS_AT_ONCE`] of them). A reload hands the running
/// member's places to the member it builds, so checks started before the reload still
/// count against the limit after it. (What the new member does not take over is joining
/// those checks: they decide by the old configuration's accounts or Jira settings.)
#[derive(Clone)]
pub struct CheckPlaces(Arc<Semaphore>);

impl Default for CheckPlaces {
    fn default() -> Self {
        CheckPlaces(Arc::new(Semaphore::new(CHECKS_AT_ONCE)))
    }
}

/// What a slow check needs: it runs as a task of its own, apart from the request (see
/// [`Checker::start`]).
struct Checker {
    backend: Backend,
    store: Arc<dyn StateStore>,
    lockout: Option<LockoutConfig>,
    cache: CredentialCache,
    /// Checks under way, by credential digest: a request with the same credential waits
    /// for the one under way.
    inflight: Mutex<super::cache::DigestMap<watch::Receiver<Option<Decided>>>>,
    places: CheckPlaces,
}

/// What the slow check concluded.
enum Checked {
    Valid(Principal),
    Invalid(&'static str),
    Captcha,
}

impl BasicAuth {
    /// `places`: the running member's on a reload (see [`CheckPlaces`]), else new ones.
    pub fn new(
        cfg: &BasicConfig,
        users: &[LocalUser],
        store: Arc<dyn StateStore>,
        upstream: Arc<Upstream>,
        realm: &str,
        places: CheckPlaces,
        threads: usize,
    ) -> Result<Self, String> {
        let backend = match &cfg.backend {
            BasicBackend::Local => {
                let mut accounts = HashMap::new();
                for u in users {
                    let hash = PasswordHash::new(&u.password_hash).map_err(|e| format!("user {}: {e}", u.name))?;
                    accounts.insert(
                        u.name.to_lowercase(),
                        Account {
                            name: u.name.clone(),
                            hash: Arc::new(hash),
                            groups: u.groups.clone(),
                        },
                    );
                }
                let verifier = Verifier::new(accounts.values().next().map(|a| &*a.hash))?;
                Backend::Local { accounts, verifier }
            }
            BasicBackend::Jira {
                check_path,
                captcha_backoff,
            } => Backend::Jira {
                upstream,
                check_path: check_path.clone(),
                captcha_backoff: *captcha_backoff,
            },
        };
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
            .map_err(|_| "realm is not a valid header value".to_string())?;
        Ok(BasicAuth {
            checker: Arc::new(Checker {
                backend,
                store,
                lockout: cfg.lockout,
                cache: CredentialCache::new(cfg.cache_ttl, cfg.cache_max_entries, threads),
                inflight: Mutex::new(Default::default()),
                places,
            }),
            challenge,
        })
    }

    /// Hits and misses of the verified-credential cache.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.checker.cache.stats()
    }

    /// The places for slow checks, for the member a reload builds.
    pub fn check_places(&self) -> CheckPlaces {
        self.checker.places.clone()
    }

    /// Argon2 verifications run so far (local backend; tests and metrics).
    pub fn verifications(&self) -> u64 {
        match &self.checker.backend {
            Backend::Local { verifier, .. } => verifier.verifications(),
            Backend::Jira { .. } => 0,
        }
    }

    // The store keys: built by hand, as a cache hit builds two of them per request.
    fn user_key(user: &str) -> String {
        keyed("lockout:basic:", user)
    }

    fn addr_key(ip: IpAddr) -> String {
        const PREFIX: &str = "lockout:basic-addr:";
        let mut key = Vec::with_capacity(PREFIX.len() + 39);
        key.extend_from_slice(PREFIX.as_bytes());
        crate::pipeline::admit::write_ip(&mut key, ip);
        String::from_utf8(key).unwrap_or_else(|_| format!("{PREFIX}{ip}"))
    }

    fn captcha_key(user: &str) -> String {
        keyed("captcha:basic:", user)
    }

    /// A failure counter's value as the store holds it (absent is zero).
    fn count(value: Option<&bytes::Bytes>) -> i64 {
        value
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    async fn locked_reason(store: &dyn StateStore, key: &str, window: Duration) -> Result<RejectReason, AuthError> {
        let retry_after = store.ttl(key).await?.unwrap_or(window);
        Ok(RejectReason {
            code: "locked_out",
            retry_after: Some(retry_after),
            forbidden: None,
            bearer_error: None,
            oauth_problem: None,
        })
    }

    /// The lockout counters a cache hit is checked against: the user's, and the client
    /// address's when there is an address limit.
    fn lock_keys(&self, l: &LockoutConfig, user: &str, ip: IpAddr) -> [String; 2] {
        let per_address = l.max_failures_per_address > 0;
        [
            Self::user_key(user),
            if per_address { Self::addr_key(ip) } else { String::new() },
        ]
    }

    /// Which of `keys` is at its limit, given their counts. Both limits are at least 1
    /// (0 turns a limit off), so a counter at zero or below locks no one out: what lets a
    /// hit skip the lookup while the store holds no counter above zero
    /// ([`StateStore::may_hold_lockouts`]).
    fn over_limit<'k>(l: &LockoutConfig, keys: &'k [String; 2], counts: &[Option<bytes::Bytes>]) -> Option<&'k str> {
        debug_assert!(l.max_failures >= 1, "a lockout with max_failures = 0 is built as none");
        if Self::count(counts.first().and_then(Option::as_ref)) >= i64::from(l.max_failures) {
            return Some(&keys[0]);
        }
        let per_address = l.max_failures_per_address > 0;
        if per_address && Self::count(counts.get(1).and_then(Option::as_ref)) >= i64::from(l.max_failures_per_address) {
            return Some(&keys[1]);
        }
        None
    }

    /// Both counters in one store call (one round trip to Redis).
    fn key_list<'k>(l: &LockoutConfig, keys: &'k [String; 2]) -> ([&'k str; 2], usize) {
        (
            [keys[0].as_str(), keys[1].as_str()],
            1 + usize::from(l.max_failures_per_address > 0),
        )
    }

    /// The lockout settings a cache hit must check its counters against: none when there
    /// is no lockout, or when the store knows without a lookup that no counter is above
    /// zero (the memory store while nobody has a failure counted).
    fn lockout_to_check(&self) -> Option<LockoutConfig> {
        self.checker.lockout.filter(|_| self.checker.store.may_hold_lockouts())
    }

    /// Read-only lockout check (for cache hits, which are not guesses).
    async fn is_locked(&self, user: &str, ip: IpAddr) -> Result<Option<RejectReason>, AuthError> {
        let Some(l) = self.lockout_to_check() else {
            return Ok(None);
        };
        let keys = self.lock_keys(&l, user, ip);
        let (list, n) = Self::key_list(&l, &keys);
        let counts = match self.checker.store.get_many_now(&list[..n]) {
            Some(counts) => counts?,
            None => self.checker.store.get_many(&list[..n]).await?,
        };
        match Self::over_limit(&l, &keys, &counts) {
            Some(key) => Ok(Some(Self::locked_reason(&*self.checker.store, key, l.window).await?)),
            None => Ok(None),
        }
    }

    /// [`BasicAuth::is_locked`]'s "not locked", answered without waiting when the store
    /// is in this process: `Some(Ok(()))` when the caller may go on, `None` when the
    /// store must be awaited or the caller is locked (whose answer needs the wait).
    fn unlocked_now(&self, user: &str, ip: IpAddr) -> Option<Result<(), AuthError>> {
        let Some(l) = self.lockout_to_check() else {
            return Some(Ok(()));
        };
        let keys = self.lock_keys(&l, user, ip);
        let (list, n) = Self::key_list(&l, &keys);
        match self.checker.store.get_many_now(&list[..n])? {
            Ok(counts) => Self::over_limit(&l, &keys, &counts).is_none().then_some(Ok(())),
            Err(e) => Some(Err(e.into())),
        }
    }

    /// The cached principal for this credential (`digest`) when its lockout counters are
    /// in this process and let it through; None when that needs the store or a check.
    fn cached_now(&self, req: &AuthRequest<'_>, user: &str, digest: &Digest) -> Option<Result<Outcome, AuthError>> {
        // Counted only when it answers: otherwise `verify` looks again, and counts.
        let p = self.checker.cache.peek(digest, req.at)?;
        match self.unlocked_now(user, req.client_ip)? {
            Ok(()) => {
                self.checker.cache.hit();
                Some(Ok(Outcome::Authenticated(p)))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The verified-credential cache's key for a user name and password.
    fn credential_digest(&self, user: &str, password: &str) -> Digest {
        // The cache is this member's own: user and password are the whole key.
        self.checker
            .cache
            .digest(&[crate::auth::lowercase(user).as_bytes(), password.as_bytes()])
    }
}

impl Checker {
    /// One attempt: reserve, check, and on success take the reservation back.
    async fn attempt(
        &self,
        user: &str,
        password: &str,
        header: &HeaderValue,
        ip: IpAddr,
    ) -> Result<Result<Principal, RejectReason>, AuthError> {
        if let Some(r) = self.reserve(user, ip).await? {
            return Ok(Err(r));
        }
        Ok(match self.check(user, password, header).await? {
            Checked::Valid(p) => {
                self.release(user, ip).await?;
                Ok(p)
            }
            Checked::Invalid(code) => Err(RejectReason::new(code)),
            Checked::Captcha => Err(RejectReason {
                code: "jira_captcha",
                retry_after: None,
                forbidden: Some(CAPTCHA_MESSAGE),
                bearer_error: None,
                oauth_problem: None,
            }),
        })
    }

    /// Counts this attempt against the user and the address BEFORE the slow check, so
    /// parallel guesses cannot overrun the limit; the (max+1)th attempt is refused.
    async fn reserve(&self, user: &str, ip: IpAddr) -> Result<Option<RejectReason>, AuthError> {
        let Some(l) = self.lockout else { return Ok(None) };
        let uk = BasicAuth::user_key(user);
        let ak = BasicAuth::addr_key(ip);
        if self.store.incr(&uk, 1, l.window).await? > i64::from(l.max_failures) {
            return Ok(Some(BasicAuth::locked_reason(&*self.store, &uk, l.window).await?));
        }
        if l.max_failures_per_address > 0
            && self.store.incr(&ak, 1, l.window).await? > i64::from(l.max_failures_per_address)
        {
            self.store.incr(&uk, -1, l.window).await?;
            return Ok(Some(BasicAuth::locked_reason(&*self.store, &ak, l.window).await?));
        }
        Ok(None)
    }

    /// A success takes back this attempt's reservation and clears the user's failures.
    async fn release(&self, user: &str, ip: IpAddr) -> Result<(), AuthError> {
        let Some(l) = self.lockout else { return Ok(()) };
        self.store.delete(&BasicAuth::user_key(user)).await?;
        if l.max_failures_per_address > 0 {
            self.store.incr(&BasicAuth::addr_key(ip), -1, l.window).await?;
        }
        Ok(())
    }

    async fn check(&self, user: &str, password: &str, header: &HeaderValue) -> Result<Checked, AuthError> {
        match &self.backend {
            Backend::Local { accounts, verifier } => {
                let account = accounts.get(&user.to_lowercase());
                let ok = verifier
                    .verify(password.as_bytes(), account.map(|a| a.hash.clone()))
                    .await?;
                Ok(match account {
                    Some(a) if ok => Checked::Valid(Principal::new(AuthKind::Basic, a.name.clone(), a.groups.clone())),
                    Some(_) => Checked::Invalid("bad_password"),
                    None => Checked::Invalid("unknown_user"),
                })
            }
            Backend::Jira {
                upstream,
                check_path,
                captcha_backoff,
            } => {
                let ck = BasicAuth::captcha_key(user);
                if self.store.get(&ck).await?.is_some() {
                    return Ok(Checked::Captcha);
                }
                match upstream.check_basic(check_path, header).await {
                    Ok(JiraAnswer::Valid(name)) => {
                        Ok(Checked::Valid(Principal::new(AuthKind::Basic, name, Vec::new())))
                    }
                    Ok(JiraAnswer::Invalid(code)) => Ok(Checked::Invalid(code)),
                    Ok(JiraAnswer::Captcha) => {
                        self.store
                            .put(&ck, bytes::Bytes::from_static(b"1"), *captcha_backoff)
                            .await?;
                        Ok(Checked::Captcha)
                    }
                    Err(e) => Err(AuthError::Internal(format!("Jira credential check: {e}"))),
                }
            }
        }
    }
}

/// The request's Basic user name and password; else its outcome for this member (a
/// malformed credential refused, none not present). Read the same way by `at_once` and
/// `authenticate`, so the two never differ.
fn presented<'q>(req: &'q AuthRequest<'_>) -> Result<(&'q str, &'q str), Outcome> {
    match req.basic() {
        Some(Ok(credential)) => Ok(credential),
        Some(Err(code)) => Err(Outcome::Rejected(RejectReason::new(code))),
        None => Err(Outcome::NotPresent),
    }
}

#[async_trait]
impl Authenticator for BasicAuth {
    fn kind(&self) -> AuthKind {
        AuthKind::Basic
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    /// No Basic credential, a malformed one, or a cached one whose lockout counters are
    /// in this process (most requests): nothing to wait for.
    fn at_once(&self, req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        let (user, password) = match presented(req) {
            Ok(credential) => credential,
            Err(outcome) => return Some(Ok(outcome)),
        };
        self.cached_now(req, user, &self.credential_digest(user, password))
    }

    /// [`Authenticator::at_once`]'s answer, else the verification, with the credential's
    /// digest computed once for both.
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        let (user, password) = match presented(req) {
            Ok(credential) => credential,
            Err(outcome) => return Ok(outcome),
        };
        let digest = self.credential_digest(user, password);
        if let Some(r) = self.cached_now(req, user, &digest) {
            return r;
        }
        let Some(value) = req.authorization else {
            return Ok(Outcome::NotPresent);
        };
        self.verify(user, password, value, req.client_ip, req.at, digest).await
    }
}

impl BasicAuth {
    /// Checks a user name and password as a Basic credential would be checked (same
    /// backend, cache and lockout): for logins that arrive another way (sessions).
    pub async fn check_password(&self, user: &str, password: &str, ip: IpAddr) -> Result<Outcome, AuthError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut header = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| AuthError::Internal("credential not encodable".into()))?;
        header.set_sensitive(true);
        let digest = self.credential_digest(user, password);
        self.verify(user, password, &header, ip, std::time::Instant::now(), digest)
            .await
    }

    /// The lockout settings, if any.
    pub fn lockout(&self) -> Option<LockoutConfig> {
        self.checker.lockout
    }

    /// `now`: the request's reading of the clock, for the cache; `digest`: the
    /// credential's ([`BasicAuth::credential_digest`]).
    async fn verify(
        &self,
        user: &str,
        password: &str,
        value: &HeaderValue,
        ip: IpAddr,
        now: std::time::Instant,
        digest: Digest,
    ) -> Result<Outcome, AuthError> {
        let req_ip = ip;
        if let Some(p) = self.checker.cache.get(&digest, now) {
            if let Some(r) = self.is_locked(user, req_ip).await? {
                return Ok(Outcome::Rejected(r));
            }
            return Ok(Outcome::Authenticated(p));
        }
        // One slow check per distinct credential at a time: a burst of parallel requests
        // with the same (right) password on a cold cache is one attempt, not a burst of
        // attempts that would trip the lockout, and costs one argon2 run or Jira call.
        // Boxed: the wait's state would otherwise be carried by every warm-cache request.
        let mut decided = Box::pin(self.checker.start(user, password, value, req_ip, digest)).await?;
        let decided = match decided.wait_for(Option::is_some).await {
            Ok(d) => d.clone(),
            Err(_) => None,
        };
        match decided {
            Some(Ok(Ok(p))) => Ok(Outcome::Authenticated(p)),
            Some(Ok(Err(r))) => Ok(Outcome::Rejected(r)),
            Some(Err(e)) => Err(AuthError::Internal(e)),
            None => Err(AuthError::Internal(
                "the credential check ended without a decision".into(),
            )),
        }
    }
}

/// The shared result of one slow check: a principal, or why not.
type Decided = Result<Result<Principal, RejectReason>, String>;

impl Checker {
    fn inflight(&self) -> std::sync::MutexGuard<'_, super::cache::DigestMap<watch::Receiver<Option<Decided>>>> {
        self.inflight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The check of this credential under way, or a new one: a task of its own, which goes
    /// on when the request is dropped (the client closed its connection or reset its
    /// HTTP/2 stream mid-check). Its reservation is then settled as the check decides,
    /// never left standing as a failure (abandoned logins with the right password would
    /// lock their owner out), and a guess Jira has already seen is never taken back; a
    /// success is cached for the next request. Waiting for a place is the one part a
    /// dropped request takes with it: nothing has been counted or asked by then.
    async fn start(
        self: &Arc<Self>,
        user: &str,
        password: &str,
        header: &HeaderValue,
        ip: IpAddr,
        digest: [u8; 32],
    ) -> Result<watch::Receiver<Option<Decided>>, AuthError> {
        if let Some(under_way) = self.inflight().get(&digest) {
            return Ok(under_way.clone());
        }
        let place = self
            .places
            .0
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AuthError::Internal("credential checks have stopped".into()))?;
        let (tx, rx) = {
            let mut inflight = self.inflight();
            if let Some(under_way) = inflight.get(&digest) {
                return Ok(under_way.clone());
            }
            // A check that ended while this request waited for a place: its task cached
            // the success before it left the map.
            // (Not counted again: the request's miss was counted when it looked first.)
            if let Some(p) = self.cache.peek(&digest, std::time::Instant::now()) {
                return Ok(watch::channel(Some(Ok(Ok(p)))).1);
            }
            let (tx, rx) = watch::channel(None);
            inflight.insert(digest, rx.clone());
            (tx, rx)
        };
        let done = Done {
            checker: self.clone(),
            digest,
        };
        let (user, password, header) = (user.to_owned(), password.to_owned(), header.clone());
        tokio::spawn(async move {
            let _place = place;
            let decided = done
                .checker
                .attempt(&user, &password, &header, ip)
                .await
                .map_err(|e| e.to_string());
            if let Ok(Ok(p)) = &decided {
                done.checker.cache.insert(digest, p.clone());
            }
            // Out of the map before the answer: a request from now on finds the cache.
            drop(done);
            let _ = tx.send(Some(decided));
        });
        Ok(rx)
    }
}

/// Takes a check out of the in-flight map when its task ends, however it ends.
struct Done {
    checker: Arc<Checker>,
    digest: [u8; 32],
}

impl Drop for Done {
    fn drop(&mut self) {
        self.checker.inflight().remove(&self.digest);
    }
}

/// What a caller locked by Jira's CAPTCHA is told (they must sign in to Jira in a browser).
const CAPTCHA_MESSAGE: &str = "Jira requires a CAPTCHA for this account after too many failed logins. \
Sign in to Jira once in a web browser (or ask a Jira administrator to reset the login count), then try again.";

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).expect("header")
    }

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn store_keys_name_the_user_in_lower_case_and_the_address() {
        for key in [BasicAuth::user_key("Alice"), BasicAuth::addr_key([10, 0, 0, 7].into())] {
            assert!(key.starts_with(crate::store::LOCKOUT_PREFIX), "{key}");
        }
        assert_eq!(BasicAuth::user_key("Alice"), "lockout:basic:alice");
        assert_eq!(BasicAuth::user_key("JÜRGEN"), "lockout:basic:jürgen");
        assert_eq!(BasicAuth::captcha_key("Bob"), "captcha:basic:bob");
        // A full memory store drops these (made by any caller) before a proven caller's.
        assert!(BasicAuth::captcha_key("Bob").starts_with(crate::store::CAPTCHA_PREFIX));
        assert_eq!(BasicAuth::addr_key([10, 0, 0, 7].into()), "lockout:basic-addr:10.0.0.7");
        let v6 = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]);
        assert_eq!(BasicAuth::addr_key(v6), "lockout:basic-addr:2001:db8::1");
    }

    /// `parse`'s answer as user and password.
    fn pair(v: &HeaderValue) -> Option<Result<(String, String), &'static str>> {
        parse(v).map(|r| r.map(|c| (c.user().to_owned(), c.password().to_owned())))
    }

    #[test]
    fn a_credential_prints_without_its_password() {
        let v = hv(&format!("Basic {}", b64(b"alice:s3cret-pw")));
        let printed = format!("{:?}", parse(&v));
        assert!(printed.contains("alice") && !printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn basic_password_with_colons_splits_at_first() {
        let v = hv(&format!("Basic {}", b64(b"alice:pa:ss:word")));
        assert_eq!(pair(&v), Some(Ok(("alice".into(), "pa:ss:word".into()))));
    }

    #[test]
    fn basic_scheme_is_case_insensitive_and_padding_optional() {
        let v = hv(&format!("bAsIc   {}", b64(b"bob:x").trim_end_matches('=')));
        assert_eq!(pair(&v), Some(Ok(("bob".into(), "x".into()))));
    }

    #[test]
    fn basic_utf8_user_and_password() {
        let v = hv(&format!("Basic {}", b64("jürgen:pässwörd".as_bytes())));
        assert_eq!(pair(&v), Some(Ok(("jürgen".into(), "pässwörd".into()))));
    }

    #[test]
    fn basic_malformed_shapes_are_rejected_not_skipped() {
        for v in [
            "Basic".to_string(),
            "Basic !!!notbase64".to_string(),
            format!("Basic {}", b64(b"no-colon")),
            format!("Basic {}", b64(b":empty-user")),
            format!("Basic {}", b64(b"\xff\xfe:latin1")),
            format!("Basic {}", b64(b"us\x01er:pw")),
            format!("Basic {}", b64(b"us\x7fer:pw")),
            format!("Basic {}", b64("jür\u{85}gen:pw".as_bytes())),
            format!("Basic {}", b64(format!("{}:pw", "u".repeat(300)).as_bytes())),
        ] {
            assert_eq!(parse(&hv(&v)), Some(Err("malformed_basic")), "{v}");
        }
    }

    #[test]
    fn other_schemes_are_not_basic() {
        assert_eq!(parse(&hv("Bearer abc")), None);
        assert_eq!(parse(&hv("Basicx abc")), None);
    }
}
