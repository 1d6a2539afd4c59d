//! Listeners: the proxy port (plain HTTP or rustls TLS; HTTP/1.1 and HTTP/2 on one
//! socket), the admin port (`/healthz`, `/readyz`, `/metrics`), hot reload (a new
//! runtime swapped in atomically; requests in flight finish on the one they started
//! with; new connections get the new TLS certificate), and graceful shutdown that stops
//! accepting, lets in-flight requests finish within `server.shutdown_grace`, then exits.

mod h1;
mod resets;
mod silent;
pub use h1::Answer;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::{Body, BodyError, full};
use crate::pipeline::{ConnInfo, handle};
use crate::runtime::Runtime;

/// A started proxy.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    reloader: Arc<Reloader>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The runtime in force, and how to replace it.
pub struct Reloader {
    current: ArcSwap<Runtime>,
    /// Each listener thread's hold on `current` (see [`Reloader::held`]), one per thread
    /// started (a reload does not change them).
    holds: Box<[ThreadOwned<std::sync::Mutex<Option<Held>>>]>,
    /// The config file, when the proxy was started from one.
    path: Option<PathBuf>,
    /// Serialises reloads (a file change and a SIGHUP at once).
    busy: tokio::sync::Mutex<()>,
}

/// A request's hold on the runtime it runs on, cloned from its listener thread's own
/// hold: taking one writes a reference count only that thread writes. (Cloning the
/// runtime's `Arc` for each request would write one count from every listener thread,
/// and its cache line would move between their cores twice a request.)
#[derive(Clone)]
pub struct Held(Arc<Hold>);

/// A listener thread's hold on the runtime in force.
struct Hold(Arc<Runtime>);

impl Held {
    fn new(runtime: Arc<Runtime>) -> Held {
        Held(Arc::new(Hold(runtime)))
    }
}

impl std::ops::Deref for Held {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.0.0
    }
}

impl Reloader {
    /// The runtime new requests and connections use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// The runtime in force, for a request: on a listener thread, a clone of that thread's
    /// hold on it, renewed when the runtime has been replaced (a reload drops every
    /// thread's hold, so none keeps an old runtime past its requests).
    pub fn held(&self) -> Held {
        let Some(hold) = listener_thread().and_then(|i| self.holds.get(i)) else {
            return Held::new(self.current.load_full());
        };
        // Read under the hold's lock: a reload stores the new runtime before it clears the
        // holds, so a hold made after the clearing is of the new one.
        let mut hold = hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = self.current.load();
        match &*hold {
            Some(held) if Arc::ptr_eq(&held.0.0, &*current) => held.clone(),
            _ => {
                let held = Held::new(arc_swap::Guard::into_inner(current));
                *hold = Some(held.clone());
                held
            }
        }
    }

    /// Reads the config file again and swaps in a new runtime. A bad file changes nothing:
    /// every error is logged (and returned) and the old config keeps serving.
    pub async fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.busy.lock().await;
        let Some(path) = &self.path else {
            return Err("started without a config file".into());
        };
        let old = self.runtime();
        let built = Config::load(path).and_then(|cfg| {
            let rt = Runtime::build_with(&cfg, Some(&old))?;
            Ok((cfg, rt))
        });
        match built {
            Ok((cfg, rt)) => {
                if cfg.server.listen != old.server.listen {
                    tracing::warn!(
                        "server.listen changed to {}; the proxy keeps listening on {} until it is restarted",
                        cfg.server.listen,
                        old.server.listen
                    );
                }
                if cfg.server.workers != self.holds.len() {
                    tracing::warn!(
                        "server.workers is now {}; the proxy keeps its {} listener threads until it is restarted",
                        cfg.server.workers,
                        self.holds.len()
                    );
                }
                for w in &cfg.warnings {
                    tracing::warn!("{w}");
                }
                self.current.store(Arc::new(rt));
                for hold in &self.holds {
                    *hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                }
                old.metrics.reloaded(true);
                tracing::info!(config = %path.display(), "configuration reloaded");
                Ok(())
            }
            Err(errors) => {
                old.metrics.reloaded(false);
                for e in &errors.0 {
                    tracing::error!(path = %e.path, "{}", e.message);
                }
                tracing::error!(config = %path.display(), errors = errors.0.len(), "reload refused; the previous configuration keeps serving");
                Err(errors.to_string())
            }
        }
    }

    /// Files whose change should reload the config: the file itself and those it names.
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.path.iter().cloned().collect();
        files.extend(self.runtime().watched.iter().cloned());
        files
    }
}

