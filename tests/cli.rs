//! The command line as an admin uses it: check, hash-password, --help, serve.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_jira-auth-proxy");

fn repo(p: &str) -> String {
    format!("{}/{p}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_example_config_prints_the_chain_identity_and_rules() {
    let out = Command::new(BIN)
        .args(["check", "--config", &repo("config/example.toml")])
        .env("JAP_UPSTREAM_SECRET", "from-the-environment")
        .env("JAP_REPORTING_SECRET", "reporting-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("chain:     session -> api_key -> jwt -> oauth1 -> basic"),
        "{stdout}"
    );
    assert!(
        stdout.contains("identity:  header x-forwarded-user (with shared secret in x-proxy-secret)"),
        "{stdout}"
    );
    assert!(stdout.contains("rules:     8"), "{stdout}");
    assert!(!stdout.contains("from-the-environment"));
    assert!(
        !stdout.contains("warning:   rule"),
        "no shadowed rules, no anonymous writes: {stdout}"
    );
}

/// `explain` on the example config: (decision line, full output).
fn explain(args: &[&str]) -> (String, String) {
    let out = Command::new(BIN)
        .args(["explain", "--config", &repo("config/example.toml")])
        .args(args)
        .env("JAP_UPSTREAM_SECRET", "from-the-environment")
        .env("JAP_REPORTING_SECRET", "reporting-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let decision = stdout
        .lines()
        .find(|l| l.starts_with("decision:"))
        .unwrap_or_default()
        .to_string();
    (decision, stdout)
}

#[test]
fn the_example_rules_do_what_their_names_say() {
    let case = |args: &[&str], want: &str| {
        let (decision, all) = explain(args);
        assert!(decision.contains(want), "{args:?}: wanted {want:?}\n{all}");
        all
    };
    case(&["GET", "/rest/api/2/serverInfo"], "ALLOW by rule \"status is public\"");
    case(&["POST", "/status"], "DENY by access.default");
    case(
        &["GET", "/rest/api/2/issue/X-1"],
        "401: anonymous callers are asked to authenticate",
    );
    case(
        &["--user", "alice", "--auth", "basic", "GET", "/secure/admin/users"],
        "ALLOW by rule \"everyone authenticated\"",
    );
    case(
        &["--user", "dave", "--auth", "jwt", "GET", "/secure/admin/users"],
        "DENY by rule \"admin APIs for admins\"",
    );
    case(
        &[
            "--user",
            "ci-bot",
            "--auth",
            "basic",
            "--from",
            "10.20.1.1",
            "DELETE",
            "/rest/api/2/issue/X-1",
        ],
        "DENY by rule \"bots read only\"",
    );
    let all = case(
        &[
            "--user",
            "ci-bot",
            "--auth",
            "basic",
            "--from",
            "10.20.1.1",
            "GET",
            "/rest/api/2/issue/X-1",
        ],
        "ALLOW by rule \"bots from the build network\"",
    );
    assert!(all.contains("rate:     20 per 1s, burst 100, per caller"), "{all}");
    case(
        &[
            "--user",
            "ci-bot",
            "--auth",
            "basic",
            "--from",
            "192.168.1.1",
            "GET",
            "/rest/api/2/issue/X-1",
        ],
        "DENY by rule \"bots nowhere else\"",
    );
    let all = case(
        &["--user", "alice", "--auth", "basic", "GET", "/rest/api/2/issue/X-1"],
        "ALLOW by rule \"everyone authenticated\"",
    );
    assert!(
        all.contains("report:   would be denied by employees off Basic auth (trial)"),
        "{all}"
    );
    assert!(
        all.contains("employees off Basic auth (trial): matches, report only"),
        "{all}"
    );
    case(
        &[
            "--user",
            "deployer",
            "--auth",
            "api_key",
            "--scopes",
            "deploy",
            "PUT",
            "/rest/api/2/version/7",
        ],
        "ALLOW by rule \"keys with the deploy scope\"",
    );
}

#[test]
fn explain_lists_why_each_earlier_rule_did_not_match_and_normalises_the_path() {
    let (decision, all) = explain(&[
        "--user",
        "dave",
        "--auth",
        "jwt",
        "GET",
        "/rest/api/2/../../../secure/admin/x",
    ]);
    assert!(decision.contains("admin APIs for admins"), "{all}");
    assert!(all.contains("request:  GET /secure/admin/x"), "{all}");
    assert!(
        all.contains("(as written: /rest/api/2/../../../secure/admin/x)"),
        "{all}"
    );
    assert!(
        all.contains("1. status is public: no match")
            && all.contains("- path /secure/admin/x matches none of /status, /rest/api/2/serverInfo"),
        "{all}"
    );
    // A path the proxy refuses is said so.
    let out = Command::new(BIN)
        .args([
            "explain",
            "--config",
            &repo("config/minimal.toml"),
            "GET",
            "/a/%2e%2e/..%2f",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("400"));
}

#[test]
fn check_example_config_without_its_secret_names_the_missing_variable() {
    let out = Command::new(BIN)
        .args(["check", "--config", &repo("config/example.toml")])
        .env_remove("JAP_UPSTREAM_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upstream.identity.secret: environment variable JAP_UPSTREAM_SECRET is not set"),
        "{stderr}"
    );
}

#[test]
fn check_minimal_config_succeeds() {
    let out = Command::new(BIN)
        .args(["check", "--config", &repo("config/minimal.toml")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_bad_config_lists_every_error_with_its_path_and_fails() {
    let dir = support::temp_dir();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "version = 1\n[server]\nlisten = \"nowhere\"\n[upstream]\nurl = \"http://127.0.0.1:8080\"\nresponse_timeout = \"2 weeks\"\n\
         [[auth.chain]]\ntype = \"basic\"\nlockout = { max_failures = 3, window = \"forever\" }\n[server.tls]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "4 error(s)",
        "server.tls: missing field `cert`",
        "server.listen: not an address:port",
        "upstream.response_timeout: ",
        "auth.chain[0].lockout.window: ",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in {stderr}");
    }
}

#[test]
fn hash_password_from_stdin_makes_an_argon2id_phc_that_verifies() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"pa:ss word\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    use argon2::password_hash::PasswordVerifier;
    let parsed = argon2::PasswordHash::new(&phc).unwrap();
    assert!(
        argon2::Argon2::default()
            .verify_password(b"pa:ss word", &parsed)
            .is_ok()
    );
    assert!(
        argon2::Argon2::default()
            .verify_password(b"pa:ss word\n", &parsed)
            .is_err()
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["hash-password", "--help"],
        &["demo", "--help"],
    ] {
        let out = Command::new(BIN).args(sub).output().unwrap();
        assert!(out.status.success(), "{sub:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"), "{sub:?}");
    }
}

#[test]
fn serve_with_a_bad_config_exits_non_zero_and_says_why() {
    let dir = support::temp_dir();
    let path = dir.join("c.toml");
    std::fs::write(&path, "version = 1\n[upstream]\nurl = \"nope\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.listen: missing") && stderr.contains("upstream.url: "),
        "{stderr}"
    );
}

/// `serve --config path`, returned once it says "listening" on stderr (which stays
/// attached); its stdout is piped for the test to read.
fn serve_listening(path: &std::path::Path) -> std::process::Child {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&seen).contains("listening") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "serve exited early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    child.stderr = Some(stderr);
    child
}

