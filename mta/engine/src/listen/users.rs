//! AUTH users: names and argon2 password hashes from `[[user]]` and the users
//! file, password checks, and making new hashes.
//!
//! Checks are slow on purpose (argon2 is memory-hard): the driver runs them on
//! the blocking pool. An unknown user costs the same as a wrong password, so the
//! timing does not tell which names exist.

use std::collections::HashMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use ring::rand::{SecureRandom, SystemRandom};
use volley_conf::{load_users_file, Config, ConfigError};

/// Checked against when the user does not exist (argon2id of a random password
/// with the default parameters), so that the answer takes as long as for a real
/// user.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$dm9sbGV5ZHVtbXlzYWx0$2wHeqzKqzKY1Rzxu0nxrG6g0IVAvJmX5w7Bo1a0zJXU";

/// Why a password hash could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The system random generator failed.
    #[error("no random salt: the system random generator failed")]
    Random,
    /// argon2 refused (e.g. a password longer than it takes).
    #[error("argon2: {0}")]
    Argon2(String),
}

/// The users who may AUTH, by name.
#[derive(Debug, Clone, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
}

impl Users {
    /// The `[[user]]` entries plus the users file of `[server] users_file`, if
    /// set. A name in both: the users file wins (it is the one rotated by
    /// scripts).
    pub fn from_config(config: &Config) -> Result<Users, ConfigError> {
        let mut hashes: HashMap<String, String> = config
            .user
            .iter()
            .map(|u| (u.name.clone(), u.password_hash.clone()))
            .collect();
        if let Some(path) = &config.server.users_file {
            for user in load_users_file(path)? {
                hashes.insert(user.name, user.password_hash);
            }
        }
        Ok(Users { hashes })
    }

    /// Users from `(name, PHC hash)` pairs (tests, or callers with their own store).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Users {
        Users {
            hashes: pairs.into_iter().collect(),
        }
    }

    /// No users: AUTH is not offered.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `password` is `user`'s (argon2, constant-time compare of the
    /// hash). False for unknown users and unparsable hashes.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.hashes.get(user) {
            Some(hash) => (hash.as_str(), true),
            None => (DUMMY_HASH, false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && known
    }
}

/// Hashes `password` with argon2id (19 MiB, 2 passes, 1 lane: the argon2 crate's
/// defaults, OWASP's recommendation) and a random 16-byte salt; returns the PHC
/// string for `[[user]] password_hash` or the users file.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use argon2::{Algorithm, Params, Version};

    use super::*;

    /// A cheap hash for tests (8 KiB, 1 pass).
    fn cheap(password: &str) -> String {
        let params = Params::new(8, 1, 1, None).unwrap_or_default();
        let salt = SaltString::encode_b64(b"0123456789abcdef").ok();
        let salt = salt.as_ref().map(|s| s.as_salt());
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        match salt.map(|salt| argon.hash_password(password.as_bytes(), salt)) {
            Some(Ok(hash)) => hash.to_string(),
            other => panic!("hash: {other:?}"),
        }
    }

    #[test]
    fn verify() {
        let users = Users::from_pairs([("alice".to_owned(), cheap("secret"))]);
        assert!(users.verify("alice", "secret"));
        assert!(!users.verify("alice", "Secret"));
        assert!(!users.verify("alice", ""));
        assert!(!users.verify("bob", "secret"));
        let broken = Users::from_pairs([("x".to_owned(), "$argon2id$nonsense".to_owned())]);
        assert!(!broken.verify("x", "secret"));
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[test]
    fn made_hashes_verify_and_pass_the_config_check() {
        let hash = hash_password("pässword").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert_ne!(hash_password("pässword").ok(), Some(hash.clone()), "salted");
        let users = Users::from_pairs([("u".to_owned(), hash.clone())]);
        assert!(users.verify("u", "pässword"));
        let toml = format!("[[user]]\nname = \"u\"\npassword_hash = \"{hash}\"\n");
        let config = Config::parse(&toml, Path::new("v.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert!(Users::from_config(&config).is_ok_and(|u| u.verify("u", "pässword")));
    }
}
