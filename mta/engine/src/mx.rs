//! MX resolution: from a recipient domain to the ordered list of mail exchangers and
//! their addresses (RFC 5321 §5.1, RFC 7505 null MX), on top of hickory-resolver.
//!
//! [`MxResolver::resolve`] looks up the domain's MX records, sorts them by preference
//! (hosts of equal preference in random order, re-shuffled on every call), resolves A
//! and AAAA of every host concurrently, and returns a [`Destination`]. With no MX
//! records the domain itself is the only host (the implicit MX). Failures are
//! classified as permanent (bounce) or temporary (retry later) by
//! [`MxError::is_permanent`].
//!
//! # Caching
//!
//! Two layers:
//!
//! * hickory's own response cache (`cache_size` responses) holds each DNS answer for
//!   its TTL. In hickory 0.26 it also caches NXDOMAIN and NoData answers
//!   (`NoRecordsFound`), for the negative TTL of the SOA in the authority section
//!   (`min(SOA TTL, SOA MINIMUM)`), clamped here to
//!   [`MIN_NEGATIVE_TTL`]..=[`MAX_NEGATIVE_TTL`]; a negative answer without SOA is
//!   kept for [`MIN_NEGATIVE_TTL`]. hickory never caches SERVFAIL, REFUSED, timeouts
//!   or network errors, and does not coalesce concurrent identical queries.
//! * on top of it, [`MxResolver`] keeps the whole outcome per lower-cased domain
//!   (`Ok(Destination)` or `Err(MxError)`, at most `cache_size` domains). An outcome
//!   expires with the shortest TTL among the answers it was built from (negative
//!   answers counted with their clamped negative TTL); temporary failures, and
//!   destinations where some host's address lookup failed temporarily, are kept for
//!   at most [`TEMPORARY_FAILURE_TTL`] so a dead DNS server is not asked once per
//!   recipient. Concurrent calls for a domain that is being resolved wait for that one
//!   resolution instead of querying again.
//!
//! Domain names are queried fully qualified: the resolv.conf search list and
//! `/etc/hosts` are never used.

mod cache;
mod lookup;
mod select;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::TokioResolver;

use self::cache::ResultCache;
use self::select::SplitMix64;

/// At most this many MX hosts (after ordering and shuffling) are resolved and returned
/// per domain; the rest are dropped. No delivery ever gets that far down the list, and
/// it bounds the work a hostile MX set can cause.
pub const MAX_MX_HOSTS: usize = 16;

/// How long a temporary failure (SERVFAIL, REFUSED, timeout, network error) is cached.
pub const TEMPORARY_FAILURE_TTL: Duration = Duration::from_secs(5);

/// The shortest time a negative answer (NXDOMAIN, NoData) is cached.
pub const MIN_NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// The longest time a negative answer (NXDOMAIN, NoData) is cached.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(3600);

/// The longest time a positive answer is cached (hickory's own maximum TTL).
const MAX_POSITIVE_TTL: Duration = Duration::from_secs(86_400);

/// One mail exchanger of a [`Destination`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MxHost {
    /// The exchange host name: lower-case ASCII (IDNA as punycode), no trailing dot.
    pub name: String,
    /// The MX preference (lower is tried first); 0 for the implicit MX.
    pub preference: u16,
    /// The host's IPv4 addresses (A) followed by its IPv6 addresses (AAAA). Empty if
    /// the host's address lookup failed temporarily (hosts that definitely have no
    /// address are left out of the destination).
    pub addrs: Vec<IpAddr>,
}

/// Where mail for a domain goes: its mail exchangers, in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The recipient domain, normalised: lower-case ASCII, no trailing dot.
    pub domain: String,
    /// The exchangers by ascending preference, random order among equal preference.
    pub hosts: Vec<MxHost>,
    /// True if the domain has no MX records and `hosts` is the domain itself with
    /// preference 0 (the implicit MX of RFC 5321 §5.1).
    pub implicit: bool,
}

impl Destination {
    /// The site this destination delivers to: the sorted, de-duplicated MX host names
    /// joined with ",". Domains sharing their MX hosts share a site key (and so a
    /// connection pool and rate limits).
    pub fn site_key(&self) -> String {
        select::site_key(&self.hosts)
    }
}

