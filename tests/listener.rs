//! The listener's HTTP/1.1 server on the wire, as raw bytes: pipelined requests, bodies
//! framed by length and by chunks, `100 Continue`, HTTP/1.0 keep-alive, an answer to a
//! body nobody read, and HTTP/2 by prior knowledge on the same port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup() -> (FakeJira, Proxy) {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let proxy = Proxy::start(&basic_config(""), jira.addr).await;
    (jira, proxy)
}

/// Reads from `s` until `done` says the bytes so far are enough (or 5 s pass).
async fn read_until(s: &mut TcpStream, done: impl Fn(&str) -> bool) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !done(&String::from_utf8_lossy(&out)) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True when the peer has closed `s` (within 3 s).
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (jira, proxy) = setup().await;
    let auth = basic("alice", "alice-pw");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let one = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n");
    let both = format!("{}{}", one("/first"), one("/second"));
    s.write_all(both.as_bytes()).await.unwrap();
    let answers = read_until(&mut s, |t| {
        t.matches("HTTP/1.1 200 OK").count() == 2 && t.ends_with('}')
    })
    .await;
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 2, "{answers}");
    assert_eq!(jira.count(), 2);
    assert_eq!(jira.last().target, "/second");
    assert!(answers.to_ascii_lowercase().contains("\r\ndate: "), "{answers}");
    // Still open for a third.
    s.write_all(one("/third").as_bytes()).await.unwrap();
    let third = read_until(&mut s, |t| t.contains("200 OK")).await;
    assert!(third.starts_with("HTTP/1.1 200"), "{third}");
}

#[tokio::test]
async fn a_chunked_upload_waits_for_100_continue_and_reaches_jira_whole() {
    let (jira, proxy) = setup().await;
    let auth = basic("alice", "alice-pw");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "PUT /rest/api/2/issue/X-1 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let interim = read_until(&mut s, |t| t.ends_with("\r\n\r\n")).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n", "the body is asked for");
    assert_eq!(jira.count(), 0);
    for piece in ["5;ext=1\r\nhello\r\n", "7\r\n, world\r\n", "0\r\nX-T: 1\r\n\r\n"] {
        s.write_all(piece.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = read_until(&mut s, |t| t.contains("200 OK") && t.ends_with('}')).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = jira.last();
    assert_eq!((seen.method.as_str(), seen.body_len), ("PUT", 12));
    assert_eq!(seen.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_length_delimited_body_arriving_slowly_is_forwarded_and_the_connection_kept() {
    let (jira, proxy) = setup().await;
    let auth = basic("alice", "alice-pw");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let body = "x".repeat(100_000);
    let head = format!(
        "POST /rest/api/2/issue HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for part in body.as_bytes().chunks(30_000) {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = read_until(&mut s, |t| t.contains("201 Created") && t.ends_with('}')).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert_eq!(jira.last().body_len, 100_000);
    s.write_all(format!("GET /again HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(
        read_until(&mut s, |t| t.contains("200 OK"))
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(jira.last().target, "/again");
}

#[tokio::test]
async fn a_refusal_before_an_unread_body_is_answered_then_the_connection_closes() {
    let (jira, proxy) = setup().await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: 1000000\r\n\r\n",
        basic("alice", "wrong")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[b'a'; 10_000]).await.unwrap();
    let answer = read_until(&mut s, |t| t.ends_with('}')).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("\r\nwww-authenticate: basic"),
        "{answer}"
    );
    assert!(closed(&mut s).await, "the rest of the body is not read as a request");
    assert_eq!(jira.count(), 0);
}

#[tokio::test]
async fn http_1_0_keeps_the_connection_only_when_asked() {
    let (_jira, proxy) = setup().await;
    let auth = basic("alice", "alice-pw");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!("GET /x HTTP/1.0\r\nAuthorization: {auth}\r\nConnection: keep-alive\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let answer = read_until(&mut s, |t| t.ends_with('}')).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nconnection: keep-alive\r\n"),
        "{answer}"
    );
    let req = format!("GET /x HTTP/1.0\r\nAuthorization: {auth}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let answer = read_until(&mut s, |t| t.ends_with('}')).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
    assert!(closed(&mut s).await);
}

#[tokio::test]
async fn a_head_answer_has_no_body_and_the_next_request_follows() {
    let (_jira, proxy) = setup().await;
    let auth = basic("alice", "alice-pw");
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "HEAD /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let answers = read_until(&mut s, |t| t.matches("HTTP/1.1 200").count() == 2 && t.ends_with('}')).await;
    let (head, get) = answers.split_at(answers.rfind("HTTP/1.1 200").unwrap());
    assert!(head.ends_with("\r\n\r\n"), "no body after the HEAD answer: {head}");
    assert!(get.ends_with('}'), "{get}");
}

#[tokio::test]
async fn http2_by_prior_knowledge_is_served_on_the_same_port() {
    let (jira, proxy) = setup().await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/rest/api/2/myself", proxy.addr))
        .header("authorization", basic("alice", "alice-pw"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let _ = resp.into_body().collect().await.unwrap();
    assert_eq!(jira.last().user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn an_idle_connection_closes_at_shutdown_without_waiting_for_the_grace_period() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    let text = basic_config("").replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nshutdown_grace = \"30s\"",
    );
    let proxy = Proxy::start(&text, jira.addr).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET /x HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\r\n",
        basic("alice", "alice-pw")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    assert!(
        read_until(&mut s, |t| t.ends_with('}'))
            .await
            .starts_with("HTTP/1.1 200")
    );
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), proxy.running.shutdown())
        .await
        .expect("shutdown does not wait out the grace period for an idle connection");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(closed(&mut s).await);
}
