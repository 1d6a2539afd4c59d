//! Raw TOML → typed `Config`, collecting every error with its TOML path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::uri::Scheme;
use http::{HeaderName, Method, Uri};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::raw;
use super::*;
use crate::auth::AuthKind;

struct Ctx<'a> {
    errors: Vec<ConfigError>,
    warnings: Vec<String>,
    base: &'a Path,
}

impl Ctx<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Deserialises one section or array element, recording the error with its path.
    fn take<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let full = match inner.as_str() {
                    "" | "." | "?" => path.to_string(),
                    _ => format!("{path}.{inner}"),
                };
                // toml appends "in `field`" lines; the path already says where.
                let message = e.into_inner().to_string();
                let first = message.lines().next().unwrap_or("").trim().to_string();
                self.err(full, first);
                None
            }
        }
    }

    fn section<T: DeserializeOwned + Default>(&mut self, root: &mut Table, key: &str) -> T {
        match root.remove(key) {
            None => T::default(),
            Some(v) => self.take(v, key).unwrap_or_default(),
        }
    }

    /// An array of tables, each element deserialised on its own.
    fn array<T: DeserializeOwned>(&mut self, value: Option<Value>, path: &str) -> Vec<T> {
        match value {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .filter_map(|(i, v)| self.take(v, &format!("{path}[{i}]")))
                .collect(),
            Some(_) => {
                self.err(path, "must be an array of tables ([[...]])");
                Vec::new()
            }
        }
    }

    fn duration(&mut self, v: Option<&str>, path: &str, default: Duration) -> Duration {
        match v.map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                self.err(path, e);
                default
            }
        }
    }

    /// As `duration`, refusing zero.
    fn positive_duration(&mut self, v: Option<&str>, path: &str, default: Duration) -> Duration {
        match self.duration(v, path, default) {
            d if d.is_zero() => {
                self.err(path, "must be more than zero");
                default
            }
            d => d,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.base.join(p)
    }
}

pub fn build(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let mut root: Table =
        toml::from_str(text).map_err(|e| ConfigErrors::one("", format!("not valid TOML: {}", e.to_string().trim())))?;
    let mut cx = Ctx {
        errors: Vec::new(),
        warnings: Vec::new(),
        base,
    };
    match root.remove("version") {
        Some(Value::Integer(1)) => {}
        Some(other) => cx.err(
            "version",
            format!("unsupported version {other}; this proxy reads version = 1"),
        ),
        None => cx.err("version", "missing; start the file with version = 1"),
    }
    let server_raw: raw::Server = cx.section(&mut root, "server");
    let admin_raw: Option<raw::Admin> = root.remove("admin").and_then(|v| cx.take(v, "admin"));
    let upstream_raw: raw::Upstream = cx.section(&mut root, "upstream");
    let state_raw: raw::State = cx.section(&mut root, "state");
    let audit_raw: raw::Audit = cx.section(&mut root, "audit");
    let identity_raw: raw::IdentityRules = cx.section(&mut root, "identity");
    let mut passthrough_unknown_bearer = false;
    let chain_raw: Vec<raw::AuthMember> = match root.remove("auth") {
        None => Vec::new(),
        Some(Value::Table(mut t)) => {
            let chain = t.remove("chain");
            match t.remove("passthrough_unknown_bearer") {
                None => {}
                Some(Value::Boolean(b)) => passthrough_unknown_bearer = b,
                Some(_) => cx.err("auth.passthrough_unknown_bearer", "must be true or false"),
            }
            for k in t.keys() {
                cx.err(
                    format!("auth.{k}"),
                    "unknown key (expected [[auth.chain]] or passthrough_unknown_bearer)",
                );
            }
            cx.array(chain, "auth.chain")
        }
        Some(_) => {
            cx.err("auth", "must be a table with [[auth.chain]] entries");
            Vec::new()
        }
    };
    let users_raw: Vec<raw::User> = cx.array(root.remove("users"), "users");
    let mut keys_raw: Vec<(String, raw::ApiKeyEntry)> = cx
        .array(root.remove("api_keys"), "api_keys")
        .into_iter()
        .enumerate()
        .map(|(i, k)| (format!("api_keys[{i}]"), k))
        .collect();
    let mut key_files = Vec::new();
    match root.remove("api_keys_file") {
        None => {}
        Some(Value::String(file)) => {
            key_files.push(cx.path(&file));
            keys_raw.extend(key_file(&mut cx, &file));
        }
        Some(_) => cx.err("api_keys_file", "must be a file path"),
    }
    let (access_raw, rules_raw): (raw::Access, Vec<raw::Rule>) = match root.remove("access") {
        None => (raw::Access::default(), Vec::new()),
        Some(Value::Table(mut t)) => {
            let rules = t.remove("rules");
            let access = cx.take(Value::Table(t), "access").unwrap_or_default();
            (access, cx.array(rules, "access.rules"))
        }
        Some(_) => {
            cx.err("access", "must be a table");
            (raw::Access::default(), Vec::new())
        }
    };
    let consumers_raw: Vec<raw::OAuth1Consumer> = match root.remove("oauth1") {
        None => Vec::new(),
        Some(Value::Table(mut t)) => {
            let list = t.remove("consumers");
            for k in t.keys() {
                cx.err(format!("oauth1.{k}"), "unknown key (expected [[oauth1.consumers]])");
            }
            cx.array(list, "oauth1.consumers")
        }
        Some(_) => {
            cx.err("oauth1", "must be a table with [[oauth1.consumers]] entries");
            Vec::new()
        }
    };
    for k in root.keys() {
        cx.err(k.clone(), "unknown section");
    }

    let server = server(&mut cx, server_raw);
    let admin = admin_raw.and_then(|a| admin(&mut cx, a));
    let upstream = upstream(&mut cx, upstream_raw);
    let state = state(&mut cx, state_raw);
    let audit_required = audit_raw.required.unwrap_or(false);
    let audit_flush = cx.duration(audit_raw.flush.as_deref(), "audit.flush", Duration::ZERO);
    if audit_flush > Duration::from_secs(60) {
        cx.err(
            "audit.flush",
            "at most 60s: lines wait no longer than this to be written",
        );
    }
    if audit_required && !audit_flush.is_zero() {
        cx.err(
            "audit.flush",
            "cannot be used with audit.required = true, which lets a request through only once its line is written",
        );
    }
    let audit = audit(&mut cx, audit_raw);
    if audit_required && audit == AuditTarget::Off {
        cx.err("audit.required", "requires an audit target (\"stdout\" or a file)");
    }
    let mut watched: Vec<PathBuf> = key_files.clone();
    if let Some(tls) = &server.tls {
        watched.push(tls.cert.clone());
        watched.push(tls.key.clone());
    }
    let consumers = oauth1_consumers(&mut cx, consumers_raw);
    let chain = chain(&mut cx, chain_raw, server.public_url.as_ref(), &consumers);
    let users = users(&mut cx, users_raw);
    let api_keys = api_keys(&mut cx, keys_raw);
    let identity = identity(&mut cx, identity_raw);
    let access = access(&mut cx, access_raw, rules_raw, &chain);
    if let Ok(policy) = crate::access::Policy::compile(&access) {
        for (rule, by) in policy.shadowed() {
            cx.warnings.push(format!(
                "access rule {rule:?} can never match: rule {by:?} before it matches everything it does"
            ));
        }
        if let Some(what) = policy.anonymous_writes() {
            cx.warnings.push(format!(
                "{what} lets anonymous callers change data (methods other than GET/HEAD/OPTIONS)"
            ));
        }
    }
    if chain.iter().any(|m| {
        matches!(
            m,
            AuthMember::Basic(BasicConfig {
                backend: BasicBackend::Local,
                ..
            })
        )
    }) && users.is_empty()
    {
        cx.warnings
            .push("auth.chain has a basic member but no [[users]] are configured".into());
    }
    if let Some((i, s)) = chain.iter().enumerate().find_map(|(i, m)| match m {
        AuthMember::Session(s) => Some((i, s)),
        _ => None,
    }) {
        if !chain.iter().any(|m| matches!(m, AuthMember::Basic(_))) {
            cx.err(
                format!("auth.chain[{i}]"),
                "a session member checks passwords with the basic member's backend and lockout; add a basic member",
            );
        }
        for u in &users {
            if u.totp_secret.is_none() && u.groups.iter().any(|g| s.totp_groups.contains(g)) {
                cx.warnings.push(format!(
                    "user {} is in a totp_groups group but has no totp_secret: their logins will fail",
                    u.name
                ));
            }
        }
    }
    if !api_keys.is_empty() && !chain.iter().any(|m| matches!(m, AuthMember::ApiKey(_))) {
        cx.warnings
            .push("[[api_keys]] are configured but auth.chain has no api_key member".into());
    }
    if server.tls.is_none() && !server.listen.ip().is_loopback() {
        cx.warnings.push(format!(
            "server.listen {} is not loopback and [server.tls] is not set: credentials \
             travel in clear unless a TLS-terminating balancer sits in front",
            server.listen
        ));
    }

    if !cx.errors.is_empty() {
        return Err(ConfigErrors(cx.errors));
    }
    let (upstream, server) = (upstream.unwrap_or_else(dummy_upstream), server);
    Ok(Config {
        base_dir: base.to_path_buf(),
        server,
        admin,
        upstream,
        state,
        audit,
        audit_required,
        audit_flush,
        watched,
        chain,
        passthrough_unknown_bearer,
        users,
        api_keys,
        identity,
        access,
        warnings: cx.warnings,
    })
}

