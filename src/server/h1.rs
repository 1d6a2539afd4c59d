//! HTTP/1.1 from callers (RFC 9112), served inline by the task that owns the connection:
//! a request head is read and parsed, the request runs, and its answer is written, head
//! and first bytes of body in one write, with no task, channel or hand-off between them.
//! A request body is read off the connection as the request path polls it.
//!
//! Framing follows RFC 9112 §6.3, refusing what could be read two ways: a request with
//! both `Transfer-Encoding` and `Content-Length`, with `Content-Length`s that differ, or
//! with a `Transfer-Encoding` on HTTP/1.0 gets a 400 and the connection closes, so no
//! byte of it can be read as the next request; so does one whose transfer codings do
//! not end in `chunked`. Any transfer coding but `chunked` alone gets a 501. A caller that opens with HTTP/2's preface is handed to the HTTP/2 server.
//!
//! An idle connection holds no buffer: reads and writes go through one spare buffer per
//! listener thread, kept by a connection only while it has bytes in it.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::Sleep;

use crate::error::{Body, BodyError};
use crate::upstream::headers::{X_REQUEST_ID, list_items};
use crate::wire::{Chunk, Framing, HeaderLines, Step, hex_line, itoa};

/// HTTP/2's connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Room made in the read buffer before each read.
const READ_ROOM: usize = 8 << 10;
/// Answer bytes gathered before a write.
const WRITE_GATHER: usize = 64 << 10;
/// A data frame this large is written as it is, not copied into the write buffer.
const WRITE_DIRECT: usize = 16 << 10;
/// After an answer that leaves the request body unread, the connection closes; until
/// then, this much more of the body is read and dropped, so the caller sees the answer
/// rather than a reset (the way nginx's lingering close works).
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The listener's limits on a request head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From waiting for a request to its head's last byte.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// How a connection ended.
pub enum Ended<S> {
    Closed,
    /// The caller opened with HTTP/2's preface: the connection, and the bytes read so far.
    Http2(S, Bytes),
}

/// An answer: the response, the fields of Jira's answer that pass as Jira wrote them,
/// and the request's id, written last as `X-Request-Id` (the response's map holds none).
/// The id goes on the wire from its own value: no map insert per request.
pub struct Answer {
    pub response: Response<Body>,
    pub lines: Option<HeaderLines>,
    pub request_id: Option<crate::pipeline::admit::RequestId>,
}

impl Answer {
    pub fn new(response: Response<Body>) -> Answer {
        Answer {
            response,
            lines: None,
            request_id: None,
        }
    }

    /// The response with every field in its map, in lower case (HTTP/2).
    pub fn into_response(self) -> Response<Body> {
        let mut response = self.response;
        if let Some(lines) = self.lines {
            lines.into_map(response.headers_mut());
        }
        if let Some(id) = self.request_id {
            response.headers_mut().insert(X_REQUEST_ID, id.to_value());
        }
        response
    }
}

/// The request path, one call per request.
pub type Service = Box<dyn Fn(Request<Body>) -> Pin<Box<dyn Future<Output = Answer> + Send>> + Send + Sync>;

thread_local! {
    /// A read buffer for whichever connection on this thread reads next.
    static SPARE_READ: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    /// Where this thread's request heads are copied, one after another (see `copy_head`).
    static HEADS: RefCell<BytesMut> = RefCell::new(BytesMut::new());
    /// A write buffer, likewise.
    static SPARE_WRITE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The `Date` value for the current second.
    static DATE_NOW: RefCell<(u64, Option<HeaderValue>)> = const { RefCell::new((u64::MAX, None)) };
}

/// A connection the server runs on: what it needs beyond reading and writing.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    /// Sends small writes at once (`TCP_NODELAY`). Called before a write that more
    /// writes follow on the connection; the default does nothing (already so, or no
    /// socket).
    fn no_delay(&mut self) {}
    /// Whether closing must first shut the write side down: a TLS connection says so with
    /// its `close_notify`, while a TCP socket's close sends the same FIN by itself.
    fn shutdown_on_close(&self) -> bool {
        true
    }
}

impl Transport for tokio::net::TcpStream {
    fn no_delay(&mut self) {
        let _ = self.set_nodelay(true);
    }

    fn shutdown_on_close(&self) -> bool {
        false
    }
}

/// Set to send at once when accepted: its handshake takes several flights.
impl Transport for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {}

impl Transport for tokio::io::DuplexStream {}

