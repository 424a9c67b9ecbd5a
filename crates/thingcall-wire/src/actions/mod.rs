//! One typed request and response per action.
//!
//! Each action implements [`Action`]: its wire name, how its parameters are
//! parsed from a [`Params`] (with Alibaba's error codes) and written back
//! (for clients), and its response body type.
//!
//! * [`invoke`] holds `InvokeThingService`, `InvokeThingsService`.
//! * [`product`] holds `CreateProduct`, `QueryProduct`, `DeleteProduct`.
//! * [`device`] holds `RegisterDevice`, `QueryDeviceDetail`, `GetDeviceStatus`,
//!   `DeleteDevice`, `DisableThing`, `EnableThing`.
//! * [`thing_model`] holds `ImportThingModelTsl`, `PublishThingModel`,
//!   `GetThingModelTsl`, `GetThingModelTslPublished`.
//! * [`service_data`] holds `QueryDeviceServiceData`.
//! * [`subscription`] holds the consumer-group and subscribe-relation
//!   actions of server-side subscription.

pub mod device;
pub mod invoke;
pub mod product;
pub mod service_data;
pub mod subscription;
pub mod thing_model;

use thingcall_core::{ApiError, DeviceRef, ErrorCode};

use crate::envelope::ResponseBody;
use crate::params::Params;

pub use device::{
    DeleteDevice, DeviceStatus, DisableThing, EnableThing, GetDeviceStatus, GetDeviceStatusData,
    QueryDeviceDetail, QueryDeviceDetailData, RegisterDevice, RegisterDeviceData,
};
pub use invoke::{InvokeThingService, InvokeThingServiceData, InvokeThingsService};
pub use product::{
    CreateProduct, CreateProductData, CreateProductResponse, DeleteProduct, QueryProduct,
    QueryProductData,
};
pub use service_data::{QueryDeviceServiceData, ServiceDataPage, ServiceInfo};
pub use subscription::{
    ClientConnection, ConsumerGroupDto, ConsumerGroupPage, ConsumerGroupStatus,
    CreateConsumerGroup, CreateConsumerGroupResponse, CreateConsumerGroupSubscribeRelation,
    CreateSubscribeRelation, DeleteConsumerGroup, DeleteConsumerGroupSubscribeRelation,
    DeleteSubscribeRelation, QueryConsumerGroupByGroupId, QueryConsumerGroupList,
    QueryConsumerGroupStatus, QuerySubscribeRelation, ResetConsumerGroupPosition,
    SubscribeRelation, UpdateConsumerGroup, UpdateSubscribeRelation,
};
pub use thing_model::{
    GetThingModelTsl, GetThingModelTslPublished, ImportThingModelTsl, PublishThingModel, TslData,
};

/// A typed API action.
pub trait Action: Sized {
    /// The `Action` parameter.
    const NAME: &'static str;
    /// What a successful call returns.
    type Response: ResponseBody;
    /// Parses the action's parameters.
    fn from_params(params: &Params) -> Result<Self, ApiError>;
    /// The action's business parameters, for a client to send.
    fn to_params(&self) -> Vec<(String, String)>;
}

/// Collects outgoing parameters.
#[derive(Default)]
pub(crate) struct Out(Vec<(String, String)>);

impl Out {
    pub(crate) fn put(&mut self, name: &str, value: impl ToString) -> &mut Out {
        self.0.push((name.to_owned(), value.to_string()));
        self
    }

    pub(crate) fn opt<T: ToString>(&mut self, name: &str, value: &Option<T>) -> &mut Out {
        if let Some(v) = value {
            self.0.push((name.to_owned(), v.to_string()));
        }
        self
    }

    pub(crate) fn device(&mut self, device: &DeviceRef) -> &mut Out {
        match device {
            DeviceRef::IotId(id) => self.put("IotId", id),
            DeviceRef::Name {
                product_key,
                device_name,
            } => self
                .put("ProductKey", product_key)
                .put("DeviceName", device_name),
        }
    }

    pub(crate) fn done(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.0)
    }
}

/// Reads the device-addressing parameters (`IotId` | `ProductKey` +
/// `DeviceName`).
pub(crate) fn device_ref(params: &Params) -> Result<DeviceRef, ApiError> {
    DeviceRef::from_params(
        params.get("IotId")?,
        params.get("ProductKey")?,
        params.get("DeviceName")?,
    )
}

/// Reads a `ProductKey` that the action requires: absent or empty is
/// `iot.prod.NullProductKey`, malformed is `iot.prod.InvalidFormattedProductkey`.
pub(crate) fn product_key(params: &Params) -> Result<thingcall_core::ProductKey, ApiError> {
    match params.get_non_empty("ProductKey")? {
        None => Err(ApiError::new(ErrorCode::NullProductKey)),
        Some(pk) => Ok(thingcall_core::ProductKey::new(pk)?),
    }
}

/// An optional free-text parameter, passed through.
pub(crate) fn text(params: &Params, name: &str) -> Result<Option<String>, ApiError> {
    Ok(params.get(name)?.map(str::to_owned))
}

/// Length in Alibaba's counting, where a CJK character counts as two.
pub(crate) fn weighted_len(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// Checks a name made of CJK characters, letters, digits and `_` (product
/// names and nicknames), with a weighted length in `min..=max`.
pub(crate) fn is_display_name(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&weighted_len(s))
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || is_cjk(c))
}

fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4e00}'..='\u{9fff}' | '\u{3400}'..='\u{4dbf}' | '\u{f900}'..='\u{faff}')
}

/// Every request thingcall understands. Exhaustive on purpose: the server
/// matches every variant, so a new action cannot reach it unhandled.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiRequest {
    /// `InvokeThingService`
    InvokeThingService(InvokeThingService),
    /// `InvokeThingsService`
    InvokeThingsService(InvokeThingsService),
    /// `CreateProduct`
    CreateProduct(CreateProduct),
    /// `QueryProduct`
    QueryProduct(QueryProduct),
    /// `DeleteProduct`
    DeleteProduct(DeleteProduct),
    /// `RegisterDevice`
    RegisterDevice(RegisterDevice),
    /// `QueryDeviceDetail`
    QueryDeviceDetail(QueryDeviceDetail),
    /// `GetDeviceStatus`
    GetDeviceStatus(GetDeviceStatus),
    /// `DeleteDevice`
    DeleteDevice(DeleteDevice),
    /// `DisableThing`
    DisableThing(DisableThing),
    /// `EnableThing`
    EnableThing(EnableThing),
    /// `ImportThingModelTsl`
    ImportThingModelTsl(ImportThingModelTsl),
    /// `PublishThingModel`
    PublishThingModel(PublishThingModel),
    /// `GetThingModelTsl`
    GetThingModelTsl(GetThingModelTsl),
    /// `GetThingModelTslPublished`
    GetThingModelTslPublished(GetThingModelTslPublished),
    /// `QueryDeviceServiceData`
    QueryDeviceServiceData(QueryDeviceServiceData),
    /// `CreateConsumerGroup`
    CreateConsumerGroup(CreateConsumerGroup),
    /// `QueryConsumerGroupList`
    QueryConsumerGroupList(QueryConsumerGroupList),
    /// `QueryConsumerGroupByGroupId`
    QueryConsumerGroupByGroupId(QueryConsumerGroupByGroupId),
    /// `UpdateConsumerGroup`
    UpdateConsumerGroup(UpdateConsumerGroup),
    /// `DeleteConsumerGroup`
    DeleteConsumerGroup(DeleteConsumerGroup),
    /// `QueryConsumerGroupStatus`
    QueryConsumerGroupStatus(QueryConsumerGroupStatus),
    /// `ResetConsumerGroupPosition`
    ResetConsumerGroupPosition(ResetConsumerGroupPosition),
    /// `CreateSubscribeRelation`
    CreateSubscribeRelation(CreateSubscribeRelation),
    /// `UpdateSubscribeRelation`
    UpdateSubscribeRelation(UpdateSubscribeRelation),
    /// `QuerySubscribeRelation`
    QuerySubscribeRelation(QuerySubscribeRelation),
    /// `DeleteSubscribeRelation`
    DeleteSubscribeRelation(DeleteSubscribeRelation),
    /// `CreateConsumerGroupSubscribeRelation`
    CreateConsumerGroupSubscribeRelation(CreateConsumerGroupSubscribeRelation),
    /// `DeleteConsumerGroupSubscribeRelation`
    DeleteConsumerGroupSubscribeRelation(DeleteConsumerGroupSubscribeRelation),
}

macro_rules! dispatch {
    ($($variant:ident),* $(,)?) => {
        /// The names of every supported action.
        pub const ACTION_NAMES: &[&str] = &[$($variant::NAME),*];

        impl ApiRequest {
            /// Parses the request for `action`. An unknown action is
            /// `InvalidAction.NotFound`.
            pub fn parse(action: &str, params: &Params) -> Result<ApiRequest, ApiError> {
                match action {
                    $( $variant::NAME => $variant::from_params(params).map(ApiRequest::$variant), )*
                    _ => Err(ApiError::new(ErrorCode::InvalidActionNotFound)),
                }
            }

            /// The action's wire name.
            pub fn action(&self) -> &'static str {
                match self {
                    $( ApiRequest::$variant(_) => $variant::NAME, )*
                }
            }

            /// The business parameters, for a client to send.
            pub fn to_params(&self) -> Vec<(String, String)> {
                match self {
                    $( ApiRequest::$variant(r) => r.to_params(), )*
                }
            }
        }
    };
}

dispatch!(
    InvokeThingService,
    InvokeThingsService,
    CreateProduct,
    QueryProduct,
    DeleteProduct,
    RegisterDevice,
    QueryDeviceDetail,
    GetDeviceStatus,
    DeleteDevice,
    DisableThing,
    EnableThing,
    ImportThingModelTsl,
    PublishThingModel,
    GetThingModelTsl,
    GetThingModelTslPublished,
    QueryDeviceServiceData,
    CreateConsumerGroup,
    QueryConsumerGroupList,
    QueryConsumerGroupByGroupId,
    UpdateConsumerGroup,
    DeleteConsumerGroup,
    QueryConsumerGroupStatus,
    ResetConsumerGroupPosition,
    CreateSubscribeRelation,
    UpdateSubscribeRelation,
    QuerySubscribeRelation,
    DeleteSubscribeRelation,
    CreateConsumerGroupSubscribeRelation,
    DeleteConsumerGroupSubscribeRelation,
);
