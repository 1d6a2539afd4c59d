//! The proxy's kept-alive connections to Jira, seen from a Jira that counts the
//! connections it accepts and the ones the proxy closes: reuse across requests and body
//! kinds, Jira closing (with and without `Connection: close`), the idle timeout, the idle
//! bound, and an answer the caller stopped reading; and the HTTP/1.1 both ways on those
//! connections: request bodies framed by the proxy, interim answers, trailers, answers
//! read to the connection's end, answers framed two ways, and a request Jira drops.
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
/// `/slow` answers after 300 ms; `/big` 16 MiB; `/echo` the request's body;
/// `/continue` a `100 Continue` before the answer; `/trailers` a chunked body with a chunk
/// extension and a trailer field; `/unframed` a body without length, to the connection's
/// end; `/two-ways` `Content-Length` beside `Transfer-Encoding`; `/flaky` an answer on a
/// new connection, but on one that served before it reads the request and closes without
/// a word (Jira's keep-alive ending under a request); `/dribble` a chunked answer written
/// a byte at a time.
/// Every request Jira read whole: its head, and its body unframed.
type Seen = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

struct CountingJira {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections the proxy closed (Jira read end-of-stream between requests).
    closed_by_proxy: Arc<AtomicUsize>,
    seen: Seen,
}

impl CountingJira {
    async fn start() -> CountingJira {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_proxy = Arc::new(AtomicUsize::new(0));
        let seen = Arc::default();
        let (a, c, r) = (accepted.clone(), closed_by_proxy.clone(), Arc::clone(&seen));
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                // Small writes go out as they are (`/dribble`).
                s.set_nodelay(true).unwrap();
                tokio::spawn(serve(s, c.clone(), Arc::clone(&r)));
            }
        });
        CountingJira {
            addr,
            accepted,
            closed_by_proxy,
            seen,
        }
    }

    fn seen(&self) -> Vec<(String, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
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

/// Reads more of the connection onto `buf`; false at its end.
async fn more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The request body after `head`, unframed (Content-Length or chunked), taken off `buf`.
async fn read_body(s: &mut TcpStream, buf: &mut Vec<u8>, head: &str) -> Option<Vec<u8>> {
    let lower = head.to_ascii_lowercase();
    if lower.contains("\r\ntransfer-encoding: chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                if !more(s, buf).await {
                    return None;
                }
            };
            let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).ok()?;
            while buf.len() < line_end + 2 + size + 2 {
                if !more(s, buf).await {
                    return None;
                }
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Some(body);
            }
        }
    }
    let n = lower
        .split("\r\n")
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < n {
        if !more(s, buf).await {
            return None;
        }
    }
    Some(buf.drain(..n).collect())
}

