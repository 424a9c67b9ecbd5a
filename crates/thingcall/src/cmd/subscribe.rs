//! `thingcall subscribe`: a consumer of server-side subscription. Prints
//! each message of a consumer group as one JSON line and accepts it once
//! printed, so a message is never lost to a crash between the two.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use thingcall_amqp::client::{SubscribeTo, subscribe, tls_config};
use thingcall_client::Credentials;

use super::Outcome;

/// `thingcall subscribe --consumer-group ID`.
#[derive(Args)]
pub(crate) struct SubscribeArgs {
    /// The consumer group (DEFAULT_GROUP, or an id from CreateConsumerGroup).
    #[arg(long, value_name = "ID")]
    consumer_group: String,
    /// The AMQP endpoint: amqps://HOST:5671, or amqp://HOST:PORT for a
    /// local plaintext endpoint.
    #[arg(long, default_value = "amqps://127.0.0.1:5671")]
    endpoint: String,
    /// Trust the CA certificate(s) in this PEM file (else the Mozilla roots).
    #[arg(long, value_name = "CA.pem", env = "ALIBABA_CLOUD_CA_BUNDLE")]
    ca_file: Option<std::path::PathBuf>,
    /// The AccessKey id (else ALIBABA_CLOUD_ACCESS_KEY_ID, else ~/.aliyun/config.json).
    #[arg(long, requires = "access_key_secret")]
    access_key_id: Option<String>,
    /// The AccessKey secret.
    #[arg(long, requires = "access_key_id")]
    access_key_secret: Option<String>,
    /// The client id shown by QueryConsumerGroupStatus.
    #[arg(long)]
    client_id: Option<String>,
    /// The instance id, for an instance that has one.
    #[arg(long)]
    iot_instance_id: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
}

pub(crate) fn run(a: SubscribeArgs) -> Outcome {
    let explicit = match (&a.access_key_id, &a.access_key_secret) {
        (Some(id), Some(secret)) => Some(Credentials::new(id.as_str(), secret.as_str())),
        _ => None,
    };
    let credentials = Credentials::resolve(explicit).map_err(|e| e.to_string())?;
    let tls = if a.endpoint.starts_with("amqps://") {
        Some(tls_config(a.ca_file.as_deref()).map_err(|e| format!("--ca-file: {e}"))?)
    } else {
        None
    };
    let to = SubscribeTo {
        endpoint: a.endpoint.clone(),
        tls,
        access_key_id: credentials.access_key_id.clone(),
        access_key_secret: credentials.access_key_secret.clone(),
        consumer_group_id: a.consumer_group.clone(),
        client_id: a
            .client_id
            .clone()
            .unwrap_or_else(|| format!("thingcall-subscribe-{}", std::process::id())),
        iot_instance_id: a.iot_instance_id.clone(),
        credit: 100,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut printed = 0u64;
    let mut failed = None;
    let outcome = runtime.block_on(subscribe(&to, |m| {
        let body = serde_json::from_slice::<serde_json::Value>(&m.body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&m.body).into_owned())
        });
        let line = serde_json::json!({
            "topic": m.topic,
            "messageId": m.message_id,
            "generateTime": m.generate_time,
            "deliveryCount": m.delivery_count,
            "body": body,
        });
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            // Not printed: stop before accepting anything else.
            failed = Some(e);
            return false;
        }
        printed += 1;
        a.count.is_none_or(|n| printed < n)
    }));
    match failed {
        // The reader went away (`thingcall subscribe ... | head -3`): the
        // message that could not be printed was not accepted, so the group
        // keeps it; the command ends quietly, as every command does.
        Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
        Some(e) => return Err(format!("cannot print a message: {e}")),
        None => {}
    }
    outcome?;
    Ok(ExitCode::SUCCESS)
}