/// What is not ready, in words (empty when all is).
async fn readiness(rt: &Runtime) -> Vec<String> {
    let second = std::time::Duration::from_secs(1);
    let mut problems = Vec::new();
    if let Err(e) = rt.upstream.reachable(second).await {
        problems.push(e);
    }
    match tokio::time::timeout(second, rt.store.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(e.to_string()),
        Err(_) => problems.push("state store did not answer".into()),
    }
    for j in &rt.jwt {
        match tokio::time::timeout(second, j.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(e),
            Err(_) => problems.push("signing keys: no answer".into()),
        }
    }
    problems
}

/// A file's identity for change detection: modification time and length.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<(std::time::SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

/// Reloads when the config file or a file it names changes (checked every `every`).
pub async fn watch_files(reloader: Arc<Reloader>, every: std::time::Duration) {
    let mut files = reloader.watched();
    let mut seen = fingerprint(&files);
    loop {
        tokio::time::sleep(every).await;
        let now = fingerprint(&files);
        if now != seen {
            tracing::info!("a watched file changed: reloading");
            let _ = reloader.reload().await;
            files = reloader.watched();
            seen = fingerprint(&files);
        }
    }
}

impl Running {
    /// The runtime in force now.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.reloader.runtime()
    }

    /// Reloads from the config file (see [`Reloader::reload`]).
    pub async fn reload(&self) -> Result<(), String> {
        self.reloader.reload().await
    }

    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Stops accepting, drains in-flight requests (bounded by the grace period), writes
    /// the audit lines still gathered, returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.wait().await;
    }

    /// Waits until the listeners end (after a shutdown signal), then writes the audit
    /// lines still gathered.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        self.reloader.runtime().audit.flush();
    }

    /// Starts a shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// How long an HTTP/2 connection shut down for rapid reset ([`resets`]) may finish the
/// streams it has open before it is closed.
const RAPID_RESET_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What a stream opened on a connection being shut down for rapid reset gets: a
/// Jira-shaped 503 (the GOAWAY already sent tells the client to use a new connection).
fn reset_flood_refusal() -> Response<Body> {
    crate::error::jira_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many cancelled streams on this connection; open a new one.",
    )
}

/// HTTP/2 (ALPN `h2`, or its preface on a plain connection) is served by hyper;
/// HTTP/1.1 by the listener's own server (`h1`).
fn http2(cfg: &Config) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_header_list_size(cfg.server.max_header_bytes as u32)
        .max_concurrent_streams(cfg.server.max_concurrent_streams)
        // An idle HTTP/2 connection is pinged and closed when the client stops answering.
        .keep_alive_interval(Some(cfg.server.idle_timeout))
        .keep_alive_timeout(cfg.server.header_read_timeout);
    b
}

/// Binds the listeners and starts serving. Errors say what could not be started.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    start_from(cfg, None).await
}

