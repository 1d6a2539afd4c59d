//! The `jira-auth-proxy` command line: serve | check | explain | hash-password | keys | oauth1 | demo.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use jira_auth_proxy::config::Config;
use jira_auth_proxy::runtime::Runtime;
use jira_auth_proxy::{auth, demo, server};

/// mimalloc: per-thread heaps suit the listener threads, and a request's few dozen small
/// allocations cost about half what they do in the system allocator (benches/HISTORY.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Authenticating reverse proxy for Jira Server / Data Center.
#[derive(Parser)]
#[command(name = "jira-auth-proxy", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy. SIGHUP (or a change to the config file, its API key file or TLS
    /// files) reloads the config; SIGTERM/SIGINT drain and exit.
    Serve {
        /// The TOML config file.
        #[arg(long, short)]
        config: PathBuf,
        /// How often to look for changed files ("0s": only on SIGHUP).
        #[arg(long, default_value = "2s")]
        watch_interval: String,
    },
    /// Validate a config file: print every error with its TOML path, or a summary.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show how the access rules decide a request: the decision, the rule that made it,
    /// and why each earlier rule did not match.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The Jira user (omit for an anonymous caller).
        #[arg(long)]
        user: Option<String>,
        /// How they authenticated: basic, api_key, oauth1, jwt, introspection, session.
        #[arg(long)]
        auth: Option<String>,
        /// Comma-separated groups (added to the user's groups from [[users]]).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Comma-separated scopes of the credential.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// The client address.
        #[arg(long, default_value = "127.0.0.1")]
        from: std::net::IpAddr,
        /// A request header, "Name: value" (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// GET, POST, ...
        method: String,
        /// The request path (normalised as the proxy does before matching).
        path: String,
    },
    /// Hash a password (argon2id) for a [[users]] entry. Reads the password from stdin,
    /// or prompts without echo when stdin is a terminal.
    HashPassword,
    /// Issue, import and list API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// OAuth 1.0a administration (needs state.backend = "redis": it reads the shared store).
    Oauth1 {
        #[command(subcommand)]
        command: OAuth1Command,
    },
    /// Exit 0 when `http://HOST:PORT/PATH` answers 200 within 3 seconds (a container
    /// health check that needs no curl, e.g. `probe http://127.0.0.1:9090/readyz`).
    Probe { url: String },
    /// Start a stand-in Jira and the proxy in front of it, and print curl commands to try.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8088")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new key: prints the key ONCE (stderr) and its [[api_keys]] block (stdout).
    New {
        #[command(flatten)]
        opts: KeyOpts,
    },
    /// Read an existing key from stdin and print its [[api_keys]] block.
    Import {
        #[command(flatten)]
        opts: KeyOpts,
    },
    /// List the configured keys (never a secret), flagging expired and revoked ones.
    List {
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum OAuth1Command {
    /// List access tokens (id, consumer, user, created, expires), or revoke one.
    Tokens {
        #[arg(long, short)]
        config: PathBuf,
        /// Only this user's tokens.
        #[arg(long)]
        user: Option<String>,
        /// Revoke the token with this id (from the listing).
        #[arg(long)]
        revoke: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct KeyOpts {
    /// The Jira user the key acts as.
    #[arg(long)]
    user: String,
    /// Lifetime ("90d", "12h") or an RFC 3339 time / date ("2027-06-30").
    #[arg(long)]
    expires: Option<String>,
    /// Comma-separated scopes; "read" alone allows only GET/HEAD/OPTIONS.
    #[arg(long, value_delimiter = ',')]
    scopes: Vec<String>,
    /// Comma-separated CIDRs the key may be used from.
    #[arg(long, value_delimiter = ',')]
    allowed_ips: Vec<String>,
    /// A label for listings and logs.
    #[arg(long)]
    name: Option<String>,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or, with
/// `JAP_LOG_FORMAT=json`, one JSON object per line.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("JAP_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Explain {
            config,
            user,
            auth,
            groups,
            scopes,
            from,
            headers,
            method,
            path,
        } => explain(&config, user, auth, groups, scopes, from, &headers, &method, &path),
        Command::HashPassword => hash_password(),
        Command::Serve { config, watch_interval } => run_async(serve(config, watch_interval)),
        Command::Demo { listen } => run_async(demo::run(listen)),
        Command::Probe { url } => probe(&url),
        Command::Keys { command } => keys(command),
        Command::Oauth1 {
            command:
                OAuth1Command::Tokens {
                    config,
                    user,
                    revoke,
                    json,
                },
        } => run_async(oauth1_tokens(config, user, revoke, json)),
    }
}

async fn oauth1_tokens(
    config: PathBuf,
    user: Option<String>,
    revoke: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    use jira_auth_proxy::auth::oauth1::tokens;
    let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("{}:\n{e}", config.display()))?;
    let Some(settings) = cfg.state.redis.clone() else {
        anyhow::bail!(
            "state.backend is \"memory\": access tokens live inside the running proxy, where each user \
             lists and revokes their own at /plugins/servlet/oauth/users/access-tokens. \
             Run the proxy with state.backend = \"redis\" to manage them from here."
        );
    };
    let store = jira_auth_proxy::store::RedisStore::new(settings).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(id) = revoke {
        return match tokens::revoke(&store, &id, None).await? {
            Some(t) => {
                println!("revoked {} ({} for {})", t.id, t.consumer, t.user);
                Ok(())
            }
            None => anyhow::bail!("no access token with id {id:?}"),
        };
    }
    let list = match &user {
        Some(u) => tokens::list_for_user(&store, &u.to_lowercase()).await?,
        None => tokens::list_all(&store).await?,
    };
    if json {
        for t in &list {
            println!("{}", serde_json::to_string(t)?);
        }
        return Ok(());
    }
    println!(
        "{:<32}  {:<20}  {:<20}  {:<20}  EXPIRES",
        "ID", "CONSUMER", "USER", "CREATED"
    );
    for t in &list {
        println!(
            "{:<32}  {:<20}  {:<20}  {:<20}  {}",
            t.id,
            t.consumer,
            t.user,
            jira_auth_proxy::time::rfc3339_secs(t.created),
            jira_auth_proxy::time::rfc3339_secs(t.expires)
        );
    }
    eprintln!("{} access token(s)", list.len());
    Ok(())
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    init_logging();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(path: PathBuf, watch_interval: String) -> anyhow::Result<()> {
    let interval = jira_auth_proxy::config::values::parse_duration(&watch_interval)
        .map_err(|e| anyhow::anyhow!("--watch-interval: {e}"))?;
    let cfg = Config::load(&path).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let mut signals = server::ShutdownSignal::new()?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let running = server::start_from(cfg, Some(path)).await?;
    let reloader = running.reloader();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            let _ = reloader.reload().await;
        }
    });
    if !interval.is_zero() {
        tokio::spawn(server::watch_files(running.reloader(), interval));
    }
    signals.wait().await;
    running.shutdown().await;
    Ok(())
}