/// Why a domain has no usable mail exchanger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MxError {
    /// The domain is not a syntactically valid mail domain (permanent).
    #[error("{domain}: invalid domain name: {reason}")]
    InvalidDomain {
        /// The domain as given.
        domain: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The domain publishes a null MX (RFC 7505): it accepts no mail (permanent).
    #[error("{domain}: domain accepts no mail (null MX, RFC 7505)")]
    NullMx {
        /// The normalised domain.
        domain: String,
    },
    /// The domain does not exist: NXDOMAIN (permanent).
    #[error("{domain}: no such domain (NXDOMAIN)")]
    NoSuchDomain {
        /// The normalised domain.
        domain: String,
    },
    /// None of the MX hosts (or, without MX, the domain itself) has an address.
    /// Permanent if every address lookup answered NXDOMAIN or no records; temporary if
    /// some of them failed temporarily.
    #[error(
        "{domain}: no address for any mail exchanger{}",
        if *permanent { "" } else { " (some lookups failed temporarily)" }
    )]
    NoAddress {
        /// The normalised domain.
        domain: String,
        /// Whether the condition is definitive.
        permanent: bool,
    },
    /// The lookup failed: SERVFAIL, REFUSED, timeout or network error (temporary).
    #[error("{domain}: temporary DNS failure: {reason}")]
    Temporary {
        /// The normalised domain.
        domain: String,
        /// The resolver's error.
        reason: String,
    },
}

impl MxError {
    /// Whether the failure is permanent (bounce the mail) rather than temporary
    /// (retry later).
    pub fn is_permanent(&self) -> bool {
        match self {
            MxError::InvalidDomain { .. }
            | MxError::NullMx { .. }
            | MxError::NoSuchDomain { .. } => true,
            MxError::NoAddress { permanent, .. } => *permanent,
            MxError::Temporary { .. } => false,
        }
    }

    /// The domain the error is about.
    pub fn domain(&self) -> &str {
        match self {
            MxError::InvalidDomain { domain, .. }
            | MxError::NullMx { domain }
            | MxError::NoSuchDomain { domain }
            | MxError::NoAddress { domain, .. }
            | MxError::Temporary { domain, .. } => domain,
        }
    }
}

/// [`MxResolver::new`] could not set up the DNS resolver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DNS resolver setup failed: {reason}")]
pub struct ResolverSetupError {
    /// What went wrong (e.g. `/etc/resolv.conf` unreadable).
    pub reason: String,
}

/// How [`MxResolver`] talks to DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Recursive name servers to query, over UDP with TCP fallback on truncation.
    /// Empty: the system's, from `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Time allowed for one query (default 5 s).
    pub timeout: Duration,
    /// How many times a query is sent before giving up (default 2; 0 counts as 1).
    pub attempts: usize,
    /// Size of the caches, in entries: DNS responses in hickory's cache and resolved
    /// domains in the result cache (default 10 000; 0 disables caching).
    pub cache_size: usize,
}

impl ResolverConfig {
    /// The configuration of `[dns]`, with the default cache size.
    pub fn of(dns: &volley_conf::DnsConfig) -> ResolverConfig {
        ResolverConfig {
            nameservers: dns.nameservers.clone(),
            timeout: dns.timeout,
            attempts: dns.attempts as usize,
            ..ResolverConfig::default()
        }
    }
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            cache_size: 10_000,
        }
    }
}

/// `nameservers` as hickory's configuration: UDP, with TCP when truncated.
pub(crate) fn name_servers(nameservers: &[SocketAddr]) -> Vec<NameServerConfig> {
    nameservers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect()
}

/// Resolves recipient domains to [`Destination`]s, with caching (see the
/// [module documentation](self)). Cheap to clone; clones share the caches and can be
/// used from many tokio tasks at once.
#[derive(Clone)]
pub struct MxResolver {
    inner: Arc<Inner>,
}

struct Inner {
    dns: TokioResolver,
    cache: ResultCache,
}

impl fmt::Debug for MxResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MxResolver").finish_non_exhaustive()
    }
}

