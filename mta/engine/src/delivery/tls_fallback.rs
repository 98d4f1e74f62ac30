//! Opportunistic TLS that falls back to plaintext: a host that offers STARTTLS
//! but cannot complete a handshake with rustls (TLS 1.0/1.1 only, a broken
//! certificate chain, a reset mid-handshake) gets its mail in plaintext rather
//! than never. After a failed handshake the host is remembered for
//! [`FALLBACK_FOR`], and connections to it skip STARTTLS until then. Only
//! `tls = "opportunistic"` falls back; `required` never does.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a host whose handshake failed is sent to in plaintext.
pub const FALLBACK_FOR: Duration = Duration::from_secs(3600);

/// Hosts (by address) to send to in plaintext, each until a deadline.
#[derive(Debug, Default)]
pub struct PlaintextHosts {
    until: Mutex<HashMap<IpAddr, Instant>>,
}

impl PlaintextHosts {
    /// Remembers that a handshake with `ip` failed at `now`.
    pub fn remember(&self, ip: IpAddr, now: Instant) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget the expired ones while here: the map holds only failing hosts.
        until.retain(|_, deadline| *deadline > now);
        until.insert(ip, now + FALLBACK_FOR);
    }

    /// Whether connections to `ip` skip STARTTLS at `now`.
    pub fn active(&self, ip: IpAddr, now: Instant) -> bool {
        let until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        until.get(&ip).is_some_and(|deadline| *deadline > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_host_is_plaintext_for_a_while_then_tried_with_tls_again() {
        let hosts = PlaintextHosts::default();
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let t0 = Instant::now();
        assert!(!hosts.active(a, t0));
        hosts.remember(a, t0);
        let table = [
            (a, t0, true),
            (a, t0 + FALLBACK_FOR - Duration::from_secs(1), true),
            (a, t0 + FALLBACK_FOR, false),
            (b, t0, false),
        ];
        for (ip, at, plaintext) in table {
            assert_eq!(hosts.active(ip, at), plaintext, "{ip} at {:?}", at - t0);
        }
        // Remembering another host later drops the expired entry.
        hosts.remember(b, t0 + FALLBACK_FOR * 2);
        assert_eq!(hosts.until.lock().unwrap().len(), 1);
    }
}
