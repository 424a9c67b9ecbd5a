//! What the nodes of a cluster send each other over NATS, as JSON, and the
//! subjects they send it on.
//!
//! A product key or device name may hold characters NATS gives a meaning
//! to (`.` separates tokens), so subjects carry them hex-encoded.

use std::time::Duration;

use serde_json::{Value, json};
use thingcall_core::{AlinkReply, DeviceName, Identifier, MessageId, ProductKey, Qos, UnixMillis};
use thingcall_transport::{
    Delivered, Delivery, DeliveryKind, DeliveryOutcome, DeviceKey, DeviceReply, ReplyVia, RrpcForm,
    TransportError,
};

/// Every subject starts with this.
const PREFIX: &str = "thingcall";

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The subject a node answers on while it holds the device's session:
/// NATS interest in it *is* the device's presence.
pub(crate) fn device_subject(device: &DeviceKey) -> String {
    format!(
        "{PREFIX}.dev.{}.{}",
        hex(device.product_key.as_str()),
        hex(device.device_name.as_str())
    )
}

/// Where a device's kick goes (every node listens on `thingcall.kick.>`).
pub(crate) fn kick_subject(device: &DeviceKey) -> String {
    format!(
        "{PREFIX}.kick.{}.{}",
        hex(device.product_key.as_str()),
        hex(device.device_name.as_str())
    )
}

/// Every node's kicks.
pub(crate) const KICKS: &str = "thingcall.kick.>";
/// Presence changes of every node.
pub(crate) const PRESENCE: &str = "thingcall.presence";
/// Node heartbeats.
pub(crate) const HEARTBEAT: &str = "thingcall.heartbeat";
/// "Which devices do you hold?", asked by a node that starts or reconnects.
pub(crate) const HELLO: &str = "thingcall.hello";

/// "Do you hold this device?", sent on its subject.
pub(crate) const PROBE: &[u8] = b"probe";
/// The start of the answer to [`PROBE`], followed by the node's id.
pub(crate) const PROBE_ANSWER: &str = "held-by:";

fn text<'a>(v: &'a Value, k: &str) -> Result<&'a str, String> {
    v.get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no text field {k}"))
}

fn device_of(v: &Value) -> Result<DeviceKey, String> {
    let pk = ProductKey::new(text(v, "pk")?).map_err(|e| e.to_string())?;
    let dn = DeviceName::new(text(v, "dn")?).map_err(|e| e.to_string())?;
    Ok(DeviceKey::new(pk, dn))
}