/// As [`start`], for a config read from `path`: reloads read that file again.
pub async fn start_from(cfg: Config, path: Option<PathBuf>) -> anyhow::Result<Running> {
    let runtime = Arc::new(Runtime::build(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
    let reloader = Arc::new(Reloader {
        current: ArcSwap::new(runtime.clone()),
        holds: (0..cfg.server.workers).map(|_| ThreadOwned::default()).collect(),
        path,
        busy: tokio::sync::Mutex::new(()),
    });
    let listeners = listening_sockets(cfg.server.listen, cfg.server.workers, cfg.server.reuse_port)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.server.listen))?;
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.server.max_connections));
    let addr = listeners
        .first()
        .map_or(Ok(cfg.server.listen), std::net::TcpListener::local_addr)?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut admin_addr = None;
    if let Some(admin) = &cfg.admin {
        let l = TcpListener::bind(admin.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on admin {}: {e}", admin.listen))?;
        admin_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(admin_loop(l, stop_rx.clone(), reloader.clone())));
    }
    // One listener thread per core, each with its own single-threaded event loop and its
    // own pool of Jira connections: a request is read, decided, forwarded and answered on
    // one thread, with no hand-off between threads (the way nginx's workers run). They
    // share one listening socket, so a thread free to accept takes the next connection
    // (a burst of them may all go to one thread, as with nginx), or with
    // `server.reuse_port` each has its own and the kernel deals connections out.
    for (worker, socket) in listeners.into_iter().enumerate() {
        let accept = AcceptLoop {
            slots: slots.clone(),
            http2: http2(&cfg),
            max_concurrent_streams: cfg.server.max_concurrent_streams,
            limits: h1::Limits {
                header_read_timeout: cfg.server.header_read_timeout,
                max_header_bytes: cfg.server.max_header_bytes,
                max_headers: cfg.server.max_headers,
            },
            reloader: reloader.clone(),
            grace: cfg.server.shutdown_grace,
            handshake_timeout: cfg.server.header_read_timeout,
        };
        let events = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("cannot start listener thread {worker}: {e}"))?;
        let stop_rx = stop_rx.clone();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("jap-listener-{worker}"))
            .spawn(move || {
                WORKER.with(|w| w.set(worker + 1));
                events.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => accept.run(listener, stop_rx).await,
                        Err(e) => tracing::error!(error = %e, worker, "listener thread cannot use the socket"),
                    }
                });
                // Dropping the event loop closes what is left on it (pooled Jira connections).
                drop(events);
                let _ = done.send(());
            })
            .map_err(|e| anyhow::anyhow!("cannot start listener thread {worker}: {e}"))?;
        tasks.push(tokio::spawn(async move {
            let _ = finished.await;
        }));
    }
    tasks.push(tokio::spawn(flush_audit(reloader.clone(), stop_rx.clone())));
    tracing::info!(%addr, tls = cfg.server.tls.is_some(), "listening");
    Ok(Running {
        addr,
        admin_addr,
        reloader,
        stop,
        tasks,
    })
}

/// The listening sockets of `n` listener threads on `addr`: one shared by all (each
/// thread's its own handle on it), or with `reuse_port` one each on the same port (port 0:
/// one port picked for all), among which the kernel deals new connections by their
/// addresses (SO_REUSEPORT). Either way an address something else already listens on is
/// refused, as a plain bind refuses it: the sockets of another process sharing its port
/// would otherwise be joined, and the connections split with it (an old instance left
/// running, say).
/// They are handed over unregistered, each to be taken up by its thread's event loop.
fn listening_sockets(addr: SocketAddr, n: usize, reuse_port: bool) -> std::io::Result<Vec<std::net::TcpListener>> {
    let n = n.max(1);
    if !reuse_port {
        let shared = listening_socket(addr, false)?;
        return (0..n).map(|_| shared.try_clone()).collect();
    }
    // The check is a bind without listening (nothing queues on it), which also picks the
    // port when `addr` has none; the group binds once it is gone.
    let check = socket_for(addr)?;
    check.bind(addr)?;
    let addr = check.local_addr()?;
    drop(check);
    (0..n).map(|_| listening_socket(addr, true)).collect()
}

/// An unbound TCP socket for `addr`'s family, with SO_REUSEADDR where the platform's
/// plain bind sets it (Unix: a restart may listen again while old connections linger).
fn socket_for(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

/// One of [`listening_sockets`].
fn listening_socket(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket_for(addr)?;
    if reuse_port {
        #[cfg(unix)]
        socket.set_reuseport(true)?;
        #[cfg(not(unix))]
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "server.reuse_port needs SO_REUSEPORT (Unix)",
        ));
    }
    socket.bind(addr)?;
    // Longer than `TcpListener::bind`'s 128 (nginx's default is 511): a burst of new
    // connections waits here rather than being refused.
    socket.listen(1024)?.into_std()
}

