//! The AMQP 1.0 endpoint: one task per connection, from the TLS handshake
//! (direct TLS, as every official sample connects) through SASL PLAIN with
//! Alibaba's signature, the client's Open (its idle-time-out must be
//! 30-300 s), one receiver link within 15 s, to the delivery loop.
//!
//! Every refusal after SASL closes the connection (or the link) with an
//! AMQP error condition and a description; a bad signature gets a SASL
//! outcome `auth` and no Open, as the AMQP acceptor does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::Sender;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle, SaslAcceptor,
    SessionAcceptor,
};
use fe2o3_amqp::types::definitions::{AmqpError, Error as AmqpErr, Role};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Header, Message, Outcome, Properties, Source, Target, TargetArchetype,
};
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use thingcall_core::Secret;
use thingcall_sign::amqp::AmqpUsername;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::broker::{Broker, Consumer, Delivery, Settled};
use crate::tap::{OpenTap, RemoteOpen};

/// What the endpoint looks credentials and groups up in. Both are
/// synchronous: the SASL exchange runs inside the AMQP engine.
pub trait Directory: Send + Sync + 'static {
    /// The secret of an enabled AccessKey.
    fn access_key_secret(&self, access_key_id: &str) -> Option<Secret>;
    /// Whether the consumer group exists.
    fn group_exists(&self, group_id: &str) -> bool;
}

/// Endpoint settings.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Sign-in (TLS, SASL, Open) must be done within this (Alibaba: 15 s).
    pub auth_timeout: Duration,
    /// A receiver link must be attached within this of the connection
    /// (Alibaba: 15 s).
    pub link_timeout: Duration,
    /// The idle-time-out a client's Open must carry, in ms.
    pub idle_time_out_ms: std::ops::RangeInclusive<u32>,
    /// The idle-time-out this side advertises, in ms: a client sends a
    /// frame at least this often, or is closed.
    pub local_idle_time_out_ms: u32,
    /// The largest frame.
    pub max_frame_size: u32,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            auth_timeout: Duration::from_secs(15),
            link_timeout: Duration::from_secs(15),
            idle_time_out_ms: 30_000..=300_000,
            local_idle_time_out_ms: 60_000,
            max_frame_size: 64 * 1024,
        }
    }
}

/// Who signed in.
#[derive(Clone, Debug)]
struct Principal {
    client_id: String,
    group: String,
}

/// The SASL side: PLAIN only (Qpid JMS would pick any stronger mechanism
/// offered), checked against the directory, the principal left in a slot
/// for the connection task.
#[derive(Clone)]
struct AliyunPlain {
    directory: Arc<dyn Directory>,
    out: Arc<Mutex<Option<Result<Principal, String>>>>,
}

impl AliyunPlain {
    fn check(&self, init: &SaslInit) -> Result<Principal, String> {
        if init.mechanism.as_str() != "PLAIN" {
            return Err(format!(
                "SASL mechanism {} is not offered",
                init.mechanism.as_str()
            ));
        }
        let response = init
            .initial_response
            .as_ref()
            .ok_or("SASL PLAIN without a response")?;
        let mut parts = response.as_slice().split(|b| *b == 0);
        let _authzid = parts.next();
        let authcid = parts.next().ok_or("SASL PLAIN response has no username")?;
        let password = parts.next().ok_or("SASL PLAIN response has no password")?;
        let username =
            std::str::from_utf8(authcid).map_err(|_| "the username is not UTF-8".to_owned())?;
        let username = AmqpUsername::parse(username).map_err(|e| e.to_string())?;
        let secret = self
            .directory
            .access_key_secret(&username.auth_id)
            .ok_or_else(|| format!("unknown or disabled AccessKey {}", username.auth_id))?;
        if !username.verify(secret.expose(), password) {
            return Err(format!(
                "the password does not match AccessKey {}'s signature",
                username.auth_id
            ));
        }
        if !self.directory.group_exists(&username.consumer_group_id) {
            return Err(format!(
                "consumer group {} does not exist",
                username.consumer_group_id
            ));
        }
        Ok(Principal {
            client_id: username.client_id,
            group: username.consumer_group_id,
        })
    }
}

impl SaslAcceptor for AliyunPlain {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("PLAIN")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let result = self.check(&init);
        let code = if result.is_ok() {
            SaslCode::Ok
        } else {
            SaslCode::Auth
        };
        *self.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None,
        })
    }
}

fn close_error(condition: AmqpError, description: impl Into<String>) -> AmqpErr {
    AmqpErr::new(condition, Some(description.into()), None)
}

