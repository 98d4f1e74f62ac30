//! MX resolution against a real dnsmasq on a loopback port.

#[path = "support/dnsmasq.rs"]
mod dnsmasq;

use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use dnsmasq::{DnsMasq, Options, Record};
use volley_engine::mx::{
    Destination, MxError, MxHost, MxResolver, ResolverConfig, MAX_MX_HOSTS, TEMPORARY_FAILURE_TTL,
};

/// Upper bound for any one test.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

async fn bounded<F: Future>(test: F) -> F::Output {
    match tokio::time::timeout(TEST_DEADLINE, test).await {
        Ok(output) => output,
        Err(_) => panic!("test did not finish within {TEST_DEADLINE:?}"),
    }
}

fn config(server: SocketAddr) -> ResolverConfig {
    ResolverConfig {
        nameservers: vec![server],
        timeout: Duration::from_secs(2),
        attempts: 2,
        cache_size: 1000,
    }
}

/// A resolver that gives up quickly, for tests that expect failures (a stopped
/// dnsmasq is only noticed by the timeout). Still ample for a local dnsmasq.
fn impatient(server: SocketAddr) -> MxResolver {
    resolver_with(ResolverConfig {
        timeout: Duration::from_millis(750),
        attempts: 1,
        ..config(server)
    })
}

fn resolver_for(dns: &DnsMasq) -> MxResolver {
    resolver_with(config(dns.addr))
}

fn resolver_with(config: ResolverConfig) -> MxResolver {
    match MxResolver::new(&config) {
        Ok(resolver) => resolver,
        Err(e) => panic!("{e}"),
    }
}

async fn resolve_ok(resolver: &MxResolver, domain: &str, dns: Option<&DnsMasq>) -> Destination {
    match resolver.resolve(domain).await {
        Ok(destination) => destination,
        Err(e) => panic!(
            "{domain}: {e:?}\ndnsmasq log:\n{}",
            dns.map(DnsMasq::log).unwrap_or_default()
        ),
    }
}

async fn resolve_err(resolver: &MxResolver, domain: &str) -> MxError {
    match resolver.resolve(domain).await {
        Ok(destination) => panic!("{domain}: expected an error, got {destination:?}"),
        Err(e) => e,
    }
}

