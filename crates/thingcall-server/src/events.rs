//! The event loop: device replies and presence changes, as the transport
//! reports them.
//!
//! A reply completes only the call of the device that sent it: a pending
//! sync call of that device with that message id, or else that device's
//! record with that id (an async call, or a sync call that timed out).
//! Anything else is ignored and counted. Presence changes are queued as
//! registry changes without waiting for their commit, so the loop keeps
//! pace with the devices, not with the disk.

use std::sync::Arc;

use thingcall_transport::{
    DeviceKey, DeviceReply, EventStream, PostEvent, PresenceEvent, ReplyVia, TransportEvent,
};

use thingcall_amqp::message::{self, About};

use crate::catalog::read;
use crate::engine::{Engine, recorded_reply};
use crate::store::{Change, Completion, Outcome};
use crate::sync::lock;

/// When a reply finds no record in a cluster, how long to wait before each
/// further look (another node's record may not have reached the store).
const CROSS_NODE_RETRY_MS: [u64; 3] = [50, 250, 1000];

impl Engine {
    /// Follows the transport's events until it closes.
    pub(crate) async fn run_events(self: Arc<Self>, mut events: EventStream) {
        while let Some(event) = events.recv().await {
            match event {
                TransportEvent::Reply(reply) => self.on_reply(reply).await,
                TransportEvent::Presence(p) => self.on_presence(p).await,
                TransportEvent::Post(p) => self.forward_post(&p).await,
            }
        }
    }

    /// Matches a device reply to its call by (device, message id): a reply
    /// completes only the call of the device that sent it. Anything else is
    /// ignored, logged at debug level (a device that guesses ids would
    /// flood the log) and counted.
    async fn on_reply(self: &Arc<Self>, reply: DeviceReply) {
        let Some(message_id) = reply.message_id else {
            self.reject_reply(&reply, "no_message_id");
            return;
        };
        let mut table = lock(&self.pending);
        match table.get(&message_id) {
            Some(call) if call.device == reply.device => {
                if let Some(call) = table.remove(&message_id) {
                    self.settle(call, Ok(reply));
                }
                drop(table);
                self.metrics.count_reply("sync");
                return;
            }
            Some(_) => {
                drop(table);
                self.reject_reply(&reply, "other_device");
                return;
            }
            None => {}
        }
        // An async reply, or a sync reply after its call timed out: complete
        // the record so nothing the device said is lost. The update is
        // queued under the table's lock, so it follows a timed-out call's
        // record.
        let Some(iot_id) = self.iot_id_of(&reply.device) else {
            drop(table);
            self.reject_reply(&reply, "unknown_device");
            return;
        };
        let late = matches!(reply.via, ReplyVia::Rrpc);
        let iot_id_for_forward = iot_id.clone();
        let (output, code) = recorded_reply(&reply);
        let completion = Completion {
            message_id,
            iot_id: Some(iot_id),
            output: Some(output),
            outcome: if late {
                Outcome::Late(code)
            } else {
                Outcome::Replied(code)
            },
        };
        let pending = self.records.complete(completion.clone());
        drop(table);
        // The write is followed on its own task: the event loop must keep
        // pace with the devices, not with the disk.
        let state = Arc::clone(self);
        tokio::spawn(async move {
            let mut outcome = match pending {
                Ok(p) => p.wait().await,
                Err(e) => Err(e),
            };
            // In a cluster the call may have been made on another node,
            // whose record can still be on its way to the store when a
            // quick device answers here: look again, a little later.
            if state.node_id.is_some() {
                for delay_ms in CROSS_NODE_RETRY_MS {
                    if !matches!(outcome, Ok(false)) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
                    outcome = match state.records.complete(completion.clone()) {
                        Ok(p) => p.wait().await,
                        Err(e) => Err(e),
                    };
                }
            }
            match outcome {
                Ok(true) => {
                    if !late {
                        state
                            .forward_reply(&iot_id_for_forward, &reply, message_id)
                            .await;
                    }
                    state
                        .metrics
                        .count_reply(if late { "late" } else { "async" });
                    tracing::debug!(device = %reply.device, %message_id, code = reply.reply.code, late, "reply recorded");
                }
                Ok(false) => state.reject_reply(&reply, "unknown_call"),
                Err(e) => tracing::error!(%message_id, error = %e, "cannot record a reply"),
            }
        });
    }

