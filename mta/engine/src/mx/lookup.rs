//! One uncached resolution of a domain: the MX query, interpretation of the answer,
//! the hosts' A and AAAA queries, and the classification of failures, producing an
//! [`Outcome`] with the instant it expires.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use tracing::debug;

use super::cache::Outcome;
use super::select::{self, MxSet, NormalizedDomain, SplitMix64};
use super::{
    Destination, Inner, MxError, MxHost, MAX_MX_HOSTS, MAX_NEGATIVE_TTL, MAX_POSITIVE_TTL,
    MIN_NEGATIVE_TTL, TEMPORARY_FAILURE_TTL,
};

/// The addresses of one host, from its A and AAAA lookups.
struct HostAddrs {
    addrs: Vec<IpAddr>,
    /// Set if a lookup failed temporarily.
    temporary: Option<String>,
    expires: Instant,
}

/// How the resolution of a domain's hosts went, before it becomes an [`Outcome`].
struct Collected {
    hosts: Vec<MxHost>,
    /// The first temporary failure seen.
    temporary: Option<String>,
    /// Whether some host definitely has no address.
    definitely_none: bool,
    expires: Instant,
}

impl Collected {
    fn new(expires: Instant) -> Collected {
        Collected {
            hosts: Vec::new(),
            temporary: None,
            definitely_none: false,
            expires,
        }
    }

    fn add(&mut self, name: String, preference: u16, found: HostAddrs) {
        self.expires = self.expires.min(found.expires);
        if found.addrs.is_empty() {
            match &found.temporary {
                Some(reason) => {
                    self.temporary.get_or_insert_with(|| reason.clone());
                }
                None => {
                    self.definitely_none = true;
                    return;
                }
            }
        }
        self.hosts.push(MxHost {
            name,
            preference,
            addrs: found.addrs,
        });
    }

    fn finish(self, domain: &str, implicit: bool) -> Outcome {
        let domain = domain.to_owned();
        let result = if self.hosts.iter().any(|h| !h.addrs.is_empty()) {
            Ok(Destination {
                domain,
                hosts: self.hosts,
                implicit,
            })
        } else {
            match self.temporary {
                None => Err(MxError::NoAddress {
                    domain,
                    permanent: true,
                }),
                Some(_) if self.definitely_none => Err(MxError::NoAddress {
                    domain,
                    permanent: false,
                }),
                Some(reason) => Err(MxError::Temporary { domain, reason }),
            }
        };
        Outcome {
            result,
            expires: self.expires,
        }
    }
}

impl Inner {
    /// One uncached resolution of a domain.
    pub(super) async fn lookup(&self, domain: &NormalizedDomain) -> Outcome {
        let now = Instant::now();
        let outcome = match self.dns.lookup(domain.name.clone(), RecordType::MX).await {
            Ok(lookup) => {
                let expires = lookup.valid_until().min(now + MAX_POSITIVE_TTL);
                let records = lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.clone())),
                    _ => None,
                });
                match select::classify_mx(records) {
                    MxSet::Null => Outcome {
                        result: Err(MxError::NullMx {
                            domain: domain.key.clone(),
                        }),
                        expires,
                    },
                    MxSet::Empty => self.implicit(domain, expires).await,
                    MxSet::Hosts(hosts) => self.explicit(domain, hosts, expires).await,
                }
            }
            Err(e) => match negative(&e, now) {
                Some((true, expires)) => Outcome {
                    result: Err(MxError::NoSuchDomain {
                        domain: domain.key.clone(),
                    }),
                    expires,
                },
                Some((false, expires)) => self.implicit(domain, expires).await,
                None => Outcome {
                    result: Err(MxError::Temporary {
                        domain: domain.key.clone(),
                        reason: e.to_string(),
                    }),
                    expires: now + TEMPORARY_FAILURE_TTL,
                },
            },
        };
        match &outcome.result {
            Ok(d) => {
                debug!(domain = %domain.key, hosts = d.hosts.len(), implicit = d.implicit, "MX resolved")
            }
            Err(e) => debug!(domain = %domain.key, error = %e, "MX resolution failed"),
        }
        outcome
    }

    /// The implicit MX: the domain's own addresses.
    async fn implicit(&self, domain: &NormalizedDomain, expires: Instant) -> Outcome {
        let found = self.addresses(&domain.name).await;
        let mut collected = Collected::new(expires);
        collected.add(domain.key.clone(), 0, found);
        collected.finish(&domain.key, true)
    }

    /// The hosts of an MX set, sorted by preference.
    async fn explicit(
        &self,
        domain: &NormalizedDomain,
        mut hosts: Vec<(u16, Name)>,
        expires: Instant,
    ) -> Outcome {
        // Shuffle before truncating so that every host of a large equal-preference
        // group gets picked sometimes; `resolve` re-shuffles on every call anyway.
        let mut rng = SplitMix64::from_entropy();
        select::shuffle_equal_preferences(&mut hosts, |(p, _)| *p, &mut |n| rng.below(n));
        hosts.truncate(MAX_MX_HOSTS);
        let found = join_all(hosts.iter().map(|(_, name)| self.addresses(name))).await;
        let mut collected = Collected::new(expires);
        for ((preference, name), found) in hosts.iter().zip(found) {
            collected.add(select::host_name(name), *preference, found);
        }
        collected.finish(&domain.key, false)
    }

    /// A and AAAA of `name`, concurrently.
    async fn addresses(&self, name: &Name) -> HostAddrs {
        let mut name = name.clone();
        name.set_fqdn(true);
        let (v4, v6) = tokio::join!(
            self.dns.lookup(name.clone(), RecordType::A),
            self.dns.lookup(name, RecordType::AAAA)
        );
        let now = Instant::now();
        let mut found = HostAddrs {
            addrs: Vec::new(),
            temporary: None,
            expires: now + MAX_POSITIVE_TTL,
        };
        for result in [v4, v6] {
            match result {
                Ok(lookup) => {
                    found.expires = found.expires.min(lookup.valid_until());
                    for record in lookup.answers() {
                        let addr = match &record.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                            _ => continue,
                        };
                        if !found.addrs.contains(&addr) {
                            found.addrs.push(addr);
                        }
                    }
                }
                Err(e) => match negative(&e, now) {
                    Some((_, expires)) => found.expires = found.expires.min(expires),
                    None => {
                        found.expires = found.expires.min(now + TEMPORARY_FAILURE_TTL);
                        found.temporary.get_or_insert_with(|| e.to_string());
                    }
                },
            }
        }
        found
    }
}

