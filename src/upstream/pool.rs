//! Kept-alive HTTP/1.1 connections to one origin (Jira, or an identity provider), plain or
//! rustls TLS, one idle list per listener thread: a request checks out the connection
//! its own thread used last, and the connection comes back when the answer's body has
//! been read to its end. No channel, timer or task stands between a request and its
//! connection (each connection has one task: hyper's, driving it).
//!
//! A reused connection that Jira closed while it sat idle refuses the request before a
//! byte is written; the request then goes on the next idle connection, or a new one. Idle
//! connections older than the idle timeout are closed by a sweep on their thread.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, Uri};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use crate::error::Body;

/// Where the connections go.
#[derive(Clone)]
pub struct Origin {
    /// Host name or IP address, without IPv6 brackets.
    host: String,
    port: u16,
    /// For https: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Origin {
    /// The origin of an `http` or `https` URI; `tls` is used for https.
    pub fn of(uri: &Uri, tls: &Arc<rustls::ClientConfig>) -> Result<Origin, String> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{uri}: not an http or https URL")),
        };
        let authority = uri.authority().ok_or_else(|| format!("{uri}: no host"))?;
        Origin::new(https, authority, tls).map_err(|e| format!("{uri}: {e}"))
    }

    /// The origin at `authority`, over TLS with `tls` when `https`.
    pub fn new(https: bool, authority: &Authority, tls: &Arc<rustls::ClientConfig>) -> Result<Origin, String> {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone()).map_err(|e| e.to_string())?;
            Some((TlsConnector::from(Arc::clone(tls)), name))
        } else {
            None
        };
        Ok(Origin { host, port, tls })
    }

    /// Host name or IP address (without IPv6 brackets) and port.
    pub fn addr(&self) -> (&str, u16) {
        (&self.host, self.port)
    }
}

/// The pool's knobs (`upstream.connect_timeout`, `pool_idle_timeout`, `pool_max_idle`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// Most idle connections kept per listener thread (0: none are kept).
    pub max_idle: usize,
}

pub struct Pool {
    origin: Origin,
    limits: Limits,
    shards: Box<[Arc<Shard>]>,
}

/// One listener thread's idle connections, newest last.
struct Shard {
    limits: Limits,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    conns: Vec<(SendRequest<Body>, Instant)>,
    /// A sweep task runs for this shard.
    swept: bool,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        // Every mutation is a push, a remove or a retain: a poisoned list is still whole.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closed by Jira, or idle for the idle timeout: not to be used again.
    fn stale(&self, conn: &SendRequest<Body>, since: Instant, now: Instant) -> bool {
        conn.is_closed() || now.saturating_duration_since(since) >= self.limits.idle_timeout
    }

    /// The newest idle connection ready for a request; closed and expired ones are
    /// dropped on the way, and one still finishing its last answer is left in place.
    fn checkout(&self) -> Option<SendRequest<Body>> {
        let now = Instant::now();
        let mut idle = self.lock();
        let mut i = idle.conns.len();
        while i > 0 {
            i -= 1;
            let (conn, since) = &idle.conns[i];
            if self.stale(conn, *since, now) {
                idle.conns.remove(i);
            } else if conn.is_ready() {
                return Some(idle.conns.remove(i).0);
            }
        }
        None
    }

    fn checkin(&self, conn: SendRequest<Body>) {
        if conn.is_closed() || self.limits.max_idle == 0 {
            return;
        }
        let mut idle = self.lock();
        if idle.conns.len() >= self.limits.max_idle {
            // The oldest goes: it is the first to expire.
            idle.conns.remove(0);
        }
        idle.conns.push((conn, Instant::now()));
    }

    /// Starts this shard's sweep on the calling thread's runtime, once.
    fn start_sweep(self: &Arc<Self>) {
        if self.limits.max_idle == 0 {
            return;
        }
        {
            let mut idle = self.lock();
            if idle.swept {
                return;
            }
            idle.swept = true;
        }
        let every = (self.limits.idle_timeout / 2).max(Duration::from_millis(100));
        tokio::spawn(sweep(Arc::downgrade(self), every));
    }
}

