//! One accepted connection: read, feed, write, time out; TLS handshakes, password
//! checks and deposits on behalf of the session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use super::{DepositError, Shared, Slot};
use volley_smtp::server::{write_received, CloseReason, Event, Message, Session, Settings};

/// The socket, plain or encrypted.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a handshake is in progress (or after it failed).
    Gone,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(bytes).await,
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    async fn shutdown(&mut self) {
        let _ = match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(s) => s.shutdown().await,
            Stream::Gone => Ok(()),
        };
    }

    /// Runs the TLS handshake on the plain socket.
    async fn upgrade(&mut self, shared: &Shared) -> Result<(), String> {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Gone) else {
            return Err("not a plaintext connection".into());
        };
        let acceptor = shared.tls.as_ref().ok_or("no TLS configuration")?;
        match tokio::time::timeout(shared.idle_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => {
                *self = Stream::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("timeout after {:?}", shared.idle_timeout)),
        }
    }
}

/// Serves one connection to its end. `slot` holds its place under the connection
/// limits until then.
pub(crate) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    settings: Arc<Settings>,
    implicit_tls: bool,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    slot: Slot,
) {
    let _slot = slot;
    let client = peer.ip().to_canonical();
    let started = Instant::now();
    let deadline = started + shared.session_timeout;
    let mut stream = Stream::Plain(tcp);
    info!(%client, port = peer.port(), implicit_tls, "connection opened");
    if implicit_tls {
        if let Err(e) = stream.upgrade(&shared).await {
            warn!(%client, error = %e, "TLS handshake failed");
            return;
        }
    }
    let mut session = Session::new(settings, client, implicit_tls);
    let mut buf = vec![0u8; 64 * 1024];
    let mut messages = 0u32;
    let reason: String = 'session: loop {
        // Act on what the session asks for.
        while let Some(event) = session.poll_event() {
            match event {
                Event::Authenticate(credentials) => {
                    authenticate(&mut session, credentials, client, &shared).await;
                }
                Event::Message(message) => {
                    deposit(&mut session, *message, &shared, &mut messages).await;
                }
                Event::StartTls { .. } => {
                    if let Err(e) = flush(&mut stream, &mut session).await {
                        break 'session format!("write failed: {e}");
                    }
                    if let Err(e) = stream.upgrade(&shared).await {
                        warn!(%client, error = %e, "STARTTLS handshake failed");
                        break 'session "STARTTLS handshake failed".into();
                    }
                    session.tls_established();
                }
                Event::Closed(reason) => {
                    let _ = flush(&mut stream, &mut session).await;
                    stream.shutdown().await;
                    break 'session match reason {
                        CloseReason::Quit => "quit".into(),
                        CloseReason::TooManyErrors => "too many errors".into(),
                        CloseReason::TooManyJunkCommands => "too many commands without mail".into(),
                        CloseReason::Timeout => "timeout".into(),
                        CloseReason::Shutdown => "shutdown".into(),
                        CloseReason::ImproperPipelining => "content before the 354 reply".into(),
                    };
                }
            }
        }
        // The input is used up (or waits for nothing): send the replies.
        if let Err(e) = flush(&mut stream, &mut session).await {
            break format!("write failed: {e}");
        }
        if session.is_closed() {
            break "closed".into();
        }
        let now = Instant::now();
        let session_left = deadline.saturating_duration_since(now);
        let wait = shared.idle_timeout.min(session_left);
        let read = tokio::select! {
            _ = stop.wait_for(|&s| s) => {
                session.shutdown();
                continue;
            }
            read = tokio::time::timeout(wait, stream.read(&mut buf)) => read,
        };
        match read {
            Err(_) => {
                let which = if session_left <= shared.idle_timeout {
                    "session"
                } else {
                    "idle"
                };
                warn!(%client, timeout = which, limit = ?if which == "idle" { shared.idle_timeout } else { shared.session_timeout },
                    "timeout, closing");
                session.timeout();
            }
            Ok(Ok(0)) => break "client closed the connection".into(),
            Ok(Ok(n)) => session.feed(&buf[..n]),
            Ok(Err(e)) => break format!("read failed: {e}"),
        }
    };
    info!(%client, reason, messages, secs = started.elapsed().as_secs_f64(), "connection closed");
}