#[test]
fn serve_drains_and_exits_zero_on_sigterm() {
    let dir = support::temp_dir();
    let path = dir.join("c.toml");
    std::fs::write(&path, "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[audit]\nto = \"off\"\n").unwrap();
    let mut child = serve_listening(&path);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn serve_writes_each_request_as_one_whole_json_line_to_stdout_by_default() {
    use std::io::BufRead;
    let path = support::temp_dir().join("c.toml");
    let addr = support::free_addr().to_string();
    // No [audit] table: the lines go to standard output. Anonymous requests are denied
    // (401), so nothing needs a Jira.
    std::fs::write(
        &path,
        format!(
            "version = 1\n[server]\nlisten = \"{addr}\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
             [access]\ndefault = \"deny\"\n"
        ),
    )
    .unwrap();
    let mut child = serve_listening(&path);
    for i in 0..3 {
        assert_eq!(status_of(&addr, &format!("/rest/api/2/issue/AUD-{i}")), 401);
    }
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for i in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["path"], format!("/rest/api/2/issue/AUD-{i}"), "{line}");
        assert_eq!(v["status"], 401, "{line}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The status of `GET path` (plain HTTP/1.1, connection closed after).
fn status_of(addr: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn write_config(path: &std::path::Path, addr: &str, admin: &str, default: &str) {
    std::fs::write(
        path,
        format!(
            "version = 1\n[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"{admin}\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n\
             [audit]\nto = \"off\"\n[access]\ndefault = \"{default}\"\n"
        ),
    )
    .unwrap();
}

/// `serve` on a config whose `access.default` the test rewrites; Jira is unreachable, so
/// an allowed anonymous request answers 502 and a denied one 401.
struct Served {
    child: std::process::Child,
    addr: String,
    admin: String,
    path: std::path::PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Served {
    fn start(watch_interval: &str) -> Served {
        Self::start_with_env(watch_interval, &[])
    }

    fn start_with_env(watch_interval: &str, env: &[(&str, &str)]) -> Served {
        use std::io::BufRead;
        let path = support::temp_dir().join("c.toml");
        let (addr, admin) = (support::free_addr().to_string(), support::free_addr().to_string());
        write_config(&path, &addr, &admin, "allow");
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--watch-interval",
                watch_interval,
            ])
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log: std::sync::Arc<std::sync::Mutex<String>> = Default::default();
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let s = Served {
            child,
            addr,
            admin,
            path,
            log,
        };
        s.wait_for(|s| s.log.lock().unwrap().contains("listening"), "never listened");
        s
    }

    fn write(&self, default: &str) {
        write_config(&self.path, &self.addr, &self.admin, default);
    }

    fn status(&self) -> u16 {
        status_of(&self.addr, "/x")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    fn wait_for(&self, what: impl Fn(&Served) -> bool, why: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !what(self) {
            assert!(
                std::time::Instant::now() < deadline,
                "{why}:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        self.signal("-TERM");
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }
}

#[test]
fn serve_reloads_when_the_config_file_changes_and_logs_json_when_asked() {
    let s = Served::start_with_env("100ms", &[("JAP_LOG_FORMAT", "json")]);
    assert_eq!(s.status(), 502);
    s.write("deny");
    s.wait_for(|s| s.status() == 401, "a changed file was not picked up");
    s.wait_for(
        |s| s.log.lock().unwrap().contains("configuration reloaded"),
        "no reload logged",
    );
    let log = s.log.lock().unwrap().clone();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
    s.stop();
}

#[test]
fn serve_reloads_on_sighup_and_keeps_serving_through_a_bad_file() {
    let s = Served::start("0s");
    assert_eq!(s.status(), 502);
    s.write("deny");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(s.status(), 502, "no watcher: nothing changes before SIGHUP");
    s.signal("-HUP");
    s.wait_for(|s| s.status() == 401, "SIGHUP did not reload");
    std::fs::write(&s.path, "version = 1\n[server]\nlisten = \"nowhere\"\n").unwrap();
    s.signal("-HUP");
    s.wait_for(
        |s| s.log.lock().unwrap().contains("reload refused"),
        "no refusal logged",
    );
    let text = s.log.lock().unwrap().clone();
    assert!(
        text.contains("server.listen") && text.contains("upstream"),
        "every error, with its path:\n{text}"
    );
    assert_eq!(s.status(), 401, "the previous config keeps serving");
    s.stop();
}

#[test]
fn the_container_config_checks_and_probe_answers_for_a_health_check() {
    let out = Command::new(BIN)
        .args(["check", "--config", &repo("deploy/config.toml")])
        .env("JAP_UPSTREAM_SECRET", "from-the-secret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = Served::start("0s");
    let probe = |url: String| {
        Command::new(BIN)
            .args(["probe", &url])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(probe(format!("http://{}/healthz", s.admin)));
    assert!(!probe(format!("http://{}/nope", s.admin)), "404 is not healthy");
    assert!(!probe(format!("http://{}/x", s.addr)), "502 is not healthy");
    let closed = support::free_addr();
    assert!(!probe(format!("http://{closed}/healthz")));
    assert!(!probe("https://127.0.0.1/healthz".into()), "plain http only");
    s.stop();
}

/// The proxy draws random salts and seeds as it starts, and `check`, `hash-password` and
/// `keys new`/`import` draw some too. aws-lc's CPU-jitter entropy source, when built in,
/// first spends 40-60 ms of CPU in timed loops (start to first answer 41.5-46.1 ms
/// against 3.5-4.9 ms without it; benches/HISTORY.md). `.cargo/config.toml` builds aws-lc
/// without it, its generator seeded from the kernel's (SECURITY.md, "Randomness"). Checked
/// two ways: the product binary carries aws-lc's symbols, so the source built in would show
/// by name; and aws-lc, asked in this process, names its entropy source.
#[test]
fn the_binary_is_built_without_the_cpu_jitter_entropy_source() {
    let bin = std::fs::read(BIN).unwrap();
    let has = |name: &[u8]| memchr::memmem::find(&bin, name).is_some();
    assert!(has(b"RAND_bytes"), "aws-lc's symbols are in the binary");
    assert!(
        !has(b"jent_read_entropy"),
        "aws-lc is built with its CPU-jitter entropy source: set AWS_LC_SYS_NO_JITTER_ENTROPY=1 (.cargo/config.toml)"
    );
    assert!(
        aws_lc_rs::try_fips_cpu_jitter_entropy().is_err(),
        "aws-lc seeds from CPU jitter"
    );
}
