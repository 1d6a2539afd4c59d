//! API keys end to end: the three ways a key is presented, expiry, revocation, address
//! allow-lists, owners, scopes, the key file, and the `keys` commands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use jira_auth_proxy::auth::api_key::{digest_key, format_digest};
use support::*;

const KEY: &str = "jap_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
const READ_KEY: &str = "jap_readonlyreadonlyreadonlyreadonlyreadonly";
/// A key made elsewhere (no prefix), imported.
const FOREIGN_KEY: &str = "Zm9yZWlnbi1rZXktZnJvbS1hbm90aGVyLXN5c3RlbQ";

fn keys_config(extra_keys: &str) -> String {
    let block = format!(
        r#"
[[api_keys]]
id = "ci"
hash = "{}"
user = "ci-bot"
name = "nightly"
[[api_keys]]
id = "ro"
hash = "{}"
user = "reporter"
scopes = ["read"]
[[api_keys]]
id = "old"
hash = "{}"
user = "ci-bot"
expires = "2020-01-01T00:00:00Z"
[[api_keys]]
id = "gone"
hash = "{}"
user = "ci-bot"
revoked = true
[[api_keys]]
id = "office"
hash = "{}"
user = "ci-bot"
allowed_ips = ["10.0.0.0/8"]
[[api_keys]]
id = "imported"
hash = "{}"
user = "importer"
{extra_keys}
"#,
        format_digest(&digest_key(KEY)),
        format_digest(&digest_key(READ_KEY)),
        format_digest(&digest_key("jap_expiredexpiredexpiredexpiredexpiredexpir")),
        format_digest(&digest_key("jap_revokedrevokedrevokedrevokedrevokedrevok")),
        format_digest(&digest_key("jap_officeofficeofficeofficeofficeofficeoffi")),
        format_digest(&digest_key(FOREIGN_KEY)),
    );
    // The api_key member goes first, as an admin would put it before Basic.
    basic_config(&block).replace(
        "[[auth.chain]]\ntype = \"basic\"",
        "[[auth.chain]]\ntype = \"api_key\"\n[[auth.chain]]\ntype = \"basic\"",
    )
}

async fn setup() -> (FakeJira, Proxy) {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&keys_config(""), jira.addr).await;
    (jira, proxy)
}

fn reason(proxy: &Proxy) -> String {
    proxy.audit().pop().unwrap()["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn key_in_x_api_key_header_reaches_jira_as_its_owner() {
    let (jira, proxy) = setup().await;
    let r = get(&proxy.url("/rest/api/2/myself"), &[("x-api-key", KEY)]).await;
    assert_eq!(r.status, 200);
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("ci-bot"));
    assert!(seen.headers.get("x-api-key").is_some(), "non-identity headers pass");
    let line = proxy.audit().pop().unwrap();
    assert_eq!(line["auth"], "api_key");
    assert!(!proxy.audit_text().contains(KEY), "the key must never be logged");
}

#[tokio::test]
async fn key_as_bearer_token_reaches_jira_as_its_owner() {
    let (jira, proxy) = setup().await;
    let r = get(&proxy.url("/x"), &[("authorization", &format!("Bearer {KEY}"))]).await;
    assert_eq!(r.status, 200);
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("ci-bot"));
    assert!(seen.headers.get("authorization").is_none());
}

#[tokio::test]
async fn key_as_basic_password_of_its_owner_works_like_an_atlassian_token() {
    let (jira, proxy) = setup().await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("CI-Bot", KEY))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("ci-bot"));
    assert_eq!(proxy.basic_verifications(), 0, "a key needs no argon2");
}

