//! `StateStore` on Redis, for several replicas: every key under `key_prefix` and with a
//! TTL, and the operations correctness depends on done atomically in Redis (`SET NX PX`
//! for set-if-absent, `SET XX PX` for replace; a Lua script for counters, so a new counter
//! and its expiry appear together). Every call is bounded by the response timeout; a
//! failure is `StoreError::Unavailable`, which callers turn into a 503 (fail closed).
//!
//! The client is the proxy's own (RESP2 over TCP or rustls): one connection per listener
//! thread, whose commands are pipelined by one task per connection and answered in order,
//! so a session lookup costs one small write, one read and no reply tree. A connection
//! that fails or leaves a reply overdue is dropped and the next call opens a new one; for
//! a moment after a failed connect, calls fail at once instead of each waiting for the
//! connect timeout.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::{StateStore, StoreError, Throttle};
use crate::config::Secret;

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS), with optional user, password and database, or
    /// `unix:///path` for a Unix socket (see [`url_scheme`]); a secret, since it may hold
    /// the password.
    pub url: crate::config::Secret,
    pub key_prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// For `rediss://`: trust only these roots (PEM); default the system roots.
    pub ca_file: Option<std::path::PathBuf>,
}

pub struct RedisStore {
    settings: RedisSettings,
    target: Target,
    /// Connections: one per listener thread (slot 0 for every other thread).
    slots: Box<[SlotCell]>,
    incr: Script,
    throttle: Script,
}

/// GCRA (see `super::gcra`) on Redis's own clock, so every replica agrees. Returns
/// {allowed, remaining, retry_after_us}.
const THROTTLE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then return {0, 0, allow_at - now} end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), 0}";

/// Adds to a counter; a new counter gets the TTL, an existing one keeps its expiry.
const INCR_SCRIPT: &str = r"
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v";

/// TCP keep-alive on a connection to Redis (see [`keep_alive`]): the first probe after
/// this long idle, the next ones this far apart, and the connection given up after this
/// many go unanswered.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
// (The interval and the count, set where the system lets them be.)
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_vendor = "apple"
))]
const KEEPALIVE_REPEAT: (Duration, u32) = (Duration::from_secs(10), 3);

/// Turns TCP keep-alive on for a connection to Redis. A connection idle between bursts of
/// requests then sends a probe every minute, which keeps a NAT, firewall or load balancer
/// between the proxy and Redis from dropping it silently; and a Redis host that goes away
/// without closing the connection (a crash, a network partition) is noticed within about
/// 90 s of silence by the connection's own read, so the next call opens a new connection
/// instead of waiting out its response timeout on a dead one and failing.
fn keep_alive(tcp: &TcpStream) -> std::io::Result<()> {
    let probes = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_vendor = "apple"
    ))]
    let probes = probes
        .with_interval(KEEPALIVE_REPEAT.0)
        .with_retries(KEEPALIVE_REPEAT.1);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&probes)
}

/// Connection slots: listener threads beyond this share them.
const SLOTS: usize = 64;
/// After a failed connect, calls fail at once for this long (at most the connect timeout).
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// Nesting of arrays in a reply (the proxy's deepest is SCAN's, two).
const MAX_DEPTH: u8 = 4;
/// The longest bulk string read: the proxy's largest value (a user's Jira groups) is
/// kilobytes, so a longer length is a broken (or hostile) stream, refused before anything
/// is buffered for it, not up to the 512 MiB Redis itself allows.
const MAX_BULK: usize = 16 * 1024 * 1024;

fn unavailable(why: impl Into<String>) -> StoreError {
    StoreError::Unavailable(why.into())
}

/// Milliseconds for `PX`, at least 1 (Redis refuses 0).
fn millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

/// A glob-safe `SCAN MATCH` pattern for keys starting with `prefix`.
fn match_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

/// Where Redis listens.
enum Address {
    /// `redis://`, or TLS for `rediss://`.
    Tcp { host: String, port: u16, tls: bool },
    /// `unix://`: a Unix socket's path.
    Unix(std::path::PathBuf),
}

/// Where Redis is and how to log in, from the URL.
struct Url {
    at: Address,
    /// `AUTH [user] password`.
    login: Option<(Option<String>, Secret)>,
    db: u32,
}

struct Target {
    url: Url,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let u = &self.url;
        let mut d = f.debug_struct("Target");
        match &u.at {
            Address::Tcp { host, port, tls } => d.field("host", host).field("port", port).field("tls", tls),
            Address::Unix(path) => d.field("socket", path),
        };
        d.field("user", &u.login.as_ref().map(|l| &l.0))
            .field("db", &u.db)
            .finish()
    }
}

fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("the {what} in the Redis URL is not UTF-8 once decoded"))
}

