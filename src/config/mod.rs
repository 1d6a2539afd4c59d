//! Configuration: one TOML file (`version = 1`) parsed into the typed [`Config`].
//!
//! `raw.rs` mirrors the file with serde (`deny_unknown_fields`); `build.rs` turns it into
//! typed values and reports EVERY error at once, each with its TOML path
//! (`auth.chain[1].cache_ttl: unknown unit "x"`). Nothing here panics on input.

mod build;
mod raw;
pub mod values;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{HeaderName, Method, Uri};
use ipnet::IpNet;

use crate::auth::AuthKind;
pub use values::{Secret, parse_duration};

/// One problem in a config file, located by its TOML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if e.path.is_empty() {
                write!(f, "{}", e.message)?;
            } else {
                write!(f, "{}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    pub fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

/// The whole, validated configuration.
#[derive(Debug)]
pub struct Config {
    /// The folder relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub server: ServerConfig,
    pub admin: Option<AdminConfig>,
    pub upstream: UpstreamConfig,
    pub state: StateConfig,
    pub audit: AuditTarget,
    /// `audit.required`: a request whose audit line cannot be written is refused (503).
    pub audit_required: bool,
    /// `audit.flush`: zero writes each line as its request ends; more keeps each listener
    /// thread's lines and writes them together at least this often (and when 64 KiB gather).
    pub audit_flush: Duration,
    /// Files besides the config file whose change reloads it (API key file, TLS files).
    pub watched: Vec<PathBuf>,
    pub chain: Vec<AuthMember>,
    /// Bearer tokens no member recognises go to Jira unchanged (Jira's own personal
    /// access tokens), instead of being refused.
    pub passthrough_unknown_bearer: bool,
    pub users: Vec<LocalUser>,
    /// From `[[api_keys]]` and `api_keys_file`.
    pub api_keys: Vec<ApiKeyEntry>,
    pub identity: IdentityRules,
    pub access: AccessConfig,
    /// Things that are legal but probably not what the admin meant.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Option<Uri>,
    pub trusted_proxies: Vec<IpNet>,
    pub tls: Option<TlsFiles>,
    pub realm: String,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub shutdown_grace: Duration,
    /// Client connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Listener threads, each with its own event loop (default: one per core). Fixed at
    /// start: a reload does not change it.
    pub workers: usize,
    /// One listening socket per listener thread (SO_REUSEPORT: the kernel deals new
    /// connections out among them) instead of one shared socket (a thread free to accept
    /// takes the next connection, so a burst may all go to one thread, as with nginx's
    /// default). Fixed at start.
    pub reuse_port: bool,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest body the proxy reads itself (OAuth forms, form tokens, its pages' forms).
    pub max_read_body_bytes: usize,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub preserve_host: bool,
    pub identity: IdentityMode,
}

/// How Jira learns who the caller is.
#[derive(Debug, Clone)]
pub enum IdentityMode {
    /// A trusted header carries the Jira username; optionally a shared-secret header
    /// lets Jira's header authenticator prove the request came through the proxy.
    Header {
        name: HeaderName,
        secret: Option<(HeaderName, Secret)>,
    },
    /// The caller's own `Authorization` goes to Jira unchanged.
    Passthrough,
    /// Two-legged OAuth 1.0a with impersonation, signed with the application link's key.
    OAuth1 {
        consumer_key: String,
        signer: std::sync::Arc<crate::upstream::oauth1::Signer>,
        /// scheme://host[:port] as Jira sees its own URL (what Jira checks signatures against).
        signed_url: String,
        /// How long Jira's session for a user is reused for that user's safe requests
        /// instead of signing each; `None` signs every request.
        session_reuse: Option<std::time::Duration>,
    },
}

impl IdentityMode {
    pub fn describe(&self) -> String {
        match self {
            IdentityMode::Header { name, secret } => match secret {
                Some((s, _)) => format!("header {name} (with shared secret in {s})"),
                None => format!("header {name}"),
            },
            IdentityMode::Passthrough => "passthrough".into(),
            IdentityMode::OAuth1 {
                consumer_key,
                signed_url,
                ..
            } => {
                format!("oauth1 (consumer {consumer_key}, signed for {signed_url})")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Bound on the memory backend's entries.
    pub max_entries: usize,
    /// `Some` when `backend = "redis"`.
    pub redis: Option<crate::store::RedisSettings>,
}

impl StateConfig {
    /// The same store: a reload keeps the one it has (and the memory store's contents).
    pub fn same_as(&self, other: &StateConfig) -> bool {
        let redis = match (&self.redis, &other.redis) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                a.url.ct_eq(b.url.expose())
                    && a.key_prefix == b.key_prefix
                    && a.connect_timeout == b.connect_timeout
                    && a.response_timeout == b.response_timeout
                    && a.ca_file == b.ca_file
            }
            _ => false,
        };
        redis && self.max_entries == other.max_entries
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    File(PathBuf),
    Off,
}

#[derive(Debug, Clone)]
pub enum AuthMember {
    Basic(BasicConfig),
    ApiKey(ApiKeyConfig),
    Jwt(Box<JwtConfig>),
    Introspection(Box<IntrospectionConfig>),
    OAuth1(Box<OAuth1Config>),
    Session(SessionConfig),
}

/// The session member: cookies from `POST /rest/auth/1/session`.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie: String,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Cookie calls that change state need proof they are not cross-site.
    pub xsrf: bool,
    /// Members of these groups add a TOTP code (`otp`) to their login.
    pub totp_groups: Vec<String>,
    /// `scheme://host[:port]` of `server.public_url` (lowercase), for Origin/Referer checks.
    pub public_origin: Option<String>,
    /// `server.public_url` with its path, for `self` links.
    pub public_url: Option<String>,
    /// Cookies get `Secure` (the public URL is https).
    pub secure: bool,
}

/// The OAuth 1.0a provider member and its consumers (`[[oauth1.consumers]]`).
#[derive(Debug, Clone)]
pub struct OAuth1Config {
    /// `server.public_url` as written, for the `realm`.
    pub public_url: String,
    /// Scheme, host and port clients sign against.
    pub origin: (String, String, Option<u16>),
    pub max_clock_skew: Duration,
    pub request_token_ttl: Duration,
    pub access_token_ttl: Duration,
    pub consumers: Vec<OAuth1Consumer>,
}

#[derive(Debug, Clone)]
pub struct OAuth1Consumer {
    pub key: String,
    pub name: String,
    /// RSA public key (DER) for RSA-SHA1, as Jira's application links use.
    pub public_key_der: Option<Vec<u8>>,
    /// Shared secret for HMAC-SHA1 (and PLAINTEXT over TLS).
    pub secret: Option<Secret>,
    /// Two-legged requests without a requestor run as `run_as`.
    pub two_legged: bool,
    pub run_as: Option<String>,
    /// Two-legged requests may name the user (`xoauth_requestor_id`).
    pub impersonation: bool,
    /// Users may approve the consumer (three-legged); Jira's default is yes.
    pub three_legged: bool,
    /// When set, the only users (lowercase) the consumer may act as, whoever approves it.
    pub allowed_users: Option<Vec<String>>,
}

impl OAuth1Consumer {
    /// The consumer may act as `user` (its `allowed_users`, when set).
    pub fn may_act_as(&self, user: &str) -> bool {
        self.allowed_users
            .as_ref()
            .is_none_or(|list| list.iter().any(|u| u.eq_ignore_ascii_case(user)))
    }
}

/// Where a JWT member's verification keys come from.
#[derive(Debug, Clone)]
pub enum JwtKeys {
    /// `{issuer}/.well-known/openid-configuration` names the JWKS.
    Discovery(Uri),
    JwksUri(Uri),
    /// A JWKS document read from a file at load (offline setups).
    JwksDocument(serde_json::Value),
    /// One PEM public key read at load.
    Pem(Vec<u8>),
    /// HS256 only, with `hs256_secret`.
    SecretOnly,
}

#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub keys: JwtKeys,
    pub audiences: Vec<String>,
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub hs256_secret: Option<Secret>,
    pub user_claim: String,
    pub groups_claim: Option<String>,
    pub leeway: Duration,
    /// Required `typ` header, lowercase, without `application/` (e.g. `at+jwt`).
    pub typ: Option<String>,
    pub refetch_interval: Duration,
    pub max_age: Duration,
    pub fetch_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    /// Verified tokens are remembered until `exp`, at most this long (0 = never).
    pub token_cache_ttl: Duration,
    pub token_cache_max_entries: usize,
}

#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    pub url: Uri,
    pub client_id: String,
    pub client_secret: Secret,
    pub user_claim: String,
    pub groups_claim: Option<String>,
    pub cache_ttl: Duration,
    pub negative_cache_ttl: Duration,
    pub cache_max_entries: usize,
    pub fetch_timeout: Duration,
    pub ca_file: Option<PathBuf>,
}

impl AuthMember {
    pub fn kind(&self) -> AuthKind {
        match self {
            AuthMember::Basic(_) => AuthKind::Basic,
            AuthMember::ApiKey(_) => AuthKind::ApiKey,
            AuthMember::Jwt(_) => AuthKind::Jwt,
            AuthMember::Introspection(_) => AuthKind::Introspection,
            AuthMember::OAuth1(_) => AuthKind::OAuth1,
            AuthMember::Session(_) => AuthKind::Session,
        }
    }
}

/// Where the `api_key` member looks for keys.
#[derive(Debug, Clone)]
pub struct ApiKeyConfig {
    pub headers: Vec<HeaderName>,
    pub bearer: bool,
    pub basic: bool,
}

/// One `[[api_keys]]` block: the digest of the key, never the key.
#[derive(Debug, Clone)]
pub struct ApiKeyEntry {
    pub id: String,
    pub name: Option<String>,
    pub user: String,
    pub digest: crate::auth::api_key::KeyDigest,
    pub expires: Option<std::time::SystemTime>,
    pub revoked: bool,
    pub scopes: Vec<String>,
    pub allowed_ips: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub enum BasicBackend {
    Local,
    /// Ask Jira (`check_path`, default `/rest/api/2/myself`) with the credential.
    Jira {
        check_path: String,
        captcha_backoff: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct BasicConfig {
    pub backend: BasicBackend,
    pub cache_ttl: Duration,
    pub cache_max_entries: usize,
    pub lockout: Option<LockoutConfig>,
}

#[derive(Debug, Clone, Copy)]
pub struct LockoutConfig {
    pub max_failures: u32,
    /// Failed attempts from one client address (all users), 0 = no address limit.
    pub max_failures_per_address: u32,
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct LocalUser {
    pub name: String,
    pub password_hash: String,
    pub groups: Vec<String>,
    /// The RFC 6238 TOTP secret (decoded from base32), for the session member's second factor.
    pub totp_secret: Option<Secret>,
}

#[derive(Debug, Clone, Default)]
pub struct IdentityRules {
    pub lowercase: bool,
    pub strip_domains: Vec<String>,
    pub map: HashMap<String, String>,
    pub groups_from_jira: Option<GroupsFromJira>,
}

/// `[identity.groups_from_jira]`: users' groups looked up in Jira with a service
/// credential, for rules that name groups.
#[derive(Debug, Clone)]
pub struct GroupsFromJira {
    /// `Basic` (username and password) or `Bearer` (a Jira personal access token).
    pub authorization: Secret,
    pub cache_ttl: Duration,
    /// Jira's user resource (`/rest/api/2/user`, after Jira's context path if any).
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMode {
    Enforce,
    Report,
}

#[derive(Debug, Clone)]
pub struct AccessConfig {
    pub default: Effect,
    pub mode: AccessMode,
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone)]
pub struct RuleConfig {
    pub name: String,
    pub effect: Effect,
    pub methods: Vec<Method>,
    pub paths: Vec<String>,
    pub auth: Vec<AuthKind>,
    pub users: Vec<String>,
    pub users_not: Vec<String>,
    pub groups: Vec<String>,
    pub groups_not: Vec<String>,
    pub source: Vec<IpNet>,
    pub scopes: Vec<String>,
    pub anonymous: Option<bool>,
    pub authenticated: Option<bool>,
    /// Request headers that must carry exactly these values.
    pub headers: Vec<(HeaderName, String)>,
    /// `mode = "report"`: when it matches, its would-be effect is logged and the next
    /// rules decide.
    pub report: bool,
    /// `rate = "20/s burst 100"`: a token bucket per caller (Jira user, or client address
    /// for anonymous callers) for the requests this (allow) rule lets through.
    pub rate: Option<RateSpec>,
}

/// A rate limit: `count` requests per `per_secs`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    pub count: u32,
    pub per_secs: u32,
    pub burst: u32,
}

impl RateSpec {
    /// `"20/s"`, `"100/m burst 200"`, `"5000/h"`, `"10/30s"`.
    pub fn parse(s: &str) -> Result<RateSpec, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let (rate, burst) = match words.as_slice() {
            [rate] => (*rate, None),
            [rate, "burst", b] => (*rate, Some(*b)),
            _ => {
                return Err(format!(
                    "expected \"N/s\", \"N/m\" or \"N/h\", optionally \"burst B\", not {s:?}"
                ));
            }
        };
        let (count, per) = rate.split_once('/').ok_or_else(|| format!("no '/' in {rate:?}"))?;
        let count: u32 = count.parse().map_err(|_| format!("not a count: {count:?}"))?;
        let per_secs = match per {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            d => values::parse_duration(d).map(|d| d.as_secs() as u32)?,
        };
        let burst = match burst {
            Some(b) => b.parse().map_err(|_| format!("not a burst size: {b:?}"))?,
            None => count,
        };
        if count == 0 || per_secs == 0 || burst == 0 {
            return Err("count, period and burst must all be more than zero".into());
        }
        Ok(RateSpec { count, per_secs, burst })
    }

    /// Milliseconds between two tokens.
    pub fn interval_ms(&self) -> f64 {
        f64::from(self.per_secs) * 1000.0 / f64::from(self.count)
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Config::parse(&text, base)
    }

    /// Validates config text; relative paths in it are resolved against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        build::build(text, base_dir)
    }
}

#[cfg(test)]
mod tests;
