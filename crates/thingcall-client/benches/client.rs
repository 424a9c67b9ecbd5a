//! Building, signing and encoding one InvokeThingService request, and
//! decoding its response.

#![allow(missing_docs, clippy::unwrap_used)] // criterion macros; bench code

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use thingcall_client::Credentials;
use thingcall_client::actions::{InvokeThingService, InvokeThingServiceData};
use thingcall_client::request::v1_request;
use thingcall_core::{DeviceName, DeviceRef, Identifier, ProductKey, UnixMillis};
use thingcall_wire::{Action, Data, Format, decode_response};

fn benches(c: &mut Criterion) {
    let creds = Credentials::new("testid", "testsecret");
    let at = UnixMillis::parse_iso8601_seconds("2026-11-26T03:49:17Z").unwrap();
    let req = InvokeThingService::new(
        DeviceRef::Name {
            product_key: ProductKey::new("a1TestPk001").unwrap(),
            device_name: DeviceName::new("dev1").unwrap(),
        },
        Identifier::new("Calibrate").unwrap(),
        r#"{"Offset":1.5,"Mode":1,"Operator":"bob"}"#,
    );
    c.bench_function("client_build_sign_encode_invoke_v1", |b| {
        b.iter(|| {
            let params = black_box(&req).to_params();
            v1_request(
                InvokeThingService::NAME,
                &params,
                &creds,
                "cn-shanghai",
                Format::Json,
                at,
                "40fb262e1e1e20d58497fd2f067400a6",
            )
        })
    });
    let body = br#"{"RequestId":"57B144CF-09FC-4916-A272-A62902D5B207","Success":true,"Data":{"Result":"{\"Result\":1}","MessageId":"1795672309794000000"}}"#;
    c.bench_function("client_decode_invoke_response_json", |b| {
        b.iter(|| {
            decode_response::<Data<InvokeThingServiceData>>(
                InvokeThingService::NAME,
                Format::Json,
                black_box(body),
            )
            .unwrap()
        })
    });
}

criterion_group!(client, benches);
criterion_main!(client);
