//! The topic ACL: a device lives in its own namespaces and nowhere else.
//!
//! Its namespaces are Alibaba's device namespaces, each holding the
//! device's product key and name:
//!
//! * `/sys/{pk}/{dn}/...` (thing model, RRPC) and `/ext/rrpc/{id}/sys/{pk}/{dn}/...`;
//! * `/ext/session/{pk}/{dn}/...` (sub-device login) and `/ext/ntp/{pk}/{dn}/...` (time);
//! * `/shadow/{op}/{pk}/{dn}` (device shadow) and `/ota/device/{op}/{pk}/{dn}` (firmware);
//! * `/{pk}/{dn}/user/...` (custom topics).
//!
//! Wildcards may only stand where they cannot reach another device: after
//! a namespace's prefix, as the `{op}` level of a shadow or OTA topic (`+`),
//! and as the message-id level of `/ext/rrpc/+/...`.

use rumqttc::mqttbytes::{valid_filter, valid_topic};
use thingcall_transport::DeviceKey;

/// First levels that belong to Alibaba's namespaces: a product with one of
/// these keys would otherwise own custom topics (`/{pk}/{dn}/user/...`)
/// that read like another device's system topics.
const RESERVED_FIRST_LEVELS: [&str; 4] = ["sys", "ext", "shadow", "ota"];

/// The prefixes under which the rest of a topic is the device's own.
fn own_prefixes(device: &DeviceKey) -> Vec<String> {
    let (pk, dn) = (device.product_key.as_str(), device.device_name.as_str());
    let mut prefixes = vec![
        format!("/sys/{pk}/{dn}/"),
        format!("/ext/session/{pk}/{dn}/"),
        format!("/ext/ntp/{pk}/{dn}/"),
    ];
    if !RESERVED_FIRST_LEVELS.contains(&pk) {
        prefixes.push(format!("/{pk}/{dn}/user/"));
    }
    prefixes
}

/// Whether `topic` is `{head}/{op}/{pk}/{dn}` for one level `op` (`+`
/// allowed when `wildcard`).
fn own_op_topic(device: &DeviceKey, head: &str, topic: &str, wildcard: bool) -> bool {
    let Some(rest) = topic.strip_prefix(head).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let tail = format!("/{}/{}", device.product_key, device.device_name);
    let Some(op) = rest.strip_suffix(tail.as_str()) else {
        return false;
    };
    !op.is_empty() && !op.contains(['/', '#']) && (wildcard || !op.contains('+'))
}

/// Splits `/ext/rrpc/{segment}{rest}` into its message-id level and the
/// rest (which starts with `/`).
fn split_ext_rrpc(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("/ext/rrpc/")?;
    let (segment, tail) = rest.split_at(rest.find('/')?);
    (!segment.is_empty()).then_some((segment, tail))
}

