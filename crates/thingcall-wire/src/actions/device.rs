//! Device actions (`management-apis.md` §2-§5): `RegisterDevice`,
//! `QueryDeviceDetail`, `GetDeviceStatus`, `DeleteDevice`, `DisableThing`,
//! `EnableThing`.

use std::fmt;

use thingcall_core::{ApiError, DeviceName, DeviceRef, ErrorCode, ProductKey, Secret};

use super::{Action, Out, device_ref, is_display_name, product_key, text};
use crate::envelope::Data;
use crate::field::{Scalar, wire_struct};
use crate::node::{DecodeError, Node};
use crate::params::Params;
use crate::sink::Sink;

/// A device's state as the API reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceStatus {
    /// Connected now.
    Online,
    /// Connected before, not now.
    Offline,
    /// Registered, never connected.
    Unactive,
    /// Disabled by `DisableThing`.
    Disable,
}

impl DeviceStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Online => "ONLINE",
            DeviceStatus::Offline => "OFFLINE",
            DeviceStatus::Unactive => "UNACTIVE",
            DeviceStatus::Disable => "DISABLE",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<DeviceStatus> {
        match s {
            "ONLINE" => Some(DeviceStatus::Online),
            "OFFLINE" => Some(DeviceStatus::Offline),
            "UNACTIVE" => Some(DeviceStatus::Unactive),
            "DISABLE" => Some(DeviceStatus::Disable),
            _ => None,
        }
    }
}

impl fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Scalar for DeviceStatus {
    fn write_scalar<W: Sink>(&self, name: &str, w: &mut W) {
        w.str(name, self.as_str());
    }
    fn read_scalar(node: &Node, name: &str) -> Result<DeviceStatus, DecodeError> {
        node.as_text()
            .as_deref()
            .and_then(DeviceStatus::parse)
            .ok_or_else(|| DecodeError::new(format!("{name} is not a device status")))
    }
}

/// Registers a device under a product.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterDevice {
    /// The product.
    pub product_key: ProductKey,
    /// The name; the server generates one when absent.
    pub device_name: Option<DeviceName>,
    /// `Nickname`: 4-64 (CJK counts 2) CJK characters, letters, digits, `_`.
    pub nickname: Option<String>,
    /// `DevEui` (LoRaWAN).
    pub dev_eui: Option<String>,
    /// `PinCode` (LoRaWAN).
    pub pin_code: Option<String>,
    /// `JoinEui` (LoRaWAN).
    pub join_eui: Option<String>,
    /// `AppKey` (LoRaWAN).
    pub app_key: Option<String>,
    /// `LoraNodeType`.
    pub lora_node_type: Option<String>,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl RegisterDevice {
    /// A device of `product_key`; `device_name` `None` lets the server
    /// generate one.
    pub fn new(product_key: ProductKey, device_name: Option<DeviceName>) -> Self {
        RegisterDevice {
            product_key,
            device_name,
            nickname: None,
            dev_eui: None,
            pin_code: None,
            join_eui: None,
            app_key: None,
            lora_node_type: None,
            iot_instance_id: None,
        }
    }
}

impl Action for RegisterDevice {
    const NAME: &'static str = "RegisterDevice";
    type Response = Data<RegisterDeviceData>;