fn parse(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// A delivery another node makes for `origin`; for a sync call, `wait` is
/// how long the holding node waits for the device's reply.
pub(crate) fn encode_delivery(
    d: &Delivery,
    origin: &str,
    wait: Duration,
) -> Result<Vec<u8>, String> {
    let payload = std::str::from_utf8(&d.payload)
        .map_err(|_| "an Alink request that is not UTF-8".to_owned())?;
    let (kind, identifier, form) = match &d.kind {
        DeliveryKind::Async { identifier } => ("async", identifier, "auto"),
        DeliveryKind::Rrpc { identifier, form } => (
            "rrpc",
            identifier,
            match form {
                RrpcForm::Auto => "auto",
                RrpcForm::System => "system",
                RrpcForm::Extended => "extended",
            },
        ),
    };
    Ok(json!({
        "origin": origin,
        "pk": d.device.product_key.as_str(),
        "dn": d.device.device_name.as_str(),
        "id": d.message_id.get(),
        "kind": kind,
        "identifier": identifier.as_str(),
        "form": form,
        "qos": match d.qos { Qos::AtMostOnce => 0, Qos::AtLeastOnce => 1 },
        "payload": payload,
        "wait_ms": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
    })
    .to_string()
    .into_bytes())
}

/// A delivery request: the delivery, the node it is made for, and how
/// long to wait for the device's reply.
pub(crate) fn decode_delivery(bytes: &[u8]) -> Result<(Delivery, String, Duration), String> {
    let v = parse(bytes)?;
    let identifier = Identifier::new(text(&v, "identifier")?).map_err(|e| e.to_string())?;
    let kind = match text(&v, "kind")? {
        "async" => DeliveryKind::Async { identifier },
        "rrpc" => DeliveryKind::Rrpc {
            identifier,
            form: match text(&v, "form")? {
                "system" => RrpcForm::System,
                "extended" => RrpcForm::Extended,
                _ => RrpcForm::Auto,
            },
        },
        other => return Err(format!("unknown delivery kind {other}")),
    };
    let delivery = Delivery {
        device: device_of(&v)?,
        message_id: MessageId::from_u64(
            v.get("id").and_then(Value::as_u64).ok_or("no message id")?,
        ),
        kind,
        qos: if v.get("qos").and_then(Value::as_u64) == Some(1) {
            Qos::AtLeastOnce
        } else {
            Qos::AtMostOnce
        },
        payload: text(&v, "payload")?.as_bytes().to_vec(),
    };
    let wait = Duration::from_millis(v.get("wait_ms").and_then(Value::as_u64).unwrap_or(0));
    Ok((delivery, text(&v, "origin")?.to_owned(), wait))
}

/// How a delivery made by another node went, with the device's reply
/// when it came in time.
pub(crate) fn encode_answer(
    outcome: &Result<Delivered, TransportError>,
    reply: Option<&DeviceReply>,
) -> Vec<u8> {
    let mut v = match outcome {
        Ok(d) => json!({
            "topic": d.topic,
            "outcome": match d.outcome {
                DeliveryOutcome::Sent => "sent",
                DeliveryOutcome::Queued => "queued",
                DeliveryOutcome::NoSubscriber => "no_subscriber",
            },
        }),
        Err(e) => json!({
            "error": match e {
                TransportError::Offline => "offline",
                TransportError::QueueFull => "queue_full",
                TransportError::Closed => "closed",
                TransportError::TimedOut => "timed_out",
                _ => "failed",
            },
            "message": e.to_string(),
        }),
    };
    if let (Some(r), Some(map)) = (reply, v.as_object_mut()) {
        map.insert("reply".to_owned(), reply_value(r));
    }
    v.to_string().into_bytes()
}

/// The outcome, and the reply if the answer carries one (a malformed reply
/// is dropped: the call then times out, as if the device never answered).
pub(crate) fn decode_answer(
    bytes: &[u8],
) -> (Result<Delivered, TransportError>, Option<DeviceReply>) {
    let v = match parse(bytes) {
        Ok(v) => v,
        Err(e) => return (Err(TransportError::Failed(e)), None),
    };
    let reply = v.get("reply").and_then(|r| match reply_from_value(r) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "a malformed reply from another node; dropped");
            None
        }
    });
    if let Some(error) = v.get("error").and_then(Value::as_str) {
        let e = match error {
            "offline" => TransportError::Offline,
            "queue_full" => TransportError::QueueFull,
            "closed" => TransportError::Closed,
            "timed_out" => TransportError::TimedOut,
            _ => TransportError::Failed(
                v.get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("delivery failed")
                    .to_owned(),
            ),
        };
        return (Err(e), None);
    }
    let outcome = match v.get("outcome").and_then(Value::as_str) {
        Some("sent") => DeliveryOutcome::Sent,
        Some("queued") => DeliveryOutcome::Queued,
        Some("no_subscriber") => DeliveryOutcome::NoSubscriber,
        _ => {
            return (
                Err(TransportError::Failed(
                    "a malformed delivery outcome".into(),
                )),
                None,
            );
        }
    };
    let delivered = Delivered {
        topic: v
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        outcome,
    };
    (Ok(delivered), reply)
}

fn reply_value(r: &DeviceReply) -> Value {
    let reply = String::from_utf8(r.reply.to_vec()).unwrap_or_default();
    json!({
        "pk": r.device.product_key.as_str(),
        "dn": r.device.device_name.as_str(),
        "id": r.message_id.map(MessageId::get),
        "via": match &r.via {
            ReplyVia::Rrpc => json!("rrpc"),
            ReplyVia::Async { identifier } => json!({"async": identifier}),
        },
        "reply": reply,
        "at": r.received_at.get(),
    })
}

fn reply_from_value(v: &Value) -> Result<DeviceReply, String> {
    let via = match v.get("via") {
        Some(Value::String(s)) if s == "rrpc" => ReplyVia::Rrpc,
        Some(Value::Object(o)) => ReplyVia::Async {
            identifier: o
                .get("async")
                .and_then(Value::as_str)
                .ok_or("no async identifier")?
                .to_owned(),
        },
        _ => return Err("no reply route".into()),
    };
    let reply = AlinkReply::from_slice(text(v, "reply")?.as_bytes()).map_err(|e| e.to_string())?;
    Ok(DeviceReply {
        device: device_of(v)?,
        message_id: v.get("id").and_then(Value::as_u64).map(MessageId::from_u64),
        via,
        reply,
        received_at: UnixMillis::new(v.get("at").and_then(Value::as_i64).unwrap_or(0)),
    })
}

/// A presence change (or, with `kick`, a request to close a session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeEvent {
    pub(crate) node: String,
    pub(crate) device: DeviceKey,
    pub(crate) online: bool,
    pub(crate) at: i64,
    pub(crate) ip: Option<String>,
    /// Why a kick closes the session.
    pub(crate) reason: String,
}

