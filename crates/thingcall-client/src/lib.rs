//! A typed async client for Alibaba Cloud IoT's RPC API (version
//! 2018-01-20): `InvokeThingService` and the management actions, against
//! `https://iot.{region}.aliyuncs.com` or a thingcall server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), thingcall_client::Error> {
//! use thingcall_client::{Client, Credentials, actions::InvokeThingService};
//! use thingcall_core::{DeviceRef, Identifier, IotId};
//!
//! let client = Client::builder()
//!     .endpoint_url("http://127.0.0.1:8080")?
//!     .credentials(Credentials::new("LTAI...", "secret"))
//!     .build()?;
//! let data = client
//!     .call(&InvokeThingService::new(
//!         DeviceRef::IotId(IotId::new("Q7uOhVRdZRRlDnTLv00100").unwrap()),
//!         Identifier::new("Calibrate").unwrap(),
//!         r#"{"Offset":1.5}"#,
//!     ))
//!     .await?;
//! println!("{:?}", data.0.result);
//! # Ok(()) }
//! ```
//!
//! * Credentials: explicit, then the `ALIBABA_CLOUD_*` environment, then an
//!   aliyun-cli AK profile ([`Credentials::resolve`]).
//! * Signatures: v1 (HMAC-SHA1, the default) or v3 (ACS3-HMAC-SHA256).
//! * Responses: JSON or XML, decoded through `thingcall-wire`.
//! * Retries with backoff on connection errors, `Throttling*` and
//!   `ServiceUnavailable` only; a business error is never retried.

pub mod credentials;
pub mod error;
mod insecure;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thingcall_core::{Clock, UnixMillis};
use thingcall_tls::client::Trust;
use thingcall_wire::{Action, Decoded, Format, decode_gateway_error, decode_response};

pub use credentials::Credentials;
pub use error::{Error, ErrorKind};
pub use thingcall_wire::actions;

/// The signature scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SignatureVersion {
    /// `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`.
    #[default]
    V1,
    /// `ACS3-HMAC-SHA256`.
    V3,
}

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    https: bool,
    authority: String,
}

impl Endpoint {
    /// `https://iot.{region}.aliyuncs.com`.
    pub fn from_region(region: &str) -> Endpoint {
        Endpoint {
            https: true,
            authority: format!("iot.{region}.aliyuncs.com"),
        }
    }

    /// An explicit `http://host[:port]` or `https://host[:port]` URL.
    pub fn parse(url: &str) -> Result<Endpoint, Error> {
        let (https, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            _ => {
                return Err(Error::config(format!(
                    "endpoint {url:?} must start with http:// or https://"
                )));
            }
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
            return Err(Error::config(format!(
                "endpoint {url:?} must be a scheme and a host[:port]"
            )));
        }
        Ok(Endpoint {
            https,
            authority: authority.to_owned(),
        })
    }

    /// `host[:port]`, as the `Host` header carries it.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    fn url(&self, path_and_query: &str) -> String {
        format!(
            "{}://{}{path_and_query}",
            if self.https { "https" } else { "http" },
            self.authority
        )
    }
}

