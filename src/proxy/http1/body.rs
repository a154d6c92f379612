//! A request body as the pipeline reads it: an [`http_body::Body`] whose frames the
//! connection (`super::serve`) decodes from the client's bytes when they are asked for,
//! one frame ahead at most, so a slow upstream slows the client (no buffering without bound).
//!
//! The body and the connection meet in one small shared slot: the body asks (`want`) and
//! takes a frame; the connection fills the slot. Either side wakes the other.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::chunked::ChunkError;

/// Why a request body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is not validly chunked: {0}")]
    Chunked(#[from] ChunkError),
    #[error("the client closed the connection before the end of the request body")]
    Incomplete,
}

/// The slot between the body and the connection.
#[derive(Default)]
struct Slot {
    frame: Option<Result<Bytes, BodyError>>,
    /// The body asked for a frame since the slot was last filled.
    want: bool,
    /// Whether the body was ever asked for (a client that expects `100 Continue` gets it then).
    asked: bool,
    /// The body ended (after the last frame is taken).
    ended: bool,
    /// The body was dropped: nobody reads what the connection would decode.
    dropped: bool,
    /// Why the body failed, once it did.
    error: Option<BodyError>,
    body: Option<Waker>,
    conn: Option<Waker>,
}

/// The request body handed to the pipeline.
pub struct RequestBody {
    slot: Arc<Mutex<Slot>>,
    hint: SizeHint,
    done: bool,
}

/// The connection's side of one request body.
pub struct Feed {
    slot: Arc<Mutex<Slot>>,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// A body and its feed; `length` is the body's exact length when the head gave one.
pub fn channel(length: Option<u64>) -> (RequestBody, Feed) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    let hint = length.map_or_else(SizeHint::new, SizeHint::with_exact);
    (
        RequestBody {
            slot: slot.clone(),
            hint,
            done: false,
        },
        Feed { slot },
    )
}

impl RequestBody {
    /// The body of a request that has none.
    pub fn empty() -> RequestBody {
        RequestBody {
            slot: Arc::new(Mutex::new(Slot::default())),
            hint: SizeHint::with_exact(0),
            done: true,
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let mut slot = lock(&self.slot);
        if let Some(frame) = slot.frame.take() {
            if let Some(w) = slot.conn.take() {
                w.wake();
            }
            let failed = frame.is_err();
            drop(slot);
            self.done |= failed;
            return Poll::Ready(Some(frame.map(Frame::data)));
        }
        if slot.ended {
            drop(slot);
            self.done = true;
            return Poll::Ready(None);
        }
        slot.want = true;
        slot.asked = true;
        slot.body = Some(cx.waker().clone());
        if let Some(w) = slot.conn.take() {
            w.wake();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        slot.dropped = true;
        if let Some(w) = slot.conn.take() {
            w.wake();
        }
    }
}

/// In a request's extensions: why its body failed, if it did (a body that was not what its
/// head said is the client's fault, not the upstream's).
#[derive(Clone)]
pub struct Watch(Arc<Mutex<Slot>>);

impl Watch {
    pub fn error(&self) -> Option<BodyError> {
        lock(&self.0).error
    }
}

/// What the connection may do for the body now.
pub enum Room {
    /// Decode one more frame and [`Feed::put`] it.
    Frame,
    /// Nothing: the slot is full, or the body was never asked for yet (then the
    /// connection is woken when it is).
    Wait,
    /// Nobody reads the body any more.
    Dropped,
}

impl Feed {
    /// Whether the connection should decode a frame now. `ahead`: a frame may be decoded
    /// before it is asked for, once the body was asked for once (a client that waits for
    /// `100 Continue` sends nothing before).
    pub fn room(&self, cx: &mut Context<'_>, ahead: bool) -> Room {
        let mut slot = lock(&self.slot);
        if slot.dropped {
            return Room::Dropped;
        }
        if slot.frame.is_none() && (slot.want || (ahead && slot.asked)) {
            return Room::Frame;
        }
        slot.conn = Some(cx.waker().clone());
        Room::Wait
    }

    /// What the pipeline may ask of the body after it failed: why.
    pub fn watch(&self) -> Watch {
        Watch(self.slot.clone())
    }

    /// Hands the body its next piece of data, or an error.
    pub fn put(&self, frame: Result<Bytes, BodyError>) {
        let mut slot = lock(&self.slot);
        if let Err(e) = &frame {
            slot.error = Some(*e);
        }
        slot.frame = Some(frame);
        slot.want = false;
        if let Some(w) = slot.body.take() {
            w.wake();
        }
    }

    /// Tells the body it ended.
    pub fn end(&self) {
        let mut slot = lock(&self.slot);
        slot.ended = true;
        if let Some(w) = slot.body.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_go_from_the_feed_to_the_body_one_at_a_time() {
        let (mut body, feed) = channel(Some(6));
        assert_eq!(http_body::Body::size_hint(&body).exact(), Some(6));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(feed.room(&mut cx, true), Room::Wait), "not asked yet");
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert!(matches!(feed.room(&mut cx, true), Room::Frame));
        feed.put(Ok(Bytes::from_static(b"abc")));
        assert!(matches!(feed.room(&mut cx, true), Room::Wait), "the slot is full");
        let f = Pin::new(&mut body).poll_frame(&mut cx);
        assert!(matches!(f, Poll::Ready(Some(Ok(_)))));
        assert!(matches!(feed.room(&mut cx, true), Room::Frame), "one ahead");
        feed.put(Ok(Bytes::from_static(b"def")));
        feed.end();
        let rest = body.collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"def");
    }

    #[tokio::test]
    async fn an_error_ends_the_body() {
        let (body, feed) = channel(None);
        feed.put(Err(BodyError::Incomplete));
        assert_eq!(body.collect().await.unwrap_err(), BodyError::Incomplete);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(feed.room(&mut cx, true), Room::Dropped));
    }
}
