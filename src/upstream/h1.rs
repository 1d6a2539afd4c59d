//! HTTP/1.1 on one connection to Jira (RFC 9112), run inline by the request that uses
//! it: the request is written, the answer's head read and parsed, and the answer's body
//! read by the caller polling it. No task, channel or hand-off stands between a request
//! and its connection; the connection goes back to its pool when the body has been read
//! to its end.
//!
//! Framing is the proxy's own on both legs: a request goes with the `Content-Length`
//! of its body (or chunked when its length is unknown), whatever the client's headers
//! said; an answer is framed by the rules of RFC 9112 §6.3, and an answer framed two
//! ways at once (`Transfer-Encoding` beside `Content-Length`, or `Content-Length`s that
//! differ) is refused, never guessed at, so no answer can spill into the next one.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_rustls::client::TlsStream;

use super::headers::{AnswerField, classify_answer_field};
use super::pool::Shard;
use crate::error::{Body, BodyError};
use crate::wire::{Chunk, Framing, HeaderLines, Step, eq_lower, field, hex_line, itoa};

/// Most header fields an answer may carry.
const MAX_HEADERS: usize = 100;
/// Most bytes an answer's head may take.
const MAX_HEAD: usize = 256 << 10;
/// Room made in the read buffer before each read.
const READ_ROOM: usize = 16 << 10;
/// A request body up to this size, of known length, is gathered and written with its
/// head in one write (and can be sent again on another connection).
const GATHER_LIMIT: u64 = 64 << 10;

/// Plain TCP or rustls TLS.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection to Jira and the bytes read from it but not yet used.
pub struct Conn {
    io: Stream,
    buf: BytesMut,
    /// The response timer, made on the connection's first timed request and kept from one
    /// request to the next (see [`exchange_by`]).
    timer: Option<Pin<Box<Sleep>>>,
    /// Has carried an answer before (Jira may have closed it since).
    pub reused: bool,
    /// When its last request was sent (or it was opened): idle since then.
    pub used: std::time::Instant,
}

impl Conn {
    pub fn new(io: Stream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            timer: None,
            reused: false,
            used: std::time::Instant::now(),
        }
    }

    /// Reads what Jira sent next onto the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_ROOM / 4 {
            self.buf.reserve(READ_ROOM);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// True when an idle connection cannot carry another request: Jira closed it, reset
    /// it, or sent bytes nobody asked for. Looks without waiting: a connection with
    /// nothing to read is still open.
    pub fn closed_while_idle(&mut self) -> bool {
        if !self.buf.is_empty() {
            return true;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io).poll_read(&mut cx, &mut probe).is_ready()
    }
}

/// How a request's body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sending {
    Length(u64),
    Chunked,
}

/// A header field the proxy sets on a request, written after the request's own: it
/// replaces the request's fields of its name, or without a value only removes them. The
/// name and value are borrowed from the configuration and the request's context where
/// they can be: nothing is copied, counted or released per request.
pub type Field<'a> = (&'a HeaderName, Option<Cow<'a, [u8]>>);

/// The fields the proxy sets on one request, in order, held in place (no allocation).
/// No `Debug`: a value may be the shared secret Jira trusts.
pub struct Fields<'a> {
    at: [Field<'a>; Fields::ROOM],
    len: usize,
}

/// What fills the room of [`Fields`] not yet used; never read.
static UNUSED: HeaderName = http::header::HOST;

impl<'a> Fields<'a> {
    /// The most any identity mode sets is eight (the forwarding fields, `Host`, the
    /// request id, and the identity with its shared secret and the caller's
    /// `Authorization` removed), with room for two more.
    pub const ROOM: usize = 10;

    pub fn new() -> Fields<'a> {
        Fields {
            at: [const { (&UNUSED, None) }; Fields::ROOM],
            len: 0,
        }
    }

    /// Adds a field whose value is a valid field value already (a `HeaderValue`'s, or
    /// the proxy's own text): not checked again here. A field past the room is refused
    /// rather than left out.
    pub fn push(&mut self, name: &'a HeaderName, value: Option<Cow<'a, [u8]>>) -> Result<(), String> {
        let slot = self
            .at
            .get_mut(self.len)
            .ok_or_else(|| format!("too many header fields set ({name} is one more)"))?;
        *slot = (name, value);
        self.len += 1;
        Ok(())
    }

    /// Adds a field whose value comes from elsewhere (a user name, a signed
    /// `Authorization`): one that is not a valid field value (RFC 9110 §5.5: no control
    /// but HTAB, no DEL) is refused, never written.
    pub fn push_checked(&mut self, name: &'a HeaderName, value: Option<Cow<'a, [u8]>>) -> Result<(), String> {
        if value
            .as_deref()
            .is_some_and(|v| !v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)))
        {
            return Err(format!("the value for {name} is not a valid header value"));
        }
        self.push(name, value)
    }

    pub fn as_slice(&self) -> &[Field<'a>] {
        &self.at[..self.len]
    }
}