thread_local! {
    /// The listener thread's index plus one; 0 on any other thread.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The listener thread running the caller (0 on any other thread): it picks that
/// thread's own pool of Jira connections.
pub fn worker_index() -> usize {
    listener_thread().unwrap_or(0)
}

/// The listener thread running the caller, `None` on any other thread.
pub fn listener_thread() -> Option<usize> {
    WORKER.with(|w| w.get()).checked_sub(1)
}

/// A listener thread's own part of shared state (its counters, its audit buffer, its
/// pool of Jira connections), on cache lines no other part shares: a thread writing its
/// part never takes a line from the core another thread runs on. 128 bytes: the pair of
/// lines some cores fetch together.
#[derive(Default)]
#[repr(align(128))]
pub struct ThreadOwned<T>(pub T);

impl<T> std::ops::Deref for ThreadOwned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Makes the calling thread count as listener thread `i` (tests of per-thread state).
#[cfg(test)]
pub(crate) fn set_worker_index(i: usize) {
    WORKER.with(|w| w.set(i + 1));
}

struct AcceptLoop {
    /// One permit per open connection (`server.max_connections`).
    slots: Arc<tokio::sync::Semaphore>,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// `server.max_concurrent_streams`, which sets an HTTP/2 connection's budget of
    /// cancelled streams ([`resets`]).
    max_concurrent_streams: u32,
    limits: h1::Limits,
    reloader: Arc<Reloader>,
    grace: std::time::Duration,
    handshake_timeout: std::time::Duration,
}

impl AcceptLoop {
    async fn run(self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        // Every connection holds a receiver: a shutdown tells them all, and is over when
        // the last has gone.
        let (drain, _) = watch::channel(false);
        let this = Arc::new(self);
        // One wait for the stop, made once and polled again by every select below (a new
        // one per connection would join and leave the channel's waiters each time).
        let mut stopped = std::pin::pin!(stop.changed());
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = &mut stopped => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            // At the limit, this connection waits for one to close (the first of the
            // listener threads' waiting connections to get a slot is the first that
            // waited), and the next ones wait in the kernel's backlog. The slot is taken
            // after the accept: taken before, it would be held for this thread's socket
            // while connections the kernel dealt to another thread's socket waited.
            // Below the limit (nearly always) the slot is taken at once.
            let slot = match this.slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(tokio::sync::TryAcquireError::Closed) => break,
                Err(tokio::sync::TryAcquireError::NoPermits) => tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    p = this.slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                },
            };
            let stopping = drain.subscribe();
            let this = this.clone();
            // Boxed: the task moves what it runs each time its stage changes (started,
            // finished, cleared); a box moves as a pointer, the connection's state as
            // itself (several hundred bytes).
            tokio::spawn(Box::pin(async move {
                let _slot = slot;
                // The certificate in force when the connection arrives serves it to the end.
                let (metrics, tls) = {
                    let rt = this.reloader.runtime();
                    (rt.metrics.clone(), rt.tls.clone())
                };
                let _open = metrics.connection();
                match tls {
                    None => this.serve(stream, ConnInfo { peer, tls: false }, stopping).await,
                    // Boxed: a TLS connection's state is large, and a plain connection's
                    // task would otherwise keep room for it.
                    Some(acceptor) => {
                        // A plain connection's server turns Nagle's algorithm off when it
                        // first writes what more writes follow (`h1::Transport`); a TLS
                        // handshake takes several flights at once.
                        let _ = stream.set_nodelay(true);
                        Box::pin(this.serve_tls(acceptor, stream, peer, stopping)).await
                    }
                }
            }));
        }
        drop(listener);
        tracing::info!("shutting down: draining in-flight requests");
        drain.send_replace(true);
        if tokio::time::timeout(this.grace, drain.closed()).await.is_err() {
            tracing::warn!(grace = ?this.grace, "grace period over; closing remaining connections");
        }
    }

    /// TLS, then HTTP/2 when ALPN chose it, else HTTP/1.1.
    async fn serve_tls(
        &self,
        acceptor: tokio_rustls::TlsAcceptor,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        stopping: watch::Receiver<bool>,
    ) {
        let Ok(Ok(s)) = tokio::time::timeout(self.handshake_timeout, acceptor.accept(stream)).await else {
            return;
        };
        let info = ConnInfo { peer, tls: true };
        if s.get_ref().1.alpn_protocol() == Some(b"h2") {
            let io = silent::FirstByteDeadline::new(s, self.handshake_timeout);
            Box::pin(self.serve_http2(io, info, stopping)).await;
        } else {
            self.serve(s, info, stopping).await;
        }
    }

    /// HTTP/1.1, or HTTP/2 when the caller opens with its preface.
    async fn serve<S>(&self, io: S, info: ConnInfo, stopping: watch::Receiver<bool>)
    where
        S: h1::Transport + 'static,
    {
        let reloader = self.reloader.clone();
        let service: h1::Service = Box::new(move |req| {
            // Each request runs on the config in force when it arrived.
            let rt = reloader.held();
            Box::pin(handle(rt, info, req))
        });
        if let h1::Ended::Http2(io, first) = h1::serve(io, self.limits, service, stopping.clone()).await {
            // Boxed: an HTTP/2 connection's state is large, and every HTTP/1.1
            // connection's task would otherwise keep room for it.
            Box::pin(self.serve_http2(h1::Rewind::new(first, io), info, stopping)).await;
        }
    }

    async fn serve_http2<S>(&self, io: S, info: ConnInfo, mut stopping: watch::Receiver<bool>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let reloader = self.reloader.clone();
        let cancels = resets::Cancels::new(self.max_concurrent_streams);
        let tally = cancels.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            if tally.is_over() {
                // Shutting down for rapid reset: new streams are not served.
                let answer: std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>> =
                    Box::pin(std::future::ready(Ok(reset_flood_refusal())));
                return answer;
            }
            let rt = reloader.held();
            // Dropped before the answer (the client reset the stream), or answered after the
            // client cut its body off: counted.
            let mut stream = tally.stream();
            let req = if hyper::body::Body::is_end_stream(req.body()) {
                req.map(|b| http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(b, BodyError::from)))
            } else {
                req.map(|b| {
                    http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
                        stream.watch_body(b),
                        BodyError::from,
                    ))
                })
            };
            // Boxed: the connection keeps room for each stream's future.
            let answer: std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>> =
                Box::pin(async move {
                    // HTTP/2 carries every field in the map, in lower case.
                    let res = handle(rt, info, req).await.into_response();
                    stream.answered();
                    Ok::<_, Infallible>(res)
                });
            answer
        });
        let conn = self.http2.serve_connection(TokioIo::new(io), svc);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = cancels.exceeded() => {
                self.reloader.runtime().metrics.rapid_reset();
                tracing::warn!(
                    peer = %info.peer,
                    cancelled = cancels.owed(),
                    "HTTP/2 client cancelled more streams than it let be answered (rapid reset): connection shut down"
                );
                // GOAWAY: the client learns which streams were not served. What is still
                // open a second later is dropped with the connection.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(RAPID_RESET_GRACE, conn).await;
                return;
            }
            _ = stopping.changed() => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// Writes gathered audit lines every `audit.flush` (read again after each reload).
