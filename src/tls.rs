//! [`ClientTls`]: how a client of the proxy (the layer, the CLI, a backend) checks it over
//! `https://` and, for mutual TLS, shows who it is.
//!
//! An `https://` address is checked against the system's roots unless a CA is given; a CA
//! given replaces them, so a private CA's proxy is trusted for that CA alone. TLS settings
//! with an `http://` address are refused rather than ignored: the caller asked for TLS.

use std::{fmt, path::Path};

use rustls_pki_types::{CertificateDer, pem::PemObject};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// TLS settings of a client of the proxy.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    ca_certificate: Option<Certificate>,
    identity: Option<Identity>,
}

impl ClientTls {
    /// Trust the proxy's certificate when this CA (PEM) signed it, instead of the system's
    /// roots.
    pub fn ca_certificate(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca_certificate = Some(Certificate::from_pem(pem));
        self
    }

    /// Show this certificate and key (PEM) to a proxy that asks for client certificates
    /// (`POSTSUB_TLS_CLIENT_CA`).
    pub fn identity(mut self, cert_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Self {
        self.identity = Some(Identity::from_pem(cert_pem, key_pem));
        self
    }

    /// The settings read from PEM files: a CA, and a client certificate with its key.
    pub fn from_pem_files(
        ca_certificate: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let mut tls = Self::default();
        if let Some(ca) = ca_certificate {
            tls = tls.ca_certificate(read(ca)?);
        }
        if let Some((cert, key)) = identity {
            tls = tls.identity(read(cert)?, read(key)?);
        }
        Ok(tls)
    }

    fn is_default(&self) -> bool {
        self.ca_certificate.is_none() && self.identity.is_none()
    }

    /// An endpoint for the proxy at `url`: over TLS when the URL is `https://`. Fails on a
    /// URL that does not parse, TLS settings with `http://`, or a certificate or key that
    /// does not parse.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(TlsError::Url)?;
        if endpoint.uri().scheme_str() != Some("https") {
            return match self.is_default() {
                true => Ok(endpoint),
                false => Err(TlsError::NotHttps(url.to_owned())),
            };
        }
        let mut config = ClientTlsConfig::new();
        config = match &self.ca_certificate {
            Some(ca) => {
                check_certificates(ca.get_ref())?;
                config.ca_certificate(ca.clone())
            }
            None => config.with_native_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        endpoint.tls_config(config).map_err(TlsError::Config)
    }
}

/// Fails unless `pem` holds at least one certificate, and each one parses. (rustls skips
/// what does not parse, so a wrong file would only show later, as an unknown issuer.)
pub fn check_certificates(pem: &[u8]) -> Result<(), TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::NoCertificate(err.to_string()))?;
    match certificates.is_empty() {
        true => Err(TlsError::NoCertificate("no BEGIN CERTIFICATE block".into())),
        false => Ok(()),
    }
}

/// Why a client could not be set up to reach the proxy.
#[derive(Debug)]
pub enum TlsError {
    /// The address is not a URL.
    Url(tonic::transport::Error),
    /// A PEM file could not be read.
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A CA or client certificate was given for an `http://` address.
    NotHttps(String),
    /// A CA file holds no certificate that parses.
    NoCertificate(String),
    /// A certificate or key does not parse.
    Config(tonic::transport::Error),
    /// TLS was asked of a layer made over the caller's own channel, which holds its own.
    OwnChannel,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Url(_) => f.write_str("the proxy's address is not a URL"),
            TlsError::Read { path, .. } => write!(f, "cannot read {path}"),
            TlsError::NotHttps(url) => write!(
                f,
                "TLS settings were given, but {url} is not an https:// address"
            ),
            TlsError::NoCertificate(why) => {
                write!(f, "the CA file holds no PEM certificate ({why})")
            }
            TlsError::Config(_) => f.write_str("a TLS certificate or key does not parse"),
            TlsError::OwnChannel => f.write_str(
                "this layer calls the proxy over the channel it was made with; \
                 set TLS on that channel",
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Url(err) | TlsError::Config(err) => Some(err),
            TlsError::Read { source, .. } => Some(source),
            TlsError::NotHttps(_) | TlsError::NoCertificate(_) | TlsError::OwnChannel => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_takes_no_tls_settings() {
        assert!(ClientTls::default().endpoint("http://127.0.0.1:1").is_ok());
        let err = ClientTls::default()
            .ca_certificate("pem")
            .endpoint("http://127.0.0.1:1")
            .unwrap_err();
        assert!(matches!(err, TlsError::NotHttps(_)), "{err}");
    }

    #[test]
    fn a_certificate_that_does_not_parse_is_refused_at_once() {
        let err = ClientTls::default()
            .ca_certificate("not a certificate")
            .endpoint("https://127.0.0.1:1")
            .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate(_)), "{err}");
    }
}
