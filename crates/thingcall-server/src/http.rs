//! The HTTP front: Alibaba's RPC-style API on `/`, and `/metrics`.
//!
//! A request goes through, in order: method and path, the body (within its
//! size limit, its deadline and the budget of unverified bytes), parameter
//! decoding (query and form body merged), `Action`/`Version` routing, the
//! signature (v1 or v3, with nonce), typed parameter parsing, and the
//! action. Gateway errors get their HTTP status; business errors are HTTP
//! 200 with `Success=false`. Every response carries a fresh `RequestId`.
//! A response to a request whose signature and nonce did not check out
//! closes its connection, so a caller without credentials holds a
//! connection for one request at most (docs/security/strangers.md).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use thingcall_core::{API_VERSION, ApiError, ErrorCode, ErrorShape, RequestId};
use thingcall_sign::policy::{V3Request, nonce_digest, verify_v1, verify_v3};
use thingcall_wire::{
    ACTION_NAMES, ApiRequest, BusinessFailure, Format, GatewayError, Params, encode_gateway_error,
    encode_response,
};

use crate::actions;
use crate::catalog::CatalogKeys;
use crate::engine::{Engine, ServerConfig, store_error};
use crate::gate::MirrorGate;
use crate::ids::request_id;
use crate::limits::{BodyBudget, HeldBytes, LoginChecks};

/// What every connection of the HTTP front shares.
pub(crate) struct Front {
    /// The engine.
    pub(crate) engine: Arc<Engine>,
    /// The bytes of bodies held before their signature is verified.
    pub(crate) budget: BodyBudget,
    /// On a cluster node, its device logins' checks (for `/metrics`).
    pub(crate) logins: Option<Arc<LoginChecks>>,
}

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
    front: Arc<Front>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let state = &front.engine;
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
        let mut body = body;
        front.budget.render(&mut body);
        if let Some(logins) = &front.logins {
            logins.render(&mut body);
        }
        let body = match &state.node_id {
            Some(node) => crate::metrics::label_node(&body, node),
            None => body,
        };
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        // Anyone may scrape; nobody keeps a connection for it.
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
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
    let mut verified = false;
    let outcome = serve(&front, req, v3, default_format, &rid, &mut verified).await;
    let mut response = match outcome {
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
    if !verified {
        // A caller that proved nothing gets its answer and the connection
        // ends: it cannot keep a slot with one cheap request per header
        // timeout, nor pipeline more requests behind this one.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(response)
}

type Failure = (Option<String>, Format, ApiError);

/// Why a request's body was not read.
enum BodyFailure {
    /// Larger than `max_body`, or cut short by the client.
    TooLarge,
    /// It fell behind its allowance (`body_timeout` plus a second per
    /// `body_min_rate` bytes).
    TooSlow,
    /// The budget of unverified bytes is spent.
    NoBudget,
}

/// Reads a request body within its size limit and its deadline, taking its
/// bytes from the budget of unverified bytes as they arrive (so a caller
/// holds budget only for bytes it actually sent).
async fn read_body(
    mut body: Incoming,
    config: &ServerConfig,
    budget: &BodyBudget,
    held: &mut HeldBytes,
) -> Result<Bytes, BodyFailure> {
    let limit = config.max_body;
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| usize::try_from(n).map_or(true, |n| n > limit))
    {
        return Err(BodyFailure::TooLarge);
    }
    let started = tokio::time::Instant::now();
    let mut data = Vec::new();
    loop {
        // The allowance grows by a second for every `body_min_rate` bytes
        // received, as Apache's mod_reqtimeout counts `MinRate`: a client
        // that keeps at least that rate never falls behind, one that
        // drips is cut off once the first allowance is spent.
        let earned_ms = match u64::from(config.body_min_rate) {
            0 => 0,
            rate => (data.len() as u64).saturating_mul(1000) / rate,
        };
        let deadline = started + config.body_timeout + Duration::from_millis(earned_ms);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyFailure::TooSlow),
            Ok(None) => return Ok(Bytes::from(data)),
            Ok(Some(Err(_))) => return Err(BodyFailure::TooLarge),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers carry nothing the API reads
        };
        if data.len().saturating_add(chunk.len()) > limit {
            return Err(BodyFailure::TooLarge);
        }
        if !budget.take(held, chunk.len()) {
            return Err(BodyFailure::NoBudget);
        }
        data.extend_from_slice(&chunk);
    }
}

/// The documented answer to a body that was not read.
fn body_error(state: &Engine, budget: &BodyBudget, failure: BodyFailure) -> ApiError {
    let config = &state.config;
    match failure {
        BodyFailure::TooLarge => ApiError::invalid_parameter(
            "the request body",
            format_args!("is larger than {} bytes or was cut short.", config.max_body),
        ),
        BodyFailure::TooSlow => {
            state.metrics.http_body_timed_out();
            ApiError::with_detail(
                ErrorCode::RequestTimeout,
                format_args!(
                    "A body must arrive within {} ms, plus one second for every {} bytes received.",
                    config.body_timeout.as_millis(),
                    config.body_min_rate
                ),
            )
        }
        BodyFailure::NoBudget => {
            state.metrics.http_body_over_budget();
            tracing::warn!(
                budget = config.unverified_body_budget,
                held = budget.in_use(),
                "the budget of unverified request bodies is spent; refusing a body"
            );
            ApiError::with_detail(
                ErrorCode::ServiceUnavailable,
                format_args!(
                    "The server holds as many unverified request bodies as it may ({} bytes); retry later.",
                    config.unverified_body_budget
                ),
            )
        }
    }
}

async fn serve(
    front: &Front,
    req: Request<Incoming>,
    v3: bool,
    default_format: Format,
    rid: &RequestId,
    verified_out: &mut bool,
) -> Result<(String, Format, String), Failure> {
    let state = front.engine.as_ref();
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
    let mut held = HeldBytes::default();
    let body = match read_body(req.into_body(), &state.config, &front.budget, &mut held).await {
        Ok(b) => b,
        Err(failure) => {
            let e = body_error(state, &front.budget, failure);
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

    // In a cluster, nothing is answered from a mirror that is catching up:
    // the gate is held while the request reads the mirror (its AccessKey
    // here, its device and model in the action), not while it waits.
    let mut gate = MirrorGate::new(state.gate.clone());
    gate.hold().await;
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
    gate.release();
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
    // Signature and nonce checked out: the caller is no stranger, and its
    // body no longer counts against the budget of unverified bytes.
    *verified_out = true;
    drop(held);
    let request = ApiRequest::parse(&action, &params).map_err(|e| fail(action_ref, format, e))?;
    let action_name = request.action();
    gate.hold().await;
    match actions::dispatch_gated(state, request, format, rid, &mut gate).await {
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
