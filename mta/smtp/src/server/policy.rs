//! Which recipients a session may send to: the relay rules, as one pure function
//! of the listener's role, the client address, whether it authenticated and the
//! recipient's domain. No open relay: anything not allowed here is refused.

use std::collections::HashSet;
use std::net::IpAddr;

use volley_conf::{Cidr, ListenRole};

/// The relay rules of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPolicy {
    /// The listener's role.
    pub role: ListenRole,
    /// Client networks that may relay through a submission listener without AUTH.
    pub networks: Vec<Cidr>,
    /// The domains volley receives mail for, lower-case, without a trailing dot.
    pub domains: HashSet<String>,
}

impl RelayPolicy {
    /// Rules for a listener of `role`; `domains` are normalized (lower-cased,
    /// trailing dot removed).
    pub fn new(
        role: ListenRole,
        networks: Vec<Cidr>,
        domains: impl IntoIterator<Item = String>,
    ) -> RelayPolicy {
        let domains = domains
            .into_iter()
            .map(|d| d.strip_suffix('.').unwrap_or(&d).to_ascii_lowercase())
            .collect();
        RelayPolicy {
            role,
            networks,
            domains,
        }
    }

    /// Whether `rcpt` is in a domain volley receives mail for. The bare
    /// `postmaster` of RFC 5321 §4.5.1 counts as local.
    pub fn is_local(&self, rcpt: &str) -> bool {
        match rcpt.rsplit_once('@') {
            None => rcpt.eq_ignore_ascii_case("postmaster"),
            Some((_, domain)) => {
                let domain = domain.strip_suffix('.').unwrap_or(domain);
                // Names are compared lower-cased; non-ASCII (SMTPUTF8) domains only
                // match exactly as configured (their xn-- form never matches).
                self.domains.contains(&domain.to_ascii_lowercase())
            }
        }
    }

    /// Whether the client may relay: a submission listener with an authenticated
    /// session or a client in `networks`.
    pub fn may_relay(&self, client: IpAddr, authenticated: bool) -> bool {
        self.role == ListenRole::Submission
            && (authenticated || self.networks.iter().any(|n| n.contains(client)))
    }

    /// Whether a session from `client` (authenticated or not) may send to `rcpt`.
    pub fn allows(&self, client: IpAddr, authenticated: bool, rcpt: &str) -> bool {
        self.is_local(rcpt) || self.may_relay(client, authenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(role: ListenRole, networks: &[&str]) -> RelayPolicy {
        let networks = networks
            .iter()
            .map(|n| n.parse().unwrap_or_else(|e| panic!("{n}: {e}")))
            .collect();
        RelayPolicy::new(role, networks, ["Bounces.Acme.Test.".to_owned()])
    }

    #[test]
    fn table() {
        use ListenRole::{Inbound, Submission};
        let local = "u@bounces.acme.test";
        let local_upper = "U@BOUNCES.ACME.TEST.";
        let remote = "user@gmail.test";
        let sub_local = "u@x.bounces.acme.test";
        let lo = "127.0.0.1";
        let far = "203.0.113.5";
        // (role, networks, client, authenticated, rcpt, allowed)
        type Row<'a> = (ListenRole, &'a [&'a str], &'a str, bool, &'a str, bool);
        let table: &[Row] = &[
            (Submission, &["127.0.0.0/8"], lo, false, remote, true),
            (
                Submission,
                &["127.0.0.0/8"],
                "::ffff:127.0.0.1",
                false,
                remote,
                true,
            ),
            (Submission, &["127.0.0.0/8"], far, false, remote, false),
            (Submission, &["127.0.0.0/8"], far, true, remote, true),
            (Submission, &["127.0.0.0/8"], far, false, local, true),
            (Submission, &[], lo, false, remote, false),
            (Submission, &[], lo, false, local_upper, true),
            (Submission, &[], lo, true, remote, true),
            (Submission, &[], far, false, sub_local, false),
            (Submission, &[], far, false, "postmaster", true),
            (Submission, &[], far, false, "u@[127.0.0.1]", false),
            (Inbound, &["0.0.0.0/0"], far, false, remote, false),
            (Inbound, &["0.0.0.0/0"], lo, true, remote, false),
            (Inbound, &[], far, false, local, true),
            (Inbound, &[], far, false, "u@acme.test", false),
        ];
        for &(role, networks, client, auth, rcpt, allowed) in table {
            let ip: IpAddr = client.parse().unwrap_or_else(|e| panic!("{client}: {e}"));
            assert_eq!(
                policy(role, networks).allows(ip, auth, rcpt),
                allowed,
                "{role:?} {networks:?} {client} auth={auth} {rcpt}"
            );
        }
    }
}
