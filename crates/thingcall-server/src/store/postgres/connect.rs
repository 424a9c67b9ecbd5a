//! Connections to PostgreSQL, over TLS as the URL's `sslmode` and
//! `sslrootcert` say, with libpq's meaning
//! (<https://www.postgresql.org/docs/current/libpq-ssl.html>):
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it, else plaintext | not checked |
//! | `require` | always | not checked; with `sslrootcert`, checked as `verify-ca` |
//! | `verify-ca` | always | signed by a CA in `sslrootcert` |
//! | `verify-full` | always | signed by a CA in `sslrootcert`, and valid for the host |
//!
//! `sslrootcert=system` trusts the operating system's roots and, as in
//! libpq, needs `verify-full`. Unlike libpq, thingcall never reads
//! `~/.postgresql/root.crt` of its own accord: a CA is trusted only when the
//! URL names it. tokio-postgres knows only the first three modes, so the
//! URL's `sslmode` and `sslrootcert` are taken out before it parses the
//! rest, and the checks are made here, in the rustls verifier.
//!
//! One [`Connector`] serves every connection thingcall opens to the
//! database: the writer's, the pool's, a cluster node's listener,
//! `store copy`'s, and the tests' administration.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::store::StoreError;

/// How a connection uses TLS (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, unchecked; plaintext otherwise.
    #[default]
    Prefer,
    /// TLS always; the certificate is checked only against a given root.
    Require,
    /// TLS always; the certificate chains to the root.
    VerifyCa,
    /// TLS always; the certificate chains to the root and names the host.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            // libpq's `allow` (plaintext first, TLS if the server insists)
            // protects nothing that `prefer` does not.
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }

    /// The URL's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Which CAs a connection trusts (`sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RootCerts {
    /// A PEM file of CA certificates.
    File(PathBuf),
    /// The operating system's roots (`sslrootcert=system`).
    System,
}

/// The URL's TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    /// Whether the URL named the mode (it is then shown in messages).
    pub(crate) explicit: bool,
    pub(crate) root: Option<RootCerts>,
}

impl TlsSettings {
    /// How the server's certificate is checked.
    fn check(&self) -> Check {
        match (self.mode, &self.root) {
            (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => Check::None,
            (SslMode::Require | SslMode::VerifyCa, _) => Check::Chain,
            (SslMode::VerifyFull, _) => Check::Full,
        }
    }

    /// `sslmode=... sslrootcert=...`, for messages.
    pub(crate) fn describe(&self) -> String {
        let mut text = format!("sslmode={}", self.mode.as_str());
        match &self.root {
            Some(RootCerts::File(p)) => text.push_str(&format!(" sslrootcert={}", p.display())),
            Some(RootCerts::System) => text.push_str(" sslrootcert=system"),
            None => {}
        }
        text
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    None,
    Chain,
    Full,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgres://` URL: the URL
/// without them (for tokio-postgres) and the settings. The other
/// parameters are left as they are.
pub(crate) fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let mut settings = TlsSettings::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), settings));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "sslmode" => {
                settings.mode = SslMode::parse(&percent_decode(value)?)?;
                settings.explicit = true;
            }
            "sslrootcert" => {
                let value = percent_decode(value)?;
                settings.root = Some(match value.as_str() {
                    "" => return Err("sslrootcert is empty".into()),
                    "system" => RootCerts::System,
                    path => RootCerts::File(PathBuf::from(path)),
                });
            }
            // Client certificates are not supported yet: say so rather
            // than connect without one.
            key @ ("sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir") => {
                return Err(format!("{key} is not supported (client certificates)"));
            }
            _ => kept.push(pair),
        }
    }
    if settings.root == Some(RootCerts::System) && settings.mode != SslMode::VerifyFull {
        if settings.explicit {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full, not {}",
                settings.mode.as_str()
            ));
        }
        // As libpq: the system's roots make verify-full the default.
        settings.mode = SslMode::VerifyFull;
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, settings))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the URL's parameters")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's parameters are not UTF-8".to_owned())
}

/// The connection's type, with TLS or without.
pub(crate) type Connection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// Opens connections to one database with its settings and TLS.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Config,
    tls: MakeRustlsConnect,
    settings: TlsSettings,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connector({})", self.settings.describe())
    }
}

fn tls_error(settings: &TlsSettings, why: impl std::fmt::Display) -> StoreError {
    StoreError::unavailable(format!("PostgreSQL TLS ({}): {why}", settings.describe()))
}

