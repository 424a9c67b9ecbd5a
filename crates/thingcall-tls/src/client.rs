//! What thingcall's TLS clients trust, built in one place.
//!
//! Four clients speak TLS: the API SDK (`thingcall-client`), the AMQP
//! consumer (`thingcall subscribe`), the device-side client and simulator
//! (`thingcall-gateway`), and the PostgreSQL store. Each says which
//! authorities it trusts with a [`Trust`] (Mozilla's public roots, the CA
//! certificates of PEM files, DER certificates, or a mix) and gets its
//! rustls configuration from [`Trust::client_config`]: one reader of CA
//! files (errors name the file, never its content), one protocol choice
//! (TLS 1.2 and 1.3 on ring), so the clients cannot drift apart.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{TlsError, invalid, provider, read};

/// The certificate authorities a client trusts.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    public: bool,
    extra: Vec<CertificateDer<'static>>,
}

impl Trust {
    /// Mozilla's public roots (the `webpki-roots` set), as for Alibaba's
    /// own endpoints.
    pub fn public() -> Trust {
        Trust {
            public: true,
            extra: Vec::new(),
        }
    }

    /// Nothing yet: only what is added (a private CA, for a self-hosted
    /// server or a test).
    pub fn only() -> Trust {
        Trust::default()
    }

    /// Also trusts every certificate of a PEM file (a CA bundle); a file
    /// with none is an error.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Trust, TlsError> {
        self.extra.extend(read_ca_file(path)?);
        Ok(self)
    }

    /// Also trusts one DER certificate.
    pub fn with_der(mut self, der: Vec<u8>) -> Trust {
        self.extra.push(CertificateDer::from(der));
        self
    }

    /// Whether anything is trusted at all.
    pub fn is_empty(&self) -> bool {
        !self.public && self.extra.is_empty()
    }

    /// The root store of these authorities.
    pub fn root_store(&self) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        if self.public {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.extra {
            roots
                .add(cert.clone())
                .map_err(|e| TlsError::Config(format!("a trusted certificate is unusable: {e}")))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Config("no certificate authority to trust".into()));
        }
        Ok(roots)
    }

    /// A client configuration (TLS 1.2 and 1.3, no client certificate)
    /// that checks servers against these authorities.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.root_store()?)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM file (a CA bundle); a file with none is an
/// error naming it.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate bundle ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

// The tests make certificates with the demo CA.
#[cfg(test)]
#[cfg(feature = "demo")]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    fn temp(name: &str, text: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("thingcall-tls-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn nothing_to_trust_is_refused() {
        let e = Trust::only().client_config().unwrap_err();
        assert!(e.to_string().contains("no certificate authority"), "{e}");
        assert!(Trust::only().is_empty());
        assert!(!Trust::public().is_empty());
    }

    #[test]
    fn a_ca_file_without_certificates_names_the_file() {
        let path = temp("empty.pem", b"not a certificate\n");
        let e = Trust::only().with_ca_file(&path).unwrap_err();
        assert!(e.to_string().contains("empty.pem"), "{e}");
        assert!(e.to_string().contains("no CERTIFICATE block"), "{e}");
        let missing = Trust::only()
            .with_ca_file(Path::new("/nonexistent/ca.pem"))
            .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
    }

    #[test]
    fn only_the_given_ca_or_it_besides_the_public_roots() {
        let dir =
            std::env::temp_dir().join(format!("thingcall-tls-client-ca-{}", std::process::id()));
        let made = crate::demo::ensure(&dir).unwrap();
        let only = Trust::only()
            .with_ca_file(&made.ca)
            .unwrap()
            .root_store()
            .unwrap();
        assert_eq!(only.len(), 1);
        let both = Trust::public()
            .with_ca_file(&made.ca)
            .unwrap()
            .root_store()
            .unwrap();
        assert_eq!(both.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 1);
        assert!(
            Trust::only()
                .with_ca_file(&made.ca)
                .unwrap()
                .client_config()
                .is_ok()
        );
    }
}
