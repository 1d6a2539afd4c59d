//! Everything compiled from one `Config`: the authenticator chain, identity map, access
//! policy, upstream client, state store and audit sink. Built whole or not at all; a
//! reload builds a new one and swaps it in, keeping the old one if building fails.

use std::sync::Arc;

use ipnet::IpNet;

use crate::access::Policy;
use crate::auth::api_key::ApiKeyAuth;
use crate::auth::basic::BasicAuth;
use crate::auth::introspection::IntrospectionAuth;
use crate::auth::jwt::JwtAuth;
use crate::auth::jwt::keys::{KeyEntry, KeyStore, Source, parse_jwks};
use crate::auth::oauth1::inbound::OAuth1Auth;
use crate::auth::oauth1::provider::Provider;
use crate::auth::oauth1::rfc5849;
use crate::auth::session::SessionAuth;
use crate::auth::{Authenticator, Chain};
use crate::config::StateConfig;
use crate::config::{AuthMember, Config, ConfigError, ConfigErrors, ServerConfig};
use crate::config::{JwtConfig, JwtKeys};
use crate::identity::IdentityMap;
use crate::identity::groups::JiraGroups;
use crate::observe::audit::Audit;
use crate::observe::metrics::Metrics;
use crate::store::{Counted, MemoryStore, RedisStore, StateStore};
use crate::upstream::Upstream;
use crate::upstream::fetch::Fetcher;

pub struct Runtime {
    pub server: ServerConfig,
    pub trusted_proxies: Vec<IpNet>,
    pub chain: Chain,
    pub identity: IdentityMap,
    pub policy: Policy,
    pub upstream: Arc<Upstream>,
    pub store: Arc<dyn StateStore>,
    pub audit: Audit,
    /// The Basic member, kept for its counters.
    pub basic: Option<Arc<BasicAuth>>,
    /// The JWT members, kept for their key-set counters.
    pub jwt: Vec<Arc<JwtAuth>>,
    /// An OAuth 1.0a member exists: small form bodies of OAuth requests are read.
    pub reads_oauth_forms: bool,
    /// Jira's OAuth 1.0a endpoints, answered by the proxy when an oauth1 member exists.
    pub oauth1_provider: Option<Provider>,
    /// The session member, when configured: its login endpoint and cookies.
    pub session: Option<Arc<SessionAuth>>,
    /// `[identity.groups_from_jira]`, when configured.
    pub jira_groups: Option<JiraGroups>,
    /// Process-wide counters (kept across reloads).
    pub metrics: Arc<Metrics>,
    pub state: StateConfig,
    /// `audit.required`: refuse requests whose audit line cannot be written.
    pub audit_required: bool,
    /// The TLS acceptor for `server.tls` (rebuilt on reload, for new connections).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Files besides the config file whose change reloads it.
    pub watched: Vec<std::path::PathBuf>,
    pub identity_mode: String,
    /// The listener threads this runtime keeps per-thread state for.
    pub threads: usize,
}

impl Runtime {
    pub fn build(cfg: &Config) -> Result<Runtime, ConfigErrors> {
        Self::build_with(cfg, None)
    }