/// Only used when errors were already recorded (the value is then discarded).
fn dummy_upstream() -> UpstreamConfig {
    UpstreamConfig {
        scheme: Scheme::HTTP,
        authority: http::uri::Authority::from_static("127.0.0.1"),
        connect_timeout: Duration::ZERO,
        response_timeout: Duration::ZERO,
        ca_file: None,
        pool_idle_timeout: Duration::ZERO,
        pool_max_idle: 0,
        preserve_host: true,
        identity: IdentityMode::Passthrough,
    }
}

fn socket_addr(cx: &mut Ctx, v: Option<&str>, path: &str) -> Option<SocketAddr> {
    match v {
        None => {
            cx.err(path, "missing; e.g. \"0.0.0.0:8443\"");
            None
        }
        Some(s) => match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                cx.err(path, format!("not an address:port: {s:?}"));
                None
            }
        },
    }
}

fn cidr(s: &str) -> Option<IpNet> {
    IpNet::from_str(s)
        .ok()
        .or_else(|| std::net::IpAddr::from_str(s).ok().map(IpNet::from))
}

fn cidrs(cx: &mut Ctx, list: &[String], path: &str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match cidr(s) {
            Some(n) => out.push(n),
            None => cx.err(format!("{path}[{i}]"), format!("not an IP address or CIDR: {s:?}")),
        }
    }
    out
}

fn server(cx: &mut Ctx, r: raw::Server) -> ServerConfig {
    let listen =
        socket_addr(cx, r.listen.as_deref(), "server.listen").unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let public_url = r.public_url.as_deref().and_then(|s| match Uri::from_str(s) {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() && u.query().is_none() => {
            Some(u)
        }
        _ => {
            cx.err(
                "server.public_url",
                format!("not an absolute http(s) URL without query: {s:?}"),
            );
            None
        }
    });
    let trusted_proxies = cidrs(cx, &r.trusted_proxies, "server.trusted_proxies");
    let tls = r
        .tls
        .and_then(|v| cx.take::<raw::Tls>(v, "server.tls"))
        .map(|t| TlsFiles {
            cert: cx.path(&t.cert),
            key: cx.path(&t.key),
        });
    let max_header_bytes = r.max_header_bytes.unwrap_or(32 * 1024);
    if max_header_bytes < 8192 {
        cx.err("server.max_header_bytes", "must be at least 8192");
    }
    let max_headers = r.max_headers.unwrap_or(100);
    // The header map holds at most ~24,000 fields; a head is refused long before.
    if max_headers == 0 || max_headers > MAX_HEADERS {
        cx.err("server.max_headers", format!("must be between 1 and {MAX_HEADERS}"));
    }
    let realm = r.realm.unwrap_or_else(|| "Jira".into());
    if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
        cx.err(
            "server.realm",
            "must not contain quotes, backslashes or control characters",
        );
    }
    ServerConfig {
        listen,
        public_url,
        trusted_proxies,
        tls,
        realm,
        header_read_timeout: cx.duration(
            r.header_read_timeout.as_deref(),
            "server.header_read_timeout",
            Duration::from_secs(10),
        ),
        max_header_bytes,
        max_headers,
        shutdown_grace: cx.duration(
            r.shutdown_grace.as_deref(),
            "server.shutdown_grace",
            Duration::from_secs(30),
        ),
        max_connections: match r.max_connections {
            Some(0) => {
                cx.err("server.max_connections", "must be at least 1");
                1
            }
            Some(n) => n,
            None => 10_000,
        },
        workers: match r.workers {
            Some(n) if n == 0 || n > 256 => {
                cx.err("server.workers", "must be between 1 and 256");
                1
            }
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        reuse_port: r.reuse_port.unwrap_or(false),
        max_concurrent_streams: match r.max_concurrent_streams {
            Some(0) => {
                cx.err("server.max_concurrent_streams", "must be at least 1");
                1
            }
            Some(n) => n,
            None => 128,
        },
        max_read_body_bytes: match r.max_read_body_bytes {
            Some(n) if n < 1024 => {
                cx.err("server.max_read_body_bytes", "must be at least 1024");
                1024
            }
            Some(n) => n,
            None => 64 * 1024,
        },
        idle_timeout: cx.positive_duration(
            r.idle_timeout.as_deref(),
            "server.idle_timeout",
            Duration::from_secs(60),
        ),
    }
}

