//! Listeners: the proxy port (plain HTTP or rustls TLS; HTTP/1.1 and HTTP/2 on one
//! socket), the admin port (`/healthz`, `/readyz`), and graceful shutdown that stops
//! accepting, lets in-flight requests finish within `server.shutdown_grace`, then exits.

pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::{Body, full};
use crate::pipeline::{ConnInfo, handle};
use crate::runtime::Runtime;

/// A started proxy.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    runtime: Arc<Runtime>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Stops accepting, drains in-flight requests (bounded by the grace period), returns.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Waits until the listeners end (after a shutdown signal).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Starts a shutdown without waiting for it.
    pub fn trigger_shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

fn builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.server.header_read_timeout)
        .max_buf_size(cfg.server.max_header_bytes)
        .max_headers(cfg.server.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.server.max_header_bytes as u32)
        .max_concurrent_streams(128);
    b
}

/// Binds the listeners and starts serving. Errors say what could not be started.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    let runtime = Arc::new(Runtime::build(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?);
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let tls = match &cfg.server.tls {
        Some(files) => Some(tls::acceptor(files).map_err(|e| anyhow::anyhow!("server.tls: {e}"))?),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut admin_addr = None;
    if let Some(admin) = &cfg.admin {
        let l = TcpListener::bind(admin.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on admin {}: {e}", admin.listen))?;
        admin_addr = Some(l.local_addr()?);
        tasks.push(tokio::spawn(admin_loop(l, stop_rx.clone(), runtime.clone())));
    }
    let accept = AcceptLoop {
        listener,
        tls,
        builder: builder(&cfg),
        runtime: runtime.clone(),
        grace: cfg.server.shutdown_grace,
        handshake_timeout: cfg.server.header_read_timeout,
    };
    tasks.push(tokio::spawn(accept.run(stop_rx)));
    tracing::info!(%addr, tls = cfg.server.tls.is_some(), "listening");
    Ok(Running {
        addr,
        admin_addr,
        runtime,
        stop,
        tasks,
    })
}

struct AcceptLoop {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: auto::Builder<TokioExecutor>,
    runtime: Arc<Runtime>,
    grace: std::time::Duration,
    handshake_timeout: std::time::Duration,
}

impl AcceptLoop {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.changed() => break,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let watcher = graceful.watcher();
            let builder = self.builder.clone();
            let runtime = self.runtime.clone();
            let tls = self.tls.clone();
            let handshake_timeout = self.handshake_timeout;
            tokio::spawn(async move {
                let svc = move |tls_on: bool| {
                    let conn = ConnInfo { peer, tls: tls_on };
                    service_fn(move |req: Request<Incoming>| {
                        let rt = runtime.clone();
                        async move { Ok::<_, Infallible>(handle(rt, conn, req).await) }
                    })
                };
                match tls {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc(false));
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                    Some(acceptor) => {
                        let Ok(Ok(s)) = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await else {
                            return;
                        };
                        let conn = builder.serve_connection(TokioIo::new(s), svc(true));
                        let _ = watcher.watch(conn.into_owned()).await;
                    }
                }
            });
        }
        drop(self.listener);
        tracing::info!("shutting down: draining in-flight requests");
        if tokio::time::timeout(self.grace, graceful.shutdown()).await.is_err() {
            tracing::warn!(grace = ?self.grace, "grace period over; closing remaining connections");
        }
    }
}

async fn admin_loop(listener: TcpListener, mut stop: watch::Receiver<bool>, runtime: Arc<Runtime>) {
    loop {
        let stream = tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
        };
        let rt = runtime.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let rt = rt.clone();
                async move { Ok::<_, Infallible>(admin(&rt, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// `/healthz`: the process answers. `/readyz`: what requests depend on answers too (the
/// state store, within a second), else 503 naming what is not ready.
async fn admin(rt: &Runtime, req: Request<Incoming>) -> Response<Body> {
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => {
            let store = tokio::time::timeout(std::time::Duration::from_secs(1), rt.store.ping()).await;
            match store {
                Ok(Ok(())) => (StatusCode::OK, "ok\n".to_string()),
                Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
                Err(_) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: state store did not answer\n".to_string(),
                ),
            }
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
