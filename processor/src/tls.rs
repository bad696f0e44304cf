//! TLS towards core: an `https://` core URL plus the CA certificate that
//! signed core's certificate (`--tls-ca`). Shared with the monitor, which
//! connects to the same core the same way.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Why TLS towards core cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// https:// without a CA to verify core's certificate against.
    #[error(
        "{url}: an https:// core URL needs --tls-ca (the PEM certificate of the CA that signed core's certificate)"
    )]
    MissingCa { url: String },
    /// A CA with a plaintext URL: almost certainly a mistake.
    #[error("--tls-ca is set but {url} is not an https:// URL")]
    NotHttps { url: String },
    /// The CA file could not be read.
    #[error("reading --tls-ca {path}: {source}")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    /// tonic refused the TLS settings.
    #[error("configuring TLS: {0}")]
    Tonic(#[from] tonic::transport::Error),
}

/// Adds TLS to `endpoint` when `url` is `https://`: core's certificate must
/// chain to the CA in `ca` and name `domain` (default: the URL's host).
/// A plain `http://` URL without a CA is returned unchanged.
pub fn configure(
    endpoint: Endpoint,
    url: &str,
    ca: Option<&Path>,
    domain: Option<&str>,
) -> Result<Endpoint, TlsConfigError> {
    let https = url
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
    match (https, ca) {
        (false, None) => Ok(endpoint),
        (false, Some(_)) => Err(TlsConfigError::NotHttps { url: url.into() }),
        (true, None) => Err(TlsConfigError::MissingCa { url: url.into() }),
        (true, Some(path)) => {
            let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadCa {
                path: path.to_path_buf(),
                source,
            })?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
            if let Some(domain) = domain {
                tls = tls.domain_name(domain);
            }
            Ok(endpoint.tls_config(tls)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_and_ca_must_agree() {
        let endpoint = || Endpoint::from_static("http://127.0.0.1:1");
        assert!(configure(endpoint(), "http://127.0.0.1:1", None, None).is_ok());
        assert!(matches!(
            configure(endpoint(), "https://core:1", None, None),
            Err(TlsConfigError::MissingCa { .. })
        ));
        assert!(matches!(
            configure(endpoint(), "http://core:1", Some(Path::new("ca.pem")), None),
            Err(TlsConfigError::NotHttps { .. })
        ));
        assert!(matches!(
            configure(
                endpoint(),
                "https://core:1",
                Some(Path::new("/nonexistent/ca.pem")),
                None
            ),
            Err(TlsConfigError::ReadCa { .. })
        ));
    }
}
