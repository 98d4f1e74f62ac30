//! `volley hash-password`: the argon2id PHC string of a password read from
//! standard input, for `[[user]] password_hash` or a users file.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};

/// Reads one line (the password; a trailing CR LF or LF is not part of it) and
/// returns its hash and a newline.
pub fn run() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // No echo control: the password shows as typed.
        eprint!("Password (shown as typed): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = strip_line_end(&line);
    if password.is_empty() {
        bail!("no password on standard input (one line expected)");
    }
    let hash = volley_engine::listen::hash_password(password)?;
    Ok(format!("{hash}\n"))
}

fn strip_line_end(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_line_end_is_removed() {
        assert_eq!(strip_line_end("secret\n"), "secret");
        assert_eq!(strip_line_end("secret\r\n"), "secret");
        assert_eq!(strip_line_end(" sec ret "), " sec ret ");
        assert_eq!(strip_line_end("\n"), "");
    }
}