/// Serves HTTP/1.1 requests on `io` until the caller or `stop` ends it.
pub async fn serve<S: Transport>(io: S, limits: Limits, service: Service, stop: watch::Receiver<bool>) -> Ended<S> {
    let mut conn = Connection {
        io,
        buf: BytesMut::new(),
        limits,
        deadline: Box::pin(tokio::time::sleep(limits.header_read_timeout)),
        rearm: false,
        no_delay: false,
    };
    let mut first = true;
    // One wait for the shutdown for the connection's life, not one per request: each
    // new wait would join (and each dropped one leave) the channel's list of waiters.
    let mut watch = stop.clone();
    let stopped = watch.changed();
    let mut stopped = std::pin::pin!(stopped);
    let mut shutdown = Shutdown {
        stop,
        wait: stopped.as_mut(),
        over: false,
    };
    loop {
        let head = match conn.next_head(first, &mut shutdown).await {
            Next::Head(head) => head,
            Next::Closed => return Ended::Closed,
            Next::Http2 => {
                // HTTP/2 writes many frames on one connection.
                conn.no_delay();
                let rest = std::mem::take(&mut conn.buf).freeze();
                return Ended::Http2(conn.io, rest);
            }
            Next::Refuse(status, message) => {
                let answer = crate::error::jira_error(status, message);
                let _ = conn
                    .answer(Answer::new(answer), &Method::GET, Version::HTTP_11, false)
                    .await;
                // The caller may still be sending what was refused: read on a while, so it
                // reads the refusal rather than a reset.
                conn.close(true).await;
                return Ended::Closed;
            }
        };
        first = false;
        let Head {
            request,
            mut framing,
            keep_alive,
            expect_continue,
        } = head;
        let (method, version) = (request.method().clone(), request.version());
        let (answer, body_read) = if framing.is_done() {
            let answer = service(request.map(|()| crate::error::empty())).await;
            (Some(answer), true)
        } else {
            let feed = Arc::new(Mutex::new(Feed::default()));
            let body = RequestBody {
                feed: feed.clone(),
                left: match framing {
                    Framing::Length(n) => Some(n),
                    _ => None,
                },
            };
            let answer = service(request.map(|()| http_body_util::BodyExt::boxed(body)));
            let answer = conn.run_with_body(answer, &feed, &mut framing, expect_continue).await;
            // Bytes of the body already here are dropped; a body still on the wire
            // means the connection closes after the answer.
            let read = conn.drain_buffered(&mut framing);
            (answer, read)
        };
        let keep_alive = keep_alive && body_read && !shutdown.begun();
        let Some(answer) = answer else {
            conn.close(false).await;
            return Ended::Closed;
        };
        match conn.answer(answer, &method, version, keep_alive).await {
            Ok(true) => {}
            Ok(false) => {
                conn.close(!body_read).await;
                return Ended::Closed;
            }
            Err(_) => return Ended::Closed,
        }
    }
}

/// The listener's shutdown as one connection sees it.
struct Shutdown<'a> {
    stop: watch::Receiver<bool>,
    /// The connection's one wait for a change (see `serve`).
    wait: Pin<&'a mut (dyn Future<Output = Result<(), watch::error::RecvError>> + Send)>,
    /// The wait has ended: the shutdown began, or the listener is gone.
    over: bool,
}

impl Shutdown<'_> {
    fn begun(&self) -> bool {
        self.over || *self.stop.borrow()
    }

    /// True once the shutdown has begun; otherwise wakes `cx` when it does.
    fn poll_begun(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.over && self.wait.as_mut().poll(cx).is_ready() {
            // Never polled again: the wait is over.
            self.over = true;
        }
        self.over
    }
}

struct Connection<S> {
    io: S,
    /// Bytes read and not yet used; no memory of its own while empty.
    buf: BytesMut,
    limits: Limits,
    /// The header read deadline, set when the connection opens and then only when it
    /// passes (see `next_head`): no clock reading and no timer change per request.
    deadline: Pin<Box<Sleep>>,
    /// A wait for a new head began since the deadline was set.
    rearm: bool,
    /// `Transport::no_delay` was called. Not before a write that more writes follow (an
    /// answer on a kept connection, a body sent in parts, a `100 Continue`): a one-answer
    /// connection's single write goes out at once anyway (nothing of it waits for an
    /// acknowledgement, and closing pushes out what is left), so it is spared the call.
    no_delay: bool,
}

// Moved once per request: boxing the head would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(Head),
    Closed,
    Http2,
    Refuse(StatusCode, &'static str),
}

/// A parsed request head, and how its body is framed.
struct Head {
    request: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expect_continue: bool,
}

impl<S: Transport> Connection<S> {
    fn no_delay(&mut self) {
        if !self.no_delay {
            self.io.no_delay();
            self.no_delay = true;
        }
    }