#[tokio::test]
async fn key_as_basic_password_of_another_user_is_401() {
    let (jira, proxy) = setup().await;
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", KEY))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(reason(&proxy), "key_wrong_owner");
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn expired_revoked_and_wrong_address_keys_are_401_with_distinct_reasons() {
    let (jira, proxy) = setup().await;
    for (key, why) in [
        ("jap_expiredexpiredexpiredexpiredexpiredexpir", "expired_key"),
        ("jap_revokedrevokedrevokedrevokedrevokedrevok", "revoked_key"),
        ("jap_officeofficeofficeofficeofficeofficeoffi", "key_ip_not_allowed"),
        ("jap_neverissuedneverissuedneverissuedneveriss", "unknown_key"),
    ] {
        let r = get(&proxy.url("/x"), &[("x-api-key", key)]).await;
        assert_eq!(r.status, 401, "{why}");
        assert_eq!(reason(&proxy), why);
        let r = get(&proxy.url("/x"), &[("authorization", &format!("Bearer {key}"))]).await;
        assert_eq!(r.status, 401, "{why} as bearer");
        assert!(r.header("www-authenticate").is_some());
    }
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn a_bearer_key_is_read_the_same_whatever_the_scheme_case_or_its_bytes() {
    let (jira, proxy) = setup().await;
    // The scheme is case-insensitive and the token is trimmed (RFC 9110 §11.1).
    let r = get(&proxy.url("/x"), &[("authorization", &format!("BEARER   {KEY} "))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("ci-bot"));
    // A prefixed key with characters that are not visible ASCII (no key has one) is still
    // read as a key and refused as unknown, not passed down the chain as someone else's
    // token; bytes that are not UTF-8 at all are a malformed key.
    for (last, why) in [(&b"\xc3\xa9"[..], "unknown_key"), (&b"\xe9"[..], "malformed_key")] {
        let mut request = b"GET /x HTTP/1.1\r\nHost: jira\r\nConnection: close\r\nAuthorization: Bearer ".to_vec();
        request.extend_from_slice(&KEY.as_bytes()[..KEY.len() - 1]);
        request.extend_from_slice(last);
        request.extend_from_slice(b"\r\n\r\n");
        let answer = raw(proxy.addr, &request).await;
        assert_eq!(raw_status(&answer), 401, "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("www-authenticate: bearer"),
            "{answer}"
        );
        assert_eq!(reason(&proxy), why);
    }
    assert_eq!(jira.count(), 1, "only the first request reached Jira");
}

#[tokio::test]
async fn key_from_an_allowed_address_behind_a_trusted_proxy_is_accepted() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = keys_config("").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let key = "jap_officeofficeofficeofficeofficeofficeoffi";
    let r = get(&proxy.url("/x"), &[("x-api-key", key), ("x-forwarded-for", "10.9.8.7")]).await;
    assert_eq!(r.status, 200);
    let r = get(
        &proxy.url("/x"),
        &[("x-api-key", key), ("x-forwarded-for", "192.0.2.1")],
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn unknown_bearer_without_our_prefix_goes_on_down_the_chain() {
    let (jira, proxy) = setup().await;
    // Nobody after the key member knows this bearer token either: refused, not anonymous.
    let r = get(&proxy.url("/x"), &[("authorization", "Bearer some-jwt-or-jira-pat")]).await;
    assert_eq!(r.status, 401);
    let line = proxy.audit().pop().unwrap();
    assert_eq!(
        (line["outcome"].as_str(), line["reason"].as_str()),
        (Some("rejected"), Some("unknown_bearer")),
        "{line}"
    );
    let challenge = r.header("www-authenticate").unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(!challenge.contains("some-jwt"), "{challenge}");
    // A Basic password that is not a key is Basic's business.
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "alice-pw"))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
    // ...but an unknown value with our prefix is refused outright.
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", "jap_nope"))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(reason(&proxy), "unknown_key");
}

#[tokio::test]
async fn imported_key_without_our_prefix_works() {
    let (jira, proxy) = setup().await;
    let r = get(&proxy.url("/x"), &[("authorization", &format!("Bearer {FOREIGN_KEY}"))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("importer"));
    // As a Basic password it is its owner's key...
    let r = get(&proxy.url("/x"), &[("authorization", &basic("importer", FOREIGN_KEY))]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("importer"));
    assert_eq!(proxy.basic_verifications(), 0);
    // ...and for a user who owns no key, an unprefixed password is only a password: the
    // Basic member checks it (and refuses it) without the key member looking at it.
    let before = jira.count();
    let r = get(&proxy.url("/x"), &[("authorization", &basic("alice", FOREIGN_KEY))]).await;
    assert_eq!(r.status, 401);
    assert_eq!(reason(&proxy), "bad_password");
    assert_eq!(proxy.basic_verifications(), 1);
    assert_eq!(jira.count(), before);
}

#[tokio::test]
async fn read_scoped_key_may_read_but_not_write() {
    let (jira, proxy) = setup().await;
    let r = get(&proxy.url("/rest/api/2/issue/X-1"), &[("x-api-key", READ_KEY)]).await;
    assert_eq!(r.status, 200);
    let before = jira.count();
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = send(
            m,
            &proxy.url("/rest/api/2/issue/X-1"),
            &[("x-api-key", READ_KEY)],
            Bytes::from_static(b"{}"),
        )
        .await;
        assert_eq!(r.status, 403, "{m}");
        assert_eq!(reason(&proxy), "insufficient_scope");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("error=\"insufficient_scope\"")
        );
    }
    assert_eq!(jira.count(), before);
}

#[tokio::test]
async fn key_and_another_credential_together_is_ambiguous() {
    let (jira, proxy) = setup().await;
    let r = get(
        &proxy.url("/x"),
        &[("x-api-key", KEY), ("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(reason(&proxy), "ambiguous_credentials");
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn keys_in_a_separate_key_file_work() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let dir = temp_dir();
    let file = dir.join("keys.toml");
    std::fs::write(
        &file,
        format!(
            "[[api_keys]]\nid = \"filekey\"\nhash = \"{}\"\nuser = \"automation\"\n",
            format_digest(&digest_key(KEY))
        ),
    )
    .unwrap();
    let text = basic_config("")
        .replace(
            "version = 1",
            &format!("version = 1\napi_keys_file = \"{}\"", file.display()),
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            "[[auth.chain]]\ntype = \"api_key\"\n[[auth.chain]]\ntype = \"basic\"",
        );
    let proxy = Proxy::start(&text, jira.addr).await;
    let r = get(&proxy.url("/x"), &[("x-api-key", KEY)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().user.as_deref(), Some("automation"));
}

#[test]
fn key_file_errors_name_the_file_and_entry() {
    let dir = temp_dir();
    std::fs::write(
        dir.join("keys.toml"),
        "[[api_keys]]\nid = \"x\"\nhash = \"md5:00\"\nuser = \"u\"\n[other]\n",
    )
    .unwrap();
    let text = "version = 1\napi_keys_file = \"keys.toml\"\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    let errs = jira_auth_proxy::config::Config::parse(text, &dir)
        .unwrap_err()
        .to_string();
    assert!(errs.contains("keys.toml: api_keys[0].hash: must be"), "{errs}");
    assert!(errs.contains("keys.toml: other: unknown key"), "{errs}");
}

const BIN: &str = env!("CARGO_BIN_EXE_jira-auth-proxy");

#[tokio::test]
async fn keys_new_prints_the_key_once_and_a_block_that_works_when_pasted() {
    let out = Command::new(BIN)
        .args([
            "keys",
            "new",
            "--user",
            "deploy-bot",
            "--expires",
            "90d",
            "--scopes",
            "read,write",
            "--name",
            "deploys",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let key = stderr
        .lines()
        .find(|l| l.starts_with("jap_"))
        .expect("key on stderr")
        .trim()
        .to_string();
    assert!(!stdout.contains(&key), "the block must not contain the key");
    assert!(
        stdout.contains("user = \"deploy-bot\"") && stdout.contains("scopes = [\"read\", \"write\"]"),
        "{stdout}"
    );
    assert!(stdout.contains("expires = \"20"), "{stdout}");

    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config(&stdout).replace(
        "[[auth.chain]]\ntype = \"basic\"",
        "[[auth.chain]]\ntype = \"api_key\"\n[[auth.chain]]\ntype = \"basic\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let r = send(
        "POST",
        &proxy.url("/rest/api/2/issue"),
        &[("authorization", &format!("Bearer {key}"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 201, "Jira created the issue");
    assert_eq!(jira.last().user.as_deref(), Some("deploy-bot"));
}

#[test]
fn keys_import_reads_stdin_and_list_shows_status_without_secrets() {
    let mut child = Command::new(BIN)
        .args(["keys", "import", "--user", "legacy", "--allowed-ips", "10.0.0.0/8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let legacy = "bGVnYWN5LWtleS1mcm9tLWFub3RoZXItcHJveHk";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{legacy}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let block = String::from_utf8(out.stdout).unwrap();
    assert!(block.contains(&format_digest(&digest_key(legacy))), "{block}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(legacy));

    let dir = temp_dir();
    let cfg = dir.join("c.toml");
    std::fs::write(&cfg, keys_config(&block).replace("{jira}", "127.0.0.1:1")).unwrap();
    let out = Command::new(BIN)
        .args(["keys", "list", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list = String::from_utf8(out.stdout).unwrap();
    let line = |id: &str| {
        list.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("{id} in {list}"))
            .to_string()
    };
    assert!(line("old ").ends_with("EXPIRED"));
    assert!(line("gone ").ends_with("REVOKED"));
    assert!(line("ci ").ends_with("active") && line("ci ").contains("nightly"));
    assert!(line("ro ").contains("read"));
    assert!(
        !list.contains("sha256:") && !list.contains("jap_"),
        "no digests or keys in listings"
    );
}
