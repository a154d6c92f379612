//! Refusing requests framed two ways. hyper, following RFC 9112, drops `Content-Length`
//! when `Transfer-Encoding` is present and goes on; a request carrying both is a classic
//! smuggling probe, and patgate refuses it with 400. Since hyper hides the dropped header,
//! [`Watched`] follows the connection's bytes as they are read, framing requests the way
//! the server does (heads parsed with httparse, bodies skipped by their length or chunk
//! by chunk, never copied), and [`FramingWatch`] keeps, for each request head in order,
//! whether it carried both headers. The service takes one note per request.
//!
//! A request that asks for an upgrade is followed like any other: whether the connection
//! switches depends on the answer, which the watch does not see. If it stays HTTP, the
//! next heads are noted as ever; if it switches, what follows is another protocol that the
//! watch reads as if it were HTTP, within the same bounds (one head's bytes, a bounded
//! number of notes), and whose notes no request ever takes. It only observes: the bytes
//! reach their reader untouched either way.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most headers a head may have; more and hyper refuses the request anyway.
const MAX_HEADERS: usize = 128;

/// The shortest request head hyper accepts: `GET / HTTP/1.1\r\n\r\n` less a little.
const MIN_HEAD: usize = 16;

/// What one connection's requests looked like on the wire, shared between its reader and
/// its requests.
#[derive(Debug, Clone)]
pub struct FramingWatch {
    inner: Arc<Mutex<Tracker>>,
}

impl FramingWatch {
    /// Follows a connection whose request heads are at most `max_head` bytes.
    pub fn new(max_head: usize) -> Self {
        FramingWatch {
            inner: Arc::new(Mutex::new(Tracker::new(max_head))),
        }
    }

    fn record(&self, bytes: &[u8]) {
        self.lock().feed(bytes);
    }

