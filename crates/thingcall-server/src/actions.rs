//! One handler per action. Each returns the encoded response body, or the
//! `ApiError` the HTTP layer turns into a business or gateway error.

use serde_json::{Value, json};
use thingcall_core::{ApiError, DeviceRef, ErrorCode, Qos, RequestId};
use thingcall_wire::actions::*;
use thingcall_wire::{Action, ApiRequest, Data, Format, Response, ResponseBody, encode_response};

use crate::catalog::{Device, ModelVersion, Product, gmt_utc};
use crate::ids::alnum;
use crate::repo::Change;
use crate::state::{State, device_key, read, unresolved};

/// The most model versions kept per product (Alibaba keeps 10).
const KEPT_VERSIONS: usize = 10;

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

/// Maps a uniqueness violation to `code`, anything else to a system error.
fn conflict(code: ErrorCode) -> impl FnOnce(crate::store::StoreError) -> ApiError {
    move |e| {
        if e.0.contains("UNIQUE") {
            ApiError::new(code)
        } else {
            system(e)
        }
    }
}

fn system(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "store failure");
    ApiError::new(ErrorCode::SystemException)
}

/// Runs one parsed request.
pub(crate) async fn dispatch(
    state: &State,
    request: ApiRequest,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    match request {
        ApiRequest::InvokeThingService(r) => invoke(state, r, format, rid).await,
        ApiRequest::InvokeThingsService(r) => invoke_many(state, r, format, rid).await,
        ApiRequest::CreateProduct(r) => create_product(state, r, format, rid).await,
        ApiRequest::QueryProduct(r) => query_product(state, r, format, rid),
        ApiRequest::DeleteProduct(r) => delete_product(state, r, format, rid).await,
        ApiRequest::RegisterDevice(r) => register_device(state, r, format, rid).await,
        ApiRequest::QueryDeviceDetail(r) => query_device_detail(state, &r.device, format, rid),
        ApiRequest::GetDeviceStatus(r) => get_device_status(state, &r.device, format, rid),
        ApiRequest::DeleteDevice(r) => delete_device(state, &r.device, format, rid).await,
        ApiRequest::DisableThing(r) => {
            set_enabled(state, &r.device, false, DisableThing::NAME, format, rid).await
        }
        ApiRequest::EnableThing(r) => {
            set_enabled(state, &r.device, true, EnableThing::NAME, format, rid).await
        }
        ApiRequest::ImportThingModelTsl(r) => import_tsl(state, r, format, rid).await,
        ApiRequest::PublishThingModel(r) => publish_model(state, r, format, rid).await,
        ApiRequest::GetThingModelTsl(r) => {
            let q = TslQuery {
                product_key: r.product_key.as_str(),
                version: r.model_version.as_deref(),
                block: r.function_block_id.as_deref(),
                simple: r.simple,
                published: false,
            };
            get_tsl(state, GetThingModelTsl::NAME, &q, format, rid)
        }
        ApiRequest::GetThingModelTslPublished(r) => {
            let q = TslQuery {
                product_key: r.product_key.as_str(),
                version: r.model_version.as_deref(),
                block: r.function_block_id.as_deref(),
                simple: r.simple,
                published: true,
            };
            get_tsl(state, GetThingModelTslPublished::NAME, &q, format, rid)
        }
        ApiRequest::QueryDeviceServiceData(r) => service_data(state, r, format, rid).await,
        _ => Err(ApiError::new(ErrorCode::InvalidActionNotFound)),
    }
}

fn resolve(state: &State, r: &DeviceRef) -> Result<Device, ApiError> {
    read(&state.catalog).resolve(r).cloned().map_err(unresolved)
}

async fn invoke(
    state: &State,
    r: InvokeThingService,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let device = resolve(state, &r.device)?;
    let done = state
        .invoke(&device, &r.identifier, &r.args, r.qos.unwrap_or_default())
        .await?;
    let data = InvokeThingServiceData {
        result: done.result,
        message_id: Some(done.message_id.to_string()),
    };
    Ok(ok(InvokeThingService::NAME, format, rid, Data(data)))
}

async fn invoke_many(
    state: &State,
    r: InvokeThingsService,
    format: Format,
    rid: &RequestId,
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
        )
        .await?;
    Ok(ok(InvokeThingsService::NAME, format, rid, ()))
}

