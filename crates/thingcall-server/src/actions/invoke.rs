//! `InvokeThingService` and `InvokeThingsService`.

use thingcall_core::{ApiError, ErrorCode, Qos, RequestId};
use thingcall_wire::actions::{InvokeThingService, InvokeThingServiceData, InvokeThingsService};
use thingcall_wire::{Action, Data, Format};

use super::{ok, resolve};
use crate::catalog::read;
use crate::engine::Engine;
use crate::gate::MirrorGate;

pub(super) async fn invoke(
    state: &Engine,
    r: InvokeThingService,
    format: Format,
    rid: &RequestId,
    gate: &mut MirrorGate,
) -> Result<String, ApiError> {
    let device = resolve(state, &r.device)?;
    let done = state
        .invoke_gated(
            &device,
            &r.identifier,
            &r.args,
            r.qos.unwrap_or_default(),
            gate,
        )
        .await?;
    let data = InvokeThingServiceData {
        result: done.result,
        message_id: Some(done.message_id.to_string()),
    };
    Ok(ok(InvokeThingService::NAME, format, rid, Data(data)))
}

pub(super) async fn invoke_many(
    state: &Engine,
    r: InvokeThingsService,
    format: Format,
    rid: &RequestId,
    gate: &mut MirrorGate,
) -> Result<String, ApiError> {
    let devices = {
        let c = read(&state.catalog);
        if !c.products.contains_key(r.product_key.as_str()) {
            return Err(ApiError::new(ErrorCode::NotExistedProduct));
        }
        let mut out = Vec::with_capacity(r.device_names.len());
        for dn in &r.device_names {
            match c.device_by_name(r.product_key.as_str(), dn.as_str()) {
                Some(d) => out.push(d.clone()),
                None => {
                    return Err(ApiError::with_detail(
                        ErrorCode::NotExistedDevice,
                        format_args!("No device {dn}."),
                    ));
                }
            }
        }
        out
    };
    state
        .invoke_many(
            &devices,
            &r.identifier,
            &r.args,
            r.qos.unwrap_or(Qos::AtMostOnce),
            gate,
        )
        .await?;
    Ok(ok(InvokeThingsService::NAME, format, rid, ()))
}
