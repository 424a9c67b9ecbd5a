//! An in-memory transport for tests of the engine.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use thingcall_core::{AlinkReply, MessageId, UnixMillis};

use crate::{
    Delivered, Delivery, DeliveryOutcome, DeviceKey, DeviceReply, EventHub, EventStream,
    PresenceEvent, ReplyVia, Transport, TransportError, TransportEvent, delivery_topic, lock,
};

/// A transport without a network: devices are flags, deliveries are
/// recorded, replies are injected by the test.
#[derive(Debug, Default)]
pub struct MemoryTransport {
    online: Mutex<HashMap<DeviceKey, bool>>,
    delivered: Mutex<Vec<(Delivery, String)>>,
    refusals: Mutex<HashMap<DeviceKey, TransportError>>,
    unsubscribed: Mutex<std::collections::HashSet<DeviceKey>>,
    hub: EventHub,
}

impl MemoryTransport {
    /// No device online, nothing delivered.
    pub fn new() -> MemoryTransport {
        MemoryTransport::default()
    }

    /// Brings a device online; `ext_rrpc` is whether it asked for extended
    /// RRPC topics.
    pub fn set_online(&self, device: &DeviceKey, ext_rrpc: bool) {
        lock(&self.online).insert(device.clone(), ext_rrpc);
    }

    /// Takes a device offline.
    pub fn set_offline(&self, device: &DeviceKey) {
        lock(&self.online).remove(device);
    }

    /// Makes every delivery to `device` fail with `error` (`None`: deliver
    /// again), as a full queue or a failing network would.
    pub fn set_refusal(&self, device: &DeviceKey, error: Option<TransportError>) {
        let mut refusals = lock(&self.refusals);
        match error {
            Some(e) => {
                refusals.insert(device.clone(), e);
            }
            None => {
                refusals.remove(device);
            }
        }
    }

    /// Whether an online `device` subscribes to the topics calls use; one
    /// that does not gets [`DeliveryOutcome::NoSubscriber`].
    pub fn set_subscribed(&self, device: &DeviceKey, subscribed: bool) {
        let mut unsubscribed = lock(&self.unsubscribed);
        if subscribed {
            unsubscribed.remove(device);
        } else {
            unsubscribed.insert(device.clone());
        }
    }

    /// Everything delivered so far, with the topic each went to.
    pub fn deliveries(&self) -> Vec<(Delivery, String)> {
        lock(&self.delivered).clone()
    }

    /// Emits a device reply, as if the device had answered.
    pub async fn inject_reply(
        &self,
        device: &DeviceKey,
        message_id: Option<MessageId>,
        via: ReplyVia,
        reply: AlinkReply,
        at: UnixMillis,
    ) {
        let event = DeviceReply {
            device: device.clone(),
            message_id,
            via,
            reply,
            received_at: at,
        };
        self.hub.publish(TransportEvent::Reply(event)).await;
    }

    /// Emits a presence event.
    pub async fn inject_presence(&self, event: PresenceEvent) {
        self.hub.publish(TransportEvent::Presence(event)).await;
    }
}

#[async_trait]
impl Transport for MemoryTransport {
    async fn deliver(&self, delivery: Delivery) -> Result<Delivered, TransportError> {
        if let Some(e) = lock(&self.refusals).get(&delivery.device) {
            return Err(e.clone());
        }
        let ext = *lock(&self.online)
            .get(&delivery.device)
            .ok_or(TransportError::Offline)?;
        let topic =
            delivery_topic(&delivery.device, delivery.message_id, &delivery.kind, ext).to_string();
        if lock(&self.unsubscribed).contains(&delivery.device) {
            return Ok(Delivered {
                topic,
                outcome: DeliveryOutcome::NoSubscriber,
            });
        }
        lock(&self.delivered).push((delivery, topic.clone()));
        Ok(Delivered {
            topic,
            outcome: DeliveryOutcome::Sent,
        })
    }

    fn is_online(&self, device: &DeviceKey) -> bool {
        lock(&self.online).contains_key(device)
    }

    async fn disconnect(&self, device: &DeviceKey, _reason: &str) -> bool {
        lock(&self.online).remove(device).is_some()
    }

    fn subscribe(&self) -> EventStream {
        self.hub.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeliveryKind, RrpcForm};
    use thingcall_core::{AlinkId, DeviceName, Identifier, ProductKey, Qos};

    fn dev() -> DeviceKey {
        DeviceKey::new(
            ProductKey::new("a1TestPk001").unwrap(),
            DeviceName::new("dev1").unwrap(),
        )
    }

    fn rrpc(form: RrpcForm) -> Delivery {
        Delivery {
            device: dev(),
            message_id: MessageId::from_u64(7),
            kind: DeliveryKind::Rrpc {
                identifier: Identifier::new("Calibrate").unwrap(),
                form,
            },
            qos: Qos::AtMostOnce,
            payload: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn topics_follow_the_device_and_the_form() {
        let t = MemoryTransport::new();
        assert_eq!(
            t.deliver(rrpc(RrpcForm::Auto)).await,
            Err(TransportError::Offline)
        );
        t.set_online(&dev(), false);
        assert_eq!(
            t.deliver(rrpc(RrpcForm::Auto)).await.unwrap().topic,
            "/sys/a1TestPk001/dev1/rrpc/request/7"
        );
        assert_eq!(
            t.deliver(rrpc(RrpcForm::Extended)).await.unwrap().topic,
            "/ext/rrpc/7/sys/a1TestPk001/dev1/thing/service/Calibrate"
        );
        t.set_online(&dev(), true);
        assert_eq!(
            t.deliver(rrpc(RrpcForm::Auto)).await.unwrap().topic,
            "/ext/rrpc/7/sys/a1TestPk001/dev1/thing/service/Calibrate"
        );
        assert_eq!(t.deliveries().len(), 3);
        assert!(t.disconnect(&dev(), "test").await);
        assert!(!t.is_online(&dev()));
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event() {
        let t = MemoryTransport::new();
        let mut a = t.subscribe();
        let mut b = t.subscribe();
        let reply = AlinkReply::success(AlinkId::new("7"), serde_json::json!({"x": 1}));
        t.inject_reply(
            &dev(),
            Some(MessageId::from_u64(7)),
            ReplyVia::Rrpc,
            reply,
            UnixMillis::new(1),
        )
        .await;
        for rx in [&mut a, &mut b] {
            match rx.recv().await.unwrap() {
                TransportEvent::Reply(r) => assert_eq!(r.message_id, Some(MessageId::from_u64(7))),
                other => panic!("{other:?}"),
            }
        }
        drop(b);
        t.inject_presence(PresenceEvent {
            device: dev(),
            online: true,
            at: UnixMillis::new(2),
            client_addr: None,
            reason: "connect".into(),
        })
        .await;
        assert!(matches!(
            a.recv().await.unwrap(),
            TransportEvent::Presence(_)
        ));
    }
}