impl Default for Fields<'_> {
    fn default() -> Self {
        Fields::new()
    }
}

/// A request encoded for the wire: its head, and its body when that was gathered.
pub struct Outgoing {
    pub method: Method,
    /// Head, and the whole body when `rest` is `None`.
    wire: Vec<u8>,
    /// A body still to be streamed after the head.
    rest: Option<(Body, Sending)>,
}

impl Outgoing {
    /// Encodes the request of head `parts` (its URI in origin form, its `Host` set there or
    /// in `set`) and `body`, with the fields of `set`. The head is read where it lies, not
    /// moved. A short body of known length is read here, so the request can go whole in
    /// one write.
    pub async fn encode(parts: &http::request::Parts, mut body: Body, set: &Fields<'_>) -> Result<Outgoing, String> {
        let sending = match body.size_hint().exact() {
            Some(n) => Sending::Length(n),
            None => Sending::Chunked,
        };
        let mut wire = Vec::with_capacity(512);
        wire.extend_from_slice(parts.method.as_str().as_bytes());
        wire.push(b' ');
        let set = set.as_slice();
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        wire.extend_from_slice(if target.is_empty() { b"/" } else { target.as_bytes() });
        wire.extend_from_slice(b" HTTP/1.1\r\n");
        let mut field = |name: &HeaderName, value: &[u8]| {
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value);
            wire.extend_from_slice(b"\r\n");
        };
        for (name, value) in &parts.headers {
            // The framing is the proxy's own (below), and `set` replaces what it names.
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || set.iter().any(|(n, _)| *n == name) {
                continue;
            }
            field(name, value.as_bytes());
        }
        for (name, value) in set {
            if let Some(value) = value
                && *name != CONTENT_LENGTH
                && *name != TRANSFER_ENCODING
            {
                field(name, value);
            }
        }
        match sending {
            // Methods without body semantics go without a length when they have none.
            Sending::Length(0)
                if matches!(
                    parts.method,
                    Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE | Method::CONNECT
                ) => {}
            Sending::Length(n) => {
                wire.extend_from_slice(b"content-length: ");
                wire.extend_from_slice(itoa(n, &mut [0u8; 20]));
                wire.extend_from_slice(b"\r\n");
            }
            Sending::Chunked => wire.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        wire.extend_from_slice(b"\r\n");
        let rest = match sending {
            _ if body.is_end_stream() => None,
            Sending::Length(n) if n <= GATHER_LIMIT => {
                let mut sent = 0u64;
                while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    let frame = frame.map_err(|e| format!("reading the request body: {e}"))?;
                    if let Ok(data) = frame.into_data() {
                        sent += data.len() as u64;
                        if sent > n {
                            return Err("the request body is longer than its length".into());
                        }
                        wire.extend_from_slice(&data);
                    }
                }
                if sent != n {
                    return Err("the request body is shorter than its length".into());
                }
                None
            }
            _ => Some((body, sending)),
        };
        Ok(Outgoing {
            method: parts.method.clone(),
            wire,
            rest,
        })
    }

    /// The whole request is in memory, so it can go again on another connection.
    pub fn replayable(&self) -> bool {
        self.rest.is_none()
    }
}

/// Why an exchange on a connection failed.
pub enum Failure {
    /// Jira closed or reset the connection before a byte of an answer came: on a reused
    /// connection, Jira's keep-alive ending under the request.
    ClosedEarly(String),
    /// No answer's head by the deadline (see [`exchange_by`]).
    TimedOut,
    /// Anything else.
    Broken(String),
}

impl Failure {
    pub fn message(self) -> String {
        match self {
            Failure::ClosedEarly(m) | Failure::Broken(m) => m,
            Failure::TimedOut => NO_ANSWER_IN_TIME.into(),
        }
    }
}

