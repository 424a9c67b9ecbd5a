//! How an API call names a device, and the per-call delivery options.

use std::fmt;
use std::str::FromStr;

use crate::error::{ApiError, ErrorCode};
use crate::ids::{DeviceName, IotId, ProductKey};

/// A device as an API call names it: by IotId, or by ProductKey plus
/// DeviceName.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceRef {
    /// The device's globally unique id.
    IotId(IotId),
    /// The device's name within a product.
    Name {
        /// The product.
        product_key: ProductKey,
        /// The device within the product.
        device_name: DeviceName,
    },
}

impl DeviceRef {
    /// Resolves the three optional addressing parameters the way Alibaba
    /// documents them:
    ///
    /// * a non-empty `IotId` wins, whatever else is given;
    /// * an empty `IotId` is an error (`iot.device.InvalidIoTId`);
    /// * otherwise `ProductKey` and `DeviceName` must come together
    ///   (`iot.prod.NullProductKey` / `iot.device.NullDeviceName`), and each
    ///   must be well formed.
    pub fn from_params(
        iot_id: Option<&str>,
        product_key: Option<&str>,
        device_name: Option<&str>,
    ) -> Result<DeviceRef, ApiError> {
        if let Some(iot_id) = iot_id {
            return Ok(DeviceRef::IotId(IotId::new(iot_id)?));
        }
        let product_key = match product_key {
            Some(pk) if !pk.is_empty() => ProductKey::new(pk)?,
            _ => return Err(ApiError::new(ErrorCode::NullProductKey)),
        };
        let device_name = match device_name {
            Some(dn) if !dn.is_empty() => DeviceName::new(dn)?,
            _ => return Err(ApiError::new(ErrorCode::NullDeviceName)),
        };
        Ok(DeviceRef::Name {
            product_key,
            device_name,
        })
    }

    /// The IotId, when the call named the device that way.
    pub fn iot_id(&self) -> Option<&IotId> {
        match self {
            DeviceRef::IotId(id) => Some(id),
            DeviceRef::Name { .. } => None,
        }
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRef::IotId(id) => write!(f, "IotId={id}"),
            DeviceRef::Name {
                product_key,
                device_name,
            } => write!(f, "{product_key}/{device_name}"),
        }
    }
}

/// How a service is invoked, from its `callType` in the thing model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallType {
    /// The platform waits for the device's reply (RRPC).
    Sync,
    /// The platform publishes and returns a message id at once.
    Async,
}

impl CallType {
    /// The thing-model spelling: `sync` or `async`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallType::Sync => "sync",
            CallType::Async => "async",
        }
    }
}

impl FromStr for CallType {
    type Err = String;
    fn from_str(s: &str) -> Result<CallType, String> {
        match s {
            "sync" => Ok(CallType::Sync),
            "async" => Ok(CallType::Async),
            other => Err(format!(
                "callType must be \"sync\" or \"async\", not {other:?}"
            )),
        }
    }
}

impl fmt::Display for CallType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// MQTT delivery quality for a downstream message (`Qos` parameter).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qos {
    /// At most once (the default).
    #[default]
    AtMostOnce,
    /// At least once; kept for an offline persistent session.
    AtLeastOnce,
}

impl Qos {
    /// The numeric level, 0 or 1.
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }

    /// The level from its number; thingcall (like Alibaba) has no QoS 2.
    pub fn from_level(level: u8) -> Option<Qos> {
        match level {
            0 => Some(Qos::AtMostOnce),
            1 => Some(Qos::AtLeastOnce),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iot_id_wins() {
        let r = DeviceRef::from_params(Some("abc123"), Some("a1TestPk001"), Some("dev1")).unwrap();
        assert_eq!(r, DeviceRef::IotId(IotId::new("abc123").unwrap()));
    }

    #[test]
    fn addressing_errors() {
        let code = |i, p, d| DeviceRef::from_params(i, p, d).unwrap_err().code();
        assert_eq!(
            code(Some(""), Some("a1TestPk001"), Some("dev1")),
            ErrorCode::InvalidIotId
        );
        assert_eq!(code(None, None, None), ErrorCode::NullProductKey);
        assert_eq!(code(None, None, Some("dev1")), ErrorCode::NullProductKey);
        assert_eq!(
            code(None, Some("a1TestPk001"), None),
            ErrorCode::NullDeviceName
        );
        assert_eq!(
            code(None, Some("a1TestPk001"), Some("")),
            ErrorCode::NullDeviceName
        );
        assert_eq!(
            code(None, Some("a1TestPk001"), Some("d")),
            ErrorCode::InvalidFormattedDeviceName
        );
        assert_eq!(
            code(None, Some("a1-Test"), Some("dev1")),
            ErrorCode::InvalidFormattedProductkey
        );
    }

    #[test]
    fn call_types_and_qos() {
        assert_eq!("sync".parse::<CallType>().unwrap(), CallType::Sync);
        assert!("Sync".parse::<CallType>().is_err());
        assert_eq!(Qos::from_level(1), Some(Qos::AtLeastOnce));
        assert_eq!(Qos::from_level(2), None);
        assert_eq!(Qos::default().level(), 0);
    }
}
