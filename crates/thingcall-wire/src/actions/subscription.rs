//! Server-side subscription (`amqp-subscription.md` §4): consumer groups
//! (`CreateConsumerGroup`, `QueryConsumerGroupList`,
//! `QueryConsumerGroupByGroupId`, `UpdateConsumerGroup`,
//! `DeleteConsumerGroup`, `QueryConsumerGroupStatus`,
//! `ResetConsumerGroupPosition`) and a product's subscriptions
//! (`CreateSubscribeRelation`, `UpdateSubscribeRelation`,
//! `QuerySubscribeRelation`, `DeleteSubscribeRelation`,
//! `CreateConsumerGroupSubscribeRelation`,
//! `DeleteConsumerGroupSubscribeRelation`).

use thingcall_core::{ApiError, ErrorCode, ProductKey};

use super::{Action, Out, is_display_name, product_key, text};
use crate::envelope::{Data, ResponseBody};
use crate::field::{Field, WireObject, wire_struct};
use crate::node::{DecodeError, Node};
use crate::params::Params;
use crate::sink::Sink;

/// The subscription flags, in the order Alibaba lists them.
pub const FLAGS: [&str; 10] = [
    "DeviceDataFlag",
    "DeviceStatusChangeFlag",
    "DeviceTopoLifeCycleFlag",
    "FoundDeviceListFlag",
    "ThingHistoryFlag",
    "DeviceLifeCycleFlag",
    "OtaEventFlag",
    "DeviceTagFlag",
    "OtaVersionFlag",
    "OtaJobFlag",
];

fn group_id(params: &Params, name: &str) -> Result<String, ApiError> {
    match params.get_non_empty(name)? {
        Some(id) => Ok(id.to_owned()),
        None => Err(ApiError::missing_parameter(name)),
    }
}

fn group_name(params: &Params, name: &str) -> Result<String, ApiError> {
    let Some(n) = params.get_non_empty(name)? else {
        return Err(ApiError::missing_parameter(name));
    };
    if !is_display_name(n, 4, 30) {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            format!(
                "{name} must be 4-30 characters (a CJK character counts as 2) of CJK characters, letters, digits and _."
            ),
        ));
    }
    Ok(n.to_owned())
}

/// The subscription type: `AMQP` or `MNS`.
fn kind(params: &Params) -> Result<String, ApiError> {
    match params.get_non_empty("Type")? {
        Some(t @ ("AMQP" | "MNS")) => Ok(t.to_owned()),
        Some(_) => Err(ApiError::invalid_parameter("Type", "must be AMQP or MNS.")),
        None => Err(ApiError::missing_parameter("Type")),
    }
}

macro_rules! group_action {
    ($(#[$meta:meta])* $name:ident, $response:ty) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            /// `GroupId`.
            pub group_id: String,
            /// `IotInstanceId`.
            pub iot_instance_id: Option<String>,
        }

        impl Action for $name {
            const NAME: &'static str = stringify!($name);
            type Response = $response;

            fn from_params(params: &Params) -> Result<$name, ApiError> {
                Ok($name {
                    group_id: group_id(params, "GroupId")?,
                    iot_instance_id: text(params, "IotInstanceId")?,
                })
            }

            fn to_params(&self) -> Vec<(String, String)> {
                Out::default()
                    .put("GroupId", &self.group_id)
                    .opt("IotInstanceId", &self.iot_instance_id)
                    .done()
            }
        }
    };
}

