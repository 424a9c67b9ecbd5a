//! The HTTP front: Alibaba's RPC-style API on `/`, and `/metrics`.
//!
//! A request goes through, in order: method and path, body size, parameter
//! decoding (query and form body merged), `Action`/`Version` routing, the
//! signature (v1 or v3, with nonce), typed parameter parsing, and the
//! action. Gateway errors get their HTTP status; business errors are HTTP
//! 200 with `Success=false`. Every response carries a fresh `RequestId`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use thingcall_core::{API_VERSION, ApiError, ErrorCode, ErrorShape, RequestId};
use thingcall_sign::policy::{V3Request, nonce_digest, verify_v1, verify_v3};
use thingcall_wire::{
    ACTION_NAMES, ApiRequest, BusinessFailure, Format, GatewayError, Params, encode_gateway_error,
    encode_response,
};

use crate::actions;
use crate::catalog::CatalogKeys;
use crate::engine::{Engine, store_error};
use crate::ids::request_id;

fn respond(status: u16, format: Format, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

fn error_response(
    action: &str,
    format: Format,
    host: &str,
    rid: RequestId,
    e: &ApiError,
) -> Response<Full<Bytes>> {
    match e.shape() {
        ErrorShape::Business => {
            // Any action's envelope works for a failure; the root element
            // must still name the action.
            let action = ACTION_NAMES
                .iter()
                .find(|a| **a == action)
                .copied()
                .unwrap_or("Unknown");
            let body = encode_response::<()>(
                action,
                format,
                &thingcall_wire::Response {
                    request_id: rid,
                    outcome: Err(BusinessFailure::from(e)),
                },
            );
            respond(200, format, body)
        }
        ErrorShape::Gateway => {
            let body = encode_gateway_error(format, &GatewayError::from_api_error(e, rid, host));
            respond(e.http_status(), format, body)
        }
    }
}

struct Parsed {
    action: String,
    format: Format,
    params: Params,
}

/// Handles one HTTP request.
pub(crate) async fn handle(
    state: Arc<Engine>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/metrics" && req.method() == Method::GET {
        let online = state.online_count();
        let body = state.metrics.render(
            online,
            state.models.len(),
            state.nonces.len(),
            state.gateway_metrics(),
            state.records.stats(),
        );
        let body = match &state.subscribe {
            Some(s) => body + &s.render_metrics().await,
            None => body,
        };
        let body = match &state.node_id {
            Some(node) => crate::metrics::label_node(&body, node),
            None => body,
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return Ok(r);
    }
    let rid = request_id();
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let v3 = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.trim_start().starts_with("ACS3-"));
    // Until the request says otherwise, v1 answers in XML and v3 in JSON.
    let default_format = if v3 { Format::Json } else { Format::Xml };
    let outcome = serve(&state, req, v3, default_format, &rid).await;
    let response = match outcome {
        Ok((action, format, body)) => {
            state.metrics.count_request(&action, "Success");
            respond(200, format, body)
        }
        Err((action, format, e)) => {
            state
                .metrics
                .count_request(action.as_deref().unwrap_or("-"), e.wire_code());
            tracing::debug!(action = ?action, code = e.wire_code(), "request failed");
            error_response(action.as_deref().unwrap_or(""), format, &host, rid, &e)
        }
    };
    Ok(response)
}

type Failure = (Option<String>, Format, ApiError);