    /// For the next request on the connection (call once per request, in order): true
    /// when its head had both `Content-Length` and `Transfer-Encoding`, or when the watch
    /// lost count of the heads and cannot tell.
    pub fn next_had_both_lengths(&self) -> bool {
        let mut t = self.lock();
        t.notes.pop_front().unwrap_or(t.overflowed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head.
    Head,
    /// Skipping a body of known length: bytes left.
    Fixed(u64),
    /// Following a chunked body.
    Chunked(Chunks),
    /// The framing can no longer be followed (a head hyper refuses too, or too many notes
    /// not taken): no more notes are taken.
    Lost,
}

#[derive(Debug)]
struct Tracker {
    phase: Phase,
    head: Vec<u8>,
    max_head: usize,
    notes: VecDeque<bool>,
    /// The most notes kept untaken. hyper reads ahead at most about two buffers of
    /// `max_head` bytes, so HTTP never gets near it; bytes after an upgrade might.
    max_notes: usize,
    /// More heads came than notes may be kept: every later request is in doubt.
    overflowed: bool,
}

impl Tracker {
    fn new(max_head: usize) -> Self {
        Tracker {
            phase: Phase::Head,
            head: Vec::new(),
            max_head,
            notes: VecDeque::new(),
            max_notes: 2 * max_head / MIN_HEAD + 64,
            overflowed: false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Lost => return,
                Phase::Head => {
                    let before = self.head.len();
                    // Lines before a request line are skipped, as hyper does.
                    if before == 0 {
                        let skip = bytes.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
                        bytes = &bytes[skip..];
                        if bytes.is_empty() {
                            return;
                        }
                        // The usual head arrives whole in one read: it is parsed where it lies.
                        if let Head::Complete { used, te, cl } = Head::parse(&bytes[..bytes.len().min(self.max_head)]) {
                            self.note(te, cl);
                            bytes = &bytes[used..];
                            continue;
                        }
                    }
                    let room = self.max_head.saturating_sub(before).max(1);
                    let take = bytes.len().min(room);
                    self.head.extend_from_slice(&bytes[..take]);
                    match Head::parse(&self.head) {
                        Head::Complete { used, te, cl } => {
                            let consumed = used - before;
                            self.head.clear();
                            self.note(te, cl);
                            bytes = &bytes[consumed..];
                        }
                        Head::Invalid => {
                            // hyper refuses this head too and closes the connection.
                            self.phase = Phase::Lost;
                            return;
                        }
                        Head::Partial if self.head.len() >= self.max_head => self.phase = Phase::Lost,
                        Head::Partial => bytes = &bytes[take..],
                    }
                }
                Phase::Fixed(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    self.phase = if left == n { Phase::Head } else { Phase::Fixed(left - n) };
                }
                Phase::Chunked(mut chunks) => {
                    let used = chunks.scan(bytes);
                    bytes = &bytes[used..];
                    self.phase = match chunks {
                        Chunks::Done => Phase::Head,
                        Chunks::Bad => Phase::Lost,
                        going => Phase::Chunked(going),
                    };
                }
            }
        }
    }

    /// Notes a complete head (`te`: it had `Transfer-Encoding`; `cl`: its
    /// `Content-Length`, if any, and whether it was readable) and sets its body's phase.
    fn note(&mut self, te: bool, cl: Option<Option<u64>>) {
        if self.notes.len() >= self.max_notes {
            self.overflowed = true;
            self.phase = Phase::Lost;
            return;
        }
        self.notes.push_back(te && cl.is_some());
        self.phase = if te {
            Phase::Chunked(Chunks::START)
        } else {
            match cl {
                None | Some(Some(0)) => Phase::Head,
                Some(Some(n)) => Phase::Fixed(n),
                // Unreadable or conflicting lengths: hyper refuses the request.
                Some(None) => Phase::Lost,
            }
        };
    }
}

/// The longest trailer line a chunked body may have.
const MAX_TRAILER_LINE: usize = 64 * 1024;

/// Where a chunked body stands, followed byte by byte and never copied (RFC 9112 7.1),
/// as strictly as hyper decodes one: a size of hex digits, optional blanks, an extension
/// after `;`, CRLF line ends, CRLF after each chunk's data, then trailer lines and an empty
/// line. Control bytes in extensions and trailers are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunks {
    /// The first byte of a chunk-size line (a hex digit).
    Start,
    /// In the size's digits.
    Size(u64),
    /// Blanks after the size.
    Blank(u64),
    /// In an extension: its length so far.
    Ext(u64, usize),
    /// The LF that ends a size line.
    SizeLf(u64),
    /// Chunk data: bytes left.
    Data(u64),
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The start of a trailer line, or of the empty line that ends the body.
    Line,
    /// In a trailer line: its length so far.
    Trailer(usize),
    /// The LF that ends a trailer line.
    TrailerLf,
    /// The LF of the empty line that ends the body.
    EndLf,
    /// The body ended.
    Done,
    /// Not a chunked body.
    Bad,
}

impl Chunks {
    /// A body not yet begun.
    pub const START: Chunks = Chunks::Start;

    /// Follows `bytes`, the body's next; returns how many belong to it: all of them,
    /// unless it ends (`Done`) or goes wrong (`Bad`) on the way.
    pub fn scan(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            match *self {
                Chunks::Done | Chunks::Bad => break,
                Chunks::Data(left) => {
                    let n = ((bytes.len() - at) as u64).min(left);
                    at += n as usize;
                    *self = if left == n { Chunks::DataCr } else { Chunks::Data(left - n) };
                    continue;
                }
                _ => {}
            }
            let b = bytes[at];
            at += 1;
            let text = b == b'\t' || (b >= b' ' && b != 0x7f);
            *self = match (*self, b) {
                (Chunks::Start, _) => match (b as char).to_digit(16) {
                    Some(d) => Chunks::Size(u64::from(d)),
                    None => Chunks::Bad,
                },
                (Chunks::Size(size), _) if (b as char).is_ascii_hexdigit() => match (b as char).to_digit(16) {
                    Some(d) if size < (1 << 59) => Chunks::Size(size * 16 + u64::from(d)),
                    _ => Chunks::Bad,
                },
                (Chunks::Size(size) | Chunks::Blank(size), b' ' | b'\t') => Chunks::Blank(size),
                (Chunks::Size(size) | Chunks::Blank(size), b';') => Chunks::Ext(size, 0),
                (Chunks::Size(size) | Chunks::Blank(size) | Chunks::Ext(size, _), b'\r') => Chunks::SizeLf(size),
                (Chunks::Ext(size, len), _) if text && len < MAX_TRAILER_LINE => Chunks::Ext(size, len + 1),
                (Chunks::SizeLf(0), b'\n') => Chunks::Line,
                (Chunks::SizeLf(size), b'\n') => Chunks::Data(size),
                (Chunks::DataCr, b'\r') => Chunks::DataLf,
                (Chunks::DataLf, b'\n') => Chunks::Start,
                (Chunks::Line, b'\r') => Chunks::EndLf,
                (Chunks::EndLf, b'\n') => Chunks::Done,
                (Chunks::Line, _) if text => Chunks::Trailer(1),
                (Chunks::Trailer(_), b'\r') => Chunks::TrailerLf,
                (Chunks::Trailer(len), _) if text && len < MAX_TRAILER_LINE => Chunks::Trailer(len + 1),
                (Chunks::TrailerLf, b'\n') => Chunks::Line,
                _ => Chunks::Bad,
            };
        }
        at
    }
}

