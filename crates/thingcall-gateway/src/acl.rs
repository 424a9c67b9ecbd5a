//! The topic ACL: a device lives in `/sys/{pk}/{dn}/...` and
//! `/ext/rrpc/+/sys/{pk}/{dn}/...`, and nowhere else.

use rumqttc::mqttbytes::{valid_filter, valid_topic};
use thingcall_transport::DeviceKey;

fn own_prefix(device: &DeviceKey) -> String {
    format!("/sys/{}/{}/", device.product_key, device.device_name)
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

fn own(device: &DeviceKey, topic: &str) -> bool {
    let prefix = own_prefix(device);
    topic.starts_with(&prefix) && topic.len() > prefix.len()
}

/// May the device publish on this topic?
pub fn may_publish(device: &DeviceKey, topic: &str) -> bool {
    if !valid_topic(topic) {
        return false;
    }
    match split_ext_rrpc(topic) {
        Some((segment, rest)) => is_message_id(segment) && own(device, rest),
        None => own(device, topic),
    }
}

/// May the device subscribe to this filter? Wildcards are allowed only
/// inside the device's own namespace (and as the message-id level of
/// `/ext/rrpc/+/...`).
pub fn may_subscribe(device: &DeviceKey, filter: &str) -> bool {
    if !valid_filter(filter) {
        return false;
    }
    match split_ext_rrpc(filter) {
        Some((segment, rest)) => (segment == "+" || is_message_id(segment)) && own(device, rest),
        None => own(device, filter),
    }
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