    /// Reads onto the buffer (borrowing the thread's spare one when empty); `Ok(0)` is
    /// the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            self.buf = SPARE_READ.with(|s| std::mem::take(&mut *s.borrow_mut()));
        }
        if self.buf.capacity() - self.buf.len() < READ_ROOM / 4 {
            self.buf.reserve(READ_ROOM);
        }
        let r = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        self.return_spare();
        r
    }

    /// An empty buffer goes back to the thread, for the next connection that reads.
    fn return_spare(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            let mut mine = std::mem::take(&mut self.buf);
            mine.clear();
            SPARE_READ.with(|s| {
                let mut s = s.borrow_mut();
                if s.capacity() < mine.capacity() {
                    *s = mine;
                }
            });
        }
    }

    /// Waits for the next request head: the first byte within the header read timeout,
    /// and the whole head too. The first head has the timeout from the connection's
    /// start. A later one has at least the timeout and less than twice it: the deadline
    /// set for an earlier wait, when it passes, is set again a full timeout ahead if a
    /// new wait began since. A request thus costs no timer change (nginx, too, leaves a
    /// timer alone when it would move by little).
    async fn next_head(&mut self, first: bool, shutdown: &mut Shutdown<'_>) -> Next {
        if shutdown.begun() {
            return Next::Closed;
        }
        let timeout = self.limits.header_read_timeout;
        self.rearm |= !first;
        poll_fn(|cx| {
            loop {
                if !self.buf.is_empty() {
                    if first && self.buf.len() < PREFACE.len() && PREFACE.starts_with(&self.buf) {
                        // Perhaps HTTP/2: wait for the whole preface.
                    } else if first && self.buf.starts_with(PREFACE) {
                        return Poll::Ready(Next::Http2);
                    } else {
                        match parse_head(&mut self.buf, &self.limits) {
                            Ok(Some(head)) => {
                                self.return_spare();
                                return Poll::Ready(Next::Head(head));
                            }
                            Ok(None) => {}
                            Err((status, message)) => return Poll::Ready(Next::Refuse(status, message)),
                        }
                    }
                }
                match self.poll_fill(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Next::Closed),
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Pending => break,
                }
            }
            while self.deadline.as_mut().poll(cx).is_ready() {
                if !std::mem::take(&mut self.rearm) {
                    return Poll::Ready(Next::Closed);
                }
                self.deadline
                    .as_mut()
                    .reset(crate::time::deadline(tokio::time::Instant::now().into_std(), timeout));
            }
            // A shutdown closes a connection between requests, not one midway through a head.
            if self.buf.is_empty() && shutdown.poll_begun(cx) {
                return Poll::Ready(Next::Closed);
            }
            Poll::Pending
        })
        .await
    }

    /// Runs `answer` while feeding it the request body from the connection as it asks.
    /// `None` when the connection broke while a `100 Continue` was written.
    async fn run_with_body(
        &mut self,
        mut answer: Pin<Box<dyn Future<Output = Answer> + Send>>,
        feed: &Arc<Mutex<Feed>>,
        framing: &mut Framing,
        expect_continue: bool,
    ) -> Option<Answer> {
        if expect_continue {
            // The answer follows it.
            self.no_delay();
        }
        let mut continue_left: &[u8] = if expect_continue {
            b"HTTP/1.1 100 Continue\r\n\r\n"
        } else {
            b""
        };
        let answer = poll_fn(|cx| {
            loop {
                if let Poll::Ready(a) = answer.as_mut().poll(cx) {
                    return Poll::Ready(Some(a));
                }
                let mut f = feed.lock().unwrap_or_else(PoisonError::into_inner);
                if !f.conn_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    f.conn_waker = Some(cx.waker().clone());
                }
                if !f.wanted || f.chunk.is_some() || f.ended {
                    return Poll::Pending;
                }
                drop(f);
                // The caller waits for a 100 before sending the body (RFC 9110 §10.1.1);
                // it is sent only once the body is asked for.
                while !continue_left.is_empty() {
                    match Pin::new(&mut self.io).poll_write(cx, continue_left) {
                        Poll::Ready(Ok(n)) if n > 0 => continue_left = &continue_left[n..],
                        Poll::Ready(_) => return Poll::Ready(None),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                let got = loop {
                    match framing.step(&mut self.buf) {
                        Ok(Step::Data(d)) => break Some(Ok(d)),
                        Ok(Step::End) => break None,
                        Err(e) => break Some(Err(BodyError::from(format!("the request body: {e}")))),
                        Ok(Step::More) => match self.poll_fill(cx) {
                            Poll::Ready(Ok(0)) => {
                                *framing = Framing::Failed;
                                break Some(Err("the caller closed the connection within its request body".into()));
                            }
                            Poll::Ready(Ok(_)) => {}
                            Poll::Ready(Err(e)) => {
                                *framing = Framing::Failed;
                                break Some(Err(format!("reading the request body: {e}").into()));
                            }
                            Poll::Pending => return Poll::Pending,
                        },
                    }
                };
                let mut f = feed.lock().unwrap_or_else(PoisonError::into_inner);
                f.wanted = false;
                match got {
                    Some(c) => f.chunk = Some(c),
                    None => f.ended = true,
                }
                if let Some(w) = f.body_waker.take()
                    && !w.will_wake(cx.waker())
                {
                    w.wake();
                }
            }
        })
        .await;
        // The request is answered: a body still held somewhere ends here, cut short.
        let mut f = feed.lock().unwrap_or_else(PoisonError::into_inner);
        if !f.ended && f.chunk.is_none() && !framing.is_done() {
            f.chunk = Some(Err("the request was answered before its body was read".into()));
        }
        f.ended = true;
        answer
    }

    /// Drops body bytes already read; true when the body is read to its end.
    fn drain_buffered(&mut self, framing: &mut Framing) -> bool {
        loop {
            match framing.step(&mut self.buf) {
                Ok(Step::Data(_)) => {}
                Ok(Step::End) => return *framing == Framing::Done,
                Ok(Step::More) | Err(_) => return false,
            }
        }
    }

    /// Writes `answer`; `Ok(true)` when the connection can carry another request.
    async fn answer(
        &mut self,
        Answer {
            response: answer,
            lines,
            request_id,
        }: Answer,
        method: &Method,
        version: Version,
        mut keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = answer.into_parts();
        let status = parts.status;
        let bodiless = method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let mut out = SPARE_WRITE.with(|s| std::mem::take(&mut *s.borrow_mut()));
        out.clear();
        out.reserve(1024);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut length: Option<Option<u64>> = None;
        let mut dated = false;
        for (name, value) in &parts.headers {
            // The framing and the connection's options are this hop's own.
            if name == TRANSFER_ENCODING || name == CONNECTION || name.as_str() == "keep-alive" {
                continue;
            }
            if name == CONTENT_LENGTH {
                if length.is_some() {
                    continue;
                }
                length = Some(crate::wire::parse_length(value.as_bytes()));
            }
            dated |= name == DATE;
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // Jira's fields that the proxy passes on as written (see `wire::HeaderLines`).
        if let Some(lines) = &lines {
            dated |= lines.dated;
            lines.write_to(&mut out);
        }
        if let Some(id) = &request_id {
            out.extend_from_slice(b"x-request-id: ");
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !dated {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(http_date().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        // How the body goes: its declared or known length, else chunked (HTTP/1.1) or
        // to the connection's close (HTTP/1.0).
        let mut chunked = false;
        let length = match length {
            Some(Some(n)) => Some(n),
            // A length that is no number: the body's own framing decides.
            Some(None) | None if bodiless => None,
            Some(None) | None => match body.size_hint().exact() {
                Some(n) => {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa(n, &mut [0u8; 20]));
                    out.extend_from_slice(b"\r\n");
                    Some(n)
                }
                None if version == Version::HTTP_11 => {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                    chunked = true;
                    None
                }
                None => {
                    keep_alive = false;
                    None
                }
            },
        };
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if keep_alive {
            self.no_delay();
        }
        let result = if bodiless {
            drop(body);
            self.io.write_all(&out).await.map(|()| keep_alive)
        } else {
            self.write_body(&mut body, &mut out, length, chunked)
                .await
                .map(|whole| keep_alive && whole)
        };
        out.clear();
        if out.capacity() <= 4 * WRITE_GATHER {
            SPARE_WRITE.with(|s| {
                let mut s = s.borrow_mut();
                if s.capacity() < out.capacity() {
                    *s = out;
                }
            });
        }
        result
    }

    /// Writes the body after the head in `out`, gathering small frames into one write.
    /// `Ok(false)` when the body broke off or did not match its length: the caller can
    /// only tell by the connection closing.
    async fn write_body(
        &mut self,
        body: &mut Body,
        out: &mut Vec<u8>,
        length: Option<u64>,
        chunked: bool,
    ) -> io::Result<bool> {
        let mut sent = 0u64;
        loop {
            // A frame that is ready joins the gathered bytes; before waiting for one that
            // is not, what is gathered goes out.
            let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    self.no_delay();
                    self.io.write_all(out).await?;
                    out.clear();
                    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "an answer's body broke off");
                    self.io.write_all(out).await?;
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) if !d.is_empty() => d,
                    // Trailers are not forwarded.
                    _ => continue,
                },
            };
            let mut data = data;
            if let Some(n) = length {
                let room = n - sent;
                if data.len() as u64 > room {
                    // More than the length said: cut at the length and close.
                    data.truncate(room as usize);
                    out.extend_from_slice(&data);
                    self.io.write_all(out).await?;
                    return Ok(false);
                }
            }
            sent += data.len() as u64;
            if chunked {
                out.extend_from_slice(hex_line(data.len(), &mut [0u8; 18]));
            }
            if data.len() >= WRITE_DIRECT {
                self.no_delay();
                self.io.write_all(out).await?;
                out.clear();
                self.io.write_all(&data).await?;
            } else {
                out.extend_from_slice(&data);
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            if out.len() >= WRITE_GATHER {
                self.no_delay();
                self.io.write_all(out).await?;
                out.clear();
            }
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        self.io.write_all(out).await?;
        Ok(length.is_none_or(|n| n == sent))
    }

    /// Closes the connection: its write side first, then, when the caller may still be
    /// sending a body nobody read, reading and dropping it for a while so the caller
    /// reads the answer rather than a reset.
    async fn close(&mut self, linger: bool) {
        let timeout = self.limits.header_read_timeout;
        if !linger && !self.io.shutdown_on_close() {
            return;
        }
        if tokio::time::timeout(timeout, self.io.shutdown()).await.is_err() || !linger {
            return;
        }
        let _ = tokio::time::timeout(LINGER_TIME, async {
            let mut seen = 0;
            // On the heap: room in the connection's state would be kept by every idle
            // connection.
            let mut scratch = vec![0u8; 4096];
            while seen < LINGER_BYTES {
                let mut rb = ReadBuf::new(&mut scratch);
                match poll_fn(|cx| Pin::new(&mut self.io).poll_read(cx, &mut rb)).await {
                    Ok(()) if !rb.filled().is_empty() => seen += rb.filled().len(),
                    _ => break,
                }
            }
        })
        .await;
    }
}

/// What a request's fields say of its framing and its connection.
#[derive(Default)]
struct Flags {
    close: bool,
    keep_alive_asked: bool,
    expect_continue: bool,
    lengths: usize,
    encoded: bool,
    hosts: usize,
}

impl Flags {
    /// Notes one field; `codings` gathers every transfer coding, in order. True when the
    /// field is the listener's alone: a `Connection` that only says `close` or
    /// `keep-alive` (what nearly every client that sends one says) names no other field
    /// and is read here, so it never reaches the request's map.
    fn note(&mut self, name: &HeaderName, value: &HeaderValue, codings: &mut Vec<bool>) -> bool {
        if name == CONNECTION {
            let mut only_options = true;
            for t in list_items(value.as_bytes()) {
                let close = crate::wire::eq_lower(t, b"close");
                let keep_alive = crate::wire::eq_lower(t, b"keep-alive");
                self.close |= close;
                self.keep_alive_asked |= keep_alive;
                only_options &= close || keep_alive;
            }
            return only_options;
        } else if name == CONTENT_LENGTH {
            self.lengths += 1;
        } else if name == TRANSFER_ENCODING {
            // Codings of every field in order: the last must be `chunked` (RFC 9112 §6.3),
            // and `chunked` is the only one understood (§6.1).
            for t in list_items(value.as_bytes()) {
                codings.push(crate::wire::eq_lower(t, b"chunked"));
            }
            self.encoded = true;
        } else if name == EXPECT {
            self.expect_continue |= crate::wire::eq_lower(value.as_bytes(), b"100-continue");
        } else if name == HOST {
            self.hosts += 1;
        }
        false
    }
}

/// The names of the fields most requests carry, as written (any letter case): theirs is
/// a constant, where parsing a name would copy it in lower case and look it up among
/// every standard name. Any other name is parsed.
fn known_name(raw: &[u8]) -> Option<HeaderName> {
    use http::header::{
        ACCEPT, ACCEPT_ENCODING, ACCEPT_LANGUAGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, COOKIE, ORIGIN, REFERER,
        USER_AGENT,
    };
    let is = |name: &str| crate::wire::eq_lower(raw, name.as_bytes());
    Some(match raw.len() {
        4 if is("host") => HOST,
        6 if is("accept") => ACCEPT,
        6 if is("cookie") => COOKIE,
        6 if is("origin") => ORIGIN,
        6 if is("expect") => EXPECT,
        7 if is("referer") => REFERER,
        10 if is("user-agent") => USER_AGENT,
        10 if is("connection") => CONNECTION,
        12 if is("content-type") => CONTENT_TYPE,
        13 if is("authorization") => AUTHORIZATION,
        13 if is("cache-control") => CACHE_CONTROL,
        14 if is("content-length") => CONTENT_LENGTH,
        15 if is("accept-encoding") => ACCEPT_ENCODING,
        15 if is("accept-language") => ACCEPT_LANGUAGE,
        17 if is("transfer-encoding") => TRANSFER_ENCODING,
        _ => return None,
    })
}

/// Parses the request head at the start of `buf`, taking it off the buffer when whole
/// (`Ok(None)` while it is not). Refusals are the status and message to answer with.
fn parse_head(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Head>, (StatusCode, &'static str)> {
    const TOO_LARGE: (StatusCode, &str) = (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "The request's header fields are too large.",
    );
    const MALFORMED: (StatusCode, &str) = (StatusCode::BAD_REQUEST, "The request is not valid HTTP/1.1.");
    // Left uninitialised: zeroing room for a hundred fields costs more than parsing ten.
    let mut on_stack = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 100];
    let mut on_heap = Vec::new();
    let slots = if limits.max_headers <= on_stack.len() {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap.resize_with(limits.max_headers, std::mem::MaybeUninit::uninit);
        &mut on_heap[..]
    };
    let mut r = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut r, buf, slots) {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_header_bytes => len,
        Ok(httparse::Status::Partial) if buf.len() < limits.max_header_bytes => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(TOO_LARGE),
        Err(_) => return Err(MALFORMED),
    };
    let method = Method::from_bytes(r.method.unwrap_or("").as_bytes()).map_err(|_| MALFORMED)?;
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // The head is copied out whole (the read buffer stays free for the next request),
    // and its names and values are cut from that copy where the parser found them.
    let head = copy_head(&buf[..len]);
    let base = buf.as_ptr() as usize;
    let cut = |s: &[u8]| {
        let from = if s.is_empty() { 0 } else { s.as_ptr() as usize - base };
        head.slice(from..from + s.len())
    };
    let mut flags = Flags::default();
    let mut codings: Vec<bool> = Vec::new();
    let fields = (|| -> Result<(Uri, HeaderMap), (StatusCode, &'static str)> {
        let uri = Uri::from_maybe_shared(cut(r.path.unwrap_or("").as_bytes())).map_err(|_| MALFORMED)?;
        let mut headers = HeaderMap::with_capacity(r.headers.len());
        for h in r.headers.iter() {
            let name = match known_name(h.name.as_bytes()) {
                Some(name) => name,
                None => HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| MALFORMED)?,
            };
            let value = HeaderValue::from_maybe_shared(cut(h.value)).map_err(|_| MALFORMED)?;
            if !flags.note(&name, &value, &mut codings) {
                headers.append(name, value);
            }
        }
        Ok((uri, headers))
    })();
    let _ = buf.split_to(len);
    let (uri, headers) = fields?;
    let Flags {
        close,
        keep_alive_asked,
        expect_continue,
        lengths,
        encoded,
        hosts,
    } = flags;
    if version == Version::HTTP_11 && hosts == 0 {
        return Err((StatusCode::BAD_REQUEST, "The request has no Host header."));
    }
    let framing = match encoded {
        true if lengths > 0 => {
            return Err((
                StatusCode::BAD_REQUEST,
                "The request has both Transfer-Encoding and Content-Length.",
            ));
        }
        true if version == Version::HTTP_10 => {
            return Err((StatusCode::BAD_REQUEST, "An HTTP/1.0 request has a Transfer-Encoding."));
        }
        true if codings.last() != Some(&true) => {
            return Err((
                StatusCode::BAD_REQUEST,
                "The request's transfer coding does not end in chunked.",
            ));
        }
        true if codings.len() == 1 => Framing::Chunked(Chunk::Size),
        true => {
            return Err((
                StatusCode::NOT_IMPLEMENTED,
                "The request's transfer coding is not supported.",
            ));
        }
        false if lengths > 0 => {
            match crate::wire::content_length(headers.get_all(CONTENT_LENGTH).iter().map(HeaderValue::as_bytes)) {
                Ok(Some(n)) => Framing::Length(n),
                _ => return Err((StatusCode::BAD_REQUEST, "The request's Content-Length is not valid.")),
            }
        }
        false => Framing::Done,
    };
    let keep_alive = if version == Version::HTTP_10 {
        keep_alive_asked && !close
    } else {
        !close
    };
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
    }))
}

