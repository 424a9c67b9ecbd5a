//! A gateway session fed arbitrary bytes after a good CONNECT, over an
//! in-memory pipe: whatever the bytes, the session ends (refusing or
//! closing) without a panic, and the gateway forgets the device.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use thingcall_gateway::client::{self, CredentialOptions};
use thingcall_gateway::mqttbytes::v4::Packet;
use thingcall_transport::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn connect_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let creds = client::credentials(
            &common::device(),
            common::SECRET,
            CredentialOptions {
                ext: true,
                auto_subscribe: true,
                ..Default::default()
            },
        );
        let mut out = BytesMut::new();
        Packet::Connect(client::connect_packet(&creds, 60, false))
            .write(&mut out, usize::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
        out.to_vec()
    })
}

fuzz_target!(|data: &[u8]| {
    common::runtime().block_on(async {
        let gateway = common::gateway();
        let (mut device_end, gateway_end) = tokio::io::duplex(256 * 1024);
        let session = {
            let g = gateway.clone();
            tokio::spawn(async move {
                g.serve_connection(gateway_end, ([127, 0, 0, 1], 1883).into())
                    .await
            })
        };
        let input = [connect_bytes(), data].concat();
        let writer = async move {
            let _ = device_end.write_all(&input).await;
            let _ = device_end.shutdown().await;
            // Drain what the gateway writes until it closes the pipe.
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
