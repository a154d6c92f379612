//! A connection handed over after a `101 Switching Protocols`: the client's, from
//! patgate's HTTP/1 server ([`OnUpgrade`]), and the upstream's, from its HTTP/1 client,
//! both as [`Upgraded`]. A leaf of the request path: the server, the upstream client and
//! the tunnel ([`super::upgrade`]) meet here without importing one another.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// Any connection, boxed, for the tunnel an upgrade becomes.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection after a `101`: the bytes its peer sent past the head (read already), then
/// the rest. The client's (its upgrade request's head), and the upstream's (its `101`).
pub struct Upgraded {
    pre: Bytes,
    io: Box<dyn Io>,
}

impl Upgraded {
    pub(crate) fn new(pre: Bytes, io: Box<dyn Io>) -> Upgraded {
        Upgraded { pre, io }
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// In an upgrade request's extensions: the client's connection, once its `101` is written.
#[derive(Clone)]
pub struct OnUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    /// The client's side of a switch, to arrive on `rx` once its `101` is written.
    pub(crate) fn new(rx: oneshot::Receiver<Upgraded>) -> OnUpgrade {
        OnUpgrade(Arc::new(Mutex::new(Some(rx))))
    }

    /// Waits for the client's side of the switch; fails when the connection did not switch.
    pub async fn upgraded(self) -> Result<Upgraded, &'static str> {
        let rx = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match rx {
            Some(rx) => rx.await.map_err(|_| "the client connection did not switch"),
            None => Err("the client connection was already taken"),
        }
    }
}
