//! What server-side subscription forwards: the topics (the device topic
//! without its `/sys` prefix) and the JSON bodies of `amqp-subscription.md`
//! §3. Pure functions over plain values.

use serde_json::{Map, Value, json};
use thingcall_core::UnixMillis;

/// The device a message is about.
#[derive(Clone, Copy, Debug)]
pub struct About<'a> {
    /// `iotId`.
    pub iot_id: &'a str,
    /// `productKey`.
    pub product_key: &'a str,
    /// `deviceName`.
    pub device_name: &'a str,
}

/// A forwarded message before it is queued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// The forwarded topic.
    pub topic: String,
    /// The JSON body.
    pub body: Vec<u8>,
}

fn forward(topic: String, body: Value) -> Forward {
    Forward {
        topic,
        body: body.to_string().into_bytes(),
    }
}

/// `yyyy-MM-dd HH:mm:ss.SSS` in UTC+8, as the status body's `time`.
fn local_time(ms: i64) -> String {
    format!(
        "{}.{:03}",
        UnixMillis::new(ms).to_gmt8(),
        ms.rem_euclid(1000)
    )
}

/// The result of an async service call (or a delivery failure):
/// `/${pk}/${dn}/thing/downlink/reply/message` (§3.1). `request_id` is the
/// Alink id the platform sent (the call's MessageId); `service_topic` the
/// downlink topic the call went out on.
pub fn downlink_reply(
    about: About<'_>,
    request_id: u64,
    code: i64,
    message: &str,
    service_topic: &str,
    data: Value,
    now_ms: i64,
) -> Forward {
    forward(
        format!(
            "/{}/{}/thing/downlink/reply/message",
            about.product_key, about.device_name
        ),
        json!({
            "gmtCreate": now_ms,
            "iotId": about.iot_id,
            "productKey": about.product_key,
            "deviceName": about.device_name,
            "requestId": request_id,
            "code": code,
            "message": message,
            "topic": service_topic,
            "data": data,
        }),
    )
}

/// A status change: `/as/mqtt/status/${pk}/${dn}` (§3.2). `lastTime` is
/// sent equal to `time` (a legacy field).
pub fn status(about: About<'_>, online: bool, at_ms: i64, client_ip: Option<&str>) -> Forward {
    let time = local_time(at_ms);
    let utc = UnixMillis::new(at_ms).to_iso8601_millis();
    let mut body = json!({
        "status": if online { "online" } else { "offline" },
        "iotId": about.iot_id,
        "productKey": about.product_key,
        "deviceName": about.device_name,
        "time": time,
        "utcTime": utc,
        "lastTime": time,
        "utcLastTime": utc,
        "clientIp": client_ip.unwrap_or(""),
    });
    if !online && let Some(map) = body.as_object_mut() {
        // The device closed or lost its connection (no finer reason is known).
        map.insert("offlineReasonCode".into(), json!(427));
    }
    forward(
        format!(
            "/as/mqtt/status/{}/{}",
            about.product_key, about.device_name
        ),
        body,
    )
}

/// A property report: `/${pk}/${dn}/thing/event/property/post` (§3.3).
/// `params` is the Alink `params` object (`id: value` or
/// `id: {value, time}`); `device_time` the report's own time when it had one.
pub fn property_post(
    about: About<'_>,
    request_id: &str,
    params: &Map<String, Value>,
    device_time: Option<i64>,
    now_ms: i64,
) -> Forward {
    let mut items = Map::new();
    for (id, v) in params {
        let (value, time) = match v {
            Value::Object(o) if o.contains_key("value") => (
                o.get("value").cloned().unwrap_or(Value::Null),
                o.get("time").and_then(Value::as_i64),
            ),
            other => (other.clone(), None),
        };
        items.insert(
            id.clone(),
            json!({"value": value, "time": time.or(device_time).unwrap_or(now_ms)}),
        );
    }
    forward(
        format!(
            "/{}/{}/thing/event/property/post",
            about.product_key, about.device_name
        ),
        json!({
            "iotId": about.iot_id,
            "requestId": request_id,
            "productKey": about.product_key,
            "deviceName": about.device_name,
            "gmtCreate": now_ms,
            "deviceType": "CustomCategory",
            "items": Value::Object(items),
        }),
    )
}

