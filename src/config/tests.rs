//! Config parsing: the shipped files parse, and bad files list every error with its path.

use super::*;

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, Path::new(".")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| format!("{}: {}", e.path, e.message)).collect(),
    }
}

const BASE: &str = r#"
version = 1
[server]
listen = "127.0.0.1:0"
[upstream]
url = "http://127.0.0.1:8080"
"#;

#[test]
fn minimal_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/minimal.toml");
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("minimal.toml:\n{e}"));
    assert!(matches!(cfg.upstream.identity, IdentityMode::Header { .. }));
    assert_eq!(cfg.access.default, Effect::Deny);
}

#[test]
fn every_error_is_reported_with_its_path() {
    let text = r#"
version = 1
[server]
listen = "not-an-address"
trusted_proxies = ["10.0.0.0/8", "banana"]
shutdown_grace = "5 minutes"
workers = 0
[upstream]
url = "ftp://jira"
connect_timeout = "5x"
[[auth.chain]]
type = "basic"
cache_ttl = "soon"
[[auth.chain]]
type = "saml"
issuer = "https://login.example.com"
[[users]]
name = "alice"
password_hash = "plaintext"
[[access.rules]]
name = "r"
effect = "maybe"
paths = ["no-slash"]
[surprise]
x = 1
"#;
    let errs = errors(text);
    let expect = [
        "server.listen: not an address:port",
        "server.trusted_proxies[1]: not an IP address or CIDR",
        "server.shutdown_grace: ",
        "server.workers: must be between 1 and 256",
        "upstream.url: not an absolute http(s) URL",
        "upstream.connect_timeout: unknown unit",
        "auth.chain[0].cache_ttl: not a duration",
        "auth.chain[1].type: unknown variant `saml`",
        "users[0].password_hash: not an argon2 PHC string",
        "access.rules[0].effect: expected \"allow\" or \"deny\"",
        "access.rules[0].paths[0]: path patterns start with '/'",
        "surprise: unknown section",
    ];
    for e in expect {
        assert!(
            errs.iter().any(|got| got.starts_with(e)),
            "missing {e:?} in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(
        errs.len(),
        expect.len(),
        "unexpected extra errors:\n{}",
        errs.join("\n")
    );
}

#[test]
fn unknown_fields_name_their_path() {
    let errs = errors(&format!(
        "{BASE}\n[[auth.chain]]\ntype = \"basic\"\nlockout = {{ max_failures = 3, windw = \"1m\" }}\n"
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("auth.chain[0]"), "{errs:?}");
    assert!(errs[0].contains("windw"), "{errs:?}");
    let errs = errors(&format!(
        "{BASE}\n[server.tls]\ncert = \"c\"\nkey = \"k\"\npassword = \"x\"\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("server.tls") && e.contains("password")),
        "{errs:?}"
    );
}

#[test]
fn version_is_required_and_checked() {
    assert!(
        errors(&BASE.replace("version = 1", ""))
            .iter()
            .any(|e| e.starts_with("version: missing"))
    );
    assert!(
        errors(&BASE.replace("version = 1", "version = 2"))
            .iter()
            .any(|e| e.starts_with("version: unsupported"))
    );
}

#[test]
fn syntax_errors_are_one_clear_error() {
    let errs = errors("version = 1\n[server\nlisten = 1");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("not valid TOML"), "{errs:?}");
}

#[test]
fn identity_header_cannot_be_a_reserved_header() {
    for h in ["Authorization", "Cookie", "Host", "X-Forwarded-For"] {
        let errs = errors(&format!(
            "{BASE}\n[upstream.identity]\nmode = \"header\"\nheader = \"{h}\"\n"
        ));
        assert!(
            errs.iter().any(|e| e.starts_with("upstream.identity.header")),
            "{h}: {errs:?}"
        );
    }
}

#[test]
fn secret_header_needs_its_secret_and_secret_is_redacted() {
    let errs = errors(&format!(
        "{BASE}\n[upstream.identity]\nmode = \"header\"\nsecret_header = \"X-S\"\n"
    ));
    assert!(errs.iter().any(|e| e.starts_with("upstream.identity:")), "{errs:?}");
    let text =
        format!("{BASE}\n[upstream.identity]\nmode = \"header\"\nsecret_header = \"X-S\"\nsecret = \"topsecret\"\n");
    let cfg = Config::parse(&text, Path::new(".")).expect("valid");
    assert!(
        !format!("{cfg:?}").contains("topsecret"),
        "secret leaked into Debug output"
    );
    // A secret that could not go on the wire as a field value is refused at load, and
    // the error does not repeat it.
    let errs = errors(&format!(
        "{BASE}\n[upstream.identity]\nmode = \"header\"\nsecret_header = \"X-S\"\nsecret = \"top\\r\\nX-Forwarded-User: admin\"\n"
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("upstream.identity.secret: "), "{errs:?}");
    assert!(!errs[0].contains("admin"), "{errs:?}");
}

#[test]
fn defaults_are_safe() {
    let cfg = Config::parse(BASE, Path::new(".")).expect("valid");
    assert_eq!(cfg.access.default, Effect::Deny);
    assert_eq!(cfg.access.mode, AccessMode::Enforce);
    assert!(cfg.server.trusted_proxies.is_empty());
    assert_eq!(cfg.audit, AuditTarget::Stdout);
    assert_eq!(
        cfg.audit_flush,
        Duration::ZERO,
        "each audit line is written as its request ends"
    );
    assert!(
        matches!(&cfg.upstream.identity, IdentityMode::Header { name, secret: None } if name == "x-forwarded-user")
    );
}

#[test]
fn audit_flush_is_a_duration_of_at_most_a_minute_and_not_with_required() {
    let cfg = Config::parse(&format!("{BASE}\n[audit]\nflush = \"500ms\"\n"), Path::new(".")).expect("valid");
    assert_eq!(cfg.audit_flush, Duration::from_millis(500));
    let errs = errors(&format!("{BASE}\n[audit]\nflush = \"soon\"\n"));
    assert!(errs.iter().any(|e| e.starts_with("audit.flush: ")), "{errs:?}");
    let errs = errors(&format!("{BASE}\n[audit]\nflush = \"2m\"\n"));
    assert!(
        errs.iter().any(|e| e.starts_with("audit.flush: at most 60s")),
        "{errs:?}"
    );
    let errs = errors(&format!("{BASE}\n[audit]\nflush = \"1s\"\nrequired = true\n"));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("audit.flush: cannot be used with audit.required")),
        "{errs:?}"
    );
}

#[test]
fn max_headers_is_bounded_on_both_sides() {
    let with = |n: usize| {
        BASE.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:0\"\nmax_headers = {n}"),
        )
    };
    let cfg = Config::parse(&with(10_000), Path::new(".")).expect("valid");
    assert_eq!(cfg.server.max_headers, 10_000);
    for n in [0, 10_001, 1_000_000] {
        let errs = errors(&with(n));
        assert_eq!(
            errs,
            vec!["server.max_headers: must be between 1 and 10000".to_string()],
            "{n}"
        );
    }
}