fn admin(cx: &mut Ctx, r: raw::Admin) -> Option<AdminConfig> {
    let listen = socket_addr(cx, r.listen.as_deref(), "admin.listen")?;
    Some(AdminConfig { listen })
}

fn upstream(cx: &mut Ctx, r: raw::Upstream) -> Option<UpstreamConfig> {
    let (scheme, authority) = match r.url.as_deref() {
        None => {
            cx.err(
                "upstream.url",
                "missing; Jira's base URL, e.g. \"http://127.0.0.1:8080\"",
            );
            (None, None)
        }
        Some(s) => match Uri::from_str(s) {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {
                if u.authority().is_some_and(|a| a.as_str().contains('@')) {
                    cx.err("upstream.url", "must not contain credentials");
                }
                if !matches!(u.path(), "" | "/") || u.query().is_some() {
                    cx.err(
                        "upstream.url",
                        "must be scheme://host[:port] only; Jira's context path is kept from the request",
                    );
                }
                (u.scheme().cloned(), u.authority().cloned())
            }
            _ => {
                cx.err("upstream.url", format!("not an absolute http(s) URL: {s:?}"));
                (None, None)
            }
        },
    };
    let ca_file = r.ca_file.as_deref().map(|p| cx.path(p));
    if ca_file.is_some() && scheme.as_ref() != Some(&Scheme::HTTPS) {
        cx.warnings
            .push("upstream.ca_file is set but upstream.url is not https".into());
    }
    let identity = match r.identity {
        None => identity_mode(cx, None),
        Some(v) => cx
            .take::<raw::Identity>(v, "upstream.identity")
            .and_then(|i| identity_mode(cx, Some(i))),
    };
    let connect_timeout = cx.duration(
        r.connect_timeout.as_deref(),
        "upstream.connect_timeout",
        Duration::from_secs(5),
    );
    let response_timeout = cx.duration(
        r.response_timeout.as_deref(),
        "upstream.response_timeout",
        Duration::from_secs(120),
    );
    let pool_idle_timeout = cx.duration(
        r.pool_idle_timeout.as_deref(),
        "upstream.pool_idle_timeout",
        Duration::from_secs(90),
    );
    let cfg = UpstreamConfig {
        scheme: scheme.unwrap_or(Scheme::HTTP),
        authority: authority?,
        connect_timeout,
        response_timeout,
        ca_file,
        pool_idle_timeout,
        pool_max_idle: r.pool_max_idle.unwrap_or(64),
        preserve_host: r.preserve_host.unwrap_or(true),
        identity: identity?,
    };
    Some(cfg)
}

/// The most header fields `server.max_headers` may allow in one request head.
const MAX_HEADERS: usize = 10_000;

/// Header names that must never carry the identity (they mean something else to Jira
/// or to HTTP itself).
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
];

fn header_name(cx: &mut Ctx, s: &str, path: &str) -> Option<HeaderName> {
    match HeaderName::from_str(s) {
        Ok(h) if !RESERVED_HEADERS.contains(&h.as_str()) => Some(h),
        Ok(_) => {
            cx.err(path, format!("{s} is reserved and cannot carry the identity"));
            None
        }
        Err(_) => {
            cx.err(path, format!("not a valid header name: {s:?}"));
            None
        }
    }
}

fn identity_mode(cx: &mut Ctx, r: Option<raw::Identity>) -> Option<IdentityMode> {
    let Some(r) = r else {
        return Some(IdentityMode::Header {
            name: HeaderName::from_static("x-forwarded-user"),
            secret: None,
        });
    };
    match r.mode.as_str() {
        "header" => {
            let name = header_name(
                cx,
                r.header.as_deref().unwrap_or("X-Forwarded-User"),
                "upstream.identity.header",
            )?;
            let secret = match (r.secret_header, r.secret) {
                (None, None) => None,
                (Some(h), Some(s)) => {
                    let h = header_name(cx, &h, "upstream.identity.secret_header")?;
                    if h == name {
                        cx.err(
                            "upstream.identity.secret_header",
                            "must differ from upstream.identity.header",
                        );
                    }
                    match Secret::resolve(&s, cx.base) {
                        Ok(secret) if secret.expose().is_empty() => {
                            cx.err("upstream.identity.secret", "is empty");
                            return None;
                        }
                        // It goes on every request as a field value: a line break or
                        // another control would end the field early.
                        Ok(secret) if http::HeaderValue::from_bytes(secret.expose()).is_err() => {
                            cx.err(
                                "upstream.identity.secret",
                                "holds a control character or line break, which a header value cannot",
                            );
                            return None;
                        }
                        Ok(secret) => Some((h, secret)),
                        Err(e) => {
                            cx.err("upstream.identity.secret", e);
                            return None;
                        }
                    }
                }
                _ => {
                    cx.err(
                        "upstream.identity",
                        "secret_header and secret go together: set both or neither",
                    );
                    return None;
                }
            };
            Some(IdentityMode::Header { name, secret })
        }
        "passthrough" => {
            if r.header.is_some() || r.secret.is_some() || r.secret_header.is_some() || r.consumer_key.is_some() {
                cx.err(
                    "upstream.identity",
                    "header/secret/consumer_key do not apply to mode = \"passthrough\"",
                );
            }
            Some(IdentityMode::Passthrough)
        }
        "oauth1" => {
            let key = r.consumer_key.filter(|k| !k.is_empty());
            let pem = r.private_key.as_deref().map(|s| Secret::resolve(s, cx.base));
            let (Some(key), Some(pem)) = (key, pem) else {
                cx.err(
                    "upstream.identity",
                    "mode = \"oauth1\" needs consumer_key and private_key",
                );
                return None;
            };
            let pem = match pem {
                Ok(p) => String::from_utf8_lossy(p.expose()).into_owned(),
                Err(e) => {
                    cx.err("upstream.identity.private_key", e);
                    return None;
                }
            };
            let signer = match crate::upstream::oauth1::Signer::from_pem(&key, &pem) {
                Ok(s) => std::sync::Arc::new(s),
                Err(e) => {
                    cx.err("upstream.identity.private_key", e);
                    return None;
                }
            };
            let signed_url = match r.signed_url.as_deref().map(|u| (u, Uri::from_str(u))) {
                None => String::new(),
                Some((_, Ok(u))) if u.scheme().is_some() && u.authority().is_some() && matches!(u.path(), "" | "/") => {
                    format!(
                        "{}://{}",
                        u.scheme_str().unwrap_or("http"),
                        u.authority().map(|a| a.as_str()).unwrap_or("")
                    )
                }
                Some((u, _)) => {
                    cx.err(
                        "upstream.identity.signed_url",
                        format!("scheme://host[:port] only, not {u:?}"),
                    );
                    return None;
                }
            };
            let session_reuse = match r.session_reuse.as_deref() {
                None => Some(Duration::from_secs(300)),
                Some("off") => None,
                Some(s) => match parse_duration(s) {
                    Ok(d) if !d.is_zero() => Some(d),
                    Ok(_) => None,
                    Err(e) => {
                        cx.err("upstream.identity.session_reuse", format!("{e} (or \"off\")"));
                        None
                    }
                },
            };
            Some(IdentityMode::OAuth1 {
                consumer_key: key,
                signer,
                signed_url,
                session_reuse,
            })
        }
        other => {
            cx.err(
                "upstream.identity.mode",
                format!("unknown mode {other:?}; expected \"header\", \"oauth1\" or \"passthrough\""),
            );
            None
        }
    }
}

