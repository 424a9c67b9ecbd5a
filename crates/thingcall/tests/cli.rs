//! The command line, run as a user would: exit codes and output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::path::PathBuf;
use std::process::Output;

use assert_cmd::Command;

fn thingcall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn last_line(o: &Output) -> String {
    stdout(o).lines().last().unwrap_or_default().to_owned()
}

fn repo(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .to_string_lossy()
        .into_owned()
}

const DOC_QUERY: &str = "AccessKeyId=testid&Action=DescribeRegions&Format=XML&SignatureMethod=HMAC-SHA1&SignatureNonce=3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf&SignatureVersion=1.0&Timestamp=2016-02-23T12%3A46%3A24Z&Version=2014-05-26";

#[test]
fn sign_v1_prints_the_signature_last() {
    let o = thingcall(&[
        "sign",
        "v1",
        "--method",
        "GET",
        "--secret",
        "testsecret",
        "--query",
        DOC_QUERY,
    ]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=\n");

    // A Signature already in the query is ignored.
    let with_sig = format!("{DOC_QUERY}&Signature=bogus");
    let o = thingcall(&[
        "sign",
        "v1",
        "--method",
        "GET",
        "--secret",
        "testsecret",
        "--query",
        &with_sig,
        "--explain",
    ]);
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("AccessKeyId=testid&Action=DescribeRegions"));
    assert!(lines[1].starts_with("GET&%2F&AccessKeyId%3Dtestid"));
    assert_eq!(lines[2], "OLeaidS1JvxuMvnyHOwuJ+uX5qY=");
}

#[test]
fn sign_v1_matches_the_python_sdk_capture() {
    let query = "ProductKey=a1TestPk001&DeviceName=dev%201&Identifier=Calibrate&Args=%7B%22Offset%22%3A1.5%2C%22Operator%22%3A%22a%2Ab~c%2Bd%22%7D&Version=2018-01-20&Action=InvokeThingService&Format=JSON&RegionId=cn-shanghai&Timestamp=2026-11-26T03%3A49%3A17Z&SignatureMethod=HMAC-SHA1&SignatureType=&SignatureVersion=1.0&SignatureNonce=40fb262e1e1e20d58497fd2f067400a6&AccessKeyId=testid&Signature=fxSFtl2Sd9yEOtUCHWjzirLA0gw%3D";
    let o = thingcall(&[
        "sign",
        "v1",
        "--method",
        "POST",
        "--secret",
        "testsecret",
        "--query",
        query,
    ]);
    assert_eq!(last_line(&o), "fxSFtl2Sd9yEOtUCHWjzirLA0gw=");
}

#[test]
fn sign_v3_matches_the_published_vector() {
    let args = [
        "sign",
        "v3",
        "--method",
        "POST",
        "--path",
        "/",
        "--query",
        "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai",
        "--secret",
        "YourAccessKeySecret",
        "--header",
        "host:ecs.cn-shanghai.aliyuncs.com",
        "--header",
        "x-acs-action:RunInstances",
        "--header",
        "x-acs-version:2014-05-26",
        "--header",
        "x-acs-date:2023-10-26T10:22:32Z",
        "--header",
        "x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d",
        "--header",
        "x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "--explain",
    ];
    let o = thingcall(&args);
    assert!(o.status.success());
    assert_eq!(
        last_line(&o),
        "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
    );
    assert!(
        stdout(&o).contains("7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259")
    );
}

#[test]
fn help_and_usage() {
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .arg("--help")
        .assert()
        .success();
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .arg("no-such-command")
        .assert()
        .code(2);
    Command::new(env!("CARGO_BIN_EXE_thingcall"))
        .args(["tsl", "check"])
        .assert()
        .code(2);
    Command::cargo_bin("thingcall")
        .unwrap()
        .args([
            "sign",
            "v1",
            "--method",
            "GET",
            "--secret",
            "testsecret",
            "--query",
            DOC_QUERY,
        ])
        .assert()
        .success()
        .stdout("OLeaidS1JvxuMvnyHOwuJ+uX5qY=\n");
}

