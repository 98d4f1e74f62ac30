//! What this machine says: its host name (the default of `[delivery]
//! helo_name` and of the name the SMTP listener greets with), its clock, and its
//! open-files limit.

/// The kernel's host name, or `localhost` when it cannot be read or is empty.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Descriptors kept free for everything but connections: the delivery log, the
/// spool's files while a round opens them, content reads, DNS sockets.
pub const RESERVED_FILES: u64 = 256;

/// Open files a configuration may need at once: every outgoing connection
/// (`[delivery] max_connections`), every incoming one when the process listens
/// (`[server] max_connections`, if `listening` and a `[[listen]]` is
/// configured), and [`RESERVED_FILES`].
pub fn files_needed(config: &volley_conf::Config, listening: bool) -> u64 {
    let incoming = if listening && !config.listen.is_empty() {
        u64::from(config.server.max_connections)
    } else {
        0
    };
    u64::from(config.delivery.max_connections) + incoming + RESERVED_FILES
}

/// Why the open-files limit cannot hold the configured connections.
#[derive(Debug, thiserror::Error)]
pub enum FilesLimitError {
    /// The hard limit is below what the configuration needs.
    #[error(
        "the configured connections need {needed} open files ([delivery] max_connections + \
         [server] max_connections + {RESERVED_FILES} reserved), but this process may open at most \
         {hard} (RLIMIT_NOFILE hard limit): lower max_connections, or raise the limit \
         (ulimit -Hn, LimitNOFILE= in a systemd unit)"
    )]
    TooLow {
        /// Files the configuration needs.
        needed: u64,
        /// The hard limit.
        hard: u64,
    },
    /// The limit could not be read or raised.
    #[error("cannot raise the open-files limit: {0}")]
    Os(std::io::Error),
}

/// Raises the soft open-files limit (RLIMIT_NOFILE) to the hard limit and
/// answers the new soft limit; an error when it is below `needed`, so that a
/// daemon refuses to start rather than failing connections with EMFILE later.
pub fn raise_open_files(needed: u64) -> Result<u64, FilesLimitError> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // None is unlimited.
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < needed {
        return Err(FilesLimitError::TooLow { needed, hard });
    }
    if limit.current.is_some_and(|soft| soft < hard) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .map_err(|errno| FilesLimitError::Os(errno.into()))?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_needed_counts_both_directions_and_a_reserve() {
        let mut config = volley_conf::Config::default();
        config.delivery.max_connections = 500;
        config.server.max_connections = 1000;
        assert_eq!(
            files_needed(&config, true),
            500 + RESERVED_FILES,
            "no listener"
        );
        config.listen = volley_conf::Config::parse(
            "[[listen]]\naddress = \"127.0.0.1:2525\"\nrole = \"submission\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .listen;
        assert_eq!(files_needed(&config, true), 1500 + RESERVED_FILES);
        assert_eq!(files_needed(&config, false), 500 + RESERVED_FILES);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let soft = raise_open_files(64).unwrap();
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .maximum
            .unwrap_or(u64::MAX);
        assert_eq!(soft, hard);
        match raise_open_files(u64::MAX) {
            Err(FilesLimitError::TooLow { needed, .. }) if hard < u64::MAX => {
                assert_eq!(needed, u64::MAX)
            }
            Ok(_) if hard == u64::MAX => {}
            other => panic!("{other:?}"),
        }
    }
}