fn state(cx: &mut Ctx, r: raw::State) -> StateConfig {
    let redis = match r.backend.as_deref() {
        None | Some("memory") => {
            for (set, name) in [
                (r.url.is_some(), "url"),
                (r.key_prefix.is_some(), "key_prefix"),
                (r.connect_timeout.is_some(), "connect_timeout"),
                (r.response_timeout.is_some(), "response_timeout"),
                (r.ca_file.is_some(), "ca_file"),
            ] {
                if set {
                    cx.err(format!("state.{name}"), "only for backend = \"redis\"");
                }
            }
            None
        }
        Some("redis") => redis_settings(cx, &r),
        Some(other) => {
            cx.err(
                "state.backend",
                format!("unknown backend {other:?}; expected \"memory\" or \"redis\""),
            );
            None
        }
    };
    StateConfig {
        max_entries: r.max_entries.unwrap_or(1_000_000),
        redis,
    }
}

fn redis_settings(cx: &mut Ctx, r: &raw::State) -> Option<crate::store::RedisSettings> {
    let connect_timeout = cx.positive_duration(
        r.connect_timeout.as_deref(),
        "state.connect_timeout",
        Duration::from_secs(2),
    );
    let response_timeout = cx.positive_duration(
        r.response_timeout.as_deref(),
        "state.response_timeout",
        Duration::from_secs(1),
    );
    let Some(spec) = r.url.as_deref() else {
        cx.err(
            "state.url",
            "backend = \"redis\" needs a url (redis://, rediss:// or unix://)",
        );
        return None;
    };
    let url = match Secret::resolve(spec, cx.base) {
        Ok(u) => u,
        Err(e) => {
            cx.err("state.url", e);
            return None;
        }
    };
    let text = String::from_utf8_lossy(url.expose()).into_owned();
    // Not echoed: the URL may carry a password.
    let Some((scheme, _)) = crate::store::redis_url_scheme(&text) else {
        cx.err("state.url", crate::store::REDIS_URL_EXPECTED);
        return None;
    };
    let settings = crate::store::RedisSettings {
        url,
        key_prefix: r.key_prefix.clone().unwrap_or_else(|| "jap:".into()),
        connect_timeout,
        response_timeout,
        ca_file: r.ca_file.as_deref().map(|f| cx.path(f)),
    };
    if settings.ca_file.is_some() && scheme != crate::store::RedisScheme::Tls {
        cx.err("state.ca_file", "only for rediss:// (or valkeys://) URLs");
    }
    if let Err(e) = crate::store::RedisStore::new(settings.clone()) {
        cx.err("state.url", e);
        return None;
    }
    Some(settings)
}

fn audit(cx: &mut Ctx, r: raw::Audit) -> AuditTarget {
    match r.to.as_deref() {
        None | Some("stdout") => AuditTarget::Stdout,
        Some("off") => AuditTarget::Off,
        Some("") => {
            cx.err("audit.to", "empty; use \"stdout\", \"off\" or a file path");
            AuditTarget::Off
        }
        Some(p) => AuditTarget::File(cx.path(p)),
    }
}

fn chain(
    cx: &mut Ctx,
    members: Vec<raw::AuthMember>,
    public_url: Option<&Uri>,
    consumers: &[OAuth1Consumer],
) -> Vec<AuthMember> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, m) in members.into_iter().enumerate() {
        let path = format!("auth.chain[{i}]");
        let member = match m {
            raw::AuthMember::Basic(b) => basic(cx, b, &path).map(AuthMember::Basic),
            raw::AuthMember::ApiKey(k) => api_key_member(cx, k, &path).map(AuthMember::ApiKey),
            raw::AuthMember::Jwt(j) => jwt_member(cx, j, &path).map(|j| AuthMember::Jwt(Box::new(j))),
            raw::AuthMember::Introspection(i) => {
                introspection_member(cx, i, &path).map(|i| AuthMember::Introspection(Box::new(i)))
            }
            raw::AuthMember::OAuth1(o) => {
                oauth1_member(cx, o, &path, public_url, consumers).map(|o| AuthMember::OAuth1(Box::new(o)))
            }
            raw::AuthMember::Session(s) => session_member(cx, s, &path, public_url).map(AuthMember::Session),
        };
        if let Some(member) = member {
            // Bearer-token members may repeat (one per issuer); the others appear once.
            let repeatable = matches!(member, AuthMember::Jwt(_) | AuthMember::Introspection(_));
            if !repeatable && !seen.insert(member.kind()) {
                cx.err(
                    &path,
                    format!("a second {} member; each scheme appears once", member.kind().as_str()),
                );
            }
            out.push(member);
        }
    }
    out
}

fn session_member(cx: &mut Ctx, s: raw::Session, path: &str, public_url: Option<&Uri>) -> Option<SessionConfig> {
    let cookie = s.cookie.unwrap_or_else(|| "JAPSESSION".into());
    // RFC 6265 cookie-name (an RFC 7230 token), and never one of Jira's.
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if cookie.is_empty() || !cookie.chars().all(token_char) {
        cx.err(format!("{path}.cookie"), "not a valid cookie name");
    } else if ["jsessionid", "seraph.rememberme.cookie", "atlassian.xsrf.token"]
        .contains(&cookie.to_ascii_lowercase().as_str())
    {
        cx.err(
            format!("{path}.cookie"),
            "that is Jira's own cookie; choose another name",
        );
    }
    let idle_timeout = cx.positive_duration(
        s.idle_timeout.as_deref(),
        &format!("{path}.idle_timeout"),
        Duration::from_secs(30 * 60),
    );
    let absolute_timeout = cx.positive_duration(
        s.absolute_timeout.as_deref(),
        &format!("{path}.absolute_timeout"),
        Duration::from_secs(12 * 3600),
    );
    if idle_timeout > absolute_timeout {
        cx.err(format!("{path}.idle_timeout"), "longer than absolute_timeout");
    }
    let xsrf = s.xsrf.unwrap_or(true);
    let public_origin = public_url.map(|u| {
        format!(
            "{}://{}",
            u.scheme_str().unwrap_or("https").to_ascii_lowercase(),
            u.authority()
                .map(|a| a.as_str().to_ascii_lowercase())
                .unwrap_or_default()
        )
    });
    if xsrf && public_origin.is_none() {
        cx.warnings.push(format!(
            "{path}: without server.public_url, cookie calls that change state need X-Atlassian-Token: no-check or the form token (Origin/Referer cannot be checked)"
        ));
    }
    Some(SessionConfig {
        cookie,
        idle_timeout,
        absolute_timeout,
        xsrf,
        totp_groups: s.totp_groups,
        secure: public_url.is_some_and(|u| u.scheme_str() == Some("https")),
        public_url: public_url.map(|u| u.to_string().trim_end_matches('/').to_owned()),
        public_origin,
    })
}

