//! What a caller without credentials can hold of the HTTP front, and the
//! deadlines and budget that take it back: slow bodies are cut off at their
//! allowance, unverified bodies share a byte budget, an idle or unverified
//! connection ends, and a client that stops reading loses its connection
//! (docs/security/strangers.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)] // test code

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use thingcall_server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request head for a form POST to `/` with `Content-Length: len`.
fn post_head(addr: &str, len: usize, keep_alive: bool) -> String {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Reads what the server sends until it closes (or `limit` passes); the
/// text and when the close came.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(start.elapsed()),
                );
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), None),
        }
    }
}

/// The status of the first response in `text` (0: none).
fn status_of(text: &str) -> u16 {
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A connection that sends a request head announcing `len` body bytes,
/// then one body byte a second, until the server answers or closes; what
/// it read and how long after the head the server closed.
async fn drip(addr: String, len: usize, limit: Duration) -> (String, Option<Duration>) {
    drip_counted(addr, len, limit, Arc::default()).await
}

/// [`drip`], counting in `sent` once its head is sent.
async fn drip_counted(
    addr: String,
    len: usize,
    limit: Duration,
    sent: Arc<AtomicUsize>,
) -> (String, Option<Duration>) {
    let Ok(stream) = TcpStream::connect(&addr).await else {
        return (String::new(), Some(Duration::ZERO));
    };
    let (mut reader, mut writer) = stream.into_split();
    let head = post_head(&addr, len, false);
    if writer.write_all(head.as_bytes()).await.is_err() {
        return (String::new(), Some(Duration::ZERO));
    }
    sent.fetch_add(1, Ordering::SeqCst);
    let start = Instant::now();
    let dripping = tokio::spawn(async move {
        for _ in 0..len {
            if writer.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), reader.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break Some(start.elapsed()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break None,
        }
    };
    dripping.abort();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// One series' value from `/metrics` (0 when absent).
async fn series(http: &str, name: &str) -> u64 {
    let (_, _, text) = raw(http, "GET", "/metrics", &[], b"").await;
    let needle = format!("{name} ");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(needle.as_str())
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// A signed `QueryProduct` as a form body, padded with an extra parameter
/// of `pad` bytes (unknown parameters are ignored, as on Alibaba).
fn signed_form(pk: &str, pad: usize) -> String {
    let mut params = common("QueryProduct");
    params.push(("ProductKey".into(), pk.into()));
    if pad > 0 {
        params.push(("Padding".into(), "p".repeat(pad)));
    }
    signed_query(params, "POST")
}

/// Sends one signed request on a new connection, within `limit`; its
/// status (0: the connection was closed without an answer).
async fn signed_status(http: &str, pk: &str, limit: Duration) -> u16 {
    let attempt = async {
        let mut s = TcpStream::connect(http).await.ok()?;
        let body = signed_form(pk, 0);
        let head = post_head(http, body.len(), false);
        s.write_all(head.as_bytes()).await.ok()?;
        s.write_all(body.as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(status_of(&out))
    };
    tokio::time::timeout(limit, attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// A published product, made through a server that has a single HTTP
/// slot: each call waits for the previous connection to give its slot
/// back (the server may still be closing it when the client has read it
/// all).
async fn product_through_one_slot(http: &str, name: &str) -> String {
    async fn call_retrying(http: &str, action: &str, extra: &[(&str, &str)]) -> serde_json::Value {
        for _ in 0..50 {
            let (status, body) = call(http, action, extra).await;
            if status != 0 {
                assert_eq!(body["Success"], true, "{action}: {body}");
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{action}: the only slot never came free");
    }
    let created = call_retrying(
        http,
        "CreateProduct",
        &[
            ("ProductName", name),
            ("NodeType", "0"),
            ("AliyunCommodityCode", "iothub_senior"),
            ("DataFormat", "1"),
        ],
    )
    .await;
    let pk = created["ProductKey"].as_str().unwrap().to_owned();
    call_retrying(
        http,
        "ImportThingModelTsl",
        &[("ProductKey", &pk), ("TslStr", MODEL)],
    )
    .await;
    call_retrying(http, "PublishThingModel", &[("ProductKey", &pk)]).await;
    pk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_that_take_every_slot_are_cut_off_and_a_signed_request_is_served() {
    let slots = 32;
    let config = ServerConfig {
        max_http_connections: slots,
        body_timeout: Duration::from_secs(3),
        body_min_rate: 1024,
        ..ServerConfig::default()
    };
    let h = Harness::start(config).await;
    let pk = product(&h.http, "Strangers_1").await;

    // Every slot taken by a body that drips one byte a second: once the
    // server has accepted them all, a new connection is closed at once
    // (on a loaded machine the drips take a moment to be accepted; their
    // allowance, 3 s, leaves room to see it).
    let start = Instant::now();
    let sent = Arc::new(AtomicUsize::new(0));
    let drips: Vec<_> = (0..slots)
        .map(|_| {
            let sent = Arc::clone(&sent);
            tokio::spawn(drip_counted(
                h.http.clone(),
                600,
                Duration::from_secs(20),
                sent,
            ))
        })
        .collect();
    while sent.load(Ordering::SeqCst) < slots {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the drips never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        signed_status(&h.http, &pk, Duration::from_millis(500)).await,
        0,
        "the drips should hold every slot at first"
    );

    // The signed request is served as soon as the drips fall behind their
    // allowance (3 s), though they keep dripping.
    let served = loop {
        if signed_status(&h.http, &pk, Duration::from_secs(1)).await == 200 {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "no signed request was served while the drips went on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("a signed request was served {served:?} after {slots} drips took every slot");
    assert!(served < Duration::from_secs(6), "{served:?}");
    for d in drips {
        let (text, closed) = d.await.unwrap();
        let closed = closed.expect("a dripping body was never cut off");
        assert!(
            closed >= Duration::from_millis(2900) && closed < Duration::from_secs(6),
            "cut off after {closed:?}"
        );
        assert_eq!(status_of(&text), 408, "{text}");
        assert!(text.contains("<Code>RequestTimeout</Code>"), "{text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{text}"
        );
    }
    let timeouts = "thingcall_http_events_total{event=\"body_timeouts\"}";
    assert!(series(&h.http, timeouts).await >= slots as u64);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_is_cut_off_when_it_falls_behind_its_allowance() {
    let config = ServerConfig {
        body_timeout: Duration::from_secs(1),
        body_min_rate: 1000,
        ..ServerConfig::default()
    };
    let h = Harness::start(config).await;
    let pk = product(&h.http, "Strangers_2").await;

    // One byte a second: cut off once the first second is spent.
    let (text, closed) = drip(h.http.clone(), 100, Duration::from_secs(6)).await;
    let closed = closed.expect("a dripping body was never cut off");
    eprintln!("a drip was cut off after {closed:?}");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(2500),
        "{closed:?}"
    );
    assert_eq!(status_of(&text), 408, "{text}");

    // A signed body sent at twice the minimum rate takes three times the
    // first allowance and is served all the same.
    let body = signed_form(&pk, 6000);
    let mut s = TcpStream::connect(&h.http).await.unwrap();
    s.write_all(post_head(&h.http, body.len(), false).as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    for chunk in body.as_bytes().chunks(200) {
        s.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    eprintln!(
        "a {} byte body sent at 2000 B/s took {:?}",
        body.len(),
        started.elapsed()
    );
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(status_of(&text), 200, "{text}");
    assert!(text.contains("\"Success\":true"), "{text}");

    // 3000 bytes at once, then nothing: the allowance is the first second
    // plus three earned ones.
    let mut s = TcpStream::connect(&h.http).await.unwrap();
    s.write_all(post_head(&h.http, 10_000, false).as_bytes())
        .await
        .unwrap();
    s.write_all(&[b'a'; 3000]).await.unwrap();
    let (text, closed) = read_until_closed(&mut s, Duration::from_secs(8)).await;
    let closed = closed.expect("a stalled body was never cut off");
    eprintln!("a body that stalled after 3000 bytes was cut off after {closed:?}");
    assert!(
        closed >= Duration::from_millis(3800) && closed < Duration::from_millis(5500),
        "{closed:?}"
    );
    assert_eq!(status_of(&text), 408, "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_bodies_never_hold_more_than_the_byte_budget() {
    let budget = 256 * 1024;
    let config = ServerConfig {
        max_body: 64 * 1024,
        unverified_body_budget: budget,
        ..ServerConfig::default()
    };
    let h = Harness::start(config).await;
    let pk = product(&h.http, "Strangers_3").await;

    // Forty unsigned 60 KiB bodies, each sending half at once and the rest
    // a second later: 1.2 MiB would be held at once without the budget.
    let started = Instant::now();
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let addr = h.http.clone();
            tokio::spawn(async move {
                let mut s = TcpStream::connect(&addr).await.unwrap();
                let len = 60 * 1024;
                s.write_all(post_head(&addr, len, false).as_bytes())
                    .await
                    .unwrap();
                let sent = Instant::now();
                let _ = s.write_all(&vec![b'a'; len / 2]).await;
                let (mut reader, mut writer) = s.into_split();
                let rest = tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = writer.write_all(&vec![b'a'; len / 2]).await;
                    writer
                });
                let mut out = String::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(10), reader.read_to_string(&mut out))
                        .await;
                let answered = sent.elapsed();
                drop(rest.await);
                (status_of(&out), out, answered)
            })
        })
        .collect();
    let (mut refused, mut at_once) = (0, 0);
    for f in flood {
        let (status, text, answered) = f.await.unwrap();
        match status {
            // Refused as soon as bytes arrive that the budget cannot hold:
            // the first half, or the second one (sent after 1 s). A
            // refusal is never queued behind the other bodies.
            503 => {
                assert!(text.contains("<Code>ServiceUnavailable</Code>"), "{text}");
                assert!(answered < Duration::from_millis(1800), "{answered:?}");
                if answered < Duration::from_millis(900) {
                    at_once += 1;
                }
                refused += 1;
            }
            // Read whole, then refused for what it is: unsigned.
            400 | 404 => {}
            _ => panic!("unexpected answer: {text}"),
        }
    }
    eprintln!(
        "{refused} of 40 unverified bodies refused for the budget ({at_once} on their first \
         half), in {:?}",
        started.elapsed()
    );
    // 256 KiB holds the first halves of eight bodies at most.
    assert!(
        refused >= 32 && at_once >= 24,
        "{refused} refused, {at_once} at once"
    );
    let peak = series(
        &h.http,
        "thingcall_http_unverified_body_bytes{kind=\"peak\"}",
    )
    .await;
    eprintln!("at most {peak} unverified bytes held at once (budget {budget})");
    assert!(peak > 0 && peak <= budget as u64, "{peak}");
    let held = "thingcall_http_unverified_body_bytes{kind=\"held\"}";
    assert_eq!(series(&h.http, held).await, 0);
    let refusals = "thingcall_http_events_total{event=\"body_budget_refusals\"}";
    assert_eq!(series(&h.http, refusals).await, refused);
    // With the flood gone, the budget is whole again.
    assert_eq!(
        signed_status(&h.http, &pk, Duration::from_secs(5)).await,
        200
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_or_unverified_connection_ends_at_the_header_timeout_or_its_answer() {
    let config = ServerConfig {
        max_http_connections: 1,
        header_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    };
    let h = Harness::start(config).await;
    let pk = product_through_one_slot(&h.http, "Strangers_4").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A connection that sends nothing is closed once the header timeout
    // passes.
    let mut idle = TcpStream::connect(&h.http).await.unwrap();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    let closed = closed.expect("an idle connection was kept");
    assert!(closed < Duration::from_millis(2500), "{closed:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Two unsigned requests pipelined on a keep-alive connection: the
    // first gets its answer, and the connection ends with it.
    let mut stranger = TcpStream::connect(&h.http).await.unwrap();
    let request = format!(
        "GET /?Action=QueryProduct HTTP/1.1\r\nHost: {}\r\n\r\n",
        h.http
    );
    stranger
        .write_all(format!("{request}{request}").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let (text, closed) = read_until_closed(&mut stranger, Duration::from_secs(5)).await;
    assert_eq!(status_of(&text), 400, "{text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(closed.is_some() && started.elapsed() < Duration::from_millis(500));
    tokio::time::sleep(Duration::from_millis(200)).await;

    // A signed request keeps its connection: a second one is served on
    // it, and it ends once it has been idle for the header timeout.
    let mut known = TcpStream::connect(&h.http).await.unwrap();
    for _ in 0..2 {
        let body = signed_form(&pk, 0);
        known
            .write_all(post_head(&h.http, body.len(), true).as_bytes())
            .await
            .unwrap();
        known.write_all(body.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(5), known.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 200);
    }
    let (_, closed) = read_until_closed(&mut known, Duration::from_secs(5)).await;
    assert!(closed.expect("an idle keep-alive connection was kept") < Duration::from_millis(2500));
    h.stop().await;
}
