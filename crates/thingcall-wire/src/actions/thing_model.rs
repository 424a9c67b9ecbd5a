//! Thing-model actions (`management-apis.md` §6): `ImportThingModelTsl`,
//! `PublishThingModel`, `GetThingModelTsl`, `GetThingModelTslPublished`.

use thingcall_core::{ApiError, ErrorCode, ProductKey};

use super::{Action, Out, product_key, text};
use crate::envelope::Data;
use crate::field::wire_struct;
use crate::params::Params;

fn function_block_id(params: &Params) -> Result<Option<String>, ApiError> {
    let id = params.get_non_empty("FunctionBlockId")?;
    if let Some(id) = id
        && !((1..=30).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            "FunctionBlockId must be 1-30 letters, digits and _.",
        ));
    }
    Ok(id.map(str::to_owned))
}

fn model_version(params: &Params) -> Result<Option<String>, ApiError> {
    let v = params.get_non_empty("ModelVersion")?;
    if let Some(v) = v
        && !((1..=16).contains(&v.len())
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
    {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            "ModelVersion must be 1-16 letters, digits and '.'.",
        ));
    }
    Ok(v.map(str::to_owned))
}

/// Replaces the product's draft thing model.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportThingModelTsl {
    /// The product.
    pub product_key: ProductKey,
    /// `TslStr`: the whole TSL document as JSON text.
    pub tsl_str: String,
    /// `TslUrl` (accepted; Alibaba documents it as having no effect).
    pub tsl_url: Option<String>,
    /// `FunctionBlockId`: the custom module; absent for the default module.
    pub function_block_id: Option<String>,
    /// `FunctionBlockName`, given together with `FunctionBlockId`.
    pub function_block_name: Option<String>,
    /// `ResourceGroupId` (accepted and ignored).
    pub resource_group_id: Option<String>,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl ImportThingModelTsl {
    /// Replaces the default module's draft of `product_key` with `tsl_str`.
    pub fn new(product_key: ProductKey, tsl_str: impl Into<String>) -> Self {
        ImportThingModelTsl {
            product_key,
            tsl_str: tsl_str.into(),
            tsl_url: None,
            function_block_id: None,
            function_block_name: None,
            resource_group_id: None,
            iot_instance_id: None,
        }
    }
}

impl Action for ImportThingModelTsl {
    const NAME: &'static str = "ImportThingModelTsl";
    type Response = ();

    fn from_params(params: &Params) -> Result<ImportThingModelTsl, ApiError> {
        let tsl_str = params.required("TslStr")?.to_owned();
        let product_key = product_key(params)?;
        let function_block_id = function_block_id(params)?;
        let function_block_name = params
            .get_non_empty("FunctionBlockName")?
            .map(str::to_owned);
        if function_block_id.is_some() != function_block_name.is_some() {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                "FunctionBlockId and FunctionBlockName must be given together.",
            ));
        }
        Ok(ImportThingModelTsl {
            product_key,
            tsl_str,
            tsl_url: text(params, "TslUrl")?,
            function_block_id,
            function_block_name,
            resource_group_id: text(params, "ResourceGroupId")?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("ProductKey", &self.product_key)
            .put("TslStr", &self.tsl_str)
            .opt("TslUrl", &self.tsl_url)
            .opt("FunctionBlockId", &self.function_block_id)
            .opt("FunctionBlockName", &self.function_block_name)
            .opt("ResourceGroupId", &self.resource_group_id)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

/// Publishes the draft thing model as a new version.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishThingModel {
    /// The product.
    pub product_key: ProductKey,
    /// `ModelVersion` (1-16 letters, digits, `.`); generated when absent.
    pub model_version: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `ResourceGroupId` (accepted and ignored).
    pub resource_group_id: Option<String>,
    /// `IotInstanceId`.
    pub iot_instance_id: Option<String>,
}

impl PublishThingModel {
    /// Publishes the draft of `product_key` under a generated version.
    pub fn new(product_key: ProductKey) -> Self {
        PublishThingModel {
            product_key,
            model_version: None,
            description: None,
            resource_group_id: None,
            iot_instance_id: None,
        }
    }
}

impl Action for PublishThingModel {
    const NAME: &'static str = "PublishThingModel";
    type Response = ();

    fn from_params(params: &Params) -> Result<PublishThingModel, ApiError> {
        Ok(PublishThingModel {
            product_key: product_key(params)?,
            model_version: model_version(params)?,
            description: text(params, "Description")?,
            resource_group_id: text(params, "ResourceGroupId")?,
            iot_instance_id: text(params, "IotInstanceId")?,
        })
    }

    fn to_params(&self) -> Vec<(String, String)> {
        Out::default()
            .put("ProductKey", &self.product_key)
            .opt("ModelVersion", &self.model_version)
            .opt("Description", &self.description)
            .opt("ResourceGroupId", &self.resource_group_id)
            .opt("IotInstanceId", &self.iot_instance_id)
            .done()
    }
}

wire_struct! {
    /// `Data` of `GetThingModelTsl` and `GetThingModelTslPublished`.
    pub struct TslData {
        /// `TslStr`: the TSL document as JSON text.
        "TslStr" => tsl_str: String,
        /// `TslUri`: where the same document can be downloaded.
        "TslUri" => tsl_uri: Option<String>,
    }
}

macro_rules! get_tsl_action {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            /// The product.
            pub product_key: ProductKey,
            /// `ModelVersion`: a published version.
            pub model_version: Option<String>,
            /// `Simple`: only identifiers and data types (default false).
            pub simple: Option<bool>,
            /// `FunctionBlockId`: a custom module.
            pub function_block_id: Option<String>,
            /// `ResourceGroupId` (accepted and ignored).
            pub resource_group_id: Option<String>,
            /// `IotInstanceId`.
            pub iot_instance_id: Option<String>,
        }

        impl $name {
            /// The default module of `product_key`, in full.
            pub fn new(product_key: ProductKey) -> Self {
                $name {
                    product_key,
                    model_version: None,
                    simple: None,
                    function_block_id: None,
                    resource_group_id: None,
                    iot_instance_id: None,
                }
            }
        }

        impl Action for $name {
            const NAME: &'static str = stringify!($name);
            type Response = Data<TslData>;

            fn from_params(params: &Params) -> Result<$name, ApiError> {
                Ok($name {
                    product_key: product_key(params)?,
                    model_version: model_version(params)?,
                    simple: params.bool("Simple")?,
                    function_block_id: function_block_id(params)?,
                    resource_group_id: text(params, "ResourceGroupId")?,
                    iot_instance_id: text(params, "IotInstanceId")?,
                })
            }

            fn to_params(&self) -> Vec<(String, String)> {
                Out::default()
                    .put("ProductKey", &self.product_key)
                    .opt("ModelVersion", &self.model_version)
                    .opt("Simple", &self.simple)
                    .opt("FunctionBlockId", &self.function_block_id)
                    .opt("ResourceGroupId", &self.resource_group_id)
                    .opt("IotInstanceId", &self.iot_instance_id)
                    .done()
            }
        }
    };
}

get_tsl_action!(
    /// Reads the draft thing model, or a published version with `ModelVersion`.
    GetThingModelTsl
);
get_tsl_action!(
    /// Reads the latest published thing model, or the version named.
    GetThingModelTslPublished
);