impl Connector {
    /// A connector for `config` (whose `ssl_mode` is set from `settings`
    /// here). Reads the root certificates now: a file that is missing or
    /// holds none is an error that names it.
    pub(crate) fn new(mut config: Config, settings: &TlsSettings) -> Result<Connector, StoreError> {
        config.ssl_mode(match settings.mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let check = settings.check();
        let roots = match (&settings.root, check) {
            (_, Check::None) => None,
            (None, _) => {
                return Err(tls_error(
                    settings,
                    "give sslrootcert=FILE, the CA that signed the server's certificate",
                ));
            }
            (Some(root), _) => Some(Arc::new(load_roots(root, settings)?)),
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(settings, e))?;
        let algorithms = provider.signature_verification_algorithms;
        let mut client = match (check, roots) {
            (Check::Full, Some(roots)) => builder
                .with_root_certificates(Arc::clone(&roots))
                .with_no_client_auth(),
            (Check::Chain, Some(roots)) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { roots, algorithms }))
                .with_no_client_auth(),
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked { algorithms }))
                .with_no_client_auth(),
        };
        // What libpq 17 sends; servers before 17 ignore it.
        client.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(client),
            settings: settings.clone(),
        })
    }

    /// The connection settings, with the TLS mode the URL asked for (a
    /// pool must be built from these, not from the URL's parse: that one
    /// says `prefer`, which falls back to plaintext).
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The same connector with other settings (another database, other
    /// timeouts); the TLS mode stays the connector's.
    pub(crate) fn with_config(&self, config: Config) -> Connector {
        let mut c = self.clone();
        let mode = self.config.get_ssl_mode();
        c.config = config;
        c.config.ssl_mode(mode);
        c
    }

    /// The TLS half, for the pool's manager.
    pub(crate) fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    /// Opens a connection and returns it with its connection task, which
    /// the caller drives (a listener reads its notifications).
    pub(crate) async fn connect_raw(&self) -> Result<(Client, Connection), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }

    /// Opens a connection and runs its connection task.
    pub(crate) async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    /// What went wrong with a connection, on one line, with what the TLS
    /// settings make of it ("the server's certificate is not signed by a
    /// CA in sslrootcert=..."). It never carries the password.
    pub(crate) fn explain(&self, e: &tokio_postgres::Error) -> String {
        let mut text = super::error::describe(e);
        if let Some(hint) = self.hint(e) {
            text.push_str(" (");
            text.push_str(&hint);
            text.push(')');
        }
        text
    }

    fn hint(&self, e: &tokio_postgres::Error) -> Option<String> {
        let settings = self.settings.describe();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            // The handshake's error is inside an `io::Error`, whose
            // `source` skips it.
            let tls = s.downcast_ref::<rustls::Error>().or_else(|| {
                s.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(tls) = tls {
                use rustls::CertificateError as C;
                return Some(match tls {
                    // A CA of the same name but another key: the
                    // chain's signature does not verify.
                    rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                        format!(
                            "the server's certificate is not signed by a CA that {settings} trusts"
                        )
                    }
                    rustls::Error::InvalidCertificate(
                        C::NotValidForName | C::NotValidForNameContext { .. },
                    ) => format!(
                        "the server's certificate is not valid for the host the URL names ({settings}; \
                         verify-ca does not check the name)"
                    ),
                    rustls::Error::InvalidCertificate(
                        C::Expired
                        | C::ExpiredContext { .. }
                        | C::NotValidYet
                        | C::NotValidYetContext { .. },
                    ) => "the server's certificate has expired or is not valid yet".to_owned(),
                    _ => format!("the TLS handshake failed with {settings}"),
                });
            }
            source = s.source();
        }
        let text = super::error::describe(e);
        if text.contains("server does not support TLS") {
            return Some(format!(
                "{settings} refuses plaintext and the server has ssl = off"
            ));
        }
        if text.contains("no encryption") {
            return Some(format!(
                "the server accepts only TLS connections here, and the URL has {settings}"
            ));
        }
        None
    }
}

/// The roots a setting names.
fn load_roots(root: &RootCerts, settings: &TlsSettings) -> Result<RootCertStore, StoreError> {
    let mut store = RootCertStore::empty();
    match root {
        // The one reader of CA files every TLS client of thingcall uses
        // (`thingcall_tls::client`): its errors name the file.
        RootCerts::File(path) => {
            store = thingcall_tls::client::Trust::only()
                .with_ca_file(path)
                .and_then(|t| t.root_store())
                .map_err(|e| tls_error(settings, e))?;
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(tls_error(
                    settings,
                    "the operating system has no root certificates",
                ));
            }
        }
    }
    Ok(store)
}

