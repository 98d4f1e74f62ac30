//! The tokio driver for one outgoing SMTP connection: read, feed, write, time out.
//!
//! All protocol decisions live in [`crate::smtp::client::Session`]; this module
//! only moves bytes between it and a TCP (later TLS) stream, performs the TLS
//! handshake when the session asks for it, and enforces the timeouts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::smtp::client::{Event, Session, SessionConfig, Transaction};

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
        let out = self.session.output();
        if out.is_empty() {
            return Ok(());
        }
        let data = out.split().freeze();
        let timeout = self.timeouts.command.max(self.timeouts.data);
        let write = async {
            match &mut self.stream {
                Stream::Plain(s) => s.write_all(&data).await,
                Stream::Tls(s) => {
                    s.write_all(&data).await?;
                    s.flush().await
                }
                Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| ConnError::Timeout(timeout))??;
        Ok(())
    }

    async fn read_some(&mut self) -> Result<usize, ConnError> {
        let timeout = self.timeout();
        let read = async {
            match &mut self.stream {
                Stream::Plain(s) => s.read(&mut self.buf).await,
                Stream::Tls(s) => s.read(&mut self.buf).await,
                Stream::Upgrading => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(ConnError::Timeout(timeout)),
        }
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
            .map_err(|_| ConnError::Timeout(timeout))?
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