#[test]
fn sign_usage_errors_exit_2() {
    assert_eq!(
        thingcall(&[
            "sign", "v1", "--method", "PUT", "--secret", "s", "--query", "a=1"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        thingcall(&[
            "sign", "v1", "--method", "GET", "--secret", "s", "--query", "a=%zz"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        thingcall(&[
            "sign", "v3", "--method", "GET", "--secret", "s", "--header", "nocolon"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn device_credentials_match_the_published_vector() {
    let o = thingcall(&[
        "device",
        "credentials",
        "--product-key",
        "pk",
        "--device-name",
        "device",
        "--device-secret",
        "secret",
        "--client-id",
        "12345",
        "--timestamp",
        "789",
        "--sign-method",
        "hmacsha1",
    ]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        "client_id=12345|securemode=3,signmethod=hmacsha1,timestamp=789|\nusername=device&pk\npassword=fafd82a3d602b37fb0fa8b7892f24a477f851a14\n"
    );
}

#[test]
fn device_credentials_defaults_and_flags() {
    let o = thingcall(&[
        "device",
        "credentials",
        "--product-key",
        "a1TestPk001",
        "--device-name",
        "dev1",
        "--device-secret",
        "s3cret",
        "--ext",
        "--ss",
    ]);
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "client_id=a1TestPk001.dev1|_ss=1,ext=1,securemode=3,signmethod=hmacsha256|\n"
        ),
        "{out}"
    );
    assert!(out.contains("username=dev1&a1TestPk001\n"));
    let password = last_line(&o);
    assert_eq!(
        password.strip_prefix("password=").unwrap().len(),
        64,
        "hmacsha256 hex"
    );
    assert_eq!(
        thingcall(&[
            "device",
            "credentials",
            "--product-key",
            "a-b",
            "--device-name",
            "dev1",
            "--device-secret",
            "s"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        thingcall(&[
            "device",
            "credentials",
            "--product-key",
            "pk",
            "--device-name",
            "d",
            "--device-secret",
            "s"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn tsl_check() {
    let o = thingcall(&[
        "tsl",
        "check",
        &repo("crates/thingcall-tsl/test-models/calibrator-all-types.json"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "ok\n");

    let dir = std::env::temp_dir().join(format!("thingcall-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"services":[{"identifier":"bad-id","callType":"later","inputData":[],"outputData":[]}]}"#).unwrap();
    let o = thingcall(&["tsl", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("/services/0/identifier: ")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("/services/0/callType: ")),
        "{out}"
    );

    let not_json = dir.join("not.json");
    std::fs::write(&not_json, "{").unwrap();
    assert_eq!(
        thingcall(&["tsl", "check", not_json.to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        thingcall(&["tsl", "check", dir.join("missing.json").to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn tsl_schema() {
    let file = repo("crates/thingcall-tsl/test-models/calibrator-all-types.json");
    let o = thingcall(&["tsl", "schema", &file, "--service", "Calibrate"]);
    assert!(o.status.success());
    let schema: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(schema["properties"]["Offset"]["type"], "number");
    let o = thingcall(&["tsl", "schema", &file, "--service", "Calibrate", "--output"]);
    let schema: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(schema["properties"]["Readings"].is_object());
    assert_eq!(
        thingcall(&["tsl", "schema", &file, "--service", "Nope"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn tsl_validate() {
    let file = repo("crates/thingcall-tsl/test-models/calibrator-all-types.json");
    let o = thingcall(&[
        "tsl",
        "validate",
        &file,
        "--service",
        "Calibrate",
        "--args",
        r#"{"Offset":1.5,"Color":{"R":1}}"#,
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "ok\n");

    let o = thingcall(&[
        "tsl",
        "validate",
        &file,
        "--service",
        "Calibrate",
        "--args",
        r#"{"Offset":11,"Color":{"R":256}}"#,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().any(|l| l.starts_with("/Offset: ")));
    assert!(lines.iter().any(|l| l.starts_with("/Color/R: ")));

    assert_eq!(
        thingcall(&[
            "tsl",
            "validate",
            &file,
            "--service",
            "Calibrate",
            "--args",
            "[1]"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(
        thingcall(&[
            "tsl",
            "validate",
            &file,
            "--service",
            "Calibrate",
            "--args",
            "{"
        ])
        .status
        .code(),
        Some(2)
    );
    let o = thingcall(&[
        "tsl",
        "validate",
        &file,
        "--service",
        "get",
        "--args",
        r#"["Temperature"]"#,
    ]);
    assert_eq!(o.status.code(), Some(0));
}