fn ip(s: &str) -> IpAddr {
    match s.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn names(destination: &Destination) -> Vec<&str> {
    destination.hosts.iter().map(|h| h.name.as_str()).collect()
}

#[tokio::test]
async fn mx_in_preference_order() {
    bounded(async {
        // Listed worst first: the order must come from the preferences.
        let dns = DnsMasq::start(&[
            Record::mx("order.test", "mx2.order.test", 20),
            Record::mx("order.test", "mx1.order.test", 10),
            Record::addr("mx1.order.test", "127.0.0.2"),
            Record::addr("mx2.order.test", "127.0.0.3"),
        ]);
        let resolver = resolver_for(&dns);
        let destination = resolve_ok(&resolver, "order.test", Some(&dns)).await;
        assert_eq!(
            destination,
            Destination {
                domain: "order.test".to_owned(),
                hosts: vec![
                    MxHost {
                        name: "mx1.order.test".to_owned(),
                        preference: 10,
                        addrs: vec![ip("127.0.0.2")],
                    },
                    MxHost {
                        name: "mx2.order.test".to_owned(),
                        preference: 20,
                        addrs: vec![ip("127.0.0.3")],
                    },
                ],
                implicit: false,
            }
        );
        // Case and the trailing dot do not matter.
        let again = resolve_ok(&resolver, "ORDER.Test.", Some(&dns)).await;
        assert_eq!(again, destination);
    })
    .await;
}

#[tokio::test]
async fn equal_preferences_are_shuffled() {
    bounded(async {
        // dnsmasq's default local TTL is 0: nothing is cached, every lookup is fresh.
        let dns = DnsMasq::start(&[
            Record::mx("equal.test", "a.equal.test", 10),
            Record::mx("equal.test", "b.equal.test", 10),
            Record::mx("equal.test", "c.equal.test", 20),
            Record::addr("a.equal.test", "127.0.0.2"),
            Record::addr("b.equal.test", "127.0.0.3"),
            Record::addr("c.equal.test", "127.0.0.4"),
        ]);
        let mut orders = HashSet::new();
        for _ in 0..64 {
            let destination = resolve_ok(&resolver_for(&dns), "equal.test", Some(&dns)).await;
            let order = names(&destination).join(" ");
            assert_eq!(destination.hosts[2].name, "c.equal.test", "{order}");
            orders.insert(order);
            if orders.len() == 2 {
                break;
            }
        }
        assert_eq!(
            orders,
            HashSet::from([
                "a.equal.test b.equal.test c.equal.test".to_owned(),
                "b.equal.test a.equal.test c.equal.test".to_owned(),
            ])
        );
    })
    .await;
}

#[tokio::test]
async fn no_mx_falls_back_to_implicit_a() {
    bounded(async {
        let dns = DnsMasq::start(&[
            Record::addr("implicit.test", "127.0.0.4"),
            Record::addr("implicit.test", "::1"),
        ]);
        let destination = resolve_ok(&resolver_for(&dns), "implicit.test", Some(&dns)).await;
        assert_eq!(
            destination,
            Destination {
                domain: "implicit.test".to_owned(),
                hosts: vec![MxHost {
                    name: "implicit.test".to_owned(),
                    preference: 0,
                    addrs: vec![ip("127.0.0.4"), ip("::1")],
                }],
                implicit: true,
            }
        );
        assert_eq!(destination.site_key(), "implicit.test");
    })
    .await;
}

#[tokio::test]
async fn null_mx_is_a_permanent_failure() {
    bounded(async {
        let dns = DnsMasq::start(&[
            Record::null_mx("nullmx.test"),
            // The null MX has an address: still no mail (no implicit MX fallback).
            Record::addr("nullmx.test", "127.0.0.5"),
            // A "." among real exchanges is ignored.
            Record::null_mx("mixed.test"),
            Record::mx("mixed.test", "mx.mixed.test", 10),
            Record::addr("mx.mixed.test", "127.0.0.6"),
        ]);
        let resolver = resolver_for(&dns);
        let err = resolve_err(&resolver, "nullmx.test").await;
        assert_eq!(
            err,
            MxError::NullMx {
                domain: "nullmx.test".to_owned()
            }
        );
        assert!(err.is_permanent());

        let mixed = resolve_ok(&resolver, "mixed.test", Some(&dns)).await;
        assert_eq!(names(&mixed), ["mx.mixed.test"]);
        assert_eq!(mixed.hosts[0].addrs, [ip("127.0.0.6")]);
    })
    .await;
}

#[tokio::test]
async fn nxdomain_is_a_permanent_failure() {
    bounded(async {
        let dns = DnsMasq::start(&[Record::addr("exists.test", "127.0.0.2")]);
        let err = resolve_err(&resolver_for(&dns), "does-not-exist.test").await;
        assert_eq!(
            err,
            MxError::NoSuchDomain {
                domain: "does-not-exist.test".to_owned()
            }
        );
        assert!(err.is_permanent());
    })
    .await;
}

#[tokio::test]
async fn mx_hosts_without_addresses_are_skipped() {
    bounded(async {
        let dns = DnsMasq::start(&[
            Record::mx("partial.test", "gone.partial.test", 5),
            Record::mx("partial.test", "mx.partial.test", 10),
            Record::addr("mx.partial.test", "127.0.0.2"),
            Record::mx("noaddr.test", "gone.noaddr.test", 10),
            Record::txt("noaddr-implicit.test", "v=spf1 -all"),
        ]);
        let resolver = resolver_for(&dns);
        let partial = resolve_ok(&resolver, "partial.test", Some(&dns)).await;
        assert_eq!(names(&partial), ["mx.partial.test"]);

        for domain in ["noaddr.test", "noaddr-implicit.test"] {
            let err = resolve_err(&resolver, domain).await;
            assert_eq!(
                err,
                MxError::NoAddress {
                    domain: domain.to_owned(),
                    permanent: true
                }
            );
            assert!(err.is_permanent());
        }
    })
    .await;
}

#[tokio::test]
async fn dead_nameserver_is_a_temporary_failure() {
    bounded(async {
        // A bound socket that never answers: queries time out.
        let silent = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
            Ok(socket) => socket,
            Err(e) => panic!("{e}"),
        };
        let silent_addr = match silent.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("{e}"),
        };
        let resolver = impatient(silent_addr);
        let started = Instant::now();
        let err = resolve_err(&resolver, "anything.test").await;
        assert!(
            matches!(err, MxError::Temporary { ref domain, .. } if domain == "anything.test"),
            "{err:?}"
        );
        assert!(!err.is_permanent());
        assert!(started.elapsed() < Duration::from_secs(10));

        // The failure is cached briefly: asking again sends nothing.
        let sent = drain(&silent);
        assert!(sent >= 1);
        let again = resolve_err(&resolver, "anything.test").await;
        assert_eq!(again, err);
        assert_eq!(drain(&silent), 0);
        assert!(TEMPORARY_FAILURE_TTL >= Duration::from_secs(1));

        // A closed port (ICMP port unreachable) is temporary as well.
        let closed_addr = {
            let socket = match UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
                Ok(socket) => socket,
                Err(e) => panic!("{e}"),
            };
            match socket.local_addr() {
                Ok(addr) => addr,
                Err(e) => panic!("{e}"),
            }
        };
        let err = resolve_err(&impatient(closed_addr), "anything.test").await;
        assert!(matches!(err, MxError::Temporary { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn refused_answers_are_temporary_failures() {
    bounded(async {
        // dnsmasq has no upstream: names outside `test.` are REFUSED.
        let dns = DnsMasq::start(&[
            Record::mx("flaky.test", "mx.elsewhere.example", 10),
            Record::mx("flaky.test", "mx.flaky.test", 20),
            Record::addr("mx.flaky.test", "127.0.0.2"),
            Record::mx("outside.test", "mx.elsewhere.example", 10),
            Record::mx("mixed-failure.test", "gone.mixed-failure.test", 10),
            Record::mx("mixed-failure.test", "mx.elsewhere.example", 20),
        ]);
        let resolver = resolver_for(&dns);

        let err = resolve_err(&resolver, "example.com").await;
        assert!(matches!(err, MxError::Temporary { .. }), "{err:?}");

        // A host whose lookup failed temporarily stays in the list, without address.
        let flaky = resolve_ok(&resolver, "flaky.test", Some(&dns)).await;
        assert_eq!(names(&flaky), ["mx.elsewhere.example", "mx.flaky.test"]);
        assert!(flaky.hosts[0].addrs.is_empty());
        assert_eq!(flaky.hosts[1].addrs, [ip("127.0.0.2")]);

        let err = resolve_err(&resolver, "outside.test").await;
        assert!(matches!(err, MxError::Temporary { .. }), "{err:?}");

        let err = resolve_err(&resolver, "mixed-failure.test").await;
        assert_eq!(
            err,
            MxError::NoAddress {
                domain: "mixed-failure.test".to_owned(),
                permanent: false
            }
        );
        assert!(!err.is_permanent());
    })
    .await;
}

/// Reads and counts the datagrams waiting on `socket`.
fn drain(socket: &UdpSocket) -> usize {
    if let Err(e) = socket.set_nonblocking(true) {
        panic!("{e}");
    }
    let mut buf = [0u8; 2048];
    let mut count = 0;
    while socket.recv(&mut buf).is_ok() {
        count += 1;
    }
    count
}

#[tokio::test]
async fn domains_sharing_mx_hosts_share_a_site_key() {
    bounded(async {
        let dns = DnsMasq::start(&[
            Record::mx("one.test", "mx1.shared.test", 10),
            Record::mx("one.test", "mx2.shared.test", 20),
            Record::mx("two.test", "mx2.shared.test", 5),
            Record::mx("two.test", "MX1.shared.test", 5),
            Record::mx("three.test", "mx3.other.test", 10),
            Record::addr("mx1.shared.test", "127.0.0.2"),
            Record::addr("mx2.shared.test", "127.0.0.3"),
            Record::addr("mx3.other.test", "127.0.0.4"),
        ]);
        let resolver = resolver_for(&dns);
        let one = resolve_ok(&resolver, "one.test", Some(&dns)).await;
        let two = resolve_ok(&resolver, "two.test", Some(&dns)).await;
        let three = resolve_ok(&resolver, "three.test", Some(&dns)).await;
        assert_eq!(one.site_key(), "mx1.shared.test,mx2.shared.test");
        assert_eq!(one.site_key(), two.site_key());
        assert_eq!(three.site_key(), "mx3.other.test");
        assert_ne!(one.site_key(), three.site_key());
    })
    .await;
}

#[tokio::test]
async fn answers_are_cached_until_their_ttl() {
    bounded(async {
        // Both A and AAAA exist, so the destination's lifetime is the records' TTL
        // (a NoData AAAA without SOA would only be cached for a second).
        let records = [
            Record::mx("cached.test", "mx.cached.test", 10),
            Record::addr("mx.cached.test", "127.0.0.2"),
            Record::addr("mx.cached.test", "::2"),
        ];

        let mut dns = DnsMasq::start_with(
            &records,
            &Options {
                local_ttl: Some(300),
                ..Options::default()
            },
        );
        let resolver = impatient(dns.addr);
        let first = resolve_ok(&resolver, "cached.test", Some(&dns)).await;
        assert_eq!(first.hosts[0].addrs, [ip("127.0.0.2"), ip("::2")]);
        dns.stop();
        let cached = resolve_ok(&resolver, "cached.test", None).await;
        assert_eq!(cached, first);

        let mut dns = DnsMasq::start_with(
            &records,
            &Options {
                local_ttl: Some(1),
                ..Options::default()
            },
        );
        let resolver = impatient(dns.addr);
        resolve_ok(&resolver, "cached.test", Some(&dns)).await;
        dns.stop();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let err = resolve_err(&resolver, "cached.test").await;
        assert!(matches!(err, MxError::Temporary { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn negative_answers_are_cached() {
    bounded(async {
        // Authoritative mode: negative answers carry an SOA with the negative TTL.
        let records = [Record::txt("nodata.test", "v=spf1 -all")];
        let mut dns = DnsMasq::start_with(
            &records,
            &Options {
                authoritative_ttl: Some(300),
                ..Options::default()
            },
        );
        let resolver = impatient(dns.addr);
        let nx = resolve_err(&resolver, "missing.test").await;
        assert_eq!(
            nx,
            MxError::NoSuchDomain {
                domain: "missing.test".to_owned()
            },
            "{}",
            dns.log()
        );
        let nodata = resolve_err(&resolver, "nodata.test").await;
        assert_eq!(
            nodata,
            MxError::NoAddress {
                domain: "nodata.test".to_owned(),
                permanent: true
            }
        );
        dns.stop();
        assert_eq!(resolve_err(&resolver, "missing.test").await, nx);
        assert_eq!(resolve_err(&resolver, "nodata.test").await, nodata);

        // ... but only for the negative TTL.
        let mut dns = DnsMasq::start_with(
            &records,
            &Options {
                authoritative_ttl: Some(1),
                ..Options::default()
            },
        );
        let resolver = impatient(dns.addr);
        assert_eq!(resolve_err(&resolver, "missing.test").await, nx);
        dns.stop();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let err = resolve_err(&resolver, "missing.test").await;
        assert!(matches!(err, MxError::Temporary { .. }), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn concurrent_lookups_share_one_query() {
    bounded(async {
        // TTL 0: nothing is cached, so a single MX query proves coalescing.
        let dns = DnsMasq::start(&[
            Record::mx("busy.test", "mx.busy.test", 10),
            Record::addr("mx.busy.test", "127.0.0.2"),
        ]);
        let resolver = resolver_for(&dns);
        let mut lookups = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let resolver = resolver.clone();
            lookups.spawn(async move { resolver.resolve("busy.test").await });
        }
        for result in lookups.join_all().await {
            match result {
                Ok(destination) => assert_eq!(names(&destination), ["mx.busy.test"]),
                Err(e) => panic!("{e:?}"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while dns.queries("MX", "busy.test") == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(dns.queries("MX", "busy.test"), 1, "{}", dns.log());
    })
    .await;
}

#[tokio::test]
async fn truncated_answers_fall_back_to_tcp() {
    bounded(async {
        // 40 long exchange names: far more than fits in a UDP answer.
        let mut records = Vec::new();
        for i in 1..=40u16 {
            let host = format!("mail-exchanger-number-{i}.with-a-rather-long-name.big.test");
            records.push(Record::mx("big.test", &host, i));
            records.push(Record::addr(&host, &format!("127.0.1.{i}")));
        }
        let dns = DnsMasq::start(&records);
        let destination = resolve_ok(&resolver_for(&dns), "big.test", Some(&dns)).await;
        assert_eq!(destination.hosts.len(), MAX_MX_HOSTS);
        let preferences: Vec<u16> = destination.hosts.iter().map(|h| h.preference).collect();
        let expected: Vec<u16> = (1..=MAX_MX_HOSTS as u16).collect();
        assert_eq!(preferences, expected);
        assert_eq!(destination.hosts[0].addrs, [ip("127.0.1.1")]);
    })
    .await;
}

#[tokio::test]
async fn unicode_domains_are_resolved_as_punycode() {
    bounded(async {
        let dns = DnsMasq::start(&[
            Record::mx("xn--bcher-kva.test", "mx.xn--bcher-kva.test", 10),
            Record::addr("mx.xn--bcher-kva.test", "127.0.0.2"),
        ]);
        let destination = resolve_ok(&resolver_for(&dns), "Bücher.TEST", Some(&dns)).await;
        assert_eq!(destination.domain, "xn--bcher-kva.test");
        assert_eq!(names(&destination), ["mx.xn--bcher-kva.test"]);
    })
    .await;
}