async fn refuse(conn: &mut ListenerConnectionHandle, condition: AmqpError, why: &str) {
    tracing::debug!(reason = why, "AMQP connection refused");
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        conn.close_with_error(close_error(condition, why)),
    )
    .await;
}

/// Serves one accepted (and, for `amqps`, TLS-terminated) connection until
/// it closes.
pub async fn serve_connection<S>(
    broker: Arc<Broker>,
    directory: Arc<dyn Directory>,
    config: EndpointConfig,
    stream: S,
    peer: Option<SocketAddr>,
) where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let started = tokio::time::Instant::now();
    let open_slot = RemoteOpen::default();
    let stream = OpenTap::new(stream, open_slot.clone(), config.max_frame_size);
    let principal_slot = Arc::new(Mutex::new(None));
    let acceptor = ConnectionAcceptor::builder()
        .container_id("thingcall")
        .max_frame_size(config.max_frame_size)
        .idle_time_out(config.local_idle_time_out_ms)
        .sasl_acceptor(AliyunPlain {
            directory,
            out: Arc::clone(&principal_slot),
        })
        .build();
    let mut conn = match tokio::time::timeout(config.auth_timeout, acceptor.accept(stream)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            let why = principal_slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .and_then(Result::err);
            match why {
                Some(why) => tracing::info!(?peer, reason = %why, "AMQP sign-in refused"),
                None => tracing::debug!(?peer, error = %e, "AMQP connection failed before sign-in"),
            }
            return;
        }
        Err(_) => {
            tracing::debug!(?peer, "AMQP sign-in not done in time");
            return;
        }
    };
    let taken = principal_slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let principal = match taken {
        Some(Ok(p)) => p,
        _ => {
            refuse(&mut conn, AmqpError::UnauthorizedAccess, "not signed in").await;
            return;
        }
    };
    let range = &config.idle_time_out_ms;
    let bad_idle = match open_slot.idle_time_out() {
        Some(ms) if range.contains(&ms) => None,
        Some(ms) => Some(format!(
            "idle-time-out {ms} ms is outside {}..={} ms",
            range.start(),
            range.end()
        )),
        None => Some(format!(
            "the Open frame must carry an idle-time-out of {}..={} ms",
            range.start(),
            range.end()
        )),
    };
    if let Some(why) = bad_idle {
        refuse(&mut conn, AmqpError::NotAllowed, &why).await;
        return;
    }
    // One session, one receiver link, within the deadline.
    let deadline = started + config.link_timeout;
    let attached = tokio::time::timeout_at(deadline, async {
        let mut session = SessionAcceptor::new()
            .accept(&mut conn)
            .await
            .map_err(|e| {
                (
                    AmqpError::NotAllowed,
                    format!("cannot begin a session: {e}"),
                )
            })?;
        let attach = session
            .next_incoming_attach()
            .await
            .ok_or((AmqpError::NotAllowed, "the session ended".to_owned()))?;
        Ok::<_, (AmqpError, String)>((session, attach))
    })
    .await;
    let (mut session, mut attach) = match attached {
        Ok(Ok(pair)) => pair,
        Ok(Err((condition, why))) => {
            refuse(&mut conn, condition, &why).await;
            return;
        }
        Err(_) => {
            let why = format!(
                "no receiver link was attached within {} ms",
                config.link_timeout.as_millis()
            );
            refuse(&mut conn, AmqpError::ResourceLimitExceeded, &why).await;
            return;
        }
    };
    if attach.role == Role::Sender {
        refuse(
            &mut conn,
            AmqpError::NotAllowed,
            "sender links are not supported: a consumer group only receives",
        )
        .await;
        return;
    }
    // Clients attach with any or no source, and some with no target.
    if attach.source.is_none() {
        attach.source = Some(Box::new(
            Source::builder().address(principal.group.clone()).build(),
        ));
    }
    if attach.target.is_none() {
        attach.target = Some(Box::new(TargetArchetype::Target(Target::default())));
    }
    let consumer = match broker.attach(&principal.group, &principal.client_id, peer) {
        Ok(c) => c,
        Err(refusal) => {
            refuse(
                &mut conn,
                AmqpError::ResourceLimitExceeded,
                &refusal.to_string(),
            )
            .await;
            return;
        }
    };
    let sender = match LinkAcceptor::new()
        .accept_incoming_attach(attach, &mut session)
        .await
    {
        Ok(LinkEndpoint::Sender(s)) => s,
        Ok(LinkEndpoint::Receiver(r)) => {
            let _ = r.close().await;
            refuse(
                &mut conn,
                AmqpError::NotAllowed,
                "sender links are not supported",
            )
            .await;
            return;
        }
        Err(e) => {
            refuse(
                &mut conn,
                AmqpError::NotAllowed,
                &format!("cannot attach the link: {e}"),
            )
            .await;
            return;
        }
    };
    tracing::info!(?peer, client_id = %principal.client_id, group = %principal.group, "AMQP consumer attached");
    // A second link on this session is refused; the first one stays.
    let refuser = tokio::spawn(async move {
        while let Some(extra) = session.next_incoming_attach().await {
            let link = LinkAcceptor::new()
                .accept_incoming_attach(extra, &mut session)
                .await;
            let error = close_error(
                AmqpError::ResourceLimitExceeded,
                "one receiver link per connection",
            );
            match link {
                Ok(LinkEndpoint::Sender(s)) => {
                    let _ = s.close_with_error(error).await;
                }
                Ok(LinkEndpoint::Receiver(r)) => {
                    let _ = r.close_with_error(error).await;
                }
                Err(_) => {}
            }
        }
        session
    });
    deliver(sender, consumer).await;
    refuser.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
    tracing::info!(?peer, client_id = %principal.client_id, group = %principal.group, "AMQP consumer detached");
}