/// Creates a consumer group.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateConsumerGroup {
    /// `GroupName`: 4-30 characters.
    pub group_name: String,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl Action for CreateConsumerGroup {
    const NAME: &'static str = "CreateConsumerGroup";
    type Response = CreateConsumerGroupResponse;

    fn from_params(params: &Params) -> Result<CreateConsumerGroup, ApiError> {
        Ok(CreateConsumerGroup {
            group_name: group_name(params, "GroupName")?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("GroupName", &self.group_name)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

/// `CreateConsumerGroup`'s body: `GroupId` at the root.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateConsumerGroupResponse {
    /// `GroupId`.
    pub group_id: String,
}

impl ResponseBody for CreateConsumerGroupResponse {
    fn write_body<W: Sink>(&self, w: &mut W) {
        w.str("GroupId", &self.group_id);
    }
    fn read_body(root: &Node) -> Result<Self, DecodeError> {
        Ok(CreateConsumerGroupResponse {
            group_id: Field::read_field(root, "GroupId")?,
        })
    }
}

wire_struct! {
    /// A consumer group.
    pub struct ConsumerGroupDto {
        /// `GroupId`.
        "GroupId" => group_id: String,
        /// `GroupName`.
        "GroupName" => group_name: String,
        /// `CreateTime` (`yyyy-MM-ddTHH:mm:ss.SSSZ`).
        "CreateTime" => create_time: String,
    }
}

/// Lists consumer groups, a page at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryConsumerGroupList {
    /// `CurrentPage` (from 1).
    pub current_page: i64,
    /// `PageSize` (1-1000).
    pub page_size: i64,
    /// `Fuzzy`: match `GroupName` as a substring.
    pub fuzzy: bool,
    /// `GroupName`.
    pub group_name: Option<String>,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl Action for QueryConsumerGroupList {
    const NAME: &'static str = "QueryConsumerGroupList";
    type Response = ConsumerGroupPage;

    fn from_params(params: &Params) -> Result<QueryConsumerGroupList, ApiError> {
        let current_page = params.int("CurrentPage")?.unwrap_or(1);
        let page_size = params.int("PageSize")?.unwrap_or(10);
        if current_page < 1 || !(1..=1000).contains(&page_size) {
            return Err(ApiError::new(ErrorCode::InvalidPageParams));
        }
        let fuzzy = params.bool("Fuzzy")?.unwrap_or(false);
        let group_name = text(params, "GroupName")?.filter(|n| !n.is_empty());
        if fuzzy && group_name.is_none() {
            return Err(ApiError::missing_parameter("GroupName"));
        }
        Ok(QueryConsumerGroupList {
            current_page,
            page_size,
            fuzzy,
            group_name,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("CurrentPage", self.current_page)
            .put("PageSize", self.page_size)
            .put("Fuzzy", self.fuzzy)
            .opt("GroupName", &self.group_name)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

/// `QueryConsumerGroupList`'s body.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerGroupPage {
    /// `CurrentPage`.
    pub current_page: i64,
    /// `PageSize`.
    pub page_size: i64,
    /// `PageCount`.
    pub page_count: i64,
    /// `Total`.
    pub total: i64,
    /// `Data.ConsumerGroupDTO[]`.
    pub groups: Vec<ConsumerGroupDto>,
}

impl ResponseBody for ConsumerGroupPage {
    fn write_body<W: Sink>(&self, w: &mut W) {
        w.int("CurrentPage", self.current_page);
        w.int("PageSize", self.page_size);
        w.int("PageCount", self.page_count);
        w.int("Total", self.total);
        w.begin_list("Data", "ConsumerGroupDTO");
        for g in &self.groups {
            w.begin_item("ConsumerGroupDTO");
            g.write_fields(w);
            w.end_item("ConsumerGroupDTO");
        }
        w.end_list("Data", "ConsumerGroupDTO");
    }
    fn read_body(root: &Node) -> Result<Self, DecodeError> {
        Ok(ConsumerGroupPage {
            current_page: Field::read_field(root, "CurrentPage")?,
            page_size: Field::read_field(root, "PageSize")?,
            page_count: Field::read_field(root, "PageCount")?,
            total: Field::read_field(root, "Total")?,
            groups: root
                .list_items("Data", "ConsumerGroupDTO")?
                .into_iter()
                .map(ConsumerGroupDto::read_fields)
                .collect::<Result<_, _>>()?,
        })
    }
}

group_action!(
    /// Reads one consumer group.
    QueryConsumerGroupByGroupId,
    Data<ConsumerGroupDto>
);
group_action!(
    /// Deletes a consumer group, its backlog and its subscriptions.
    DeleteConsumerGroup,
    ()
);
group_action!(
    /// Clears a consumer group's backlog.
    ResetConsumerGroupPosition,
    ()
);
group_action!(
    /// Reads a consumer group's clients and backlog.
    QueryConsumerGroupStatus,
    ConsumerGroupStatus
);

/// Renames a consumer group.
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateConsumerGroup {
    /// `GroupId`.
    pub group_id: String,
    /// `NewGroupName`.
    pub new_group_name: String,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl Action for UpdateConsumerGroup {
    const NAME: &'static str = "UpdateConsumerGroup";
    type Response = ();

    fn from_params(params: &Params) -> Result<UpdateConsumerGroup, ApiError> {
        Ok(UpdateConsumerGroup {
            group_id: group_id(params, "GroupId")?,
            new_group_name: group_name(params, "NewGroupName")?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("GroupId", &self.group_id)
            .put("NewGroupName", &self.new_group_name)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

wire_struct! {
    /// A connected client of a consumer group.
    pub struct ClientConnection {
        /// `ClientId`.
        "ClientId" => client_id: String,
        /// `ClientIpPort` (`ip:port`).
        "ClientIpPort" => client_ip_port: String,
        /// `OnlineTime`: when it connected, epoch ms.
        "OnlineTime" => online_time: i64,
        /// `RealTimeConsumeCountPerMinute`.
        "RealTimeConsumeCountPerMinute" => real_time_per_minute: i64,
        /// `AccumulatedConsumeCountPerMinute`.
        "AccumulatedConsumeCountPerMinute" => accumulated_per_minute: i64,
    }
}

/// `QueryConsumerGroupStatus`'s body.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerGroupStatus {
    /// `AccumulationCount`: messages waiting.
    pub accumulation_count: i64,
    /// `ConsumerSpeed`: messages accepted per minute.
    pub consumer_speed: i64,
    /// `RealTimeConsumeCountPerMinute`.
    pub real_time_per_minute: i64,
    /// `AccumulatedConsumeCountPerMinute`.
    pub accumulated_per_minute: i64,
    /// `LastConsumerTime` (`yyyy-MM-ddTHH:mm:ss.SSSZ`), once any was accepted.
    pub last_consumer_time: Option<String>,
    /// `ClientConnectionStatusList.ConsumerGroupClientConnectionInfo[]`.
    pub clients: Vec<ClientConnection>,
}

impl ResponseBody for ConsumerGroupStatus {
    fn write_body<W: Sink>(&self, w: &mut W) {
        w.int("AccumulationCount", self.accumulation_count);
        w.int("ConsumerSpeed", self.consumer_speed);
        w.int("RealTimeConsumeCountPerMinute", self.real_time_per_minute);
        w.int(
            "AccumulatedConsumeCountPerMinute",
            self.accumulated_per_minute,
        );
        if let Some(t) = &self.last_consumer_time {
            w.str("LastConsumerTime", t);
        }
        w.begin_list(
            "ClientConnectionStatusList",
            "ConsumerGroupClientConnectionInfo",
        );
        for c in &self.clients {
            w.begin_item("ConsumerGroupClientConnectionInfo");
            c.write_fields(w);
            w.end_item("ConsumerGroupClientConnectionInfo");
        }
        w.end_list(
            "ClientConnectionStatusList",
            "ConsumerGroupClientConnectionInfo",
        );
    }
    fn read_body(root: &Node) -> Result<Self, DecodeError> {
        Ok(ConsumerGroupStatus {
            accumulation_count: Field::read_field(root, "AccumulationCount")?,
            consumer_speed: Field::read_field(root, "ConsumerSpeed")?,
            real_time_per_minute: Field::read_field(root, "RealTimeConsumeCountPerMinute")?,
            accumulated_per_minute: Field::read_field(root, "AccumulatedConsumeCountPerMinute")?,
            last_consumer_time: Field::read_field(root, "LastConsumerTime")?,
            clients: root
                .list_items(
                    "ClientConnectionStatusList",
                    "ConsumerGroupClientConnectionInfo",
                )?
                .into_iter()
                .map(ClientConnection::read_fields)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A product's subscription: its type, flags and consumer groups.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeRelation {
    /// `ProductKey`.
    pub product_key: ProductKey,
    /// `Type`: `AMQP` or `MNS`.
    pub kind: String,
    /// The flags set, by name (see [`FLAGS`]).
    pub flags: Vec<(String, bool)>,
    /// `ConsumerGroupIds`.
    pub consumer_group_ids: Vec<String>,
    /// `MnsConfiguration` (MNS only), as sent.
    pub mns_configuration: Option<String>,
    /// `SubscribeFlags`, as sent.
    pub subscribe_flags: Option<String>,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl SubscribeRelation {
    /// Whether `flag` is set.
    pub fn flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|(n, v)| n == flag && *v)
    }

    fn parse(params: &Params) -> Result<SubscribeRelation, ApiError> {
        let product_key = product_key(params)?;
        let kind = kind(params)?;
        let mut flags = Vec::new();
        for f in FLAGS {
            flags.push((f.to_owned(), params.bool(f)?.unwrap_or(false)));
        }
        let consumer_group_ids: Vec<String> = params
            .list("ConsumerGroupIds")?
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let mns_configuration = text(params, "MnsConfiguration")?.filter(|s| !s.is_empty());
        if kind == "AMQP" && consumer_group_ids.is_empty() {
            return Err(ApiError::missing_parameter("ConsumerGroupIds"));
        }
        if kind == "MNS" && mns_configuration.is_none() {
            return Err(ApiError::missing_parameter("MnsConfiguration"));
        }
        let subscribe_flags = text(params, "SubscribeFlags")?.filter(|s| !s.is_empty());
        if let Some(s) = &subscribe_flags
            && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).is_err()
        {
            return Err(ApiError::invalid_parameter(
                "SubscribeFlags",
                "is not a JSON object.",
            ));
        }
        Ok(SubscribeRelation {
            product_key,
            kind,
            flags,
            consumer_group_ids,
            mns_configuration,
            subscribe_flags,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn params(&self) -> Vec<(String, String)> {
        let mut out = Out::default();
        out.put("ProductKey", &self.product_key)
            .put("Type", &self.kind);
        for (n, v) in &self.flags {
            out.put(n, v);
        }
        for (i, g) in self.consumer_group_ids.iter().enumerate() {
            out.put(&format!("ConsumerGroupIds.{}", i + 1), g);
        }
        out.opt("MnsConfiguration", &self.mns_configuration)
            .opt("SubscribeFlags", &self.subscribe_flags)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

impl ResponseBody for SubscribeRelation {
    fn write_body<W: Sink>(&self, w: &mut W) {
        w.str("ProductKey", self.product_key.as_str());
        w.str("Type", &self.kind);
        for (n, v) in &self.flags {
            w.bool(n, *v);
        }
        w.strings(
            "ConsumerGroupIds",
            "ConsumerGroupId",
            &self.consumer_group_ids,
        );
        if let Some(m) = &self.mns_configuration {
            w.str("MnsConfiguration", m);
        }
        if let Some(s) = &self.subscribe_flags {
            w.str("SubscribeFlags", s);
        }
    }
    fn read_body(root: &Node) -> Result<Self, DecodeError> {
        let pk: String = Field::read_field(root, "ProductKey")?;
        let mut flags = Vec::new();
        for f in FLAGS {
            let v: Option<bool> = Field::read_field(root, f)?;
            flags.push((f.to_owned(), v.unwrap_or(false)));
        }
        Ok(SubscribeRelation {
            product_key: ProductKey::new(&pk).map_err(|e| DecodeError::new(e.to_string()))?,
            kind: Field::read_field(root, "Type")?,
            flags,
            consumer_group_ids: root
                .list_items("ConsumerGroupIds", "ConsumerGroupId")?
                .into_iter()
                .filter_map(Node::as_text)
                .collect(),
            mns_configuration: Field::read_field(root, "MnsConfiguration")?,
            subscribe_flags: Field::read_field(root, "SubscribeFlags")?,
            iot_instance_id: None,
        })
    }
}

/// Subscribes a product's messages (`Type=AMQP`: to consumer groups).
#[derive(Clone, Debug, PartialEq)]
pub struct CreateSubscribeRelation(pub SubscribeRelation);

/// Replaces a product's subscription (flags and groups).
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateSubscribeRelation(pub SubscribeRelation);

impl Action for CreateSubscribeRelation {
    const NAME: &'static str = "CreateSubscribeRelation";
    type Response = ();
    fn from_params(params: &Params) -> Result<Self, ApiError> {
        SubscribeRelation::parse(params).map(CreateSubscribeRelation)
    }
    fn to_params(&self) -> Vec<(String, String)> {
        self.0.params()
    }
}

impl Action for UpdateSubscribeRelation {
    const NAME: &'static str = "UpdateSubscribeRelation";
    type Response = ();
    fn from_params(params: &Params) -> Result<Self, ApiError> {
        SubscribeRelation::parse(params).map(UpdateSubscribeRelation)
    }
    fn to_params(&self) -> Vec<(String, String)> {
        self.0.params()
    }
}

macro_rules! relation_action {
    ($(#[$meta:meta])* $name:ident, $response:ty) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            /// `ProductKey`.
            pub product_key: ProductKey,
            /// `Type`.
            pub kind: String,
            /// `IotInstanceId`.
            pub iot_instance_id: Option<String>,
        }

        impl Action for $name {
            const NAME: &'static str = stringify!($name);
            type Response = $response;

            fn from_params(params: &Params) -> Result<$name, ApiError> {
                Ok($name {
                    product_key: product_key(params)?,
                    kind: kind(params)?,
                    iot_instance_id: text(params, "IotInstanceId")?,
                })
            }

            fn to_params(&self) -> Vec<(String, String)> {
                Out::default()
                    .put("ProductKey", &self.product_key)
                    .put("Type", &self.kind)
                    .opt("IotInstanceId", &self.iot_instance_id)
                    .done()
            }
        }
    };
}

relation_action!(
    /// Reads a product's subscription.
    QuerySubscribeRelation,
    SubscribeRelation
);
relation_action!(
    /// Deletes a product's subscription.
    DeleteSubscribeRelation,
    ()
);

macro_rules! group_relation_action {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            /// `ConsumerGroupId`.
            pub consumer_group_id: String,
            /// `ProductKey`.
            pub product_key: ProductKey,
            /// `IotInstanceId`.
            pub iot_instance_id: Option<String>,
        }

        impl Action for $name {
            const NAME: &'static str = stringify!($name);
            type Response = ();

            fn from_params(params: &Params) -> Result<$name, ApiError> {
                Ok($name {
                    consumer_group_id: group_id(params, "ConsumerGroupId")?,
                    product_key: product_key(params)?,
                    iot_instance_id: text(params, "IotInstanceId")?,
                })
            }

            fn to_params(&self) -> Vec<(String, String)> {
                Out::default()
                    .put("ConsumerGroupId", &self.consumer_group_id)
                    .put("ProductKey", &self.product_key)
                    .opt("IotInstanceId", &self.iot_instance_id)
                    .done()
            }
        }
    };
}

group_relation_action!(
    /// Adds a consumer group to a product's AMQP subscription.
    CreateConsumerGroupSubscribeRelation
);
group_relation_action!(
    /// Removes a consumer group from a product's AMQP subscription.
    DeleteConsumerGroupSubscribeRelation
);
