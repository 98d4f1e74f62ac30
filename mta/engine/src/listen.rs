//! The SMTP listener: the tokio driver of [`volley_smtp::server::Session`].
//!
//! [`Server::bind`] binds every `[[listen]]` entry; [`Server::run`] accepts
//! connections until its `shutdown` future completes, then tells open sessions
//! (`421 4.3.2`) and waits for them. Per connection the driver reads, feeds,
//! writes and times out (idle and total session time, `421 4.4.2`), does the TLS
//! handshakes (STARTTLS or implicit), checks passwords and hands each accepted
//! message to the caller's [`Deposit`] on the blocking pool; the `250` goes out
//! only once the deposit returned an id. Connections over the total or per-client
//! limit get `421 4.7.0` at once.
//!
//! What it does not do: decide anything about the protocol (that is the session),
//! queue or deliver messages (the [`Deposit`] implementor does), PROXY protocol.
//!
//! Layout: this file (binding, accepting, limits, shutdown); `listen/connection.rs`
//! (one connection); `listen/users.rs` (AUTH users, argon2); `listen/tls.rs`
//! (rustls server configuration).

pub mod auth_throttle;
mod connection;
mod tls;
pub mod users;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};
use volley_conf::{Config, ConfigError, ListenRole, ListenTls};

pub use users::{hash_password, HashError, Users};
use volley_inbound::Verp;
use volley_smtp::server::{Envelope, RelayPolicy, Session, Settings};

/// Where accepted messages go. Implementations make the message durable before
/// returning `Ok` (the client is told `250` only then) and return the id it is
/// known by (`250 2.0.0 Ok: queued as <id>`). Called on tokio's blocking pool,
/// once per message (whatever its number of recipients).
pub trait Deposit: Send + Sync + 'static {
    /// Stores `message` (the Received: header already prepended) for `envelope`.
    fn deposit(&self, envelope: &Envelope, message: &[u8]) -> Result<String, DepositError>;

    /// Takes the message without blocking, when the deposit can: it is made
    /// durable in the background (a group commit) and the answer, as
    /// [`Deposit::deposit`]'s, arrives on the receiver. `Err` gives the
    /// message back: call [`Deposit::deposit`] (on the blocking pool) instead.
    /// By default, `Err`.
    #[allow(clippy::result_large_err)]
    fn deposit_queued(
        &self,
        _envelope: &Envelope,
        message: Vec<u8>,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<String, DepositError>>, Vec<u8>> {
        Err(message)
    }
}

/// Why a message was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepositError {
    /// It could not be stored: the client gets `451 4.3.0` and tries again.
    #[error("{0}")]
    Failed(String),
    /// It is refused for good: the client gets this 5xx reply (e.g. `550 5.7.1`
    /// for a forged VERP address).
    #[error("refused with {code} {enhanced}: {text}")]
    Refused {
        /// The reply code, 500..=599.
        code: u16,
        /// The enhanced status code, e.g. `5.7.1`.
        enhanced: &'static str,
        /// The reply text.
        text: String,
    },
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A socket could not be bound.
    #[error("cannot listen on {addr}: {io}")]
    Bind {
        /// The `[[listen]] address`.
        addr: SocketAddr,
        /// Why.
        io: std::io::Error,
    },
    /// The certificate or key could not be loaded.
    #[error("TLS: {path}: {reason}")]
    Tls {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The TLS setup is incomplete (`tls = "implicit"` without a certificate,
    /// a certificate without a key...).
    #[error("{0}")]
    TlsSetup(String),
    /// The users file could not be read or is malformed.
    #[error(transparent)]
    Users(#[from] ConfigError),
}

/// What every connection of one listener shares.
struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
    settings: Arc<Settings>,
    implicit_tls: bool,
}

/// What every connection of the server shares.
pub(crate) struct Shared {
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) users: Users,
    pub(crate) deposit: Arc<dyn Deposit>,
    pub(crate) idle_timeout: Duration,
    pub(crate) session_timeout: Duration,
    pub(crate) hostname: String,
    /// Password checks running at once (`[server] max_auth_checks`).
    pub(crate) auth_checks: Arc<Semaphore>,
    /// Failed AUTH counts across connections.
    pub(crate) auth_throttle: Mutex<auth_throttle::Throttle>,
    connections: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    max_connections: u32,
    max_per_ip: u32,
}

/// The bound listeners, ready to [`run`](Server::run).
pub struct Server {
    listeners: Vec<Listener>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.local_addrs())
            .finish()
    }
}