/// Heads up to this size share the thread's head buffer, this large.
const HEAD_ROOM: usize = 4 << 10;

/// A copy of a request head, in the thread's head buffer where it fits: most heads cost
/// no allocation of their own, where a copy of each would cost two (its bytes, and the
/// count its values share once cut from it). A new buffer is taken when the room left
/// is too small, or the old one reused in place once every head in it has been dropped.
/// So a request still being served keeps its whole buffer alive (4 KiB, not its head's
/// size), and with it the heads of the requests before it on the thread, credentials
/// among them, until it ends; nothing keeps a head past its request but the thread's
/// newest buffer, until later heads overwrite it (as freed memory would be reused).
fn copy_head(head: &[u8]) -> Bytes {
    if head.len() > HEAD_ROOM {
        return Bytes::copy_from_slice(head);
    }
    HEADS.with(|h| {
        let mut h = h.borrow_mut();
        if h.capacity() < head.len() {
            h.reserve(HEAD_ROOM);
        }
        h.extend_from_slice(head);
        h.split().freeze()
    })
}

/// The `Date` of an answer that has none (RFC 9110 §6.6.1), formatted once a second.
fn http_date() -> HeaderValue {
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_NOW.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_none() {
            *d = (secs, HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok());
        }
        d.1.clone()
            .unwrap_or_else(|| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
    })
}