/// The message of a request that got no answer's head by its deadline.
pub const NO_ANSWER_IN_TIME: &str = "no answer from Jira in time";

/// [`exchange`], given up at `deadline` ([`Failure::TimedOut`]).
///
/// The timer is the connection's own and stays registered from one request to the next:
/// a request whose deadline is later than the one the timer is set for leaves it alone,
/// and when it fires early it is set again for the request then waiting. So a request on
/// a kept-alive connection costs no timer registration and removal, and the timeout is
/// still exact. (A fired timer wakes the task that last waited on it; one that has ended
/// is not run again.)
pub async fn exchange_by(conn: &mut Conn, out: &mut Outgoing, deadline: tokio::time::Instant) -> Result<Head, Failure> {
    let mut timer = conn.timer.take();
    let result = {
        let exchange = exchange(conn, out);
        let mut exchange = std::pin::pin!(exchange);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            if expired(&mut timer, deadline, cx) {
                return Poll::Ready(Err(Failure::TimedOut));
            }
            Poll::Pending
        })
        .await
    };
    conn.timer = timer;
    result
}

/// Whether `deadline` has passed, on a timer set for it or for an earlier deadline;
/// otherwise `cx` is woken when the timer fires.
fn expired(timer: &mut Option<Pin<Box<Sleep>>>, deadline: tokio::time::Instant, cx: &mut Context<'_>) -> bool {
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if t.deadline() > deadline {
        // Set for later than this request may wait (a reload shortened the timeout).
        t.as_mut().reset(deadline);
    }
    if t.as_mut().poll(cx).is_pending() {
        return false;
    }
    if t.deadline() == deadline {
        return true;
    }
    // An earlier request's deadline: set for this one's.
    t.as_mut().reset(deadline);
    t.as_mut().poll(cx).is_ready()
}

fn closed_early(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Sends `out` on `conn` (the request's bytes are kept for another attempt) and reads the
/// answer's head. The body stays on the connection, to be read through the answer.
pub async fn exchange(conn: &mut Conn, out: &mut Outgoing) -> Result<Head, Failure> {
    if let Err(e) = conn.io.write_all(&out.wire).await {
        let msg = format!("writing to Jira: {e}");
        return Err(if closed_early(&e) {
            Failure::ClosedEarly(msg)
        } else {
            Failure::Broken(msg)
        });
    }
    if let Some((body, sending)) = out.rest.take() {
        match stream_body(conn, body, sending).await {
            Ok(()) => {}
            // Jira may have answered and stopped reading (a refusal before the body):
            // that answer is what the caller gets, and the connection is not reused.
            Err(Streaming::Jira(e)) => {
                return match read_head(conn, &out.method).await {
                    Ok(mut head) => {
                        head.keep_alive = false;
                        Ok(head)
                    }
                    Err(_) => Err(Failure::Broken(format!("writing the request body to Jira: {e}"))),
                };
            }
            Err(Streaming::Client(e)) => return Err(Failure::Broken(format!("reading the request body: {e}"))),
        }
    }
    if let Err(e) = conn.io.flush().await {
        return Err(Failure::Broken(format!("writing to Jira: {e}")));
    }
    read_head(conn, &out.method).await
}

enum Streaming {
    Jira(io::Error),
    Client(BodyError),
}

async fn stream_body(conn: &mut Conn, mut body: Body, sending: Sending) -> Result<(), Streaming> {
    let mut sent = 0u64;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(Streaming::Client)?.into_data() else {
            // Trailers are not forwarded.
            continue;
        };
        if data.is_empty() {
            continue;
        }
        sent += data.len() as u64;
        match sending {
            Sending::Length(n) if sent > n => {
                return Err(Streaming::Client("the request body is longer than its length".into()));
            }
            Sending::Length(_) => conn.io.write_all(&data).await.map_err(Streaming::Jira)?,
            Sending::Chunked => {
                let mut line = [0u8; 18];
                let size = hex_line(data.len(), &mut line);
                conn.io.write_all(size).await.map_err(Streaming::Jira)?;
                conn.io.write_all(&data).await.map_err(Streaming::Jira)?;
                conn.io.write_all(b"\r\n").await.map_err(Streaming::Jira)?;
            }
        }
    }
    match sending {
        Sending::Length(n) if sent != n => Err(Streaming::Client("the request body is shorter than its length".into())),
        Sending::Length(_) => Ok(()),
        Sending::Chunked => conn.io.write_all(b"0\r\n\r\n").await.map_err(Streaming::Jira),
    }
}

/// An answer's head, and how its body is framed.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    /// Without hop-by-hop headers (RFC 9110 §7.6.1) and those `Connection` names: they
    /// were for this connection, not for whoever gets the answer.
    pub headers: HeaderMap,
    /// The other fields, passed on as Jira wrote them.
    pub lines: HeaderLines,
    framing: Framing,
    /// The connection can carry another request once the body has been read.
    keep_alive: bool,
}

