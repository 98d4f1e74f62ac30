//! Which domains signed a message: its DKIM signatures checked by mail-auth,
//! the keys looked up over DNS (`[dns] nameservers`, else the system's). A
//! feedback loop named by its sender domain in `[bounce] fbl_sources` is
//! trusted only through a signature that verifies here.
//!
//! The check is asynchronous in mail-auth; the feedback processing is not (it
//! runs on the deposit's blocking thread). Complaints are few, so each check
//! runs on a small runtime of its own, on a thread of its own, bounded by the
//! DNS timeout: it works from any caller and never blocks the listener's
//! runtime.

use std::time::Duration;

use hickory_resolver::config::{ResolverConfig as HickoryConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters};
use tracing::warn;

use crate::mx::ResolverConfig;

/// Checks DKIM signatures over the configured DNS.
#[derive(Debug, Clone)]
pub struct DkimDomains {
    dns: ResolverConfig,
}

impl DkimDomains {
    /// A checker that asks the name servers of `dns` for keys.
    pub fn new(dns: ResolverConfig) -> DkimDomains {
        DkimDomains { dns }
    }

    /// The `d=` domains (lower-case) of `message`'s DKIM signatures that
    /// verify. Empty when none does, the message does not parse, or DNS fails
    /// (logged).
    pub fn verified(&self, message: &[u8]) -> Vec<String> {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            return Vec::new();
        };
        if parsed.dkim_headers.is_empty() {
            return Vec::new();
        }
        let (config, opts) = match self.resolver_config() {
            Ok(c) => c,
            Err(err) => {
                warn!(%err, "DKIM check: no DNS configuration");
                return Vec::new();
            }
        };
        let deadline = self.dns.timeout * (self.dns.attempts.max(1) as u32 + 1);
        std::thread::scope(|scope| {
            let check = scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let authenticator =
                        MessageAuthenticator::new(config, opts).map_err(|e| e.to_string())?;
                    let outputs = tokio::time::timeout(
                        deadline,
                        authenticator.verify_dkim(Parameters::new(&parsed)),
                    )
                    .await
                    .map_err(|_| format!("no answer within {deadline:?}"))?;
                    Ok::<_, String>(
                        outputs
                            .iter()
                            .filter(|o| *o.result() == DkimResult::Pass)
                            .filter_map(|o| o.signature())
                            .map(|s| s.d.to_ascii_lowercase())
                            .collect::<Vec<_>>(),
                    )
                })
            });
            match check.join() {
                Ok(Ok(domains)) => domains,
                Ok(Err(err)) => {
                    warn!(%err, "DKIM check failed");
                    Vec::new()
                }
                Err(_) => {
                    warn!("DKIM check panicked");
                    Vec::new()
                }
            }
        })
    }

    fn resolver_config(&self) -> Result<(HickoryConfig, ResolverOpts), String> {
        let (config, mut opts) = if self.dns.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string())?
        } else {
            (
                HickoryConfig::from_name_servers(crate::mx::name_servers(&self.dns.nameservers)),
                ResolverOpts::default(),
            )
        };
        opts.timeout = self.dns.timeout.max(Duration::from_millis(100));
        // hickory counts retries after the first try.
        opts.attempts = self.dns.attempts.saturating_sub(1);
        Ok((config, opts))
    }
}