/// Writes and clears the session's output.
async fn flush(stream: &mut Stream, session: &mut Session) -> std::io::Result<()> {
    if session.output().is_empty() {
        return Ok(());
    }
    let out: BytesMut = session.output().split();
    stream.write_all(&out).await
}

/// Prepends the Received: header, hands the message to the deposit on the
/// blocking pool and tells the session how it went.
async fn deposit(session: &mut Session, message: Message, shared: &Arc<Shared>, count: &mut u32) {
    let Message { envelope, data } = message;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut received = BytesMut::with_capacity(256);
    write_received(&envelope, &shared.hostname, now, &mut received);
    // In place: the session's buffer keeps room for the header, so a large
    // message is moved along, not held twice.
    let mut full = data;
    full.reserve_exact(received.len());
    full.splice(0..0, received.iter().copied());
    let target = Arc::clone(&shared.deposit);
    let size = full.len();
    let started = Instant::now();
    let result = match target.deposit_queued(&envelope, full) {
        Ok(answer) => {
            let result = answer
                .await
                .unwrap_or_else(|_| Err(DepositError::Failed("the deposit stopped".into())));
            Ok((envelope, result))
        }
        Err(full) => {
            tokio::task::spawn_blocking(move || {
                let result = target.deposit(&envelope, &full);
                (envelope, result)
            })
            .await
        }
    };
    match result {
        Ok((envelope, Ok(id))) => {
            *count += 1;
            // commit_us: from the end of the data to durable (the group commit's
            // wait included), what the client waits for its 250.
            let commit_us = started.elapsed().as_micros() as u64;
            info!(id, from = %envelope.mail_from, rcpts = envelope.rcpt_to.len(), size, commit_us,
                client = %envelope.client_ip, user = envelope.user.as_deref().unwrap_or(""),
                tls = envelope.tls, "message accepted");
            session.message_queued(&id);
        }
        Ok((
            envelope,
            Err(DepositError::Refused {
                code,
                enhanced,
                text,
            }),
        )) => {
            warn!(code, enhanced, reason = %text, from = %envelope.mail_from,
                rcpts = ?envelope.rcpt_to, size, client = %envelope.client_ip,
                "message refused");
            session.message_refused(code, enhanced, text);
        }
        Ok((envelope, Err(e))) => {
            warn!(error = %e, from = %envelope.mail_from, rcpts = envelope.rcpt_to.len(), size,
                client = %envelope.client_ip, "deposit failed, replied 451");
            session.message_failed();
        }
        Err(e) => {
            warn!(error = %e, size, "deposit panicked, replied 451");
            session.message_failed();
        }
    }
}

/// Checks an AUTH attempt: refused at once (`454`) while its address or name is
/// locked out, else after the throttle's delay and a free password-check slot
/// (argon2 is memory-hard: the slots bound the memory of concurrent checks).
async fn authenticate(
    session: &mut Session,
    credentials: volley_smtp::server::Credentials,
    client: std::net::IpAddr,
    shared: &Arc<Shared>,
) {
    use super::auth_throttle::Gate;
    let gate = throttle(shared).gate(client, &credentials.user, Instant::now());
    let wait = match gate {
        Gate::Locked => return session.auth_throttled(),
        Gate::Check(wait) => wait,
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let Ok(_permit) = Arc::clone(&shared.auth_checks).acquire_owned().await else {
        return session.auth_verdict(false);
    };
    let user = credentials.user.clone();
    let shared2 = Arc::clone(shared);
    let ok = tokio::task::spawn_blocking(move || {
        shared2
            .users
            .verify(&credentials.user, &credentials.password)
    })
    .await
    .unwrap_or(false);
    let failures = throttle(shared).record(client, &user, ok, Instant::now());
    if !ok {
        warn!(%client, user, failures, delayed_ms = wait.as_millis() as u64, "failed AUTH counted");
    }
    session.auth_verdict(ok);
}

fn throttle(shared: &Shared) -> std::sync::MutexGuard<'_, super::auth_throttle::Throttle> {
    shared
        .auth_throttle
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
