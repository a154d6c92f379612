//! Refusing requests framed two ways. hyper, following RFC 9112, drops `Content-Length`
//! when `Transfer-Encoding` is present and goes on; a request carrying both is a classic
//! smuggling probe, and patgate refuses it with 400. Since hyper hides the dropped header,
//! [`Watched`] keeps the last bytes read from each connection and [`HeadWatch`] looks up
//! the head of a request that has `Transfer-Encoding` in them.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The recent bytes of one connection, shared between its reader and its requests.
#[derive(Debug, Clone)]
pub struct HeadWatch {
    inner: Arc<Mutex<Vec<u8>>>,
    keep: usize,
}

impl HeadWatch {
    /// Keeps at least the last `keep` bytes read (at least the largest request head).
    pub fn new(keep: usize) -> Self {
        HeadWatch {
            inner: Arc::new(Mutex::new(Vec::new())),
            keep,
        }
    }

    fn record(&self, bytes: &[u8]) {
        let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if bytes.len() >= self.keep {
            w.clear();
            w.extend_from_slice(&bytes[bytes.len() - self.keep..]);
            return;
        }
        w.extend_from_slice(bytes);
        if w.len() > 2 * self.keep {
            let cut = w.len() - self.keep;
            w.drain(..cut);
        }
    }

    /// True when the raw head of `req` (found by its request line) has a Content-Length.
    pub fn content_length_with_transfer_encoding<B>(&self, req: &http::Request<B>) -> bool {
        let line = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri());
        let w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        head_has_content_length(&w, line.as_bytes())
    }
}

fn head_has_content_length(window: &[u8], request_line: &[u8]) -> bool {
    let Some(start) = window.windows(request_line.len()).rposition(|x| x == request_line) else {
        return false;
    };
    let head = &window[start + request_line.len()..];
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        if name.trim_ascii().eq_ignore_ascii_case(b"content-length") {
            return true;
        }
    }
    false
}

/// A connection whose reads are recorded in a [`HeadWatch`].
pub struct Watched<IO> {
    io: IO,
    watch: HeadWatch,
}

impl<IO> Watched<IO> {
    /// Wraps `io`.
    pub fn new(io: IO, watch: HeadWatch) -> Self {
        Watched { io, watch }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
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

    const LINE: &[u8] = b"POST /acme/x HTTP/1.1\r\n";

    #[test]
    fn finds_content_length_in_the_head_only() {
        let both = b"POST /acme/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(head_has_content_length(both, LINE));
        let te_first = b"POST /acme/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length : 5\r\n\r\n";
        assert!(head_has_content_length(te_first, LINE));
        let te_only = b"POST /acme/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nContent-Length: 5\r\n";
        assert!(!head_has_content_length(te_only, LINE));
        assert!(!head_has_content_length(b"", LINE));
    }

    #[test]
    fn the_window_keeps_the_latest_bytes() {
        let w = HeadWatch::new(16);
        for _ in 0..10 {
            w.record(b"0123456789");
        }
        w.record(b"abc");
        let v = w.inner.lock().unwrap().clone();
        assert!(v.len() <= 32 && v.ends_with(b"789abc"));
        w.record(&[b'z'; 40]);
        assert_eq!(w.inner.lock().unwrap().len(), 16);
    }
}
