//! The documented response shapes, pinned byte for byte or field by field.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use thingcall_core::{ApiError, ErrorCode, RequestId};
use thingcall_wire::actions::*;
use thingcall_wire::{
    BusinessFailure, CONTENT_TYPE_JSON, CONTENT_TYPE_XML, Data, Decoded, Format, GatewayError,
    Response, decode_response, encode_gateway_error, encode_response,
};

fn rid() -> RequestId {
    RequestId::new("57b144cf-09fc-4916-a272-a62902d5b207").unwrap()
}

fn invoke_ok() -> Response<Data<InvokeThingServiceData>> {
    Response {
        request_id: rid(),
        outcome: Ok(Data(InvokeThingServiceData {
            result: Some("....".into()),
            message_id: Some("abcabc123".into()),
        })),
    }
}

#[test]
fn success_json_matches_the_doc_example() {
    let body = encode_response(InvokeThingService::NAME, Format::Json, &invoke_ok());
    assert_eq!(
        body,
        r#"{"RequestId":"57b144cf-09fc-4916-a272-a62902d5b207","Success":true,"Data":{"Result":"....","MessageId":"abcabc123"}}"#
    );
}

#[test]
fn success_xml_matches_the_doc_example() {
    let body = encode_response(InvokeThingService::NAME, Format::Xml, &invoke_ok());
    assert_eq!(
        body,
        "<?xml version='1.0' encoding='utf-8'?><InvokeThingServiceResponse>\
         <RequestId>57b144cf-09fc-4916-a272-a62902d5b207</RequestId><Success>true</Success>\
         <Data><Result>....</Result><MessageId>abcabc123</MessageId></Data></InvokeThingServiceResponse>"
    );
}

#[test]
fn pretty_printed_doc_xml_decodes() {
    let doc = "<?xml version='1.0' encoding='utf-8'?>\n<InvokeThingServiceResponse>\n    <RequestId>57b144cf-09fc-4916-a272-a62902d5b207</RequestId>\n    <Success>true</Success>\n    <Data>\n        <Result>....</Result>\n        <MessageId>abcabc123</MessageId>\n    </Data>\n</InvokeThingServiceResponse>";
    let decoded = decode_response::<Data<InvokeThingServiceData>>(
        InvokeThingService::NAME,
        Format::Xml,
        doc.as_bytes(),
    )
    .unwrap();
    assert_eq!(decoded, Decoded::Response(invoke_ok()));
}

#[test]
fn sync_result_is_a_json_string() {
    let r = Response {
        request_id: rid(),
        outcome: Ok(Data(InvokeThingServiceData {
            result: Some(r#"{"param1":1}"#.into()),
            message_id: Some("7".into()),
        })),
    };
    let body = encode_response(InvokeThingService::NAME, Format::Json, &r);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Data"]["Result"], r#"{"param1":1}"#);
    assert_eq!(v["Data"]["MessageId"], "7");
}

#[test]
fn business_failure_shape() {
    let err = ApiError::new(ErrorCode::NotExistedDevice);
    let r: Response<Data<InvokeThingServiceData>> = Response {
        request_id: rid(),
        outcome: Err(BusinessFailure::from(&err)),
    };
    let json = encode_response(InvokeThingService::NAME, Format::Json, &r);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 4, "{json}");
    assert_eq!(obj["RequestId"], "57b144cf-09fc-4916-a272-a62902d5b207");
    assert_eq!(obj["Success"], false);
    assert_eq!(obj["Code"], "iot.device.NotExistedDevice");
    assert_eq!(obj["ErrorMessage"], "The specified device does not exist.");
    assert_eq!(err.http_status(), 200);

    let xml = encode_response(InvokeThingService::NAME, Format::Xml, &r);
    assert_eq!(
        xml,
        "<?xml version='1.0' encoding='utf-8'?><InvokeThingServiceResponse>\
         <RequestId>57b144cf-09fc-4916-a272-a62902d5b207</RequestId><Success>false</Success>\
         <Code>iot.device.NotExistedDevice</Code><ErrorMessage>The specified device does not exist.</ErrorMessage>\
         </InvokeThingServiceResponse>"
    );
}

