//! TLS from the command line: `serve --demo` with every TLS and WebSocket
//! listener (ready-file keys, the demo CA), `invoke` over HTTPS with
//! `--ca-file`, `ALIBABA_CLOUD_CA_BUNDLE` and `--insecure` (and refused
//! without them), the simulator over `--tls` and `--websocket`, and a new
//! certificate taken on SIGHUP while the old connections go on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
#![allow(clippy::zombie_processes)] // the server child is killed and waited for at the end

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ID, SECRET, demo_product, ok_json, start, temp_dir};

fn thingcall(https: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_thingcall"));
    cmd.args(args)
        .args([
            "--endpoint",
            &format!("https://{https}"),
            "--access-key-id",
            ID,
            "--access-key-secret",
            SECRET,
            "--output",
            "json",
        ])
        .env_remove("ALIBABA_CLOUD_CA_BUNDLE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Whether a TLS handshake with `addr` succeeds when trusting `ca`.
fn trusted_by(addr: &str, ca: &Path) -> bool {
    let config = thingcall_gateway::client::tls_trusting(ca).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .is_ok()
        })
}

fn invoke_args<'a>(pk: &'a str, dn: &'a str) -> Vec<&'a str> {
    vec![
        "invoke",
        "--product-key",
        pk,
        "--device-name",
        dn,
        "--identifier",
        "Calibrate",
        "--args",
        r#"{"Offset":1.5}"#,
    ]
}

#[test]
fn tls_from_the_command_line() {
    let dir = temp_dir("tls-cli");
    let mut s = start(
        &dir,
        &[
            "--demo",
            "--https",
            "127.0.0.1:0",
            "--mqtts",
            "127.0.0.1:0",
            "--mqtt-ws",
            "127.0.0.1:0",
            "--mqtt-wss",
            "127.0.0.1:0",
        ],
    );
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ready.json")).unwrap()).unwrap();
    let addr = |k: &str| ready[k].as_str().unwrap().to_owned();
    let (https, mqtts, ws) = (addr("https"), addr("mqtts"), addr("mqtt_ws"));
    assert!(ready["mqtt_wss"].is_string(), "{ready}");
    let ca = dir.join("data/tls/ca.pem");
    let ca_s = ca.to_str().unwrap();

    // The demo product, from the banner.
    let pk = demo_product(&mut s.child);

    // invoke: trusted by --ca-file and by the official SDK's variable;
    // refused with neither; --insecure works, and says so.
    let args = invoke_args(&pk, "demo-device-1");
    let mut with_file = args.clone();
    with_file.extend(["--ca-file", ca_s]);
    let r = ok_json(&thingcall(&https, &with_file, &[]));
    assert!(r["MessageId"].is_string(), "{r}");
    let r = ok_json(&thingcall(
        &https,
        &args,
        &[("ALIBABA_CLOUD_CA_BUNDLE", ca_s)],
    ));
    assert!(r["MessageId"].is_string(), "{r}");
    let refused = thingcall(&https, &args, &[]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(why.contains("certificate"), "{why}");
    let mut insecure = args.clone();
    insecure.push("--insecure");
    // --insecure wins over a CA named in the environment (even a missing one).
    let out = thingcall(
        &https,
        &insecure,
        &[("ALIBABA_CLOUD_CA_BUNDLE", "/nonexistent/ca.pem")],
    );
    assert!(ok_json(&out)["MessageId"].is_string());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));

    // The simulator over TLS and over WebSocket.
    let tsl = format!(
        "{}/../thingcall-server/demo/model.json",
        env!("CARGO_MANIFEST_DIR")
    );
    for (dn, mqtt, flags) in [
        ("sim-tls", mqtts.as_str(), vec!["--tls", "--ca-file", ca_s]),
        ("sim-ws", ws.as_str(), vec!["--websocket"]),
    ] {
        let reg = ok_json(&thingcall(
            &https,
            &[
                "device",
                "register",
                "--product-key",
                &pk,
                "--device-name",
                dn,
            ],
            &[("ALIBABA_CLOUD_CA_BUNDLE", ca_s)],
        ));
        let secret = reg[0]["DeviceSecret"]
            .as_str()
            .unwrap_or_else(|| panic!("{reg}"))
            .to_owned();
        let mut sim = Command::new(env!("CARGO_BIN_EXE_thingcall"))
            .args(["device", "simulate", "--mqtt", mqtt, "--product-key", &pk])
            .args([
                "--device-name",
                dn,
                "--device-secret",
                &secret,
                "--tsl",
                &tsl,
            ])
            .args(&flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let st = ok_json(&thingcall(
                &https,
                &[
                    "device",
                    "status",
                    "--product-key",
                    &pk,
                    "--device-name",
                    dn,
                ],
                &[("ALIBABA_CLOUD_CA_BUNDLE", ca_s)],
            ));
            if st.to_string().contains("ONLINE") {
                break;
            }
            assert!(Instant::now() < deadline, "{dn} never came online");
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut a = invoke_args(&pk, dn);
        a.extend(["--ca-file", ca_s]);
        let r = ok_json(&thingcall(&https, &a, &[]));
        assert!(r["MessageId"].is_string(), "{dn}: {r}");
        let _ = sim.kill();
        let _ = sim.wait();
    }

    // SIGHUP: another CA's certificate, written with the old files'
    // modification times (so only the signal can tell), is served to new
    // handshakes; the demo device, connected before, still answers.
    let other_dir = dir.join("other");
    let other = thingcall_tls::demo::ensure(&other_dir).unwrap();
    let tls_dir = dir.join("data/tls");
    for (from, to) in [
        (&other.files.key, tls_dir.join("server-key.pem")),
        (&other.files.cert, tls_dir.join("server.pem")),
    ] {
        let modified = std::fs::metadata(&to).unwrap().modified().unwrap();
        std::fs::copy(from, &to).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&to)
            .unwrap()
            .set_modified(modified)
            .unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(trusted_by(&https, &ca), "reloaded without a signal");
    let status = Command::new("kill")
        .args(["-HUP", &s.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !trusted_by(&mqtts, &other.ca) {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!trusted_by(&https, &ca));
    let mut a = invoke_args(&pk, "demo-device-1");
    a.extend(["--ca-file", other.ca.to_str().unwrap()]);
    assert!(ok_json(&thingcall(&https, &a, &[]))["MessageId"].is_string());

    let _ = Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status();
    let _ = s.child.wait();
}
