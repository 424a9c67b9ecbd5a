//! MQTT over WebSocket fed arbitrary frames after a good upgrade, over an
//! in-memory pipe. The input is read as a list of frames, each one byte of
//! kind (binary, text, ping, pong, close, continuation, or raw bytes that
//! may be no frame at all), two bytes of length and the payload; frames are
//! masked as a client must. The first binary frame carries a good CONNECT.
//! Whatever comes, the session ends without a panic and the gateway forgets
//! the device.
#![no_main]

#[path = "common.rs"]
mod common;

use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use thingcall_gateway::client::{self, CredentialOptions};
use thingcall_gateway::mqttbytes::v4::Packet;
use thingcall_transport::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn connect_bytes() -> Vec<u8> {
    let creds = client::credentials(
        &common::device(),
        common::SECRET,
        CredentialOptions::default(),
    );
    let mut out = BytesMut::new();
    Packet::Connect(client::connect_packet(&creds, 60, true))
        .write(&mut out, usize::MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    out.to_vec()
}

/// One client frame: FIN set, `opcode`, masked with a fixed key.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | (opcode & 0x0f)];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend((len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend((len as u64).to_be_bytes());
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    out.extend(key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fn frames(data: &[u8]) -> Vec<u8> {
    let mut out = frame(0x2, &connect_bytes());
    let mut rest = data;
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let payload = &rest[3..3 + len];
        rest = &rest[3 + len..];
        match kind % 7 {
            0 => out.extend(frame(0x2, payload)),
            1 => out.extend(frame(0x1, payload)),
            2 => out.extend(frame(0x9, payload)),
            3 => out.extend(frame(0xa, payload)),
            4 => out.extend(frame(0x8, payload)),
            5 => out.extend(frame(0x0, payload)),
            _ => out.extend_from_slice(payload),
        }
    }
    out
}

const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    common::runtime().block_on(async {
        let gateway = common::gateway();
        let (mut device_end, gateway_end) = tokio::io::duplex(512 * 1024);
        let session = {
            let g = gateway.clone();
            tokio::spawn(async move {
                g.serve_websocket(gateway_end, ([127, 0, 0, 1], 8083).into(), false)
                    .await
            })
        };
        let input = [UPGRADE, &frames(data)].concat();
        let writer = async move {
            let _ = device_end.write_all(&input).await;
            let _ = device_end.shutdown().await;
            let mut sink = vec![0u8; 64 * 1024];
            while let Ok(n) = device_end.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            writer.await;
            session.await
        })
        .await;
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the session task failed: {e}"),
            Err(_) => panic!("the session did not end after its input did"),
        }
        assert!(
            !gateway.is_online(&common::device()),
            "the ended session is still online"
        );
    });
});