/// A request head, as far as framing goes.
enum Head {
    /// `used` bytes long; `te`: it had `Transfer-Encoding`; `cl`: its `Content-Length`,
    /// if any (None inside when unreadable or conflicting).
    Complete {
        used: usize,
        te: bool,
        cl: Option<Option<u64>>,
    },
    Partial,
    /// Not a request head: hyper refuses it too.
    Invalid,
}

impl Head {
    fn parse(buf: &[u8]) -> Head {
        // Uninitialized slots: only the head's own headers are written.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let used = match req.parse_with_uninit_headers(buf, &mut headers) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(_) => return Head::Invalid,
        };
        let mut te = false;
        let mut cl: Option<Option<u64>> = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
                cl = Some(match cl {
                    Some(prev) if prev != v => None,
                    _ => v,
                });
            }
        }
        Head::Complete { used, te, cl }
    }
}

/// A connection whose reads are followed by a [`FramingWatch`]: first the bytes read from
/// it before (`read_before`, given back first), then its own.
pub struct Watched<IO> {
    io: IO,
    watch: FramingWatch,
    read_before: bytes::Bytes,
}

impl<IO> Watched<IO> {
    /// Wraps `io`, whose first bytes, already read, are `read_before`.
    pub fn new(io: IO, watch: FramingWatch, read_before: bytes::Bytes) -> Self {
        Watched { io, watch, read_before }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = if self.read_before.is_empty() {
            Pin::new(&mut self.io).poll_read(cx, buf)
        } else {
            let n = self.read_before.len().min(buf.remaining());
            buf.put_slice(&self.read_before[..n]);
            bytes::Buf::advance(&mut self.read_before, n);
            Poll::Ready(Ok(()))
        };
        if let Poll::Ready(Ok(())) = r {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.watch.record(new);
            }
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn bytes_read_before_are_given_back_first_and_followed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut near, far) = tokio::io::duplex(64);
        near.write_all(b"\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n").await.unwrap();
        drop(near);
        let watch = FramingWatch::new(1024);
        // A head half read before hyper took the connection.
        let before = bytes::Bytes::from_static(b"GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n");
        let mut all = String::new();
        Watched::new(far, watch.clone(), before).read_to_string(&mut all).await.unwrap();
        assert_eq!(
            all,
            "GET / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n"
        );
        assert!(watch.next_had_both_lengths());
        assert!(!watch.next_had_both_lengths());
    }

    fn notes(stream: &[u8], pieces: &[usize]) -> Vec<bool> {
        let w = FramingWatch::new(16 * 1024);
        let mut rest = stream;
        for &p in pieces.iter().chain(std::iter::repeat(&usize::MAX)) {
            if rest.is_empty() {
                break;
            }
            let n = p.clamp(1, rest.len());
            w.record(&rest[..n]);
            rest = &rest[n..];
        }
        let mut out = Vec::new();
        while let Some(n) = w.lock().notes.pop_front() {
            out.push(n);
        }
        out
    }

    const STREAM: &[u8] = b"\r\nGET /a HTTP/1.1\r\nHost: h\r\n\r\n\
        POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
        POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nPOST \r\n20\r\n/d HTTP/1.1\r\nContent-Length: 1\r\n\r\n0\r\nT: 1\r\n\r\n\
        POST /e HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
        GET /f HTTP/1.1\r\n\r\n";

    #[test]
    fn each_head_is_noted_in_order_and_bodies_are_skipped() {
        // The chunked body of /c holds what looks like a request with a Content-Length.
        assert_eq!(notes(STREAM, &[]), vec![false, false, false, true, false]);
    }

    #[test]
    fn a_head_hidden_in_a_body_is_not_taken_for_the_request() {
        let s = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
            20\r\nPOST /x HTTP/1.1\r\n\r\n0123456789AB\r\n0\r\n\r\n";
        assert_eq!(notes(s, &[]), vec![true]);
    }

    #[test]
    fn a_head_hyper_refuses_stops_the_notes() {
        assert_eq!(
            notes(b"GET /a HTTP/1.1\r\nBad Header\r\n\r\nGET /b HTTP/1.1\r\n\r\n", &[]),
            Vec::<bool>::new()
        );
        let huge = [b"GET /a HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 20_000], b"\r\n\r\n"].concat();
        assert_eq!(notes(&huge, &[]), Vec::<bool>::new());
    }

    #[test]
    fn a_chunked_body_is_followed_to_its_end_whatever_the_reads() {
        let body = b"5;x=y\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n";
        let after = b"HTTP/1.1 200 OK\r\n";
        let all = [&body[..], &after[..]].concat();
        for split in 1..all.len() {
            let mut c = Chunks::START;
            let first = c.scan(&all[..split]);
            let used = first + if c == Chunks::Done { 0 } else { c.scan(&all[split..]) };
            assert_eq!((used, c), (body.len(), Chunks::Done), "split at {split}");
        }
        let mut c = Chunks::START;
        c.scan(b"5\r\nhelloX");
        assert_eq!(c, Chunks::Bad, "data not followed by a line end");
        for bad in [
            &b"g\r\n"[..],
            b"\r\n",
            b";x\r\n",
            b"1\r0\r\n",
            b"5 6\r\n",
            b"5\nhello\r\n",
            b"5;a\0b\r\n",
            b"5\r\nhello\n",
            b"0\r\nX: \x01\r\n\r\n",
        ] {
            let mut c = Chunks::START;
            c.scan(bad);
            assert_eq!(c, Chunks::Bad, "{:?}", String::from_utf8_lossy(bad));
        }
        let mut c = Chunks::START;
        c.scan(b"0\r\n");
        c.scan(&vec![b'a'; MAX_TRAILER_LINE + 1]);
        assert_eq!(c, Chunks::Bad, "an endless trailer line");
    }

    #[test]
    fn an_upgrade_that_stays_http_is_followed_on() {
        // An upgrade the server turned down: the connection goes on as HTTP, and the next
        // head is judged like any other.
        let s = b"GET /a HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\
            POST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(notes(s, &[]), vec![false, true]);
        let connect = b"CONNECT h:1 HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(notes(connect, &[]), vec![false, true]);
    }

    #[test]
    fn bytes_after_a_switch_are_observed_within_bounds() {
        let w = FramingWatch::new(8192);
        w.record(b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(!w.next_had_both_lengths());
        // A WebSocket frame is no request line: the watch stops at once.
        w.record(&[0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o']);
        assert_eq!(w.lock().phase, Phase::Lost);
        // A tunnel that carries what looks like requests fills no more than its notes.
        let w = FramingWatch::new(8192);
        for _ in 0..100_000 {
            w.record(b"GET / HTTP/1.1\r\n\r\n");
        }
        let t = w.lock();
        assert_eq!(t.notes.len(), t.max_notes);
        assert_eq!(t.phase, Phase::Lost);
        assert!(t.head.is_empty());
    }

    #[test]
    fn a_watch_that_lost_count_puts_every_later_request_in_doubt() {
        let w = FramingWatch::new(8192);
        let max = w.lock().max_notes;
        for _ in 0..=max {
            w.record(b"GET / HTTP/1.1\r\n\r\n");
        }
        for _ in 0..max {
            assert!(!w.next_had_both_lengths());
        }
        assert!(w.next_had_both_lengths());
        // Before any overflow, a request with no note (hyper refused its head) is not.
        assert!(!FramingWatch::new(8192).next_had_both_lengths());
    }

    proptest! {
        #[test]
        fn any_split_of_the_reads_gives_the_same_notes(pieces in proptest::collection::vec(1usize..40, 0..200)) {
            prop_assert_eq!(notes(STREAM, &pieces), vec![false, false, false, true, false]);
        }
    }
}
