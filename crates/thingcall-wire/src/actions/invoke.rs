//! `InvokeThingService` and `InvokeThingsService` (spec digest §1).

use thingcall_core::{ApiError, DeviceName, DeviceRef, ErrorCode, Identifier, ProductKey, Qos};

use super::{Action, Out, device_ref, product_key, text};
use crate::envelope::Data;
use crate::field::wire_struct;
use crate::params::Params;

/// `Args` may be at most this many bytes (it must fit in one MQTT message
/// with its Alink envelope; the gateway's default payload limit is 256 KiB).
pub const MAX_ARGS_BYTES: usize = 128 * 1024;

/// `InvokeThingsService` addresses at most this many devices.
pub const MAX_BATCH_DEVICES: usize = 100;

/// Invokes a service on one device.
#[derive(Clone, Debug, PartialEq)]
pub struct InvokeThingService {
    /// The device (IotId wins over ProductKey + DeviceName).
    pub device: DeviceRef,
    /// The service identifier (`Calibrate`, `set`, `block:service`).
    pub identifier: Identifier,
    /// The arguments as a JSON text (validated against the thing model by
    /// the server, not here).
    pub args: String,
    /// Delivery QoS (default 0).
    pub qos: Option<Qos>,
    /// `IotInstanceId`, when given.
    pub iot_instance_id: Option<String>,
}

impl InvokeThingService {
    /// A call of `identifier` on `device` with `args` (JSON text); QoS 0 and
    /// the default instance. Set the optional fields with struct update:
    /// `InvokeThingService { qos: Some(Qos::AtLeastOnce), ..InvokeThingService::new(..) }`.
    pub fn new(device: DeviceRef, identifier: Identifier, args: impl Into<String>) -> Self {
        InvokeThingService {
            device,
            identifier,
            args: args.into(),
            qos: None,
            iot_instance_id: None,
        }
    }
}

wire_struct! {
    /// `Data` of a successful `InvokeThingService`.
    pub struct InvokeThingServiceData {
        /// `Result`: the device's reply `data` as JSON text (sync services only).
        "Result" => result: Option<String>,
        /// `MessageId`: the id of the downstream message.
        "MessageId" => message_id: Option<String>,
    }
}

fn identifier(params: &Params) -> Result<Identifier, ApiError> {
    let raw = params.required("Identifier")?;
    Identifier::new(raw).map_err(|e| ApiError::with_detail(ErrorCode::InvokeThingServiceFailed, e))
}

fn args(raw: &str) -> Result<String, ApiError> {
    if raw.len() > MAX_ARGS_BYTES {
        return Err(ApiError::with_detail(
            ErrorCode::InvokeThingServiceFailed,
            format_args!(
                "Args is {} bytes; the limit is {MAX_ARGS_BYTES}.",
                raw.len()
            ),
        ));
    }
    Ok(raw.to_owned())
}

fn qos(params: &Params) -> Result<Option<Qos>, ApiError> {
    match params.int("Qos")? {
        None => Ok(None),
        Some(level) => u8::try_from(level)
            .ok()
            .and_then(Qos::from_level)
            .map(Some)
            .ok_or_else(|| {
                ApiError::with_detail(
                    ErrorCode::InvalidFormattedParameter,
                    format_args!("Qos must be 0 or 1, got {level}."),
                )
            }),
    }
}

impl Action for InvokeThingService {
    const NAME: &'static str = "InvokeThingService";
    type Response = Data<InvokeThingServiceData>;

    fn from_params(params: &Params) -> Result<InvokeThingService, ApiError> {
        // Gateway-level checks (missing parameters, types) come before the
        // business checks, as on Alibaba's gateway.
        params.required("Identifier")?;
        let raw_args = params.required("Args")?;
        let qos = qos(params)?;
        let device = device_ref(params)?;
        Ok(InvokeThingService {
            device,
            identifier: identifier(params)?,
            args: args(raw_args)?,
            qos,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .device(&self.device)
            .put("Identifier", &self.identifier)
            .put("Args", &self.args)
            .opt("Qos", &self.qos.map(Qos::level))
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

/// Invokes a service on up to 100 devices of one product, asynchronously.
#[derive(Clone, Debug, PartialEq)]
pub struct InvokeThingsService {
    /// The product.
    pub product_key: ProductKey,
    /// `DeviceName.1` ... `DeviceName.N`.
    pub device_names: Vec<DeviceName>,
    /// The service identifier.
    pub identifier: Identifier,
    /// The arguments as JSON text.
    pub args: String,
    /// Delivery QoS (default 0).
    pub qos: Option<Qos>,
    /// `IotInstanceId`, when given.
    pub iot_instance_id: Option<String>,
}

impl InvokeThingsService {
    /// A call of `identifier` with `args` on `device_names` of `product_key`.
    pub fn new(
        product_key: ProductKey,
        device_names: Vec<DeviceName>,
        identifier: Identifier,
        args: impl Into<String>,
    ) -> Self {
        InvokeThingsService {
            product_key,
            device_names,
            identifier,
            args: args.into(),
            qos: None,
            iot_instance_id: None,
        }
    }
}

impl Action for InvokeThingsService {
    const NAME: &'static str = "InvokeThingsService";
    type Response = ();

    fn from_params(params: &Params) -> Result<InvokeThingsService, ApiError> {
        params.required("Identifier")?;
        let raw_args = params.required("Args")?;
        let qos = qos(params)?;
        let product_key = product_key(params)?;
        let names = params.list("DeviceName")?;
        if names.is_empty() {
            return Err(ApiError::new(ErrorCode::NoneDeviceNameElement));
        }
        if names.len() > MAX_BATCH_DEVICES {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                format_args!(
                    "at most {MAX_BATCH_DEVICES} DeviceName.N values are allowed, got {}.",
                    names.len()
                ),
            ));
        }
        let device_names = names
            .into_iter()
            .map(DeviceName::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(InvokeThingsService {
            product_key,
            device_names,
            identifier: identifier(params)?,
            args: args(raw_args)?,
            qos,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        let mut out = Out::default();
        out.put("ProductKey", &self.product_key);
        for (i, dn) in self.device_names.iter().enumerate() {
            out.put(&format!("DeviceName.{}", i + 1), dn);
        }
        out.put("Identifier", &self.identifier)
            .put("Args", &self.args)
            .opt("Qos", &self.qos.map(Qos::level))
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}
