//! The machine's host name: the default of `[delivery] helo_name` and of the
//! name the SMTP listener greets with.

/// The kernel's host name, or `localhost` when it cannot be read or is empty.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