/// How a Redis URL reaches the server, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Tcp,
    Tls,
    Unix,
}

/// The URL schemes understood, as other Redis clients write them (`valkey…` for Valkey,
/// which speaks the same protocol).
const SCHEMES: [(&str, Scheme); 7] = [
    ("redis://", Scheme::Tcp),
    ("rediss://", Scheme::Tls),
    ("valkey://", Scheme::Tcp),
    ("valkeys://", Scheme::Tls),
    ("unix://", Scheme::Unix),
    ("redis+unix://", Scheme::Unix),
    ("valkey+unix://", Scheme::Unix),
];

pub const EXPECTED: &str =
    "expected a redis://, rediss:// or unix:// URL (valkey://, valkeys://, redis+unix:// and valkey+unix:// too)";

/// The scheme of a Redis URL and what follows it; `None` for any other URL.
pub fn url_scheme(url: &str) -> Option<(Scheme, &str)> {
    SCHEMES
        .iter()
        .find_map(|(prefix, scheme)| url.strip_prefix(prefix).map(|rest| (*scheme, rest)))
}

/// `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS, or
/// `unix:///path/to/redis.sock[?db=N][&user=U][&pass=P]` for a Unix socket. Errors never
/// quote the URL (it may hold the password).
fn parse_url(url: &str) -> Result<Url, String> {
    let (tls, rest) = match url_scheme(url).ok_or(EXPECTED)? {
        (Scheme::Unix, rest) => return parse_unix(rest),
        (scheme, rest) => (scheme == Scheme::Tls, rest),
    };
    if rest.contains(['?', '#']) {
        return Err("the Redis URL takes no query or fragment (user, password, host, port and database only)".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let login = match userinfo {
        None => None,
        Some(u) => {
            let (user, password) = u
                .split_once(':')
                .ok_or("a user in the Redis URL needs a password (user:password@)")?;
            let user = decode(user, "user")?;
            let password = decode(password, "password")?;
            match (user.is_empty(), password.is_empty()) {
                // `redis://:@host`: nothing to log in with.
                (true, true) => None,
                (empty, _) => Some(((!empty).then_some(user), Secret::from_bytes(password.into_bytes()))),
            }
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("an unclosed [ in the Redis URL's host")?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("the Redis URL has no host".into());
    }
    let port = match port {
        None => 6379,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or("the Redis URL's port is not a number from 1 to 65535")?,
    };
    let db = match path.strip_suffix('/').unwrap_or(path) {
        "" => 0,
        p => p
            .parse::<u32>()
            .map_err(|_| "the Redis URL's path must be a database number")?,
    };
    Ok(Url {
        at: Address::Tcp {
            host: host.to_owned(),
            port,
            tls,
        },
        login,
        db,
    })
}

/// After `unix://`: an absolute path, then `db`, `user` and `pass` as query parameters
/// (the form redis-rs and others read). Values are percent-decoded (`+` stays a plus);
/// each parameter may come once.
fn parse_unix(rest: &str) -> Result<Url, String> {
    if rest.contains('#') {
        return Err("the Redis URL takes no fragment".into());
    }
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err(if path.contains('@') {
            "a unix:// Redis URL takes its login in the query (unix:///path/redis.sock?user=U&pass=P)"
        } else {
            "a unix:// Redis URL needs an absolute socket path (unix:///run/redis/redis.sock)"
        }
        .into());
    }
    // A query written without its `?` would otherwise become part of the path, which
    // connection errors quote.
    if path.contains(['&', '=']) {
        return Err(
            "the socket path of a unix:// Redis URL holds & or =: percent-encode them, or start the query with ?"
                .into(),
        );
    }
    let path = decode(path, "socket path")?;
    let (mut db, mut user, mut password) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "db" => &mut db,
            "user" | "username" => &mut user,
            "pass" | "password" => &mut password,
            _ => return Err("a unix:// Redis URL takes db, user and pass as its query, nothing else".into()),
        };
        if slot.is_some() {
            return Err("a parameter of the unix:// Redis URL's query comes twice".into());
        }
        if value.is_empty() {
            return Err("a parameter of the unix:// Redis URL's query has no value".into());
        }
        *slot = Some(value);
    }
    let db = match db {
        None => 0,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| "the Redis URL's db must be a database number")?,
    };
    let login = match (user, password) {
        (None, None) => None,
        (Some(_), None) => return Err("a user in the Redis URL needs a password (&pass=)".into()),
        (user, Some(p)) => Some((
            user.map(|u| decode(u, "user")).transpose()?,
            Secret::from_bytes(decode(p, "password")?.into_bytes()),
        )),
    };
    Ok(Url {
        at: Address::Unix(path.into()),
        login,
        db,
    })
}