async fn serve(
    state: &Engine,
    req: Request<Incoming>,
    v3: bool,
    default_format: Format,
    rid: &RequestId,
) -> Result<(String, Format, String), Failure> {
    let fail =
        |action: Option<&str>, format: Format, e: ApiError| (action.map(str::to_owned), format, e);
    if req.uri().path() != "/" || !(req.method() == Method::GET || req.method() == Method::POST) {
        return Err(fail(
            None,
            default_format,
            ApiError::new(ErrorCode::InvalidActionNotFound),
        ));
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let body = match Limited::new(req.into_body(), state.config.max_body)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            let e = ApiError::invalid_parameter(
                "the request body",
                format_args!(
                    "is larger than {} bytes or was cut short.",
                    state.config.max_body
                ),
            );
            return Err(fail(None, default_format, e));
        }
    };
    let parsed = parse(
        &query,
        is_form.then_some(&body[..]),
        &headers,
        v3,
        default_format,
    )?;
    let Parsed {
        action,
        format,
        params,
    } = parsed;
    let action_ref = Some(action.as_str());

    // In a cluster, nothing is answered from a mirror that is catching up.
    let _gate = match &state.gate {
        Some(gate) => Some(gate.read().await),
        None => None,
    };
    // Signature (the order inside follows the spec digest §2.7).
    let now = state.now();
    let verified = if v3 {
        let request = V3Request {
            method: &method,
            path: &path,
            raw_query: &query,
            headers: &headers,
            body: &body,
        };
        verify_v3(
            &request,
            &CatalogKeys(&state.catalog),
            &state.nonces,
            now,
            &state.config.verify,
        )
    } else {
        verify_v1(
            &method,
            params.pairs(),
            &CatalogKeys(&state.catalog),
            &state.nonces,
            now,
            &state.config.verify,
        )
    };
    let verified = verified.map_err(|e| fail(action_ref, format, e))?;
    if let Some(shared) = &state.shared_nonces {
        // This node has not seen the nonce; has any other?
        let digest = nonce_digest(&verified.access_key_id, &verified.nonce);
        let expires = verified
            .timestamp
            .get()
            .saturating_add(state.config.verify.window_millis + 1);
        match shared.claim(digest, now.get(), expires).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(fail(
                    action_ref,
                    format,
                    ApiError::new(ErrorCode::SignatureNonceUsed),
                ));
            }
            Err(e) => return Err(fail(action_ref, format, store_error(e))),
        }
    }
    let request = ApiRequest::parse(&action, &params).map_err(|e| fail(action_ref, format, e))?;
    let action_name = request.action();
    match actions::dispatch(state, request, format, rid).await {
        Ok(body) => Ok((action_name.to_owned(), format, body)),
        Err(e) => Err(fail(Some(action_name), format, e)),
    }
}

fn parse(
    query: &str,
    body: Option<&[u8]>,
    headers: &[(String, String)],
    v3: bool,
    default_format: Format,
) -> Result<Parsed, Failure> {
    let mut params = Params::from_query_and_body(query.as_bytes(), body)
        .map_err(|e| (None, default_format, e))?;
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    // v3 carries Action and Version in headers; add them so the request
    // parses the same way as a v1 one.
    if v3 {
        if let Some(a) = header("x-acs-action")
            && params.is_absent("Action")
        {
            params.push("Action", a);
        }
        if let Some(v) = header("x-acs-version")
            && params.is_absent("Version")
        {
            params.push("Version", v);
        }
    }
    let format = match params.get("Format") {
        Ok(Some(f)) => Format::parse(f).map_err(|e| (None, default_format, e))?,
        Ok(None) => default_format,
        Err(e) => return Err((None, default_format, e)),
    };
    let action = params
        .required("Action")
        .map_err(|e| (None, format, e))?
        .to_owned();
    if !ACTION_NAMES.contains(&action.as_str()) {
        return Err((
            None,
            format,
            ApiError::new(ErrorCode::InvalidActionNotFound),
        ));
    }
    match params.get("Version") {
        Ok(Some(API_VERSION)) => {}
        Ok(Some(_)) => {
            return Err((
                Some(action),
                format,
                ApiError::new(ErrorCode::InvalidVersion),
            ));
        }
        Ok(None) => return Err((Some(action), format, ApiError::missing("Version"))),
        Err(e) => return Err((Some(action), format, e)),
    }
    Ok(Parsed {
        action,
        format,
        params,
    })
}