/// For a negative answer (NXDOMAIN or NoData), whether it was NXDOMAIN and until when
/// it may be cached; `None` for every other error.
fn negative(error: &NetError, now: Instant) -> Option<(bool, Instant)> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            let ttl = Duration::from_secs(no_records.negative_ttl.unwrap_or(0).into())
                .clamp(MIN_NEGATIVE_TTL, MAX_NEGATIVE_TTL);
            Some((
                no_records.response_code == ResponseCode::NXDomain,
                now + ttl,
            ))
        }
        _ => None,
    }
}

/// Runs `futures` concurrently on the current task and returns their outputs in order.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(outputs.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_ttls_are_clamped() {
        use hickory_resolver::net::NoRecords;
        use hickory_resolver::proto::op::Query;

        let now = Instant::now();
        let query = Query::query(Name::root(), RecordType::MX);
        let error = |code, ttl| {
            let mut nr = NoRecords::new(query.clone(), code);
            nr.negative_ttl = ttl;
            NetError::from(DnsError::NoRecordsFound(nr))
        };
        let nx = negative(&error(ResponseCode::NXDomain, Some(0)), now);
        assert_eq!(nx, Some((true, now + MIN_NEGATIVE_TTL)));
        let nodata = negative(&error(ResponseCode::NoError, Some(1_000_000)), now);
        assert_eq!(nodata, Some((false, now + MAX_NEGATIVE_TTL)));
        let no_soa = negative(&error(ResponseCode::NoError, None), now);
        assert_eq!(no_soa, Some((false, now + MIN_NEGATIVE_TTL)));
        let mid = negative(&error(ResponseCode::NXDomain, Some(300)), now);
        assert_eq!(mid, Some((true, now + Duration::from_secs(300))));
        assert_eq!(negative(&NetError::Timeout, now), None);
        let servfail = NetError::from(DnsError::ResponseCode(ResponseCode::ServFail));
        assert_eq!(negative(&servfail, now), None);
    }

    fn found(addrs: &[&str], temporary: Option<&str>, ttl: u64, now: Instant) -> HostAddrs {
        HostAddrs {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            temporary: temporary.map(str::to_owned),
            expires: now + Duration::from_secs(ttl),
        }
    }

    #[test]
    fn hosts_with_temporary_failures_are_kept_without_addresses() {
        let now = Instant::now();
        let mut collected = Collected::new(now + Duration::from_secs(300));
        collected.add("gone.example".into(), 5, found(&[], None, 60, now));
        collected.add(
            "flaky.example".into(),
            10,
            found(&[], Some("timeout"), 5, now),
        );
        collected.add(
            "mx.example".into(),
            20,
            found(&["192.0.2.1"], None, 100, now),
        );
        let outcome = collected.finish("example", false);
        let destination = outcome.result.unwrap();
        let hosts: Vec<(&str, usize)> = destination
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.addrs.len()))
            .collect();
        assert_eq!(hosts, [("flaky.example", 0), ("mx.example", 1)]);
        assert!(!destination.implicit);
        assert_eq!(outcome.expires, now + Duration::from_secs(5));
    }

    #[test]
    fn no_address_anywhere_is_classified() {
        let now = Instant::now();
        let classify = |hosts: &[HostAddrs]| {
            let mut collected = Collected::new(now + Duration::from_secs(300));
            for (i, h) in hosts.iter().enumerate() {
                let copy = HostAddrs {
                    addrs: h.addrs.clone(),
                    temporary: h.temporary.clone(),
                    expires: h.expires,
                };
                collected.add(format!("mx{i}.example"), 10, copy);
            }
            collected.finish("example", false)
        };
        let none = found(&[], None, 60, now);
        let temp = found(&[], Some("timeout"), 5, now);

        let all_none = classify(&[found(&[], None, 60, now), found(&[], None, 30, now)]);
        assert_eq!(
            all_none.result,
            Err(MxError::NoAddress {
                domain: "example".into(),
                permanent: true
            })
        );
        assert_eq!(all_none.expires, now + Duration::from_secs(30));

        let mixed = classify(&[none, found(&[], Some("timeout"), 5, now)]);
        assert_eq!(
            mixed.result,
            Err(MxError::NoAddress {
                domain: "example".into(),
                permanent: false
            })
        );

        let all_temp = classify(&[temp, found(&[], Some("refused"), 5, now)]);
        assert_eq!(
            all_temp.result,
            Err(MxError::Temporary {
                domain: "example".into(),
                reason: "timeout".into()
            })
        );
        assert_eq!(all_temp.expires, now + TEMPORARY_FAILURE_TTL);
    }

    #[tokio::test]
    async fn join_all_keeps_order() {
        let futures = (0..5u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(10 * (5 - i))).await;
            i
        });
        assert_eq!(join_all(futures).await, vec![0, 1, 2, 3, 4]);
    }
}