impl Head {
    /// The answer, its body read from `conn`; the connection goes back to `shard` when
    /// that body has been read to its end.
    pub fn into_response(self, mut conn: Conn, shard: Arc<Shard>) -> Response<Pooled> {
        conn.reused = true;
        let mut resp = Response::new(Pooled {
            conn: Some(conn),
            shard,
            framing: self.framing,
            keep_alive: self.keep_alive,
            lines: (!self.lines.is_empty()).then_some(self.lines),
        });
        *resp.status_mut() = self.status;
        *resp.version_mut() = self.version;
        *resp.headers_mut() = self.headers;
        resp
    }
}

/// Reads heads until a final (non-1xx) one.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<Head, Failure> {
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf, method == Method::HEAD) {
                Ok(Parsed::Final(head)) => return Ok(head),
                Ok(Parsed::Interim) => continue,
                Ok(Parsed::Partial) if conn.buf.len() >= MAX_HEAD => {
                    return Err(Failure::Broken("Jira's answer head is too large".into()));
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(Failure::Broken(e)),
            }
        }
        let nothing_yet = conn.buf.is_empty();
        match conn.fill().await {
            Ok(0) if nothing_yet => {
                return Err(Failure::ClosedEarly(
                    "Jira closed the connection without answering".into(),
                ));
            }
            Ok(0) => {
                return Err(Failure::Broken(
                    "Jira closed the connection within its answer's head".into(),
                ));
            }
            Ok(_) => {}
            Err(e) if nothing_yet && closed_early(&e) => {
                return Err(Failure::ClosedEarly(format!("reading Jira's answer: {e}")));
            }
            Err(e) => return Err(Failure::Broken(format!("reading Jira's answer: {e}"))),
        }
    }
}

enum Parsed {
    Partial,
    /// A 1xx answer, consumed: the final one follows.
    Interim,
    Final(Head),
}

