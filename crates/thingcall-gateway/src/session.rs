//! One device connection: CONNECT, authentication, then the packet loop.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use thingcall_core::{AlinkReply, DeviceName, ProductKey, Secret, Topic, UnixMillis};
use thingcall_sign::device::{MqttClientId, parse_username, verify_password};
use thingcall_transport::{
    DeviceKey, DeviceReply, PostEvent, PresenceEvent, ReplyVia, TransportEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::metrics::GatewayMetrics;
use crate::registry::DeviceLookup;
use crate::{DeviceStream, Filters, Inner, Outgoing, SessionHandle, StoredSession, acl, lock};

/// The kick reason a session gets when a new login of the same device
/// replaces it; the replaced session reports no offline event.
pub(crate) const REPLACED_BY_NEW_LOGIN: &str = "kicked by a new login";

/// Why a connection ended, for logs and presence events.
enum End {
    /// The device closed the connection or sent DISCONNECT.
    Closed(&'static str),
    /// The gateway closed it: a new login, a disabled device, shutdown.
    Kicked(String),
    /// No packet for 1.5 x the keepalive.
    KeepaliveTimeout,
    /// A write made no progress for the configured bound: the device stopped
    /// reading.
    Stalled,
    /// A protocol or socket error.
    Error(String),
}

impl End {
    /// The reason reported in logs and presence events.
    fn reason(self) -> String {
        match self {
            End::Closed(r) => r.to_owned(),
            End::Kicked(r) => r,
            End::KeepaliveTimeout => "keepalive timeout".to_owned(),
            End::Stalled => "stopped reading (write stalled)".to_owned(),
            End::Error(e) => format!("error: {e}"),
        }
    }
}

/// What a session watches besides the socket: the kick signal and the
/// keepalive deadline. A write that waits for the device to read watches
/// them too, so neither a kick nor a silent device can be held up by a
/// peer that stopped reading.
struct Watch {
    kick: watch::Receiver<Option<String>>,
    /// When the connection is dropped unless a byte arrives first.
    deadline: Instant,
    /// 1.5 x the keepalive.
    silence: Duration,
    /// How long a write may make no progress.
    stall: Duration,
}

impl Watch {
    fn heard(&mut self) {
        self.deadline = Instant::now() + self.silence;
    }

    fn kicked(&self) -> End {
        End::Kicked(
            self.kick
                .borrow()
                .clone()
                .unwrap_or_else(|| "kicked".to_owned()),
        )
    }
}

struct Conn<S> {
    rd: ReadHalf<S>,
    wr: WriteHalf<S>,
    buf: BytesMut,
    out: BytesMut,
    max_packet: usize,
    /// A write is waiting for the device to read (set while `send` waits,
    /// left set when the session ends inside it).
    blocked: bool,
}

impl<S: DeviceStream> Conn<S> {
    /// The next complete packet, or `None` at end of stream.
    async fn read_packet(&mut self) -> Result<Option<Packet>, CodecError> {
        loop {
            if let Some(p) = self.try_parse()? {
                return Ok(Some(p));
            }
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// A packet already in the buffer, if there is a whole one.
    fn try_parse(&mut self) -> Result<Option<Packet>, CodecError> {
        match Packet::read(&mut self.buf, self.max_packet) {
            Ok(p) => Ok(Some(p)),
            Err(CodecError::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn encode(&mut self, packet: Packet) -> Result<(), End> {
        self.out.clear();
        packet
            .write(&mut self.out, usize::MAX)
            .map(|_| ())
            .map_err(|e| End::Error(e.to_string()))
    }

    /// Writes a packet before the session exists (CONNACK), within `limit`.
    async fn send_within(&mut self, packet: Packet, limit: Duration) -> Result<(), End> {
        self.encode(packet)?;
        let write = async {
            self.wr.write_all(&self.out).await?;
            // TLS and WebSocket streams hold bytes until flushed.
            self.wr.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(End::Error(e.to_string())),
            Err(_) => Err(End::Stalled),
        }
    }

    /// Writes a packet of a running session. Most writes fit the socket
    /// buffer and finish at once; one that has to wait for the device to
    /// read keeps reading (so the device's own packets still count as signs
    /// of life) and gives up on a kick, on the keepalive deadline, or when
    /// no byte was taken for `watch.stall`.
    async fn send(&mut self, packet: Packet, watch: &mut Watch) -> Result<(), End> {
        self.encode(packet)?;
        let Conn {
            rd,
            wr,
            buf,
            out,
            max_packet,
            blocked,
        } = self;
        let mut at = 0;
        let mut stall_at = Instant::now() + watch.stall;
        // Reading goes on while the write waits, but only up to two packets'
        // worth: a device that floods and never reads is not buffered
        // without bound.
        let room = max_packet.saturating_mul(2);
        // Another branch than the write can only win while the write waits:
        // a session that ends in this loop ends with the device not reading.
        *blocked = true;
        // TLS and WebSocket streams hold bytes until flushed: the flush
        // waits for the device like the write does, under the same watch.
        let mut flushed = false;
        while !flushed {
            // The write is polled first: when the socket takes the bytes at
            // once (nearly always) no timer is ever armed.
            let step = async {
                if at < out.len() {
                    wr.write(&out[at..]).await.map(Some)
                } else {
                    wr.flush().await.map(|()| None)
                }
            };
            tokio::select! {
                biased;
                progress = step => match progress {
                    Ok(Some(0)) => return Err(End::Error("the socket accepts no more bytes".to_owned())),
                    Ok(Some(n)) => {
                        at += n;
                        stall_at = Instant::now() + watch.stall;
                    }
                    Ok(None) => flushed = true,
                    Err(e) => return Err(End::Error(e.to_string())),
                },
                _ = watch.kick.changed() => return Err(watch.kicked()),
                _ = tokio::time::sleep_until(watch.deadline) => return Err(End::KeepaliveTimeout),
                _ = tokio::time::sleep_until(stall_at) => return Err(End::Stalled),
                read = rd.read_buf(buf), if buf.len() < room => match read {
                    Ok(0) => return Err(End::Closed("connection closed by the device")),
                    Ok(_) => watch.heard(),
                    Err(e) => return Err(End::Error(e.to_string())),
                },
            }
        }
        *blocked = false;
        Ok(())
    }

    /// Closes the connection: gracefully, unless the device stopped
    /// reading (a write was waiting, or stalled) or the stream failed; then
    /// at once (for TCP with a reset), so that bytes the device never read
    /// cannot keep the connection alive in the kernel.
    async fn close(self, end: &End) {
        let Conn {
            rd,
            mut wr,
            blocked,
            ..
        } = self;
        if blocked || matches!(end, End::Stalled | End::Error(_)) {
            rd.unsplit(wr).abort();
        } else {
            let _ = wr.shutdown().await;
        }
    }
}

pub(crate) async fn run<S: DeviceStream>(inner: Arc<Inner>, stream: S, addr: SocketAddr) {
    let secure = stream.is_tls();
    let (rd, wr) = tokio::io::split(stream);
    // Small initial buffers: most devices are idle most of the time, and a
    // buffer grows when a big message comes.
    let mut conn = Conn {
        rd,
        wr,
        buf: BytesMut::with_capacity(256),
        out: BytesMut::with_capacity(128),
        max_packet: inner.config.max_packet,
        blocked: false,
    };

    let connect = match tokio::time::timeout(inner.config.connect_timeout, conn.read_packet()).await
    {
        Ok(Ok(Some(Packet::Connect(c)))) => c,
        Ok(Ok(Some(other))) => {
            GatewayMetrics::inc(&inner.metrics.malformed_frames);
            tracing::info!(%addr, packet = ?packet_name(&other), "first packet is not CONNECT; closing");
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            count_codec_error(&inner, &e);
            tracing::info!(%addr, error = %e, "bad CONNECT; closing");
            return;
        }
        Err(_) => {
            tracing::info!(%addr, "no CONNECT in time; closing");
            return;
        }
    };

    let auth = match authenticate(&inner, &connect, secure).await {
        Ok(auth) => auth,
        Err(code) => {
            GatewayMetrics::inc(&inner.metrics.connects_refused);
            tracing::info!(%addr, client_id = %connect.client_id, code = ?code, "CONNECT refused");
            let ack = Packet::ConnAck(ConnAck::new(code, false));
            let _ = conn.send_within(ack, inner.config.connect_timeout).await;
            return;
        }
    };
    session(inner, conn, addr, connect, auth).await;
}

struct Auth {
    device: DeviceKey,
    client_id: MqttClientId,
}

async fn authenticate(
    inner: &Inner,
    connect: &Connect,
    secure: bool,
) -> Result<Auth, ConnectReturnCode> {
    let cfg = &inner.config;
    // `securemode` in the client id is not compared with the transport:
    // Alibaba's SDKs write 2 or 3 by their own settings, and both work on
    // either kind of connection here (docs/COMPATIBILITY.md). Plaintext
    // logins are refused only when the operator asks for TLS.
    if cfg.require_tls && !secure {
        GatewayMetrics::inc(&inner.metrics.plaintext_logins_refused);
        return Err(ConnectReturnCode::NotAuthorized);
    }
    if !(cfg.min_keepalive..=cfg.max_keepalive).contains(&connect.keep_alive) {
        return Err(ConnectReturnCode::BadClientId);
    }
    let client_id =
        MqttClientId::parse(&connect.client_id).map_err(|_| ConnectReturnCode::BadClientId)?;
    let method_ok = client_id.sign_method().is_ok();
    if !method_ok {
        return Err(ConnectReturnCode::BadClientId);
    }
    let login = connect
        .login
        .as_ref()
        .ok_or(ConnectReturnCode::BadUserNamePassword)?;
    let (dn, pk) = parse_username(&login.username).ok_or(ConnectReturnCode::BadUserNamePassword)?;
    let device = match (ProductKey::new(pk), DeviceName::new(dn)) {
        (Ok(p), Ok(d)) => DeviceKey::new(p, d),
        _ => return Err(ConnectReturnCode::BadUserNamePassword),
    };
    let proves = |secret: &Secret| {
        verify_password(&client_id, dn, pk, secret.expose(), &login.password).unwrap_or(false)
    };
    let (secret, enabled) = match inner.registry.lookup_login(&device, &proves).await {
        Ok(DeviceLookup::Found { secret, enabled }) => (secret, enabled),
        Ok(DeviceLookup::Unknown) => return Err(ConnectReturnCode::BadUserNamePassword),
        Ok(DeviceLookup::Deleted) => return Err(ConnectReturnCode::NotAuthorized),
        Err(e) => {
            tracing::error!(%device, error = %e, "registry lookup failed");
            return Err(ConnectReturnCode::ServiceUnavailable);
        }
    };
    if !proves(&secret) {
        return Err(ConnectReturnCode::BadUserNamePassword);
    }
    if let Some(window) = cfg.timestamp_window
        && !fresh(client_id.timestamp(), inner.clock.now(), window)
    {
        tracing::info!(%device, timestamp = ?client_id.timestamp(), "CONNECT timestamp outside the accepted window");
        return Err(ConnectReturnCode::BadUserNamePassword);
    }
    // Disabled is only revealed to a device that proved it holds the secret.
    if !enabled {
        return Err(ConnectReturnCode::NotAuthorized);
    }
    Ok(Auth { device, client_id })
}

/// Whether a CONNECT's signed timestamp is within `window` of `now`. The
/// SDKs disagree on its unit (linkkit sends seconds, the Node SDK and the
/// documentation milliseconds): a value below 10^11 is read as seconds,
/// anything larger as milliseconds. No timestamp is not fresh.
fn fresh(timestamp: Option<&str>, now: UnixMillis, window: Duration) -> bool {
    let Some(value) = timestamp.and_then(|t| t.parse::<i64>().ok()) else {
        return false;
    };
    let ms = if value < 100_000_000_000 {
        value.saturating_mul(1000)
    } else {
        value
    };
    let window = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    now.get().saturating_sub(ms).saturating_abs() <= window
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

fn count_codec_error(inner: &Inner, e: &CodecError) {
    match e {
        CodecError::PayloadSizeLimitExceeded(_) | CodecError::PayloadTooLong => {
            GatewayMetrics::inc(&inner.metrics.oversized_frames)
        }
        CodecError::Io(_) => {}
        _ => GatewayMetrics::inc(&inner.metrics.malformed_frames),
    }
}

/// QoS 1 messages sent and waiting for PUBACK, by packet id.
struct Inflight {
    by_pkid: HashMap<u16, Outgoing>,
    next: u16,
}

impl Inflight {
    fn new() -> Inflight {
        Inflight {
            by_pkid: HashMap::new(),
            next: 1,
        }
    }

    fn allocate(&mut self) -> u16 {
        loop {
            let id = self.next;
            self.next = if self.next == u16::MAX {
                1
            } else {
                self.next + 1
            };
            if !self.by_pkid.contains_key(&id) {
                return id;
            }
        }
    }
}

async fn session<S: DeviceStream>(
    inner: Arc<Inner>,
    mut conn: Conn<S>,
    addr: SocketAddr,
    connect: Connect,
    auth: Auth,
) {
    let device = auth.device;
    let ext_rrpc = auth.client_id.ext_rrpc();
    let generation = inner.generation();
    let (out_tx, mut out_rx) = mpsc::channel::<Box<Outgoing>>(inner.config.outbound_queue);
    let (kick_tx, kick_rx) = watch::channel::<Option<String>>(None);

    // Restore or discard the stored session, then take the device's place,
    // kicking whoever held it.
    let stored = lock(&inner.stored).remove(&device);
    let session_present = !connect.clean_session && stored.is_some();
    let stored = if connect.clean_session {
        StoredSession::default()
    } else {
        stored.unwrap_or_default()
    };
    let mut initial_filters = stored.filters;
    if auth.client_id.auto_subscribe() {
        for f in acl::system_filters(&device) {
            if !initial_filters.iter().any(|(g, _)| *g == f) {
                initial_filters.push((f, QoS::AtLeastOnce));
            }
        }
    }
    let filters: Filters = Arc::new(Mutex::new(initial_filters));
    let handle = SessionHandle {
        generation,
        outbound: out_tx,
        kick: kick_tx,
        ext_rrpc,
        filters: Arc::clone(&filters),
    };
    let previous = lock(&inner.sessions).insert(device.clone(), handle);
    if let Some(prev) = previous {
        GatewayMetrics::inc(&inner.metrics.sessions_kicked);
        let _ = prev.kick.send(Some(REPLACED_BY_NEW_LOGIN.to_owned()));
    }

    let silence = Duration::from_millis(u64::from(connect.keep_alive) * 1500);
    let mut watch = Watch {
        kick: kick_rx,
        deadline: Instant::now() + silence,
        silence,
        stall: inner.config.write_stall_timeout,
    };
    let connack = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, session_present));
    if let Err(end) = conn.send(connack, &mut watch).await {
        count_end(&inner, &end);
        conn.close(&end).await;
        cleanup(
            &inner,
            &device,
            generation,
            &filters,
            connect.clean_session,
            ext_rrpc,
            Vec::new(),
            &mut out_rx,
            None,
        )
        .await;
        return;
    }
    tracing::info!(%device, %addr, clean_session = connect.clean_session, ext_rrpc, "device online");
    presence(&inner, &device, true, addr, "connect".to_owned()).await;

    let mut inflight = Inflight::new();
    let mut backlog: VecDeque<Outgoing> = stored.queued;
    if !backlog.is_empty() {
        tracing::info!(%device, count = backlog.len(), "delivering messages kept while offline");
    }

    let end = 'conn: loop {
        // Messages kept while offline go first, in order.
        while inflight.by_pkid.len() < inner.config.max_inflight {
            let Some(mut msg) = backlog.pop_front() else {
                break;
            };
            msg.dup = true;
            GatewayMetrics::inc(&inner.metrics.messages_redelivered);
            if let Err(end) = send_publish(&inner, &mut conn, &mut watch, &mut inflight, msg).await
            {
                break 'conn end;
            }
        }
        tokio::select! {
            biased;
            _ = watch.kick.changed() => break watch.kicked(),
            read = conn.rd.read_buf(&mut conn.buf) => {
                match read {
                    Ok(0) => break End::Closed("connection closed by the device"),
                    Ok(_) => watch.heard(),
                    Err(e) => break End::Error(e.to_string()),
                }
                loop {
                    match conn.try_parse() {
                        Ok(Some(packet)) => {
                            if let Err(end) = handle_packet(&inner, &mut conn, &mut watch, &device, &filters, &mut inflight, packet).await {
                                break 'conn end;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            count_codec_error(&inner, &e);
                            tracing::warn!(%device, error = %e, "bad frame; closing");
                            break 'conn End::Error(e.to_string());
                        }
                    }
                }
            }
            msg = out_rx.recv(), if inflight.by_pkid.len() < inner.config.max_inflight => {
                let Some(msg) = msg else { break End::Closed("session replaced") };
                if let Err(end) = send_publish(&inner, &mut conn, &mut watch, &mut inflight, *msg).await {
                    break end;
                }
            }
            _ = tokio::time::sleep_until(watch.deadline) => break End::KeepaliveTimeout,
        }
    };
    count_end(&inner, &end);

    // A session replaced by a new login of the same device reports no
    // offline event: the device is still online through the new session.
    let replaced = matches!(&end, End::Kicked(r) if r == REPLACED_BY_NEW_LOGIN);
    conn.close(&end).await;
    let reason = end.reason();
    let mut unacked: Vec<Outgoing> = inflight.by_pkid.into_values().collect();
    unacked.extend(backlog);
    cleanup(
        &inner,
        &device,
        generation,
        &filters,
        connect.clean_session,
        ext_rrpc,
        unacked,
        &mut out_rx,
        (!replaced).then_some((addr, reason)),
    )
    .await;
}

/// Counts the ends that the gateway's metrics track.
fn count_end(inner: &Inner, end: &End) {
    match end {
        End::KeepaliveTimeout => GatewayMetrics::inc(&inner.metrics.keepalive_timeouts),
        End::Stalled => GatewayMetrics::inc(&inner.metrics.write_stalls),
        _ => {}
    }
}

/// Removes the session (unless a newer login replaced it), keeps a
/// persistent session's state, and reports the device offline.
#[allow(clippy::too_many_arguments)] // the pieces are the session's own state
async fn cleanup(
    inner: &Inner,
    device: &DeviceKey,
    generation: u64,
    filters: &Filters,
    clean_session: bool,
    ext_rrpc: bool,
    mut unacked: Vec<Outgoing>,
    out_rx: &mut mpsc::Receiver<Box<Outgoing>>,
    offline: Option<(SocketAddr, String)>,
) {
    {
        let mut sessions = lock(&inner.sessions);
        if sessions
            .get(device)
            .is_some_and(|h| h.generation == generation)
        {
            sessions.remove(device);
        }
    }
    out_rx.close();
    while let Ok(msg) = out_rx.try_recv() {
        unacked.push(*msg);
    }
    if !clean_session {
        let queued: std::collections::VecDeque<Outgoing> = unacked
            .into_iter()
            .filter(|m| m.qos == QoS::AtLeastOnce)
            .collect();
        let filters = lock(filters).clone();
        lock(&inner.stored).insert(
            device.clone(),
            StoredSession {
                ext_rrpc,
                filters,
                queued,
            },
        );
    }
    if let Some((addr, reason)) = offline {
        tracing::info!(%device, %addr, %reason, "device offline");
        presence(inner, device, false, addr, reason).await;
    }
}

/// Tells every subscriber that a device came online or went offline.
async fn presence(
    inner: &Inner,
    device: &DeviceKey,
    online: bool,
    addr: SocketAddr,
    reason: String,
) {
    let event = PresenceEvent {
        device: device.clone(),
        online,
        at: inner.clock.now(),
        client_addr: Some(addr),
        reason,
    };
    inner.hub.publish(TransportEvent::Presence(event)).await;
}

async fn send_publish<S: DeviceStream>(
    inner: &Inner,
    conn: &mut Conn<S>,
    watch: &mut Watch,
    inflight: &mut Inflight,
    msg: Outgoing,
) -> Result<(), End> {
    let mut publish = Publish::from_bytes(msg.topic.clone(), msg.qos, msg.payload.clone());
    publish.dup = msg.dup;
    if msg.qos == QoS::AtLeastOnce {
        let pkid = inflight.allocate();
        publish.pkid = pkid;
        inflight.by_pkid.insert(pkid, msg);
    }
    conn.send(Packet::Publish(publish), watch).await?;
    GatewayMetrics::inc(&inner.metrics.messages_sent);
    Ok(())
}

async fn handle_packet<S: DeviceStream>(
    inner: &Inner,
    conn: &mut Conn<S>,
    watch: &mut Watch,
    device: &DeviceKey,
    filters: &Filters,
    inflight: &mut Inflight,
    packet: Packet,
) -> Result<(), End> {
    match packet {
        Packet::PingReq => conn.send(Packet::PingResp, watch).await,
        Packet::PubAck(ack) => {
            inflight.by_pkid.remove(&ack.pkid);
            Ok(())
        }
        Packet::Publish(publish) => {
            handle_publish(inner, conn, watch, device, filters, publish).await
        }
        Packet::Subscribe(sub) => handle_subscribe(inner, conn, watch, device, filters, sub).await,
        Packet::Unsubscribe(Unsubscribe { pkid, topics }) => {
            lock(filters).retain(|(f, _)| !topics.contains(f));
            conn.send(Packet::UnsubAck(UnsubAck { pkid }), watch).await
        }
        Packet::Disconnect => Err(End::Closed("DISCONNECT")),
        other => {
            GatewayMetrics::inc(&inner.metrics.malformed_frames);
            tracing::warn!(%device, packet = packet_name(&other), "unexpected packet; closing");
            Err(End::Error(format!("unexpected {}", packet_name(&other))))
        }
    }
}

async fn handle_subscribe<S: DeviceStream>(
    inner: &Inner,
    conn: &mut Conn<S>,
    watch: &mut Watch,
    device: &DeviceKey,
    filters: &Filters,
    sub: Subscribe,
) -> Result<(), End> {
    let mut codes = Vec::with_capacity(sub.filters.len());
    for f in sub.filters {
        if acl::may_subscribe(device, &f.path) {
            // Alibaba has no QoS 2: grant at most 1.
            let granted = if f.qos == QoS::AtMostOnce {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let mut list = lock(filters);
            list.retain(|(g, _)| *g != f.path);
            list.push((f.path, granted));
            codes.push(SubscribeReasonCode::Success(granted));
        } else {
            GatewayMetrics::inc(&inner.metrics.acl_denied_subscribes);
            tracing::warn!(%device, filter = %f.path, "subscription outside the device's namespace refused");
            codes.push(SubscribeReasonCode::Failure);
        }
    }
    conn.send(Packet::SubAck(SubAck::new(sub.pkid, codes)), watch)
        .await
}

async fn handle_publish<S: DeviceStream>(
    inner: &Inner,
    conn: &mut Conn<S>,
    watch: &mut Watch,
    device: &DeviceKey,
    filters: &Filters,
    publish: Publish,
) -> Result<(), End> {
    if publish.qos == QoS::ExactlyOnce {
        GatewayMetrics::inc(&inner.metrics.malformed_frames);
        tracing::warn!(%device, topic = %publish.topic, "QoS 2 is not supported; closing");
        return Err(End::Error("QoS 2 publish".to_owned()));
    }
    if !acl::may_publish(device, &publish.topic) {
        GatewayMetrics::inc(&inner.metrics.acl_denied_publishes);
        tracing::warn!(%device, topic = %publish.topic, "publish outside the device's namespace; dropped, closing");
        return Err(End::Error(
            "publish outside the device's namespace".to_owned(),
        ));
    }
    if publish.qos == QoS::AtLeastOnce {
        conn.send(Packet::PubAck(PubAck::new(publish.pkid)), watch)
            .await?;
    }
    let (ntp_request, ntp_response) = acl::ntp_topics(device);
    if publish.topic == ntp_request {
        return answer_ntp(inner, conn, watch, device, filters, &publish, ntp_response).await;
    }
    if let Some(uplink) = uplink_of(device, &publish.topic) {
        return answer_post(inner, conn, watch, device, filters, &publish, uplink).await;
    }
    let via_and_id = match Topic::parse(&publish.topic) {
        Ok(Topic::RrpcResponse { message_id, .. }) | Ok(Topic::ExtRrpc { message_id, .. }) => {
            Some((ReplyVia::Rrpc, Some(message_id)))
        }
        Ok(Topic::ServiceReply { identifier, .. }) => Some((
            ReplyVia::Async {
                identifier: identifier.into_string(),
            },
            None,
        )),
        Ok(Topic::PropertySetReply { .. }) => Some((
            ReplyVia::Async {
                identifier: "set".to_owned(),
            },
            None,
        )),
        Ok(Topic::PropertyGetReply { .. }) => Some((
            ReplyVia::Async {
                identifier: "get".to_owned(),
            },
            None,
        )),
        _ => None,
    };
    let Some((via, topic_id)) = via_and_id else {
        GatewayMetrics::inc(&inner.metrics.uplinks_ignored);
        tracing::debug!(%device, topic = %publish.topic, "device message on a topic the gateway does not act on");
        return Ok(());
    };
    let reply = match AlinkReply::from_slice(&publish.payload) {
        Ok(r) => r,
        Err(e) => {
            GatewayMetrics::inc(&inner.metrics.bad_payloads);
            tracing::warn!(%device, topic = %publish.topic, error = %e, "reply is not Alink JSON; dropped");
            return Ok(());
        }
    };
    GatewayMetrics::inc(&inner.metrics.replies_received);
    let message_id = topic_id.or_else(|| reply.id.message_id());
    let event = DeviceReply {
        device: device.clone(),
        message_id,
        via,
        reply,
        received_at: inner.clock.now(),
    };
    inner.hub.publish(TransportEvent::Reply(event)).await;
    Ok(())
}

/// Answers a time request (`/ext/ntp/{pk}/{dn}/request`, payload
/// `{"deviceSendTime":"..."}`) on `.../response` with the device's time
/// and the gateway's receive and send times in milliseconds, as Alibaba
/// does for the C and Node SDKs. Sent only if the device subscribed.
async fn answer_ntp<S: DeviceStream>(
    inner: &Inner,
    conn: &mut Conn<S>,
    watch: &mut Watch,
    device: &DeviceKey,
    filters: &Filters,
    publish: &Publish,
    response_topic: String,
) -> Result<(), End> {
    let received = inner.clock.now().get();
    let sent_at = serde_json::from_slice::<serde_json::Value>(&publish.payload)
        .ok()
        .and_then(|v| v.get("deviceSendTime").cloned());
    let Some(device_send_time) = sent_at else {
        GatewayMetrics::inc(&inner.metrics.bad_payloads);
        tracing::info!(%device, "time request without deviceSendTime; not answered");
        return Ok(());
    };
    let body = serde_json::json!({
        "deviceSendTime": device_send_time,
        "serverRecvTime": received.to_string(),
        "serverSendTime": inner.clock.now().get().to_string(),
    });
    if !answer(inner, conn, watch, filters, response_topic, &body).await? {
        GatewayMetrics::inc(&inner.metrics.uplinks_ignored);
        tracing::debug!(%device, "time request from a device not subscribed to the response");
    }
    Ok(())
}

/// Sends the gateway's own answer to a device request at QoS 0 (a late
/// answer is worse than none), if the device subscribed to its topic.
/// Returns whether it was sent.
async fn answer<S: DeviceStream>(
    inner: &Inner,
    conn: &mut Conn<S>,
    watch: &mut Watch,
    filters: &Filters,
    topic: String,
    body: &serde_json::Value,
) -> Result<bool, End> {
    if crate::matching_qos(&lock(filters), &topic).is_none() {
        return Ok(false);
    }
    GatewayMetrics::inc(&inner.metrics.messages_sent);
    let publish = Publish::new(topic, QoS::AtMostOnce, body.to_string());
    conn.send(Packet::Publish(publish), watch).await?;
    Ok(true)
}

/// What a device posts on its own `thing/event/...` topics.
#[derive(Clone, Copy)]
enum Uplink<'a> {
    /// `thing/event/property/post`.
    Properties,
    /// `thing/event/{identifier}/post`.
    Event(&'a str),
}

fn uplink_of<'a>(device: &DeviceKey, topic: &'a str) -> Option<Uplink<'a>> {
    let prefix = format!(
        "/sys/{}/{}/thing/event/",
        device.product_key, device.device_name
    );
    let rest = topic.strip_prefix(prefix.as_str())?;
    if rest == "property/post" {
        return Some(Uplink::Properties);
    }
    let identifier = rest.strip_suffix("/post")?;
    (!identifier.is_empty() && !identifier.contains('/')).then_some(Uplink::Event(identifier))
}

/// Answers a property or event post on `{topic}_reply`, as Alibaba does:
/// the values are checked against the product's published thing model
/// (each value of its declared type; `{"value": v, "time": t}` wrappers
/// allowed), then `{"code", "data": {}, "id", "message", "method",
/// "version"}` goes back: 200 and `success`, or the detail code of the
/// first value that breaks the model (63xx) with what is wrong. A payload
/// that is not Alink JSON is counted and not answered (there is no `id` to
/// answer). Sent only if the device subscribed to the reply (`_ss=1`
/// devices are).
async fn answer_post<S: DeviceStream>(
    inner: &Inner,
    conn: &mut Conn<S>,
    watch: &mut Watch,
    device: &DeviceKey,
    filters: &Filters,
    publish: &Publish,
    uplink: Uplink<'_>,
) -> Result<(), End> {
    let request: serde_json::Value = match serde_json::from_slice(&publish.payload) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => {
            GatewayMetrics::inc(&inner.metrics.bad_payloads);
            tracing::info!(%device, topic = %publish.topic, "a post that is not Alink JSON; not answered");
            return Ok(());
        }
    };
    let id = request
        .get("id")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    let empty = serde_json::Value::Object(Default::default());
    let params = request.get("params").unwrap_or(&empty);
    let model = inner.registry.model(&device.product_key);
    let (method, verdict) = match uplink {
        Uplink::Properties => (
            "thing.event.property.post".to_owned(),
            check_post(model.as_ref().map(|m| m.property_post()), params),
        ),
        Uplink::Event(identifier) => (
            format!("thing.event.{identifier}.post"),
            match model.as_ref().and_then(|m| m.event(identifier)) {
                Some(event) => check_post(Some(event), params),
                None => Err((
                    thingcall_tsl::ViolationKind::UnknownParameter.detail_code(),
                    format!("the thing model has no event {identifier:?}"),
                )),
            },
        ),
    };
    let (code, message) = match verdict {
        Ok(()) => {
            GatewayMetrics::inc(&inner.metrics.posts_accepted);
            let request_id = match &id {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let event = PostEvent {
                device: device.clone(),
                event: match uplink {
                    Uplink::Properties => None,
                    Uplink::Event(identifier) => Some(identifier.to_owned()),
                },
                request_id,
                params: params.clone(),
                received_at: inner.clock.now(),
            };
            inner.hub.publish(TransportEvent::Post(event)).await;
            (200, "success".to_owned())
        }
        Err((code, message)) => {
            GatewayMetrics::inc(&inner.metrics.posts_refused);
            tracing::debug!(%device, topic = %publish.topic, code, %message, "a post that breaks the thing model");
            (code, message)
        }
    };
    let body = serde_json::json!({
        "code": code,
        "data": {},
        "id": id,
        "message": message,
        "method": method,
        "version": "1.0",
    });
    let reply_topic = format!("{}_reply", publish.topic);
    answer(inner, conn, watch, filters, reply_topic, &body).await?;
    Ok(())
}

/// Checks posted values; `Err((detail code, message))` for the first
/// value that breaks the model.
fn check_post(
    compiled: Option<&Arc<thingcall_tsl::CompiledService>>,
    params: &serde_json::Value,
) -> Result<(), (u32, String)> {
    let (values, mut violations) = thingcall_tsl::posted_values(params);
    match compiled {
        Some(c) => violations.extend(c.validate_args(&values)),
        None if values.as_object().is_some_and(|m| m.is_empty()) => {}
        None => {
            return Err((
                thingcall_tsl::ViolationKind::UnknownParameter.detail_code(),
                "the product has no published thing model".to_owned(),
            ));
        }
    }
    match violations.first() {
        None => Ok(()),
        Some(v) => Err((v.kind.detail_code(), v.to_string())),
    }
}
