//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the
//! headers `webhook-id`, `webhook-timestamp` and `webhook-signature`, the last
//! `v1,` followed by the base64 of HMAC-SHA256 over `id.timestamp.body` with
//! the key the secret's `whsec_` form holds.

use ring::hmac;

/// A webhook's signing key.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// The signer of secret `whsec_…`, or why it is not one.
    pub fn new(secret: &str) -> Result<Signer, String> {
        let key = volley_conf::parse_webhook_secret(secret)?;
        Ok(Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
        })
    }

    /// The `webhook-signature` header's value for message `id` sent at unix
    /// second `timestamp` with `body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", data_encoding::BASE64.encode(ctx.sign().as_ref()))
    }
}

/// A new secret in the `whsec_` form: 32 random bytes.
pub fn new_secret() -> Result<String, String> {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| "the system's random source failed".to_owned())?;
    Ok(format!("whsec_{}", data_encoding::BASE64.encode(&key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_specifications_example() {
        // The example of the Standard Webhooks reference libraries' tests.
        let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn new_secrets_sign() {
        let secret = new_secret().unwrap();
        assert!(secret.starts_with("whsec_"));
        assert!(Signer::new(&secret).is_ok());
        assert_ne!(secret, new_secret().unwrap());
    }
}
