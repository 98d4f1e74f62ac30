//! The tokio driver for one outgoing SMTP connection: read, feed, write, time out.
//!
//! All protocol decisions live in [`volley_smtp::client::Session`]; this module
//! only moves bytes between it and a TCP (later TLS) stream, performs the TLS
//! handshake when the session asks for it, and enforces the timeouts.

use std::future::Future;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use volley_smtp::client::{Event, Session, SessionConfig, Transaction};

/// Timeouts for one connection (RFC 5321 §4.5.3.2 defaults come from the config).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// The 220 greeting.
    pub greeting: Duration,
    /// Each command's reply.
    pub command: Duration,
    /// The reply after the message data.
    pub data: Duration,
}

/// Why a connection failed before or during a session.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// TCP connect failed or timed out.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Address tried.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No reply within the timeout.
    #[error("timeout after {0:?} waiting for the server")]
    Timeout(Duration),
    /// Reading or writing failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while the stream is being upgraded to TLS.
    Upgrading,
}

/// An open SMTP connection driven by a [`Session`].
pub struct Connection {
    stream: Stream,
    session: Session,
    buf: Vec<u8>,
    timeouts: Timeouts,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The connection's one timer, for every read and write (see [`within`]).
    timer: Pin<Box<Sleep>>,
    /// The chunks of the write under way (kept for its capacity).
    chunks: Vec<Bytes>,
    /// Whether the stream is encrypted now.
    pub encrypted: bool,
    /// The peer address.
    pub peer: SocketAddr,
    ready: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("encrypted", &self.encrypted)
            .finish()
    }
}

