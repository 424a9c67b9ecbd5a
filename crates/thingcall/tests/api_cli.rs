//! The API commands against a running `thingcall serve`: exit codes, tables
//! and JSON output, and the full provisioning path from the command line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code
#![allow(clippy::zombie_processes)] // the server child is killed and waited for at the end

mod common;

use std::process::{Command, Output};

use common::{ID, SECRET, ok_json, start, temp_dir};

fn thingcall(http: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .args(args)
        .args([
            "--endpoint",
            &format!("http://{http}"),
            "--access-key-id",
            ID,
            "--access-key-secret",
            SECRET,
        ])
        .env_remove("ALIBABA_CLOUD_ACCESS_KEY_ID")
        .output()
        .unwrap()
}

#[test]
fn provision_and_invoke_from_the_command_line() {
    let dir = temp_dir("cli");
    let mut s = start(&dir, &[]);
    let h = s.http.clone();
    let product = ok_json(&thingcall(
        &h,
        &["product", "create", "--name", "Cli_1", "--output", "json"],
    ));
    let pk = product["ProductKey"].as_str().unwrap().to_owned();
    let tsl = format!(
        "{}/../thingcall-server/demo/model.json",
        env!("CARGO_MANIFEST_DIR")
    );
    ok_json(&thingcall(
        &h,
        &[
            "tsl",
            "import",
            "--product-key",
            &pk,
            &tsl,
            "--output",
            "json",
        ],
    ));
    ok_json(&thingcall(
        &h,
        &[
            "tsl",
            "publish",
            "--product-key",
            &pk,
            "--model-version",
            "v1",
            "--output",
            "json",
        ],
    ));
    let got = thingcall(&h, &["tsl", "get", "--product-key", &pk, "--published"]);
    assert!(String::from_utf8_lossy(&got.stdout).contains("\"Calibrate\""));

    let devices = ok_json(&thingcall(
        &h,
        &[
            "device",
            "register",
            "--product-key",
            &pk,
            "--device-name",
            "cli",
            "--count",
            "3",
            "--output",
            "json",
        ],
    ));
    assert_eq!(devices.as_array().unwrap().len(), 3);
    assert_eq!(devices[2]["DeviceName"], "cli-3");
    let secrets = dir.join("secrets.json");
    std::fs::write(&secrets, devices.to_string()).unwrap();

    // Human output is a table.
    let table = thingcall(
        &h,
        &[
            "device",
            "status",
            "--product-key",
            &pk,
            "--device-name",
            "cli-1",
        ],
    );
    assert!(table.status.success());
    assert!(
        String::from_utf8_lossy(&table.stdout).starts_with("Status     UNACTIVE"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );

    // Simulate the registered devices from the register output, then invoke.
    let mut sim = Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .args([
            "device",
            "simulate",
            "--mqtt",
            &s.mqtt,
            "--product-key",
            &pk,
            "--tsl",
            &tsl,
            "--ext",
            "--ss",
            "--secrets-file",
        ])
        .arg(&secrets)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut online = false;
    for _ in 0..200 {
        let st = ok_json(&thingcall(
            &h,
            &[
                "device",
                "status",
                "--product-key",
                &pk,
                "--device-name",
                "cli-3",
                "--output",
                "json",
            ],
        ));
        if st["Status"] == "ONLINE" {
            online = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(online);
    let out = ok_json(&thingcall(
        &h,
        &[
            "invoke",
            "--product-key",
            &pk,
            "--device-name",
            "cli-3",
            "--identifier",
            "Calibrate",
            "--args",
            r#"{"Offset":1.5}"#,
            "--output",
            "json",
        ],
    ));
    assert!(out["Result"]["Result"].is_i64(), "{out}");
    let out = thingcall(
        &h,
        &[
            "invoke",
            "--product-key",
            &pk,
            "--device-name",
            "cli-2",
            "--identifier",
            "Reboot",
            "--signature",
            "v3",
            "--format",
            "xml",
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("MessageId  "));

    // API errors: CODE: message on stderr, exit 1.
    let out = thingcall(
        &h,
        &[
            "invoke",
            "--product-key",
            &pk,
            "--device-name",
            "cli-3",
            "--identifier",
            "Calibrate",
            "--args",
            r#"{"Offset":99}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("iot.device.InvokeThingServiceFailed: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = thingcall(&h, &["device", "detail", "--iot-id", "nope000100"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("iot.device.NotExistedDevice: "));
    // Usage errors: exit 2.
    assert_eq!(
        thingcall(&h, &["invoke", "--identifier", "Calibrate"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        thingcall(
            &h,
            &["invoke", "--product-key", &pk, "--identifier", "Calibrate"]
        )
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        thingcall(
            &h,
            &[
                "invoke",
                "--iot-id",
                "x",
                "--identifier",
                "Calibrate",
                "--args",
                "{"
            ]
        )
        .status
        .code(),
        Some(2)
    );

    let detail = ok_json(&thingcall(
        &h,
        &[
            "device",
            "detail",
            "--product-key",
            &pk,
            "--device-name",
            "cli-1",
            "--output",
            "json",
        ],
    ));
    let iot = detail["IotId"].as_str().unwrap().to_owned();
    ok_json(&thingcall(
        &h,
        &["device", "disable", "--iot-id", &iot, "--output", "json"],
    ));
    assert_eq!(
        ok_json(&thingcall(
            &h,
            &["device", "status", "--iot-id", &iot, "--output", "json"]
        ))["Status"],
        "DISABLE"
    );
    ok_json(&thingcall(
        &h,
        &["device", "enable", "--iot-id", &iot, "--output", "json"],
    ));
    ok_json(&thingcall(
        &h,
        &["device", "delete", "--iot-id", &iot, "--output", "json"],
    ));
    let got = ok_json(&thingcall(
        &h,
        &["product", "get", "--product-key", &pk, "--output", "json"],
    ));
    assert_eq!(got["DeviceCount"], 2);
    ok_json(&thingcall(
        &h,
        &[
            "product",
            "delete",
            "--product-key",
            &pk,
            "--output",
            "json",
        ],
    ));

    let _ = sim.kill();
    let _ = sim.wait();
    let _ = s.child.kill();
    let _ = s.child.wait();
}