    /// Builds a runtime; on a reload, `previous` lends its metrics, its Basic member's
    /// places for slow checks (so checks under way still count against the limit) and,
    /// when the state config is unchanged, its store (so sessions, nonces and counters
    /// survive).
    pub fn build_with(cfg: &Config, previous: Option<&Runtime>) -> Result<Runtime, ConfigErrors> {
        // The listener threads are started once: a reload sizes what is kept per thread by
        // the threads that run, whatever `server.workers` now says.
        let threads = previous.map_or(cfg.server.workers, |p| p.threads);
        let mut errors = Vec::new();
        let mut err = |path: String, message: String| errors.push(ConfigError { path, message });
        let metrics = previous.map_or_else(|| Arc::new(Metrics::with_listeners(threads)), |p| p.metrics.clone());
        let kept = previous
            .filter(|p| p.state.same_as(&cfg.state))
            .map(|p| p.store.clone());
        let store: Arc<dyn StateStore> = match (kept, &cfg.state.redis) {
            (Some(store), _) => store,
            (None, None) => Arc::new(Counted::new(
                Arc::new(MemoryStore::new(cfg.state.max_entries)),
                metrics.clone(),
            )),
            (None, Some(r)) => match RedisStore::new(r.clone()) {
                Ok(s) => Arc::new(Counted::new(Arc::new(s), metrics.clone())),
                Err(e) => {
                    err("state.url".into(), e);
                    Arc::new(MemoryStore::new(1))
                }
            },
        };
        let upstream = Upstream::new(&cfg.upstream, threads)
            .map(Arc::new)
            .map_err(|e| err("upstream.ca_file".into(), e))
            .ok();
        let mut members: Vec<Arc<dyn Authenticator>> = Vec::new();
        // Built first: the session member checks passwords with it, wherever it sits.
        let mut basic = None;
        let places = previous
            .and_then(|p| p.basic.as_ref())
            .map(|b| b.check_places())
            .unwrap_or_default();
        for (i, m) in cfg.chain.iter().enumerate() {
            if let (AuthMember::Basic(b), Some(up)) = (m, upstream.clone()) {
                match BasicAuth::new(
                    b,
                    &cfg.users,
                    store.clone(),
                    up,
                    &cfg.server.realm,
                    places.clone(),
                    threads,
                ) {
                    Ok(a) => basic = Some(Arc::new(a)),
                    Err(e) => err(format!("auth.chain[{i}]"), e),
                }
            }
        }
        let mut session = None;
        let mut jwt = Vec::new();
        let mut oauth1_provider = None;
        for (i, m) in cfg.chain.iter().enumerate() {
            match m {
                AuthMember::Basic(_) => {
                    if let Some(a) = &basic {
                        members.push(a.clone());
                    }
                }
                AuthMember::Session(s) => {
                    if let Some(b) = &basic {
                        let a = Arc::new(SessionAuth::new(s, &cfg.users, store.clone(), b.clone(), threads));
                        session = Some(a.clone());
                        members.push(a);
                    }
                }
                AuthMember::ApiKey(k) => {
                    members.push(Arc::new(ApiKeyAuth::new(
                        k,
                        &cfg.api_keys,
                        &cfg.users,
                        &cfg.server.realm,
                        threads,
                    )));
                }
                AuthMember::Jwt(j) => match jwt_member(j, &cfg.server.realm, threads) {
                    Ok(a) => {
                        let a = Arc::new(a);
                        jwt.push(a.clone());
                        members.push(a);
                    }
                    Err(e) => err(format!("auth.chain[{i}]"), e),
                },
                AuthMember::OAuth1(o) => match OAuth1Auth::new(o, store.clone()) {
                    Ok(a) => {
                        let a = Arc::new(a);
                        let realm = rfc5849::encode(&o.public_url);
                        match Provider::new(a.clone(), realm, o.request_token_ttl, o.access_token_ttl) {
                            Ok(p) => oauth1_provider = Some(p),
                            Err(e) => err(format!("auth.chain[{i}]"), e),
                        }
                        members.push(a);
                    }
                    Err(e) => err(format!("auth.chain[{i}]"), e),
                },
                AuthMember::Introspection(c) => {
                    match Fetcher::new(c.ca_file.as_deref(), c.fetch_timeout)
                        .and_then(|f| IntrospectionAuth::new(c, f, &cfg.server.realm, threads))
                    {
                        Ok(a) => members.push(Arc::new(a)),
                        Err(e) => err(format!("auth.chain[{i}]"), e),
                    }
                }
            }
        }
        let jira_groups = match (&cfg.identity.groups_from_jira, &upstream) {
            (Some(g), Some(up)) => JiraGroups::new(g, up.clone(), store.clone())
                .map_err(|e| err("identity.groups_from_jira".into(), e))
                .ok(),
            _ => None,
        };
        let policy = Policy::compile(&cfg.access)
            .map_err(|e| err("access.rules".into(), e))
            .ok();
        let audit = Audit::open(&cfg.audit, cfg.audit_flush, threads)
            .map_err(|e| err("audit.to".into(), e.to_string()))
            .ok();
        let tls = match &cfg.server.tls {
            None => None,
            Some(files) => crate::server::tls::acceptor(files)
                .map_err(|e| err("server.tls".into(), e))
                .ok(),
        };
        match (policy, upstream, audit) {
            (Some(policy), Some(upstream), Some(audit)) if errors.is_empty() => Ok(Runtime {
                server: cfg.server.clone(),
                trusted_proxies: cfg.server.trusted_proxies.clone(),
                chain: Chain::new(members).delegating_unknown_bearer(cfg.passthrough_unknown_bearer),
                identity: IdentityMap::new(cfg.identity.clone()),
                policy,
                upstream,
                store,
                audit,
                basic,
                jwt,
                reads_oauth_forms: oauth1_provider.is_some(),
                oauth1_provider,
                session,
                jira_groups,
                metrics,
                state: cfg.state.clone(),
                audit_required: cfg.audit_required,
                tls,
                watched: cfg.watched.clone(),
                identity_mode: cfg.upstream.identity.describe(),
                threads,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }
}

impl Runtime {
    /// (cache, hits, misses) of the verification caches, for `/metrics`.
    pub fn cache_stats(&self) -> Vec<(&'static str, u64, u64)> {
        let mut out = Vec::new();
        if let Some(b) = &self.basic {
            let (h, m) = b.cache_stats();
            out.push(("basic", h, m));
        }
        let (mut h, mut m) = (0, 0);
        for j in &self.jwt {
            let (a, b) = j.cache_stats();
            h += a;
            m += b;
        }
        if !self.jwt.is_empty() {
            out.push(("jwt", h, m));
        }
        if let Some(s) = &self.session {
            let (h, m) = s.cache_stats();
            out.push(("session", h, m));
        }
        out
    }
}

/// Builds one JWT member with its key store.
/// `threads`: the listener threads (see [`JwtAuth::new`]).
fn jwt_member(cfg: &JwtConfig, realm: &str, threads: usize) -> Result<JwtAuth, String> {
    let remote = |discovery, jwks_uri| -> Result<Source, String> {
        let fetcher = Box::new(Fetcher::new(cfg.ca_file.as_deref(), cfg.fetch_timeout)?);
        Ok(Source::Remote {
            discovery,
            jwks_uri,
            fetcher,
        })
    };
    let source = match &cfg.keys {
        JwtKeys::Discovery(u) => remote(Some(u.clone()), None)?,
        JwtKeys::JwksUri(u) => remote(None, Some(u.clone()))?,
        JwtKeys::JwksDocument(doc) => Source::Static(parse_jwks(doc)?),
        JwtKeys::Pem(pem) => Source::Static(vec![
            KeyEntry::from_pem(pem, &cfg.algorithms).map_err(|e| format!("public_key: {e}"))?,
        ]),
        JwtKeys::SecretOnly => Source::Static(Vec::new()),
    };
    let store = KeyStore::new(source, cfg.refetch_interval, cfg.max_age);
    Ok(JwtAuth::new(cfg.clone(), store, realm, threads))
}
