//! The bytes of an HTTP/1 connection, for both of patgate's sides (its server,
//! [`super::http1`], and its upstream client, [`super::upstream`]): what is to be written,
//! gathered so that a head and a small body go in one write, and reads into a buffer.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

/// Data frames up to this size are copied next to their framing; larger ones are written
/// as they are.
pub(crate) const COPY_BELOW: usize = 8 * 1024;

/// What is to be written, in order: whole pieces, then the bytes gathered after them.
#[derive(Default)]
pub(crate) struct Output {
    pub(crate) pieces: VecDeque<Bytes>,
    pub(crate) tail: BytesMut,
}

impl Output {
    pub(crate) fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.tail.is_empty()
    }

    /// Whether more may be gathered before writing: nothing large is waiting.
    pub(crate) fn has_room(&self) -> bool {
        self.pieces.is_empty() && self.tail.len() < COPY_BELOW
    }

    /// Adds a data frame: copied when small, else queued as it is.
    pub(crate) fn data(&mut self, data: Bytes) {
        if data.len() < COPY_BELOW {
            self.tail.put_slice(&data);
        } else {
            if !self.tail.is_empty() {
                self.pieces.push_back(self.tail.split().freeze());
            }
            self.pieces.push_back(data);
        }
    }

    /// Adds a data frame as one chunk of the chunked coding.
    pub(crate) fn chunk(&mut self, data: Bytes) {
        let mut size = [0u8; 16];
        self.tail.put_slice(hex(data.len(), &mut size));
        self.tail.put_slice(b"\r\n");
        self.data(data);
        self.tail.put_slice(b"\r\n");
    }

    /// Adds the last chunk of the chunked coding, with no trailers.
    pub(crate) fn last_chunk(&mut self) {
        self.tail.put_slice(b"0\r\n\r\n");
    }

    /// Gives back what grew, for a connection that falls idle.
    pub(crate) fn shrink(&mut self, keep: usize) {
        if self.tail.capacity() > keep {
            self.tail = BytesMut::new();
        }
        if self.pieces.capacity() > 8 {
            self.pieces = VecDeque::new();
        }
    }
}

/// `n` in lower-case hex, in `buf`.
pub(crate) fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// One header line.
pub(crate) fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Reads into the spare room of `buf` (reserved by the caller): one read, as
/// [`tokio::io::AsyncReadExt::read_buf`] makes it.
pub(crate) fn poll_read_buf<IO: AsyncRead + Unpin>(io: &mut IO, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
    use tokio::io::AsyncReadExt;
    std::pin::pin!(io.read_buf(buf)).poll(cx)
}

/// Writes all of `out`.
pub(crate) fn poll_write_out<IO: AsyncWrite + Unpin>(io: &mut IO, cx: &mut Context<'_>, out: &mut Output) -> Poll<io::Result<()>> {
    loop {
        let piece: &[u8] = match out.pieces.front() {
            Some(p) => p,
            None if !out.tail.is_empty() => &out.tail,
            None => return Poll::Ready(Ok(())),
        };
        let n = match Pin::new(&mut *io).poll_write(cx, piece) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        match out.pieces.front_mut() {
            Some(p) => {
                p.advance(n);
                if p.is_empty() {
                    out.pieces.pop_front();
                }
            }
            None => out.tail.advance(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lower_case_hex() {
        let mut b = [0u8; 16];
        assert_eq!(hex(0, &mut b), b"0");
        assert_eq!(hex(255, &mut b), b"ff");
        assert_eq!(hex(65536, &mut b), b"10000");
    }

    #[test]
    fn small_frames_are_gathered_and_large_ones_queued() {
        let mut out = Output::default();
        out.chunk(Bytes::from_static(b"abc"));
        out.chunk(Bytes::from(vec![b'x'; COPY_BELOW]));
        out.last_chunk();
        assert_eq!(out.pieces.len(), 2);
        assert_eq!(&out.pieces[0][..], b"3\r\nabc\r\n2000\r\n");
        assert_eq!(out.pieces[1].len(), COPY_BELOW);
        assert_eq!(&out.tail[..], b"\r\n0\r\n\r\n");
    }
}