impl Server {
    /// Loads the certificate and users and binds every `[[listen]]` entry of
    /// `config`. Recipients in `[relay] domains` and in `local_domains` (e.g. the
    /// bounce domain) are local. `deposit` receives the accepted messages.
    pub async fn bind(
        config: &Config,
        local_domains: &[String],
        deposit: Arc<dyn Deposit>,
    ) -> Result<Server, ListenError> {
        let s = &config.server;
        let tls = match (&s.tls_cert_file, &s.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
            (None, None) => None,
            _ => {
                return Err(ListenError::TlsSetup(
                    "[server] tls_cert_file and tls_key_file go together".into(),
                ))
            }
        };
        let users = Users::from_config(config)?;
        let hostname = if s.hostname.is_empty() {
            crate::host::host_name()
        } else {
            s.hostname.clone()
        };
        let domains: HashSet<String> = config
            .relay
            .domains
            .iter()
            .chain(local_domains)
            .cloned()
            .collect();
        let mut listeners = Vec::new();
        // One content budget for every listener's sessions.
        let budget = volley_smtp::server::budget::ContentBudget::new(
            s.max_buffered_bytes.max(s.max_message_size),
        );
        for entry in &config.listen {
            if entry.tls == ListenTls::Implicit && tls.is_none() {
                return Err(ListenError::TlsSetup(format!(
                    "[[listen]] {}: tls = \"implicit\" needs [server] tls_cert_file and tls_key_file",
                    entry.address
                )));
            }
            let policy = RelayPolicy::new(
                entry.role,
                config.relay.networks.clone(),
                domains.iter().cloned(),
            );
            let mut settings = Settings::new(&hostname, policy);
            settings.max_message_size = s.max_message_size;
            settings.max_recipients = s.max_recipients as usize;
            settings.max_line_length = s.max_line_length as usize;
            settings.max_errors = s.max_errors;
            settings.max_junk_commands = s.max_junk_commands;
            settings.content_budget = Some(Arc::clone(&budget));
            settings.starttls = entry.tls == ListenTls::Starttls && tls.is_some();
            settings.auth = entry.role == ListenRole::Submission
                && entry.tls != ListenTls::None
                && tls.is_some()
                && !users.is_empty();
            let socket =
                TcpListener::bind(entry.address)
                    .await
                    .map_err(|io| ListenError::Bind {
                        addr: entry.address,
                        io,
                    })?;
            let addr = socket.local_addr().unwrap_or(entry.address);
            info!(%addr, role = ?entry.role, tls = ?entry.tls, starttls = settings.starttls,
                auth = settings.auth, "listening");
            listeners.push(Listener {
                socket,
                addr,
                settings: Arc::new(settings),
                implicit_tls: entry.tls == ListenTls::Implicit,
            });
        }
        let shared = Arc::new(Shared {
            tls,
            users,
            deposit,
            idle_timeout: s.idle_timeout,
            session_timeout: s.session_timeout,
            hostname,
            auth_checks: Arc::new(Semaphore::new(match s.max_auth_checks {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n as usize,
            })),
            auth_throttle: Mutex::new(auth_throttle::Throttle::new(
                s.max_auth_failures,
                s.auth_lockout,
            )),
            connections: Arc::new(Semaphore::new(s.max_connections as usize)),
            per_ip: Mutex::new(HashMap::new()),
            max_connections: s.max_connections,
            max_per_ip: s.max_connections_per_ip,
        });
        Ok(Server { listeners, shared })
    }

    /// Checks VERP addresses at RCPT on every listener: the domain of `verp` is
    /// local, and a recipient there with its prefix whose token does not verify
    /// gets `550 5.7.1` and a log line (see [`Settings::verp`]).
    pub fn with_verp(mut self, verp: Arc<Verp>) -> Server {
        for listener in &mut self.listeners {
            let settings = Arc::make_mut(&mut listener.settings);
            settings.relay.domains.insert(verp.domain().to_owned());
            settings.verp = Some(Arc::clone(&verp) as Arc<dyn volley_smtp::server::VerpCheck>);
        }
        self
    }

    /// The bound addresses, in `[[listen]]` order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    /// Accepts connections until `shutdown` completes; then stops accepting, ends
    /// open sessions with `421 4.3.2` (a message being deposited is finished
    /// first) and returns when every connection is closed.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop, stopped) = watch::channel(false);
        let mut accepters = JoinSet::new();
        for listener in self.listeners {
            accepters.spawn(accept_loop(
                listener,
                Arc::clone(&self.shared),
                stopped.clone(),
            ));
        }
        shutdown.await;
        info!("shutting down the SMTP listener");
        let _ = stop.send(true);
        while accepters.join_next().await.is_some() {}
    }
}

async fn accept_loop(listener: Listener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    let listener = Arc::new(listener);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|&s| s) => break,
            accepted = listener.socket.accept() => accepted,
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                warn!(addr = %listener.addr, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(slot) = Slot::take(&shared, peer.ip()) else {
            connections.spawn(refuse_busy(stream, peer, Arc::clone(&shared)));
            continue;
        };
        connections.spawn(connection::serve(
            stream,
            peer,
            Arc::clone(&listener.settings),
            listener.implicit_tls,
            Arc::clone(&shared),
            stop.clone(),
            slot,
        ));
    }
    while connections.join_next().await.is_some() {}
}

/// Greets a connection over the limits with `421 4.7.0` and closes it.
async fn refuse_busy(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    warn!(client = %peer.ip(), max_connections = shared.max_connections,
        max_per_ip = shared.max_per_ip, "connection limit reached, refused with 421");
    let greeting = Session::busy_greeting(&shared.hostname);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&greeting).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A connection's place under the total and per-client limits; released on drop.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slot {
    fn take(shared: &Arc<Shared>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let permit = Arc::clone(&shared.connections).try_acquire_owned().ok()?;
        let mut per_ip = shared.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= shared.max_per_ip {
            return None;
        }
        *count += 1;
        Some(Slot {
            shared: Arc::clone(shared),
            ip,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self
            .shared
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}
