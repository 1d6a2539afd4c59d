//! HTTP/2 rapid reset (CVE-2023-44487): a client opens streams and cancels each at once,
//! so every stream costs the proxy a request's work (reading it, checking the caller,
//! starting it towards Jira) while it never counts against the stream limit.
//!
//! The HTTP/2 library counts streams cancelled before the server took them up, but a
//! server quick enough to take each stream up before its cancel arrives never sees one
//! there. So each connection also keeps its own tally, whatever the timing: a stream
//! cancelled before its answer adds two, and so does one whose request body the client
//! cut off (the proxy then answers at once, to nobody); a stream answered takes one off
//! (never below zero, so answers do not bank credit for a later burst), and so does each
//! second that passes (never below zero either, so quiet time banks nothing). When the tally
//! reaches the connection's budget the connection is shut down: GOAWAY, so the client
//! knows which of its streams were not served and may retry them on a new connection,
//! then closed a second later whatever is still open; meanwhile every new stream is
//! answered 503 at once, unserved. A client that cancels what it has open (a page left,
//! a search typed over) stays far below the budget, and one that cancels at most one
//! stream in three, spread out, never gets there, nor does a connection kept open for
//! hours that cancels less than once a second; a client that wants more cancellations
//! must pay for two full answers, or a second, for each one.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// What a cancel adds to the tally; an answer takes one off.
const CANCEL: u32 = 2;
/// One cancel's worth is forgiven each time this passes (milliseconds).
const FORGIVE_EVERY_MS: u64 = 1_000;

/// One HTTP/2 connection's tally of streams cancelled and not offset by answers.
pub struct Cancels {
    /// Two per cancel, less one per answer.
    owed: AtomicU32,
    /// In the same units: twice the cancels allowed in a row.
    budget: u32,
    /// Set once, when the tally reaches the budget.
    over: AtomicBool,
    closing: Notify,
    /// When the connection began, and how far past it (in milliseconds) time has been
    /// forgiven.
    born: Instant,
    forgiven_to: AtomicU64,
}

impl Cancels {
    /// A budget of twice the streams a client may have open at once (it may cancel all
    /// of them, then open and cancel as many again), and at least 100, cancelled in a row.
    pub fn new(max_concurrent_streams: u32) -> Arc<Self> {
        let cancels = max_concurrent_streams.saturating_mul(2).max(100);
        Arc::new(Cancels {
            owed: AtomicU32::new(0),
            budget: cancels.saturating_mul(CANCEL),
            over: AtomicBool::new(false),
            closing: Notify::new(),
            born: Instant::now(),
            forgiven_to: AtomicU64::new(0),
        })
    }

    /// Watches one stream: cancelled unless [`Stream::answered`] is called before it is
    /// dropped.
    pub fn stream(self: &Arc<Self>) -> Stream {
        Stream {
            cancels: self.clone(),
            cut: None,
            answered: false,
        }
    }

    /// Completes once the tally has reached the budget (at once if it already has).
    pub async fn exceeded(&self) {
        self.closing.notified().await
    }

    /// Whether the tally has reached the budget: the connection is being shut down, and
    /// new streams are not served.
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// The cancels not offset by answers (two answers offset one cancel).
    pub fn owed(&self) -> u32 {
        self.owed.load(Ordering::Relaxed) / CANCEL
    }