/// An event report: `/${pk}/${dn}/thing/event/${identifier}/post` (§3.4).
#[allow(clippy::too_many_arguments)]
pub fn event_post(
    about: About<'_>,
    identifier: &str,
    name: &str,
    event_type: &str,
    request_id: &str,
    value: Value,
    device_time: Option<i64>,
    now_ms: i64,
) -> Forward {
    forward(
        format!(
            "/{}/{}/thing/event/{identifier}/post",
            about.product_key, about.device_name
        ),
        json!({
            "identifier": identifier,
            "name": name,
            "type": event_type,
            "iotId": about.iot_id,
            "requestId": request_id,
            "productKey": about.product_key,
            "deviceName": about.device_name,
            "gmtCreate": now_ms,
            "value": value,
            "time": device_time.unwrap_or(now_ms),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABOUT: About<'static> = About {
        iot_id: "id1",
        product_key: "a1pk",
        device_name: "dev",
    };

    fn parse(f: &Forward) -> Value {
        serde_json::from_slice(&f.body).unwrap()
    }

    #[test]
    fn a_reply_carries_the_documented_fields() {
        let f = downlink_reply(
            ABOUT,
            1316271929279287808,
            200,
            "success",
            "/sys/a1pk/dev/thing/service/Reboot",
            json!({"ok": 1}),
            1510292739881,
        );
        assert_eq!(f.topic, "/a1pk/dev/thing/downlink/reply/message");
        let v = parse(&f);
        assert_eq!(v["requestId"], json!(1316271929279287808u64));
        assert_eq!(v["code"], 200);
        assert_eq!(v["topic"], "/sys/a1pk/dev/thing/service/Reboot");
        assert_eq!(v["data"], json!({"ok": 1}));
        assert_eq!(v["gmtCreate"], 1510292739881i64);
    }

    #[test]
    fn status_times_are_local_and_utc() {
        // 2018-08-31T07:32:28.205Z is 15:32:28.205 in UTC+8.
        let f = status(ABOUT, true, 1535700748205, Some("192.0.2.1"));
        assert_eq!(f.topic, "/as/mqtt/status/a1pk/dev");
        let v = parse(&f);
        assert_eq!(v["status"], "online");
        assert_eq!(v["time"], "2018-08-31 15:32:28.205");
        assert_eq!(v["utcTime"], "2018-08-31T07:32:28.205Z");
        assert_eq!(v["clientIp"], "192.0.2.1");
        assert!(v.get("offlineReasonCode").is_none());
        let off = parse(&status(ABOUT, false, 1535700748205, None));
        assert_eq!(off["status"], "offline");
        assert_eq!(off["offlineReasonCode"], 427);
    }

    #[test]
    fn property_items_take_their_own_time_or_the_reports() {
        let params = json!({"Power": "on", "Temp": {"value": 21.5, "time": 5}});
        let f = property_post(ABOUT, "7", params.as_object().unwrap(), Some(3), 9);
        assert_eq!(f.topic, "/a1pk/dev/thing/event/property/post");
        let v = parse(&f);
        assert_eq!(v["items"]["Power"], json!({"value": "on", "time": 3}));
        assert_eq!(v["items"]["Temp"], json!({"value": 21.5, "time": 5}));
        assert_eq!(v["requestId"], "7");
    }

    #[test]
    fn events_name_their_type() {
        let f = event_post(
            ABOUT,
            "Overheat",
            "Overheat",
            "alert",
            "8",
            json!({"t": 90}),
            None,
            11,
        );
        assert_eq!(f.topic, "/a1pk/dev/thing/event/Overheat/post");
        let v = parse(&f);
        assert_eq!(v["type"], "alert");
        assert_eq!(v["time"], 11);
        assert_eq!(v["value"], json!({"t": 90}));
    }
}