    /// Forwards an async call's result to the consumer groups subscribed
    /// to the product's device data (`/${pk}/${dn}/thing/downlink/reply/message`).
    async fn forward_reply(
        &self,
        iot_id: &str,
        reply: &DeviceReply,
        message_id: thingcall_core::MessageId,
    ) {
        let Some(s) = &self.subscribe else { return };
        let ReplyVia::Async { identifier } = &reply.via else {
            return;
        };
        let d = &reply.device;
        let about = about(iot_id, d);
        let topic = format!(
            "/sys/{}/{}/thing/service/{}",
            about.product_key,
            about.device_name,
            identifier.replace(':', "/")
        );
        let code = reply.reply.code;
        let message = reply.reply.message.clone().unwrap_or_else(|| {
            if code == 200 {
                "success".into()
            } else {
                "failure".into()
            }
        });
        let now = self.now().get();
        let forward = message::downlink_reply(
            about,
            message_id.get(),
            code,
            &message,
            &topic,
            reply.reply.data.clone(),
            now,
        );
        s.publish(about, "DeviceDataFlag", forward, message_id.get(), now)
            .await;
    }

    /// Forwards a status change to the consumer groups subscribed to the
    /// product's status changes (`/as/mqtt/status/${pk}/${dn}`).
    async fn forward_status(&self, iot_id: &str, p: &PresenceEvent) {
        let Some(s) = &self.subscribe else { return };
        let about = about(iot_id, &p.device);
        let ip = p.client_addr.map(|a| a.ip().to_string());
        let forward = message::status(about, p.online, p.at.get(), ip.as_deref());
        let id = self.message_ids.next(self.now()).get();
        s.publish(
            about,
            "DeviceStatusChangeFlag",
            forward,
            id,
            self.now().get(),
        )
        .await;
    }

    /// Forwards an accepted property or event report to the consumer
    /// groups subscribed to the product's device data.
    async fn forward_post(&self, p: &PostEvent) {
        let Some(s) = &self.subscribe else { return };
        let Some(iot_id) = self.iot_id_of(&p.device) else {
            return;
        };
        let about = about(&iot_id, &p.device);
        let now = self.now().get();
        let empty = serde_json::Map::new();
        let params = p.params.as_object().unwrap_or(&empty);
        let forward = match &p.event {
            None => message::property_post(about, &p.request_id, params, None, p.received_at.get()),
            Some(identifier) => {
                let model = self.published_model(about.product_key).ok().flatten();
                let (name, kind) = model
                    .as_ref()
                    .and_then(|m| {
                        m.model()
                            .events
                            .iter()
                            .find(|e| &e.identifier == identifier)
                            .map(|e| (e.name.clone(), e.event_type.clone()))
                    })
                    .unwrap_or_else(|| (identifier.clone(), "info".to_owned()));
                // An event's values: `params.value`, or `params` itself.
                let value = p
                    .params
                    .get("value")
                    .cloned()
                    .unwrap_or_else(|| p.params.clone());
                let time = p.params.get("time").and_then(serde_json::Value::as_i64);
                message::event_post(
                    about,
                    identifier,
                    &name,
                    &kind,
                    &p.request_id,
                    value,
                    time,
                    p.received_at.get(),
                )
            }
        };
        let id = self.message_ids.next(self.now()).get();
        s.publish(about, "DeviceDataFlag", forward, id, now).await;
    }

    /// The iotId of a device the mirror knows.
    fn iot_id_of(&self, device: &DeviceKey) -> Option<String> {
        read(&self.catalog)
            .device_by_name(device.product_key.as_str(), device.device_name.as_str())
            .map(|d| d.iot_id.clone())
    }

    fn reject_reply(&self, reply: &DeviceReply, reason: &'static str) {
        self.metrics.count_rejected_reply(reason);
        tracing::debug!(device = %reply.device, message_id = ?reply.message_id, id = %reply.reply.id, reason, "device reply ignored");
    }

    /// Records a presence change. The event loop that carries replies only
    /// queues the write (in order with every other registry change) and
    /// moves on; the mirror follows once it is committed.
    async fn on_presence(&self, p: PresenceEvent) {
        let Some(iot_id) = self.iot_id_of(&p.device) else {
            return;
        };
        self.forward_status(&iot_id, &p).await;
        let change = Change::Presence {
            iot_id,
            online: p.online,
            at: p.at.get(),
            ip_address: p
                .online
                .then(|| p.client_addr.map(|a| a.ip().to_string()))
                .flatten(),
        };
        match self.submit_change(change) {
            Ok((pending, _)) => {
                let device = p.device;
                tokio::spawn(async move {
                    if let Err(e) = pending.wait().await {
                        tracing::error!(%device, error = %e, "cannot record presence");
                    }
                });
            }
            Err(e) => tracing::error!(device = %p.device, error = %e, "cannot record presence"),
        }
    }
}

/// A forwarded message's device.
fn about<'a>(iot_id: &'a str, device: &'a DeviceKey) -> About<'a> {
    About {
        iot_id,
        product_key: device.product_key.as_str(),
        device_name: device.device_name.as_str(),
    }
}