#[test]
fn gateway_error_shape() {
    let err = ApiError::new(ErrorCode::InvalidTimeStampExpired);
    let body = GatewayError::from_api_error(&err, rid(), "iot.cn-shanghai.aliyuncs.com");
    let json = encode_gateway_error(Format::Json, &body);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 5);
    assert_eq!(obj["RequestId"], "57b144cf-09fc-4916-a272-a62902d5b207");
    assert_eq!(obj["HostId"], "iot.cn-shanghai.aliyuncs.com");
    assert_eq!(obj["Code"], "InvalidTimeStamp.Expired");
    assert_eq!(
        obj["Message"],
        "Specified time stamp or date value is expired."
    );
    assert_eq!(
        obj["Recommend"],
        "https://api.aliyun.com/troubleshoot?q=InvalidTimeStamp.Expired&product=Iot&requestId=57b144cf-09fc-4916-a272-a62902d5b207"
    );
    assert_eq!(err.http_status(), 400);

    let xml = encode_gateway_error(Format::Xml, &body);
    assert!(
        xml.starts_with("<?xml version='1.0' encoding='utf-8'?><Error><RequestId>"),
        "{xml}"
    );
    assert!(xml.contains("<Code>InvalidTimeStamp.Expired</Code><Message>Specified time stamp or date value is expired.</Message>"));
    assert!(xml.contains(
        "<Recommend>https://api.aliyun.com/troubleshoot?q=InvalidTimeStamp.Expired&amp;product=Iot"
    ));
    assert!(xml.ends_with("</Error>"));
}

#[test]
fn content_types() {
    assert_eq!(
        Format::Json.content_type(),
        "application/json;charset=utf-8"
    );
    assert_eq!(CONTENT_TYPE_JSON, "application/json;charset=utf-8");
    assert_eq!(Format::Xml.content_type(), "text/xml;charset=utf-8");
    assert_eq!(CONTENT_TYPE_XML, "text/xml;charset=utf-8");
}

#[test]
fn batch_doc_examples_decode() {
    let json = br#"{ "RequestId": "059C3274-6197-4BEC-95E4-49A076330E57", "Success": true }"#;
    let xml = b"<?xml version='1.0' encoding='utf-8'?>\n<InvokeThingsServiceResponse>\n    <RequestId>059C3274-6197-4BEC-95E4-49A076330E57</RequestId>\n    <Success>true</Success>\n</InvokeThingsServiceResponse>";
    for (format, body) in [(Format::Json, &json[..]), (Format::Xml, &xml[..])] {
        match decode_response::<()>(InvokeThingsService::NAME, format, body).unwrap() {
            Decoded::Response(r) => {
                assert_eq!(
                    r.request_id.as_str(),
                    "059C3274-6197-4BEC-95E4-49A076330E57"
                );
                assert_eq!(r.outcome, Ok(()));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn service_data_doc_example_decodes() {
    // The doc writes Time as a number; the SDK models read a string.
    let json = br#"{"RequestId":"A44C818E-FA7F-4765-B1E7-01D14AE01C6A","Success":true,"Data":{"NextValid":true,"NextTime":1517315865197,"List":{"ServiceInfo":[{"Identifier":"set","Name":"set","Time":1517315865198,"InputData":"{\"LightAdjustLevel\":123}","OutputData":"{\"code\":200,\"data\":{},\"id\":\"100686\",\"message\":\"success\",\"version\":\"1.0\"}"}]}}}"#;
    match decode_response::<Data<ServiceDataPage>>(QueryDeviceServiceData::NAME, Format::Json, json)
        .unwrap()
    {
        Decoded::Response(Response {
            outcome: Ok(Data(page)),
            ..
        }) => {
            assert!(page.next_valid);
            assert_eq!(page.next_time, 1517315865197);
            assert_eq!(page.list.len(), 1);
            assert_eq!(page.list[0].time, "1517315865198");
            assert_eq!(page.list[0].input_data, r#"{"LightAdjustLevel":123}"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn create_product_has_a_top_level_product_key() {
    let r = Response {
        request_id: rid(),
        outcome: Ok(CreateProductResponse {
            product_key: "a1FlqIQ1234".into(),
            data: CreateProductData {
                product_key: "a1FlqIQ1234".into(),
                product_name: "Test".into(),
                product_secret: Some("U5tW7i44uilc1234".into()),
                description: None,
                node_type: Some(0),
                data_format: Some(1),
                protocol_type: None,
                aliyun_commodity_code: Some("iothub_senior".into()),
                auth_type: Some("secret".into()),
                id2: Some(false),
            },
        }),
    };
    let json = encode_response(CreateProduct::NAME, Format::Json, &r);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["ProductKey"], "a1FlqIQ1234");
    assert_eq!(v["Data"]["ProductSecret"], "U5tW7i44uilc1234");
    assert_eq!(v["Data"]["Id2"], false);
    // Debug output never shows the secret.
    assert!(!format!("{r:?}").contains("U5tW7i44uilc1234"));
}

#[test]
fn wrong_root_is_rejected() {
    let body = encode_response(InvokeThingService::NAME, Format::Xml, &invoke_ok());
    assert!(
        decode_response::<Data<InvokeThingServiceData>>(
            "QueryProduct",
            Format::Xml,
            body.as_bytes()
        )
        .is_err()
    );
    assert!(decode_response::<Data<InvokeThingServiceData>>("X", Format::Json, b"[1]").is_err());
    assert!(
        decode_response::<Data<InvokeThingServiceData>>("X", Format::Json, br#"{"Success":true}"#)
            .is_err()
    );
}
