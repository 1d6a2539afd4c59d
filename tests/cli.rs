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
    assert!(stdout.contains("rules:     6"), "{stdout}");
    assert!(!stdout.contains("from-the-environment"));
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

#[test]
fn serve_drains_and_exits_zero_on_sigterm() {
    let dir = support::temp_dir();
    let path = dir.join("c.toml");
    std::fs::write(&path, "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[audit]\nto = \"off\"\n").unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--config", path.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for "listening" on stderr, then send SIGTERM.
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    use std::io::Read;
    while !String::from_utf8_lossy(&seen).contains("listening") {
        let n = stderr.read(&mut buf).unwrap();
        assert!(n > 0, "serve exited early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
