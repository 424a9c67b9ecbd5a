//! TLS for thingcall's listeners.
//!
//! One [`ServerTls`] holds the server's certificate and key, loaded from PEM
//! files. Every listener (HTTPS, MQTT over TLS, secure WebSocket, the plain
//! MQTT port's TLS handshakes) makes its rustls configuration with
//! [`ServerTls::config`]; all of them read the certificate from the same
//! store at each handshake, so [`ServerTls::reload`] reaches all of them at
//! once while connections already open keep their session.
//!
//! Key material never appears in errors, logs or `Debug` output: errors name
//! the file and what is wrong with it.

pub mod client;
#[cfg(feature = "demo")]
pub mod demo;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;

/// How many TLS sessions a server remembers for resumption by id (TLS 1.2)
/// or by stateful ticket; tickets (stateless, the default for TLS 1.3) need
/// no memory.
const SESSION_CACHE: usize = 16 * 1024;

/// How often [`ServerTls::watch`] looks at the files' modification times.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// The certificate chain and private key files of a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The chain in `cert`, the key in `key`.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// Why a certificate or key could not be used.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        error: std::io::Error,
    },
    /// A file was read but holds no usable certificate or key.
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its content).
        reason: String,
    },
    /// A demo certificate could not be generated or written.
    Generate(String),
    /// A client configuration could not be made (nothing to trust, an
    /// unusable certificate).
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::Invalid { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::Generate(reason) => write!(f, "cannot make the demo certificate: {reason}"),
            TlsError::Config(reason) => write!(f, "TLS client: {reason}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a chain and its key.
fn load_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert, "holds no CERTIFICATE block"));
    }
    let key_pem = read(&files.key)?;
    // The parser's error could quote the file; say only what kind it is.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let what = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "holds no PRIVATE KEY block",
            _ => "is not a PEM private key",
        };
        invalid(&files.key, what)
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(&files.key, format!("unusable private key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        invalid(
            &files.cert,
            format!(
                "the certificate does not belong to the key in {} ({e})",
                files.key.display()
            ),
        )
    })?;
    Ok(certified)
}

/// The modification times of the two files (None where unreadable).
fn stamps(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert), m(&files.key))
}

/// The certificate every handshake is answered with.
struct Store {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Store {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(Arc::clone(&current))
    }
}

/// A server certificate shared by every TLS listener, reloadable.
#[derive(Clone)]
pub struct ServerTls {
    files: TlsFiles,
    store: Arc<Store>,
    sessions: Arc<ServerSessionMemoryCache>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the chain and key; an error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<ServerTls, TlsError> {
        let key = load_key(&files)?;
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| TlsError::Generate(format!("no ticket key ({e})")))?;
        Ok(ServerTls {
            files,
            store: Arc::new(Store {
                current: RwLock::new(Arc::new(key)),
            }),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE),
            ticketer,
        })
    }

    /// The files this certificate comes from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// A rustls configuration for a listener that offers `alpn` (empty:
    /// none). TLS 1.2 and 1.3 only; sessions resume by cache and tickets
    /// shared by all the listeners.
    pub fn config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        // The ring provider supports both protocol versions, so the builder
        // cannot fail; should it ever, the safe default versions are used.
        let builder = match rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "TLS versions refused; using the defaults");
                rustls::ServerConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .unwrap_or_else(|_| rustls::ServerConfig::builder())
            }
        };
        let mut config = builder
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&self.store) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.session_storage = Arc::clone(&self.sessions) as _;
        config.ticketer = Arc::clone(&self.ticketer);
        Arc::new(config)
    }

    /// Loads the files again. On success every new handshake gets the new
    /// certificate; on error the old one stays in service.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load_key(&self.files)?;
        let mut current = match self.store.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(key);
        Ok(())
    }

    /// The DER of the certificate in service now (the chain's first).
    pub fn current_certificate(&self) -> Vec<u8> {
        let current = match self.store.current.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        current.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => {
                tracing::info!(cert = %self.files.cert.display(), why, "TLS certificate reloaded")
            }
            Err(e) => {
                tracing::error!(error = %e, why, "TLS certificate not reloaded; the old one stays in service")
            }
        }
    }

    /// Reloads on `SIGHUP` and whenever either file's modification time
    /// changes (looked at every [`WATCH_INTERVAL`]), until `stop` completes.
    pub async fn watch(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        #[cfg(unix)]
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler; certificates reload on file change only");
                None
            }
        };
        let mut seen = stamps(&self.files);
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = &mut stop => return,
                _ = hangup => {
                    seen = stamps(&self.files);
                    self.reload_logged("SIGHUP");
                }
                _ = tick.tick() => {
                    let now = stamps(&self.files);
                    if now != seen && now.0.is_some() && now.1.is_some() {
                        seen = now;
                        self.reload_logged("the files changed");
                    }
                }
            }
        }
    }
}

/// Runs a TLS handshake, giving up after `limit` (a peer that stops
/// mid-handshake must not hold a connection slot).
pub async fn accept<S>(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: S,
    limit: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the TLS handshake did not finish in time",
        )),
    }
}

// The tests make certificates with the demo CA.
#[cfg(test)]
#[cfg(feature = "demo")]
mod tests;