/// The message as the official samples read it: one data section, no
/// content type, `topic`/`messageId`/`generateTime` as application
/// properties and the message id in `properties.message-id` too.
pub fn to_message(d: &Delivery) -> Message<fe2o3_amqp::types::messaging::Data> {
    let m = &d.message;
    let id = m.message_id.to_string();
    let mut builder = Message::builder()
        .properties(Properties::builder().message_id(id.clone()).build())
        .application_properties(
            ApplicationProperties::builder()
                .insert("topic", m.topic.clone())
                .insert("messageId", id)
                .insert("generateTime", m.generate_ms)
                .build(),
        );
    if d.attempts > 0 {
        builder = builder.header(Header {
            durable: true,
            priority: Default::default(),
            ttl: None,
            first_acquirer: false,
            delivery_count: d.attempts,
        });
    }
    builder.data(Binary::from(m.body.clone())).build()
}

/// Sends the consumer's deliveries over the link and reports each
/// outcome, until the link or connection goes.
async fn deliver(mut sender: Sender, mut consumer: Consumer) {
    let mut pending = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some((seq, outcome)) = pending.next(), if !pending.is_empty() => {
                consumer.settle(seq, outcome);
            }
            delivery = consumer.deliveries.recv() => {
                let Some(delivery) = delivery else { break };
                let seq = delivery.message.seq;
                if !consumer.holds(seq) {
                    consumer.settle(seq, Settled::Skipped);
                    continue;
                }
                // Waits for link credit: a consumer that grants none holds
                // its window and no more.
                let sent = sender.send_batchable(to_message(&delivery)).await;
                match sent {
                    Ok(fut) => pending.push(async move {
                        let settled = match fut.await {
                            Ok(Outcome::Accepted(_)) => Settled::Accepted,
                            Ok(_) => Settled::Returned,
                            Err(_) => Settled::Lost,
                        };
                        (seq, settled)
                    }),
                    Err(e) => {
                        tracing::debug!(error = %e, "AMQP send failed");
                        consumer.settle(seq, Settled::Lost);
                        break;
                    }
                }
            }
            _ = sender.on_detach() => break,
        }
    }
    // Deliveries still out are lost with the link; dropping the consumer
    // hands them out again.
    drop(pending);
    let _ = tokio::time::timeout(Duration::from_secs(1), sender.close()).await;
    drop(consumer);
}

/// Most AMQP connections open at once (each client id may hold 128).
pub const MAX_CONNECTIONS: usize = 16_384;

/// Accepts AMQP connections on `listener` until `stop` resolves: over TLS
/// when `tls` is given (direct TLS, no AMQP TLS header), else plaintext.
/// Each connection runs on its own task.
pub async fn accept_on(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    broker: Arc<Broker>,
    directory: Arc<dyn Directory>,
    config: EndpointConfig,
    stop: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "AMQP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, "AMQP connection limit reached; closing a new connection");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (broker, directory, config, tls) = (
            Arc::clone(&broker),
            Arc::clone(&directory),
            config.clone(),
            tls.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                Some(acceptor) => {
                    match thingcall_tls::accept(&acceptor, tcp, config.auth_timeout).await {
                        Ok(stream) => {
                            serve_connection(broker, directory, config, stream, Some(peer)).await;
                        }
                        Err(e) => tracing::debug!(%peer, error = %e, "AMQP TLS handshake failed"),
                    }
                }
                None => serve_connection(broker, directory, config, tcp, Some(peer)).await,
            }
        });
    }
}