/// A reply, RESP2.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Nil,
    Int(i64),
    /// A bulk or simple string.
    Data(Bytes),
    Array(Vec<Reply>),
    Error(String),
}

/// Finds the end of the line starting at `from` (the index of its `\r`).
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let at = buf.get(from..)?.iter().position(|&b| b == b'\n')? + from;
    (at > from && buf[at - 1] == b'\r')
        .then_some(at - 1)
        .or(Some(usize::MAX))
}

fn number(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| "Redis sent a malformed number".to_string())
}

/// One reply from the front of `buf` and its length; `None` while incomplete.
fn parse(buf: &[u8], depth: u8) -> Result<Option<(Reply, usize)>, String> {
    let Some(&kind) = buf.first() else { return Ok(None) };
    let Some(end) = line_end(buf, 1) else { return Ok(None) };
    if end == usize::MAX {
        return Err("Redis sent a line without CR LF".into());
    }
    let line = &buf[1..end];
    let next = end + 2;
    Ok(Some(match kind {
        b'+' => (Reply::Data(Bytes::copy_from_slice(line)), next),
        b'-' => (Reply::Error(String::from_utf8_lossy(line).into_owned()), next),
        b':' => (Reply::Int(number(line)?), next),
        b'$' => match number(line)? {
            -1 => (Reply::Nil, next),
            n if n < 0 || n as u64 > MAX_BULK as u64 => return Err("Redis sent a bad bulk length".into()),
            n => {
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                if &buf[next + n..next + n + 2] != b"\r\n" {
                    return Err("Redis sent a bulk string without CR LF".into());
                }
                (Reply::Data(Bytes::copy_from_slice(&buf[next..next + n])), next + n + 2)
            }
        },
        b'*' => match number(line)? {
            -1 => (Reply::Nil, next),
            n if n < 0 => return Err("Redis sent a bad array length".into()),
            _ if depth == 0 => return Err("Redis sent arrays nested too deep".into()),
            n => {
                let mut items = Vec::with_capacity((n as usize).min(1024));
                let mut at = next;
                for _ in 0..n {
                    match parse(&buf[at..], depth - 1)? {
                        None => return Ok(None),
                        Some((item, used)) => {
                            items.push(item);
                            at += used;
                        }
                    }
                }
                (Reply::Array(items), at)
            }
        },
        _ => return Err("Redis sent something that is not RESP".into()),
    }))
}

/// A command being written: `*N` then each argument as a bulk string.
struct Frame(Vec<u8>);

impl Frame {
    fn new(args: usize, size: usize) -> Frame {
        let mut f = Frame(Vec::with_capacity(16 + size + args * 16));
        f.len(b'*', args);
        f
    }

    fn len(&mut self, kind: u8, n: usize) {
        let mut digits = [0u8; 20];
        self.0.push(kind);
        self.0.extend_from_slice(crate::wire::itoa(n as u64, &mut digits));
        self.0.extend_from_slice(b"\r\n");
    }

    fn arg(mut self, parts: &[&[u8]]) -> Frame {
        self.len(b'$', parts.iter().map(|p| p.len()).sum());
        for p in parts {
            self.0.extend_from_slice(p);
        }
        self.0.extend_from_slice(b"\r\n");
        self
    }

    fn num(self, n: i64) -> Frame {
        let mut digits = [0u8; 20];
        let text = crate::wire::itoa(n.unsigned_abs(), &mut digits);
        if n < 0 {
            self.arg(&[b"-", text])
        } else {
            self.arg(&[text])
        }
    }
}