    fn from_params(params: &Params) -> Result<RegisterDevice, ApiError> {
        let product_key = product_key(params)?;
        let device_name = params
            .get_non_empty("DeviceName")?
            .map(DeviceName::new)
            .transpose()?;
        let nickname = params.get_non_empty("Nickname")?.map(str::to_owned);
        if let Some(n) = &nickname
            && !is_display_name(n, 4, 64)
        {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                "Nickname must be 4-64 characters (a CJK character counts as 2) of CJK characters, letters, digits and _.",
            ));
        }
        Ok(RegisterDevice {
            product_key,
            device_name,
            nickname,
            dev_eui: text(params, "DevEui")?,
            pin_code: text(params, "PinCode")?,
            join_eui: text(params, "JoinEui")?,
            app_key: text(params, "AppKey")?,
            lora_node_type: text(params, "LoraNodeType")?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("ProductKey", &self.product_key)
            .opt("DeviceName", &self.device_name)
            .opt("Nickname", &self.nickname)
            .opt("DevEui", &self.dev_eui)
            .opt("PinCode", &self.pin_code)
            .opt("JoinEui", &self.join_eui)
            .opt("AppKey", &self.app_key)
            .opt("LoraNodeType", &self.lora_node_type)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

wire_struct! {
    /// `Data` of a successful `RegisterDevice`.
    pub struct RegisterDeviceData {
        /// `IotId`.
        "IotId" => iot_id: String,
        /// `ProductKey`.
        "ProductKey" => product_key: String,
        /// `DeviceName`.
        "DeviceName" => device_name: String,
        /// `DeviceSecret`.
        "DeviceSecret" => device_secret: Secret,
        /// `Nickname`.
        "Nickname" => nickname: Option<String>,
        /// `DevEui` (LoRaWAN only).
        "DevEui" => dev_eui: Option<String>,
        /// `JoinEui` (LoRaWAN only).
        "JoinEui" => join_eui: Option<String>,
    }
}

macro_rules! device_action {
    ($(#[$meta:meta])* $name:ident, $response:ty) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            /// The device.
            pub device: DeviceRef,
            /// `IotInstanceId`.
            pub iot_instance_id: Option<String>,
        }

        impl $name {
            /// For `device` in the default instance.
            pub fn new(device: DeviceRef) -> Self {
                $name {
                    device,
                    iot_instance_id: None,
                }
            }
        }

        impl Action for $name {
            const NAME: &'static str = stringify!($name);
            type Response = $response;

            fn from_params(params: &Params) -> Result<$name, ApiError> {
                Ok($name { device: device_ref(params)?, iot_instance_id: text(params, "IotInstanceId")? })
            }

            fn to_params(&self) -> Vec<(String, String)> {
                Out::default().device(&self.device).opt("IotInstanceId", &self.iot_instance_id).done()
            }
        }
    };
}

device_action!(
    /// Reads a device's details.
    QueryDeviceDetail,
    Data<QueryDeviceDetailData>
);
device_action!(
    /// Reads a device's status.
    GetDeviceStatus,
    Data<GetDeviceStatusData>
);
device_action!(
    /// Deletes a device.
    DeleteDevice,
    ()
);
device_action!(
    /// Disables a device: it is disconnected and cannot connect again.
    DisableThing,
    ()
);
device_action!(
    /// Lifts a device's disabled state.
    EnableThing,
    ()
);

wire_struct! {
    /// `Data` of a successful `QueryDeviceDetail`.
    pub struct QueryDeviceDetailData {
        /// `IotId`.
        "IotId" => iot_id: String,
        /// `ProductKey`.
        "ProductKey" => product_key: String,
        /// `ProductName`.
        "ProductName" => product_name: Option<String>,
        /// `DeviceName`.
        "DeviceName" => device_name: String,
        /// `DeviceSecret`.
        "DeviceSecret" => device_secret: Option<Secret>,
        /// `Nickname`.
        "Nickname" => nickname: Option<String>,
        /// `FirmwareVersion`.
        "FirmwareVersion" => firmware_version: Option<String>,
        /// `IpAddress`: the device's last address.
        "IpAddress" => ip_address: Option<String>,
        /// `NodeType`.
        "NodeType" => node_type: Option<i64>,
        /// `Owner`.
        "Owner" => owner: Option<bool>,
        /// `Region`.
        "Region" => region: Option<String>,
        /// `Status`.
        "Status" => status: DeviceStatus,
        /// `GmtCreate` (`yyyy-MM-dd HH:mm:ss`, UTC+8).
        "GmtCreate" => gmt_create: Option<String>,
        /// `UtcCreate` (ISO 8601 with milliseconds).
        "UtcCreate" => utc_create: Option<String>,
        /// `GmtActive`.
        "GmtActive" => gmt_active: Option<String>,
        /// `UtcActive`.
        "UtcActive" => utc_active: Option<String>,
        /// `GmtOnline`.
        "GmtOnline" => gmt_online: Option<String>,
        /// `UtcOnline`.
        "UtcOnline" => utc_online: Option<String>,
    }
}

wire_struct! {
    /// `Data` of a successful `GetDeviceStatus`.
    pub struct GetDeviceStatusData {
        /// `Status`.
        "Status" => status: DeviceStatus,
        /// `Timestamp`: when the status last changed (epoch ms).
        "Timestamp" => timestamp: Option<i64>,
    }
}
