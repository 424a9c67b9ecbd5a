//! `CreateProduct`, `QueryProduct`, `DeleteProduct` (`management-apis.md`
//! §1 and §8).

use thingcall_core::{ApiError, ErrorCode, ProductKey, Secret};

use super::{Action, Out, is_display_name, product_key, text};
use crate::envelope::{Data, ResponseBody};
use crate::field::{WireObject, wire_struct};
use crate::node::{DecodeError, Node};
use crate::params::Params;
use crate::sink::Sink;

/// Creates a product.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateProduct {
    /// `ProductName`: 4-30 (CJK counts 2) CJK characters, letters, digits, `_`.
    pub product_name: String,
    /// `NodeType`: 0 device, 1 gateway.
    pub node_type: i64,
    /// `AliyunCommodityCode`: `iothub_senior` (thing-model product) or `iothub`.
    pub aliyun_commodity_code: Option<String>,
    /// `DataFormat`: 0 custom, 1 Alink JSON.
    pub data_format: Option<i64>,
    /// `Description`, at most 100 characters.
    pub description: Option<String>,
    /// `NetType`.
    pub net_type: Option<String>,
    /// `ProtocolType`.
    pub protocol_type: Option<String>,
    /// `AuthType`.
    pub auth_type: Option<String>,
    /// `Id2`.
    pub id2: Option<bool>,
    /// `CategoryKey`.
    pub category_key: Option<String>,
    /// `PublishAuto` (default true).
    pub publish_auto: Option<bool>,
    /// `ValidateType`: 1 weak, 2 none.
    pub validate_type: Option<i64>,
    /// `JoinPermissionId`.
    pub join_permission_id: Option<String>,
    /// `ResourceGroupId` (accepted and ignored).
    pub resource_group_id: Option<String>,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl CreateProduct {
    /// A product named `product_name` of `node_type` (0 device, 1 gateway),
    /// every optional parameter absent (the server's defaults apply; set
    /// `aliyun_commodity_code: Some("iothub_senior".into())` for a
    /// thing-model product).
    pub fn new(product_name: impl Into<String>, node_type: i64) -> Self {
        CreateProduct {
            product_name: product_name.into(),
            node_type,
            aliyun_commodity_code: None,
            data_format: None,
            description: None,
            net_type: None,
            protocol_type: None,
            auth_type: None,
            id2: None,
            category_key: None,
            publish_auto: None,
            validate_type: None,
            join_permission_id: None,
            resource_group_id: None,
            iot_instance_id: None,
        }
    }
}

impl Action for CreateProduct {
    const NAME: &'static str = "CreateProduct";
    type Response = CreateProductResponse;

