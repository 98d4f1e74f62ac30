//! The test key and the fixture messages (`fixtures/`), for the tests of this
//! crate and of the crates that use it. Not for production use: the key is public.

use crate::Verp;

/// The key the fixtures' VERP addresses were made with.
pub const KEY: [u8; 32] = *b"volley fixtures key, not secret!";

/// The [`Verp`] of the fixtures: domain bounce.acme.test, prefix `b-`.
pub fn verp() -> Verp {
    Verp::new(&KEY, "bounce.acme.test", "b-").unwrap_or_else(|e| panic!("{e}"))
}

/// A fixture's bytes (`fixtures/NAME`); panics if it is missing.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/src/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}