/// A Lua script, called by its SHA-1 (loaded by `EVAL` when Redis does not know it).
struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    fn new(body: &'static str) -> Script {
        use sha1::Digest;
        let sha = crate::auth::cache::hex(&sha1::Sha1::digest(body.as_bytes()));
        Script { body, sha }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

struct Job {
    frame: Vec<u8>,
    reply: oneshot::Sender<Reply>,
}

/// A live connection: its task takes commands here.
struct Link {
    id: u64,
    jobs: mpsc::UnboundedSender<Job>,
}

#[derive(Default)]
struct SlotCell {
    state: Mutex<Slot>,
    /// Held while a connection is being opened.
    connecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Slot {
    link: Option<Link>,
    /// The last failed connect: when, and why.
    failed: Option<(Instant, String)>,
}

static LINK_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Runs one connection: writes the commands handed over (all that are waiting, in one
/// write) and hands each reply to the oldest caller waiting. Ends, dropping every waiting
/// caller, when the connection fails, Redis sends something unreadable or unasked, or its
/// slot lets go of it.
async fn drive(
    stream: Box<dyn Io>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut input: BytesMut,
    write_limit: Duration,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut waiting: VecDeque<oneshot::Sender<Reply>> = VecDeque::new();
    let mut out: Vec<u8> = Vec::new();
    loop {
        if input.capacity() - input.len() < 512 {
            input.reserve(4096);
        }
        tokio::select! {
            read = rd.read_buf(&mut input) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
                loop {
                    match parse(&input, MAX_DEPTH) {
                        Ok(Some((reply, used))) => {
                            input.advance(used);
                            let Some(caller) = waiting.pop_front() else { return };
                            // A caller that gave up (timed out) no longer listens.
                            let _ = caller.send(reply);
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
            job = jobs.recv() => {
                let Some(job) = job else { return };
                out.extend_from_slice(&job.frame);
                waiting.push_back(job.reply);
                while let Ok(job) = jobs.try_recv() {
                    out.extend_from_slice(&job.frame);
                    waiting.push_back(job.reply);
                }
                // Nearly always written at once; a write that has to wait (Redis is not
                // reading) may take `write_limit`, after which the connection is given
                // up (its callers have timed out by then and its slot has let go of it).
                let mut write = std::pin::pin!(wr.write_all(&out));
                let written = match poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
                    Poll::Ready(r) => r.is_ok(),
                    Poll::Pending => matches!(tokio::time::timeout(write_limit, write).await, Ok(Ok(()))),
                };
                if !written {
                    return;
                }
                out.clear();
            }
        }
    }
}

/// Reads one reply to a command written during the login (before the connection's task).
async fn reply_to(stream: &mut Box<dyn Io>, input: &mut BytesMut, frame: Frame) -> Result<Reply, String> {
    stream
        .write_all(&frame.0)
        .await
        .map_err(|e| format!("redis: connection lost: {e}"))?;
    loop {
        if let Some((reply, used)) = parse(input, MAX_DEPTH).map_err(|e| format!("redis: {e}"))? {
            input.advance(used);
            return Ok(reply);
        }
        input.reserve(1024);
        match stream.read_buf(input).await {
            Ok(n) if n > 0 => {}
            Ok(_) => return Err("redis: connection closed by Redis".into()),
            Err(e) => return Err(format!("redis: connection lost: {e}")),
        }
    }
}

impl RedisStore {
    /// Checks the URL (and the CA file); connects on first use.
    pub fn new(settings: RedisSettings) -> Result<Self, String> {
        let url = std::str::from_utf8(settings.url.expose()).map_err(|_| "the Redis URL is not UTF-8".to_string())?;
        let url = parse_url(url)?;
        let tls = if let Address::Tcp { host, tls: true, .. } = &url.at {
            let mut cfg = crate::upstream::client_tls(settings.ca_file.as_deref(), true)?;
            cfg.alpn_protocols.clear();
            let name =
                ServerName::try_from(host.clone()).map_err(|_| "the Redis URL's host is not a valid TLS name")?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        Ok(RedisStore {
            settings,
            target: Target { url, tls },
            slots: (0..SLOTS).map(|_| SlotCell::default()).collect(),
            incr: Script::new(INCR_SCRIPT),
            throttle: Script::new(THROTTLE_SCRIPT),
        })
    }

    fn slot(&self) -> &SlotCell {
        let i = crate::server::listener_thread().map_or(0, |t| t % (SLOTS - 1) + 1);
        &self.slots[i]
    }

    /// Opens a connection, logs in and picks the database.
    async fn open(target: &Target) -> Result<(Box<dyn Io>, BytesMut), String> {
        let mut stream = match &target.url.at {
            Address::Tcp { host, port, .. } => Self::open_tcp(target, host, *port).await?,
            Address::Unix(path) => Self::open_unix(path).await?,
        };
        let mut input = BytesMut::with_capacity(4096);
        if let Some((user, password)) = &target.url.login {
            let frame = match user {
                Some(user) => Frame::new(3, 0).arg(&[b"AUTH"]).arg(&[user.as_bytes()]),
                None => Frame::new(2, 0).arg(&[b"AUTH"]),
            }
            .arg(&[password.expose()]);
            // Only the error's code (WRONGPASS, NOAUTH, ERR): a server that does not know
            // AUTH would quote its arguments, the password among them.
            if let Reply::Error(e) = reply_to(&mut stream, &mut input, frame).await? {
                let code = e.split(' ').next().unwrap_or_default();
                return Err(format!("redis: login refused ({code})"));
            }
        }
        let db = target.url.db;
        if db != 0 {
            let frame = Frame::new(2, 0).arg(&[b"SELECT"]).num(i64::from(db));
            if let Reply::Error(e) = reply_to(&mut stream, &mut input, frame).await? {
                return Err(format!("redis: SELECT {db} refused: {e}"));
            }
        }
        Ok((stream, input))
    }

    /// A TCP connection to the URL's host and port, in TLS for `rediss://`.
    async fn open_tcp(target: &Target, host: &str, port: u16) -> Result<Box<dyn Io>, String> {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("redis: cannot connect to {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let _ = keep_alive(&tcp);
        Ok(match &target.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("redis: TLS with {host}:{port} failed: {e}"))?,
            ),
        })
    }

    #[cfg(unix)]
    async fn open_unix(path: &std::path::Path) -> Result<Box<dyn Io>, String> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| format!("redis: cannot connect to {}: {e}", path.display()))?;
        Ok(Box::new(stream))
    }

    #[cfg(not(unix))]
    async fn open_unix(_: &std::path::Path) -> Result<Box<dyn Io>, String> {
        Err("redis: unix:// URLs need a Unix system".into())
    }

    /// A new connection, with its task; or why there is none.
    async fn connect(&self) -> Result<Link, String> {
        let limit = self.settings.connect_timeout;
        let (stream, input) = match tokio::time::timeout(limit, Self::open(&self.target)).await {
            Ok(opened) => opened?,
            Err(_) => return Err(format!("redis: no connection within {limit:?}")),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(stream, rx, input, self.settings.response_timeout));
        Ok(Link {
            id: LINK_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            jobs: tx,
        })
    }

    /// Hands `job` to the slot's live connection; without one, gives it back, with the
    /// reason of a connect that failed a moment ago.
    fn hand_over(&self, cell: &SlotCell, job: Job) -> Result<u64, (Job, Option<String>)> {
        let mut slot = lock(&cell.state);
        let back = match &slot.link {
            Some(link) => match link.jobs.send(job) {
                Ok(()) => return Ok(link.id),
                Err(mpsc::error::SendError(back)) => back,
            },
            None => job,
        };
        slot.link = None;
        let recent = slot
            .failed
            .as_ref()
            .filter(|(at, _)| at.elapsed() < RETRY_AFTER.min(self.settings.connect_timeout))
            .map(|(_, why)| why.clone());
        Err((back, recent))
    }

    /// Sends one command and waits for its reply (an error reply included).
    async fn call(&self, frame: Frame) -> Result<Reply, StoreError> {
        let cell = self.slot();
        let (tx, rx) = oneshot::channel();
        let job = Job {
            frame: frame.0,
            reply: tx,
        };
        let id = match self.hand_over(cell, job) {
            Ok(id) => id,
            Err((_, Some(why))) => return Err(unavailable(why)),
            Err((job, None)) => {
                // One connect at a time per slot: the calls arriving meanwhile wait for
                // it, then use its connection or fail with its reason.
                let _connecting = cell.connecting.lock().await;
                match self.hand_over(cell, job) {
                    Ok(id) => id,
                    Err((_, Some(why))) => return Err(unavailable(why)),
                    Err((job, None)) => {
                        let link = match self.connect().await {
                            Ok(link) => link,
                            Err(why) => {
                                lock(&cell.state).failed = Some((Instant::now(), why.clone()));
                                return Err(unavailable(why));
                            }
                        };
                        let id = link.id;
                        let sent = link.jobs.send(job).is_ok();
                        let mut slot = lock(&cell.state);
                        slot.failed = None;
                        slot.link = Some(link);
                        if !sent {
                            return Err(unavailable("redis: connection lost"));
                        }
                        id
                    }
                }
            }
        };
        match tokio::time::timeout(self.settings.response_timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(unavailable("redis: connection lost")),
            Err(_) => {
                // Overdue: the connection may be dead without knowing it (or Redis hung):
                // let it go, and the next call opens a new one.
                let mut slot = lock(&cell.state);
                if slot.link.as_ref().is_some_and(|l| l.id == id) {
                    slot.link = None;
                }
                Err(unavailable("redis: timed out"))
            }
        }
    }

    /// One command whose error reply is a failure.
    async fn run(&self, frame: Frame) -> Result<Reply, StoreError> {
        match self.call(frame).await? {
            Reply::Error(e) => Err(unavailable(format!("redis: {e}"))),
            reply => Ok(reply),
        }
    }

    fn key<'a>(&'a self, key: &'a str) -> [&'a [u8]; 2] {
        [self.settings.key_prefix.as_bytes(), key.as_bytes()]
    }

    /// `SET` with a condition (`NX`: only if absent, `XX`: only if present); true when set.
    async fn set_if(&self, key: &str, value: Bytes, ttl: Duration, condition: &[u8]) -> Result<bool, StoreError> {
        let frame = Frame::new(6, key.len() + value.len())
            .arg(&[b"SET"])
            .arg(&self.key(key))
            .arg(&[&value])
            .arg(&[condition])
            .arg(&[b"PX"])
            .num(millis(ttl) as i64);
        match self.run(frame).await? {
            Reply::Nil => Ok(false),
            Reply::Data(_) => Ok(true),
            other => Err(unexpected(&other)),
        }
    }

    /// A script on one key: by its SHA-1, or by its text when Redis does not have it.
    async fn eval(&self, script: &Script, key: &str, args: &[i64]) -> Result<Reply, StoreError> {
        let frame = |verb: &[u8], body: &[u8]| {
            let mut f = Frame::new(4 + args.len(), key.len() + body.len())
                .arg(&[verb])
                .arg(&[body])
                .arg(&[b"1"])
                .arg(&self.key(key));
            for a in args {
                f = f.num(*a);
            }
            f
        };
        match self.call(frame(b"EVALSHA", script.sha.as_bytes())).await? {
            Reply::Error(e) if e.starts_with("NOSCRIPT") => self.run(frame(b"EVAL", script.body.as_bytes())).await,
            Reply::Error(e) => Err(unavailable(format!("redis: {e}"))),
            reply => Ok(reply),
        }
    }
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // Every change is one assignment: a poisoned slot is still whole.
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

fn unexpected(reply: &Reply) -> StoreError {
    let kind = match reply {
        Reply::Nil => "nil",
        Reply::Int(_) => "an integer",
        Reply::Data(_) => "a string",
        Reply::Array(_) => "an array",
        Reply::Error(_) => "an error",
    };
    unavailable(format!("redis: unexpected reply ({kind})"))
}

fn int(reply: &Reply) -> Result<i64, StoreError> {
    match reply {
        Reply::Int(n) => Ok(*n),
        other => Err(unexpected(other)),
    }
}

fn values(reply: Reply) -> Result<Vec<Option<Bytes>>, StoreError> {
    let Reply::Array(items) = reply else {
        return Err(unexpected(&reply));
    };
    items
        .into_iter()
        .map(|item| match item {
            Reply::Nil => Ok(None),
            Reply::Data(b) => Ok(Some(b)),
            other => Err(unexpected(&other)),
        })
        .collect()
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        match self
            .run(Frame::new(2, key.len()).arg(&[b"GET"]).arg(&self.key(key)))
            .await?
        {
            Reply::Nil => Ok(None),
            Reply::Data(b) => Ok(Some(b)),
            other => Err(unexpected(&other)),
        }
    }

    async fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut frame = Frame::new(1 + keys.len(), keys.iter().map(|k| k.len() + 16).sum()).arg(&[b"MGET"]);
        for key in keys {
            frame = frame.arg(&self.key(key));
        }
        values(self.run(frame).await?)
    }

    async fn put(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        let frame = Frame::new(5, key.len() + value.len())
            .arg(&[b"SET"])
            .arg(&self.key(key))
            .arg(&[&value])
            .arg(&[b"PX"])
            .num(millis(ttl) as i64);
        self.run(frame).await.map(|_| ())
    }

    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, b"NX").await
    }

    async fn replace(&self, key: &str, value: Bytes, ttl: Duration) -> Result<bool, StoreError> {
        self.set_if(key, value, ttl, b"XX").await
    }

    async fn incr(&self, key: &str, by: i64, ttl: Duration) -> Result<i64, StoreError> {
        int(&self.eval(&self.incr, key, &[by, millis(ttl) as i64]).await?)
    }

    async fn throttle(&self, key: &str, interval: Duration, burst: u32) -> Result<Throttle, StoreError> {
        let args = [(interval.as_micros() as i64).max(1), i64::from(burst.max(1))];
        let reply = self.eval(&self.throttle, key, &args).await?;
        let (allowed, remaining, wait) = match &reply {
            Reply::Array(v) if v.len() == 3 => (int(&v[0])?, int(&v[1])?, int(&v[2])?),
            other => return Err(unexpected(other)),
        };
        Ok(Throttle {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            retry_after: Duration::from_micros(wait.max(0) as u64),
        })
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let ms = int(&self
            .run(Frame::new(2, key.len()).arg(&[b"PTTL"]).arg(&self.key(key)))
            .await?)?;
        Ok(match ms {
            -2 => None,
            // No expiry (never written so by the proxy): report it as long-lived.
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        int(&self
            .run(Frame::new(2, key.len()).arg(&[b"DEL"]).arg(&self.key(key)))
            .await?)
        .map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        match self.run(Frame::new(1, 0).arg(&[b"PING"])).await? {
            Reply::Data(_) => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn scan(&self, prefix: &str, limit: usize) -> Result<Vec<(String, Bytes)>, StoreError> {
        let full = format!("{}{prefix}", self.settings.key_prefix);
        let pattern = match_prefix(&full);
        let mut cursor: u64 = 0;
        let mut keys: Vec<String> = Vec::new();
        loop {
            let frame = Frame::new(6, pattern.len())
                .arg(&[b"SCAN"])
                .num(cursor as i64)
                .arg(&[b"MATCH"])
                .arg(&[pattern.as_bytes()])
                .arg(&[b"COUNT"])
                .arg(&[b"1000"]);
            let reply = self.run(frame).await?;
            let Reply::Array(mut parts) = reply else {
                return Err(unexpected(&reply));
            };
            let (Some(Reply::Array(batch)), Some(Reply::Data(next))) = (parts.pop(), parts.pop()) else {
                return Err(unavailable("redis: unexpected SCAN reply"));
            };
            for k in batch {
                let Reply::Data(k) = k else { return Err(unexpected(&k)) };
                // Keys the proxy did not write (not UTF-8) are not its own.
                if let Ok(k) = String::from_utf8(k.to_vec())
                    && k.starts_with(&full)
                {
                    keys.push(k);
                }
            }
            cursor = std::str::from_utf8(&next)
                .ok()
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| unavailable("redis: unexpected SCAN cursor"))?;
            if cursor == 0 || keys.len() >= limit {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys.truncate(limit);
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut frame = Frame::new(1 + chunk.len(), chunk.iter().map(|k| k.len() + 16).sum()).arg(&[b"MGET"]);
            for k in chunk {
                frame = frame.arg(&[k.as_bytes()]);
            }
            for (k, v) in chunk.iter().zip(values(self.run(frame).await?)?) {
                // A key that expired between SCAN and MGET is simply gone.
                if let Some(v) = v {
                    out.push((k[self.settings.key_prefix.len()..].to_owned(), v));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts = (bool, String, u16, Option<(Option<String>, String)>, u32);

    fn url(u: &str) -> Result<Parts, String> {
        parse_url(u).map(|u| {
            let login = u
                .login
                .map(|(user, pw)| (user, String::from_utf8_lossy(pw.expose()).into_owned()));
            match u.at {
                Address::Tcp { host, port, tls } => (tls, host, port, login, u.db),
                Address::Unix(_) => panic!("a TCP URL expected"),
            }
        })
    }

    #[test]
    fn urls_give_host_port_login_and_database() {
        assert_eq!(url("redis://127.0.0.1"), Ok((false, "127.0.0.1".into(), 6379, None, 0)));
        assert_eq!(
            url("rediss://cache.internal:6380/3"),
            Ok((true, "cache.internal".into(), 6380, None, 3))
        );
        assert_eq!(
            url("redis://:pw@127.0.0.1:6379/2"),
            Ok((false, "127.0.0.1".into(), 6379, Some((None, "pw".into())), 2))
        );
        // Percent-encoded, and an `@` or `:` inside the password.
        assert_eq!(
            url("redis://jap:p%40ss:w%2Frd@[::1]:7000"),
            Ok((
                false,
                "::1".into(),
                7000,
                Some((Some("jap".into()), "p@ss:w/rd".into())),
                0
            ))
        );
        assert_eq!(url("redis://:@host/4/"), Ok((false, "host".into(), 6379, None, 4)));
        assert_eq!(
            url("redis://jap:a@b@host/"),
            Ok((false, "host".into(), 6379, Some((Some("jap".into()), "a@b".into())), 0))
        );
    }

    #[test]
    fn valkey_schemes_and_unix_sockets_are_understood() {
        assert_eq!(url("valkey://cache:6390/1"), Ok((false, "cache".into(), 6390, None, 1)));
        assert_eq!(url("valkeys://cache"), Ok((true, "cache".into(), 6379, None, 0)));
        for scheme in ["unix", "redis+unix", "valkey+unix"] {
            let u = parse_url(&format!("{scheme}:///run/redis/redis.sock")).expect(scheme);
            assert!(matches!(&u.at, Address::Unix(p) if p == std::path::Path::new("/run/redis/redis.sock")));
            assert!(u.login.is_none() && u.db == 0);
        }
        let u = parse_url("unix:///var/run/r%20s.sock?db=3&user=jap&pass=p%26ss%3Dw").expect("with a query");
        assert!(matches!(&u.at, Address::Unix(p) if p == std::path::Path::new("/var/run/r s.sock")));
        assert_eq!(u.db, 3);
        let (user, pw) = u.login.expect("a login");
        assert_eq!((user.as_deref(), pw.expose()), (Some("jap"), &b"p&ss=w"[..]));
        let u = parse_url("unix:///s.sock?username=jap&password=a+b").expect("the long names");
        let (user, pw) = u.login.expect("a login");
        assert_eq!((user.as_deref(), pw.expose()), (Some("jap"), &b"a+b"[..]));
        let u = parse_url("unix:///s.sock?password=pw").expect("password alone");
        assert_eq!(
            u.login.map(|(user, pw)| (user, pw.expose().to_vec())),
            Some((None, b"pw".to_vec()))
        );
        for (u, why) in [
            ("unix://s.sock", "absolute"),
            ("unix://", "absolute"),
            ("unix:///s.sock?db=x", "database number"),
            ("unix:///s.sock?user=jap", "needs a password"),
            ("unix:///s.sock?timeout=1&pass=s3cr", "nothing else"),
            ("unix:///s.sock#pass=s3cr", "no fragment"),
            ("unix:///s.sock?pass=s3cr%FF", "not UTF-8"),
            ("unix:///s.sock&pass=s3cr", "start the query with ?"),
            ("unix://jap:s3cr@/s.sock", "login in the query"),
            ("unix:///s.sock?pass=s3cr&pass=", "comes twice"),
            ("unix:///s.sock?pass=s3cr&password=s3cr", "comes twice"),
            ("unix:///s.sock?user=jap&pass", "no value"),
            ("unix:///s.sock?db=", "no value"),
        ] {
            let e = url(u).map(|_| ()).expect_err(u);
            assert!(e.contains(why), "{u}: {e}");
            assert!(!e.contains("s3cr"), "{e}");
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_quoting_the_password() {
        for (u, why) in [
            ("http://host", "redis://"),
            ("redis://", "no host"),
            ("redis://host:0", "port"),
            ("redis://host:99999", "port"),
            ("redis://host:x", "port"),
            ("redis://host/zero", "database number"),
            ("redis://host?protocol=resp3", "no query"),
            ("redis://alice@host", "needs a password"),
            ("redis://[::1:6379", "unclosed"),
            ("redis://:s3cr%FFt@host", "not UTF-8"),
        ] {
            let e = url(u).expect_err(u);
            assert!(e.contains(why), "{u}: {e}");
            assert!(!e.contains("s3cr"), "{e}");
        }
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let f = Frame::new(5, 0)
            .arg(&[b"SET"])
            .arg(&[b"jap:", b"k"])
            .arg(&[b""])
            .num(-12)
            .num(0);
        assert_eq!(
            f.0,
            b"*5\r\n$3\r\nSET\r\n$5\r\njap:k\r\n$0\r\n\r\n$3\r\n-12\r\n$1\r\n0\r\n"
        );
    }

    #[test]
    fn replies_are_read_whole_or_not_at_all() {
        let data = |s: &str| Reply::Data(Bytes::copy_from_slice(s.as_bytes()));
        let whole: &[(&[u8], Reply)] = &[
            (b"+OK\r\n", data("OK")),
            (b"-ERR wrong\r\n", Reply::Error("ERR wrong".into())),
            (b":-42\r\n", Reply::Int(-42)),
            (b"$-1\r\n", Reply::Nil),
            (b"*-1\r\n", Reply::Nil),
            (b"$0\r\n\r\n", data("")),
            (b"$4\r\na\r\nb\r\n", data("a\r\nb")),
            (
                b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$-1\r\n",
                Reply::Array(vec![data("0"), Reply::Array(vec![data("a"), Reply::Nil])]),
            ),
        ];
        for (bytes, reply) in whole {
            assert_eq!(parse(bytes, MAX_DEPTH), Ok(Some((reply.clone(), bytes.len()))));
            // Every shorter prefix is incomplete, not an error.
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut], MAX_DEPTH), Ok(None), "{:?}", &bytes[..cut]);
            }
        }
        // Two replies in one read: the first, and where the second starts.
        assert_eq!(parse(b":1\r\n:2\r\n", MAX_DEPTH), Ok(Some((Reply::Int(1), 4))));
    }

    #[test]
    fn a_broken_stream_is_an_error_not_a_guess() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$-2\r\n",
            b"$3\r\nabcde\r\n",
            b"*-5\r\n",
            b"+OK\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
            // Longer than any value the proxy stores: refused at its length line.
            b"$16777217\r\n",
        ] {
            assert!(parse(bad, MAX_DEPTH).is_err(), "{bad:?}");
        }
        // The longest allowed is waited for.
        assert_eq!(parse(b"$16777216\r\n", MAX_DEPTH), Ok(None));
    }

    #[test]
    fn scripts_are_called_by_their_sha1() {
        // `redis-cli SCRIPT LOAD "return 1"` answers this digest.
        assert_eq!(Script::new("return 1").sha, "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }

    #[test]
    fn scan_patterns_escape_glob_characters() {
        assert_eq!(match_prefix("jap:oauth1:at:"), "jap:oauth1:at:*");
        assert_eq!(match_prefix("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
