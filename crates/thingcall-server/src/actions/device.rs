//! `RegisterDevice`, `QueryDeviceDetail`, `GetDeviceStatus`,
//! `DeleteDevice`, `DisableThing`, `EnableThing`.

use thingcall_core::{ApiError, DeviceRef, ErrorCode, RequestId};
use thingcall_wire::actions::{
    DeleteDevice, GetDeviceStatus, GetDeviceStatusData, QueryDeviceDetail, QueryDeviceDetailData,
    RegisterDevice, RegisterDeviceData,
};
use thingcall_wire::{Action, Data, Format};

use super::{conflict, find_product, ok, resolve};
use crate::catalog::{gmt_utc, read, status};
use crate::engine::{Engine, device_key, store_error};
use crate::ids::alnum;
use crate::store::{Change, Device};

pub(super) async fn register_device(
    state: &Engine,
    r: RegisterDevice,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = find_product(state, r.product_key.as_str())?;
    let (device_name, iot_id) = {
        let c = read(&state.catalog);
        let name = match &r.device_name {
            Some(dn) => {
                if c.device_by_name(&p.product_key, dn.as_str()).is_some() {
                    return Err(ApiError::new(ErrorCode::AlreadyExistedDeviceName));
                }
                dn.to_string()
            }
            None => loop {
                let candidate = alnum(20);
                if c.device_by_name(&p.product_key, &candidate).is_none() {
                    break candidate;
                }
            },
        };
        let iot_id = loop {
            let prefix = if r.device_name.is_none() {
                name.clone()
            } else {
                alnum(20)
            };
            let id = format!("{prefix}000100");
            if !c.devices.contains_key(&id) {
                break id;
            }
        };
        (name, iot_id)
    };
    let now = state.now().get();
    let device = Device {
        iot_id: iot_id.clone(),
        product_key: p.product_key.clone(),
        device_name,
        device_secret: alnum(32).into(),
        nickname: r.nickname,
        enabled: true,
        created_ms: now,
        activated_ms: None,
        online_ms: None,
        status_ms: now,
        ip_address: None,
        online: false,
    };
    state
        .change(Change::InsertDevice(device.clone()))
        .await
        .map_err(conflict(ErrorCode::AlreadyExistedDeviceName))?;
    let data = RegisterDeviceData {
        iot_id,
        product_key: device.product_key.clone(),
        device_name: device.device_name.clone(),
        device_secret: device.device_secret.clone(),
        nickname: device.nickname.clone(),
        dev_eui: None,
        join_eui: None,
    };
    Ok(ok(RegisterDevice::NAME, format, rid, Data(data)))
}

pub(super) fn query_device_detail(
    state: &Engine,
    r: &DeviceRef,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let d = resolve(state, r)?;
    let (product_name, node_type) = {
        let c = read(&state.catalog);
        let p = c.products.get(&d.product_key);
        (p.map(|p| p.product_name.clone()), p.map(|p| p.node_type))
    };
    let (gmt_create, utc_create) = gmt_utc(d.created_ms);
    let active = d.activated_ms.map(gmt_utc);
    let online = d.online_ms.map(gmt_utc);
    let data = QueryDeviceDetailData {
        status: status(&d),
        iot_id: d.iot_id,
        product_key: d.product_key,
        product_name,
        device_name: d.device_name,
        device_secret: Some(d.device_secret),
        nickname: d.nickname,
        firmware_version: None,
        ip_address: d.ip_address,
        node_type,
        owner: Some(true),
        region: Some(state.config.region.clone()),
        gmt_create: Some(gmt_create),
        utc_create: Some(utc_create),
        gmt_active: active.clone().map(|(g, _)| g),
        utc_active: active.map(|(_, u)| u),
        gmt_online: online.clone().map(|(g, _)| g),
        utc_online: online.map(|(_, u)| u),
    };
    Ok(ok(QueryDeviceDetail::NAME, format, rid, Data(data)))
}

pub(super) fn get_device_status(
    state: &Engine,
    r: &DeviceRef,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let d = resolve(state, r)?;
    let data = GetDeviceStatusData {
        status: status(&d),
        timestamp: Some(d.status_ms),
    };
    Ok(ok(GetDeviceStatus::NAME, format, rid, Data(data)))
}

pub(super) async fn delete_device(
    state: &Engine,
    r: &DeviceRef,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let d = resolve(state, r)?;
    let now = state.now().get();
    state
        .change(Change::DeleteDevice {
            iot_id: d.iot_id.clone(),
            product_key: d.product_key.clone(),
            device_name: d.device_name.clone(),
            at: now,
        })
        .await
        .map_err(store_error)?;
    if let Ok(key) = device_key(&d) {
        state.transport.disconnect(&key, "device deleted").await;
    }
    Ok(ok(DeleteDevice::NAME, format, rid, ()))
}

pub(super) async fn set_enabled(
    state: &Engine,
    r: &DeviceRef,
    enabled: bool,
    action: &'static str,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let d = resolve(state, r)?;
    if d.enabled != enabled {
        // Only `enabled` and the status time are written: a presence change
        // queued beside this one cannot bring the old value back.
        state
            .change(Change::SetEnabled {
                iot_id: d.iot_id.clone(),
                enabled,
                at: state.now().get(),
            })
            .await
            .map_err(store_error)?;
        if !enabled && let Ok(key) = device_key(&d) {
            state.transport.disconnect(&key, "device disabled").await;
        }
    }
    Ok(ok(action, format, rid, ()))
}