/// `prefer`, and `require` without a root: any certificate is taken (the
/// handshake's own signatures are still checked, so the session is with
/// whoever holds the certificate's key).
#[derive(Debug)]
struct Unchecked {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `require` with a root): the certificate must chain to
/// a trusted root and be valid now; its names are not checked.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssl_settings_are_taken_out_of_the_url() {
        let (url, s) = split_url(
            "postgres://u:p@db.example:5433/tc?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u:p@db.example:5433/tc?application_name=x");
        assert_eq!(s.mode, SslMode::VerifyFull);
        assert_eq!(s.root, Some(RootCerts::File("/etc/ca.pem".into())));
        assert_eq!(s.check(), Check::Full);

        let (url, s) = split_url("postgres://u@h/db").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!((s.mode, s.explicit), (SslMode::Prefer, false));
        assert_eq!(s.check(), Check::None);

        let (url, s) = split_url("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(
            s.check(),
            Check::None,
            "require without a root checks nothing"
        );
        let (_, s) = split_url("postgres://u@h/db?sslmode=require&sslrootcert=ca.pem").unwrap();
        assert_eq!(s.check(), Check::Chain, "require with a root is verify-ca");
        let (_, s) = split_url("postgres://u@h/db?sslmode=verify-ca&sslrootcert=ca.pem").unwrap();
        assert_eq!(s.check(), Check::Chain);
        let (_, s) = split_url("postgres://u@h/db?sslrootcert=system").unwrap();
        assert_eq!(s.mode, SslMode::VerifyFull, "system roots mean verify-full");
    }

    #[test]
    fn bad_ssl_settings_are_refused_by_name() {
        for (url, wanted) in [
            ("postgres://h/db?sslmode=allow", "sslmode=allow"),
            ("postgres://h/db?sslmode=verify_full", "sslmode=verify_full"),
            ("postgres://h/db?sslrootcert=", "sslrootcert is empty"),
            (
                "postgres://h/db?sslmode=require&sslrootcert=system",
                "needs sslmode=verify-full",
            ),
            ("postgres://h/db?sslcert=c.pem", "sslcert is not supported"),
            ("postgres://h/db?sslmode=%zz", "%-escape"),
        ] {
            let e = split_url(url).unwrap_err();
            assert!(e.contains(wanted), "{url}: {e}");
        }
    }

    /// Settings changed after the URL was read (another database,
    /// timeouts) keep the URL's TLS mode: the URL's own parse says
    /// `prefer`, which would fall back to plaintext.
    #[test]
    fn other_settings_keep_the_tls_mode() {
        let (url, s) = split_url("postgres://u@h/db?sslmode=verify-ca&sslrootcert=ca.pem").unwrap();
        let parsed: Config = url.parse().unwrap();
        assert_eq!(parsed.get_ssl_mode(), DriverSslMode::Prefer);
        let s = TlsSettings {
            root: None,
            mode: SslMode::Require,
            ..s
        };
        let c = Connector::new(parsed.clone(), &s).unwrap();
        assert_eq!(c.config().get_ssl_mode(), DriverSslMode::Require);
        let mut other = parsed;
        other.dbname("another");
        let c = c.with_config(other);
        assert_eq!(c.config().get_ssl_mode(), DriverSslMode::Require);
        assert_eq!(c.config().get_dbname(), Some("another"));
    }

    #[test]
    fn checked_modes_need_a_readable_root() {
        let config: Config = "postgres://u@localhost/db".parse().unwrap();
        for url in [
            "postgres://h/db?sslmode=verify-ca",
            "postgres://h/db?sslmode=verify-full",
        ] {
            let (_, s) = split_url(url).unwrap();
            let e = Connector::new(config.clone(), &s).unwrap_err();
            assert!(e.message().contains("give sslrootcert"), "{e}");
        }
        let (_, s) =
            split_url("postgres://h/db?sslmode=verify-full&sslrootcert=/no/such/ca.pem").unwrap();
        let e = Connector::new(config.clone(), &s).unwrap_err();
        assert!(e.message().contains("/no/such/ca.pem"), "{e}");
        for url in [
            "postgres://h/db",
            "postgres://h/db?sslmode=disable",
            "postgres://h/db?sslmode=require",
        ] {
            let (_, s) = split_url(url).unwrap();
            Connector::new(config.clone(), &s).unwrap();
        }
    }
}