/// Between the connection and a request body: one chunk at a time, read off the
/// connection when the body asks for it.
#[derive(Default)]
struct Feed {
    chunk: Option<Result<Bytes, BodyError>>,
    /// The body asked for a chunk.
    wanted: bool,
    /// No more chunks come.
    ended: bool,
    body_waker: Option<Waker>,
    conn_waker: Option<Waker>,
}

/// A caller's request body, read off its connection as it is polled.
struct RequestBody {
    feed: Arc<Mutex<Feed>>,
    /// Bytes still to come, when the length is known.
    left: Option<u64>,
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let mut f = this.feed.lock().unwrap_or_else(PoisonError::into_inner);
        match f.chunk.take() {
            Some(Ok(data)) => {
                if let Some(left) = &mut this.left {
                    *left = left.saturating_sub(data.len() as u64);
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Some(Err(e)) => {
                f.ended = true;
                return Poll::Ready(Some(Err(e)));
            }
            None if f.ended => return Poll::Ready(None),
            None => {}
        }
        f.wanted = true;
        if !f.body_waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            f.body_waker = Some(cx.waker().clone());
        }
        // Polled from another task than the connection's: wake the connection to read.
        if let Some(w) = &f.conn_waker
            && !w.will_wake(cx.waker())
        {
            w.wake_by_ref();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.left == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// A connection whose first bytes were read already: they are read again first.
pub struct Rewind<S> {
    first: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(first: Bytes, inner: S) -> Rewind<S> {
        Rewind { first, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            let bytes = self.first.split_to(n);
            buf.put_slice(&bytes);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        max_header_bytes: 8192,
        max_headers: 10,
    };

    fn parse(raw: &str) -> Result<Option<Head>, (StatusCode, &'static str)> {
        parse_head(&mut BytesMut::from(raw.as_bytes()), &LIMITS)
    }

    fn status(raw: &str) -> Option<u16> {
        parse(raw).err().map(|(s, _)| s.as_u16())
    }

    #[test]
    fn request_bodies_are_framed_by_rfc_9112() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", Framing::Done, true),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
                Framing::Length(5),
                true,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
                Framing::Chunked(Chunk::Size),
                true,
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n",
                Framing::Done,
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", Framing::Done, false),
            ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Framing::Done, true),
        ];
        for (raw, framing, keep_alive) in cases {
            match parse(raw) {
                Ok(Some(h)) => assert_eq!((h.framing, h.keep_alive), (framing, keep_alive), "{raw:?}"),
                _ => panic!("{raw:?} not parsed"),
            }
        }
    }

    #[test]
    fn a_connection_field_of_options_only_is_the_listeners_and_one_naming_fields_stays() {
        let cases = [
            ("Connection: keep-alive\r\n", None, true),
            ("Connection: Keep-Alive, close\r\n", None, false),
            ("Connection: close\r\nConnection: keep-alive\r\n", None, false),
            ("Connection: close, X-Secret\r\n", Some("close, X-Secret"), false),
            ("Connection: Upgrade\r\n", Some("Upgrade"), true),
        ];
        for (fields, kept, keep_alive) in cases {
            let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}X-Secret: s\r\n\r\n");
            let Ok(Some(h)) = parse(&raw) else {
                panic!("{raw:?} not parsed")
            };
            let seen: Vec<&str> = h
                .request
                .headers()
                .get_all(CONNECTION)
                .iter()
                .map(|v| v.to_str().unwrap_or("?"))
                .collect();
            assert_eq!(seen, kept.into_iter().collect::<Vec<_>>(), "{raw:?}");
            assert_eq!(h.keep_alive, keep_alive, "{raw:?}");
            // Every other field stays for the pipeline (which strips what a kept
            // `Connection` names).
            assert_eq!(
                h.request.headers().get("x-secret").map(|v| v.as_bytes()),
                Some(&b"s"[..])
            );
        }
    }