/// The TSL a product starts with: no features.
fn empty_tsl(product_key: &str) -> String {
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"version": "1.0", "productKey": product_key},
        "properties": [], "events": [], "services": []
    })
    .to_string()
}

async fn create_product(
    state: &State,
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

fn product(state: &State, product_key: &str) -> Result<Product, ApiError> {
    read(&state.catalog)
        .products
        .get(product_key)
        .cloned()
        .ok_or_else(|| ApiError::new(ErrorCode::NotExistedProduct))
}

fn net_type_code(net: Option<&str>) -> Option<i64> {
    match net? {
        "WIFI" => Some(3),
        "CELLULAR" => Some(6),
        "ETHERNET" => Some(7),
        _ => Some(8),
    }
}

fn query_product(
    state: &State,
    r: QueryProduct,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = product(state, r.product_key.as_str())?;
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

async fn delete_product(
    state: &State,
    r: DeleteProduct,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = product(state, r.product_key.as_str())?;
    let now = state.now().get();
    let applied = state
        .change(Change::DeleteProduct {
            product_key: p.product_key.clone(),
            at: now,
        })
        .await
        .map_err(system)?;
    for d in applied.removed {
        if let Ok(key) = device_key(&d) {
            state.transport.disconnect(&key, "product deleted").await;
        }
    }
    Ok(ok(DeleteProduct::NAME, format, rid, ()))
}

async fn register_device(
    state: &State,
    r: RegisterDevice,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = product(state, r.product_key.as_str())?;
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

fn query_device_detail(
    state: &State,
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
        status: d.status(),
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

fn get_device_status(
    state: &State,
    r: &DeviceRef,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let d = resolve(state, r)?;
    let data = GetDeviceStatusData {
        status: d.status(),
        timestamp: Some(d.status_ms),
    };
    Ok(ok(GetDeviceStatus::NAME, format, rid, Data(data)))
}

async fn delete_device(
    state: &State,
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
        .map_err(system)?;
    if let Ok(key) = device_key(&d) {
        state.transport.disconnect(&key, "device deleted").await;
    }
    Ok(ok(DeleteDevice::NAME, format, rid, ()))
}

async fn set_enabled(
    state: &State,
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
            .map_err(system)?;
        if !enabled && let Ok(key) = device_key(&d) {
            state.transport.disconnect(&key, "device disabled").await;
        }
    }
    Ok(ok(action, format, rid, ()))
}

fn senior(p: &Product) -> Result<(), ApiError> {
    if p.is_senior() {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::NotSeniorProduct))
    }
}

/// Custom modules per product, the default one included (Alibaba's limit).
const MAX_MODULES: usize = 20;

async fn import_tsl(
    state: &State,
    r: ImportThingModelTsl,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = product(state, r.product_key.as_str())?;
    senior(&p)?;
    if let Some(block) = &r.function_block_id
        && !p.modules.contains_key(block)
        && p.modules.len() + 1 >= MAX_MODULES
    {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            format_args!("A product has at most {MAX_MODULES} modules."),
        ));
    }
    let mut doc: Value = serde_json::from_str(&r.tsl_str).map_err(|e| {
        ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            format_args!("TslStr is not JSON: {e}"),
        )
    })?;
    if let Err(problems) = thingcall_tsl::check(&doc) {
        let lines: Vec<String> = problems.iter().take(20).map(ToString::to_string).collect();
        return Err(ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            format_args!("TslStr is not a valid thing model: {}", lines.join("; ")),
        ));
    }
    // The profile names the product (and module) it is imported into,
    // whatever it said.
    if let Some(obj) = doc.as_object_mut() {
        let profile = obj.entry("profile").or_insert_with(|| json!({}));
        if let Some(profile) = profile.as_object_mut() {
            profile.insert("productKey".into(), json!(p.product_key));
            match (&r.function_block_id, &r.function_block_name) {
                (Some(id), Some(name)) => {
                    profile.insert("functionBlockId".into(), json!(id));
                    profile.insert("functionBlockName".into(), json!(name));
                }
                _ => {
                    profile.remove("functionBlockId");
                    profile.remove("functionBlockName");
                }
            }
        }
    }
    let module = match (r.function_block_id, r.function_block_name) {
        (Some(id), Some(name)) => Some((id, name)),
        _ => None,
    };
    state
        .change(Change::SetDraft {
            product_key: p.product_key.clone(),
            module,
            tsl: doc.to_string(),
        })
        .await
        .map_err(system)?;
    Ok(ok(ImportThingModelTsl::NAME, format, rid, ()))
}