/// Closes idle connections past the idle timeout until the pool is gone.
async fn sweep(shard: Weak<Shard>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shard) = shard.upgrade() else { return };
        let now = Instant::now();
        let mut idle = shard.lock();
        idle.conns.retain(|(conn, since)| !shard.stale(conn, *since, now));
    }
}

impl Pool {
    /// A pool with one idle list per listener thread (`shards`, at least one).
    pub fn new(origin: Origin, limits: Limits, shards: usize) -> Pool {
        let shards = (0..shards.max(1))
            .map(|_| {
                Arc::new(Shard {
                    limits,
                    idle: Mutex::default(),
                })
            })
            .collect();
        Pool { origin, limits, shards }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Sends `req` (its URI in origin form, its `Host` set) and returns the answer's head;
    /// the connection goes back to the pool when the body has been read to its end.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Pooled>, String> {
        let shard = &self.shards[crate::server::worker_index() % self.shards.len()];
        while let Some(mut conn) = shard.checkout() {
            match conn.try_send_request(req).await {
                Ok(resp) => return Ok(Pooled::wrap(resp, conn, shard)),
                Err(mut e) => match e.take_message() {
                    // Closed before the request was written: the next connection.
                    Some(again) => req = again,
                    None => return Err(describe(&e.into_error())),
                },
            }
        }
        // Boxed: a TLS handshake's state is ~2.4 KiB, and unboxed every request's future
        // would carry (and copy) that room though few requests open a connection.
        let mut conn = Box::pin(self.connect()).await?;
        shard.start_sweep();
        let resp = conn.send_request(req).await.map_err(|e| describe(&e))?;
        Ok(Pooled::wrap(resp, conn, shard))
    }

    async fn connect(&self) -> Result<SendRequest<Body>, String> {
        let o = &self.origin;
        let tcp = tokio::time::timeout(self.limits.connect_timeout, tokio::net::TcpStream::connect(o.addr()))
            .await
            .map_err(|_| {
                format!(
                    "connecting to {}:{}: no answer within {:?}",
                    o.host, o.port, self.limits.connect_timeout
                )
            })?
            .map_err(|e| format!("connecting to {}:{}: {e}", o.host, o.port))?;
        // Requests are written whole; waiting for more would only add latency.
        let _ = tcp.set_nodelay(true);
        match &o.tls {
            None => handshake(tcp).await,
            Some((tls, name)) => {
                let stream = tokio::time::timeout(self.limits.connect_timeout, tls.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| {
                        format!(
                            "TLS with {}: no handshake within {:?}",
                            o.host, self.limits.connect_timeout
                        )
                    })?
                    .map_err(|e| format!("TLS with {}: {e}", o.host))?;
                handshake(stream).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Body>, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn, driver) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(error = %describe(&e), "upstream connection ended");
        }
    });
    Ok(conn)
}

/// A short, secret-free description of a client error, with its causes.
fn describe(e: &hyper::Error) -> String {
    use std::error::Error;
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// An answer's body; read to its end, it gives its connection back to the pool.
pub struct Pooled {
    body: Incoming,
    back: Option<(SendRequest<Body>, Arc<Shard>)>,
}

impl Pooled {
    fn wrap(resp: Response<Incoming>, conn: SendRequest<Body>, shard: &Arc<Shard>) -> Response<Pooled> {
        resp.map(|body| Pooled {
            body,
            back: Some((conn, Arc::clone(shard))),
        })
    }

    fn give_back(&mut self) {
        if let Some((conn, shard)) = self.back.take() {
            shard.checkin(conn);
        }
    }
}

impl hyper::body::Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.give_back(),
            // A broken body leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // A body dropped part-read leaves bytes on the wire: that connection closes.
        if hyper::body::Body::is_end_stream(&self.body) {
            self.give_back();
        }
    }
}