/// Parses the answer head at the start of `buf`, taking it off the buffer when whole.
/// Header values share the buffer's memory.
fn parse_head(buf: &mut BytesMut, to_head_request: bool) -> Result<Parsed, String> {
    // Left uninitialised: zeroing room for a hundred fields costs more than parsing six.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut r, buf, &mut slots) {
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(format!("Jira's answer is not HTTP/1.1 ({e})")),
        Ok(httparse::Status::Complete(len)) => len,
    };
    let (code, minor) = (r.code.unwrap_or(0), r.version.unwrap_or(1));
    match code {
        101 => return Err("Jira switched protocols unasked".into()),
        100..=199 => {
            buf.advance(len);
            return Ok(Parsed::Interim);
        }
        _ => {}
    }
    // One pass over the fields, on where each lies in the head: framing and connection
    // options are read and dropped, hop-by-hop fields dropped, the few fields the proxy
    // reads or replaces kept for the answer's map, and the rest passed on as written.
    let base = buf.as_ptr() as usize;
    let at = |b: &[u8]| {
        if b.is_empty() {
            0
        } else {
            (b.as_ptr() as usize - base) as u32
        }
    };
    let mut seen = Seen::default();
    let mut lines: Vec<[u32; 4]> = Vec::with_capacity(r.headers.len());
    let mut mapped: Vec<[u32; 4]> = Vec::new();
    // Headers `Connection` names: hop-by-hop too, removed once all are in.
    let mut named: Vec<&[u8]> = Vec::new();
    // Where the `Content-Length` lies in `lines` when it is the only one (nearly always).
    let mut only_length: Option<usize> = None;
    let mut lengths = 0u32;
    for h in r.headers.iter() {
        let (name, value) = (h.name.as_bytes(), h.value);
        let class = classify_answer_field(name);
        match class {
            AnswerField::TransferEncoding => {
                // Framing, read here and not forwarded: the last coding decides.
                seen.encoding = true;
                if let Some(last) = super::headers::list_items(value).next_back() {
                    seen.chunked = eq_lower(last, b"chunked");
                }
                continue;
            }
            AnswerField::Connection => {
                for t in super::headers::list_items(value) {
                    if eq_lower(t, b"close") {
                        seen.close = true;
                    } else if eq_lower(t, b"keep-alive") {
                        seen.keep_alive = true;
                    } else {
                        named.push(t);
                    }
                }
                continue;
            }
            AnswerField::HopByHop => continue,
            AnswerField::Date => seen.dated = true,
            AnswerField::ContentLength | AnswerField::ReadByProxy | AnswerField::Other => {}
        }
        let (n, v) = (at(name), at(value));
        let span = [n, n + name.len() as u32, v, v + value.len() as u32];
        if class == AnswerField::ReadByProxy {
            mapped.push(span);
            continue;
        }
        if class == AnswerField::ContentLength {
            seen.length = true;
            lengths += 1;
            only_length = (lengths == 1).then_some(lines.len());
        }
        lines.push(span);
    }
    if !named.is_empty() {
        let head = &buf[..];
        let cut = |s: &[u32; 4]| !named.iter().any(|n| n.eq_ignore_ascii_case(field(head, s).0));
        lines.retain(cut);
        mapped.retain(cut);
        seen.dated = lines.iter().any(|s| eq_lower(field(head, s).0, b"date"));
        // Positions in `lines` have moved: the lengths are looked for by name below.
        only_length = None;
    }
    let status = StatusCode::from_u16(code).map_err(|_| format!("Jira answered with status {code}"))?;
    let version = if minor == 0 { Version::HTTP_10 } else { Version::HTTP_11 };
    let framing = {
        let head = &buf[..];
        let by_name = only_length.is_none().then(|| {
            lines.iter().filter_map(|s| {
                let (name, value) = field(head, s);
                eq_lower(name, b"content-length").then_some(value)
            })
        });
        let only = only_length.and_then(|i| lines.get(i)).map(|s| field(head, s).1);
        framing(
            only.into_iter().chain(by_name.into_iter().flatten()),
            seen,
            status,
            version,
            to_head_request,
        )?
    };
    if seen.length && !matches!(framing, Framing::Done) {
        // The body's length goes out as the listener frames it, from this framing; only
        // a bodiless answer (HEAD, 204, 304) passes its `Content-Length` on.
        match only_length {
            Some(i) if i < lines.len() => {
                lines.remove(i);
            }
            _ => {
                let head = &buf[..];
                lines.retain(|s| !eq_lower(field(head, s).0, b"content-length"));
            }
        }
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::new();
    for [ns, ne, vs, ve] in mapped {
        let name = HeaderName::from_bytes(head.get(ns as usize..ne as usize).unwrap_or_default())
            .map_err(|_| "Jira's answer has a malformed header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| "Jira's answer has a malformed header value")?;
        headers.append(name, value);
    }
    let lines = HeaderLines::new(head, lines, seen.dated);
    let keep_alive = !matches!(framing, Framing::ToClose)
        && if version == Version::HTTP_10 {
            seen.keep_alive && !seen.close
        } else {
            !seen.close
        };
    Ok(Parsed::Final(Head {
        status,
        version,
        headers,
        lines,
        framing,
        keep_alive,
    }))
}

/// What an answer's framing headers said.
#[derive(Clone, Copy, Default)]
struct Seen {
    length: bool,
    /// A `Transfer-Encoding`, and whether its last coding is chunked.
    encoding: bool,
    chunked: bool,
    /// The options a `Connection` carried.
    close: bool,
    keep_alive: bool,
    /// A `Date` passes on.
    dated: bool,
}

/// RFC 9112 §6.3, refusing what could be read two ways.
fn framing<'a>(
    lengths: impl Iterator<Item = &'a [u8]>,
    seen: Seen,
    status: StatusCode,
    version: Version,
    to_head: bool,
) -> Result<Framing, String> {
    if to_head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    if seen.encoding {
        if seen.length {
            return Err("Jira's answer has both Transfer-Encoding and Content-Length".into());
        }
        if version == Version::HTTP_10 {
            return Err("Jira's HTTP/1.0 answer has a Transfer-Encoding".into());
        }
        // Not chunked last: the body runs to the end of the connection.
        return Ok(if seen.chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::ToClose
        });
    }
    if seen.length {
        let length = crate::wire::content_length(lengths).map_err(|e| format!("Jira's answer: {e}"))?;
        return Ok(length.map_or(Framing::ToClose, Framing::Length));
    }
    Ok(Framing::ToClose)
}