fn probe(url: &str) -> ExitCode {
    use std::io::{Read, Write};
    let answer = (|| -> Result<u16, String> {
        let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
        let (authority, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
        let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let timeout = std::time::Duration::from_secs(3);
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| e.to_string())?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&head[..n]);
        text.split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "not HTTP".to_string())
    })();
    match answer {
        Ok(200) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{url}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn explain(
    config: &std::path::Path,
    user: Option<String>,
    auth: Option<String>,
    mut groups: Vec<String>,
    scopes: Vec<String>,
    from: std::net::IpAddr,
    headers: &[String],
    method: &str,
    path: &str,
) -> ExitCode {
    use jira_auth_proxy::access::{Policy, Subject};
    let fail = |m: String| {
        eprintln!("error: {m}");
        ExitCode::FAILURE
    };
    let cfg = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(format!("{}:\n{e}", config.display())),
    };
    let policy = match Policy::compile(&cfg.access) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    let Ok(method) = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
        return fail(format!("not an HTTP method: {method:?}"));
    };
    let kind = match auth.as_deref().map(|a| (a, auth::AuthKind::parse(a))) {
        None => None,
        Some((_, Some(k))) => Some(k),
        Some((a, None)) => return fail(format!("unknown auth kind {a:?}")),
    };
    let normal = match jira_auth_proxy::pipeline::path::normalize(path) {
        Ok(p) => p.decoded,
        Err(e) => return fail(format!("the proxy answers 400 to this path: {}", e.message())),
    };
    if let Some(u) = &user
        && let Some(local) = cfg.users.iter().find(|x| x.name.eq_ignore_ascii_case(u))
    {
        for g in &local.groups {
            if !groups.contains(g) {
                groups.push(g.clone());
            }
        }
    }
    let mut header_map = http::HeaderMap::new();
    for h in headers {
        let parsed = h.split_once(':').and_then(|(n, v)| {
            Some((
                http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                http::HeaderValue::from_str(v.trim()).ok()?,
            ))
        });
        match parsed {
            Some((n, v)) => {
                header_map.append(n, v);
            }
            None => return fail(format!("not a header \"Name: value\": {h:?}")),
        }
    }
    let subject = Subject {
        method: &method,
        path: &normal,
        kind,
        authenticated: user.is_some(),
        user: user.as_deref(),
        groups: &groups,
        scopes: &scopes,
        client_ip: from,
        headers: Some(&header_map),
    };
    let (steps, decision) = policy.explain(&subject);
    let or_dash = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(",") };
    println!(
        "request:  {method} {normal}  (user {}, auth {}, groups {}, scopes {}, from {from})",
        user.as_deref().unwrap_or("(anonymous)"),
        kind.map_or("-", |k| k.as_str()),
        or_dash(&groups),
        or_dash(&scopes)
    );
    if normal != path {
        println!("          (as written: {path})");
    }
    for (i, s) in steps.iter().enumerate() {
        if s.failed.is_empty() {
            let what = if s.report_only {
                "matches, report only"
            } else {
                "MATCHES"
            };
            println!("  {}. {}: {what}", i + 1, s.rule);
        } else {
            println!("  {}. {}: no match", i + 1, s.rule);
            for f in &s.failed {
                println!("       - {f}");
            }
        }
    }
    let effect = match decision.effect {
        jira_auth_proxy::config::Effect::Allow => "ALLOW",
        jira_auth_proxy::config::Effect::Deny => "DENY",
    };
    let by = decision
        .rule
        .as_ref()
        .map_or("access.default (no rule matched)".to_string(), |r| {
            format!("rule {r:?}")
        });
    let answer = match (decision.effect, decision.enforced, user.is_some()) {
        (jira_auth_proxy::config::Effect::Allow, _, _) => "forwarded to Jira",
        (_, false, _) => "report mode: logged, forwarded to Jira",
        (_, true, false) => "401: anonymous callers are asked to authenticate",
        (_, true, true) => "403",
    };
    println!("decision: {effect} by {by} ({answer})");
    if !decision.would_deny.is_empty() {
        println!("report:   would be denied by {}", decision.would_deny.join(", "));
    }
    if let Some((_, rate)) = decision.rate {
        println!(
            "rate:     {} per {}s, burst {}, per caller",
            rate.count, rate.per_secs, rate.burst
        );
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path) -> ExitCode {
    let built = Config::load(path).and_then(|cfg| Runtime::build(&cfg).map(|rt| (cfg, rt)));
    match built {
        Err(errors) => {
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
        Ok((cfg, rt)) => {
            let chain: Vec<&str> = rt.chain.kinds().iter().map(|k| k.as_str()).collect();
            println!("{}: OK", path.display());
            println!(
                "listen:    {}{}",
                cfg.server.listen,
                if cfg.server.tls.is_some() { " (TLS)" } else { "" }
            );
            println!("upstream:  {}://{}", cfg.upstream.scheme, cfg.upstream.authority);
            println!(
                "chain:     {}",
                if chain.is_empty() {
                    "(none: anonymous only)".into()
                } else {
                    chain.join(" -> ")
                }
            );
            println!("identity:  {}", rt.identity_mode);
            println!(
                "rules:     {} (default {:?}, mode {:?})",
                rt.policy.len(),
                cfg.access.default,
                cfg.access.mode
            );
            println!("users:     {}", cfg.users.len());
            for w in &cfg.warnings {
                println!("warning:   {w}");
            }
            ExitCode::SUCCESS
        }
    }
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ");
        let second = rpassword::prompt_password("Again: ");
        match (first, second) {
            (Ok(a), Ok(b)) if a == b => a,
            (Ok(_), Ok(_)) => {
                eprintln!("error: the two passwords differ");
                return ExitCode::FAILURE;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("error: cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("error: cannot read the password from stdin: {e}");
            return ExitCode::FAILURE;
        }
        s.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&s)
            .to_owned()
    };
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::FAILURE;
    }
    match auth::password::hash(password.as_bytes()) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keys(cmd: KeysCommand) -> ExitCode {
    let result = match cmd {
        KeysCommand::New { opts } => keys_emit(&opts, None),
        KeysCommand::Import { opts } => {
            let mut key = String::new();
            match std::io::stdin().read_to_string(&mut key) {
                Ok(_) => keys_emit(&opts, Some(key.trim().to_owned())),
                Err(e) => Err(format!("cannot read the key from stdin: {e}")),
            }
        }
        KeysCommand::List { config } => keys_list(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keys_emit(opts: &KeyOpts, imported: Option<String>) -> Result<(), String> {
    use jira_auth_proxy::auth::api_key;
    jira_auth_proxy::identity::validate(&opts.user).map_err(|e| format!("--user: {e}"))?;
    for c in &opts.allowed_ips {
        let ok = c.parse::<ipnet::IpNet>().is_ok() || c.parse::<std::net::IpAddr>().is_ok();
        if !ok {
            return Err(format!("--allowed-ips: not an IP address or CIDR: {c:?}"));
        }
    }
    let expires = match opts.expires.as_deref() {
        None => None,
        Some(s) => Some(match jira_auth_proxy::config::parse_duration(s) {
            Ok(d) => std::time::SystemTime::now() + d,
            Err(_) => jira_auth_proxy::time::parse_rfc3339(s).map_err(|e| format!("--expires: {e}"))?,
        }),
    };
    let (generated, id) = api_key::generate()?;
    let key = match imported {
        Some(k) if k.len() < 20 => return Err("the key on stdin is shorter than 20 characters".into()),
        Some(k) => k,
        None => {
            eprintln!("API key for {} (shown once; store it now):\n{generated}", opts.user);
            generated
        }
    };
    let digest = api_key::digest_key(&key);
    let block = api_key::NewKeyBlock {
        id: &id,
        digest: &digest,
        user: &opts.user,
        name: opts.name.as_deref(),
        expires,
        scopes: &opts.scopes,
        allowed_ips: &opts.allowed_ips,
    };
    print!("{}", block.to_toml());
    Ok(())
}

fn keys_list(path: &std::path::Path) -> Result<(), String> {
    let cfg = Config::load(path).map_err(|e| format!("{}:\n{e}", path.display()))?;
    let now = std::time::SystemTime::now();
    println!(
        "{:<12} {:<16} {:<24} {:<22} {:<14} status",
        "id", "user", "name", "expires", "scopes"
    );
    for k in &cfg.api_keys {
        let status = if k.revoked {
            "REVOKED"
        } else if k.expires.is_some_and(|e| e <= now) {
            "EXPIRED"
        } else {
            "active"
        };
        let expires = k.expires.map_or("never".into(), |e| {
            jira_auth_proxy::time::rfc3339(e)[..19].to_string() + "Z"
        });
        let scopes = if k.scopes.is_empty() {
            "(all)".into()
        } else {
            k.scopes.join(",")
        };
        println!(
            "{:<12} {:<16} {:<24} {:<22} {:<14} {status}",
            k.id,
            k.user,
            k.name.as_deref().unwrap_or("-"),
            expires,
            scopes
        );
    }
    Ok(())
}
