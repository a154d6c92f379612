//! A minimum data rate for request bodies, in place of a flat body timeout (as Kestrel's
//! `MinRequestBodyDataRate`): a push of any size passes as long as it keeps arriving, and a
//! client that stops sending is cut.
//!
//! This module owns [`RateLimited`], a body wrapper, and its clock. It does not choose the
//! rate, nor the answer to a client that was cut (the request path maps [`BodyTooSlow`],
//! found in the body's error, to its answer).
//!
//! # The rule
//! Only **waiting time** counts: time during which the consumer (the upstream side, reading
//! the body) has asked for the next frame and the client has not delivered it, i.e. from a
//! [`poll_frame`](Body::poll_frame) that returned `Pending` to the one that returns the
//! frame. When the consumer does not ask (the upstream applies backpressure, or the
//! consumer has not started reading yet), the client is not blamed.
//!
//! With `W` the waiting time so far and `R` the data bytes received so far, the body fails
//! with [`BodyTooSlow`] when
//!
//! ```text
//! W ≥ grace + R / bytes_per_sec        (equivalently: R ≤ bytes_per_sec × (W − grace))
//! ```
//!
//! that is, once the client has kept the consumer waiting longer than the grace period plus
//! the time its bytes paid for. A body that sends nothing fails after `grace` of waiting; a
//! body that keeps arriving at `bytes_per_sec` or faster never fails, however long it runs.
//! The rule is cumulative, like Kestrel's: bytes sent early pay for a pause later. Holding
//! a connection for a time `T` therefore costs `bytes_per_sec × T` bytes, whether they are
//! sent steadily or up front. `bytes_per_sec` 0 disables the rule.
//!
//! The check is not periodic: when the consumer starts waiting, a timer is set for the
//! instant the rule would be broken if nothing arrives, so a client that sends nothing at
//! all is cut on time (the timer wakes the consumer, whose next poll fails). A consumer that
//! ignores that wake-up and polls again only later, when data has arrived, was not really
//! waiting past the deadline: a waiting interval counts at most up to its deadline, and
//! only a consumer that polls and still finds nothing can fail the body.
//!
//! After the error, every further poll returns the same error, and the body never reports
//! its end: a cut body must not pass for a complete one.
//!
//! # Cost
//! Nothing per frame that arrives without waiting. A body that has to wait allocates its
//! timer once, on its first wait (boxed, so that `RateLimited<B>` is `Unpin` when `B` is, as
//! the request path needs; a `!Unpin` body can be wrapped as `Pin<Box<B>>`). Each wait
//! reads the clock once and moves the timer only if its deadline changed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// A boxed error of a body, as the request path passes them on.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The slowest a request body may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// The least average rate of the body's data while the consumer waits for it; 0 turns
    /// the check off.
    pub bytes_per_sec: u64,
    /// Waiting time allowed on top of what the received bytes pay for.
    pub grace: Duration,
}

/// A request body arrived slower than its [`MinRate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("request body arrived slower than {bytes_per_sec} bytes/s")]
pub struct BodyTooSlow {
    /// The rate it fell short of.
    pub bytes_per_sec: u64,
}

/// A body that fails with [`BodyTooSlow`] when it arrives slower than a [`MinRate`]. Frames,
/// end of stream and size hint are the inner body's.
#[derive(Debug)]
pub struct RateLimited<B> {
    inner: B,
    rate: MinRate,
    /// Data bytes received.
    received: u64,
    /// Waiting time of the intervals that have ended.
    waited: Duration,
    /// The interval the consumer is waiting in, if it is.
    waiting: Option<Waiting>,
    /// Set on the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
    /// Raised when the body is cut, for whoever sees only the error its consumer made of it.
    alarm: Option<Arc<AtomicBool>>,
}

#[derive(Debug, Clone, Copy)]
struct Waiting {
    since: Instant,
    /// When the rule breaks if nothing arrives; `None` if that is beyond the clock's range.
    deadline: Option<Instant>,
}

/// The timer is set at most this far ahead, and set again when it fires before the
/// deadline.
const MAX_TIMER: Duration = Duration::from_secs(24 * 60 * 60);

impl<B> RateLimited<B> {
    /// Wraps `inner`. The clock starts with the first poll that has to wait.
    pub fn new(inner: B, rate: MinRate) -> Self {
        RateLimited {
            inner,
            rate,
            received: 0,
            waited: Duration::ZERO,
            waiting: None,
            timer: None,
            failed: false,
            alarm: None,
        }
    }

