//! A consumer, as an application connects one: `thingcall subscribe` and
//! the benchmarks use it. Direct TLS (rustls with ring, the system's
//! Mozilla roots or a given CA), the signed SASL PLAIN username, one
//! receiver; each message is handed to a callback and accepted after it
//! returns.

use std::sync::Arc;

use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Session};
use thingcall_core::Secret;
use thingcall_sign::SignMethod;
use thingcall_sign::amqp::{AmqpUsername, username};
use tokio_rustls::rustls;

/// Where and as whom to subscribe.
#[derive(Clone)]
pub struct SubscribeTo {
    /// `amqps://HOST:PORT` (or `amqp://` for a local plaintext endpoint).
    pub endpoint: String,
    /// TLS settings for `amqps://` (see [`tls_config`]).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The AccessKey id.
    pub access_key_id: String,
    /// The AccessKey secret.
    pub access_key_secret: Secret,
    /// The consumer group.
    pub consumer_group_id: String,
    /// The client id shown in `QueryConsumerGroupStatus`.
    pub client_id: String,
    /// The instance, when it has an id.
    pub iot_instance_id: Option<String>,
    /// Link credit kept open.
    pub credit: u32,
}

impl std::fmt::Debug for SubscribeTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeTo")
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("consumer_group_id", &self.consumer_group_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// One received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Application property `topic`.
    pub topic: String,
    /// Application property `messageId`.
    pub message_id: String,
    /// Application property `generateTime` (ms).
    pub generate_time: i64,
    /// The payload.
    pub body: Vec<u8>,
    /// Earlier deliveries of it.
    pub delivery_count: u32,
}

/// A TLS client configuration: only the CA certificates in `ca_file` (a
/// self-hosted server's CA), or else Mozilla's public roots (Alibaba's
/// endpoint).
pub fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, thingcall_tls::TlsError> {
    use thingcall_tls::client::Trust;
    let trust = match ca_file {
        Some(path) => Trust::only().with_ca_file(path)?,
        None => Trust::public(),
    };
    trust.client_config()
}

fn string_property(
    props: &Option<fe2o3_amqp::types::messaging::ApplicationProperties>,
    name: &str,
) -> Option<String> {
    match props.as_ref()?.get(name)? {
        SimpleValue::String(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

/// Connects, attaches, and hands every message to `on_message` until it
/// returns false (the message it was given is accepted first) or the
/// connection ends.
pub async fn subscribe(
    to: &SubscribeTo,
    mut on_message: impl FnMut(Received) -> bool,
) -> Result<(), String> {
    let (secure, rest) = if let Some(r) = to.endpoint.strip_prefix("amqps://") {
        (true, r)
    } else if let Some(r) = to.endpoint.strip_prefix("amqp://") {
        (false, r)
    } else {
        return Err("the endpoint is amqps://HOST:PORT (or amqp://HOST:PORT)".into());
    };
    let authority = rest.trim_end_matches('/');
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => return Err("the endpoint has no port".into()),
    };
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
        .to_string();
    let user = username(
        &to.client_id,
        SignMethod::HmacSha1,
        &timestamp,
        &to.access_key_id,
        &to.consumer_group_id,
        to.iot_instance_id.as_deref(),
    );
    let parsed = AmqpUsername::parse(&user).map_err(|e| e.to_string())?;
    let profile = SaslProfile::Plain {
        password: parsed.password(to.access_key_secret.expose()),
        username: user,
    };
    let tcp = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let builder = Connection::builder()
        .container_id(to.client_id.clone())
        .hostname(host)
        .sasl_profile(profile)
        .idle_time_out(60_000u32);
    let mut conn = if secure {
        let config = match &to.tls {
            Some(c) => Arc::clone(c),
            None => tls_config(None).map_err(|e| e.to_string())?,
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| format!("{host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        builder.open_with_stream(stream).await
    } else {
        builder.open_with_stream(tcp).await
    }
    .map_err(|e| format!("AMQP sign-in refused: {e}"))?;
    let mut session = Session::begin(&mut conn)
        .await
        .map_err(|e| format!("cannot begin a session: {e}"))?;
    let mut receiver = Receiver::builder()
        .name(format!("{}-receiver", to.client_id))
        .source(to.consumer_group_id.clone())
        .credit_mode(CreditMode::Auto(to.credit.max(1)))
        .attach(&mut session)
        .await
        .map_err(|e| format!("cannot attach a receiver: {e}"))?;
    loop {
        let delivery = receiver
            .recv::<Body<Value>>()
            .await
            .map_err(|e| format!("the subscription ended: {e}"))?;
        let message = delivery.message();
        let props = &message.application_properties;
        let generate_time = match props.as_ref().and_then(|p| p.get("generateTime")) {
            Some(SimpleValue::Long(v)) => *v,
            _ => 0,
        };
        let body = match delivery.body() {
            Body::Data(batch) => batch.iter().flat_map(|d| d.0.to_vec()).collect(),
            _ => Vec::new(),
        };
        let received = Received {
            topic: string_property(props, "topic").unwrap_or_default(),
            message_id: string_property(props, "messageId").unwrap_or_default(),
            generate_time,
            body,
            delivery_count: message.header.as_ref().map_or(0, |h| h.delivery_count),
        };
        let more = on_message(received);
        receiver
            .accept(&delivery)
            .await
            .map_err(|e| format!("cannot accept a message: {e}"))?;
        if !more {
            break;
        }
    }
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = conn.close().await;
    Ok(())
}