/// The wall clock, for signatures.
#[derive(Debug, Clone, Copy)]
struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> UnixMillis {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        UnixMillis::new(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    endpoint: Option<Endpoint>,
    region: String,
    credentials: Option<Credentials>,
    signature: SignatureVersion,
    format: Format,
    read_timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    backoff: Duration,
    extra_roots: Vec<Vec<u8>>,
    ca_file_given: bool,
    insecure: bool,
    clock: Option<Arc<dyn Clock>>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The region (default `cn-shanghai`); also the endpoint when none is set.
    pub fn region(mut self, region: impl Into<String>) -> ClientBuilder {
        self.region = region.into();
        self
    }

    /// An explicit endpoint URL (`http://127.0.0.1:8080`, `https://...`).
    pub fn endpoint_url(mut self, url: &str) -> Result<ClientBuilder, Error> {
        self.endpoint = Some(Endpoint::parse(url)?);
        Ok(self)
    }

    /// Explicit credentials (otherwise [`Credentials::resolve`] looks).
    pub fn credentials(mut self, c: Credentials) -> ClientBuilder {
        self.credentials = Some(c);
        self
    }

    /// v1 (default) or v3 signatures.
    pub fn signature(mut self, v: SignatureVersion) -> ClientBuilder {
        self.signature = v;
        self
    }

    /// JSON (default) or XML responses (v1 only; v3 is always JSON).
    pub fn format(mut self, f: Format) -> ClientBuilder {
        self.format = f;
        self
    }

    /// How long to wait for a response (default 10 s, above the sync-call
    /// ceiling of 5-8 s).
    pub fn read_timeout(mut self, d: Duration) -> ClientBuilder {
        self.read_timeout = d;
        self
    }

    /// How many times to retry a retryable failure (default 2).
    pub fn retries(mut self, n: u32) -> ClientBuilder {
        self.retries = n;
        self
    }

    /// The first retry's delay; each next one doubles (default 200 ms).
    pub fn backoff(mut self, d: Duration) -> ClientBuilder {
        self.backoff = d;
        self
    }

    /// Trusts an extra root certificate (DER), e.g. a test server's.
    pub fn add_root_certificate(mut self, der: Vec<u8>) -> ClientBuilder {
        self.extra_roots.push(der);
        self
    }

    /// Trusts the CA certificates of a PEM file besides the public roots (a
    /// self-hosted server's CA). Without this, the file named by
    /// `ALIBABA_CLOUD_CA_BUNDLE` is used when that variable is set, as the
    /// official Python SDK does.
    pub fn ca_file(mut self, path: impl AsRef<std::path::Path>) -> Result<ClientBuilder, Error> {
        self.extra_roots.extend(read_ca_file(path.as_ref())?);
        self.ca_file_given = true;
        Ok(self)
    }

    /// **Turns certificate checking off**: any server, or anyone between,
    /// can read and change the traffic, and learn every signed request.
    /// For a throw-away local server only; prefer [`ClientBuilder::ca_file`].
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> ClientBuilder {
        self.insecure = yes;
        self
    }

    /// The clock used for signature timestamps.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> ClientBuilder {
        self.clock = Some(clock);
        self
    }

    /// Builds the client, resolving credentials.
    pub fn build(self) -> Result<Client, Error> {
        let credentials = Credentials::resolve(self.credentials)?;
        // The public roots (Alibaba's endpoints), and besides them any CA
        // the caller named (a self-hosted server's).
        let mut trust = Trust::public();
        for der in self.extra_roots {
            trust = trust.with_der(der);
        }
        if !self.ca_file_given
            && !self.insecure
            && let Some(path) = std::env::var_os(CA_BUNDLE_ENV).filter(|p| !p.is_empty())
        {
            trust = trust
                .with_ca_file(std::path::Path::new(&path))
                .map_err(|e| Error::config(format!("CA file: {e}")))?;
        }
        let tls = Arc::unwrap_or_clone(
            trust
                .client_config()
                .map_err(|e| Error::config(e.to_string()))?,
        );
        let tls = if self.insecure {
            tracing::warn!("TLS certificate checking is OFF for this client");
            insecure::disable_verification(tls)
        } else {
            tls
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = HyperClient::builder(TokioExecutor::new()).build(https);
        Ok(Client {
            inner,
            endpoint: self
                .endpoint
                .unwrap_or_else(|| Endpoint::from_region(&self.region)),
            region: self.region,
            credentials,
            signature: self.signature,
            format: self.format,
            read_timeout: self.read_timeout,
            retries: self.retries,
            backoff: self.backoff,
            clock: self.clock.unwrap_or_else(|| Arc::new(WallClock)),
        })
    }
}

/// An error with its causes ("client error (connect): ... invalid peer
/// certificate: UnknownIssuer"), so that a TLS failure says what failed.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// The environment variable naming a PEM CA bundle to trust, as the
/// official Python SDK (`aliyunsdkcore`) reads it.
pub const CA_BUNDLE_ENV: &str = "ALIBABA_CLOUD_CA_BUNDLE";

fn read_ca_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>, Error> {
    let certs = thingcall_tls::client::read_ca_file(path)
        .map_err(|e| Error::config(format!("CA file: {e}")))?;
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

/// The client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: Endpoint,
    region: String,
    credentials: Credentials,
    signature: SignatureVersion,
    format: Format,
    read_timeout: Duration,
    retries: u32,
    backoff: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            endpoint: None,
            region: "cn-shanghai".to_owned(),
            credentials: None,
            signature: SignatureVersion::V1,
            format: Format::Json,
            read_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retries: 2,
            backoff: Duration::from_millis(200),
            extra_roots: Vec::new(),
            ca_file_given: false,
            insecure: false,
            clock: None,
        }
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Builds the signed request for an action (exposed for tools such as
    /// `thingcall sign` and for tests).
    pub fn sign(&self, action: &str, params: &[(String, String)]) -> request::SignedRequest {
        let now = self.clock.now();
        let nonce = request::random_nonce();
        match self.signature {
            SignatureVersion::V1 => request::v1_request(
                action,
                params,
                &self.credentials,
                &self.region,
                self.format,
                now,
                &nonce,
            ),
            SignatureVersion::V3 => request::v3_request(
                action,
                params,
                &self.credentials,
                self.endpoint.authority(),
                now,
                &nonce,
            ),
        }
    }

    /// Calls an action and decodes its response.
    pub async fn call<A: Action>(&self, action: &A) -> Result<A::Response, Error> {
        let params = action.to_params();
        let mut attempt = 0;
        loop {
            let result = self.call_once::<A>(&params).await;
            match result {
                Err(e) if e.is_retryable() && attempt < self.retries => {
                    let delay = self.backoff * 2u32.saturating_pow(attempt);
                    tracing::debug!(action = A::NAME, error = %e, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn call_once<A: Action>(
        &self,
        params: &[(String, String)],
    ) -> Result<A::Response, Error> {
        let signed = self.sign(A::NAME, params);
        let mut builder = hyper::Request::builder()
            .method(signed.method)
            .uri(self.endpoint.url(&signed.path_and_query));
        for (k, v) in &signed.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(signed.body)))
            .map_err(|e| Error::config(e.to_string()))?;
        let exchange = async {
            let response =
                self.inner.request(request).await.map_err(|e| {
                    Error::transport(format!("request failed: {}", chain(&e)), false)
                })?;
            let status = response.status().as_u16();
            let xml = response
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("text/xml"));
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Error::transport(format!("reading the response failed: {e}"), false))?
                .to_bytes();
            Ok::<_, Error>((status, xml, body))
        };
        let (status, xml, body) = tokio::time::timeout(self.read_timeout, exchange)
            .await
            .map_err(|_| {
                Error::transport(format!("no response within {:?}", self.read_timeout), true)
            })??;
        let format = if xml { Format::Xml } else { Format::Json };
        let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        if !(200..300).contains(&status) {
            return match decode_gateway_error(format, &body) {
                Ok(g) => Err(Error::gateway(
                    status,
                    g.code,
                    g.message,
                    g.request_id.into_string(),
                )),
                Err(e) => Err(Error::decode(
                    status,
                    format!("HTTP {status}: {e}: {}", snippet()),
                )),
            };
        }
        match decode_response::<A::Response>(A::NAME, format, &body) {
            Ok(Decoded::Response(r)) => match r.outcome {
                Ok(data) => Ok(data),
                Err(f) => Err(Error::business(
                    f.code,
                    f.message,
                    r.request_id.into_string(),
                )),
            },
            Ok(Decoded::Gateway(g)) => Err(Error::gateway(
                status,
                g.code,
                g.message,
                g.request_id.into_string(),
            )),
            Err(e) => Err(Error::decode(status, format!("{e}: {}", snippet()))),
        }
    }
}

/// The README example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
