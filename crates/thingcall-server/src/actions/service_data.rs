//! `QueryDeviceServiceData`: invocation records.

use thingcall_core::{ApiError, ErrorCode, RequestId};
use thingcall_wire::actions::{QueryDeviceServiceData, ServiceDataPage, ServiceInfo, service_data};
use thingcall_wire::{Action, Data, Format};

use super::{ok, resolve};
use crate::engine::{Engine, store_error};
use crate::store::RecordQuery;

pub(super) async fn service_data(
    state: &Engine,
    r: QueryDeviceServiceData,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let d = resolve(state, &r.device)?;
    let ascending = r.asc == Some(1);
    let page =
        usize::try_from(r.page_size.unwrap_or(service_data::DEFAULT_PAGE_SIZE)).unwrap_or(10);
    let (from, to) = (r.start_time.min(r.end_time), r.start_time.max(r.end_time));
    let identifier = r.identifier.map(|i| i.to_string());
    let query = RecordQuery {
        iot_id: d.iot_id.clone(),
        from,
        to,
        identifier,
        ascending,
        limit: page + 1,
    };
    let mut rows = state.records.query(query).await.map_err(|e| {
        // A store that is down for now is worth a retry (503); anything
        // else is this action's own failure.
        if e.is_unavailable() {
            return store_error(e);
        }
        tracing::error!(error = %e, "QueryDeviceServiceData failed");
        ApiError::new(ErrorCode::QueryDeviceServiceHistoryFailed)
    })?;
    let next_valid = rows.len() > page;
    rows.truncate(page);
    let next_time = match rows.last() {
        Some(last) if ascending => last.time_ms + 1,
        Some(last) => last.time_ms - 1,
        None => r.start_time,
    };
    let list = rows
        .into_iter()
        .map(|i| ServiceInfo {
            identifier: i.identifier,
            name: i.name,
            time: i.time_ms.to_string(),
            input_data: i.input,
            output_data: i.output,
        })
        .collect();
    let data = ServiceDataPage {
        next_valid,
        next_time,
        list,
    };
    Ok(ok(QueryDeviceServiceData::NAME, format, rid, Data(data)))
}
