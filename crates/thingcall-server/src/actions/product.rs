//! `CreateProduct`, `QueryProduct`, `DeleteProduct`.

use thingcall_core::{ApiError, ErrorCode, RequestId};
use thingcall_wire::actions::{
    CreateProduct, CreateProductData, CreateProductResponse, DeleteProduct, QueryProduct,
    QueryProductData,
};
use thingcall_wire::{Action, Data, Format};

use super::thing_model::empty_tsl;
use super::{conflict, find_product, ok};
use crate::catalog::read;
use crate::engine::{Engine, device_key, store_error};
use crate::ids::alnum;
use crate::store::{Change, ModelVersion, Product};

pub(super) async fn create_product(
    state: &Engine,
    r: CreateProduct,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let product_key = {
        let c = read(&state.catalog);
        if c.products
            .values()
            .any(|p| p.product_name == r.product_name)
        {
            return Err(ApiError::new(ErrorCode::AlreadyExistedProductName));
        }
        loop {
            let pk = format!("a1{}", alnum(9));
            if !c.products.contains_key(&pk) {
                break pk;
            }
        }
    };
    let now = state.now().get();
    let senior = r.aliyun_commodity_code.as_deref() == Some("iothub_senior");
    let draft = empty_tsl(&product_key);
    let mut versions = Vec::new();
    if senior && r.publish_auto.unwrap_or(true) {
        versions.push(ModelVersion {
            version: "V1.0.0".into(),
            description: None,
            tsl: draft.clone(),
            created_ms: now,
            seq: 1,
            modules: Default::default(),
        });
    }
    let product = Product {
        product_key: product_key.clone(),
        product_name: r.product_name,
        product_secret: alnum(16).into(),
        description: r.description,
        node_type: r.node_type,
        data_format: if senior {
            Some(r.data_format.unwrap_or(1))
        } else {
            None
        },
        commodity_code: r.aliyun_commodity_code.or(Some("iothub".to_owned())),
        auth_type: r.auth_type.unwrap_or_else(|| "secret".to_owned()),
        protocol_type: r.protocol_type,
        net_type: r.net_type,
        category_key: r.category_key,
        validate_type: r.validate_type.unwrap_or(1),
        created_ms: now,
        draft_tsl: draft,
        versions,
        modules: Default::default(),
    };
    state
        .change(Change::InsertProduct(product.clone()))
        .await
        .map_err(conflict(ErrorCode::AlreadyExistedProductName))?;
    let data = CreateProductData {
        product_key: product.product_key.clone(),
        product_name: product.product_name.clone(),
        product_secret: Some(product.product_secret.clone()),
        description: product.description.clone(),
        node_type: senior.then_some(product.node_type),
        data_format: product.data_format,
        protocol_type: product.protocol_type.clone(),
        aliyun_commodity_code: product.commodity_code.clone(),
        auth_type: Some(product.auth_type.clone()),
        id2: Some(false),
    };
    Ok(ok(
        CreateProduct::NAME,
        format,
        rid,
        CreateProductResponse { product_key, data },
    ))
}

fn net_type_code(net: Option<&str>) -> Option<i64> {
    match net? {
        "WIFI" => Some(3),
        "CELLULAR" => Some(6),
        "ETHERNET" => Some(7),
        _ => Some(8),
    }
}

pub(super) fn query_product(
    state: &Engine,
    r: QueryProduct,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = find_product(state, r.product_key.as_str())?;
    let device_count = read(&state.catalog).devices_of(&p.product_key).len() as i64;
    let senior = p.is_senior();
    let data = QueryProductData {
        product_key: p.product_key,
        product_name: p.product_name,
        product_secret: Some(p.product_secret),
        description: p.description,
        node_type: senior.then_some(p.node_type),
        data_format: p.data_format,
        aliyun_commodity_code: p.commodity_code,
        auth_type: Some(p.auth_type),
        id2: Some(false),
        net_type: net_type_code(p.net_type.as_deref()),
        protocol_type: p.protocol_type,
        category_key: p.category_key,
        category_name: None,
        device_count: Some(device_count),
        gmt_create: Some(p.created_ms),
        owner: Some(true),
        product_status: Some("DEVELOPMENT_STATUS".to_owned()),
        validate_type: Some(p.validate_type),
    };
    Ok(ok(QueryProduct::NAME, format, rid, Data(data)))
}

pub(super) async fn delete_product(
    state: &Engine,
    r: DeleteProduct,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = find_product(state, r.product_key.as_str())?;
    let now = state.now().get();
    let applied = state
        .change(Change::DeleteProduct {
            product_key: p.product_key.clone(),
            at: now,
        })
        .await
        .map_err(store_error)?;
    for d in applied.removed {
        if let Ok(key) = device_key(&d) {
            state.transport.disconnect(&key, "product deleted").await;
        }
    }
    Ok(ok(DeleteProduct::NAME, format, rid, ()))
}