/// Runs `io`, failing with [`ConnError::Timeout`] if it takes longer than
/// `timeout`, on the connection's one timer.
///
/// `tokio::time::timeout` would insert a fresh entry into the timer wheel and
/// remove it again for every read and write, two per message. Here the timer
/// stays armed: it is moved earlier only when this deadline comes before the
/// armed one, and when it fires early (armed for an older, earlier deadline) it
/// is moved to this one. So a busy connection touches the wheel about once per
/// timeout period, and each call costs a clock read.
async fn within<T>(
    timer: &mut Pin<Box<Sleep>>,
    timeout: Duration,
    io: impl Future<Output = std::io::Result<T>>,
) -> Result<T, ConnError> {
    let deadline = Instant::now() + timeout;
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    tokio::pin!(io);
    loop {
        tokio::select! {
            biased;
            result = &mut io => return Ok(result?),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return Err(ConnError::Timeout(timeout));
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Writes `chunks` in order with as few `writev` calls as the socket allows:
/// usually one per pipelined group, the message body among the chunks without
/// having been copied into a command buffer.
async fn write_all_vectored(stream: &mut TcpStream, chunks: &[Bytes]) -> std::io::Result<()> {
    const MAX_SLICES: usize = 16;
    let (mut index, mut offset) = (0, 0);
    while index < chunks.len() {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        for (i, chunk) in chunks[index..].iter().take(MAX_SLICES).enumerate() {
            slices[i] = IoSlice::new(if i == 0 { &chunk[offset..] } else { chunk });
            count += 1;
        }
        let mut written = stream.write_vectored(&slices[..count]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < chunks.len() {
            let left = chunks[index].len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            index += 1;
            offset = 0;
        }
    }
    Ok(())
}

/// Opens a TCP connection to `addr`, from `source` if given.
pub async fn connect_tcp(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnError> {
    let err = |reason: String| ConnError::Connect { addr, reason };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| err(e.to_string()))?;
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| err(format!("bind {ip}: {e}")))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| err(format!("timeout after {timeout:?}")))?
        .map_err(|e| err(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Connection {
    /// Wraps a connected stream. `tls` is the connector and server name to use if
    /// the session asks for STARTTLS.
    pub fn new(
        stream: TcpStream,
        config: SessionConfig,
        timeouts: Timeouts,
        tls: Option<(Arc<rustls::ClientConfig>, String)>,
    ) -> Connection {
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let tls = tls.map(|(config, name)| {
            let name = ServerName::try_from(name)
                .ok()
                .unwrap_or_else(|| ServerName::IpAddress(peer.ip().into()));
            (TlsConnector::from(config), name)
        });
        Connection {
            stream: Stream::Plain(stream),
            session: Session::new(config),
            buf: vec![0; 64 * 1024],
            timeouts,
            tls,
            timer: Box::pin(tokio::time::sleep_until(Instant::now() + timeouts.command)),
            chunks: Vec::new(),
            encrypted: false,
            peer,
            ready: false,
        }
    }

    /// The protocol session (to enqueue transactions, ask for QUIT, …).
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Enqueues a transaction; its bytes go out with the next [`Connection::next_event`].
    pub fn enqueue(&mut self, tx: Transaction) -> Result<(), Transaction> {
        self.session.enqueue(tx)
    }

    fn timeout(&self) -> Duration {
        if !self.ready {
            self.timeouts.greeting.max(self.timeouts.command)
        } else if self.session.in_flight() > 0 {
            self.timeouts.data
        } else {
            self.timeouts.command
        }
    }

    async fn write_output(&mut self) -> Result<(), ConnError> {
        if !self.session.has_output() {
            return Ok(());
        }
        let mut chunks = std::mem::take(&mut self.chunks);
        self.session.take_output(&mut chunks);
        let timeout = self.timeouts.command.max(self.timeouts.data);
        let stream = &mut self.stream;
        let write = async {
            match stream {
                Stream::Plain(s) => write_all_vectored(s, &chunks).await,
                Stream::Tls(s) => {
                    for chunk in &chunks {
                        s.write_all(chunk).await?;
                    }
                    s.flush().await
                }
                Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        let result = within(&mut self.timer, timeout, write).await;
        chunks.clear();
        self.chunks = chunks;
        result
    }

    async fn read_some(&mut self) -> Result<usize, ConnError> {
        let timeout = self.timeout();
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        let read = async {
            match stream {
                Stream::Plain(s) => s.read(buf).await,
                Stream::Tls(s) => s.read(buf).await,
                Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        within(&mut self.timer, timeout, read).await
    }

    async fn start_tls(&mut self) -> Result<(), ConnError> {
        let Some((connector, name)) = self.tls.clone() else {
            return Err(ConnError::Tls("no TLS configuration".into()));
        };
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Upgrading) else {
            return Err(ConnError::Tls(
                "STARTTLS on a stream that is not plain TCP".into(),
            ));
        };
        let timeout = self.timeouts.command;
        let tls = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnError::Tls(format!("no handshake within {timeout:?}")))?
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        self.stream = Stream::Tls(Box::new(tls));
        self.encrypted = true;
        self.session.tls_established();
        Ok(())
    }

    /// Writes what the session has to say, reads and feeds replies, and returns
    /// the session's next event. A lost connection is fed to the session, so the
    /// in-flight transactions still get their results (as connection failures).
    pub async fn next_event(&mut self) -> Result<Event, ConnError> {
        loop {
            if let Some(event) = self.session.poll_event() {
                match event {
                    Event::StartTls => {
                        self.start_tls().await?;
                        continue;
                    }
                    Event::Ready(_) => self.ready = true,
                    _ => {}
                }
                return Ok(event);
            }
            if self.session.is_closed() {
                return Err(ConnError::Io(std::io::ErrorKind::NotConnected.into()));
            }
            if let Err(err) = self.write_output().await {
                self.session.connection_lost();
                if self.session.in_flight() == 0 {
                    return Err(err);
                }
                continue;
            }
            match self.read_some().await {
                Ok(0) => self.session.connection_lost(),
                Ok(n) => {
                    let (session, buf) = (&mut self.session, &self.buf);
                    session.feed(&buf[..n]);
                }
                Err(err) => {
                    if self.session.in_flight() == 0 {
                        return Err(err);
                    }
                    self.session.connection_lost();
                }
            }
        }
    }

    /// Sends QUIT and waits briefly for the close; errors are ignored (the work
    /// is done).
    pub async fn quit(mut self) {
        self.session.quit();
        let deadline = Duration::from_secs(5).min(self.timeouts.command);
        let _ = tokio::time::timeout(deadline, async {
            while !self.session.is_closed() {
                if self.next_event().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if let Stream::Tls(mut s) = std::mem::replace(&mut self.stream, Stream::Upgrading) {
            let _ = s.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer() -> Pin<Box<Sleep>> {
        Box::pin(tokio::time::sleep_until(
            Instant::now() + Duration::from_secs(3600),
        ))
    }

    async fn after(ms: u64) -> std::io::Result<u64> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }

    #[tokio::test]
    async fn an_operation_that_takes_too_long_times_out() {
        let mut timer = timer();
        let started = std::time::Instant::now();
        let result = within(
            &mut timer,
            Duration::from_millis(50),
            std::future::pending::<std::io::Result<()>>(),
        )
        .await;
        assert!(matches!(result, Err(ConnError::Timeout(t)) if t == Duration::from_millis(50)));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn a_timer_armed_for_an_earlier_deadline_does_not_cut_a_later_operation_short() {
        let mut timer = timer();
        // Arms the timer at +50 ms.
        assert_eq!(
            within(&mut timer, Duration::from_millis(50), after(1))
                .await
                .ok(),
            Some(1)
        );
        // The timer fires at ~+50 ms while this 150 ms operation (allowed 1 s) runs.
        let result = within(&mut timer, Duration::from_secs(1), after(150)).await;
        assert_eq!(result.ok(), Some(150));
        // And it still times out an operation after that.
        let result = within(
            &mut timer,
            Duration::from_millis(30),
            std::future::pending::<std::io::Result<()>>(),
        )
        .await;
        assert!(matches!(result, Err(ConnError::Timeout(_))));
    }

    #[tokio::test]
    async fn a_shorter_timeout_after_a_longer_one_is_honoured() {
        let mut timer = timer();
        assert_eq!(
            within(&mut timer, Duration::from_secs(600), after(0))
                .await
                .ok(),
            Some(0)
        );
        let started = std::time::Instant::now();
        let result = within(
            &mut timer,
            Duration::from_millis(40),
            std::future::pending::<std::io::Result<()>>(),
        )
        .await;
        assert!(matches!(result, Err(ConnError::Timeout(_))));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn io_errors_pass_through() {
        let mut timer = timer();
        let failing =
            async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) };
        let result = within(&mut timer, Duration::from_secs(1), failing).await;
        assert!(
            matches!(result, Err(ConnError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset)
        );
    }

    /// More chunks than one writev takes, larger than the socket buffer: every
    /// byte arrives, in order, across partial writes.
    #[tokio::test]
    async fn vectored_writes_deliver_every_chunk_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut all = Vec::new();
            socket.read_to_end(&mut all).await.unwrap();
            all
        });
        let chunks: Vec<Bytes> = (0..40u8)
            .map(|i| Bytes::from(vec![i; 1 + usize::from(i) * 7919]))
            .collect();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        write_all_vectored(&mut stream, &chunks).await.unwrap();
        drop(stream);
        let all = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(all, chunks.concat());
    }
}
