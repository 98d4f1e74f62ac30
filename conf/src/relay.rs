//! `[relay]`: who may relay through volley's SMTP server, and which domains it
//! receives mail for.
//!
//! The rules themselves (who gets which recipient) are applied by the server
//! (`volley_smtp::server::RelayPolicy`); this section only holds the inputs:
//! trusted networks as CIDR blocks, parsed here by hand with `std::net`, and the
//! local domains.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// A block of IP addresses, `192.0.2.0/24` or `2001:db8::/32`. A bare address is
/// a block of one (`/32` or `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of `addr` with `prefix` leading bits, if the prefix fits the
    /// address family and `addr` has no bit set past it.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max} bits"));
        }
        let cidr = Cidr { addr, prefix };
        let network = cidr.network();
        if network != addr {
            return Err(format!(
                "{addr} has bits set past the /{prefix} prefix (did you mean {network}/{prefix}?)"
            ));
        }
        Ok(cidr)
    }

    /// The first address of the block.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        }
    }

    /// Whether `ip` lies in the block. An IPv4-mapped IPv6 address
    /// (`::ffff:192.0.2.1`, what a dual-stack socket reports) counts as its IPv4
    /// address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask128(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let prefix = match prefix {
            None if addr.is_ipv4() => 32,
            None => 128,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| format!("bad prefix length {p:?}"))?
            }
            Some(p) => return Err(format!("bad prefix length {p:?}")),
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(de)?;
        text.parse().map_err(|why| {
            serde::de::Error::custom(format!(
                "{text:?} is not a CIDR block like \"192.0.2.0/24\" or \"::1/128\": {why}"
            ))
        })
    }
}

/// The `[relay]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct RelayConfig {
    /// Client networks trusted to relay to any recipient on a submission
    /// listener without AUTH. Default `["127.0.0.0/8", "::1/128"]` (local
    /// programs); `[]` trusts nobody, loopback included.
    pub networks: Vec<Cidr>,
    /// The domains volley receives mail for (exact names, any case, lower-cased
    /// here): recipients there are accepted on every listener. Default: none.
    #[serde(deserialize_with = "domains")]
    pub domains: Vec<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            networks: vec![
                Cidr {
                    addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
                    prefix: 8,
                },
                Cidr {
                    addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                    prefix: 128,
                },
            ],
            domains: Vec::new(),
        }
    }
}

fn domains<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(de)?;
    names
        .into_iter()
        .map(|name| {
            let lower = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
            let ok = !lower.is_empty()
                && lower.len() <= 253
                && lower.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if ok {
                Ok(lower)
            } else {
                Err(serde::de::Error::custom(format!(
                    "{name:?} is not a domain name (letters, digits, '-' and '.'; \
                     internationalized names in their xn-- form)"
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn contains() {
        let table = [
            ("127.0.0.0/8", "127.1.2.3", true),
            ("127.0.0.0/8", "128.0.0.1", false),
            ("127.0.0.0/8", "::ffff:127.0.0.1", true),
            ("127.0.0.0/8", "::1", false),
            ("::1/128", "::1", true),
            ("::1", "::1", true),
            ("::1/128", "127.0.0.1", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("::/0", "2001:db8::1", true),
            ("::/0", "10.0.0.1", false),
            ("192.0.2.0/25", "192.0.2.127", true),
            ("192.0.2.0/25", "192.0.2.128", false),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
        ];
        for (block, addr, expected) in table {
            assert_eq!(cidr(block).contains(ip(addr)), expected, "{block} {addr}");
        }
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1").to_string(), "::1/128");
    }

    #[test]
    fn bad_blocks() {
        let table = [
            (
                "10.0.0.1/8",
                "10.0.0.1 has bits set past the /8 prefix (did you mean 10.0.0.0/8?)",
            ),
            ("10.0.0.0/33", "prefix /33 is longer than 32 bits"),
            ("::/129", "prefix /129 is longer than 128 bits"),
            ("10.0.0.0/", "bad prefix length \"\""),
            ("10.0.0.0/+8", "bad prefix length \"+8\""),
            ("10.0.0.0/0008", "bad prefix length \"0008\""),
            ("localhost", "\"localhost\" is not an IP address"),
            ("10.0.0/8", "\"10.0.0\" is not an IP address"),
        ];
        for (text, expected) in table {
            assert_eq!(text.parse::<Cidr>(), Err(expected.to_owned()), "{text}");
        }
    }

    #[test]
    fn section() {
        let config = Config::parse(
            "[relay]\nnetworks = [\"192.0.2.0/24\"]\ndomains = [\"Bounces.Acme.Test.\"]\n",
            Path::new("volley.toml"),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.relay.networks, vec![cidr("192.0.2.0/24")]);
        assert_eq!(config.relay.domains, vec!["bounces.acme.test".to_owned()]);
        let config = Config::parse("[relay]\nnetworks = []\n", Path::new("volley.toml"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(config.relay.networks.is_empty());
        assert_eq!(
            Config::default().relay.networks,
            vec![cidr("127.0.0.0/8"), cidr("::1/128")]
        );
    }

    #[test]
    fn bad_values_name_file_line_key() {
        let err = Config::parse(
            "[relay]\nnetworks = [\"127.0.0.0/8\",\n  \"10.1.0.0/8\"]\n",
            Path::new("volley.toml"),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                // toml points at the list; the key names the entry.
                "volley.toml:2:12: relay.networks[1]: \"10.1.0.0/8\" is not a CIDR block like \
                 \"192.0.2.0/24\" or \"::1/128\": 10.1.0.0 has bits set past the /8 prefix \
                 (did you mean 10.0.0.0/8?)"
            )
        );
        let err = Config::parse("[relay]\ndomains = [\"a b\"]\n", Path::new("volley.toml"))
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.starts_with("volley.toml:2:11: relay.domains: \"a b\" is not a domain name"),
            "{err}"
        );
    }
}
