//! Real TLS on both sides: the listener with ALPN (HTTP/1.1 and HTTP/2) from generated
//! PEM files, and an https:// Jira trusted through `upstream.ca_file`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn tls_config(pki: &TestPki) -> String {
    basic_config("").replace(
        "listen = \"127.0.0.1:0\"",
        &format!(
            "listen = \"127.0.0.1:0\"\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"",
            pki.cert_pem.display(),
            pki.key_pem.display()
        ),
    )
}

async fn connect(proxy: &Proxy, pki: &TestPki, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    TlsConnector::from(tls_client(pki, alpn))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn tls_listener_serves_http1_when_offered_only_http1() {
    let pki = pki();
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&tls_config(&pki), jira.addr).await;
    let tls = connect(&proxy, &pki, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::get("/rest/api/2/myself")
        .header("host", "localhost")
        .header("authorization", basic("alice", "alice-pw"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("alice"));
    assert_eq!(seen.headers.get("x-forwarded-proto").unwrap(), "https");
}

#[tokio::test]
async fn tls_listener_negotiates_h2_and_forwards_as_http1_to_jira() {
    let pki = pki();
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&tls_config(&pki), jira.addr).await;
    let tls = connect(&proxy, &pki, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = Bytes::from_static(b"{\"fields\":{}}");
    let req = Request::post("https://localhost/rest/api/2/issue")
        .header("authorization", basic("alice", "alice-pw"))
        .header("x-forwarded-user", "admin")
        .body(Full::new(body.clone()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    // Jira's fields reach an HTTP/2 caller, those passed as written and those the proxy reads.
    assert_eq!(resp.headers().get("content-type").unwrap(), "application/json");
    assert_eq!(resp.headers().get("x-arequestid").unwrap(), "932x1234x1");
    assert!(resp.headers().get("x-request-id").is_some());
    let _ = resp.into_body().collect().await.unwrap();
    let seen = jira.last();
    assert_eq!(seen.user.as_deref(), Some("alice"));
    assert_eq!(seen.headers.get("host").unwrap(), "localhost");
    assert_eq!(seen.body_len, body.len() as u64);
}

#[tokio::test]
async fn tls_client_that_does_not_trust_the_cert_gets_no_answer() {
    let pki = pki();
    let other = support::pki();
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&tls_config(&pki), jira.addr).await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let r = TlsConnector::from(tls_client(&other, &[b"http/1.1"]))
        .connect(name, tcp)
        .await;
    assert!(r.is_err());
    // Plain HTTP to a TLS port is not served either.
    let answer = raw(proxy.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(!answer.starts_with("HTTP/1.1 200"));
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn https_upstream_is_trusted_through_the_configured_ca_file_only() {
    let pki = pki();
    let acceptor = jira_auth_proxy::server::tls::acceptor(&jira_auth_proxy::config::TlsFiles {
        cert: pki.cert_pem.clone(),
        key: pki.key_pem.clone(),
    })
    .unwrap();
    // The fake Jira speaks http/1.1 only; drop h2 from its ALPN list.
    let mut cfg = rustls::ServerConfig::clone(acceptor.config());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let jira = FakeJira::start_tls(JiraTrust::Header, tokio_rustls::TlsAcceptor::from(Arc::new(cfg))).await;
    let trusted = basic_config("").replace(
        "url = \"http://{jira}\"",
        &format!(
            "url = \"https://localhost:{}\"\nca_file = \"{}\"",
            jira.addr.port(),
            pki.ca_pem.display()
        ),
    );
    let proxy = Proxy::start(&trusted, jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(jira.last().user.as_deref(), Some("alice"));

    let other = support::pki();
    let untrusted = basic_config("").replace(
        "url = \"http://{jira}\"",
        &format!(
            "url = \"https://localhost:{}\"\nca_file = \"{}\"",
            jira.addr.port(),
            other.ca_pem.display()
        ),
    );
    let before = jira.count();
    let proxy = Proxy::start(&untrusted, jira.addr).await;
    let r = get(
        &proxy.url("/rest/api/2/myself"),
        &[("authorization", &basic("alice", "alice-pw"))],
    )
    .await;
    assert_eq!(r.status, 502);
    assert_eq!(jira.count(), before);
}
