//! One handler per action, by family as in `thingcall-wire/src/actions/`:
//! `invoke.rs`, `product.rs`, `device.rs`, `thing_model.rs`,
//! `service_data.rs`, `subscription.rs`. Each returns the encoded response body, or the
//! `ApiError` the HTTP layer turns into a business or gateway error.
//! [`dispatch`] matches every request type, with no catch-all arm: a new
//! action does not compile until it has a handler.

mod device;
mod invoke;
mod product;
mod service_data;
mod subscription;
mod thing_model;

use thingcall_core::{ApiError, DeviceRef, ErrorCode, RequestId};
use thingcall_wire::actions::{
    DisableThing, EnableThing, GetThingModelTsl, GetThingModelTslPublished,
};
use thingcall_wire::{Action, ApiRequest, Format, Response, ResponseBody, encode_response};

use crate::catalog::read;
use crate::engine::{Engine, store_error, unresolved};
use crate::gate::MirrorGate;
use crate::store::{Device, Product, StoreError};

/// The encoded success response.
fn ok<B: ResponseBody>(
    action: &'static str,
    format: Format,
    request_id: &RequestId,
    body: B,
) -> String {
    encode_response(
        action,
        format,
        &Response {
            request_id: request_id.clone(),
            outcome: Ok(body),
        },
    )
}

/// Maps a store conflict (a unique name taken) to `code`, anything else as
/// store failures are mapped.
fn conflict(code: ErrorCode) -> impl FnOnce(StoreError) -> ApiError {
    move |e| {
        if e.is_conflict() {
            ApiError::new(code)
        } else {
            store_error(e)
        }
    }
}

/// Runs one parsed request, for a caller that holds no request gate.
pub(crate) async fn dispatch(
    state: &Engine,
    request: ApiRequest,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    dispatch_gated(state, request, format, rid, &mut MirrorGate::default()).await
}

/// Runs one parsed request holding `gate` (a cluster node's request gate):
/// every action but the invocations keeps it to the end, since each only
/// reads the mirror and writes the store; an invocation lets it go once
/// its device and model are resolved, before it waits for the device.
pub(crate) async fn dispatch_gated(
    state: &Engine,
    request: ApiRequest,
    format: Format,
    rid: &RequestId,
    gate: &mut MirrorGate,
) -> Result<String, ApiError> {
    match request {
        ApiRequest::InvokeThingService(r) => invoke::invoke(state, r, format, rid, gate).await,
        ApiRequest::InvokeThingsService(r) => {
            invoke::invoke_many(state, r, format, rid, gate).await
        }
        ApiRequest::CreateProduct(r) => product::create_product(state, r, format, rid).await,
        ApiRequest::QueryProduct(r) => product::query_product(state, r, format, rid),
        ApiRequest::DeleteProduct(r) => product::delete_product(state, r, format, rid).await,
        ApiRequest::RegisterDevice(r) => device::register_device(state, r, format, rid).await,
        ApiRequest::QueryDeviceDetail(r) => {
            device::query_device_detail(state, &r.device, format, rid)
        }
        ApiRequest::GetDeviceStatus(r) => device::get_device_status(state, &r.device, format, rid),
        ApiRequest::DeleteDevice(r) => device::delete_device(state, &r.device, format, rid).await,
        ApiRequest::DisableThing(r) => {
            device::set_enabled(state, &r.device, false, DisableThing::NAME, format, rid).await
        }
        ApiRequest::EnableThing(r) => {
            device::set_enabled(state, &r.device, true, EnableThing::NAME, format, rid).await
        }
        ApiRequest::ImportThingModelTsl(r) => thing_model::import_tsl(state, r, format, rid).await,
        ApiRequest::PublishThingModel(r) => thing_model::publish_model(state, r, format, rid).await,
        ApiRequest::GetThingModelTsl(r) => {
            let q = thing_model::TslQuery {
                product_key: r.product_key.as_str(),
                version: r.model_version.as_deref(),
                block: r.function_block_id.as_deref(),
                simple: r.simple,
                published: false,
            };
            thing_model::get_tsl(state, GetThingModelTsl::NAME, &q, format, rid)
        }
        ApiRequest::GetThingModelTslPublished(r) => {
            let q = thing_model::TslQuery {
                product_key: r.product_key.as_str(),
                version: r.model_version.as_deref(),
                block: r.function_block_id.as_deref(),
                simple: r.simple,
                published: true,
            };
            thing_model::get_tsl(state, GetThingModelTslPublished::NAME, &q, format, rid)
        }
        ApiRequest::QueryDeviceServiceData(r) => {
            service_data::service_data(state, r, format, rid).await
        }
        ApiRequest::CreateConsumerGroup(r) => {
            subscription::create_group(state, r, format, rid).await
        }
        ApiRequest::QueryConsumerGroupList(r) => subscription::list_groups(state, r, format, rid),
        ApiRequest::QueryConsumerGroupByGroupId(r) => {
            subscription::query_group(state, r, format, rid)
        }
        ApiRequest::UpdateConsumerGroup(r) => {
            subscription::update_group(state, r, format, rid).await
        }
        ApiRequest::DeleteConsumerGroup(r) => {
            subscription::delete_group(state, r, format, rid).await
        }
        ApiRequest::QueryConsumerGroupStatus(r) => {
            subscription::group_status(state, r, format, rid).await
        }
        ApiRequest::ResetConsumerGroupPosition(r) => {
            subscription::reset_group(state, r, format, rid).await
        }
        ApiRequest::CreateSubscribeRelation(r) => {
            subscription::create_relation(state, r, format, rid).await
        }
        ApiRequest::UpdateSubscribeRelation(r) => {
            subscription::update_relation(state, r, format, rid).await
        }
        ApiRequest::QuerySubscribeRelation(r) => {
            subscription::query_relation(state, r, format, rid)
        }
        ApiRequest::DeleteSubscribeRelation(r) => {
            subscription::delete_relation(state, r, format, rid).await
        }
        ApiRequest::CreateConsumerGroupSubscribeRelation(r) => {
            subscription::add_group_to_relation(state, r, format, rid).await
        }
        ApiRequest::DeleteConsumerGroupSubscribeRelation(r) => {
            subscription::remove_group_from_relation(state, r, format, rid).await
        }
    }
}

fn resolve(state: &Engine, r: &DeviceRef) -> Result<Device, ApiError> {
    read(&state.catalog).resolve(r).cloned().map_err(unresolved)
}

/// The product, or `iot.prod.NotExistedProduct`.
fn find_product(state: &Engine, product_key: &str) -> Result<Product, ApiError> {
    read(&state.catalog)
        .products
        .get(product_key)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::NotExistedProduct))
}
