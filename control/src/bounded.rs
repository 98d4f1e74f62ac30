//! Bounds on the HTTP listeners (the API and the public web endpoints):
//! at most so many connections at once (the next ones wait in the kernel's
//! backlog until one closes), and a connection idle for too long, reading
//! or writing, is closed. hyper bounds the size of what it reads; axum's
//! server sets no timer, so without this a client that opens connections
//! and sends nothing (slowloris) would hold them for ever.
//!
//! Hand-written: the wrapper is the few lines of poll plumbing below; a crate
//! for it would add a dependency for less than it saves.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once.
    pub connections: usize,
    /// How long a connection may stay without reading or writing a byte.
    pub idle: Duration,
}

impl Default for Bounds {
    fn default() -> Bounds {
        Bounds {
            connections: 1024,
            idle: Duration::from_secs(30),
        }
    }
}

/// A TCP listener that hands out [`Bounded`] connections within [`Bounds`].
#[derive(Debug)]
pub struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    idle: Duration,
}

impl BoundedListener {
    /// `inner` within `bounds`.
    pub fn new(inner: TcpListener, bounds: Bounds) -> BoundedListener {
        BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(bounds.connections.max(1))),
            idle: bounds.idle,
        }
    }
}

impl axum::serve::Listener for BoundedListener {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        loop {
            // A permit first: past the bound, connections wait in the backlog.
            let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
                // Never closed; wait for ever rather than spin.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    return (Bounded::new(stream, permit, self.idle), addr);
                }
                Err(e) => {
                    // EMFILE and the like: wait a moment instead of spinning.
                    tracing::warn!(err = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// The client's address, as a handler sees it (`ConnectInfo<ClientAddr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, BoundedListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, BoundedListener>) -> ClientAddr {
        ClientAddr(*stream.remote_addr())
    }
}

/// A connection that holds its listener's permit and fails with `TimedOut`
/// once idle for its bound.
#[derive(Debug)]
pub struct Bounded {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl Bounded {
    fn new(stream: TcpStream, permit: OwnedSemaphorePermit, idle: Duration) -> Bounded {
        Bounded {
            stream,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Moves the deadline on after progress.
    fn progressed(&mut self) {
        let next = Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// `Pending` becomes `TimedOut` once the deadline passed.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the HTTP connection was idle too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write(cx, buf) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.check(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_connections_close_and_the_bound_holds() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = BoundedListener::new(
            tcp,
            Bounds {
                connections: 1,
                idle: Duration::from_millis(200),
            },
        );
        let mut first = TcpStream::connect(addr).await.unwrap();
        let (mut served, _) = axum::serve::Listener::accept(&mut listener).await;
        // Progress keeps it open past the idle time.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(120)).await;
            first.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            served.read_exact(&mut b).await.unwrap();
        }
        // The bound: a second connection is not accepted while the first is
        // served.
        let _second = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(
            Duration::from_millis(100),
            axum::serve::Listener::accept(&mut listener),
        )
        .await;
        assert!(waiting.is_err(), "a second connection was served");
        // Idle: the read fails with TimedOut.
        let mut b = [0u8; 1];
        let err = served.read(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(served);
        let next = tokio::time::timeout(
            Duration::from_secs(2),
            axum::serve::Listener::accept(&mut listener),
        )
        .await;
        assert!(next.is_ok(), "the permit came back");
    }
}