    /// Raises `alarm` when the body is cut: the upstream's client reports only that the
    /// body failed, and the request path needs to know why.
    pub fn with_alarm(mut self, alarm: Arc<AtomicBool>) -> Self {
        self.alarm = Some(alarm);
        self
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Data bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Waiting time allowed so far: the grace plus what the received bytes paid for.
    fn allowance(&self) -> Duration {
        let rate = self.rate.bytes_per_sec;
        let secs = self.received / rate;
        let nanos = u128::from(self.received % rate) * 1_000_000_000 / u128::from(rate);
        // nanos < 1e9 since received % rate < rate.
        self.rate.grace.saturating_add(Duration::new(secs, nanos as u32))
    }

    fn too_slow(&self) -> BoxError {
        Box::new(BodyTooSlow {
            bytes_per_sec: self.rate.bytes_per_sec,
        })
    }

    /// Ends the waiting interval, if one is open, counting it at most up to its deadline.
    fn stop_waiting(&mut self) {
        if let Some(w) = self.waiting.take() {
            let now = Instant::now();
            let mut spent = now.saturating_duration_since(w.since);
            if let Some(deadline) = w.deadline {
                spent = spent.min(deadline.saturating_duration_since(w.since));
            }
            self.waited = self.waited.saturating_add(spent);
        }
    }

    /// The consumer waits: opens the interval if needed and sets the timer. `Err` when the
    /// rule is broken.
    fn wait(&mut self, cx: &mut Context<'_>) -> Result<(), BoxError> {
        let w = match self.waiting {
            Some(w) => w,
            None => {
                let since = Instant::now();
                let left = self.allowance().saturating_sub(self.waited);
                let w = Waiting {
                    since,
                    deadline: since.checked_add(left),
                };
                self.waiting = Some(w);
                let Some(deadline) = w.deadline else {
                    return Ok(());
                };
                if deadline <= since {
                    return Err(self.too_slow());
                }
                let at = timer_at(deadline, since);
                match &mut self.timer {
                    Some(timer) if timer.deadline() == at => {}
                    Some(timer) => timer.as_mut().reset(at),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                }
                w
            }
        };
        let (Some(deadline), Some(timer)) = (w.deadline, self.timer.as_mut()) else {
            return Ok(());
        };
        while timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.too_slow());
            }
            timer.as_mut().reset(timer_at(deadline, now));
        }
        Ok(())
    }
}

/// The timer's next instant: the deadline, or [`MAX_TIMER`] from now if that is sooner.
fn timer_at(deadline: Instant, now: Instant) -> Instant {
    now.checked_add(MAX_TIMER).map_or(deadline, |far| far.min(deadline))
}