async fn serve(mut s: TcpStream, closed_by_proxy: Arc<AtomicUsize>, seen: Seen) {
    let mut buf = Vec::new();
    let mut served = 0;
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
        let Some(received) = read_body(&mut s, &mut buf, &format!("{head}\r\n")).await else {
            return;
        };
        seen.lock().unwrap().push((head.clone(), received.clone()));
        let mut line = head.split_whitespace();
        let method = line.next().unwrap_or("").to_owned();
        let path = line.next().unwrap_or("").to_owned();
        served += 1;
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
            p if p.starts_with("/slow/") => {
                let ms = p["/slow/".len()..].parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
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
            "/echo" => {
                let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", received.len()).into_bytes();
                a.extend_from_slice(&received);
                if s.write_all(&a).await.is_err() {
                    return;
                }
                continue;
            }
            "/continue" => format!("HTTP/1.1 100 Continue\r\n\r\n{}", body("{\"after\":100}")),
            "/trailers" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n".into(),
            "/unframed" => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nto the end".into(),
            "/two-ways" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno".into(),
            "/dribble" => {
                // Head, chunk sizes, data, CRLFs and trailers split at every byte.
                let answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";
                for b in answer.as_bytes() {
                    if s.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                continue;
            }
            "/flaky" if served > 1 => return,
            "/flaky" => body("{\"flaky\":1}"),
            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
        };
        if s.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if path == "/close" || path == "/vanish" || path == "/unframed" || path == "/two-ways" {
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
async fn each_request_on_a_kept_connection_gets_its_own_response_timeout() {
    let jira = CountingJira::start().await;
    let text = config("").replace("response_timeout = \"2s\"", "response_timeout = \"400ms\"");
    let proxy = Proxy::start(&text, jira.addr).await;
    assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // On the same connection, 200 ms later: the first request's deadline passes while
    // Jira is still answering this one, whose own deadline has not.
    let r = get_as_alice(&proxy, "GET", "/slow/300").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"slow\":1}"[..]));
    // Slower than the timeout: a 504 at this request's deadline, not Jira's answer.
    let started = std::time::Instant::now();
    let r = get_as_alice(&proxy, "GET", "/slow/3000").await;
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    // The connection left mid-answer is not used again.
    assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    assert_eq!(jira.accepted(), 2, "one connection until the timeout, then a new one");
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

#[tokio::test]
async fn request_bodies_reach_jira_framed_by_the_proxy() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let auth = basic("alice", "alice-pw");
    // Gathered and written with the head; streamed after it; none at all.
    for n in [5usize, 200_000, 0] {
        let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let r = send(
            "POST",
            &proxy.url("/echo"),
            &[("authorization", &auth)],
            body.clone().into(),
        )
        .await;
        assert_eq!((r.status, r.body.len()), (200, n));
        assert!(r.body[..] == body[..], "{n} bytes came back as sent");
        let (head, _) = jira.seen().pop().unwrap();
        assert!(
            head.to_ascii_lowercase().contains(&format!("\r\ncontent-length: {n}")),
            "{head}"
        );
    }
    // A chunked upload goes on chunked, whatever the client wrote beside it.
    let raw_req = format!(
        "POST /echo HTTP/1.1\r\nHost: jira\r\nAuthorization: {auth}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    );
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(raw_req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"hello world") {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    let (head, body) = jira.seen().pop().unwrap();
    assert_eq!(body, b"hello world");
    assert!(
        head.to_ascii_lowercase().contains("\r\ntransfer-encoding: chunked"),
        "{head}"
    );
    assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
    assert_eq!(jira.accepted(), 1, "every body kind on one kept-alive connection");
}

#[tokio::test]
async fn interim_answers_trailers_and_answers_to_the_connections_end_are_read_whole() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let r = get_as_alice(&proxy, "GET", "/continue").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"after\":100}"[..]));
    let r = get_as_alice(&proxy, "GET", "/trailers").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"hello"[..]));
    assert_eq!(r.header("x-trailer"), None);
    assert_eq!(jira.accepted(), 1, "both answers ended where their framing said");
    let r = get_as_alice(&proxy, "GET", "/unframed").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"to the end"[..]));
    let r = get_as_alice(&proxy, "GET", "/length").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        jira.accepted(),
        2,
        "an answer read to the connection's end leaves no connection to reuse"
    );
}

#[tokio::test]
async fn an_answer_arriving_a_byte_at_a_time_is_read_whole_and_its_connection_kept() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    for _ in 0..2 {
        let r = get_as_alice(&proxy, "GET", "/dribble").await;
        assert_eq!((r.status, &r.body[..]), (200, &b"abc0123456789abcdef"[..]));
        assert_eq!(r.header("content-type"), Some("text/plain"));
    }
    assert_eq!(jira.accepted(), 1);
}

#[tokio::test]
async fn an_answer_framed_two_ways_is_refused_and_its_connection_never_reused() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let r = get_as_alice(&proxy, "GET", "/two-ways").await;
    assert_eq!(r.status, 502);
    assert!(
        r.json()["errorMessages"][0].is_string(),
        "a Jira-shaped error: {:?}",
        r.body
    );
    // What followed the first framing would have been the next request's answer.
    let r = get_as_alice(&proxy, "GET", "/length").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"ok\":1}"[..]));
    assert_eq!(jira.accepted(), 2);
}

#[tokio::test]
async fn a_request_jira_drops_on_a_reused_connection_goes_again_only_when_idempotent() {
    let jira = CountingJira::start().await;
    let proxy = Proxy::start(&config(""), jira.addr).await;
    let flaky_posts = |jira: &CountingJira| jira.seen().iter().filter(|(h, _)| h.starts_with("POST /flaky")).count();
    assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    // Dropped on the reused connection, answered on a new one.
    let r = get_as_alice(&proxy, "GET", "/flaky").await;
    assert_eq!((r.status, &r.body[..]), (200, &b"{\"flaky\":1}"[..]));
    assert_eq!(jira.accepted(), 2);
    assert_eq!(get_as_alice(&proxy, "GET", "/length").await.status, 200);
    // A POST may have taken effect: it is not sent twice.
    let auth = basic("alice", "alice-pw");
    let r = send("POST", &proxy.url("/flaky"), &[("authorization", &auth)], "{}".into()).await;
    assert_eq!(r.status, 502);
    assert_eq!(flaky_posts(&jira), 1);
    assert_eq!(jira.accepted(), 2);
}
