//! `thingcall device simulate`: devices that answer from a thing model.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use thingcall_core::{DeviceName, ProductKey, Secret};
use thingcall_gateway::client;
use thingcall_gateway::simulator::{self, SimError, SimulatorConfig};
use thingcall_transport::DeviceKey;
use thingcall_tsl::{CompiledModel, check_str};
use tokio::sync::{mpsc, watch};

use super::Outcome;

/// The devices to simulate and how they answer.
#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// The MQTT gateway, HOST:PORT.
    #[arg(long)]
    pub(crate) mqtt: String,
    /// The devices' ProductKey.
    #[arg(long)]
    pub(crate) product_key: String,
    /// The DeviceName (with --count N: the prefix of DN-1 ... DN-N).
    #[arg(long, required_unless_present = "secrets_file")]
    pub(crate) device_name: Option<String>,
    /// The DeviceSecret (with --count N: shared by every device).
    #[arg(long, required_unless_present = "secrets_file")]
    pub(crate) device_secret: Option<String>,
    /// Per-device secrets: the JSON that `thingcall device register --count N --output json` prints.
    #[arg(long, conflicts_with = "device_secret")]
    pub(crate) secrets_file: Option<std::path::PathBuf>,
    /// The thing model (TSL JSON) to answer from.
    #[arg(long)]
    pub(crate) tsl: std::path::PathBuf,
    /// Delay before each reply, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub(crate) latency: u64,
    /// Share of calls answered with code 400, 0.0-1.0.
    #[arg(long, default_value_t = 0.0)]
    pub(crate) fail_rate: f64,
    /// Ask for extended RRPC topics (ext=1), as linkkit does.
    #[arg(long)]
    pub(crate) ext: bool,
    /// Rely on automatic subscription (_ss=1) instead of subscribing.
    #[arg(long)]
    pub(crate) ss: bool,
    /// Simulate DN-1 ... DN-N instead of DN.
    #[arg(long)]
    pub(crate) count: Option<u32>,
    /// Seed for generated replies and failures.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Connect over TLS (to --mqtt, or to an MQTTS or WSS port), trusting
    /// the CA in --ca-file.
    #[arg(long, requires = "ca_file")]
    pub(crate) tls: bool,
    /// Speak MQTT over WebSocket (ws://HOST:PORT/mqtt; wss:// with --tls).
    #[arg(long)]
    pub(crate) websocket: bool,
    /// The CA certificate(s) to trust, PEM (`serve --demo` writes
    /// DATA_DIR/tls/ca.pem).
    #[arg(long, value_name = "CA.pem")]
    pub(crate) ca_file: Option<std::path::PathBuf>,
}