fn is_message_id(segment: &str) -> bool {
    segment.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the device's system namespace holds `topic` (a filter may have
/// wildcards after the prefix).
fn own_sys(device: &DeviceKey, topic: &str) -> bool {
    let prefix = format!("/sys/{}/{}/", device.product_key, device.device_name);
    topic.starts_with(&prefix) && topic.len() > prefix.len()
}

/// Whether one of the device's namespaces holds `topic`.
fn own(device: &DeviceKey, topic: &str, wildcard: bool) -> bool {
    own_prefixes(device)
        .iter()
        .any(|p| topic.starts_with(p.as_str()) && topic.len() > p.len())
        || own_op_topic(device, "/shadow", topic, wildcard)
        || own_op_topic(device, "/ota/device", topic, wildcard)
}

/// May the device publish on this topic?
pub fn may_publish(device: &DeviceKey, topic: &str) -> bool {
    if !valid_topic(topic) {
        return false;
    }
    match split_ext_rrpc(topic) {
        Some((segment, rest)) => is_message_id(segment) && own_sys(device, rest),
        None => own(device, topic, false),
    }
}

/// May the device subscribe to this filter? Wildcards are allowed only
/// where they stay inside the device's namespaces (see the module docs).
pub fn may_subscribe(device: &DeviceKey, filter: &str) -> bool {
    if !valid_filter(filter) {
        return false;
    }
    match split_ext_rrpc(filter) {
        Some((segment, rest)) => {
            (segment == "+" || is_message_id(segment)) && own_sys(device, rest)
        }
        None => own(device, filter, true),
    }
}

/// The topic a device asks for the time on, and the one it is answered on.
pub fn ntp_topics(device: &DeviceKey) -> (String, String) {
    let p = format!("/ext/ntp/{}/{}", device.product_key, device.device_name);
    (format!("{p}/request"), format!("{p}/response"))
}

/// The system topics a `_ss=1` device receives without subscribing.
pub fn system_filters(device: &DeviceKey) -> Vec<String> {
    let p = format!("/sys/{}/{}", device.product_key, device.device_name);
    vec![
        format!("{p}/thing/service/+"),
        format!("{p}/thing/service/property/set"),
        format!("{p}/thing/service/property/get"),
        format!("{p}/rrpc/request/+"),
        format!("/ext/rrpc/+{p}/thing/service/+"),
        format!("{p}/thing/event/property/post_reply"),
        format!("{p}/thing/event/+/post_reply"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use thingcall_core::{DeviceName, ProductKey};

    fn dev() -> DeviceKey {
        DeviceKey::new(
            ProductKey::new("pk1").unwrap(),
            DeviceName::new("dev1").unwrap(),
        )
    }

    #[test]
    fn publish_acl() {
        for ok in [
            "/sys/pk1/dev1/thing/service/S_reply",
            "/sys/pk1/dev1/rrpc/response/42",
            "/ext/rrpc/42/sys/pk1/dev1/thing/service/S",
            "/sys/pk1/dev1/thing/event/property/post",
        ] {
            assert!(may_publish(&dev(), ok), "{ok}");
        }
        for bad in [
            "/sys/pk1/dev2/thing/service/S_reply",
            "/sys/pk2/dev1/x",
            "/sys/pk1/dev1/",
            "/sys/pk1/dev1",
            "/ext/rrpc/42/sys/pk1/dev2/x",
            "/other",
            "/sys/pk1/dev1/+",
            "/ext/rrpc//sys/pk1/dev1/x",
        ] {
            assert!(!may_publish(&dev(), bad), "{bad}");
        }
    }

    #[test]
    fn every_device_namespace_is_open_to_its_device_only() {
        let d = dev();
        for ok in [
            "/shadow/get/pk1/dev1",
            "/shadow/update/pk1/dev1",
            "/ext/session/pk1/dev1/combine/login_reply",
            "/ext/session/pk1/dev1/combine/logout_reply",
            "/ext/ntp/pk1/dev1/response",
            "/ota/device/upgrade/pk1/dev1",
            "/pk1/dev1/user/get",
            "/pk1/dev1/user/a/b",
        ] {
            assert!(may_subscribe(&d, ok), "{ok}");
            assert!(may_publish(&d, ok), "{ok}");
        }
        for ok in [
            "/shadow/+/pk1/dev1",
            "/ota/device/+/pk1/dev1",
            "/ext/session/pk1/dev1/#",
            "/pk1/dev1/user/#",
            "/ext/ntp/pk1/dev1/+",
        ] {
            assert!(may_subscribe(&d, ok), "{ok}");
            assert!(!may_publish(&d, ok), "{ok}");
        }
        for bad in [
            "/shadow/get/pk1/dev2",
            "/shadow/get/pk2/dev1",
            "/shadow/#",
            "/shadow/get/+/dev1",
            "/shadow/get/pk1/+",
            "/shadow/get/x/pk1/dev1",
            "/shadow/pk1/dev1",
            "/ext/session/pk1/dev2/combine/login_reply",
            "/ext/session/#",
            "/ext/session/+/dev1/x",
            "/ext/ntp/pk1/dev2/response",
            "/ext/ntp/pk1/+/response",
            "/ota/device/upgrade/pk1/dev2",
            "/ota/device/#",
            "/ota/+/upgrade/pk1/dev1",
            "/pk1/dev2/user/get",
            "/pk1/+/user/get",
            "/+/dev1/user/get",
            "/pk1/dev1/user",
            "/pk1/dev1/other/x",
            "/ext/#",
            "+/+/+/+",
        ] {
            assert!(!may_subscribe(&d, bad), "{bad}");
            assert!(!may_publish(&d, bad), "{bad}");
        }
    }

    #[test]
    fn a_product_named_like_a_namespace_gets_no_custom_topics() {
        // Device (sys, pkAA) must not reach device (pkAA, user)'s /sys topics.
        let d = DeviceKey::new(
            ProductKey::new("sys").unwrap(),
            DeviceName::new("pkAA").unwrap(),
        );
        assert!(!may_subscribe(&d, "/sys/pkAA/user/thing/service/+"));
        assert!(!may_publish(&d, "/sys/pkAA/user/thing/service/S_reply"));
        assert!(may_subscribe(&d, "/sys/sys/pkAA/thing/service/+"));
    }

    #[test]
    fn subscribe_acl() {
        for ok in [
            "/sys/pk1/dev1/thing/service/+",
            "/sys/pk1/dev1/#",
            "/sys/pk1/dev1/rrpc/request/+",
            "/ext/rrpc/+/sys/pk1/dev1/thing/service/+",
            "/ext/rrpc/7/sys/pk1/dev1/thing/service/S",
        ] {
            assert!(may_subscribe(&dev(), ok), "{ok}");
        }
        for bad in [
            "#",
            "/sys/#",
            "/sys/+/dev1/x",
            "/sys/pk1/+/x",
            "/ext/rrpc/#",
            "/ext/rrpc/+/sys/pk1/dev2/x",
            "/ext/rrpc/a/sys/pk1/dev1/x",
            "/sys/pk1/dev1/a#",
        ] {
            assert!(!may_subscribe(&dev(), bad), "{bad}");
        }
        for f in system_filters(&dev()) {
            assert!(may_subscribe(&dev(), &f), "{f}");
        }
    }
}
