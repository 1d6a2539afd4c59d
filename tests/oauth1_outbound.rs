//! `upstream.identity.mode = "oauth1"`: the proxy signs every forwarded request as two-legged
//! OAuth with impersonation, as an Atlassian application link would, and checks that Jira
//! ran it as the asserted user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rustls_pki_types::pem::PemObject;
use support::*;

async fn setup(honour: bool) -> (FakeJira, Proxy) {
    let dir = temp_dir();
    let kp = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    std::fs::write(dir.join("applink.pem"), kp.serialize_pem()).unwrap();
    let spki = rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(kp.public_key_pem().as_bytes()).unwrap();
    let jira = FakeJira::start(JiraTrust::OAuth1).await;
    *jira.state.oauth_consumer.lock().unwrap() = Some(("jira-auth-proxy".into(), spki.as_ref().to_vec()));
    jira.state.honour_impersonation.store(honour, Ordering::SeqCst);
    let text = basic_config("").replace(
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\npreserve_host = false\n[upstream.identity]\nmode = \"oauth1\"\n\
         consumer_key = \"jira-auth-proxy\"\nprivate_key = \"file:applink.pem\"",
    );
    let proxy = Proxy::start_in(&text, jira.addr, dir).await;
    (jira, proxy)
}

#[tokio::test]
async fn requests_are_signed_two_legged_and_jira_runs_them_as_the_user() {
    let (jira, proxy) = setup(true).await;
    let r = get(
        &proxy.url("/rest/api/2/search?jql=project%20%3D%20X"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = jira.last();
    assert_eq!(
        seen.user.as_deref(),
        Some("alice"),
        "Jira verified the signature and impersonated alice"
    );
    let auth = seen.headers.get("authorization").unwrap().to_str().unwrap().to_string();
    assert!(
        auth.starts_with("OAuth ")
            && auth.contains("oauth_signature_method=\"RSA-SHA1\"")
            && auth.contains("oauth_token=\"\"")
    );
    assert!(!auth.contains("Basic"));
    assert!(seen.target.ends_with("&xoauth_requestor_id=alice"), "{}", seen.target);
    // A form body is signed too.
    let r = send(
        "POST",
        &proxy.url("/rest/api/2/issue/X-1/comment"),
        &[
            ("authorization", &basic("bob", "bob-pw")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Bytes::from_static(b"body=hi"),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_client_cannot_name_the_user_jira_should_run_as() {
    let (jira, proxy) = setup(true).await;
    let r = get(
        &proxy.url("/x?xoauth_requestor_id=admin&oauth_token=x"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(jira.last().target, "/x?xoauth_requestor_id=alice");
    let r = send(
        "POST",
        &proxy.url("/x"),
        &[
            ("authorization", &basic("alice", "alice-pw")),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Bytes::from_static(b"xoauth_requestor_id=admin"),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn jira_running_the_request_as_someone_else_is_a_502_not_their_data() {
    let (jira, proxy) = setup(false).await;
    let r = get(
        &proxy.url("/rest/api/2/issue/X-1"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 502);
    assert!(r.json()["errorMessages"][0].as_str().unwrap().contains("impersonation"));
    assert_eq!(proxy.audit().pop().unwrap()["reason"], "identity_not_honoured");
    assert_eq!(jira.count(), 1);
}