async fn flush_audit(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    loop {
        let every = reloader.runtime().audit.flush_every();
        // Without gathering there is nothing to write; look again after a reload might
        // have turned it on.
        let wait = every.unwrap_or(std::time::Duration::from_secs(1));
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        reloader.runtime().audit.flush();
    }
}

async fn admin_loop(listener: TcpListener, mut stop: watch::Receiver<bool>, reloader: Arc<Reloader>) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let rt = reloader.runtime();
                async move { Ok::<_, Infallible>(admin(&rt, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// `/healthz`: the process answers. `/readyz`: what requests depend on answers too —
/// Jira (a TCP connection), the state store, every JWT issuer's signing keys — each
/// within a second; else 503 naming what is not ready.
async fn admin(rt: &Runtime, req: Request<Incoming>) -> Response<Body> {
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => {
            let problems = readiness(rt).await;
            if problems.is_empty() {
                (StatusCode::OK, "ok\n".to_string())
            } else {
                let lines: String = problems.iter().map(|p| format!("not ready: {p}\n")).collect();
                (StatusCode::SERVICE_UNAVAILABLE, lines)
            }
        }
        "/metrics" => {
            let mut text = rt.metrics.render(&rt.cache_stats());
            if let Some(f) = rt.store.fullness() {
                crate::observe::metrics::Metrics::render_state(&mut text, &f);
            }
            let mut r = Response::new(full(text));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r
}

/// SIGTERM and SIGINT (Ctrl-C) listeners. Make it BEFORE starting the listeners: a signal
/// that arrives before its listener exists is either fatal (the default action) or lost
/// (tokio only tells listeners that exist when it arrives).
pub struct ShutdownSignal {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    pub fn new() -> std::io::Result<ShutdownSignal> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignal {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignal {})
        }
    }

    /// Resolves on the first SIGTERM or SIGINT.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => {},
                _ = self.int.recv() => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_thread_holds_the_runtime_until_a_reload_replaces_it() {
        let dir = std::env::temp_dir().join(format!("jap-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("proxy.toml");
        let text = |realm: &str| {
            format!(
                "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\nrealm = \"{realm}\"\n\
                 [upstream]\nurl = \"http://127.0.0.1:9\"\n"
            )
        };
        std::fs::write(&file, text("first")).expect("write the config");
        let cfg = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let first = Arc::new(Runtime::build(&cfg).unwrap_or_else(|e| panic!("{e}")));
        let reloader = Arc::new(Reloader {
            current: ArcSwap::new(first.clone()),
            holds: (0..2).map(|_| ThreadOwned::default()).collect(),
            path: Some(file.clone()),
            busy: tokio::sync::Mutex::new(()),
        });
        let on = |i: usize| {
            let reloader = reloader.clone();
            std::thread::spawn(move || {
                crate::server::set_worker_index(i);
                let (a, b) = (reloader.held(), reloader.held());
                assert!(Arc::ptr_eq(&a.0, &b.0), "one hold per thread");
                a.server.realm.clone()
            })
            .join()
            .expect("thread")
        };
        assert_eq!((on(0), on(1)), ("first".to_string(), "first".to_string()));
        let old = Arc::downgrade(&first);
        drop(first);
        assert!(old.upgrade().is_some(), "held by the threads");
        std::fs::write(&file, text("second")).expect("write the config");
        reloader.reload().await.expect("reload");
        // No thread keeps the replaced runtime, though neither has served a request since.
        assert!(old.upgrade().is_none(), "the replaced runtime is dropped");
        assert_eq!((on(0), on(1)), ("second".to_string(), "second".to_string()));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Connections accepted by each of `sockets` when `n` arrive at once.
    async fn dealt(sockets: Vec<std::net::TcpListener>, n: usize) -> Vec<usize> {
        let port = sockets[0].local_addr().expect("address").port();
        let sockets: Vec<TcpListener> = sockets
            .into_iter()
            .map(|s| TcpListener::from_std(s).expect("register"))
            .collect();
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect"),
            );
        }
        let mut accepted = vec![0usize; sockets.len()];
        for (i, s) in sockets.iter().enumerate() {
            while let Ok(Ok(_)) = tokio::time::timeout(std::time::Duration::from_millis(50), s.accept()).await {
                accepted[i] += 1;
            }
        }
        accepted
    }

    #[tokio::test]
    async fn with_reuse_port_each_thread_has_a_socket_and_the_kernel_deals_connections_to_each() {
        let sockets = listening_sockets("127.0.0.1:0".parse().expect("address"), 2, true).expect("listen");
        let port = sockets[0].local_addr().expect("address").port();
        assert!(sockets.iter().all(|s| s.local_addr().expect("address").port() == port));
        // 64 connections from distinct source ports: all on one of two sockets would be a
        // 1 in 2^63 chance with an even deal.
        let accepted = dealt(sockets, 64).await;
        assert_eq!(accepted.iter().sum::<usize>(), 64);
        assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    }

    #[tokio::test]
    async fn without_it_the_threads_share_one_socket_and_whoever_accepts_takes_the_next() {
        let sockets = listening_sockets("127.0.0.1:0".parse().expect("address"), 2, false).expect("listen");
        // One socket: the first handle to accept drains what is waiting.
        assert_eq!(dealt(sockets, 16).await, [16, 0]);
    }

    #[tokio::test]
    async fn an_address_already_listened_on_is_refused() {
        for reuse_port in [true, false] {
            let first = listening_sockets("127.0.0.1:0".parse().expect("address"), 2, true).expect("listen");
            let taken = first[0].local_addr().expect("address");
            let again = listening_sockets(taken, 2, reuse_port)
                .map(|_| ())
                .expect_err("a second group on a taken port");
            assert_eq!(again.kind(), std::io::ErrorKind::AddrInUse);
            // And by a plain listener (another program) as well.
            let other = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
            let err = listening_sockets(other.local_addr().expect("address"), 1, reuse_port)
                .map(|_| ())
                .expect_err("taken");
            assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        }
    }
}