fn basic(cx: &mut Ctx, b: raw::Basic, path: &str) -> Option<BasicConfig> {
    let backend = match b.backend.as_deref() {
        None | Some("local") => {
            if b.check_path.is_some() || b.captcha_backoff.is_some() {
                cx.err(path, "check_path and captcha_backoff apply to backend = \"jira\" only");
            }
            BasicBackend::Local
        }
        Some("jira") => {
            let check_path = b.check_path.unwrap_or_else(|| "/rest/api/2/myself".into());
            if !check_path.starts_with('/') || check_path.contains(['?', '#', ' ']) {
                cx.err(format!("{path}.check_path"), "a path such as \"/rest/api/2/myself\"");
            }
            let captcha_backoff = cx.duration(
                b.captcha_backoff.as_deref(),
                &format!("{path}.captcha_backoff"),
                Duration::from_secs(900),
            );
            BasicBackend::Jira {
                check_path,
                captcha_backoff,
            }
        }
        Some(other) => {
            cx.err(
                format!("{path}.backend"),
                format!("unknown backend {other:?}; expected \"local\" or \"jira\""),
            );
            return None;
        }
    };
    let is_jira = matches!(backend, BasicBackend::Jira { .. });
    let cache_ttl = cx.duration(
        b.cache_ttl.as_deref(),
        &format!("{path}.cache_ttl"),
        Duration::from_secs(300),
    );
    // Against Jira the default stays below Jira's default CAPTCHA threshold (3 failures).
    let default_max = if is_jira { 2 } else { 5 };
    let lockout = match b.lockout {
        None => Some(LockoutConfig {
            max_failures: default_max,
            max_failures_per_address: 20,
            window: Duration::from_secs(900),
        }),
        Some(l) if l.max_failures == 0 => None,
        Some(l) => {
            let window = cx.duration(
                Some(&l.window),
                &format!("{path}.lockout.window"),
                Duration::from_secs(900),
            );
            if window.is_zero() {
                cx.err(format!("{path}.lockout.window"), "must be longer than 0s");
            }
            Some(LockoutConfig {
                max_failures: l.max_failures,
                max_failures_per_address: l.max_failures_per_address.unwrap_or(20),
                window,
            })
        }
    };
    if is_jira && lockout.is_none_or(|l| l.max_failures >= 3) {
        cx.warnings.push(format!(
            "{path}.lockout: with backend = \"jira\", keep max_failures below Jira's CAPTCHA threshold \
             (3 by default) so guessing through the proxy cannot lock users out of Jira"
        ));
    }
    Some(BasicConfig {
        backend,
        cache_ttl,
        cache_max_entries: b.cache_max_entries.unwrap_or(100_000),
        lockout,
    })
}

fn users(cx: &mut Ctx, users: Vec<raw::User>) -> Vec<LocalUser> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, u) in users.into_iter().enumerate() {
        let path = format!("users[{i}]");
        if u.name.is_empty() || u.name.contains(':') || u.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            cx.err(
                format!("{path}.name"),
                "must be non-empty, without ':', whitespace or control characters",
            );
        }
        if !seen.insert(u.name.to_lowercase()) {
            cx.err(
                format!("{path}.name"),
                format!("duplicate user {:?} (names are case-insensitive)", u.name),
            );
        }
        if let Err(e) = crate::auth::password::check_phc(&u.password_hash) {
            cx.err(format!("{path}.password_hash"), e);
        }
        let totp_secret = u.totp_secret.as_deref().and_then(|spec| {
            let decoded = Secret::resolve(spec, cx.base).and_then(|s| {
                crate::auth::totp::base32_decode(&String::from_utf8_lossy(s.expose()))
                    .ok_or_else(|| "not a base32 TOTP secret".to_string())
            });
            match decoded {
                Ok(bytes) if bytes.len() >= 10 => Some(Secret::from_bytes(bytes)),
                Ok(_) => {
                    cx.err(
                        format!("{path}.totp_secret"),
                        "too short: at least 80 bits (16 base32 characters)",
                    );
                    None
                }
                Err(e) => {
                    cx.err(format!("{path}.totp_secret"), e);
                    None
                }
            }
        });
        out.push(LocalUser {
            name: u.name,
            password_hash: u.password_hash,
            groups: u.groups,
            totp_secret,
        });
    }
    out
}

fn identity(cx: &mut Ctx, r: raw::IdentityRules) -> IdentityRules {
    let strip_domains = match r.strip_domain {
        None => Vec::new(),
        Some(raw::StringOrList::One(d)) => vec![d],
        Some(raw::StringOrList::Many(v)) => v,
    };
    for (i, d) in strip_domains.iter().enumerate() {
        if d.is_empty() || d.contains('@') {
            cx.err(
                format!("identity.strip_domain[{i}]"),
                "a domain such as \"example.com\", without '@'",
            );
        }
    }
    let map: HashMap<String, String> = r
        .map
        .into_iter()
        .map(|(k, v)| (if r.lowercase { k.to_lowercase() } else { k }, v))
        .collect();
    let groups_from_jira = r.groups_from_jira.and_then(|g| groups_from_jira(cx, g));
    IdentityRules {
        lowercase: r.lowercase,
        strip_domains: strip_domains.into_iter().map(|d| d.to_lowercase()).collect(),
        map,
        groups_from_jira,
    }
}

