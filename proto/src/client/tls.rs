//! TLS towards core, for the processor and the monitor alike: an
//! `https://` core URL is verified against the system's trusted roots (the
//! OS store; `SSL_CERT_FILE` / `SSL_CERT_DIR` when set), as any TLS client
//! does, or against the one CA given with `--tls-ca` (a private CA, no
//! system store involved). And the refusal to send a token in clear text
//! beyond loopback.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Why TLS towards core cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A CA with a plaintext URL: almost certainly a mistake.
    #[error("--tls-ca is set but {url} is not an https:// URL")]
    NotHttps { url: String },
    /// The CA file could not be read.
    #[error("reading --tls-ca {path}: {source}")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A token would travel in clear text beyond this machine.
    #[error(
        "refusing to send the token in clear text to {url}: use an https:// core URL (with --tls-ca for a private CA) \
         (a plain http:// URL may carry a token to a loopback address only)"
    )]
    TokenInClear { url: String },
    /// tonic refused the TLS settings.
    #[error("configuring TLS: {0}")]
    Tonic(#[from] tonic::transport::Error),
}

/// Adds TLS to `endpoint` when `url` is `https://`: core's certificate must
/// chain to the CA in `ca` (without one: to a root the system trusts) and
/// name `domain` (default: the URL's host). A plain `http://` URL without a
/// CA is returned unchanged.
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
        (true, ca) => {
            let mut tls = match ca {
                None => ClientTlsConfig::new().with_native_roots(),
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadCa {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
                }
            };
            if let Some(domain) = domain {
                tls = tls.domain_name(domain);
            }
            Ok(endpoint.tls_config(tls)?)
        }
    }
}

/// Refuses a bearer token towards `url` when it would cross the network
/// unencrypted: an `http://` URL (or one without a scheme, which is
/// `http://`) whose host is not 127.0.0.0/8, `::1` or `localhost`. Anyone
/// on the path could read the token and use it. Names are not resolved:
/// any other name counts as remote.
pub fn check_token_transport(url: &str) -> Result<(), TlsConfigError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    if scheme.eq_ignore_ascii_case("https") {
        return Ok(());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(TlsConfigError::TokenInClear { url: url.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_go_in_clear_text_to_loopback_only() {
        for url in [
            "http://127.0.0.1:50051",
            "http://127.8.9.10:1",
            "http://[::1]:50051",
            "http://localhost:50051",
            "HTTP://LOCALHOST",
            "127.0.0.1:50051",
            "https://core.example:50051",
            "https://10.0.0.1:50051",
        ] {
            assert!(check_token_transport(url).is_ok(), "{url}");
        }
        for url in [
            "http://10.0.0.1:50051",
            "http://core.example:50051",
            "http://0.0.0.0:50051",
            "http://[2001:db8::1]:50051",
            "http://localhost.example:1",
            "http://127.0.0.1@evil.example:1",
            "core:50051",
        ] {
            let err = check_token_transport(url).unwrap_err();
            assert!(err.to_string().contains("https://"), "{url}: {err}");
        }
    }

    #[test]
    fn scheme_and_ca_must_agree() {
        let endpoint = || Endpoint::from_static("http://127.0.0.1:1");
        assert!(configure(endpoint(), "http://127.0.0.1:1", None, None).is_ok());
        assert!(configure(endpoint(), "https://core:1", None, None).is_ok());
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
