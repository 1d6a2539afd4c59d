//! Real third-party clients (tests/interop/*.py, from PyPI) through the proxy. The venv
//! is made on first use under target/ from tests/interop/requirements.txt (set
//! JAP_INTEROP_PYTHON to use another interpreter); a missing Python fails the test,
//! it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use support::*;

static VENV: Mutex<Option<PathBuf>> = Mutex::new(None);

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("JAP_INTEROP_PYTHON") {
        return PathBuf::from(p);
    }
    let mut guard = VENV.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = &*guard {
        return p.clone();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let reqs = root.join("tests/interop/requirements.txt");
    let venv = root.join("target/interop-venv");
    let py = venv.join("bin/python");
    let stamp = venv.join("requirements.txt");
    let wanted = std::fs::read_to_string(&reqs).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let ok = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .expect("python3 runs");
        assert!(ok.success(), "python3 -m venv failed");
        let ok = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&reqs)
            .status()
            .expect("pip runs");
        assert!(ok.success(), "pip install -r tests/interop/requirements.txt failed");
        std::fs::write(&stamp, wanted).unwrap();
    }
    *guard = Some(py.clone());
    py
}

fn run_script(script: &str, proxy_url: &str, env: &[(&str, &str)]) {
    let py = python();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let out = Command::new(py)
        .arg(path)
        .env("PROXY_URL", proxy_url)
        .envs(env.iter().copied())
        .output()
        .expect("python runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("interop ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jira_and_atlassian_api_with_basic_auth() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    let url = format!("http://{}", proxy.addr);
    tokio::task::spawn_blocking(move || run_script("basic_auth.py", &url, &[]))
        .await
        .unwrap();
    let users: Vec<_> = jira.seen().into_iter().filter_map(|s| s.user).collect();
    assert!(users.len() >= 2 && users.iter().all(|u| u == "alice"), "{users:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jira_with_an_api_key_as_basic_password_and_as_token() {
    use jira_auth_proxy::auth::api_key::{digest_key, format_digest, generate};
    let (key, _) = generate().unwrap();
    let block = format!(
        "[[api_keys]]\nid = \"py\"\nhash = \"{}\"\nuser = \"py-bot\"\n",
        format_digest(&digest_key(&key))
    );
    let text = basic_config(&block).replace(
        "[[auth.chain]]\ntype = \"basic\"",
        "[[auth.chain]]\ntype = \"api_key\"\n[[auth.chain]]\ntype = \"basic\"",
    );
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&text, jira.addr).await;
    let url = format!("http://{}", proxy.addr);
    tokio::task::spawn_blocking(move || {
        run_script(
            "api_keys.py",
            &url,
            &[("API_KEY", key.as_str()), ("KEY_OWNER", "py-bot")],
        )
    })
    .await
    .unwrap();
    let users: Vec<_> = jira.seen().into_iter().filter_map(|s| s.user).collect();
    assert_eq!(users, vec!["py-bot".to_string(), "py-bot".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jira_with_a_pyjwt_token_and_its_jwks() {
    let idp = support::idp::Idp::start(&[]).await;
    let jwks = temp_dir().join("jwks.json");
    *idp.state.jwks_file.lock().unwrap() = Some(jwks.clone());
    let text = format!(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://{{jira}}\"\n\
         [[auth.chain]]\ntype = \"jwt\"\nissuer = \"{}\"\ndiscovery = true\naudiences = [\"jira\"]\n\
         algorithms = [\"RS256\", \"ES256\"]\n\
         [[access.rules]]\nname = \"all\"\nauthenticated = true\neffect = \"allow\"\n",
        idp.issuer
    );
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&text, jira.addr).await;
    let url = format!("http://{}", proxy.addr);
    let (issuer, out) = (idp.issuer.clone(), jwks.to_str().unwrap().to_string());
    tokio::task::spawn_blocking(move || run_script("jwt_bearer.py", &url, &[("ISSUER", &issuer), ("JWKS_OUT", &out)]))
        .await
        .unwrap();
    let users: Vec<_> = jira.seen().into_iter().filter_map(|s| s.user).collect();
    assert_eq!(users, vec!["frank".to_string(), "frank".to_string()]);
}

/// A proxy with an oauth1 member whose consumers are `consumers` (TOML; the RSA consumer's
/// public key is `file:consumer.pub.pem`), at a fixed local port so that the client signs
/// the URL the proxy believes it serves. Returns Jira, the proxy, its URL and the path of
/// the consumer's private key.
async fn oauth1_setup(consumers: &str) -> (FakeJira, Proxy, String, String) {
    let dir = temp_dir();
    let kp = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    std::fs::write(dir.join("consumer.pem"), kp.serialize_pem()).unwrap();
    std::fs::write(dir.join("consumer.pub.pem"), kp.public_key_pem()).unwrap();
    let port = free_addr().port();
    let text = basic_config("")
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\""),
        )
        .replace(
            "[[auth.chain]]\ntype = \"basic\"",
            "[[auth.chain]]\ntype = \"oauth1\"\n[[auth.chain]]\ntype = \"basic\"",
        )
        + consumers;
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start_in(&text, jira.addr, dir.clone()).await;
    let key = dir.join("consumer.pem").to_str().unwrap().to_string();
    (jira, proxy, format!("http://127.0.0.1:{port}"), key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_oauthlib_two_legged_rsa_sha1_and_hmac_sha1() {
    let (jira, proxy, url, key) = oauth1_setup(
        "\n[[oauth1.consumers]]\nkey = \"applink-rsa\"\npublic_key = \"file:consumer.pub.pem\"\n\
         two_legged = { allowed = false, impersonation = true }\n\
         [[oauth1.consumers]]\nkey = \"reporting\"\nsecret = \"hmac-consumer-secret\"\n\
         two_legged = { allowed = true, run_as = \"reporting-bot\" }\n",
    )
    .await;
    tokio::task::spawn_blocking(move || {
        run_script(
            "oauth1_two_legged.py",
            &url,
            &[("KEY_PEM", &key), ("HMAC_SECRET", "hmac-consumer-secret")],
        )
    })
    .await
    .unwrap();
    let users: Vec<_> = jira.seen().into_iter().filter_map(|s| s.user).collect();
    assert_eq!(users, vec!["alice", "alice", "alice", "reporting-bot"]);
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jira_oauth_after_a_three_legged_dance_with_requests_oauthlib() {
    let (jira, proxy, url, key) = oauth1_setup(
        "\n[[oauth1.consumers]]\nkey = \"applink-rsa\"\nname = \"Jira scripts\"\npublic_key = \"file:consumer.pub.pem\"\n",
    )
    .await;
    tokio::task::spawn_blocking(move || run_script("oauth1_three_legged.py", &url, &[("KEY_PEM", &key)]))
        .await
        .unwrap();
    let users: Vec<_> = jira.seen().into_iter().filter_map(|s| s.user).collect();
    // The client probes /myself once while choosing its signature method, then calls it:
    // only REST calls reach Jira (none of the OAuth dance), all as alice.
    let targets: Vec<_> = jira.seen().into_iter().map(|s| s.target).collect();
    assert!(targets.iter().all(|t| t == "/rest/api/2/myself"), "{targets:?}");
    assert!(!users.is_empty() && users.iter().all(|u| u == "alice"), "{users:?}");
    drop(proxy);
}

/// The stand-in Jira of tests/interop/fake_jira_applink.py (oauthlib verifying the
/// application link's signatures), stopped when dropped.
struct AppLinkJira {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for AppLinkJira {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn applink_jira(public_pem: &std::path::Path, base: &str) -> AppLinkJira {
    use std::io::BufRead;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/fake_jira_applink.py");
    let mut child = Command::new(python())
        .arg(script)
        .env("APPLINK_PUB", public_pem)
        .env("APPLINK_CONSUMER", "jira-auth-proxy")
        .env("JIRA_BASE", base)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no port from the fake Jira: {line:?}"));
    AppLinkJira {
        child,
        addr: ([127, 0, 0, 1], port).into(),
    }
}

/// A proxy in `oauth1` identity mode signing with `key_pem` for Jira at `jira`.
async fn oauth1_mode_proxy(jira: std::net::SocketAddr, key_pem: &str, reuse: &str) -> Proxy {
    let dir = temp_dir();
    std::fs::write(dir.join("applink.pem"), key_pem).unwrap();
    let text = basic_config("").replace(
        "connect_timeout = \"1s\"",
        &format!(
            "connect_timeout = \"1s\"\npreserve_host = false\n[upstream.identity]\nmode = \"oauth1\"\n\
             consumer_key = \"jira-auth-proxy\"\nprivate_key = \"file:applink.pem\"\n\
             signed_url = \"https://jira.example.com\"\nsession_reuse = \"{reuse}\""
        ),
    );
    Proxy::start_in(&text, jira, dir).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth1_identity_mode_verified_by_oauthlib_with_jira_session_reuse() {
    let dir = temp_dir();
    let kp = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    std::fs::write(dir.join("applink.pub.pem"), kp.public_key_pem()).unwrap();
    let jira =
        tokio::task::spawn_blocking(move || applink_jira(&dir.join("applink.pub.pem"), "https://jira.example.com"))
            .await
            .unwrap();
    let stats = || async { get(&format!("http://{}/test/stats", jira.addr), &[]).await.json() };
    let proxy = oauth1_mode_proxy(jira.addr, &kp.serialize_pem(), "5m").await;
    let (alice, bob) = (basic("alice", "alice-pw"), basic("bob", "bob-pw"));
    let myself = proxy.url("/rest/api/2/myself?expand=groups");
    let ran = |r: &Resp| {
        (
            r.status,
            r.json()["name"].as_str().map(str::to_owned),
            r.json()["how"].as_str().map(str::to_owned),
        )
    };
    let s = |v: &str| Some(v.to_string());

    // The first call of each user is signed; Jira's session then carries that user's reads.
    let r = get(&myself, &[("authorization", &alice)]).await;
    assert_eq!(ran(&r), (200, s("alice"), s("signed")));
    assert!(
        r.header("set-cookie").is_none(),
        "Jira's session never reaches the client"
    );
    assert_eq!(
        ran(&get(&myself, &[("authorization", &alice)]).await),
        (200, s("alice"), s("session"))
    );
    assert_eq!(
        ran(&get(&myself, &[("authorization", &bob)]).await),
        (200, s("bob"), s("signed"))
    );
    assert_eq!(
        ran(&get(&myself, &[("authorization", &bob)]).await),
        (200, s("bob"), s("session"))
    );
    assert_eq!(
        ran(&get(&myself, &[("authorization", &alice)]).await),
        (200, s("alice"), s("session"))
    );
    // Changes are always signed (a session never replays a body), form bodies included.
    let r = send(
        "POST",
        &proxy.url("/rest/api/2/issue/X-1/comment"),
        &[
            ("authorization", &alice),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        bytes::Bytes::from_static(b"body=hello+world&x=%2F"),
    )
    .await;
    assert_eq!(ran(&r), (200, s("alice"), s("signed")));
    let st = stats().await;
    assert_eq!(
        (st["signed"].as_u64(), st["session"].as_u64(), st["refused"].as_u64()),
        (Some(3), Some(3), Some(0))
    );

    // Jira ends its sessions: the next read is answered anonymously, dropped, and sent again signed.
    get(&format!("http://{}/test/expire", jira.addr), &[]).await;
    assert_eq!(
        ran(&get(&myself, &[("authorization", &alice)]).await),
        (200, s("alice"), s("signed"))
    );
    let st = stats().await;
    assert_eq!((st["signed"].as_u64(), st["anonymous"].as_u64()), (Some(4), Some(1)));

    // With reuse off, every request is signed.
    let unshared = oauth1_mode_proxy(jira.addr, &kp.serialize_pem(), "off").await;
    for _ in 0..2 {
        let r = get(&unshared.url("/rest/api/2/myself"), &[("authorization", &bob)]).await;
        assert_eq!(ran(&r), (200, s("bob"), s("signed")));
    }
    // A proxy signing with a key Jira does not know gets nothing through: Jira refuses it
    // and the proxy answers 502, never another identity's data.
    let other = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    let wrong = oauth1_mode_proxy(jira.addr, &other.serialize_pem(), "5m").await;
    let r = get(&wrong.url("/rest/api/2/myself"), &[("authorization", &alice)]).await;
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(stats().await["refused"].as_u64(), Some(1));
    drop((proxy, unshared, wrong));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jira_cookie_login_creates_an_issue_and_attaches_a_file() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replace(
        "[[auth.chain]]\ntype = \"basic\"",
        "[[auth.chain]]\ntype = \"session\"\n[[auth.chain]]\ntype = \"basic\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let url = proxy.url("");
    tokio::task::spawn_blocking(move || run_script("session_cookie.py", &url, &[]))
        .await
        .unwrap();
    let seen = jira.seen();
    let posted: Vec<_> = seen.iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posted.len(), 2, "the issue and the attachment");
    assert!(posted.iter().all(|s| s.user.as_deref() == Some("alice")));
    assert!(posted[1].body_len > 2000, "the attachment's bytes reached Jira");
    assert!(
        seen.iter().all(|s| !s.target.starts_with("/rest/auth/")),
        "logins never reach Jira"
    );
    assert!(
        seen.iter().all(|s| s
            .headers
            .get("cookie")
            .is_none_or(|c| !c.to_str().unwrap().contains("JAPSESSION"))),
        "the session cookie never reaches Jira"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_jira_backs_off_on_the_rate_limit_and_gets_through() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replace(
        "authenticated = true\neffect = \"allow\"",
        "authenticated = true\nrate = \"2/s burst 2\"\neffect = \"allow\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let url = proxy.url("");
    tokio::task::spawn_blocking(move || run_script("rate_limit.py", &url, &[]))
        .await
        .unwrap();
    let audit = proxy.audit();
    let limited = audit.iter().filter(|l| l["status"] == 429).count();
    assert!(limited >= 1, "{audit:?}");
    assert_eq!(jira.count(), 4, "every call reached Jira once, none twice");
}