    /// Takes one cancel's worth off the tally for each second since it last did (the
    /// seconds spent at zero are used up, not saved). Done as a cancel is counted: only a
    /// cancel can bring the tally to the budget.
    fn forgive(&self, now: Instant) {
        let at = u64::try_from(now.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX);
        let to = self.forgiven_to.load(Ordering::Relaxed);
        let seconds = at.saturating_sub(to) / FORGIVE_EVERY_MS;
        if seconds == 0 {
            return;
        }
        // One thread takes these seconds; another that raced it finds them taken.
        let taken = to.saturating_add(seconds * FORGIVE_EVERY_MS);
        if self
            .forgiven_to
            .compare_exchange(to, taken, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let worth = u32::try_from(seconds).unwrap_or(u32::MAX).saturating_mul(CANCEL);
            // Past the budget the tally stays there: the connection is being shut down.
            let _ = self.owed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.budget).then(|| n.saturating_sub(worth))
            });
        }
    }

    fn cancelled(&self, now: Instant) {
        self.forgive(now);
        // Counting stops at the budget: the connection is being shut down.
        let before = self.owed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < self.budget).then(|| n.saturating_add(CANCEL).min(self.budget))
        });
        if let Ok(n) = before
            && n.saturating_add(CANCEL) >= self.budget
            && !self.over.swap(true, Ordering::Relaxed)
        {
            // `notify_one` keeps the wake-up for a waiter that has not started waiting.
            self.closing.notify_one();
        }
    }

    fn answered(&self) {
        let _ = self
            .owed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// One stream being served; dropped unanswered, or with its request body cut off, it
/// counts as cancelled.
pub struct Stream {
    cancels: Arc<Cancels>,
    /// Set when the request body failed (the client reset the stream while sending it).
    cut: Option<Arc<AtomicBool>>,
    answered: bool,
}

impl Stream {
    /// Watches the request body for the client cutting it off. A request without a body
    /// (the usual flood: HEADERS with END_STREAM) is not wrapped.
    pub fn watch_body<B>(&mut self, body: B) -> WatchedBody<B> {
        let cut = Arc::new(AtomicBool::new(false));
        self.cut = Some(cut.clone());
        WatchedBody { body, cut }
    }

    pub fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let cut = self.cut.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        if self.answered && !cut {
            self.cancels.answered();
        } else {
            self.cancels.cancelled(Instant::now());
        }
    }
}

/// A request body that notes when reading it fails.
pub struct WatchedBody<B> {
    body: B,
    cut: Arc<AtomicBool>,
}