    fn from_params(params: &Params) -> Result<CreateProduct, ApiError> {
        if params.is_absent("ProductName") {
            return Err(ApiError::missing("ProductName"));
        }
        if params.is_absent("NodeType") {
            return Err(ApiError::missing("NodeType"));
        }
        let product_name = match params.get_non_empty("ProductName")? {
            None => return Err(ApiError::new(ErrorCode::NullProductName)),
            Some(name) if !is_display_name(name, 4, 30) => {
                return Err(ApiError::with_detail(
                    ErrorCode::InvalidFormattedProductName,
                    "ProductName must be 4-30 characters (a CJK character counts as 2) of CJK characters, letters, digits and _.",
                ));
            }
            Some(name) => name.to_owned(),
        };
        let node_type = match params.int("NodeType")? {
            Some(n @ (0 | 1)) => n,
            _ => return Err(ApiError::new(ErrorCode::InvalidNodeType)),
        };
        let aliyun_commodity_code = text(params, "AliyunCommodityCode")?;
        if let Some(code) = &aliyun_commodity_code
            && code != "iothub_senior"
            && code != "iothub"
        {
            return Err(ApiError::new(ErrorCode::InvalidAliyunCommodityCode));
        }
        let data_format = params.int("DataFormat")?;
        if let Some(f) = data_format
            && !(0..=1).contains(&f)
        {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                format_args!("DataFormat must be 0 or 1, got {f}."),
            ));
        }
        let description = text(params, "Description")?;
        if description
            .as_deref()
            .is_some_and(|d| d.chars().count() > 100)
        {
            return Err(ApiError::new(ErrorCode::LongProductDesc));
        }
        let validate_type = params.int("ValidateType")?;
        if let Some(v) = validate_type
            && !(0..=2).contains(&v)
        {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                format_args!("ValidateType must be 0, 1 or 2, got {v}."),
            ));
        }
        Ok(CreateProduct {
            product_name,
            node_type,
            aliyun_commodity_code,
            data_format,
            description,
            net_type: text(params, "NetType")?,
            protocol_type: text(params, "ProtocolType")?,
            auth_type: text(params, "AuthType")?,
            id2: params.bool("Id2")?,
            category_key: text(params, "CategoryKey")?,
            publish_auto: params.bool("PublishAuto")?,
            validate_type,
            join_permission_id: text(params, "JoinPermissionId")?,
            resource_group_id: text(params, "ResourceGroupId")?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("ProductName", &self.product_name)
            .put("NodeType", self.node_type)
            .opt("AliyunCommodityCode", &self.aliyun_commodity_code)
            .opt("DataFormat", &self.data_format)
            .opt("Description", &self.description)
            .opt("NetType", &self.net_type)
            .opt("ProtocolType", &self.protocol_type)
            .opt("AuthType", &self.auth_type)
            .opt("Id2", &self.id2)
            .opt("CategoryKey", &self.category_key)
            .opt("PublishAuto", &self.publish_auto)
            .opt("ValidateType", &self.validate_type)
            .opt("JoinPermissionId", &self.join_permission_id)
            .opt("ResourceGroupId", &self.resource_group_id)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

wire_struct! {
    /// `Data` of a successful `CreateProduct`.
    pub struct CreateProductData {
        /// `ProductKey`.
        "ProductKey" => product_key: String,
        /// `ProductName`.
        "ProductName" => product_name: String,
        /// `ProductSecret`.
        "ProductSecret" => product_secret: Option<Secret>,
        /// `Description`.
        "Description" => description: Option<String>,
        /// `NodeType`.
        "NodeType" => node_type: Option<i64>,
        /// `DataFormat`.
        "DataFormat" => data_format: Option<i64>,
        /// `ProtocolType`.
        "ProtocolType" => protocol_type: Option<String>,
        /// `AliyunCommodityCode`.
        "AliyunCommodityCode" => aliyun_commodity_code: Option<String>,
        /// `AuthType`.
        "AuthType" => auth_type: Option<String>,
        /// `Id2`.
        "Id2" => id2: Option<bool>,
    }
}

/// The `CreateProduct` response: `ProductKey` appears both at the top level
/// and inside `Data`.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateProductResponse {
    /// Top-level `ProductKey`.
    pub product_key: String,
    /// `Data`.
    pub data: CreateProductData,
}

impl ResponseBody for CreateProductResponse {
    fn write_body<W: Sink>(&self, w: &mut W) {
        w.str("ProductKey", &self.product_key);
        w.begin_object("Data");
        self.data.write_fields(w);
        w.end_object("Data");
    }
    fn read_body(root: &Node) -> Result<CreateProductResponse, DecodeError> {
        let Data(data) = Data::<CreateProductData>::read_body(root)?;
        let product_key = root
            .field("ProductKey")
            .and_then(Node::as_text)
            .unwrap_or_else(|| data.product_key.clone());
        Ok(CreateProductResponse { product_key, data })
    }
}

/// Reads a product.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryProduct {
    /// The product.
    pub product_key: ProductKey,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl QueryProduct {
    /// For `product_key` in the default instance.
    pub fn new(product_key: ProductKey) -> Self {
        QueryProduct {
            product_key,
            iot_instance_id: None,
        }
    }
}

impl Action for QueryProduct {
    const NAME: &'static str = "QueryProduct";
    type Response = Data<QueryProductData>;

    fn from_params(params: &Params) -> Result<QueryProduct, ApiError> {
        Ok(QueryProduct {
            product_key: product_key(params)?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("ProductKey", &self.product_key)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

wire_struct! {
    /// `Data` of a successful `QueryProduct`.
    pub struct QueryProductData {
        /// `ProductKey`.
        "ProductKey" => product_key: String,
        /// `ProductName`.
        "ProductName" => product_name: String,
        /// `ProductSecret`.
        "ProductSecret" => product_secret: Option<Secret>,
        /// `Description`.
        "Description" => description: Option<String>,
        /// `NodeType`.
        "NodeType" => node_type: Option<i64>,
        /// `DataFormat`.
        "DataFormat" => data_format: Option<i64>,
        /// `AliyunCommodityCode`.
        "AliyunCommodityCode" => aliyun_commodity_code: Option<String>,
        /// `AuthType`.
        "AuthType" => auth_type: Option<String>,
        /// `Id2`.
        "Id2" => id2: Option<bool>,
        /// `NetType` (an integer here: 3 Wi-Fi, 6 cellular, 7 Ethernet, 8 other).
        "NetType" => net_type: Option<i64>,
        /// `ProtocolType`.
        "ProtocolType" => protocol_type: Option<String>,
        /// `CategoryKey`.
        "CategoryKey" => category_key: Option<String>,
        /// `CategoryName`.
        "CategoryName" => category_name: Option<String>,
        /// `DeviceCount`.
        "DeviceCount" => device_count: Option<i64>,
        /// `GmtCreate` (epoch ms).
        "GmtCreate" => gmt_create: Option<i64>,
        /// `Owner`.
        "Owner" => owner: Option<bool>,
        /// `ProductStatus`: `DEVELOPMENT_STATUS` or `RELEASE_STATUS`.
        "ProductStatus" => product_status: Option<String>,
        /// `ValidateType`.
        "ValidateType" => validate_type: Option<i64>,
    }
}

/// Deletes a product.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteProduct {
    /// The product.
    pub product_key: ProductKey,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl DeleteProduct {
    /// For `product_key` in the default instance.
    pub fn new(product_key: ProductKey) -> Self {
        DeleteProduct {
            product_key,
            iot_instance_id: None,
        }
    }
}

impl Action for DeleteProduct {
    const NAME: &'static str = "DeleteProduct";
    type Response = ();

    fn from_params(params: &Params) -> Result<DeleteProduct, ApiError> {
        Ok(DeleteProduct {
            product_key: product_key(params)?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("ProductKey", &self.product_key)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}
