//! Commands that call an API server: `invoke`, `product ...`,
//! `device register|detail|...`, `tsl import|publish|get`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use thingcall_client::actions::*;
use thingcall_client::{Client, Credentials, SignatureVersion};
use thingcall_core::{DeviceName, DeviceRef, Identifier, ProductKey, Qos};
use thingcall_wire::{Action, Data, Format};

use super::Outcome;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Sig {
    V1,
    V3,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Wire {
    Json,
    Xml,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub(crate) enum Output {
    Table,
    Json,
}

/// Where and how to call the API.
#[derive(Args, Clone)]
pub(crate) struct ApiArgs {
    /// The API endpoint URL (http://127.0.0.1:8080, https://...).
    #[arg(long, conflicts_with = "region")]
    endpoint: Option<String>,
    /// An Alibaba Cloud region: the endpoint is https://iot.{region}.aliyuncs.com.
    #[arg(long)]
    region: Option<String>,
    /// The AccessKey id (else ALIBABA_CLOUD_ACCESS_KEY_ID, else ~/.aliyun/config.json).
    #[arg(long, requires = "access_key_secret")]
    access_key_id: Option<String>,
    /// The AccessKey secret.
    #[arg(long, requires = "access_key_id")]
    access_key_secret: Option<String>,
    /// The signature version.
    #[arg(long, value_enum, default_value = "v1")]
    signature: Sig,
    /// The response format asked of the server.
    #[arg(long, value_enum, default_value = "json")]
    format: Wire,
    /// How to print results: a table for people, JSON for scripts.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Trust the CA certificate(s) in this PEM file for an https://
    /// endpoint (or ALIBABA_CLOUD_CA_BUNDLE, as the official Python SDK).
    #[arg(long, value_name = "CA.pem", env = "ALIBABA_CLOUD_CA_BUNDLE")]
    ca_file: Option<std::path::PathBuf>,
    /// INSECURE: do not check the server's certificate at all. Anyone on
    /// the path can read and change the traffic. Local throw-away servers
    /// only; prefer --ca-file.
    #[arg(long)]
    insecure: bool,
}

impl ApiArgs {
    fn client(&self) -> Result<Client, String> {
        if self.endpoint.is_none() && self.region.is_none() {
            return Err("give --endpoint URL or --region R".to_owned());
        }
        let mut b = Client::builder()
            .signature(match self.signature {
                Sig::V1 => SignatureVersion::V1,
                Sig::V3 => SignatureVersion::V3,
            })
            .format(match self.format {
                Wire::Json => Format::Json,
                Wire::Xml => Format::Xml,
            });
        if let Some(r) = &self.region {
            b = b.region(r.as_str());
        }
        if let Some(url) = &self.endpoint {
            b = b.endpoint_url(url).map_err(|e| e.to_string())?;
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.access_key_secret) {
            b = b.credentials(Credentials::new(id.as_str(), secret.as_str()));
        }
        if let Some(ca) = self.ca_file.as_ref().filter(|_| !self.insecure) {
            b = b.ca_file(ca).map_err(|e| format!("--ca-file: {e}"))?;
        }
        if self.insecure {
            note!(
                "WARNING: --insecure: the server's TLS certificate is NOT checked; anyone on the path can read and change this traffic"
            );
            b = b.danger_accept_invalid_certs(true);
        }
        b.build().map_err(|e| e.to_string())
    }
}

/// Which device: `--iot-id`, or `--product-key` with `--device-name`.
#[derive(Args, Clone)]
pub(crate) struct DeviceArgs {
    /// The device's IotId.
    #[arg(long, conflicts_with_all = ["product_key", "device_name"])]
    iot_id: Option<String>,
    /// The device's ProductKey.
    #[arg(long, requires = "device_name")]
    product_key: Option<String>,
    /// The device's DeviceName.
    #[arg(long, requires = "product_key")]
    device_name: Option<String>,
}

impl DeviceArgs {
    fn device_ref(&self) -> Result<DeviceRef, String> {
        if self.iot_id.is_none() && self.product_key.is_none() {
            return Err("give --iot-id ID, or --product-key PK and --device-name DN".to_owned());
        }
        DeviceRef::from_params(
            self.iot_id.as_deref(),
            self.product_key.as_deref(),
            self.device_name.as_deref(),
        )
        .map_err(|e| e.to_string())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// Calls one action; prints `CODE: message` and exits 1 on an API error.
fn call<A: Action>(api: &ApiArgs, action: &A) -> Result<Result<A::Response, ExitCode>, String> {
    let client = api.client()?;
    let result = runtime()?.block_on(client.call(action));
    Ok(result.map_err(|e| {
        match e.code() {
            Some(code) => note!("{code}: {}", e.message()),
            None => note!("error: {}", e.message()),
        }
        if let Some(rid) = e.request_id() {
            note!("RequestId: {rid}");
        }
        ExitCode::from(1)
    }))
}

/// Prints `rows` as an aligned two-column table, or `value` as JSON.
fn show(output: Output, rows: &[(&str, String)], value: Value) {
    match output {
        Output::Json => out!("{value}"),
        Output::Table => {
            let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in rows {
                out!("{k:<width$}  {v}");
            }
        }
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

macro_rules! ok_or_exit {
    ($e:expr) => {
        match $e? {
            Ok(v) => v,
            Err(code) => return Ok(code),
        }
    };
}

/// `thingcall invoke`.
#[derive(Args)]
pub(crate) struct InvokeArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(flatten)]
    device: DeviceArgs,
    /// The service identifier.
    #[arg(long)]
    identifier: String,
    /// The arguments, a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Delivery QoS.
    #[arg(long, value_parser = ["0", "1"])]
    qos: Option<String>,
}

pub(crate) fn invoke(a: InvokeArgs) -> Outcome {
    let device = a.device.device_ref()?;
    let identifier =
        Identifier::new(a.identifier.as_str()).map_err(|e| format!("--identifier: {e}"))?;
    serde_json::from_str::<Value>(&a.args).map_err(|e| format!("--args is not JSON: {e}"))?;
    let qos = a.qos.as_deref().map(|q| {
        if q == "1" {
            Qos::AtLeastOnce
        } else {
            Qos::AtMostOnce
        }
    });
    let req = InvokeThingService {
        qos,
        ..InvokeThingService::new(device, identifier, a.args.clone())
    };
    let Data(data) = ok_or_exit!(call(&a.api, &req));
    let result_json = data
        .result
        .as_deref()
        .and_then(|r| serde_json::from_str::<Value>(r).ok());
    match a.api.output {
        Output::Json => out!(
            "{}",
            json!({"MessageId": data.message_id, "Result": result_json})
        ),
        Output::Table => {
            if let Some(id) = &data.message_id {
                out!("MessageId  {id}");
            }
            if let Some(r) = &data.result {
                out!("Result     {r}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `thingcall product ...`.
#[derive(clap::Subcommand)]
pub(crate) enum ProductCommand {
    /// Create a product with thing models (iothub_senior, Alink JSON).
    Create {
        #[command(flatten)]
        api: ApiArgs,
        /// The product name.
        #[arg(long)]
        name: String,
        /// 0 device, 1 gateway.
        #[arg(long, default_value_t = 0)]
        node_type: i64,
        /// A description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Show a product.
    Get {
        #[command(flatten)]
        api: ApiArgs,
        /// The product.
        #[arg(long)]
        product_key: String,
    },
    /// Delete a product (and its devices).
    Delete {
        #[command(flatten)]
        api: ApiArgs,
        /// The product.
        #[arg(long)]
        product_key: String,
    },
}

fn pk(s: &str) -> Result<ProductKey, String> {
    ProductKey::new(s).map_err(|e| format!("--product-key: {e}"))
}

impl ProductCommand {
    pub(crate) fn run(self) -> Outcome {
        match self {
            ProductCommand::Create {
                api,
                name,
                node_type,
                description,
            } => {
                let req = CreateProduct {
                    aliyun_commodity_code: Some("iothub_senior".into()),
                    data_format: Some(1),
                    description,
                    ..CreateProduct::new(name, node_type)
                };
                let r = ok_or_exit!(call(&api, &req));
                let secret = r
                    .data
                    .product_secret
                    .as_ref()
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default();
                show(
                    api.output,
                    &[
                        ("ProductKey", r.product_key.clone()),
                        ("ProductName", r.data.product_name.clone()),
                        ("ProductSecret", secret.clone()),
                    ],
                    json!({"ProductKey": r.product_key, "ProductName": r.data.product_name, "ProductSecret": secret}),
                );
            }
            ProductCommand::Get { api, product_key } => {
                let Data(p) = ok_or_exit!(call(&api, &QueryProduct::new(pk(&product_key)?)));
                let rows = [
                    ("ProductKey", p.product_key.clone()),
                    ("ProductName", p.product_name.clone()),
                    ("Description", opt(&p.description)),
                    (
                        "NodeType",
                        p.node_type.map(|n| n.to_string()).unwrap_or_default(),
                    ),
                    (
                        "DeviceCount",
                        p.device_count.map(|n| n.to_string()).unwrap_or_default(),
                    ),
                    ("ProductStatus", opt(&p.product_status)),
                ];
                let value = json!({"ProductKey": p.product_key, "ProductName": p.product_name, "Description": p.description,
                    "NodeType": p.node_type, "DeviceCount": p.device_count, "ProductStatus": p.product_status});
                show(api.output, &rows, value);
            }
            ProductCommand::Delete { api, product_key } => {
                ok_or_exit!(call(&api, &DeleteProduct::new(pk(&product_key)?)));
                show(
                    api.output,
                    &[("Deleted", product_key.clone())],
                    json!({"Deleted": product_key}),
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `thingcall device register`.
#[derive(Args)]
pub(crate) struct RegisterArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The product.
    #[arg(long)]
    product_key: String,
    /// The device name (generated when absent; with --count N the prefix of DN-1 ... DN-N).
    #[arg(long)]
    device_name: Option<String>,
    /// Register N devices.
    #[arg(long)]
    count: Option<u32>,
}

pub(crate) fn register(a: RegisterArgs) -> Outcome {
    let product_key = pk(&a.product_key)?;
    let names: Vec<Option<String>> = match (a.count, &a.device_name) {
        (None, name) => vec![name.clone()],
        (Some(0), _) => return Err("--count must be at least 1".to_owned()),
        (Some(n), Some(prefix)) => (1..=n).map(|i| Some(format!("{prefix}-{i}"))).collect(),
        (Some(n), None) => (1..=n).map(|_| None).collect(),
    };
    let mut requests = Vec::with_capacity(names.len());
    for name in &names {
        let device_name = name
            .as_deref()
            .map(DeviceName::new)
            .transpose()
            .map_err(|e| format!("--device-name: {e}"))?;
        requests.push(RegisterDevice::new(product_key.clone(), device_name));
    }
    let client = a.api.client()?;
    let rt = runtime()?;
    let total = requests.len();
    let progress = total > 1 && std::io::stderr().is_terminal();
    let mut done = Vec::with_capacity(total);
    for (i, req) in requests.iter().enumerate() {
        match rt.block_on(client.call(req)) {
            Ok(Data(d)) => done.push(d),
            Err(e) => {
                if progress {
                    note!();
                }
                note!("{}: {}", e.code().unwrap_or("error"), e.message());
                note!("registered {} of {total} before the failure", done.len());
                print_registered(a.api.output, &done);
                return Ok(ExitCode::from(1));
            }
        }
        if progress {
            super::progress(i as u64 + 1, total as u64, "");
        }
    }
    if progress {
        note!();
    }
    print_registered(a.api.output, &done);
    Ok(ExitCode::SUCCESS)
}

fn print_registered(output: Output, done: &[RegisterDeviceData]) {
    match output {
        Output::Json => {
            let list: Vec<Value> = done
                .iter()
                .map(|d| json!({"IotId": d.iot_id, "ProductKey": d.product_key, "DeviceName": d.device_name, "DeviceSecret": d.device_secret.expose()}))
                .collect();
            out!("{}", Value::Array(list));
        }
        Output::Table => {
            let w = done
                .iter()
                .map(|d| d.device_name.len())
                .max()
                .unwrap_or(10)
                .max(10);
            out!("{:<w$}  {:<26}  DeviceSecret", "DeviceName", "IotId");
            for d in done {
                out!(
                    "{:<w$}  {:<26}  {}",
                    d.device_name,
                    d.iot_id,
                    d.device_secret.expose()
                );
            }
        }
    }
}

/// What `thingcall device detail|status|delete|disable|enable` does to one
/// device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceAction {
    /// `QueryDeviceDetail`.
    Detail,
    /// `GetDeviceStatus`.
    Status,
    /// `DeleteDevice`.
    Delete,
    /// `DisableThing`.
    Disable,
    /// `EnableThing`.
    Enable,
}

/// `thingcall device detail|status|delete|disable|enable`.
pub(crate) fn device_action(action: DeviceAction, api: ApiArgs, dev: DeviceArgs) -> Outcome {
    let device = dev.device_ref()?;
    match action {
        DeviceAction::Detail => {
            let Data(d) = ok_or_exit!(call(&api, &QueryDeviceDetail::new(device)));
            let rows = [
                ("IotId", d.iot_id.clone()),
                ("ProductKey", d.product_key.clone()),
                ("DeviceName", d.device_name.clone()),
                ("Status", d.status.to_string()),
                ("Nickname", opt(&d.nickname)),
                ("IpAddress", opt(&d.ip_address)),
                ("UtcCreate", opt(&d.utc_create)),
                ("UtcActive", opt(&d.utc_active)),
                ("UtcOnline", opt(&d.utc_online)),
            ];
            let value = json!({"IotId": d.iot_id, "ProductKey": d.product_key, "DeviceName": d.device_name, "Status": d.status.as_str(),
                "Nickname": d.nickname, "IpAddress": d.ip_address, "UtcCreate": d.utc_create, "UtcActive": d.utc_active, "UtcOnline": d.utc_online});
            show(api.output, &rows, value);
        }
        DeviceAction::Status => {
            let Data(s) = ok_or_exit!(call(&api, &GetDeviceStatus::new(device)));
            show(
                api.output,
                &[
                    ("Status", s.status.to_string()),
                    (
                        "Timestamp",
                        s.timestamp.map(|t| t.to_string()).unwrap_or_default(),
                    ),
                ],
                json!({"Status": s.status.as_str(), "Timestamp": s.timestamp}),
            );
        }
        DeviceAction::Delete => {
            ok_or_exit!(call(&api, &DeleteDevice::new(device)));
            show(
                api.output,
                &[("Deleted", "yes".into())],
                json!({"Deleted": true}),
            );
        }
        DeviceAction::Disable => {
            ok_or_exit!(call(&api, &DisableThing::new(device)));
            show(
                api.output,
                &[("Status", "DISABLE".into())],
                json!({"Status": "DISABLE"}),
            );
        }
        DeviceAction::Enable => {
            ok_or_exit!(call(&api, &EnableThing::new(device)));
            show(
                api.output,
                &[("Enabled", "yes".into())],
                json!({"Enabled": true}),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `thingcall tsl import|publish|get`.
pub(crate) fn tsl_import(api: ApiArgs, product_key: &str, file: &std::path::Path) -> Outcome {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let req = ImportThingModelTsl::new(pk(product_key)?, text);
    ok_or_exit!(call(&api, &req));
    show(
        api.output,
        &[("Imported", file.display().to_string())],
        json!({"Imported": true}),
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn tsl_publish(api: ApiArgs, product_key: &str, version: Option<String>) -> Outcome {
    let req = PublishThingModel {
        model_version: version.clone(),
        ..PublishThingModel::new(pk(product_key)?)
    };
    ok_or_exit!(call(&api, &req));
    show(
        api.output,
        &[(
            "Published",
            version.clone().unwrap_or_else(|| "(next version)".into()),
        )],
        json!({"Published": true, "ModelVersion": version}),
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn tsl_get(
    api: ApiArgs,
    product_key: &str,
    published: bool,
    version: Option<String>,
    simple: bool,
) -> Outcome {
    let product_key = pk(product_key)?;
    let simple = simple.then_some(true);
    let Data(t) = if published {
        ok_or_exit!(call(
            &api,
            &GetThingModelTslPublished {
                model_version: version,
                simple,
                ..GetThingModelTslPublished::new(product_key)
            }
        ))
    } else {
        ok_or_exit!(call(
            &api,
            &GetThingModelTsl {
                model_version: version,
                simple,
                ..GetThingModelTsl::new(product_key)
            }
        ))
    };
    // The TSL itself is the result, in both output modes: pretty for people.
    match (api.output, serde_json::from_str::<Value>(&t.tsl_str)) {
        (Output::Table, Ok(v)) => {
            out!("{}", serde_json::to_string_pretty(&v).unwrap_or(t.tsl_str))
        }
        _ => out!("{}", t.tsl_str),
    }
    Ok(ExitCode::SUCCESS)
}
