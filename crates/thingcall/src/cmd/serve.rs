//! `thingcall serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use thingcall_core::{Clock, Secret};
use thingcall_server::{
    ClusterConfig, Listeners, PostgresUrl, SecretsKeySource, Server, ServerConfig, ServerOptions,
    StoreConfig, SystemClock,
};
use thingcall_sign::v1;
use thingcall_tls::{ServerTls, TlsFiles};
use thingcall_wire::form::encode_pairs;

use super::Outcome;

/// Prints a line of the start-up banner. A closed standard output (the
/// operator piped it into `head`, a supervisor went away) must not stop a
/// running server, so write errors are ignored, where `println!` would
/// panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The HTTP API address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// The MQTT device gateway address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: SocketAddr,
    /// The HTTP API over TLS (needs --tls-cert and --tls-key, or --demo).
    #[arg(long, value_name = "ADDR")]
    https: Option<SocketAddr>,
    /// MQTT over TLS (needs a certificate, as --https). With a certificate,
    /// the plain --mqtt port takes TLS handshakes too.
    #[arg(long, value_name = "ADDR")]
    mqtts: Option<SocketAddr>,
    /// MQTT over WebSocket, plaintext: ws://ADDR/mqtt, subprotocol mqtt.
    #[arg(long, value_name = "ADDR")]
    mqtt_ws: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS: wss://ADDR/mqtt (needs a certificate).
    #[arg(long, value_name = "ADDR")]
    mqtt_wss: Option<SocketAddr>,
    /// AMQP 1.0 server-side subscription over TLS (amqps://; Alibaba's port
    /// is 5671; needs a certificate).
    #[arg(long, value_name = "ADDR")]
    amqps: Option<SocketAddr>,
    /// AMQP 1.0 server-side subscription in plaintext, for local
    /// development only (refused with --require-tls-devices).
    #[arg(long, value_name = "ADDR")]
    amqp: Option<SocketAddr>,
    /// How long a consumer group's undelivered messages are kept, in hours.
    #[arg(long, value_name = "HOURS", default_value_t = 24)]
    amqp_retention_hours: u64,
    /// The server's certificate chain, PEM (or THINGCALL_TLS_CERT). Reloaded
    /// on SIGHUP and when the file changes.
    #[arg(
        long,
        value_name = "CHAIN.pem",
        env = "THINGCALL_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM (or THINGCALL_TLS_KEY).
    #[arg(
        long,
        value_name = "KEY.pem",
        env = "THINGCALL_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Refuse every device that logs in without TLS (CONNACK 5).
    #[arg(long)]
    require_tls_devices: bool,
    /// Device connections open at once over all MQTT listeners, counting
    /// TLS handshakes and WebSocket upgrades in progress.
    #[arg(long, default_value_t = 100_000)]
    max_device_connections: usize,
    /// The data directory: the SQLite store (unless --store), the lock.
    #[arg(long, default_value = "./thingcall-data")]
    data_dir: PathBuf,
    /// Keep the registry and the records in PostgreSQL instead of SQLite:
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB (or THINGCALL_STORE).
    #[arg(
        long,
        value_name = "URL",
        env = "THINGCALL_STORE",
        hide_env_values = true
    )]
    store: Option<String>,
    /// Run as a node of a cluster: the NATS servers, comma-separated
    /// (nats://HOST:PORT[,nats://...]; or THINGCALL_CLUSTER). Needs --store.
    #[arg(long, value_name = "URLS", env = "THINGCALL_CLUSTER")]
    cluster: Option<String>,
    /// This node's id in the cluster (or THINGCALL_NODE_ID); by default one
    /// made up on first start and kept in the data directory.
    #[arg(long, env = "THINGCALL_NODE_ID", requires = "cluster")]
    node_id: Option<String>,
    /// The AccessKey id to accept (or THINGCALL_ACCESS_KEY_ID).
    #[arg(long, env = "THINGCALL_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// The AccessKey secret (or THINGCALL_ACCESS_KEY_SECRET).
    #[arg(long, env = "THINGCALL_ACCESS_KEY_SECRET", hide_env_values = true)]
    access_key_secret: Option<String>,
    /// The key that seals the store's secrets: a file of one line, 32 bytes
    /// in base64 (make one with `thingcall store new-key FILE`). Or the key
    /// itself in THINGCALL_SECRETS_KEY. Without either, DATA_DIR/secrets.key,
    /// which the SQLite store makes on first start; a PostgreSQL store
    /// refuses to start without a key (every node needs the same one).
    #[arg(long, value_name = "FILE", env = "THINGCALL_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
    /// How long a sync service call waits for the device (e.g. 5s, 800ms, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    sync_timeout: Duration,
    /// Once every listener is bound, write {"http":"ADDR","mqtt":"ADDR",...}
    /// here (with "https", "mqtts", "mqtt_ws", "mqtt_wss", "amqp", "amqps" for
    /// those on).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Create a demo product and device, and run the device in-process.
    /// Without --tls-cert, also make a local CA and a certificate for
    /// localhost in the data directory (once) and turn on HTTPS (8443),
    /// MQTTS (8883) and secure WebSocket (8884) unless given elsewhere.
    #[arg(long)]
    demo: bool,
    /// Refuse a device CONNECT whose signed `timestamp` is further than this
    /// from the server's clock (e.g. 15m), so a captured CONNECT cannot be
    /// replayed. Off by default, as on Alibaba (the C SDK signs a constant).
    #[arg(long, value_parser = parse_duration)]
    device_timestamp_window: Option<Duration>,
}