pub(crate) fn encode_event(e: &NodeEvent) -> Vec<u8> {
    json!({
        "node": e.node,
        "pk": e.device.product_key.as_str(),
        "dn": e.device.device_name.as_str(),
        "online": e.online,
        "at": e.at,
        "ip": e.ip,
        "reason": e.reason,
    })
    .to_string()
    .into_bytes()
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<NodeEvent, String> {
    let v = parse(bytes)?;
    Ok(NodeEvent {
        node: text(&v, "node")?.to_owned(),
        device: device_of(&v)?,
        online: v.get("online").and_then(Value::as_bool).unwrap_or(false),
        at: v.get("at").and_then(Value::as_i64).unwrap_or(0),
        ip: v.get("ip").and_then(Value::as_str).map(str::to_owned),
        reason: v
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A node's answer to "which devices do you hold?".
pub(crate) fn encode_holdings(node: &str, devices: &[(DeviceKey, i64, Option<String>)]) -> Vec<u8> {
    let list: Vec<Value> = devices
        .iter()
        .map(|(d, at, ip)| {
            json!({"pk": d.product_key.as_str(), "dn": d.device_name.as_str(), "at": at, "ip": ip})
        })
        .collect();
    json!({"node": node, "devices": list})
        .to_string()
        .into_bytes()
}

#[allow(clippy::type_complexity)] // a node and its devices, each with its time and address
pub(crate) fn decode_holdings(
    bytes: &[u8],
) -> Result<(String, Vec<(DeviceKey, i64, Option<String>)>), String> {
    let v = parse(bytes)?;
    let node = text(&v, "node")?.to_owned();
    let mut out = Vec::new();
    for d in v
        .get("devices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push((
            device_of(d)?,
            d.get("at").and_then(Value::as_i64).unwrap_or(0),
            d.get("ip").and_then(Value::as_str).map(str::to_owned),
        ));
    }
    Ok((node, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use thingcall_core::AlinkId;

    fn dev() -> DeviceKey {
        DeviceKey::new(
            ProductKey::new("a1TestPk001").unwrap(),
            DeviceName::new("dev.1:x@y").unwrap(),
        )
    }

    #[test]
    fn messages_round_trip() {
        let d = Delivery {
            device: dev(),
            message_id: MessageId::from_u64(u64::MAX),
            kind: DeliveryKind::Rrpc {
                identifier: Identifier::new("blk:Calibrate").unwrap(),
                form: RrpcForm::Extended,
            },
            qos: Qos::AtLeastOnce,
            payload: br#"{"id":"1","params":{"t":"\u00e9"}}"#.to_vec(),
        };
        let wait = Duration::from_millis(4500);
        let (back, origin, waited) =
            decode_delivery(&encode_delivery(&d, "node-a", wait).unwrap()).unwrap();
        assert_eq!((back, origin.as_str(), waited), (d, "node-a", wait));
        for outcome in [
            Ok(Delivered {
                topic: "/t".into(),
                outcome: DeliveryOutcome::NoSubscriber,
            }),
            Err(TransportError::QueueFull),
            Err(TransportError::Offline),
            Err(TransportError::TimedOut),
        ] {
            assert_eq!(
                decode_answer(&encode_answer(&outcome, None)),
                (outcome, None)
            );
        }
        let r = DeviceReply {
            device: dev(),
            message_id: Some(MessageId::from_u64(7)),
            via: ReplyVia::Async {
                identifier: "Reboot".into(),
            },
            reply: AlinkReply {
                id: AlinkId::new("7"),
                code: 200,
                data: json!({"a": 1}),
                message: None,
            },
            received_at: UnixMillis::new(5),
        };
        let sent = Ok(Delivered {
            topic: "/rrpc".into(),
            outcome: DeliveryOutcome::Sent,
        });
        assert_eq!(
            decode_answer(&encode_answer(&sent, Some(&r))),
            (sent, Some(r))
        );
        let e = NodeEvent {
            node: "n".into(),
            device: dev(),
            online: true,
            at: 9,
            ip: Some("10.0.0.1".into()),
            reason: "connect".into(),
        };
        assert_eq!(decode_event(&encode_event(&e)).unwrap(), e);
        let held = vec![(dev(), 3, None)];
        assert_eq!(
            decode_holdings(&encode_holdings("n", &held)).unwrap(),
            ("n".to_owned(), held)
        );
        // A dot in a name cannot split a subject.
        assert_eq!(device_subject(&dev()).matches('.').count(), 3);
        assert!(decode_delivery(b"{}").is_err());
        assert!(decode_answer(b"not json").0.is_err());
    }
}