fn groups_from_jira(cx: &mut Ctx, g: raw::GroupsFromJira) -> Option<GroupsFromJira> {
    const AT: &str = "identity.groups_from_jira";
    let mut secret = |spec: &str, key: &str| match Secret::resolve(spec, cx.base) {
        Ok(s) => Some(String::from_utf8_lossy(s.expose()).into_owned()),
        Err(e) => {
            cx.err(format!("{AT}.{key}"), e);
            None
        }
    };
    let authorization = match (&g.username, &g.password, &g.token) {
        (Some(user), Some(pw), None) => {
            use base64::Engine;
            let pw = secret(pw, "password")?;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
            )
        }
        (None, None, Some(token)) => format!("Bearer {}", secret(token, "token")?),
        _ => {
            cx.err(
                AT,
                "give username and password (Basic), or token (a Jira personal access token)",
            );
            return None;
        }
    };
    if http::HeaderValue::from_str(&authorization).is_err() {
        cx.err(AT, "the credential cannot be sent in a header");
        return None;
    }
    let cache_ttl = cx.positive_duration(
        g.cache_ttl.as_deref(),
        &format!("{AT}.cache_ttl"),
        Duration::from_secs(600),
    );
    let path = g.path.unwrap_or_else(|| "/rest/api/2/user".into());
    if !path.starts_with('/') || path.contains('?') {
        cx.err(
            format!("{AT}.path"),
            "a path such as \"/rest/api/2/user\", without a query",
        );
    }
    Some(GroupsFromJira {
        authorization: Secret::from_bytes(authorization.into_bytes()),
        cache_ttl,
        path,
    })
}

fn effect(cx: &mut Ctx, s: &str, path: &str) -> Effect {
    match s {
        "allow" => Effect::Allow,
        "deny" => Effect::Deny,
        other => {
            cx.err(path, format!("expected \"allow\" or \"deny\", not {other:?}"));
            Effect::Deny
        }
    }
}

fn access(cx: &mut Ctx, r: raw::Access, rules: Vec<raw::Rule>, chain: &[AuthMember]) -> AccessConfig {
    let default = effect(cx, r.default.as_deref().unwrap_or("deny"), "access.default");
    let mode = match r.mode.as_deref() {
        None | Some("enforce") => AccessMode::Enforce,
        Some("report") => AccessMode::Report,
        Some(other) => {
            cx.err(
                "access.mode",
                format!("expected \"enforce\" or \"report\", not {other:?}"),
            );
            AccessMode::Enforce
        }
    };
    let mut names = HashSet::new();
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| rule(cx, r, &format!("access.rules[{i}]"), &mut names, chain))
        .collect();
    AccessConfig { default, mode, rules }
}

fn rule(cx: &mut Ctx, r: raw::Rule, path: &str, names: &mut HashSet<String>, chain: &[AuthMember]) -> RuleConfig {
    if r.name.trim().is_empty() {
        cx.err(format!("{path}.name"), "must not be empty");
    } else if !names.insert(r.name.clone()) {
        cx.err(format!("{path}.name"), format!("duplicate rule name {:?}", r.name));
    }
    let effect = effect(cx, &r.effect, &format!("{path}.effect"));
    let mut methods = Vec::new();
    for (i, m) in r.methods.iter().enumerate() {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => cx.err(format!("{path}.methods[{i}]"), format!("not an HTTP method: {m:?}")),
        }
    }
    for (i, p) in r.paths.iter().enumerate() {
        if let Err(e) = crate::access::glob::check(p) {
            cx.err(format!("{path}.paths[{i}]"), e);
        }
    }
    let mut auth = Vec::new();
    for (i, a) in r.auth.iter().enumerate() {
        match AuthKind::parse(a) {
            Some(k) => {
                if !chain.iter().any(|m| m.kind() == k) {
                    cx.warnings.push(format!(
                        "{path}.auth[{i}]: no {a} member in auth.chain, so this never matches"
                    ));
                }
                auth.push(k)
            }
            None => cx.err(format!("{path}.auth[{i}]"), format!("unknown auth kind {a:?}")),
        }
    }
    if r.anonymous == Some(true) && r.authenticated == Some(true) {
        cx.err(
            path.to_string(),
            "anonymous = true and authenticated = true can never both hold",
        );
    }
    let source = cidrs(cx, &r.source, &format!("{path}.source"));
    let scoped = ["api_key", "jwt", "introspection"];
    if !r.scopes.is_empty() && !r.auth.is_empty() && r.auth.iter().all(|a| !scoped.contains(&a.as_str())) {
        cx.warnings.push(format!(
            "{path}.scopes: only api_key, jwt and introspection credentials carry scopes"
        ));
    }
    let mut headers = Vec::new();
    for (name, value) in &r.headers {
        if let Some(h) = header_name(cx, name, &format!("{path}.headers")) {
            headers.push((h, value.clone()));
        }
    }
    let report = match r.mode.as_deref() {
        None | Some("enforce") => false,
        Some("report") => true,
        Some(other) => {
            cx.err(
                format!("{path}.mode"),
                format!("expected \"enforce\" or \"report\", not {other:?}"),
            );
            false
        }
    };
    let rate = r.rate.as_deref().and_then(|s| match RateSpec::parse(s) {
        Ok(spec) => Some(spec),
        Err(e) => {
            cx.err(format!("{path}.rate"), e);
            None
        }
    });
    if rate.is_some() && effect == Effect::Deny {
        cx.err(
            format!("{path}.rate"),
            "only allow rules carry a rate (a deny rule lets nothing through)",
        );
    }
    RuleConfig {
        name: r.name,
        effect,
        methods,
        paths: r.paths,
        auth,
        users: r.users,
        users_not: r.users_not,
        groups: r.groups,
        groups_not: r.groups_not,
        source,
        scopes: r.scopes,
        anonymous: r.anonymous,
        authenticated: r.authenticated,
        headers,
        report,
        rate,
    }
}

fn api_key_member(cx: &mut Ctx, k: raw::ApiKey, path: &str) -> Option<ApiKeyConfig> {
    let names = k.headers.unwrap_or_else(|| vec!["X-API-Key".into()]);
    let headers: Vec<HeaderName> = names
        .iter()
        .enumerate()
        .filter_map(|(i, h)| header_name(cx, h, &format!("{path}.headers[{i}]")))
        .collect();
    let cfg = ApiKeyConfig {
        headers,
        bearer: k.bearer.unwrap_or(true),
        basic: k.basic.unwrap_or(true),
    };
    if cfg.headers.is_empty() && !cfg.bearer && !cfg.basic {
        cx.err(path, "accepts keys nowhere: give headers, or leave bearer/basic on");
    }
    Some(cfg)
}

/// Reads `api_keys_file`: a TOML file holding only `[[api_keys]]` blocks.
fn key_file(cx: &mut Ctx, file: &str) -> Vec<(String, raw::ApiKeyEntry)> {
    let path = cx.path(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            cx.err("api_keys_file", format!("cannot read {}: {e}", path.display()));
            return Vec::new();
        }
    };
    let mut table: Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            cx.err(file, format!("not valid TOML: {}", e.to_string().trim()));
            return Vec::new();
        }
    };
    let keys = cx.array(table.remove("api_keys"), &format!("{file}: api_keys"));
    for k in table.keys() {
        cx.err(
            format!("{file}: {k}"),
            "unknown key (a key file holds only [[api_keys]])",
        );
    }
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| (format!("{file}: api_keys[{i}]"), k))
        .collect()
}