/// An answer's body, read from Jira as it is polled; read to its end, it gives its
/// connection back to the pool.
pub struct Pooled {
    conn: Option<Conn>,
    shard: Arc<Shard>,
    framing: Framing,
    keep_alive: bool,
    /// The answer's fields passed on as Jira wrote them, until taken.
    lines: Option<HeaderLines>,
}

impl Pooled {
    /// The answer's fields that pass as Jira wrote them (the rest are in its map).
    pub fn take_lines(&mut self) -> Option<HeaderLines> {
        self.lines.take()
    }

    fn fail(&mut self, msg: String) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // The connection is mid-answer: it closes.
        self.conn = None;
        self.framing = Framing::Failed;
        Poll::Ready(Some(Err(msg.into())))
    }

    fn give_back(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            // Bytes after the answer's end would belong to no request: such a
            // connection closes.
            self.shard.checkin(conn);
        }
    }
}

impl hyper::body::Body for Pooled {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.step(&mut conn.buf) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Step::End) => {
                    if this.framing == Framing::Done {
                        this.give_back();
                    }
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => return this.fail(format!("Jira's answer: {e}")),
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::ToClose => {
                    this.keep_alive = false;
                    this.framing = Framing::Done;
                }
                Ok(0) => return this.fail("Jira closed the connection before its answer's end".into()),
                Ok(_) => {}
                Err(e) => return this.fail(format!("reading Jira's answer: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0) | Framing::Failed)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done | Framing::Failed => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // A body dropped part-read leaves bytes on the wire: that connection closes.
        if matches!(self.framing, Framing::Done | Framing::Length(0)) {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8], head_request: bool) -> Result<Parsed, String> {
        parse_head(&mut BytesMut::from(raw), head_request)
    }

    #[tokio::test]
    async fn set_fields_replace_the_callers_and_checked_values_that_could_split_a_head_are_refused() {
        let req = http::Request::get("/rest/api/2/myself")
            .header("host", "proxy.example")
            .header("x-forwarded-user", "mallory")
            .header("authorization", "Basic bWFsbG9yeTp4")
            .header("accept", "application/json")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        let (host, user) = (http::header::HOST, HeaderName::from_static("x-forwarded-user"));
        let authorization = http::header::AUTHORIZATION;
        let mut set = Fields::new();
        set.push(&host, Some(Cow::Borrowed(b"jira.internal:8080")))
            .expect("room");
        set.push_checked(&user, Some(Cow::Borrowed(b"alice")))
            .expect("a valid value");
        set.push(&authorization, None).expect("room");
        let out = Outgoing::encode(&parts, crate::error::full(Bytes::new()), &set)
            .await
            .expect("encoded");
        assert_eq!(
            String::from_utf8_lossy(&out.wire),
            "GET /rest/api/2/myself HTTP/1.1\r\naccept: application/json\r\n\
             host: jira.internal:8080\r\nx-forwarded-user: alice\r\n\r\n"
        );
        // A value with a line break or another control would end the field early and
        // start one of the caller's choosing: refused, never written.
        for bad in [
            &b"alice\r\nx-forwarded-user: admin"[..],
            b"alice\n",
            b"al\x00ice",
            b"al\x7fice",
        ] {
            assert!(
                Fields::new().push_checked(&user, Some(Cow::Borrowed(bad))).is_err(),
                "{bad:?}"
            );
        }
        assert!(
            Fields::new()
                .push_checked(&user, Some(Cow::Borrowed("Zoë".as_bytes())))
                .is_ok()
        );
        // Past the room a field is refused, not left out.
        let mut full = Fields::new();
        for _ in 0..Fields::ROOM {
            full.push(&user, None).expect("room");
        }
        assert!(full.push(&user, None).is_err());
        assert_eq!(full.as_slice().len(), Fields::ROOM);
    }

    fn framing_of(raw: &str) -> Result<(Framing, bool), String> {
        match parse(raw.as_bytes(), false)? {
            Parsed::Final(h) => Ok((h.framing, h.keep_alive)),
            _ => Err("not final".into()),
        }
    }

    #[test]
    fn answers_are_framed_by_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                Framing::Length(12),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 12, 12\r\nContent-Length: 12\r\n\r\n",
                Framing::Length(12),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                Framing::Chunked(Chunk::Size),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Framing::ToClose,
                false,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", Framing::ToClose, false),
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                Framing::Done,
                true,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", Framing::Done, true),
            (
                "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Framing::Length(1),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                Framing::Length(1),
                true,
            ),
        ];
        for (raw, framing, keep_alive) in cases {
            assert_eq!(framing_of(raw), Ok((framing, keep_alive)), "{raw:?}");
        }
        match parse(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true) {
            Ok(Parsed::Final(h)) => assert_eq!(h.framing, Framing::Done, "a HEAD answer has no body"),
            _ => panic!("HEAD answer"),
        }
    }

    #[test]
    fn answers_that_could_be_read_two_ways_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(framing_of(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn interim_answers_are_skipped_and_heads_taken_off_the_buffer() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: b\r\n\r\nbody"[..]);
        assert!(matches!(parse_head(&mut buf, false), Ok(Parsed::Interim)));
        match parse_head(&mut buf, false) {
            Ok(Parsed::Final(h)) => {
                assert_eq!(h.status, 201);
                assert_eq!(h.lines.get("x-a"), Some(&b"b"[..]));
            }
            _ => panic!("final answer"),
        }
        assert_eq!(&buf[..], b"body");
        let mut part = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A"[..]);
        assert!(matches!(parse_head(&mut part, false), Ok(Parsed::Partial)));
        assert_eq!(part.len(), 20, "a partial head stays on the buffer");
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_stay_on_the_connection() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal , x-other\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nX-AUSERNAME: alice\r\n\r\n";
        match parse(raw.as_bytes(), false) {
            Ok(Parsed::Final(h)) => {
                let mut names: Vec<String> = h.headers.keys().map(|n| n.to_string()).collect();
                names.extend(h.lines.iter().map(|(n, _)| String::from_utf8_lossy(n).into_owned()));
                names.sort_unstable();
                assert_eq!(names, ["Content-Type", "x-ausername"]);
                assert_eq!((h.framing, h.keep_alive), (Framing::Chunked(Chunk::Size), true));
            }
            _ => panic!("final answer"),
        }
    }

    #[test]
    fn fields_the_proxy_reads_are_mapped_and_the_rest_pass_as_written() {
        let raw = "HTTP/1.1 200 OK\r\nServer: Jira\r\nX-AREQUESTID: 1x2\r\nContent-Length: 2\r\nContent-Type: application/json;charset=UTF-8\r\nSet-Cookie: JSESSIONID=A; Path=/\r\nX-Seraph-LoginReason: OK\r\nX-RateLimit-Remaining: 9\r\nCache-Control:no-cache\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\nX-Request-Id: jira-side\r\nX-AUSERNAME: alice\r\nVary:   Accept  \r\n\r\n";
        let Ok(Parsed::Final(h)) = parse(raw.as_bytes(), false) else {
            panic!("final answer");
        };
        let mut mapped: Vec<&str> = h.headers.keys().map(HeaderName::as_str).collect();
        mapped.sort_unstable();
        assert_eq!(
            mapped,
            [
                "set-cookie",
                "x-arequestid",
                "x-ausername",
                "x-ratelimit-remaining",
                "x-request-id",
                "x-seraph-loginreason"
            ]
        );
        assert!(h.lines.dated);
        // The length is the listener's to write, from the framing.
        assert_eq!(h.framing, Framing::Length(2));
        assert_eq!(h.lines.get("content-length"), None);
        let mut out = Vec::new();
        h.lines.write_to(&mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Server: Jira\r\nContent-Type: application/json;charset=UTF-8\r\nCache-Control: no-cache\r\nDate: Sat, 05 Dec 2026 08:00:00 GMT\r\nVary: Accept\r\n"
        );
        let mut map = HeaderMap::new();
        h.lines.into_map(&mut map);
        assert_eq!(map.len(), 5);
        assert_eq!(map["cache-control"], "no-cache");
        assert_eq!(map["vary"], "Accept");
        // A bodiless answer passes its length on.
        let Ok(Parsed::Final(h)) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nX-A: 1\r\n\r\n", true) else {
            panic!("final answer");
        };
        assert_eq!(h.lines.get("Content-Length"), Some(&b"7"[..]));
    }
}