async fn publish_model(
    state: &State,
    r: PublishThingModel,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = product(state, r.product_key.as_str())?;
    senior(&p)?;
    let seq = p.versions.last().map_or(1, |v| v.seq + 1);
    let version = r.model_version.unwrap_or_else(|| format!("V{seq}.0.0"));
    if p.versions.iter().any(|v| v.version == version) {
        return Err(ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            format_args!("ModelVersion {version} is already published."),
        ));
    }
    let v = ModelVersion {
        version,
        description: r.description,
        tsl: p.draft_tsl.clone(),
        created_ms: state.now().get(),
        seq,
        // A version freezes every module as it is now.
        modules: p.modules.clone(),
    };
    state
        .change(Change::Publish {
            product_key: p.product_key.clone(),
            version: v,
            keep: KEPT_VERSIONS,
        })
        .await
        .map_err(system)?;
    Ok(ok(PublishThingModel::NAME, format, rid, ()))
}

/// The `Simple=true` form: identifiers and data types only.
fn simplify(doc: &Value) -> Value {
    fn params(list: &Value) -> Value {
        Value::Array(
            list.as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|p| match p {
                            Value::Object(_) => {
                                json!({"identifier": p["identifier"], "dataType": p["dataType"]})
                            }
                            other => other.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    }
    let features = |key: &str, with: &[&str]| -> Value {
        Value::Array(
            doc[key]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .map(|f| {
                            let mut out = serde_json::Map::new();
                            out.insert("identifier".into(), f["identifier"].clone());
                            for k in with {
                                if f.get(*k).is_some() {
                                    let v = if k.ends_with("Data") {
                                        params(&f[*k])
                                    } else {
                                        f[*k].clone()
                                    };
                                    out.insert((*k).to_owned(), v);
                                }
                            }
                            Value::Object(out)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        )
    };
    json!({
        "schema": doc["schema"],
        "profile": doc["profile"],
        "properties": features("properties", &["dataType"]),
        "events": features("events", &["outputData", "method"]),
        "services": features("services", &["inputData", "outputData", "method", "callType"]),
    })
}

/// What `GetThingModelTsl` / `GetThingModelTslPublished` ask for.
struct TslQuery<'a> {
    product_key: &'a str,
    version: Option<&'a str>,
    block: Option<&'a str>,
    simple: Option<bool>,
    published: bool,
}

fn get_tsl(
    state: &State,
    action: &'static str,
    q: &TslQuery<'_>,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = product(state, q.product_key)?;
    senior(&p)?;
    let no_module = |b: &str| {
        ApiError::with_detail(
            ErrorCode::InvalidFormattedParameter,
            format_args!("The product has no module {b}."),
        )
    };
    let version = match q.version {
        Some(v) => Some(p.versions.iter().find(|m| m.version == v).ok_or_else(|| {
            ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                format_args!("No published ModelVersion {v}."),
            )
        })?),
        None if q.published => p.published(),
        None => None,
    };
    let tsl = match (version, q.block) {
        (Some(v), None) => v.tsl.clone(),
        (Some(v), Some(b)) => v.modules.get(b).cloned().ok_or_else(|| no_module(b))?,
        (None, None) if q.published => empty_tsl(&p.product_key),
        (None, None) => p.draft_tsl.clone(),
        (None, Some(b)) if q.published => {
            return Err(ApiError::with_detail(
                ErrorCode::InvalidFormattedParameter,
                format_args!("Module {b} was never published."),
            ));
        }
        (None, Some(b)) => p.modules.get(b).cloned().ok_or_else(|| no_module(b))?,
    };
    let tsl = if q.simple.unwrap_or(false) {
        serde_json::from_str::<Value>(&tsl)
            .map(|doc| simplify(&doc).to_string())
            .unwrap_or(tsl)
    } else {
        tsl
    };
    Ok(ok(
        action,
        format,
        rid,
        Data(TslData {
            tsl_str: tsl,
            tsl_uri: None,
        }),
    ))
}

async fn service_data(
    state: &State,
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
    let query = crate::repo::RecordQuery {
        iot_id: d.iot_id.clone(),
        from,
        to,
        identifier,
        ascending,
        limit: page + 1,
    };
    let mut rows = state.records.query(query).await.map_err(|e| {
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
