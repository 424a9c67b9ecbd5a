//! `thingcall device credentials`.

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use thingcall_core::{DeviceName, ProductKey};
use thingcall_sign::SignMethod;
use thingcall_sign::device::{MqttClientId, password, password_content, username};

use super::Outcome;
use super::api::DeviceAction;
use super::simulate::SimulateArgs;

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
            DeviceCommand::Simulate(a) => super::simulate::run(a),
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
    out!("client_id={client_id}");
    out!("username={}", username(&a.device_name, &a.product_key));
    out!("password={}", password(method, &a.device_secret, &content));
    Ok(ExitCode::SUCCESS)
}
