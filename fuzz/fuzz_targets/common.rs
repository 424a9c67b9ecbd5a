//! What the session fuzz targets share: the device, its credentials, a
//! runtime, and a gateway that knows the device.

use std::sync::{Arc, OnceLock};

use thingcall_core::{DeviceName, ManualClock, ProductKey, Secret, UnixMillis};
use thingcall_gateway::{Gateway, GatewayConfig, MapRegistry};
use thingcall_transport::DeviceKey;

pub const SECRET: &str = "fuzz-secret";

pub fn device() -> DeviceKey {
    DeviceKey::new(
        ProductKey::new("a1FuzzPk001").unwrap_or_else(|e| panic!("{e}")),
        DeviceName::new("dev1").unwrap_or_else(|e| panic!("{e}")),
    )
}

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A gateway (64 KiB packets) whose registry holds the device.
pub fn gateway() -> Gateway {
    let registry = Arc::new(MapRegistry::new());
    registry.insert(device(), Secret::new(SECRET));
    let clock = Arc::new(ManualClock::new(UnixMillis::new(1_700_000_000_000)));
    let config = GatewayConfig {
        max_packet: 64 * 1024,
        ..GatewayConfig::default()
    };
    Gateway::new(config, registry, clock)
}
