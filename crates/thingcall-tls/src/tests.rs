//! Loading, handshakes, reloads (by call and by the watcher), the demo CA,
//! and what errors and `Debug` may show.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "thingcall-tls-{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Handshakes with `tls` over a pipe and returns the server certificate the
/// client saw.
async fn handshake(tls: &ServerTls, ca: &Path) -> Vec<u8> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config(&[]));
    let server = tokio::spawn(async move {
        let mut s = accept(&acceptor, b, Duration::from_secs(5)).await.unwrap();
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.unwrap();
        s.write_all(&byte).await.unwrap();
        s.flush().await.unwrap();
    });
    let connector = tokio_rustls::TlsConnector::from(client_config(ca));
    let mut c = connector
        .connect(ServerName::try_from("localhost").unwrap(), a)
        .await
        .unwrap();
    c.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    c.read_exact(&mut byte).await.unwrap();
    server.await.unwrap();
    c.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn the_demo_certificate_is_made_once_and_loads() {
    let dir = temp("demo");
    let first = demo::ensure(&dir).unwrap();
    assert!(first.created);
    let again = demo::ensure(&dir).unwrap();
    assert!(!again.created);
    assert_eq!(
        std::fs::read(&first.files.cert).unwrap(),
        std::fs::read(&again.files.cert).unwrap()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&first.files.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    }
    ServerTls::load(first.files).unwrap();
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_completes_a_handshake() {
    let dir = temp("hs");
    let d = demo::ensure(&dir).unwrap();
    let tls = ServerTls::load(d.files).unwrap();
    let seen = handshake(&tls, &d.ca).await;
    assert_eq!(seen, tls.current_certificate());
}

#[tokio::test]
async fn a_reload_serves_the_new_certificate_and_a_bad_one_keeps_the_old() {
    let dir = temp("reload");
    let d = demo::ensure(&dir.join("one")).unwrap();
    let other = demo::ensure(&dir.join("two")).unwrap();
    let tls = ServerTls::load(d.files.clone()).unwrap();
    let before = handshake(&tls, &d.ca).await;

    // A broken key file: the reload fails, the old certificate serves on.
    let key = std::fs::read(&d.files.key).unwrap();
    std::fs::write(&d.files.key, b"-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("server-key.pem"), "{err}");
    assert!(
        !err.contains("not base64"),
        "the key's content leaked: {err}"
    );
    assert_eq!(handshake(&tls, &d.ca).await, before);

    // A certificate that does not belong to the key.
    std::fs::write(&d.files.key, &key).unwrap();
    std::fs::copy(&other.files.cert, &d.files.cert).unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(err.contains("does not belong"), "{err}");
    assert_eq!(handshake(&tls, &d.ca).await, before);

    // The other pair as a whole: loaded, and served.
    std::fs::copy(&other.files.key, &d.files.key).unwrap();
    tls.reload().unwrap();
    let after = handshake(&tls, &other.ca).await;
    assert_ne!(after, before);
}

#[tokio::test]
async fn a_file_change_is_picked_up_by_the_watcher() {
    let dir = temp("watch");
    let d = demo::ensure(&dir.join("one")).unwrap();
    let other = demo::ensure(&dir.join("two")).unwrap();
    let tls = ServerTls::load(d.files.clone()).unwrap();
    let before = tls.current_certificate();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(tls.clone().watch(async move {
        let _ = stop_rx.await;
    }));
    // Modification times have a coarse grain on some file systems.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::copy(&other.files.key, &d.files.key).unwrap();
    std::fs::copy(&other.files.cert, &d.files.cert).unwrap();
    let deadline = tokio::time::Instant::now() + WATCH_INTERVAL * 4;
    while tls.current_certificate() == before {
        assert!(tokio::time::Instant::now() < deadline, "not reloaded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    watcher.await.unwrap();
}

#[test]
fn errors_name_the_file_and_debug_shows_no_key() {
    let dir = temp("errors");
    let missing = ServerTls::load(TlsFiles::new(dir.join("nope.pem"), dir.join("k.pem")))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.pem"), "{missing}");
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let empty = ServerTls::load(TlsFiles::new(dir.join("empty.pem"), dir.join("k.pem")))
        .unwrap_err()
        .to_string();
    assert!(empty.contains("no CERTIFICATE"), "{empty}");

    let d = demo::ensure(&dir).unwrap();
    let tls = ServerTls::load(d.files.clone()).unwrap();
    let shown = format!("{tls:?}");
    let key = std::fs::read_to_string(&d.files.key).unwrap();
    let body: String = key.lines().nth(1).unwrap().chars().take(20).collect();
    assert!(!shown.contains(&body), "{shown}");
    let _ = PrivateKeyDer::from_pem_file(&d.files.key).unwrap();
}