/// Parses `5s`, `800ms`, `2m` or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 5s, 800ms or 1m"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{s:?} is not a duration such as 5s, 800ms or 1m")),
    };
    if d.is_zero() {
        return Err("the duration must be greater than zero".to_owned());
    }
    Ok(d)
}

async fn bind(addr: SocketAddr, flag: &str) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("{addr} is already in use; choose another address with {flag}")
            }
            _ => format!("cannot listen on {addr} ({flag}): {e}"),
        })
}

/// Binds an optional listener; a demo default (`true`) that is taken falls
/// back to a free port.
async fn bind_optional(
    at: Option<(SocketAddr, bool)>,
    flag: &str,
) -> Result<Option<tokio::net::TcpListener>, String> {
    let Some((addr, defaulted)) = at else {
        return Ok(None);
    };
    match bind(addr, flag).await {
        Ok(l) => Ok(Some(l)),
        Err(_) if defaulted => bind(SocketAddr::new(addr.ip(), 0), flag).await.map(Some),
        Err(e) => Err(e),
    }
}

/// How to point each SDK at the demo CA.
fn print_ca_help(
    ca: &std::path::Path,
    https: Option<SocketAddr>,
    mqtts: Option<SocketAddr>,
    wss: Option<SocketAddr>,
    amqps: Option<SocketAddr>,
) {
    let ca = ca.display();
    say!("  demo CA      {ca} (trust it, and only for this server):");
    if let Some(addr) = https {
        say!("    curl                    curl --cacert {ca} https://{addr}/...");
        say!("    aliyunsdkcore (Python)  ALIBABA_CLOUD_CA_BUNDLE={ca}, endpoint {addr}");
        say!("    tea SDKs (Python)       RuntimeOptions(ca='{ca}'), endpoint {addr}");
        say!("    thingcall api           --endpoint https://{addr} --ca-file {ca}");
    }
    if let Some(addr) = mqtts {
        say!(
            "    linkkit (Python)        config_mqtt(port={}, secure='TLS', cadata=open('{ca}').read(), endpoint='{}')",
            addr.port(),
            addr.ip()
        );
        say!("    Node device SDK         brokerUrl mqtts://{addr}, NODE_EXTRA_CA_CERTS={ca}");
    }
    if let Some(addr) = wss {
        say!("    browsers, mqtt.js       wss://{addr}/mqtt (subprotocol mqtt)");
    }
    if let Some(addr) = amqps {
        say!(
            "    AMQP consumers          thingcall subscribe --consumer-group DEFAULT_GROUP --endpoint amqps://{addr} --ca-file {ca}"
        );
        say!(
            "                            (proton: SSL_CERT_FILE={ca}; rhea: NODE_EXTRA_CA_CERTS={ca})"
        );
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

pub(crate) fn run(a: ServeArgs) -> Outcome {
    let access_key = match (a.access_key_id.clone(), a.access_key_secret.clone()) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => {
            thingcall_core::AccessKeyId::new(id.as_str())
                .map_err(|e| format!("--access-key-id: {e}"))?;
            Some((id, Secret::new(secret)))
        }
        (None, None) => None,
        _ => {
            return Err(
                "give both --access-key-id and --access-key-secret (or neither)".to_owned(),
            );
        }
    };
    let secrets_key = match (
        a.secrets_key_file.clone(),
        std::env::var("THINGCALL_SECRETS_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(
                "give the secrets key once: --secrets-key-file or THINGCALL_SECRETS_KEY".into(),
            );
        }
        (Some(file), None) => SecretsKeySource::File(file),
        (None, Some(key)) => SecretsKeySource::Value(Secret::new(key)),
        (None, None) => SecretsKeySource::DataDir,
    };
    let store = match a.store.as_deref() {
        None | Some("") => StoreConfig::Sqlite,
        Some(url) => {
            StoreConfig::Postgres(PostgresUrl::parse(url).map_err(|e| format!("--store: {e}"))?)
        }
    };
    let cluster = match a.cluster.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(urls) => {
            if matches!(store, StoreConfig::Sqlite) {
                return Err(
                    "--cluster needs the PostgreSQL store that every node shares: give --store postgres://..."
                        .to_owned(),
                );
            }
            Some(ClusterConfig {
                nats: urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect(),
                node_id: a.node_id.clone(),
            })
        }
    };
    if a.amqp.is_some() && a.require_tls_devices {
        return Err(
            "--amqp is plaintext and --require-tls-devices refuses plaintext: use --amqps".into(),
        );
    }
    if (a.amqp.is_some() || a.amqps.is_some()) && cluster.is_some() {
        return Err("server-side subscription (--amqp, --amqps) does not run in a cluster yet: a consumer group's backlog is delivered by one node".into());
    }
    let (tls_files, demo_ca) = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => (Some(TlsFiles::new(cert, key)), None),
        _ if a.demo => {
            let made = thingcall_tls::demo::ensure(&a.data_dir).map_err(|e| e.to_string())?;
            (Some(made.files), Some(made.ca))
        }
        _ => (None, None),
    };
    if tls_files.is_none() {
        for (given, flag) in [
            (a.https.is_some(), "--https"),
            (a.mqtts.is_some(), "--mqtts"),
            (a.mqtt_wss.is_some(), "--mqtt-wss"),
            (a.amqps.is_some(), "--amqps"),
            (a.require_tls_devices, "--require-tls-devices"),
        ] {
            if given {
                return Err(format!(
                    "{flag} needs a certificate: give --tls-cert CHAIN.pem --tls-key KEY.pem"
                ));
            }
        }
    }
    let tls = match tls_files {
        Some(files) => Some(ServerTls::load(files).map_err(|e| format!("TLS: {e}"))?),
        None => None,
    };
    // The demo turns the TLS listeners on at well-known ports; one that is
    // taken falls back to a free port (the banner says which).
    let demo_default = |given: Option<SocketAddr>, port: u16| match given {
        Some(addr) => Some((addr, false)),
        None if demo_ca.is_some() => Some((SocketAddr::from(([127, 0, 0, 1], port)), true)),
        None => None,
    };
    let https_at = demo_default(a.https, 8443);
    let mqtts_at = demo_default(a.mqtts, 8883);
    let mqtt_wss_at = demo_default(a.mqtt_wss, 8884);
    let amqps_at = if cluster.is_some() {
        a.amqps.map(|at| (at, false))
    } else {
        demo_default(a.amqps, 5671)
    };
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let options = ServerOptions {
            config: ServerConfig {
                sync_timeout: a.sync_timeout,
                amqp: thingcall_amqp::AmqpConfig {
                    broker: thingcall_amqp::BrokerConfig {
                        retention: std::time::Duration::from_secs(
                            a.amqp_retention_hours.saturating_mul(3600),
                        ),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                ..ServerConfig::default()
            },
            gateway: thingcall_gateway::GatewayConfig {
                timestamp_window: a.device_timestamp_window,
                require_tls: a.require_tls_devices,
                max_connections: a.max_device_connections,
                ..Default::default()
            },
            data_dir: a.data_dir.clone(),
            store: store.clone(),
            secrets_key,
            access_key,
            cluster: cluster.clone(),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let server = match Server::open(options, Arc::clone(&clock)).await {
            Ok(s) => s,
            Err(e) => {
                // One line that names what is wrong (the database's host,
                // never its password); exit 1.
                eprintln!("error: {}", e.message());
                return Ok(ExitCode::from(1));
            }
        };
        let http = bind(a.http, "--http").await?;
        let mqtt = bind(a.mqtt, "--mqtt").await?;
        let https = bind_optional(https_at, "--https").await?;
        let mqtts = bind_optional(mqtts_at, "--mqtts").await?;
        let mqtt_ws = bind_optional(a.mqtt_ws.map(|at| (at, false)), "--mqtt-ws").await?;
        let mqtt_wss = bind_optional(mqtt_wss_at, "--mqtt-wss").await?;
        let amqp = bind_optional(a.amqp.map(|at| (at, false)), "--amqp").await?;
        let amqps = bind_optional(amqps_at, "--amqps").await?;
        let addr_of = |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
        let (http_addr, mqtt_addr) = (addr_of(&http)?, addr_of(&mqtt)?);
        let optional_addr = |l: &Option<tokio::net::TcpListener>| match l {
            Some(l) => addr_of(l).map(Some),
            None => Ok(None),
        };
        let https_addr = optional_addr(&https)?;
        let mqtts_addr = optional_addr(&mqtts)?;
        let mqtt_ws_addr = optional_addr(&mqtt_ws)?;
        let mqtt_wss_addr = optional_addr(&mqtt_wss)?;
        let amqp_addr = optional_addr(&amqp)?;
        let amqps_addr = optional_addr(&amqps)?;
        say!("thingcall {} serving", env!("CARGO_PKG_VERSION"));
        say!("  HTTP API     http://{http_addr}/");
        if let Some(addr) = https_addr {
            say!("  HTTPS API    https://{addr}/");
        }
        if tls.is_some() {
            say!("  MQTT devices {mqtt_addr} (plain, or TLS told by the first byte)");
        } else {
            say!("  MQTT devices {mqtt_addr}");
        }
        if let Some(addr) = mqtts_addr {
            say!("  MQTT/TLS     {addr}");
        }
        if let Some(addr) = mqtt_ws_addr {
            say!("  MQTT/WS      ws://{addr}/mqtt");
        }
        if let Some(addr) = mqtt_wss_addr {
            say!("  MQTT/WSS     wss://{addr}/mqtt");
        }
        if let Some(addr) = amqp_addr {
            say!("  AMQP         amqp://{addr} (plaintext: development only)");
        }
        if let Some(addr) = amqps_addr {
            say!("  AMQP/TLS     amqps://{addr}");
        }
        if let Some(t) = &tls {
            say!(
                "  certificate  {} (reloaded on SIGHUP and when it changes)",
                t.files().cert.display()
            );
        }
        if a.require_tls_devices {
            say!("  devices      TLS required: plaintext logins are refused");
        }
        match &store {
            StoreConfig::Sqlite => say!("  store        SQLite in {}", a.data_dir.display()),
            StoreConfig::Postgres(url) => say!("  store        {url}"),
        }
        if let (Some(c), Some(node)) = (&cluster, server.node_id()) {
            say!("  cluster      node {node} on {}", c.servers_shown());
        }
        if let Some(k) = server.generated_key() {
            say!("  generated AccessKey (shown only now, kept in the store):");
            say!("    AccessKeyId     {}", k.id);
            say!("    AccessKeySecret {}", k.secret.expose());
        }
        if let Some(path) = &a.ready_file {
            let mut ready = serde_json::json!({"http": http_addr.to_string(), "mqtt": mqtt_addr.to_string()});
            for (key, addr) in [
                ("https", https_addr),
                ("mqtts", mqtts_addr),
                ("mqtt_ws", mqtt_ws_addr),
                ("mqtt_wss", mqtt_wss_addr),
                ("amqp", amqp_addr),
                ("amqps", amqps_addr),
            ] {
                if let Some(addr) = addr {
                    ready[key] = serde_json::Value::String(addr.to_string());
                }
            }
            std::fs::write(path, ready.to_string())
                .map_err(|e| format!("--ready-file {}: {e}", path.display()))?;
        }
        if let Some(ca) = &demo_ca {
            print_ca_help(ca, https_addr, mqtts_addr, mqtt_wss_addr, amqps_addr);
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if a.demo {
            let demo = server.ensure_demo().await?;
            let mut stop = stop_rx.clone();
            // A server that refuses plaintext devices gets a demo device on
            // TLS, trusting the demo CA.
            let transport = match (&demo_ca, a.require_tls_devices) {
                (Some(ca), true) => thingcall_gateway::client::Transport {
                    tls: Some(
                        thingcall_gateway::client::tls_trusting(ca).map_err(|e| e.to_string())?,
                    ),
                    websocket: false,
                },
                (None, true) => {
                    say!("  note: the demo device logs in without TLS and will be refused (--require-tls-devices with your own certificate)");
                    Default::default()
                }
                _ => Default::default(),
            };
            server
                .run_demo_device_over(&demo, mqtt_addr, transport, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            say!(
                "  demo device  {}/{} (secret {})",
                demo.product_key,
                demo.device_name,
                demo.device_secret.expose()
            );
            if let Some(line) = demo_curl(
                http_addr,
                &demo,
                a.access_key_id.as_deref(),
                a.access_key_secret.as_deref(),
                server.generated_key(),
                clock.as_ref(),
            ) {
                say!("  try it (signed now: valid for 15 minutes, once):");
                say!("    {line}");
            }
        }
        let listeners = Listeners {
            http,
            https,
            mqtt,
            mqtts,
            mqtt_ws,
            mqtt_wss,
            amqp,
            amqps,
            tls,
        };
        server
            .serve_on(listeners, shutdown_signal())
            .await
            .map_err(|e| e.to_string())?;
        let _ = stop_tx.send(true);
        Ok(ExitCode::SUCCESS)
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// A signed `curl` line that calls the demo's sync service.
fn demo_curl(
    http: SocketAddr,
    demo: &thingcall_server::Demo,
    id: Option<&str>,
    secret: Option<&str>,
    generated: Option<&thingcall_server::GeneratedKey>,
    clock: &dyn Clock,
) -> Option<String> {
    let (id, secret) = match (id, secret, generated) {
        (Some(i), Some(s), _) => (i.to_owned(), s.to_owned()),
        (_, _, Some(g)) => (g.id.clone(), g.secret.expose().to_owned()),
        _ => return None,
    };
    let now = clock.now();
    let nonce = format!("demo-{}", now.get());
    let mut params: Vec<(String, String)> = [
        ("Action", "InvokeThingService"),
        ("Version", "2018-01-20"),
        ("Format", "JSON"),
        ("AccessKeyId", id.as_str()),
        ("SignatureMethod", v1::SIGNATURE_METHOD),
        ("SignatureVersion", v1::SIGNATURE_VERSION),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", &now.to_iso8601_seconds()),
        ("ProductKey", demo.product_key.as_str()),
        ("DeviceName", demo.device_name.as_str()),
        ("Identifier", demo.sync_service.as_str()),
        ("Args", r#"{"Offset":1.5}"#),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signature = v1::sign("GET", &params, &secret);
    params.push(("Signature".to_owned(), signature));
    let query = encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Some(format!("curl -s 'http://{http}/?{query}'"))
}
