//! The AMQP endpoint fed arbitrary bytes over an in-memory pipe: from the
//! first byte (protocol headers, SASL), or (when the input's first byte is
//! odd) after a good sign-in, so that Open, Begin, Attach, Flow and
//! Disposition frames of any shape reach the engine and the delivery
//! loop. Whatever comes, the connection ends without a panic once its input
//! does, and no consumer is left attached to the group.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait_shim::NoBacklog;
use fe2o3_amqp_types::primitives::{Binary, Symbol};
use fe2o3_amqp_types::sasl::SaslInit;
use libfuzzer_sys::fuzz_target;
use thingcall_amqp::{Broker, BrokerConfig, Directory, EndpointConfig};
use thingcall_core::Secret;
use thingcall_sign::SignMethod;
use thingcall_sign::amqp::{AmqpUsername, username};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod async_trait_shim {
    //! A backlog with one message for every read, so that a consumer that
    //! attaches gets deliveries to settle (or not).
    use thingcall_amqp::{Backlog, Queued};

    pub struct NoBacklog;

    #[async_trait::async_trait]
    impl Backlog for NoBacklog {
        async fn read(&self, _g: &str, after: u64, _limit: usize) -> Result<Vec<Queued>, String> {
            if after > 0 {
                return Ok(Vec::new());
            }
            Ok(vec![Queued {
                seq: 1,
                key: "a1FuzzPk001/dev1".into(),
                topic: "/as/mqtt/status/a1FuzzPk001/dev1".into(),
                message_id: 7,
                generate_ms: 0,
                body: b"{}".to_vec(),
            }])
        }
        fn ack(&self, _g: &str, _seq: u64) {}
    }
}

struct Keys;

impl Directory for Keys {
    fn access_key_secret(&self, id: &str) -> Option<Secret> {
        (id == "fuzzkey").then(|| Secret::new("fuzzsecret"))
    }
    fn group_exists(&self, group: &str) -> bool {
        group == "G"
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// A SASL header and a good PLAIN sign-in, then the AMQP header.
fn signed_in() -> Vec<u8> {
    let user = username("c", SignMethod::HmacSha1, "1", "fuzzkey", "G", None);
    let password = AmqpUsername::parse(&user)
        .unwrap_or_else(|e| panic!("{e}"))
        .password("fuzzsecret");
    let mut response = vec![0u8];
    response.extend(user.as_bytes());
    response.push(0);
    response.extend(password.as_bytes());
    let init = SaslInit {
        mechanism: Symbol::from("PLAIN"),
        initial_response: Some(Binary::from(response)),
        hostname: None,
    };
    let body = serde_amqp::to_vec(&init).unwrap_or_else(|e| panic!("{e}"));
    let mut out = b"AMQP\x03\x01\x00\x00".to_vec();
    out.extend(((body.len() + 8) as u32).to_be_bytes());
    out.extend([2, 1, 0, 0]);
    out.extend(body);
    out.extend(b"AMQP\x00\x01\x00\x00");
    out
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let broker = Broker::new(BrokerConfig::default(), Arc::new(NoBacklog), Arc::new(|| 0));
        let config = EndpointConfig {
            auth_timeout: Duration::from_secs(2),
            link_timeout: Duration::from_secs(2),
            ..EndpointConfig::default()
        };
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let input = match data.first() {
            Some(b) if b % 2 == 1 => [signed_in().as_slice(), &data[1..]].concat(),
            _ => data.to_vec(),
        };
        let served = tokio::spawn(thingcall_amqp::serve_connection(
            Arc::clone(&broker),
            Arc::new(Keys),
            config,
            server,
            None,
        ));
        let writer = async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            let mut sink = vec![0u8; 64 * 1024];
            while let Ok(n) = client.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        };
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            writer.await;
            served.await
        })
        .await;
        match ended {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the connection task failed: {e}"),
            Err(_) => panic!("the connection did not end after its input did"),
        }
        assert!(
            broker.status("G").clients.is_empty(),
            "a consumer outlived its connection"
        );
    });
});
