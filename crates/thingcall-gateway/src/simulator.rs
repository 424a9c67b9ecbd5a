//! A simulated device that answers service calls from its thing model.
//!
//! It connects over TCP as a real device would (one-device-one-secret
//! credentials), subscribes to its service topics, and answers every call
//! with code 200 and `data` generated from the service's `outputData`,
//! valid against the model. A configurable share of calls fails with code
//! 400, and each reply can be delayed. Failures and generated data are
//! deterministic for a given seed and message id.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter,
};
use thingcall_core::{AlinkId, AlinkReply, AlinkRequest, Secret, Topic};
use thingcall_transport::DeviceKey;
use thingcall_tsl::{CompiledModel, example};
use tokio::sync::mpsc;

use crate::client::{self, ClientError, CredentialOptions};

/// How a simulated device behaves.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// The gateway, `host:port`.
    pub server: String,
    /// Who the device is.
    pub device: DeviceKey,
    /// Its secret.
    pub device_secret: Secret,
    /// Its thing model.
    pub model: Arc<CompiledModel>,
    /// Delay before each reply.
    pub latency: Duration,
    /// Share of calls answered with code 400 (0.0-1.0).
    pub fail_rate: f64,
    /// Ask for `/ext/rrpc/` RRPC (`ext=1`), as linkkit and the C SDK do.
    pub ext: bool,
    /// Rely on `_ss=1` instead of subscribing.
    pub auto_subscribe: bool,
    /// MQTT keepalive, seconds.
    pub keep_alive: u16,
    /// Seed for generated data and failures.
    pub seed: u64,
    /// Plain TCP (the default), TLS, WebSocket.
    pub transport: client::Transport,
}

impl SimulatorConfig {
    /// A device that answers at once and never fails, asks for
    /// `/ext/rrpc/` RRPC, relies on `_ss=1`, keeps alive every 60 s and
    /// uses seed 0. Override fields with struct-update syntax.
    pub fn new(
        server: impl Into<String>,
        device: DeviceKey,
        device_secret: Secret,
        model: Arc<CompiledModel>,
    ) -> SimulatorConfig {
        SimulatorConfig {
            server: server.into(),
            device,
            device_secret,
            model,
            latency: Duration::ZERO,
            fail_rate: 0.0,
            ext: true,
            auto_subscribe: true,
            keep_alive: 60,
            seed: 0,
            transport: client::Transport::default(),
        }
    }
}

/// One answered call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The device.
    pub device: DeviceKey,
    /// The service.
    pub identifier: String,
    /// The Alink id.
    pub id: String,
    /// `async`, `rrpc` or `ext-rrpc`.
    pub via: &'static str,
    /// The reply code.
    pub code: i64,
}

/// Why the simulator stopped.
#[derive(Debug)]
pub enum SimError {
    /// The connection failed.
    Client(ClientError),
    /// The gateway refused the CONNECT.
    Refused(ConnectReturnCode),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::Client(e) => write!(f, "{e}"),
            SimError::Refused(code) => write!(f, "CONNECT refused: {code:?}"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<ClientError> for SimError {
    fn from(e: ClientError) -> SimError {
        SimError::Client(e)
    }
}

fn mix(seed: u64, salt: &str) -> u64 {
    // FNV-1a over the salt, folded with the seed and finalised (SplitMix64).
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in salt.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// Runs one device until `shutdown` completes or the connection fails.
/// Each answered call is sent to `calls`.
pub async fn run(
    cfg: SimulatorConfig,
    calls: mpsc::UnboundedSender<CallRecord>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let creds = client::credentials(
        &cfg.device,
        cfg.device_secret.expose(),
        CredentialOptions {
            ext: cfg.ext,
            auto_subscribe: cfg.auto_subscribe,
            ..CredentialOptions::default()
        },
    );
    let (ack, mut reader, mut writer) = client::connect_over(
        &cfg.server,
        &cfg.transport,
        client::connect_packet(&creds, cfg.keep_alive, true),
    )
    .await?;
    if ack.code != ConnectReturnCode::Success {
        return Err(SimError::Refused(ack.code));
    }
    let (pk, dn) = (
        cfg.device.product_key.as_str(),
        cfg.device.device_name.as_str(),
    );
    if !cfg.auto_subscribe {
        let mut filters = vec![
            format!("/sys/{pk}/{dn}/thing/service/+"),
            format!("/sys/{pk}/{dn}/thing/service/property/set"),
            format!("/sys/{pk}/{dn}/thing/service/property/get"),
            format!("/sys/{pk}/{dn}/rrpc/request/+"),
        ];
        if cfg.ext {
            filters.push(format!("/ext/rrpc/+/sys/{pk}/{dn}/thing/service/+"));
        }
        let filters: Vec<SubscribeFilter> = filters
            .into_iter()
            .map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce))
            .collect();
        writer
            .send(&Packet::Subscribe(Subscribe::new_many(filters)))
            .await?;
    }

    // One writer task owns the socket's write half, so delayed replies can
    // go out while the reader keeps reading.
    let (tx, mut rx) = mpsc::unbounded_channel::<Packet>();
    let write_task = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if writer.send(&p).await.is_err() {
                break;
            }
        }
        let _ = writer.send(&Packet::Disconnect).await;
    });
    let ping_every = Duration::from_secs(u64::from(cfg.keep_alive.max(2)) / 2);
    let mut ping = tokio::time::interval(ping_every);
    ping.tick().await;
    tokio::pin!(shutdown);
    let cfg = Arc::new(cfg);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            _ = ping.tick() => { let _ = tx.send(Packet::PingReq); }
            packet = reader.recv() => match packet {
                Ok(Packet::Publish(p)) => {
                    if p.qos == QoS::AtLeastOnce {
                        let _ = tx.send(Packet::PubAck(PubAck::new(p.pkid)));
                    }
                    answer(&cfg, p, &tx, &calls);
                }
                Ok(_) => {}
                Err(e) => break Err(SimError::Client(e)),
            }
        }
    };
    drop(tx);
    let _ = write_task.await;
    result
}