impl<B> Body for RateLimited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Some(Err(this.too_slow())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.stop_waiting();
                Poll::Ready(frame.map(|f| {
                    let f = f.map_err(Into::into)?;
                    if let Some(data) = f.data_ref() {
                        this.received = this.received.saturating_add(data.len() as u64);
                    }
                    Ok(f)
                }))
            }
            Poll::Pending if this.rate.bytes_per_sec == 0 => Poll::Pending,
            Poll::Pending => match this.wait(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => {
                    this.failed = true;
                    if let Some(alarm) = &this.alarm {
                        alarm.store(true, Ordering::Relaxed);
                    }
                    this.waiting = None;
                    this.timer = None;
                    Poll::Ready(Some(Err(e)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.failed && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use http_body_util::{BodyExt, Empty, Full};
    use proptest::prelude::*;
    use tokio::sync::mpsc;
    use tokio::time::{sleep, sleep_until};

    use super::*;

    /// A body fed through a channel: what the client sends, when it sends it.
    struct Client(mpsc::UnboundedReceiver<Result<Bytes, io::Error>>);

    impl Body for Client {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
        }
    }

    fn client() -> (mpsc::UnboundedSender<Result<Bytes, io::Error>>, Client) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Client(rx))
    }

    fn rate(bytes_per_sec: u64, grace: Duration) -> MinRate {
        MinRate { bytes_per_sec, grace }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    /// Reads the body to its end, as a consumer that always polls: the bytes, or the error.
    async fn read_all<B>(mut body: B) -> Result<u64, BoxError>
    where
        B: Body<Data = Bytes, Error = BoxError> + Unpin,
    {
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            n += frame?.data_ref().map_or(0, |d| d.len() as u64);
        }
        Ok(n)
    }

    fn is_too_slow(e: &BoxError, bytes_per_sec: u64) -> bool {
        e.downcast_ref::<BodyTooSlow>() == Some(&BodyTooSlow { bytes_per_sec })
    }

    #[test]
    fn the_error_names_the_rate() {
        assert_eq!(
            BodyTooSlow { bytes_per_sec: 240 }.to_string(),
            "request body arrived slower than 240 bytes/s"
        );
    }

    #[test]
    fn is_send_sync_and_unpin_over_such_a_body() {
        fn ok<T: Send + Sync + Unpin + 'static>() {}
        ok::<RateLimited<Client>>();
        ok::<RateLimited<hyper::body::Incoming>>();
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_sends_nothing_is_cut_after_grace() {
        let (_tx, body) = client();
        let start = Instant::now();
        let e = read_all(RateLimited::new(body, rate(100, secs(5)))).await.unwrap_err();
        assert!(is_too_slow(&e, 100), "{e}");
        assert_eq!(start.elapsed(), secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_sent_pay_for_waiting_time() {
        // 1000 bytes at 100 B/s pay for 10 s on top of a 1 s grace.
        let (tx, body) = client();
        tx.send(Ok(bytes(1000))).unwrap();
        let start = Instant::now();
        let e = read_all(RateLimited::new(body, rate(100, secs(1)))).await.unwrap_err();
        assert!(is_too_slow(&e, 100), "{e}");
        assert_eq!(start.elapsed(), secs(11));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_sufficient_body_passes_however_long_it_runs() {
        // 120 B/s against a floor of 100 B/s, in 60-byte chunks, for about 33 minutes.
        let (tx, body) = client();
        tokio::spawn(async move {
            for _ in 0..4000 {
                sleep(Duration::from_millis(500)).await;
                tx.send(Ok(bytes(60))).unwrap();
            }
        });
        let start = Instant::now();
        assert_eq!(read_all(RateLimited::new(body, rate(100, secs(2)))).await.unwrap(), 240_000);
        assert_eq!(start.elapsed(), secs(2000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_at_exactly_the_rate_passes() {
        let (tx, body) = client();
        tokio::spawn(async move {
            for _ in 0..1000 {
                sleep(secs(1)).await;
                tx.send(Ok(bytes(100))).unwrap();
            }
        });
        assert_eq!(
            read_all(RateLimited::new(body, rate(100, Duration::from_millis(1500))))
                .await
                .unwrap(),
            100_000
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_slows_down_below_the_rate_is_cut() {
        let (tx, body) = client();
        tokio::spawn(async move {
            // 10 s at 200 B/s, then 50 B/s.
            for _ in 0..10 {
                sleep(secs(1)).await;
                tx.send(Ok(bytes(200))).unwrap();
            }
            loop {
                sleep(secs(1)).await;
                if tx.send(Ok(bytes(50))).is_err() {
                    return;
                }
            }
        });
        let start = Instant::now();
        let e = read_all(RateLimited::new(body, rate(100, Duration::from_millis(2250))))
            .await
            .unwrap_err();
        assert!(is_too_slow(&e, 100), "{e}");
        // At 10 + k s the body has 2000 + 50k bytes, paying with the grace for 22.25 + k/2 s;
        // the next chunk comes at 11 + k s, too late from k = 23.
        assert_eq!(start.elapsed(), Duration::from_millis(33_750));
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_does_not_poll_does_not_blame_the_client() {
        // The client sends everything at once; the consumer reads a frame an hour.
        let (tx, body) = client();
        for _ in 0..3 {
            tx.send(Ok(bytes(10))).unwrap();
        }
        drop(tx);
        let mut body = RateLimited::new(body, rate(1000, secs(1)));
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            n += frame.unwrap().data_ref().unwrap().len();
            sleep(secs(3600)).await;
        }
        assert_eq!(n, 30);
    }

    #[tokio::test(start_paused = true)]
    async fn backpressure_between_frames_is_not_waiting() {
        // The client keeps up with a consumer that polls only every 10 s: each frame is
        // there when asked for, so no time counts, though 10 s per 10 bytes is under the rate.
        let (tx, body) = client();
        let start = Instant::now();
        tokio::spawn(async move {
            for i in 0..100 {
                sleep_until(start + secs(10 * i) + Duration::from_millis(1)).await;
                tx.send(Ok(bytes(10))).unwrap();
            }
        });
        let mut body = RateLimited::new(body, rate(1000, secs(1)));
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            n += frame.unwrap().data_ref().unwrap().len();
            sleep(secs(10)).await;
        }
        assert_eq!(n, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_consumer_that_ignores_its_wake_up_is_not_waiting_past_the_deadline() {
        let (tx, body) = client();
        let start = Instant::now();
        tokio::spawn(async move {
            sleep_until(start + secs(1800)).await;
            tx.send(Ok(bytes(100))).unwrap();
            for i in 1..=20 {
                sleep_until(start + secs(3600 + 5 * i)).await;
                tx.send(Ok(bytes(100))).unwrap();
            }
        });
        let mut body = RateLimited::new(body, rate(10, secs(1)));
        // One poll finds nothing: the consumer waits, and the timer is set for 1 s.
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx).is_pending())).await;
        assert!(first);
        // The consumer busies itself elsewhere for an hour; the client sends at 30 min.
        sleep(secs(3600)).await;
        // Counted: 1 s of the hour. 100 bytes pay for 10 s, then 100 more come every 5 s.
        assert_eq!(read_all(body).await.unwrap(), 2100);
        assert_eq!(start.elapsed(), secs(3700));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_body_stays_cut_and_never_ends() {
        let (_tx, body) = client();
        let mut body = RateLimited::new(body, rate(1, Duration::ZERO));
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(is_too_slow(&e, 1), "{e}");
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(is_too_slow(&e, 1), "{e}");
        assert!(!body.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_of_zero_never_cuts() {
        let (_tx, body) = client();
        let mut body = RateLimited::new(body, rate(0, Duration::ZERO));
        assert!(tokio::time::timeout(secs(365 * 24 * 3600), body.frame()).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_allowance_sets_the_timer_again_rather_than_failing_early() {
        let (tx, body) = client();
        tx.send(Ok(bytes(10))).unwrap();
        // A grace of three times the longest timer, and 10 bytes that pay for 10 s more.
        let mut body = RateLimited::new(body, rate(1, secs(3 * MAX_TIMER.as_secs())));
        assert_eq!(body.frame().await.unwrap().unwrap().data_ref().unwrap().len(), 10);
        let start = Instant::now();
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(is_too_slow(&e, 1), "{e}");
        assert_eq!(start.elapsed(), secs(3 * MAX_TIMER.as_secs() + 10));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn inner_errors_pass_through() {
        let (tx, body) = client();
        tx.send(Ok(bytes(3))).unwrap();
        tx.send(Err(io::Error::other("connection reset"))).unwrap();
        let e = read_all(RateLimited::new(body, rate(100, secs(1)))).await.unwrap_err();
        assert_eq!(e.to_string(), "connection reset");
        assert!(e.downcast_ref::<io::Error>().is_some());
    }

    #[tokio::test]
    async fn end_and_size_are_the_inner_bodys() {
        let body = RateLimited::new(Full::new(Bytes::from_static(b"hello")), rate(100, secs(1)));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let mut body = body;
        assert_eq!(body.frame().await.unwrap().unwrap().into_data().unwrap(), "hello");
        assert!(body.is_end_stream());
        assert_eq!(body.received(), 5);
        let empty = RateLimited::new(Empty::<Bytes>::new(), rate(100, secs(1)));
        assert!(empty.is_end_stream());
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert_eq!(read_all(empty).await.unwrap(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Chunks arrive after random gaps to a consumer that always polls: the body fails at
        /// the first instant when `elapsed ≥ grace + received / rate`, and not otherwise.
        #[test]
        fn fails_exactly_when_the_rule_says(
            bytes_per_sec in 1u64..2000,
            grace_ms in 0u64..3000,
            chunks in prop::collection::vec((1u64..3000, 0usize..400), 0..30),
        ) {
            let chunks: Vec<(u64, usize)> = chunks
                .iter()
                .scan(0, |t, &(gap, len)| {
                    *t += gap;
                    Some((*t, len))
                })
                .collect();
            // The model, in milliseconds times the rate, to stay in integers.
            let mut expected_cut_scaled = None;
            let mut received = 0u64;
            for &(at, len) in &chunks {
                let deadline_scaled = grace_ms * bytes_per_sec + received * 1000;
                let at_scaled = at * bytes_per_sec;
                // Within 2 ms of each other, timer and chunk race: no verdict.
                prop_assume!(at_scaled.abs_diff(deadline_scaled) >= 2 * bytes_per_sec);
                if at_scaled > deadline_scaled {
                    expected_cut_scaled = Some(deadline_scaled);
                    break;
                }
                received += len as u64;
            }
            let total: u64 = chunks.iter().map(|&(_, len)| len as u64).sum();

            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            let (result, elapsed) = rt.block_on(async move {
                let (tx, body) = client();
                let start = Instant::now();
                tokio::spawn(async move {
                    for (at, len) in chunks {
                        sleep_until(start + Duration::from_millis(at)).await;
                        if tx.send(Ok(bytes(len))).is_err() {
                            return;
                        }
                    }
                });
                let result = read_all(RateLimited::new(body, rate(bytes_per_sec, Duration::from_millis(grace_ms)))).await;
                (result, start.elapsed())
            });
            match expected_cut_scaled {
                None => prop_assert_eq!(result.unwrap(), total),
                Some(cut_scaled) => {
                    let e = result.unwrap_err();
                    prop_assert!(is_too_slow(&e, bytes_per_sec), "{}", e);
                    // In nanoseconds times the rate: the cut is at the deadline, or within the
                    // timer's millisecond after it.
                    let got = elapsed.as_nanos() * u128::from(bytes_per_sec);
                    let want = u128::from(cut_scaled) * 1_000_000;
                    let slack = 1_000_000 * u128::from(bytes_per_sec);
                    prop_assert!(got >= want && got <= want + slack, "cut at {:?}, expected {} ms", elapsed, cut_scaled as f64 / bytes_per_sec as f64);
                }
            }
        }
    }
}
