//! `thingcall device credentials`.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use thingcall_core::{DeviceName, ProductKey};
use thingcall_sign::SignMethod;
use thingcall_sign::device::{MqttClientId, password, password_content, username};

use super::Outcome;
use super::api::DeviceAction;

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// Print MQTT credentials for a device: client_id=, username=, password=.
    Credentials(CredentialsArgs),
    /// Run simulated devices that answer every service of a thing model.
    Simulate(SimulateArgs),
    /// Register a device, or N devices with --count (RegisterDevice).
    Register(super::api::RegisterArgs),
    /// Show a device (QueryDeviceDetail).
    Detail(Target),
    /// Show a device's status (GetDeviceStatus).
    Status(Target),
    /// Delete a device (DeleteDevice).
    Delete(Target),
    /// Disable a device: it is disconnected and cannot connect (DisableThing).
    Disable(Target),
    /// Enable a disabled device (EnableThing).
    Enable(Target),
}

/// The API to call and the device.
#[derive(Args)]
pub(crate) struct Target {
    #[command(flatten)]
    api: super::api::ApiArgs,
    #[command(flatten)]
    device: super::api::DeviceArgs,
}

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

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Method {
    Hmacsha1,
    Hmacsha256,
    Hmacmd5,
}

#[derive(Args)]
pub(crate) struct CredentialsArgs {
    /// The device's ProductKey.
    #[arg(long)]
    product_key: String,
    /// The device's DeviceName.
    #[arg(long)]
    device_name: String,
    /// The device's DeviceSecret.
    #[arg(long)]
    device_secret: String,
    /// The bare client id (default `PK.DN`).
    #[arg(long)]
    client_id: Option<String>,
    /// A timestamp to sign (any digits; omitted from the password when absent).
    #[arg(long)]
    timestamp: Option<String>,
    /// The password HMAC.
    #[arg(long, value_enum, default_value = "hmacsha256")]
    sign_method: Method,
    /// 2 for TLS, 3 for plain TCP.
    #[arg(long, default_value = "3", value_parser = ["2", "3"])]
    secure_mode: String,
    /// Ask for extended RRPC (`ext=1`: sync calls arrive on /ext/rrpc/...).
    #[arg(long)]
    ext: bool,
    /// Ask for automatic subscription to system topics (`_ss=1`).
    #[arg(long)]
    ss: bool,
}

impl DeviceCommand {
    pub(crate) fn run(self) -> Outcome {
        match self {
            DeviceCommand::Credentials(a) => credentials(a),
            DeviceCommand::Simulate(a) => crate::cmd::simulate::run(a),
            DeviceCommand::Register(a) => super::api::register(a),
            DeviceCommand::Detail(t) => {
                super::api::device_action(DeviceAction::Detail, t.api, t.device)
            }
            DeviceCommand::Status(t) => {
                super::api::device_action(DeviceAction::Status, t.api, t.device)
            }
            DeviceCommand::Delete(t) => {
                super::api::device_action(DeviceAction::Delete, t.api, t.device)
            }
            DeviceCommand::Disable(t) => {
                super::api::device_action(DeviceAction::Disable, t.api, t.device)
            }
            DeviceCommand::Enable(t) => {
                super::api::device_action(DeviceAction::Enable, t.api, t.device)
            }
        }
    }
}

fn credentials(a: CredentialsArgs) -> Outcome {
    ProductKey::new(a.product_key.as_str()).map_err(|e| format!("--product-key: {e}"))?;
    DeviceName::new(a.device_name.as_str()).map_err(|e| format!("--device-name: {e}"))?;
    if let Some(ts) = &a.timestamp
        && (ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("--timestamp must be decimal digits".to_owned());
    }
    let bare = a
        .client_id
        .clone()
        .unwrap_or_else(|| format!("{}.{}", a.product_key, a.device_name));
    if bare.is_empty()
        || bare.contains(['|', ','])
        || bare.len() > thingcall_sign::device::MAX_CLIENT_ID_LEN
    {
        return Err("--client-id must be 1-64 characters without '|' or ','".to_owned());
    }
    let method = match a.sign_method {
        Method::Hmacsha1 => SignMethod::HmacSha1,
        Method::Hmacsha256 => SignMethod::HmacSha256,
        Method::Hmacmd5 => SignMethod::HmacMd5,
    };
    let mut client_id = MqttClientId::new(bare.as_str())
        .with("securemode", a.secure_mode.as_str())
        .with("signmethod", method.as_str());
    if let Some(ts) = &a.timestamp {
        client_id = client_id.with("timestamp", ts.as_str());
    }
    if a.ext {
        client_id = client_id.with("ext", "1");
    }
    if a.ss {
        client_id = client_id.with("_ss", "1");
    }
    let content = password_content(
        &bare,
        &a.device_name,
        &a.product_key,
        a.timestamp.as_deref(),
    );
    println!("client_id={client_id}");
    println!("username={}", username(&a.device_name, &a.product_key));
    println!("password={}", password(method, &a.device_secret, &content));
    Ok(ExitCode::SUCCESS)
}
