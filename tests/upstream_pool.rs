//! The proxy's kept-alive connections to Jira, seen from a Jira that counts the
//! connections it accepts and the ones the proxy closes: reuse across requests and body
//! kinds, Jira closing (with and without `Connection: close`), the idle timeout, the idle
//! bound, and an answer the caller stopped reading.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A Jira stand-in speaking HTTP/1.1 by hand. By path:
/// `/length` a Content-Length body; `/chunked` a chunked one; `/empty` a 204;
/// `/close` `Connection: close`, then it closes; `/vanish` a kept-alive answer, then it
/// closes without a word (as Jira does when its keep-alive timeout fires);
/// `/slow` answers after 300 ms; `/big` 16 MiB.
struct CountingJira {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections the proxy closed (Jira read end-of-stream between requests).
    closed_by_proxy: Arc<AtomicUsize>,
}

impl CountingJira {
    async fn start() -> CountingJira {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_proxy = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed_by_proxy.clone());
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(s, c.clone()));
            }
        });
        CountingJira {
            addr,
            accepted,
            closed_by_proxy,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn wait_closed(&self, n: usize) -> usize {
        for _ in 0..100 {
            if self.closed_by_proxy.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closed_by_proxy.load(Ordering::SeqCst)
    }
}

async fn serve(mut s: TcpStream, closed_by_proxy: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                break head;
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    if buf.is_empty() {
                        closed_by_proxy.fetch_add(1, Ordering::SeqCst);
                    }
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut line = head.split_whitespace();
        let method = line.next().unwrap_or("").to_owned();
        let path = line.next().unwrap_or("").to_owned();
        let body = |b: &str| {
            let payload = if method == "HEAD" { "" } else { b };
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
                b.len()
            )
        };
        let answer = match path.as_str() {
            "/length" => body("{\"ok\":1}"),
            "/chunked" => {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".into()
            }
            "/empty" => "HTTP/1.1 204 No Content\r\n\r\n".into(),
            "/close" => "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok".into(),
            "/vanish" => body("{\"bye\":1}"),
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                body("{\"slow\":1}")
            }
            "/big" => {
                let n = 16 << 20;
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
                if s.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                for _ in 0..(n / chunk.len()) {
                    if s.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        };
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if path == "/close" || path == "/vanish" {
            return;
        }
    }
}

fn config(upstream_extra: &str) -> String {
    basic_config("")
        .replacen("[server]\n", "[server]\nworkers = 1\n", 1)
        .replacen("[upstream]\n", &format!("[upstream]\n{upstream_extra}\n"), 1)
}

async fn get_as_alice(proxy: &Proxy, method: &str, path: &str) -> Resp {
    send(
        method,
        &proxy.url(path),
        &[("authorization", &basic("alice", "alice-pw"))],
        bytes::Bytes::new(),
    )
    .await
}

#[tokio::test]
async fn sequential_requests_of_every_body_kind_share_one_jira_connection() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    for _ in 0..3 {
        let r = get_as_alice(&proxy, "GET", "/length").await;
        assert_eq!((r.status, &r.body[..]), (200, &b"{\"ok\":1}"[..]));
        let r = get_as_alice(&proxy, "GET", "/chunked").await;
        assert_eq!((r.status, &r.body[..]), (200, &b"hello world"[..]));
        let r = get_as_alice(&proxy, "GET", "/empty").await;
        assert_eq!(r.status, 204);
        let r = get_as_alice(&proxy, "HEAD", "/length").await;
        assert_eq!((r.status, r.header("content-length")), (200, Some("8")));
    }
    assert_eq!(jira.accepted(), 1, "twelve answers, one connection");
}

#[tokio::test]
async fn a_connection_jira_closed_is_never_used_again() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    for round in 1..=3 {
        assert_eq!(get_as_alice(&proxy, "GET", "/close").await.status, 200);
        let r = get_as_alice(&proxy, "GET", "/vanish").await;
        assert_eq!(r.status, 200);
        // Straight after Jira hung up, without waiting for the proxy to notice.
        let r = get_as_alice(&proxy, "GET", "/length").await;
        assert_eq!(r.status, 200, "round {round}: {:?}", r.body);
    }
    // Per round: `/close` on the connection kept from before (a new one the first time),
    // `/vanish` on a new one, `/length` on a new one, kept for the next round.
    assert_eq!(jira.accepted(), 7, "a new connection after each close");
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config("pool_idle_timeout = \"300ms\""), jira.addr).await;
    assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    assert_eq!(jira.wait_closed(1).await, 1, "the proxy closed the idle connection");
    assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    assert_eq!(jira.accepted(), 2);
}

#[tokio::test]
async fn no_more_idle_connections_are_kept_than_pool_max_idle() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config("pool_max_idle = 1"), jira.addr).await;
    let (url, auth) = (proxy.url("/slow"), basic("alice", "alice-pw"));
    let at_once: Vec<_> = (0..3)
        .map(|_| {
            let (url, auth) = (url.clone(), auth.clone());
            tokio::spawn(async move { get(&url, &[("authorization", &auth)]).await })
        })
        .collect();
    for r in at_once {
        assert_eq!(r.await.unwrap().status, 200);
    }
    assert_eq!(jira.accepted(), 3, "three at once need three connections");
    assert_eq!(jira.wait_closed(2).await, 2, "two of them were closed, one kept");
    for _ in 0..3 {
        assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    }
    assert_eq!(jira.accepted(), 3, "the kept one serves what follows");
}

#[tokio::test]
async fn pool_max_idle_zero_opens_a_connection_per_request() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config("pool_max_idle = 0"), jira.addr).await;
    for _ in 0..3 {
        assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    }
    assert_eq!(jira.accepted(), 3);
    assert_eq!(jira.wait_closed(3).await, 3);
}

#[tokio::test]
async fn an_answer_the_caller_stopped_reading_does_not_go_back_to_the_pool() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let req = format!(
        "GET /big HTTP/1.1\r\nHost: jira\r\nAuthorization: {}\r\n\r\n",
        basic("alice", "alice-pw")
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let n = s.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&first[..n])
    );
    drop(s);
    // The rest of that body is still on the first connection: the next request needs another.
    let r = get_as_alice(&proxy, "GET", "/length").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"ok\":1}"[..]));
    assert_eq!(jira.accepted(), 2);
}
