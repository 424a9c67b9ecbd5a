//! The cluster's pure parts; the nodes themselves are tested as processes
//! (`tests/cluster.rs`).

use super::{ClusterConfig, check_node_id, decode_url_part, node_id, redact_url};

#[test]
fn passwords_in_nats_urls_are_never_shown() {
    assert_eq!(
        redact_url("nats://user:s3cret@10.0.0.1:4222"),
        "nats://***@10.0.0.1:4222"
    );
    assert_eq!(redact_url("nats://10.0.0.1:4222"), "nats://10.0.0.1:4222");
    let config = ClusterConfig {
        nats: vec!["nats://a:pw@h1:4222".into(), "tls://t0ken@h2:4222".into()],
        node_id: None,
    };
    let shown = format!("{config:?} {}", config.servers_shown());
    assert!(!shown.contains("pw") && !shown.contains("t0ken"), "{shown}");
    assert!(shown.contains("h1:4222") && shown.contains("h2:4222"));
}

#[test]
fn node_ids_are_kept_and_checked() {
    let dir = std::env::temp_dir().join(format!("thingcall-node-id-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let made = node_id(&dir, None).unwrap();
    assert!(made.starts_with("node-"), "{made}");
    assert_eq!(node_id(&dir, None).unwrap(), made, "kept across starts");
    assert_eq!(node_id(&dir, Some("edge-7")).unwrap(), "edge-7");
    for bad in ["", "a.b", "a b", "x/../y", &"n".repeat(65)] {
        assert!(check_node_id(bad).is_err(), "{bad:?} accepted");
    }
    std::fs::write(dir.join("node-id"), "bad id\n").unwrap();
    let err = node_id(&dir, None).unwrap_err();
    assert!(err.contains("node-id"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn url_credentials_are_percent_decoded() {
    assert_eq!(decode_url_part("p%40ss%2Fw%3Ard"), "p@ss/w:rd");
    assert_eq!(decode_url_part("plain"), "plain");
    assert_eq!(decode_url_part("bad%zz%4"), "bad%zz%4");
}
