//! Tests of the dispatcher over an in-memory backlog: order, acceptance,
//! redelivery (returned, lost, timed out), per-device order, limits, reset,
//! expiry, and a window that stays bounded whatever the backlog's size.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;

use super::*;

/// A backlog in memory, as the store keeps one.
#[derive(Default)]
struct MemBacklog {
    rows: Mutex<BTreeMap<(String, u64), Queued>>,
    reads: AtomicU64,
}

impl MemBacklog {
    fn push(&self, group: &str, seq: u64, key: &str) {
        lock(&self.rows).insert(
            (group.to_owned(), seq),
            Queued {
                seq,
                key: key.to_owned(),
                topic: format!("/t/{key}"),
                message_id: 1000 + seq,
                generate_ms: 0,
                body: format!("{seq}").into_bytes(),
            },
        );
    }

    fn len(&self) -> usize {
        lock(&self.rows).len()
    }
}

#[async_trait]
impl Backlog for MemBacklog {
    async fn read(&self, group: &str, after: u64, limit: usize) -> Result<Vec<Queued>, String> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(lock(&self.rows)
            .range((group.to_owned(), after + 1)..(group.to_owned(), u64::MAX))
            .take(limit)
            .map(|(_, q)| q.clone())
            .collect())
    }

    fn ack(&self, group: &str, seq: u64) {
        lock(&self.rows).remove(&(group.to_owned(), seq));
    }
}

fn broker(config: BrokerConfig) -> (Arc<Broker>, Arc<MemBacklog>, Arc<AtomicI64>) {
    let backlog = Arc::new(MemBacklog::default());
    let now = Arc::new(AtomicI64::new(1_000));
    let clock = Arc::clone(&now);
    let b = Broker::new(
        config,
        Arc::clone(&backlog) as Arc<dyn Backlog>,
        Arc::new(move || clock.load(Ordering::Relaxed)),
    );
    (b, backlog, now)
}

async fn next(c: &mut Consumer) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), c.deliveries.recv())
        .await
        .expect("a delivery in time")
        .expect("the consumer is open")
}

async fn nothing(c: &mut Consumer) {
    let got = tokio::time::timeout(Duration::from_millis(200), c.deliveries.recv()).await;
    assert!(got.is_err(), "no delivery expected, got {got:?}");
}

#[tokio::test]
async fn messages_arrive_in_order_and_accepted_ones_leave_the_store() {
    let (b, backlog, _) = broker(BrokerConfig {
        per_device_order: false,
        ..Default::default()
    });
    for seq in 1..=5 {
        backlog.push("g", seq, "dev");
    }
    let mut c = b.attach("g", "client", None).unwrap();
    for want in 1..=5 {
        let d = next(&mut c).await;
        assert_eq!(d.message.seq, want);
        assert_eq!(d.attempts, 0);
        c.settle(want, Settled::Accepted);
    }
    tokio::task::yield_now().await;
    assert_eq!(backlog.len(), 0);
    assert_eq!(b.status("g").accepted_last_minute, 5);
    // Messages stored later are read after a notice.
    backlog.push("g", 6, "dev");
    b.notify("g");
    assert_eq!(next(&mut c).await.message.seq, 6);
}

#[tokio::test(start_paused = true)]
async fn a_returned_message_comes_back_after_the_retry_delay() {
    let (b, backlog, _) = broker(BrokerConfig::default());
    backlog.push("g", 1, "dev");
    let mut c = b.attach("g", "client", None).unwrap();
    let d = next(&mut c).await;
    c.settle(d.message.seq, Settled::Returned);
    let again = next(&mut c).await;
    assert_eq!(again.message.seq, 1);
    assert_eq!(again.attempts, 1);
    assert_eq!(backlog.len(), 1, "not removed until accepted");
}

#[tokio::test(start_paused = true)]
async fn an_unsettled_message_is_handed_to_another_consumer_after_the_ack_timeout() {
    let (b, backlog, _) = broker(BrokerConfig::default());
    backlog.push("g", 1, "dev");
    let mut stuck = b.attach("g", "a", None).unwrap();
    let d = next(&mut stuck).await;
    assert_eq!(d.message.seq, 1);
    let mut other = b.attach("g", "b", None).unwrap();
    // Nothing else to hand out until the first delivery times out.
    nothing(&mut other).await;
    tokio::time::advance(Duration::from_secs(31)).await;
    let again = next(&mut other).await;
    assert_eq!((again.message.seq, again.attempts), (1, 1));
    assert!(!stuck.holds(1), "the stuck consumer no longer holds it");
    other.settle(1, Settled::Accepted);
    tokio::task::yield_now().await;
    assert_eq!(backlog.len(), 0);
}

