//! The HTTP front's connection deadlines, on an in-memory pipe whose
//! buffer holds 64 bytes: a client that stops reading is seen at once,
//! whatever the kernel's socket buffers would have held.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::{Server, ServerConfig, SystemClock, http, limits, serve_http, store};

async fn front(name: &str, config: ServerConfig) -> Arc<http::Front> {
    let dir = std::env::temp_dir().join(format!(
        "thingcall-front-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(store::sqlite::Store::open(&dir).unwrap());
    let server = Server::from_parts(
        config,
        Arc::new(thingcall_transport::MemoryTransport::new()),
        store.clone(),
        store,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let budget = limits::BodyBudget::new(server.state.config.unverified_body_budget);
    Arc::new(http::Front {
        engine: Arc::clone(&server.state),
        budget,
        logins: None,
    })
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_connection_at_the_write_timeout() {
    let config = ServerConfig {
        write_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let front = front("write-timeout", config).await;
    let (mut client, server_end) = tokio::io::duplex(64);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let started = std::time::Instant::now();
    let served = tokio::spawn(serve_http(front, server_end, graceful.watcher()));
    // An answer of some hundred bytes, which the client never reads.
    client
        .write_all(b"GET /?Action=QueryProduct HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(3), served).await;
    assert!(
        ended.is_ok(),
        "a connection whose client stopped reading was kept"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(client);
}
