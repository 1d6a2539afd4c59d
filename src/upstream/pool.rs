//! Kept-alive HTTP/1.1 connections to one origin (Jira, or an identity provider), plain or
//! rustls TLS, one idle list per listener thread: a request checks out the connection
//! its own thread used last, runs its exchange on it inline (`h1`), and the connection
//! comes back when the answer's body has been read to its end. No channel, timer or task
//! stands between a request and its connection.
//!
//! An idle connection Jira closed is seen at checkout, before a byte is written, and
//! dropped; the request goes on the next idle connection, or a new one. When Jira closes
//! a reused connection under a request without answering a byte, a request that is
//! idempotent (RFC 9110 §9.2.2) and held whole in memory goes again on a fresh
//! connection. Idle connections older than the idle timeout are closed by a sweep on
//! their thread.

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::uri::Authority;
use http::{Method, Request, Response, Uri};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

pub use super::h1::Pooled;
use super::h1::{self, Conn, Failure, Fields, Outgoing, Stream};
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

/// One listener thread's idle connections, newest last. Aligned as
/// [`crate::server::ThreadOwned`], so that with its reference counts (taken per request)
/// it shares no cache line with another thread's shard.
#[repr(align(128))]
pub struct Shard {
    limits: Limits,
    idle: Mutex<Idle>,
}

/// Why a request to Jira got no answer.
#[derive(Debug)]
pub enum SendError {
    /// None by the deadline.
    Timeout,
    /// Jira could not be reached, or its answer was broken.
    Failed(String),
}

impl SendError {
    pub fn message(self) -> String {
        match self {
            SendError::Timeout => h1::NO_ANSWER_IN_TIME.into(),
            SendError::Failed(m) => m,
        }
    }
}

impl From<String> for SendError {
    fn from(m: String) -> SendError {
        SendError::Failed(m)
    }
}

/// `f`, given up at `deadline` when there is one.
async fn by<T>(deadline: Option<tokio::time::Instant>, f: impl Future<Output = T>) -> Result<T, SendError> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, f).await.map_err(|_| SendError::Timeout),
        None => Ok(f.await),
    }
}

#[derive(Default)]
struct Idle {
    /// Oldest first; each idle since its `Conn::used`.
    conns: Vec<Conn>,
    /// A sweep task runs for this shard.
    swept: bool,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Idle> {
        // Every mutation is a push, a remove or a retain: a poisoned list is still whole.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closed by Jira, or idle for the idle timeout: not to be used again.
    fn stale(&self, conn: &mut Conn, now: Instant) -> bool {
        now.saturating_duration_since(conn.used) >= self.limits.idle_timeout || conn.closed_while_idle()
    }

    /// The newest idle connection still open; closed and expired ones are dropped on the way.
    /// `now` is the request's reading of the clock; it becomes the connection's last use.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.lock();
        while let Some(mut conn) = idle.conns.pop() {
            if !self.stale(&mut conn, now) {
                conn.used = now;
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn checkin(&self, conn: Conn) {
        if self.limits.max_idle == 0 {
            return;
        }
        let mut idle = self.lock();
        if idle.conns.len() >= self.limits.max_idle {
            // The one checked in first goes: nearly always the first to expire.
            idle.conns.remove(0);
        }
        // Counted idle from when its request was sent, not from the answer's end: no
        // clock is read per request here, and a connection expires early, never late (one
        // whose answer took longer than the idle timeout is not used again).
        idle.conns.push(conn);
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

/// Closes idle connections past the idle timeout, or closed by Jira, until the pool is gone.
async fn sweep(shard: Weak<Shard>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(shard) = shard.upgrade() else { return };
        let now = Instant::now();
        let mut idle = shard.lock();
        idle.conns.retain_mut(|conn| !shard.stale(conn, now));
    }
}

/// Methods a proxy may send again when a connection fails under them (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS | Method::TRACE
    )
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
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Pooled>, String> {
        let (parts, body) = req.into_parts();
        self.send_with(&parts, body, &Fields::new(), Instant::now(), None)
            .await
            .map_err(SendError::message)
    }

    /// As [`Pool::send`], with the header fields of `set` written after the request's own,
    /// each replacing the request's fields of its name (see [`h1::Field`]); `now` is the
    /// caller's reading of the clock. With a `deadline`, the answer's head must have come
    /// by then ([`SendError::Timeout`]).
    pub async fn send_with(
        &self,
        parts: &http::request::Parts,
        body: Body,
        set: &Fields<'_>,
        now: Instant,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Response<Pooled>, SendError> {
        let shard = &self.shards[crate::server::worker_index() % self.shards.len()];
        // A short body is read before a connection is taken, perhaps slowly: the clock
        // is read again after it, so no idle connection is judged by an old reading.
        let gathers = !hyper::body::Body::is_end_stream(&body);
        let mut out = if gathers {
            // Boxed: only requests with a body carry this wait's state.
            Box::pin(by(deadline, Outgoing::encode(parts, body, set))).await??
        } else {
            Outgoing::encode(parts, body, set).await?
        };
        let now = if gathers { Instant::now() } else { now };
        loop {
            let mut conn = match shard.checkout(now) {
                Some(conn) => conn,
                None => {
                    // Boxed: a TLS handshake's state is ~2.4 KiB, and unboxed every
                    // request's future would carry (and copy) that room though few
                    // requests open a connection.
                    let conn = Box::pin(by(deadline, self.connect())).await??;
                    shard.start_sweep();
                    conn
                }
            };
            let again = conn.reused && out.replayable() && idempotent(&out.method);
            let exchanged = match deadline {
                Some(deadline) => h1::exchange_by(&mut conn, &mut out, deadline).await,
                None => h1::exchange(&mut conn, &mut out).await,
            };
            match exchanged {
                Ok(head) => return Ok(head.into_response(conn, Arc::clone(shard))),
                // Jira's keep-alive ended under the request: it goes on another connection.
                Err(Failure::ClosedEarly(_)) if again => continue,
                Err(Failure::TimedOut) => return Err(SendError::Timeout),
                Err(f) => return Err(SendError::Failed(f.message())),
            }
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
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
            None => Ok(Conn::new(Stream::Tcp(tcp))),
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
                Ok(Conn::new(Stream::Tls(Box::new(stream))))
            }
        }
    }
}