#[tokio::test]
async fn a_consumer_that_goes_away_hands_its_messages_back_at_once() {
    let (b, backlog, _) = broker(BrokerConfig {
        per_device_order: false,
        ..Default::default()
    });
    for seq in 1..=3 {
        backlog.push("g", seq, "dev");
    }
    let mut first = b.attach("g", "a", None).unwrap();
    for _ in 0..3 {
        next(&mut first).await;
    }
    drop(first);
    let mut second = b.attach("g", "b", None).unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let d = next(&mut second).await;
        seen.push(d.message.seq);
        second.settle(d.message.seq, Settled::Accepted);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3]);
}

#[tokio::test]
async fn one_devices_messages_wait_for_the_previous_one() {
    let (b, backlog, _) = broker(BrokerConfig::default());
    backlog.push("g", 1, "dev-a");
    backlog.push("g", 2, "dev-a");
    backlog.push("g", 3, "dev-b");
    let mut c = b.attach("g", "client", None).unwrap();
    let first = next(&mut c).await;
    let second = next(&mut c).await;
    assert_eq!((first.message.seq, second.message.seq), (1, 3));
    nothing(&mut c).await;
    c.settle(1, Settled::Accepted);
    assert_eq!(next(&mut c).await.message.seq, 2);
}

#[tokio::test]
async fn the_window_bounds_what_is_held_whatever_the_backlog() {
    let (b, backlog, _) = broker(BrokerConfig {
        consumer_window: 8,
        read_batch: 16,
        per_device_order: false,
        ..Default::default()
    });
    for seq in 1..=10_000 {
        backlog.push("g", seq, "dev");
    }
    let mut c = b.attach("g", "client", None).unwrap();
    for _ in 0..8 {
        next(&mut c).await;
    }
    nothing(&mut c).await;
    let g = lock(&b.groups).get("g").cloned().unwrap();
    let st = lock(&g.state);
    assert_eq!(st.in_flight.len(), 8);
    assert!(st.ready.len() <= 32, "ready {}", st.ready.len());
    drop(st);
    assert!(backlog.reads.load(Ordering::Relaxed) <= 4);
}

#[tokio::test]
async fn limits_per_client_id_and_per_group() {
    let (b, _, _) = broker(BrokerConfig {
        max_connections_per_client: 2,
        max_clients_per_group: 2,
        ..Default::default()
    });
    let _a1 = b.attach("g", "a", None).unwrap();
    let _a2 = b.attach("g", "a", None).unwrap();
    assert_eq!(
        b.attach("g", "a", None).unwrap_err(),
        Refusal::TooManyConnections(2)
    );
    let _b1 = b.attach("g", "b", None).unwrap();
    assert_eq!(
        b.attach("g", "c", None).unwrap_err(),
        Refusal::TooManyClients(2)
    );
    // Another group has its own limits.
    assert!(b.attach("h", "c", None).is_ok());
}

#[tokio::test]
async fn a_reset_forgets_what_was_read_and_expired_messages_are_dropped() {
    let (b, backlog, now) = broker(BrokerConfig {
        retention: Duration::from_secs(60),
        ..Default::default()
    });
    backlog.push("g", 1, "dev-a");
    let mut c = b.attach("g", "client", None).unwrap();
    assert_eq!(next(&mut c).await.message.seq, 1);
    lock(&backlog.rows).clear();
    b.reset("g");
    // A late accept of a reset delivery is harmless.
    c.settle(1, Settled::Accepted);
    // A message older than the retention is removed, not delivered.
    now.store(1_000 + 61_000, Ordering::Relaxed);
    backlog.push("g", 2, "dev-b");
    b.notify("g");
    nothing(&mut c).await;
    assert_eq!(backlog.len(), 0);
    assert_eq!(b.stats.expired.load(Ordering::Relaxed), 1);
}