fn api_keys(cx: &mut Ctx, keys: Vec<(String, raw::ApiKeyEntry)>) -> Vec<ApiKeyEntry> {
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    let mut out = Vec::new();
    for (path, k) in keys {
        if k.id.is_empty()
            || !k
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            cx.err(format!("{path}.id"), "letters, digits, '-' and '_' only");
        } else if !ids.insert(k.id.clone()) {
            cx.err(format!("{path}.id"), format!("duplicate key id {:?}", k.id));
        }
        if crate::identity::validate(&k.user).is_err() {
            cx.err(format!("{path}.user"), "not a usable username");
        }
        let digest = match crate::auth::api_key::parse_digest(&k.hash) {
            Ok(d) => {
                if !digests.insert(d) {
                    cx.err(format!("{path}.hash"), "the same key appears twice");
                }
                d
            }
            Err(e) => {
                cx.err(format!("{path}.hash"), e);
                [0; 32]
            }
        };
        let expires = k.expires.as_deref().and_then(|e| match crate::time::parse_rfc3339(e) {
            Ok(t) => Some(t),
            Err(msg) => {
                cx.err(format!("{path}.expires"), msg);
                None
            }
        });
        let allowed_ips = cidrs(cx, &k.allowed_ips, &format!("{path}.allowed_ips"));
        out.push(ApiKeyEntry {
            id: k.id,
            name: k.name,
            user: k.user,
            digest,
            expires,
            revoked: k.revoked,
            scopes: k.scopes,
            allowed_ips,
        });
    }
    out
}

fn url(cx: &mut Ctx, s: &str, path: &str) -> Option<Uri> {
    match Uri::from_str(s) {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => Some(u),
        _ => {
            cx.err(path, format!("not an absolute http(s) URL: {s:?}"));
            None
        }
    }
}

const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
];

fn jwt_member(cx: &mut Ctx, j: raw::Jwt, path: &str) -> Option<JwtConfig> {
    let at = |k: &str| format!("{path}.{k}");
    if j.issuer.is_empty() {
        cx.err(at("issuer"), "must not be empty");
    }
    let mut algorithms = Vec::new();
    for (i, a) in j
        .algorithms
        .clone()
        .unwrap_or_else(|| vec!["RS256".into()])
        .iter()
        .enumerate()
    {
        match (
            JWT_ALGORITHMS.contains(&a.as_str()),
            a.parse::<jsonwebtoken::Algorithm>(),
        ) {
            (true, Ok(alg)) => algorithms.push(alg),
            _ => cx.err(
                format!("{path}.algorithms[{i}]"),
                format!("{a:?} is not accepted; use one of {}", JWT_ALGORITHMS.join(", ")),
            ),
        }
    }
    let hs256_secret = j
        .hs256_secret
        .as_deref()
        .and_then(|s| match Secret::resolve(s, cx.base) {
            Ok(sec) if sec.expose().len() >= 32 => Some(sec),
            Ok(_) => {
                cx.err(at("hs256_secret"), "must be at least 32 bytes (RFC 7518 §3.2)");
                None
            }
            Err(e) => {
                cx.err(at("hs256_secret"), e);
                None
            }
        });
    let hs = algorithms.contains(&jsonwebtoken::Algorithm::HS256);
    if hs && hs256_secret.is_none() && j.hs256_secret.is_none() {
        cx.err(
            at("algorithms"),
            "HS256 needs hs256_secret (it is never verified with a public key)",
        );
    }
    if !hs && j.hs256_secret.is_some() {
        cx.err(at("hs256_secret"), "set, but HS256 is not in algorithms");
    }
    let asymmetric = algorithms.iter().any(|a| *a != jsonwebtoken::Algorithm::HS256);
    let sources = [
        j.discovery == Some(true),
        j.jwks_uri.is_some(),
        j.jwks_file.is_some(),
        j.public_key.is_some(),
    ];
    let keys = match sources.iter().filter(|s| **s).count() {
        0 if !asymmetric => JwtKeys::SecretOnly,
        0 => {
            cx.err(
                path.to_string(),
                "give one key source: discovery = true, jwks_uri, jwks_file or public_key",
            );
            return None;
        }
        1 => jwt_keys(cx, &j, path)?,
        _ => {
            cx.err(
                path.to_string(),
                "give only one of discovery, jwks_uri, jwks_file, public_key",
            );
            return None;
        }
    };
    if j.audiences.is_empty() {
        cx.err(
            at("audiences"),
            "give at least one audience (RFC 8725 §3.9: tokens for other services must not pass)",
        );
    }
    let typ = j.typ.map(|t| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/").map(str::to_owned).unwrap_or(t)
    });
    Some(JwtConfig {
        issuer: j.issuer,
        keys,
        audiences: j.audiences,
        algorithms,
        hs256_secret,
        user_claim: j.user_claim.unwrap_or_else(|| "preferred_username".into()),
        groups_claim: j.groups_claim,
        leeway: cx.duration(j.leeway.as_deref(), &at("leeway"), Duration::from_secs(30)),
        typ,
        refetch_interval: cx.duration(
            j.jwks_refetch_interval.as_deref(),
            &at("jwks_refetch_interval"),
            Duration::from_secs(30),
        ),
        max_age: cx.duration(j.jwks_max_age.as_deref(), &at("jwks_max_age"), Duration::from_secs(600)),
        fetch_timeout: cx.duration(j.fetch_timeout.as_deref(), &at("fetch_timeout"), Duration::from_secs(5)),
        ca_file: j.ca_file.as_deref().map(|p| cx.path(p)),
        token_cache_ttl: cx.duration(
            j.token_cache_ttl.as_deref(),
            &at("token_cache_ttl"),
            Duration::from_secs(300),
        ),
        token_cache_max_entries: j.token_cache_max_entries.unwrap_or(100_000),
    })
}

fn jwt_keys(cx: &mut Ctx, j: &raw::Jwt, path: &str) -> Option<JwtKeys> {
    if j.discovery == Some(true) {
        let base = j.issuer.trim_end_matches('/');
        return url(
            cx,
            &format!("{base}/.well-known/openid-configuration"),
            &format!("{path}.issuer"),
        )
        .map(JwtKeys::Discovery);
    }
    if let Some(u) = &j.jwks_uri {
        return url(cx, u, &format!("{path}.jwks_uri")).map(JwtKeys::JwksUri);
    }
    let read = |cx: &mut Ctx, spec: &str, key: &str| match Secret::resolve(spec, cx.base) {
        Ok(s) => Some(s.expose().to_vec()),
        Err(e) => {
            cx.err(format!("{path}.{key}"), e);
            None
        }
    };
    if let Some(f) = &j.jwks_file {
        let spec = if f.starts_with("file:") {
            f.clone()
        } else {
            format!("file:{f}")
        };
        let bytes = read(cx, &spec, "jwks_file")?;
        return match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(doc) => match crate::auth::jwt::keys::parse_jwks(&doc) {
                Ok(k) if !k.is_empty() => Some(JwtKeys::JwksDocument(doc)),
                Ok(_) => {
                    cx.err(format!("{path}.jwks_file"), "holds no usable signing key");
                    None
                }
                Err(e) => {
                    cx.err(format!("{path}.jwks_file"), e);
                    None
                }
            },
            Err(_) => {
                cx.err(format!("{path}.jwks_file"), "not JSON");
                None
            }
        };
    }
    let pem = read(cx, j.public_key.as_deref().unwrap_or(""), "public_key")?;
    Some(JwtKeys::Pem(pem))
}