#[test]
fn redis_state_needs_a_redis_url_and_memory_takes_no_redis_settings() {
    let errs = errors(&format!("{BASE}\n[state]\nbackend = \"redis\"\n"));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("state.url") && e.contains("needs a url")),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{BASE}\n[state]\nbackend = \"redis\"\nurl = \"http://user:hunter2@x\"\nresponse_timeout = \"0s\"\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("state.url") && !e.contains("hunter2")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.starts_with("state.response_timeout")), "{errs:?}");
    let errs = errors(&format!("{BASE}\n[state]\nurl = \"redis://127.0.0.1\"\n"));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("state.url") && e.contains("only for")),
        "{errs:?}"
    );
    let cfg = Config::parse(
        &format!("{BASE}\n[state]\nbackend = \"redis\"\nurl = \"redis://:pw@127.0.0.1:6379/2\"\nkey_prefix = \"a:\"\n"),
        Path::new("."),
    )
    .expect("valid");
    let r = cfg.state.redis.expect("redis settings");
    assert_eq!(r.key_prefix, "a:");
    assert_eq!(r.response_timeout, Duration::from_secs(1));
    assert!(!format!("{r:?}").contains("pw@"), "the URL is redacted in Debug");
    // A Unix socket, with a database and a login in its query; a CA file is for TLS only.
    let unix = "url = \"unix:///run/redis/redis.sock?db=2&user=jap&pass=s3cret\"";
    Config::parse(
        &format!("{BASE}\n[state]\nbackend = \"redis\"\n{unix}\n"),
        Path::new("."),
    )
    .expect("valid");
    let errs = errors(&format!(
        "{BASE}\n[state]\nbackend = \"redis\"\n{unix}\nca_file = \"ca.pem\"\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("state.ca_file") && e.contains("only for rediss://")),
        "{errs:?}"
    );
    assert!(!errs.iter().any(|e| e.contains("s3cret")), "{errs:?}");
    let errs = errors(&format!(
        "{BASE}\n[state]\nbackend = \"redis\"\nurl = \"unix://relative.sock?pass=s3cret\"\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("state.url") && e.contains("absolute socket path") && !e.contains("s3cret")),
        "{errs:?}"
    );
}

#[test]
fn jwt_members_need_audiences_a_key_source_and_a_secret_for_hs256() {
    let jwt = |body: &str| {
        errors(&format!(
            "{BASE}\n[[auth.chain]]\ntype = \"jwt\"\nissuer = \"https://idp\"\n{body}"
        ))
    };
    let e = jwt("");
    assert!(
        e.iter().any(|e| e.starts_with("auth.chain[0]: give one key source")),
        "{e:?}"
    );
    let e = jwt("jwks_uri = \"https://idp/jwks\"");
    assert!(e.iter().any(|e| e.starts_with("auth.chain[0].audiences")), "{e:?}");
    let e = jwt("jwks_uri = \"https://idp/jwks\"\naudiences = [\"jira\"]\nalgorithms = [\"HS256\"]");
    assert!(e.iter().any(|e| e.contains("HS256 needs hs256_secret")), "{e:?}");
    let e = jwt("jwks_uri = \"https://idp/jwks\"\naudiences = [\"jira\"]\nalgorithms = [\"none\"]");
    assert!(e.iter().any(|e| e.starts_with("auth.chain[0].algorithms[0]")), "{e:?}");
    let e = jwt("discovery = true\njwks_uri = \"https://idp/jwks\"\naudiences = [\"jira\"]");
    assert!(e.iter().any(|e| e.contains("only one of")), "{e:?}");
    assert!(jwt("discovery = true\naudiences = [\"jira\"]").is_empty());
}