impl MxResolver {
    /// Builds a resolver. Does no I/O except reading `/etc/resolv.conf` when
    /// `config.nameservers` is empty; needs no runtime (queries run on the tokio
    /// runtime of the caller of [`resolve`](Self::resolve)).
    pub fn new(config: &ResolverConfig) -> Result<MxResolver, ResolverSetupError> {
        if config.timeout.is_zero() {
            return Err(ResolverSetupError {
                reason: "timeout must not be zero".to_owned(),
            });
        }
        let setup_error = |e: NetError| ResolverSetupError {
            reason: e.to_string(),
        };
        let mut builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(setup_error)?
        } else {
            TokioResolver::builder_with_config(
                HickoryConfig::from_name_servers(name_servers(&config.nameservers)),
                TokioRuntimeProvider::default(),
            )
        };
        let opts = builder.options_mut();
        opts.timeout = config.timeout;
        // hickory counts retries after the first try.
        opts.attempts = config.attempts.saturating_sub(1);
        opts.cache_size = u64::try_from(config.cache_size).unwrap_or(u64::MAX);
        opts.negative_min_ttl = Some(MIN_NEGATIVE_TTL);
        opts.negative_max_ttl = Some(MAX_NEGATIVE_TTL);
        opts.positive_max_ttl = Some(MAX_POSITIVE_TTL);
        opts.use_hosts_file = ResolveHosts::Never;
        let dns = builder.build().map_err(setup_error)?;
        Ok(MxResolver {
            inner: Arc::new(Inner {
                dns,
                cache: ResultCache::new(config.cache_size),
            }),
        })
    }

    /// Resolves `domain` (any case, optional trailing dot, unicode allowed) to its
    /// mail exchangers. Answers from the cache when it can.
    pub async fn resolve(&self, domain: &str) -> Result<Destination, MxError> {
        let normalized = match select::normalize_domain(domain) {
            Ok(normalized) => normalized,
            Err(reason) => {
                return Err(MxError::InvalidDomain {
                    domain: truncate(domain, 255),
                    reason,
                })
            }
        };
        let inner = &self.inner;
        let outcome = inner
            .cache
            .get_or_resolve(&normalized.key, || inner.lookup(&normalized))
            .await;
        let mut destination = outcome.result?;
        let mut rng = SplitMix64::from_entropy();
        select::shuffle_equal_preferences(&mut destination.hosts, |h| h.preference, &mut |n| {
            rng.below(n)
        });
        Ok(destination)
    }

    /// The counters of lookups answered from the result cache and of those
    /// that resolved (shared handles, for `/metrics`).
    pub fn cache_counters(
        &self,
    ) -> (
        prometheus_client::metrics::counter::Counter,
        prometheus_client::metrics::counter::Counter,
    ) {
        (
            self.inner.cache.hits.clone(),
            self.inner.cache.misses.clone(),
        )
    }

    /// Forgets every cached answer and outcome.
    pub fn clear_cache(&self) {
        self.inner.cache.clear();
        self.inner.dns.clear_cache();
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanence() {
        let d = || "example.com".to_owned();
        assert!(MxError::NullMx { domain: d() }.is_permanent());
        assert!(MxError::NoSuchDomain { domain: d() }.is_permanent());
        assert!(MxError::InvalidDomain {
            domain: d(),
            reason: "x".into()
        }
        .is_permanent());
        assert!(MxError::NoAddress {
            domain: d(),
            permanent: true
        }
        .is_permanent());
        assert!(!MxError::NoAddress {
            domain: d(),
            permanent: false
        }
        .is_permanent());
        let temp = MxError::Temporary {
            domain: d(),
            reason: "timeout".into(),
        };
        assert!(!temp.is_permanent());
        assert_eq!(temp.domain(), "example.com");
        assert_eq!(
            temp.to_string(),
            "example.com: temporary DNS failure: timeout"
        );
    }

    #[test]
    fn destination_site_key() {
        let host = |name: &str, preference| MxHost {
            name: name.to_owned(),
            preference,
            addrs: Vec::new(),
        };
        let a = Destination {
            domain: "a.example".into(),
            hosts: vec![host("mx2.example.net", 10), host("mx1.example.net", 20)],
            implicit: false,
        };
        let b = Destination {
            domain: "b.example".into(),
            hosts: vec![host("mx1.example.net", 5), host("mx2.example.net", 5)],
            implicit: false,
        };
        assert_eq!(a.site_key(), "mx1.example.net,mx2.example.net");
        assert_eq!(a.site_key(), b.site_key());
    }

    #[test]
    fn invalid_domains_are_permanent_errors() {
        let resolver = MxResolver::new(&ResolverConfig {
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            ..ResolverConfig::default()
        })
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for bad in ["", ".", "a..b", "bad_name.example", "[192.0.2.1]"] {
            let err = rt.block_on(resolver.resolve(bad)).unwrap_err();
            assert!(
                matches!(err, MxError::InvalidDomain { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.is_permanent());
        }
    }

    #[test]
    fn resolver_and_its_futures_can_cross_tasks() {
        fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
        fn send<T: Send>(_: &T) {}
        let resolver = MxResolver::new(&ResolverConfig {
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            ..ResolverConfig::default()
        })
        .unwrap();
        send_sync(&resolver);
        send(&resolver.resolve("example.com"));
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let config = ResolverConfig {
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            timeout: Duration::ZERO,
            ..ResolverConfig::default()
        };
        assert!(MxResolver::new(&config).is_err());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("äb", 1), "");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
