//! `ImportThingModelTsl`, `PublishThingModel`, `GetThingModelTsl`,
//! `GetThingModelTslPublished`.

use serde_json::{Value, json};
use thingcall_core::{ApiError, ErrorCode, RequestId};
use thingcall_wire::actions::{ImportThingModelTsl, PublishThingModel, TslData};
use thingcall_wire::{Action, Data, Format};

use super::{find_product, ok};
use crate::engine::{Engine, store_error};
use crate::store::{Change, ModelVersion, Product};

/// The most model versions kept per product (Alibaba keeps 10).
const KEPT_VERSIONS: usize = 10;

/// The TSL a product starts with: no features.
pub(super) fn empty_tsl(product_key: &str) -> String {
    json!({
        "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
        "profile": {"version": "1.0", "productKey": product_key},
        "properties": [], "events": [], "services": []
    })
    .to_string()
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

pub(super) async fn import_tsl(
    state: &Engine,
    r: ImportThingModelTsl,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = find_product(state, r.product_key.as_str())?;
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
        .map_err(store_error)?;
    Ok(ok(ImportThingModelTsl::NAME, format, rid, ()))
}

pub(super) async fn publish_model(
    state: &Engine,
    r: PublishThingModel,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = find_product(state, r.product_key.as_str())?;
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
        .map_err(store_error)?;
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
pub(super) struct TslQuery<'a> {
    pub(super) product_key: &'a str,
    pub(super) version: Option<&'a str>,
    pub(super) block: Option<&'a str>,
    pub(super) simple: Option<bool>,
    pub(super) published: bool,
}

pub(super) fn get_tsl(
    state: &Engine,
    action: &'static str,
    q: &TslQuery<'_>,
    format: Format,
    rid: &RequestId,
) -> Result<String, ApiError> {
    let p = find_product(state, q.product_key)?;
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