impl<B: Body + Unpin> Body for WatchedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &frame {
            self.cut.store(true, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` cancels at the connection's start (a dropped stream reads the clock, and a
    /// slow test machine would see cancels forgiven).
    fn cancel(c: &Arc<Cancels>, n: u32) {
        cancel_at(c, n, 0);
    }

    /// `n` cancels `secs` seconds after the connection's start.
    fn cancel_at(c: &Arc<Cancels>, n: u32, secs: u64) {
        for _ in 0..n {
            c.cancelled(c.born + std::time::Duration::from_secs(secs));
        }
    }

    fn answer(c: &Arc<Cancels>, n: u32) {
        for _ in 0..n {
            c.stream().answered();
        }
    }

    fn is_exceeded(c: &Cancels) -> bool {
        use std::future::Future;
        let fut = std::pin::pin!(c.exceeded());
        let waker = std::task::Waker::noop();
        fut.poll(&mut std::task::Context::from_waker(waker)).is_ready()
    }

    /// A body that fails on its first read, as a reset stream's does.
    struct Failing;

    impl Body for Failing {
        type Data = bytes::Bytes;
        type Error = &'static str;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, &'static str>>> {
            Poll::Ready(Some(Err("stream reset")))
        }
    }

    fn read(body: &mut (impl Body + Unpin)) {
        let waker = std::task::Waker::noop();
        let _ = Pin::new(body).poll_frame(&mut Context::from_waker(waker));
    }

    #[test]
    fn an_answer_to_a_request_whose_body_was_cut_off_counts_as_cancelled() {
        let c = Cancels::new(1);
        let mut s = c.stream();
        let mut body = s.watch_body(Failing);
        read(&mut body);
        s.answered();
        assert_eq!(c.owed(), 1);
        // A body read to its end, then answered: offsets.
        let mut s = c.stream();
        let mut body = s.watch_body(http_body_util::Full::new(bytes::Bytes::from_static(b"x")));
        read(&mut body);
        read(&mut body);
        assert!(body.is_end_stream());
        s.answered();
        assert_eq!(c.owed(), 0);
    }

    #[test]
    fn the_budget_is_twice_the_stream_limit_and_at_least_100_cancels() {
        assert_eq!(Cancels::new(128).budget, 256 * CANCEL);
        assert_eq!(Cancels::new(10).budget, 100 * CANCEL);
        assert_eq!(Cancels::new(u32::MAX).budget, u32::MAX);
    }

    #[test]
    fn cancelling_up_to_the_budget_less_one_is_allowed() {
        let c = Cancels::new(1);
        cancel(&c, 99);
        assert_eq!(c.owed(), 99);
        assert!(!is_exceeded(&c));
        assert!(!c.is_over());
        cancel(&c, 1);
        assert!(c.is_over());
        assert!(is_exceeded(&c));
    }

    #[test]
    fn two_answers_offset_one_cancel_and_answers_bank_no_credit() {
        let c = Cancels::new(1);
        // Answers before any cancel leave nothing to spend later.
        answer(&c, 1_000);
        assert_eq!(c.owed(), 0);
        cancel(&c, 60);
        answer(&c, 60);
        assert_eq!(c.owed(), 30);
        // A client cancelling one stream in three never gets closer to the budget.
        for _ in 0..10_000 {
            cancel(&c, 1);
            answer(&c, 2);
        }
        assert_eq!(c.owed(), 30);
        assert!(!is_exceeded(&c));
        // One cancel for each answer does: the tally grows by one cancel every two streams.
        for _ in 0..138 {
            cancel(&c, 1);
            answer(&c, 1);
        }
        assert_eq!(c.owed(), 99);
        assert!(!is_exceeded(&c));
        cancel(&c, 1);
        assert!(is_exceeded(&c));
        assert!(c.is_over());
        // Past the budget the tally stays there and no second wake-up is stored, even when
        // an answer takes it below and a cancel brings it back.
        cancel(&c, 50);
        assert_eq!(c.owed(), 100);
        answer(&c, 1);
        cancel(&c, 1);
        assert!(!is_exceeded(&c));
        assert!(c.is_over());
    }

    #[test]
    fn a_dropped_stream_counts_as_a_cancel() {
        let c = Cancels::new(1);
        drop(c.stream());
        assert_eq!(c.owed(), 1);
    }

    #[test]
    fn each_second_forgives_one_cancel() {
        let c = Cancels::new(1);
        cancel(&c, 99);
        // Ten seconds on, ten of them are forgiven: ten more are allowed, not eleven.
        cancel_at(&c, 10, 10);
        assert_eq!(c.owed(), 99);
        assert!(!c.is_over());
        cancel_at(&c, 1, 10);
        assert!(c.is_over());
        assert!(is_exceeded(&c));
        // Past the budget, time forgives nothing either.
        cancel_at(&c, 1, 3_600);
        assert_eq!(c.owed(), 100);
    }

    #[test]
    fn quiet_time_banks_no_credit() {
        let c = Cancels::new(1);
        // An hour with no cancel, then a flood: the budget is what it was at the start.
        cancel_at(&c, 99, 3_600);
        assert!(!c.is_over());
        cancel_at(&c, 1, 3_600);
        assert!(c.is_over());
    }

    #[test]
    fn a_connection_cancelling_once_a_second_for_a_day_stays_open() {
        let c = Cancels::new(1);
        for s in 0..86_400 {
            cancel_at(&c, 1, s);
        }
        assert_eq!(c.owed(), 1);
        assert!(!c.is_over());
        // Twice a second is a cancel's worth more than time forgives, each second.
        let mut s = 86_400;
        while !c.is_over() {
            cancel_at(&c, 2, s);
            s += 1;
        }
        assert_eq!(s - 86_400, 99, "reached after 99 seconds");
    }
}
