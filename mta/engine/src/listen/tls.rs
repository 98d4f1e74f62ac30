//! The rustls server configuration of the SMTP listener (ring provider), from the
//! certificate and key PEM files of `[server]`.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::ListenError;

/// Reads `cert_file` (a PEM chain, leaf first) and `key_file` (PKCS#8, PKCS#1
/// or SEC1 PEM) into a server configuration.
pub(crate) fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<ServerConfig>, ListenError> {
    let err = |path: &Path, reason: String| ListenError::Tls {
        path: path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| err(cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(cert_file, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| err(key_file, e.to_string()))?;
    let config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert_file, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(key_file, format!("certificate and key do not fit: {e}")))?;
    Ok(Arc::new(config))
}