    #[test]
    fn requests_that_could_be_read_two_ways_are_refused() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
            ),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400),
        ];
        for (raw, code) in cases {
            assert_eq!(status(raw), Some(code), "{raw:?}");
        }
    }

    #[test]
    fn heads_over_the_limits_are_431_and_partial_heads_wait() {
        let many: String = (0..11).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), Some(431));
        let big = "a".repeat(9000);
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {big}\r\n\r\n")),
            Some(431)
        );
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {big}")), Some(431));
        let mut part = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        assert!(matches!(parse_head(&mut part, &LIMITS), Ok(None)));
        assert_eq!(part.len(), 25, "a partial head stays on the buffer");
    }

    /// A loopback TCP connection that counts `no_delay` calls and write shutdowns.
    struct Counted {
        tcp: tokio::net::TcpStream,
        no_delays: Arc<std::sync::atomic::AtomicUsize>,
        shutdowns: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.tcp).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.tcp).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shutdowns.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Pin::new(&mut self.tcp).poll_shutdown(cx)
        }
    }

    impl Transport for Counted {
        fn no_delay(&mut self) {
            self.no_delays.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.tcp.no_delay();
        }
        fn shutdown_on_close(&self) -> bool {
            self.tcp.shutdown_on_close()
        }
    }

    /// A body whose second half comes a moment after its first.
    struct Halves(u8);

    impl hyper::body::Body for Halves {
        type Data = Bytes;
        type Error = BodyError;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
            self.0 += 1;
            match self.0 {
                1 => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first "))))),
                2 => {
                    let waker = cx.waker().clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        waker.wake();
                    });
                    Poll::Pending
                }
                3 => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"second"))))),
                _ => Poll::Ready(None),
            }
        }
    }

    /// Serves `requests` (written at once) on a loopback connection; the bytes the caller
    /// read to the connection's end, and the `no_delay` and shutdown calls.
    async fn over_tcp(requests: &str, streamed: bool) -> (String, usize, usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (tcp, _) = listener.accept().await.expect("accept");
        let no_delays = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shutdowns = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let io = Counted {
            tcp,
            no_delays: no_delays.clone(),
            shutdowns: shutdowns.clone(),
        };
        let service: Service = Box::new(move |_req| {
            Box::pin(async move {
                let body = if streamed {
                    http_body_util::BodyExt::boxed(Halves(0))
                } else {
                    crate::error::full(Bytes::from_static(b"ok"))
                };
                Answer::new(Response::new(body))
            })
        });
        let (_stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve(io, LIMITS, service, stop));
        client.write_all(requests.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        let _ = server.await;
        let count = |c: &Arc<std::sync::atomic::AtomicUsize>| c.load(std::sync::atomic::Ordering::SeqCst);
        (
            String::from_utf8_lossy(&got).into_owned(),
            count(&no_delays),
            count(&shutdowns),
        )
    }

    #[tokio::test]
    async fn small_writes_go_at_once_where_more_writes_follow_and_a_tcp_close_is_one_call() {
        // One answer, then the close: one write, no option set, no shutdown call (the
        // close sends the FIN), and every byte arrives.
        let (got, no_delays, shutdowns) =
            over_tcp("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false).await;
        assert!(got.starts_with("HTTP/1.1 200") && got.ends_with("\r\n\r\nok"), "{got}");
        assert_eq!((no_delays, shutdowns), (0, 0));
        // A kept connection: set once, before the first answer.
        let two = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let (got, no_delays, _) = over_tcp(two, false).await;
        assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{got}");
        assert_eq!(no_delays, 1);
        // A refused request: one write, then the write side shut down before the server
        // reads on a while (so the caller reads the refusal rather than a reset).
        let (got, no_delays, shutdowns) =
            over_tcp("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", false).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
        assert_eq!((no_delays, shutdowns), (0, 1));
        // A body sent in parts, even on a closing connection.
        let (got, no_delays, _) = over_tcp("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", true).await;
        assert!(
            got.contains("first ") && got.contains("second") && got.ends_with("0\r\n\r\n"),
            "{got}"
        );
        assert_eq!(no_delays, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_kept_connection_closes_one_to_two_header_timeouts_after_its_last_request() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let service: Service = Box::new(|_req| {
            Box::pin(async { Answer::new(Response::new(crate::error::full(Bytes::from_static(b"ok")))) })
        });
        let (_stop_tx, stop) = watch::channel(false);
        let _server = tokio::spawn(serve(server, LIMITS, service, stop));
        let mut buf = vec![0u8; 4096];
        // Requests 0.7 s apart keep the connection well past its first timeout (1 s).
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                .await
                .expect("write");
            let n = client.read(&mut buf).await.expect("read");
            let answer = String::from_utf8_lossy(&buf[..n]);
            assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"), "{answer}");
        }
        // Then idle: closed no sooner than one timeout and sooner than two.
        let last = tokio::time::Instant::now();
        let n = client.read(&mut buf).await.expect("read");
        let idle = last.elapsed();
        assert_eq!(n, 0, "closed");
        assert!(
            idle >= LIMITS.header_read_timeout && idle < 2 * LIMITS.header_read_timeout,
            "{idle:?}"
        );
    }

    #[test]
    fn a_whole_head_is_taken_off_the_buffer_and_the_rest_stays() {
        let mut buf =
            BytesMut::from(&b"PUT /x?y=1 HTTP/1.1\r\nHost: a\r\nX-A: b\r\nContent-Length: 4\r\n\r\nbodyGET"[..]);
        let Ok(Some(h)) = parse_head(&mut buf, &LIMITS) else {
            panic!("not parsed")
        };
        assert_eq!(&buf[..], b"bodyGET");
        assert_eq!(h.request.method(), Method::PUT);
        assert_eq!(h.request.uri().path(), "/x");
        assert_eq!(h.request.uri().query(), Some("y=1"));
        assert_eq!(h.request.headers()["x-a"], "b");
        assert_eq!(h.framing, Framing::Length(4));
        let mut buf =
            BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"[..]);
        assert!(matches!(parse_head(&mut buf, &LIMITS), Ok(Some(h)) if h.expect_continue));
    }

    #[test]
    fn heads_sharing_the_threads_buffer_stay_whole_while_held_and_its_room_is_reused() {
        // Heads of many sizes, up to and past the shared room; every third held to the
        // end, the rest dropped at once, so that buffers fill, are replaced while still
        // in use, and are reused in place when free.
        let mut held = Vec::new();
        for i in 0..3000usize {
            let filler = "f".repeat(i * 37 % (HEAD_ROOM + 200));
            let raw = format!("GET /p{i} HTTP/1.1\r\nHost: h{i}\r\nX-Fill: {filler}\r\nX-N: {i}\r\n\r\n");
            let mut buf = BytesMut::from(raw.as_bytes());
            let Ok(Some(h)) = parse_head(
                &mut buf,
                &Limits {
                    max_header_bytes: 64 << 10,
                    ..LIMITS
                },
            ) else {
                panic!("head {i} not parsed")
            };
            assert!(buf.is_empty());
            if i % 3 == 0 {
                held.push((i, filler, h.request));
            }
        }
        for (i, filler, r) in &held {
            assert_eq!(r.uri().path(), format!("/p{i}"));
            assert_eq!(r.headers()["host"], format!("h{i}").as_str());
            assert_eq!(r.headers()["x-fill"], filler.as_str());
            assert_eq!(r.headers()["x-n"], i.to_string().as_str());
        }
        // Once every head is dropped, the buffer's room is used again, not replaced.
        drop(held);
        let at = HEADS.with(|h| h.borrow().as_ptr() as usize);
        let fits = HEADS.with(|h| h.borrow().capacity());
        let small = |n: usize| format!("GET /{n} HTTP/1.1\r\nHost: a\r\n\r\n");
        let mut n = 0;
        let mut used = 0;
        while used + small(n).len() <= fits {
            used += small(n).len();
            let mut buf = BytesMut::from(small(n).as_bytes());
            assert!(matches!(parse_head(&mut buf, &LIMITS), Ok(Some(_))));
            n += 1;
        }
        let mut buf = BytesMut::from(small(n).as_bytes());
        assert!(matches!(parse_head(&mut buf, &LIMITS), Ok(Some(_))));
        let start = HEADS.with(|h| h.borrow().as_ptr() as usize) - small(n).len();
        assert_eq!(
            start,
            at + fits - HEAD_ROOM,
            "a head after the room filled went into the same buffer, from its start"
        );
    }

    #[test]
    fn known_names_are_the_parsed_names_in_any_case_and_near_misses_are_parsed() {
        let known = [
            "host",
            "accept",
            "cookie",
            "origin",
            "expect",
            "referer",
            "user-agent",
            "connection",
            "content-type",
            "authorization",
            "cache-control",
            "content-length",
            "accept-encoding",
            "accept-language",
            "transfer-encoding",
        ];
        for name in known {
            for written in [name.to_owned(), name.to_ascii_uppercase(), {
                let mut alternate = name.as_bytes().to_vec();
                alternate.iter_mut().step_by(2).for_each(|b| b.make_ascii_uppercase());
                String::from_utf8(alternate).expect("ascii")
            }] {
                let parsed = HeaderName::from_bytes(written.as_bytes()).expect("a name");
                assert_eq!(known_name(written.as_bytes()), Some(parsed), "{written}");
            }
            // Changed in one place: never taken for another name.
            for i in 0..name.len() {
                for c in [b'-', b'_', b'x', b'0', b'@', b'`', b'{'] {
                    let mut changed = name.as_bytes().to_vec();
                    changed[i] = c;
                    if let Some(k) = known_name(&changed) {
                        assert_eq!(Some(k), HeaderName::from_bytes(&changed).ok(), "{changed:?}");
                    }
                }
                let mut cut = name.as_bytes().to_vec();
                cut.remove(i);
                assert_eq!(known_name(&cut), None, "{cut:?}");
            }
        }
        assert_eq!(known_name(b"x-request-id"), None);
        // Parsed as any other head: the name the map holds is the same.
        let Ok(Some(h)) = parse("GET / HTTP/1.1\r\nHOST: a\r\nUser-Agent: b\r\nX-Custom: c\r\n\r\n") else {
            panic!("not parsed")
        };
        assert_eq!(h.request.headers()[HOST], "a");
        assert_eq!(h.request.headers()["user-agent"], "b");
        assert_eq!(h.request.headers()["x-custom"], "c");
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let d = http_date();
        let d = d.to_str().unwrap_or("");
        assert_eq!(d.len(), 29, "{d}");
        assert!(d.ends_with(" GMT"), "{d}");
        assert!(httpdate::parse_http_date(d).is_ok(), "{d}");
    }
}