fn answer(
    cfg: &Arc<SimulatorConfig>,
    publish: Publish,
    tx: &mpsc::UnboundedSender<Packet>,
    calls: &mpsc::UnboundedSender<CallRecord>,
) {
    let request = AlinkRequest::from_slice(&publish.payload).ok();
    let (identifier, reply_topic, via) = match Topic::parse(&publish.topic) {
        Ok(Topic::ExtRrpc { identifier, .. }) => {
            (identifier.into_string(), publish.topic.clone(), "ext-rrpc")
        }
        Ok(Topic::RrpcRequest {
            product_key,
            device_name,
            message_id,
        }) => {
            let id = request
                .as_ref()
                .and_then(|r| r.service_identifier())
                .unwrap_or_default()
                .to_owned();
            (
                id,
                Topic::RrpcResponse {
                    product_key,
                    device_name,
                    message_id,
                }
                .to_string(),
                "rrpc",
            )
        }
        Ok(Topic::ServiceRequest { identifier, .. }) => (
            identifier.into_string(),
            format!("{}_reply", publish.topic),
            "async",
        ),
        Ok(Topic::PropertySet { .. }) => (
            "set".to_owned(),
            format!("{}_reply", publish.topic),
            "async",
        ),
        Ok(Topic::PropertyGet { .. }) => (
            "get".to_owned(),
            format!("{}_reply", publish.topic),
            "async",
        ),
        _ => return,
    };
    let id = request
        .as_ref()
        .map_or_else(String::new, |r| r.id.as_str().to_owned());
    let service = cfg.model.model().service(&identifier).cloned();
    let roll = mix(cfg.seed, &id) as f64 / u64::MAX as f64;
    let reply = match service {
        None => AlinkReply {
            id: AlinkId::new(id.clone()),
            code: 460,
            data: serde_json::Value::Null,
            message: Some("unknown service".to_owned()),
        },
        Some(_) if roll < cfg.fail_rate => AlinkReply {
            id: AlinkId::new(id.clone()),
            code: 400,
            data: serde_json::Value::Null,
            message: Some("request error".to_owned()),
        },
        Some(s) => AlinkReply::success(
            AlinkId::new(id.clone()),
            example::example_output(&s, mix(cfg.seed, &id)),
        ),
    };
    let record = CallRecord {
        device: cfg.device.clone(),
        identifier,
        id,
        via,
        code: reply.code,
    };
    let packet = Packet::Publish(Publish::new(reply_topic, QoS::AtMostOnce, reply.to_vec()));
    let latency = cfg.latency;
    let (tx, calls) = (tx.clone(), calls.clone());
    if latency.is_zero() {
        let _ = tx.send(packet);
        let _ = calls.send(record);
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(latency).await;
            let _ = tx.send(packet);
            let _ = calls.send(record);
        });
    }
}