fn introspection_member(cx: &mut Ctx, i: raw::Introspection, path: &str) -> Option<IntrospectionConfig> {
    let at = |k: &str| format!("{path}.{k}");
    let url = url(cx, &i.url, &at("url"));
    let secret = match Secret::resolve(&i.client_secret, cx.base) {
        Ok(s) => Some(s),
        Err(e) => {
            cx.err(at("client_secret"), e);
            None
        }
    };
    if i.client_id.is_empty() {
        cx.err(at("client_id"), "must not be empty");
    }
    Some(IntrospectionConfig {
        url: url?,
        client_id: i.client_id,
        client_secret: secret?,
        user_claim: i.user_claim.unwrap_or_else(|| "username".into()),
        groups_claim: i.groups_claim,
        cache_ttl: cx.duration(i.cache_ttl.as_deref(), &at("cache_ttl"), Duration::from_secs(300)),
        negative_cache_ttl: cx.duration(
            i.negative_cache_ttl.as_deref(),
            &at("negative_cache_ttl"),
            Duration::from_secs(10),
        ),
        cache_max_entries: i.cache_max_entries.unwrap_or(100_000),
        fetch_timeout: cx.duration(i.fetch_timeout.as_deref(), &at("fetch_timeout"), Duration::from_secs(5)),
        ca_file: i.ca_file.as_deref().map(|p| cx.path(p)),
    })
}

fn oauth1_consumers(cx: &mut Ctx, list: Vec<raw::OAuth1Consumer>) -> Vec<OAuth1Consumer> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, c) in list.into_iter().enumerate() {
        let at = |k: &str| format!("oauth1.consumers[{i}].{k}");
        if c.key.is_empty() || !seen.insert(c.key.clone()) {
            cx.err(at("key"), "must be non-empty and unique");
        }
        let public_key_der = c.public_key.as_deref().and_then(|spec| {
            let pem = match Secret::resolve(spec, cx.base) {
                Ok(s) => s.expose().to_vec(),
                Err(e) => {
                    cx.err(at("public_key"), e);
                    return None;
                }
            };
            use rustls_pki_types::pem::PemObject;
            match rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pem) {
                Ok(der) => match crate::auth::oauth1::rfc5849::rsa_public_key(der.as_ref()) {
                    Ok(_) => Some(der.as_ref().to_vec()),
                    Err(e) => {
                        cx.err(at("public_key"), e);
                        None
                    }
                },
                Err(_) => {
                    cx.err(at("public_key"), "not a PEM \"PUBLIC KEY\" block");
                    None
                }
            }
        });
        let secret = c.secret.as_deref().and_then(|s| match Secret::resolve(s, cx.base) {
            Ok(s) => Some(s),
            Err(e) => {
                cx.err(at("secret"), e);
                None
            }
        });
        if c.public_key.is_none() && c.secret.is_none() {
            cx.err(
                format!("oauth1.consumers[{i}]"),
                "give public_key (RSA-SHA1) or secret (HMAC-SHA1)",
            );
        }
        let tl = c.two_legged.unwrap_or(raw::TwoLegged {
            allowed: false,
            run_as: None,
            impersonation: false,
        });
        if tl.allowed && tl.run_as.is_none() {
            cx.err(
                at("two_legged.run_as"),
                "two-legged requests without a requestor need a run_as user",
            );
        }
        if let Some(u) = &tl.run_as
            && crate::identity::validate(u).is_err()
        {
            cx.err(at("two_legged.run_as"), "not a usable username");
        }
        let allowed_users = c.allowed_users.map(|list| {
            for (j, u) in list.iter().enumerate() {
                if crate::identity::validate(u).is_err() {
                    cx.err(at(&format!("allowed_users[{j}]")), "not a usable username");
                }
            }
            list.into_iter().map(|u| u.to_lowercase()).collect::<Vec<_>>()
        });
        if let (Some(list), Some(run_as)) = (&allowed_users, &tl.run_as)
            && !list.iter().any(|u| u.eq_ignore_ascii_case(run_as))
        {
            cx.err(at("two_legged.run_as"), "is not among allowed_users");
        }
        let three_legged = c.three_legged.unwrap_or(true);
        if !three_legged && !tl.allowed && !tl.impersonation {
            cx.err(
                format!("oauth1.consumers[{i}]"),
                "allows neither three-legged nor two-legged requests",
            );
        }
        out.push(OAuth1Consumer {
            name: c.name.unwrap_or_else(|| c.key.clone()),
            key: c.key,
            public_key_der,
            secret,
            two_legged: tl.allowed,
            run_as: tl.run_as,
            impersonation: tl.impersonation,
            three_legged,
            allowed_users,
        });
    }
    out
}

fn oauth1_member(
    cx: &mut Ctx,
    o: raw::OAuth1,
    path: &str,
    public_url: Option<&Uri>,
    consumers: &[OAuth1Consumer],
) -> Option<OAuth1Config> {
    let Some(url) = public_url else {
        cx.err(
            path.to_string(),
            "needs server.public_url: clients sign the URL they call",
        );
        return None;
    };
    if consumers.is_empty() {
        cx.warnings
            .push(format!("{path}: no [[oauth1.consumers]] are configured"));
    }
    let scheme = url.scheme_str().unwrap_or("https").to_owned();
    let host = url.host().unwrap_or("").to_owned();
    Some(OAuth1Config {
        public_url: format!("{scheme}://{}", url.authority().map(|a| a.as_str()).unwrap_or("")),
        origin: (scheme, host, url.port_u16()),
        max_clock_skew: cx.duration(
            o.max_clock_skew.as_deref(),
            &format!("{path}.max_clock_skew"),
            Duration::from_secs(300),
        ),
        request_token_ttl: cx.duration(
            o.request_token_ttl.as_deref(),
            &format!("{path}.request_token_ttl"),
            Duration::from_secs(600),
        ),
        access_token_ttl: cx.duration(
            o.access_token_ttl.as_deref(),
            &format!("{path}.access_token_ttl"),
            Duration::from_secs(1825 * 86_400),
        ),
        consumers: consumers.to_vec(),
    })
}