pub(crate) fn run(a: SimulateArgs) -> Outcome {
    if !(0.0..=1.0).contains(&a.fail_rate) {
        return Err("--fail-rate must be between 0 and 1".to_owned());
    }
    let product_key =
        ProductKey::new(a.product_key.as_str()).map_err(|e| format!("--product-key: {e}"))?;
    // Every device with its secret: from --secrets-file, or DN (DN-1 ... DN-N
    // with --count) sharing --device-secret.
    let secrets: Vec<(String, String)> = match (&a.secrets_file, &a.device_secret) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let list: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
            list.as_array()
                .ok_or_else(|| format!("{} must be a JSON list", path.display()))?
                .iter()
                .map(
                    |d| match (d["DeviceName"].as_str(), d["DeviceSecret"].as_str()) {
                        (Some(n), Some(s)) => Ok((n.to_owned(), s.to_owned())),
                        _ => Err(format!(
                            "{}: every item needs DeviceName and DeviceSecret",
                            path.display()
                        )),
                    },
                )
                .collect::<Result<_, _>>()?
        }
        (None, Some(secret)) => {
            let name = a.device_name.clone().ok_or("give --device-name")?;
            match a.count {
                None => vec![(name, secret.clone())],
                Some(0) => return Err("--count must be at least 1".to_owned()),
                Some(n) => (1..=n)
                    .map(|i| (format!("{name}-{i}"), secret.clone()))
                    .collect(),
            }
        }
        (None, None) => return Err("give --device-secret or --secrets-file".to_owned()),
    };
    let mut devices = Vec::with_capacity(secrets.len());
    for (name, secret) in &secrets {
        let dn =
            DeviceName::new(name.as_str()).map_err(|e| format!("device name {name:?}: {e}"))?;
        devices.push((DeviceKey::new(product_key.clone(), dn), secret.clone()));
    }
    let text = std::fs::read_to_string(&a.tsl)
        .map_err(|e| format!("cannot read {}: {e}", a.tsl.display()))?;
    let model = check_str(&text).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!(
            "{} is not a valid thing model:\n{}",
            a.tsl.display(),
            lines.join("\n")
        )
    })?;
    let model = Arc::new(CompiledModel::compile(model).map_err(|e| e.to_string())?);

    let transport = simulator_transport(a.tls, a.websocket, a.ca_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (calls_tx, mut calls) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        let over = match (a.tls, a.websocket) {
            (false, false) => "MQTT",
            (true, false) => "MQTT over TLS",
            (false, true) => "MQTT over WebSocket",
            (true, true) => "MQTT over secure WebSocket",
        };
        out!(
            "simulating {} device(s) against {} ({over})",
            devices.len(),
            a.mqtt
        );
        for (device, secret) in devices {
            let cfg = SimulatorConfig {
                latency: Duration::from_millis(a.latency),
                fail_rate: a.fail_rate,
                ext: a.ext,
                auto_subscribe: a.ss,
                seed: a.seed,
                transport: transport.clone(),
                ..SimulatorConfig::new(
                    a.mqtt.clone(),
                    device,
                    Secret::new(secret),
                    Arc::clone(&model),
                )
            };
            tasks.push(tokio::spawn(device_loop(
                cfg,
                calls_tx.clone(),
                stop_rx.clone(),
            )));
        }
        drop(calls_tx);
        let printer = tokio::spawn(async move {
            while let Some(c) = calls.recv().await {
                out!(
                    "{} {} id={} via={} code={}",
                    c.device,
                    c.identifier,
                    c.id,
                    c.via,
                    c.code
                );
            }
        });
        let all_done = async {
            let mut failed = 0;
            for t in tasks {
                if !matches!(t.await, Ok(true)) {
                    failed += 1;
                }
            }
            failed
        };
        tokio::pin!(all_done);
        let failed = tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                let _ = stop_tx.send(true);
                (&mut all_done).await
            }
            failed = &mut all_done => failed,
        };
        let _ = printer.await;
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    })
}

/// Runs one device, reconnecting after network errors; gives up on a
/// refused CONNECT. Returns whether it ended cleanly (by Ctrl-C).
async fn device_loop(
    cfg: SimulatorConfig,
    calls: mpsc::UnboundedSender<simulator::CallRecord>,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut backoff = Duration::from_millis(500);
    loop {
        let mut stop_once = stop.clone();
        let stopped = async move {
            let _ = stop_once.wait_for(|s| *s).await;
        };
        match simulator::run(cfg.clone(), calls.clone(), stopped).await {
            Ok(()) => return true,
            Err(SimError::Refused(code)) => {
                note!(
                    "{}: CONNECT refused ({code:?}); is the device registered with this secret?",
                    cfg.device
                );
                return false;
            }
            Err(e) => note!("{}: {e}; reconnecting in {backoff:?}", cfg.device),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return true,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// How the simulated devices connect.
fn simulator_transport(
    tls: bool,
    websocket: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<client::Transport, String> {
    let tls = match (tls, ca_file) {
        (true, Some(ca)) => Some(client::tls_trusting(ca).map_err(|e| format!("--ca-file: {e}"))?),
        (true, None) => return Err("--tls needs --ca-file CA.pem".to_owned()),
        (false, Some(_)) => return Err("--ca-file is for --tls".to_owned()),
        (false, None) => None,
    };
    Ok(client::Transport { tls, websocket })
}
