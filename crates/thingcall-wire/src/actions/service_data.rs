//! `QueryDeviceServiceData` (`management-apis.md` §7): past invocations.

use thingcall_core::{ApiError, DeviceRef, ErrorCode, Identifier};

use super::{Action, Out, device_ref, text};
use crate::envelope::Data;
use crate::field::{WireObject, wire_struct};
use crate::node::{DecodeError, Node};
use crate::params::Params;
use crate::sink::Sink;

/// `PageSize` when none is given.
pub const DEFAULT_PAGE_SIZE: i64 = 10;
/// The largest `PageSize` allowed.
pub const MAX_PAGE_SIZE: i64 = 50;

/// Queries a device's service-call records.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryDeviceServiceData {
    /// The device.
    pub device: DeviceRef,
    /// `StartTime` (epoch ms).
    pub start_time: i64,
    /// `EndTime` (epoch ms).
    pub end_time: i64,
    /// `Identifier`: one service; all services when absent.
    pub identifier: Option<Identifier>,
    /// `Asc`: 1 chronological, 0 reverse (the default).
    pub asc: Option<i64>,
    /// `PageSize`: 1-50 (default 10).
    pub page_size: Option<i64>,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl QueryDeviceServiceData {
    /// The records of `device` between `start_time` and `end_time` (epoch
    /// ms, either order), newest first, 10 per page.
    pub fn new(device: DeviceRef, start_time: i64, end_time: i64) -> Self {
        QueryDeviceServiceData {
            device,
            start_time,
            end_time,
            identifier: None,
            asc: None,
            page_size: None,
            iot_instance_id: None,
        }
    }
}

impl Action for QueryDeviceServiceData {
    const NAME: &'static str = "QueryDeviceServiceData";
    type Response = Data<ServiceDataPage>;

    fn from_params(params: &Params) -> Result<QueryDeviceServiceData, ApiError> {
        let start_time = params
            .int("StartTime")?
            .ok_or_else(|| ApiError::missing("StartTime"))?;
        let end_time = params
            .int("EndTime")?
            .ok_or_else(|| ApiError::missing("EndTime"))?;
        let asc = params.int("Asc")?;
        if let Some(a) = asc
            && a != 0
            && a != 1
        {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                format_args!("Asc must be 0 or 1, got {a}."),
            ));
        }
        let page_size = params.int("PageSize")?;
        if let Some(size) = page_size
            && !(1..=MAX_PAGE_SIZE).contains(&size)
        {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidPageParams,
                format_args!("PageSize must be 1-{MAX_PAGE_SIZE}, got {size}."),
            ));
        }
        let device = device_ref(params)?;
        let identifier = params
            .get_non_empty("Identifier")?
            .map(|id| {
                Identifier::new(id)
                    .map_err(|e| ApiError::with_detail(ErrorCode::InvalidFormattedParameter, e))
            })
            .transpose()?;
        Ok(QueryDeviceServiceData {
            device,
            start_time,
            end_time,
            identifier,
            asc,
            page_size,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .device(&self.device)
            .put("StartTime", self.start_time)
            .put("EndTime", self.end_time)
            .opt("Identifier", &self.identifier)
            .opt("Asc", &self.asc)
            .opt("PageSize", &self.page_size)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

wire_struct! {
    /// One recorded service call.
    pub struct ServiceInfo {
        /// `Identifier`.
        "Identifier" => identifier: String,
        /// `Name`: the service's name in the thing model.
        "Name" => name: String,
        /// `Time`: call time, epoch ms as a string of digits.
        "Time" => time: String,
        /// `InputData`: the call's `Args`.
        "InputData" => input_data: String,
        /// `OutputData`: the device's whole Alink reply, empty until it comes.
        "OutputData" => output_data: Option<String>,
    }
}

/// `Data` of a successful `QueryDeviceServiceData`.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceDataPage {
    /// `NextValid`: another page exists.
    pub next_valid: bool,
    /// `NextTime`: the `StartTime` of the next page.
    pub next_time: i64,
    /// `List.ServiceInfo[]`.
    pub list: Vec<ServiceInfo>,
}

impl WireObject for ServiceDataPage {
    fn write_fields<W: Sink>(&self, w: &mut W) {
        w.bool("NextValid", self.next_valid);
        w.int("NextTime", self.next_time);
        w.begin_list("List", "ServiceInfo");
        for item in &self.list {
            w.begin_item("ServiceInfo");
            item.write_fields(w);
            w.end_item("ServiceInfo");
        }
        w.end_list("List", "ServiceInfo");
    }

    fn read_fields(node: &Node) -> Result<ServiceDataPage, DecodeError> {
        let list = node
            .list_items("List", "ServiceInfo")?
            .into_iter()
            .map(ServiceInfo::read_fields)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServiceDataPage {
            next_valid: crate::field::Field::read_field(node, "NextValid")?,
            next_time: crate::field::Field::read_field(node, "NextTime")?,
            list,
        })
    }
}
