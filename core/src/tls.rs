//! TLS for core's two listeners, with rustls (ring provider), when
//! `--tls-cert` and `--tls-key` are configured.
//!
//! gRPC gets it through tonic's own rustls acceptor
//! ([`TlsMaterial::grpc`]). REST gets the acceptor of
//! [`TlsMaterial::rest_acceptor`]: `crate::http::serve` does the TLS
//! handshake (bounded by [`HANDSHAKE_TIMEOUT`]) on each connection, then
//! serves the axum router over it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Longest a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{path}: no PEM private key found ({reason})")]
    NoKey { path: PathBuf, reason: String },
    /// rustls refused them (e.g. the key does not match the certificate).
    #[error("the certificate and key cannot be used: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain and its private key, read from PEM files.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The PEM text, for tonic's `Identity`.
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// The parsed chain and key, for the REST acceptor.
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl TlsMaterial {
    /// Reads and checks `cert` (a PEM chain, leaf first) and `key` (a PEM
    /// PKCS#8, PKCS#1 or SEC1 private key).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_path_buf()));
        }
        let parsed_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: key.to_path_buf(),
            reason: e.to_string(),
        })?;
        let material = Self {
            cert_pem,
            key_pem,
            certs,
            key: parsed_key,
        };
        // Fail at start, with the reason, rather than at the first client.
        material.server_config()?;
        Ok(material)
    }

    fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// The acceptor for the REST listener.
    pub fn rest_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(Arc::new(self.server_config()?)))
    }

    /// The configuration for tonic's gRPC server.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}
