//! The suppression list as the engine sees it: a question asked for each due
//! recipient before it is queued on a site. The list itself lives in the control
//! plane (`volley_control::suppress`); the binary connects the two, so the engine
//! does not depend on it.

/// Addresses that must not be sent to, per sending domain (the domain of the
/// envelope sender).
pub trait Suppressions: Send + Sync {
    /// Whether mail from `sending_domain` to `address` is suppressed (any case;
    /// `sending_domain` is empty for the null sender). Called once per due
    /// recipient: it should not allocate.
    fn is_suppressed(&self, address: &str, sending_domain: &str) -> bool;

    /// Catches up with changes made by other processes; called at the start of
    /// each delivery round. Failures are logged, and the list as it was is used.
    fn refresh(&self);

    /// Whether the list is empty (the engine then asks nothing).
    fn is_empty(&self) -> bool {
        false
    }

    /// A number that changes whenever the list may have (a change made here,
    /// or another process's applied): a round screens its recipients at its
    /// start and, once this moved, each one again before it is sent.
    fn version(&self) -> u64 {
        0
    }
}

/// No suppressions: everything due is sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSuppressions;

impl Suppressions for NoSuppressions {
    fn is_suppressed(&self, _: &str, _: &str) -> bool {
        false
    }

    fn refresh(&self) {}

    fn is_empty(&self) -> bool {
        true
    }
}

/// The domain of an envelope sender, lower-cased ("" for the null sender or an
/// address without `@`).
pub fn sending_domain(envelope_from: &str) -> String {
    envelope_from
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .rsplit_once('@')
        .map(|(_, d)| d.to_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sending_domains_of_envelope_senders() {
        for (from, domain) in [
            ("news@Acme.TEST", "acme.test"),
            ("<bounce+x=y.test@b.acme.test>", "b.acme.test"),
            ("", ""),
            ("postmaster", ""),
        ] {
            assert_eq!(super::sending_domain(from), domain, "{from}");
        }
    }
}
