//! `[[user]]` and `[server] users_file`: who may AUTH to the SMTP server.
//!
//! A user is a name and an argon2 password hash in PHC string form
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`). The hash's shape is checked
//! here, so a typo is a configuration error naming its line; verifying passwords
//! and making hashes is the server's business (`volley_engine::listen::users`).

use std::path::Path;

use argon2::password_hash::PasswordHash;
use serde::{Deserialize, Deserializer};

use crate::error::ConfigError;

/// One `[[user]]` entry, or one line of the users file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with name and password_hash")]
pub struct UserConfig {
    /// The AUTH user name: printable, no spaces or `:`, 1 to 256 bytes.
    #[serde(deserialize_with = "name")]
    pub name: String,
    /// The password's argon2 hash as a PHC string (`volley hash-password` makes
    /// one).
    #[serde(deserialize_with = "password_hash")]
    pub password_hash: String,
}

fn name<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    check_name(&text).map_err(serde::de::Error::custom)?;
    Ok(text)
}

fn password_hash<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    check_hash(&text).map_err(serde::de::Error::custom)?;
    Ok(text)
}

/// Checks a user name: 1 to 256 bytes, no control characters, spaces or `:`.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err(format!("{name:?} is not a user name: 1 to 256 bytes"));
    }
    if name
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == ':')
    {
        return Err(format!(
            "{name:?} is not a user name: no spaces, control characters or ':'"
        ));
    }
    Ok(())
}

/// Checks that `hash` is an argon2 PHC string with valid parameters.
pub(crate) fn check_hash(hash: &str) -> Result<(), String> {
    let unknown = |why: String| {
        format!(
            "unknown password hash format ({why}): expected an argon2 PHC string like \
             \"$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>\""
        )
    };
    let parsed = PasswordHash::new(hash).map_err(|e| unknown(e.to_string()))?;
    let algorithm = parsed.algorithm.as_str();
    if !matches!(algorithm, "argon2id" | "argon2i" | "argon2d") {
        return Err(unknown(format!("algorithm {algorithm:?}")));
    }
    if parsed.hash.is_none() || parsed.salt.is_none() {
        return Err(unknown("no salt or no hash".into()));
    }
    argon2::Params::try_from(&parsed).map_err(|e| unknown(format!("parameters: {e}")))?;
    Ok(())
}

/// Reads a users file: one `name:PHC-hash` per line; blank lines and lines
/// starting with `#` are skipped. Errors name the file and line.
pub fn load_users_file(path: &Path) -> Result<Vec<UserConfig>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read {
        path: path.to_path_buf(),
        io,
    })?;
    parse_users(&text, path)
}

/// Parses users file `text` (see [`load_users_file`]); `file` is only used in
/// error messages.
pub fn parse_users(text: &str, file: &Path) -> Result<Vec<UserConfig>, ConfigError> {
    let mut users: Vec<UserConfig> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |column: usize, message: String| ConfigError::Invalid {
            file: file.to_path_buf(),
            line: i + 1,
            column,
            key: String::new(),
            message,
        };
        let indent = raw.len() - raw.trim_start().len() + 1;
        let Some((name, hash)) = line.split_once(':') else {
            return Err(err(
                indent,
                "expected name:password-hash (a PHC string)".into(),
            ));
        };
        check_name(name).map_err(|why| err(indent, why))?;
        check_hash(hash).map_err(|why| err(indent + name.len() + 1, why))?;
        if users.iter().any(|u| u.name == name) {
            return Err(err(indent, format!("user {name:?} is listed twice")));
        }
        users.push(UserConfig {
            name: name.to_owned(),
            password_hash: hash.to_owned(),
        });
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    use super::*;

    /// argon2id of "secret" with small parameters (m=64, t=1, p=1).
    const HASH: &str = "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$Kx7XmXLvW1k3xT0pKpP6Xw";

    #[test]
    fn entries_and_hash_checks() {
        let text = format!("[[user]]\nname = \"alice\"\npassword_hash = \"{HASH}\"\n");
        let config =
            Config::parse(&text, Path::new("volley.toml")).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.user.len(), 1);
        assert_eq!(config.user[0].name, "alice");

        let text =
            "[[user]]\nname = \"alice\"\npassword_hash = \"$2b$12$abcdefghijklmnopqrstuu\"\n";
        let err = Config::parse(text, Path::new("volley.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with(
                "volley.toml:3:17: user[0].password_hash: unknown password hash format"
            ),
            "{err}"
        );
        let text = "[[user]]\nname = \"al ice\"\npassword_hash = \"x\"\n";
        let err = Config::parse(text, Path::new("volley.toml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("volley.toml:2:8: user[0].name: "), "{err}");
    }

    #[test]
    fn hash_shapes() {
        assert_eq!(check_hash(HASH), Ok(()));
        for bad in [
            "",
            "secret",
            "$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA",
            "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHRzYWx0$Kx7XmXLvW1k3xT0pKpP6Xw",
        ] {
            assert!(check_hash(bad).is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn users_file() {
        let text = format!("# users\n\nalice:{HASH}\n  bob:{HASH}\n");
        let users = parse_users(&text, Path::new("users")).unwrap_or_else(|err| panic!("{err}"));
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);

        let error = |text: &str| {
            parse_users(text, Path::new("users"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            error("# x\nalice\n"),
            "users:2:1: expected name:password-hash (a PHC string)"
        );
        assert!(
            error("alice:$1$md5crypt\n").starts_with("users:1:7: unknown password hash format"),
            "{}",
            error("alice:$1$md5crypt\n")
        );
        assert_eq!(
            error(&format!("alice:{HASH}\nalice:{HASH}\n")),
            "users:2:1: user \"alice\" is listed twice"
        );
        assert!(
            load_users_file(Path::new("/nonexistent/users")).is_err_and(|e| e
                .to_string()
                .starts_with("cannot read /nonexistent/users: "))
        );
    }
}
