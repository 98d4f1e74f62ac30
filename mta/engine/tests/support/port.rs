//! Loopback ports for test peers: picking a free one, and waiting until a peer listens.
//!
//! Every test peer binds to an address in 127.0.0.0/8 only (127.0.0.1 … 127.0.0.254
//! all work on Linux loopback without setup). Waiting is polling with a deadline,
//! never a fixed sleep.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Asks the kernel for a free TCP port on `ip` (binds `ip:0`, reads the port, closes
/// the listener). The port is only *likely* to stay free until a peer binds it: the
/// peers' `start` functions retry with another port when the bind fails. A port
/// already handed out by this process is never handed out again (the kernel may
/// offer a closed one twice in a row: a test that asked for two ports, for two
/// listeners of one daemon, once got the same one for both).
///
/// Panics if `ip` is not a loopback address or the bind fails.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<(Ipv4Addr, u16)>> = std::sync::Mutex::new(Vec::new());
    assert!(
        ip.is_loopback(),
        "test peers bind to 127.0.0.0/8 only, not {ip}"
    );
    loop {
        let listener = TcpListener::bind(SocketAddrV4::new(ip, 0))
            .unwrap_or_else(|e| panic!("bind {ip}:0 for a free port: {e}"));
        let port = listener
            .local_addr()
            .expect("local_addr of a bound listener")
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&(ip, port)) {
            given.push((ip, port));
            return port;
        }
    }
}

/// Connects to `addr` repeatedly (short sleeps in between) until a connection
/// succeeds or `deadline` (a duration from now) passes. The probe connection is
/// closed at once; note that it counts as a session for the peer (smtp-sink counts
/// it, a scripted receiver logs it): the peers here use [`wait_bound`] instead.
pub fn wait_listening(addr: SocketAddr, deadline: Duration) -> Result<(), String> {
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let last_err = match TcpStream::connect_timeout(
            &addr,
            left.clamp(Duration::from_millis(1), Duration::from_millis(200)),
        ) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= end {
            return Err(format!(
                "{addr} not listening after {deadline:?}: {last_err}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether some process has a TCP socket in LISTEN state bound exactly to `addr`
/// (IPv4), read from `/proc/net/tcp` without connecting to it.
pub fn is_bound_listening(addr: SocketAddrV4) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // The kernel prints the address as the in-memory (network order) u32 with %08X,
    // i.e. in host byte order, and the port in host order: 127.0.0.5:2526 on x86 is
    // "0500007F:09DE".
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    );
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        local == Some(want.as_str()) && state == Some("0A")
    })
}

/// Polls `/proc/net/tcp` until a socket listens on `addr` (see [`is_bound_listening`])
/// or `deadline` passes. Unlike [`wait_listening`] this never opens a connection, so
/// the peer sees no probe session. `alive` is called on every round: return `Err`
/// from it (e.g. "process exited: …") to stop waiting early.
pub fn wait_bound(
    addr: SocketAddrV4,
    deadline: Duration,
    mut alive: impl FnMut() -> Result<(), String>,
) -> Result<(), String> {
    let end = Instant::now() + deadline;
    loop {
        if is_bound_listening(addr) {
            return Ok(());
        }
        alive()?;
        if Instant::now() >= end {
            return Err(format!("nothing listening on {addr} after {deadline:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Calls `check` every few milliseconds until it returns `Some` or `deadline` (from
/// now) passes; returns the last `Some` value or `None` on timeout. `check` is
/// always called at least once, and once more at the deadline.
pub fn poll<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= end {
            return None;
        }
        std::thread::sleep(pause.min(end - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// How one attempt to start a peer on a chosen port went.
pub enum Attempt<T> {
    /// Listening: the started peer.
    Started(T),
    /// Another process took the port between [`free_port`] and the bind: try another.
    PortTaken(String),
    /// Failed for another reason: give up with this error.
    Failed(String),
}

/// Starts a peer on a free port of `ip`: `attempt` is called with a fresh address
/// until it starts, fails for a reason other than a lost port race, or five ports
/// were tried. The one retry policy of every peer harness.
pub fn on_free_port<T>(
    ip: Ipv4Addr,
    mut attempt: impl FnMut(SocketAddrV4) -> Attempt<T>,
) -> Result<T, String> {
    let mut last_err = String::new();
    for _ in 0..5 {
        match attempt(SocketAddrV4::new(ip, free_port(ip))) {
            Attempt::Started(peer) => return Ok(peer),
            Attempt::PortTaken(e) => last_err = e,
            Attempt::Failed(e) => return Err(e),
        }
    }
    Err(last_err)
}
