//! Hot-path benchmarks of the wire model: encoding an InvokeThingService
//! response and parsing a realistic 16-parameter request.

#![allow(missing_docs, clippy::unwrap_used)] // criterion macros; bench code

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use thingcall_core::RequestId;
use thingcall_wire::actions::{InvokeThingService, InvokeThingServiceData};
use thingcall_wire::{Action, ApiRequest, Data, Format, Params, Response, encode_response};

/// A request as `aliyunsdkcore` sends it: 16 parameters.
const QUERY: &str = "ProductKey=a1TestPk001&DeviceName=dev1&Identifier=Calibrate&Args=%7B%22Offset%22%3A1.5%2C%22Operator%22%3A%22a%2Ab~c%2Bd%22%7D&Version=2018-01-20&Action=InvokeThingService&Format=JSON&RegionId=cn-shanghai&Timestamp=2026-11-26T03%3A49%3A17Z&SignatureMethod=HMAC-SHA1&SignatureType=&SignatureVersion=1.0&SignatureNonce=40fb262e1e1e20d58497fd2f067400a6&AccessKeyId=testid&Qos=1&Signature=fxSFtl2Sd9yEOtUCHWjzirLA0gw%3D";

fn benches(c: &mut Criterion) {
    let response = Response {
        request_id: RequestId::new("57B144CF-09FC-4916-A272-A62902D5B207").unwrap(),
        outcome: Ok(Data(InvokeThingServiceData {
            result: Some(
                r#"{"Result":1,"Readings":[{"Ts":"1700000000000","Val":12.5}]}"#.to_owned(),
            ),
            message_id: Some("1790462307427328".to_owned()),
        })),
    };
    c.bench_function("encode_invoke_response_json", |b| {
        b.iter(|| encode_response(InvokeThingService::NAME, Format::Json, black_box(&response)))
    });
    c.bench_function("encode_invoke_response_xml", |b| {
        b.iter(|| encode_response(InvokeThingService::NAME, Format::Xml, black_box(&response)))
    });
    assert_eq!(QUERY.split('&').count(), 16);
    c.bench_function("parse_invoke_request_16_params", |b| {
        b.iter(|| {
            let params = Params::from_query_and_body(black_box(QUERY.as_bytes()), None).unwrap();
            ApiRequest::parse("InvokeThingService", &params).unwrap()
        })
    });
}

criterion_group!(wire, benches);
criterion_main!(wire);
