//! The serde mirror of the TOML file. Nothing here leaves `config/`: `build.rs` turns
//! these loosely typed values into the typed `Config`, collecting every error with its
//! TOML path. Each section (and each array element) is deserialised on its own so one
//! mistake does not hide the next.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Deserialised on its own (as `server.tls`) so its errors do not hide the rest.
    pub tls: Option<toml::Value>,
    pub realm: Option<String>,
    pub header_read_timeout: Option<String>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub shutdown_grace: Option<String>,
    pub max_connections: Option<usize>,
    pub workers: Option<usize>,
    pub reuse_port: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub max_read_body_bytes: Option<usize>,
    pub idle_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub cert: String,
    pub key: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub url: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub ca_file: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub pool_max_idle: Option<usize>,
    pub preserve_host: Option<bool>,
    /// Deserialised on its own (as `upstream.identity`).
    pub identity: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub mode: String,
    pub header: Option<String>,
    pub secret_header: Option<String>,
    pub secret: Option<String>,
    pub consumer_key: Option<String>,
    pub private_key: Option<String>,
    pub signed_url: Option<String>,
    pub session_reuse: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub backend: Option<String>,
    pub max_entries: Option<usize>,
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    pub to: Option<String>,
    pub required: Option<bool>,
    pub flush: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthMember {
    Basic(Basic),
    ApiKey(ApiKey),
    Jwt(Jwt),
    Introspection(Introspection),
    #[serde(rename = "oauth1")]
    OAuth1(OAuth1),
    Session(Session),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub cookie: Option<String>,
    pub idle_timeout: Option<String>,
    pub absolute_timeout: Option<String>,
    pub xsrf: Option<bool>,
    #[serde(default)]
    pub totp_groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth1 {
    pub max_clock_skew: Option<String>,
    pub request_token_ttl: Option<String>,
    pub access_token_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth1Consumer {
    pub key: String,
    pub name: Option<String>,
    pub public_key: Option<String>,
    pub secret: Option<String>,
    pub three_legged: Option<bool>,
    pub two_legged: Option<TwoLegged>,
    pub allowed_users: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwoLegged {
    #[serde(default)]
    pub allowed: bool,
    pub run_as: Option<String>,
    #[serde(default)]
    pub impersonation: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    pub issuer: String,
    pub discovery: Option<bool>,
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<String>,
    pub public_key: Option<String>,
    pub hs256_secret: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Option<Vec<String>>,
    pub user_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub leeway: Option<String>,
    pub typ: Option<String>,
    pub jwks_refetch_interval: Option<String>,
    pub jwks_max_age: Option<String>,
    pub fetch_timeout: Option<String>,
    pub ca_file: Option<String>,
    pub token_cache_ttl: Option<String>,
    pub token_cache_max_entries: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Introspection {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    pub user_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub cache_ttl: Option<String>,
    pub negative_cache_ttl: Option<String>,
    pub cache_max_entries: Option<usize>,
    pub fetch_timeout: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub headers: Option<Vec<String>>,
    pub bearer: Option<bool>,
    pub basic: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    pub id: String,
    pub hash: String,
    pub user: String,
    pub name: Option<String>,
    pub expires: Option<String>,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub allowed_ips: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Basic {
    pub backend: Option<String>,
    pub check_path: Option<String>,
    pub captcha_backoff: Option<String>,
    pub cache_ttl: Option<String>,
    pub cache_max_entries: Option<usize>,
    pub lockout: Option<Lockout>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockout {
    pub max_failures: u32,
    pub max_failures_per_address: Option<u32>,
    pub window: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
    pub totp_secret: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityRules {
    #[serde(default)]
    pub lowercase: bool,
    pub strip_domain: Option<StringOrList>,
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    pub groups_from_jira: Option<GroupsFromJira>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsFromJira {
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub cache_ttl: Option<String>,
    pub path: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Access {
    pub default: Option<String>,
    pub mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub effect: String,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
    #[serde(default)]
    pub auth: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub users_not: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub groups_not: Vec<String>,
    #[serde(default)]
    pub source: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub anonymous: Option<bool>,
    pub authenticated: Option<bool>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub mode: Option<String>,
    pub rate: Option<String>,
}
