//! Round-trip properties: every response type decodes to what was encoded,
//! in JSON and in XML; every request parses back from its own parameters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use proptest::prelude::*;
use thingcall_core::{
    DeviceName, DeviceRef, Identifier, IotId, ProductKey, Qos, RequestId, Secret,
};
use thingcall_wire::actions::*;
use thingcall_wire::form::encode_pairs;
use thingcall_wire::{
    Action, ApiRequest, BusinessFailure, Data, Decoded, Format, GatewayError, Params, Response,
    ResponseBody, decode_gateway_error, decode_response, encode_gateway_error, encode_response,
};

/// Text that XML 1.0 can carry: no C0 controls other than tab, LF and CR.
fn text() -> impl Strategy<Value = String> {
    "[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f]{0,24}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn opt_int() -> impl Strategy<Value = Option<i64>> {
    proptest::option::of(any::<i64>())
}

fn opt_secret() -> impl Strategy<Value = Option<Secret>> {
    proptest::option::of(text().prop_map(Secret::new))
}

fn request_id() -> impl Strategy<Value = RequestId> {
    "[A-Za-z0-9-]{1,40}".prop_map(|s| RequestId::new(s).unwrap())
}

fn failure() -> impl Strategy<Value = BusinessFailure> {
    (text(), text()).prop_map(|(code, message)| BusinessFailure { code, message })
}

fn status() -> impl Strategy<Value = DeviceStatus> {
    prop_oneof![
        Just(DeviceStatus::Online),
        Just(DeviceStatus::Offline),
        Just(DeviceStatus::Unactive),
        Just(DeviceStatus::Disable)
    ]
}

fn response<B: std::fmt::Debug + Clone>(
    body: impl Strategy<Value = B>,
) -> impl Strategy<Value = Response<B>> {
    (
        request_id(),
        prop_oneof![body.prop_map(Ok), failure().prop_map(Err)],
    )
        .prop_map(|(request_id, outcome)| Response {
            request_id,
            outcome,
        })
}

fn invoke_data() -> impl Strategy<Value = Data<InvokeThingServiceData>> {
    (opt_text(), opt_text())
        .prop_map(|(result, message_id)| Data(InvokeThingServiceData { result, message_id }))
}

fn create_product() -> impl Strategy<Value = CreateProductResponse> {
    (
        text(),
        (text(), text(), opt_secret(), opt_text(), opt_int()),
        (
            opt_int(),
            opt_text(),
            opt_text(),
            opt_text(),
            proptest::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(top, (pk, name, secret, desc, node), (fmt, proto, code, auth, id2))| {
                CreateProductResponse {
                    product_key: top,
                    data: CreateProductData {
                        product_key: pk,
                        product_name: name,
                        product_secret: secret,
                        description: desc,
                        node_type: node,
                        data_format: fmt,
                        protocol_type: proto,
                        aliyun_commodity_code: code,
                        auth_type: auth,
                        id2,
                    },
                }
            },
        )
}

fn query_product() -> impl Strategy<Value = Data<QueryProductData>> {
    (
        (
            text(),
            text(),
            opt_secret(),
            opt_text(),
            opt_int(),
            opt_int(),
        ),
        (
            opt_text(),
            opt_text(),
            proptest::option::of(any::<bool>()),
            opt_int(),
            opt_text(),
            opt_text(),
        ),
        (
            opt_text(),
            opt_int(),
            opt_int(),
            proptest::option::of(any::<bool>()),
            opt_text(),
            opt_int(),
        ),
    )
        .prop_map(|(a, b, c)| {
            Data(QueryProductData {
                product_key: a.0,
                product_name: a.1,
                product_secret: a.2,
                description: a.3,
                node_type: a.4,
                data_format: a.5,
                aliyun_commodity_code: b.0,
                auth_type: b.1,
                id2: b.2,
                net_type: b.3,
                protocol_type: b.4,
                category_key: b.5,
                category_name: c.0,
                device_count: c.1,
                gmt_create: c.2,
                owner: c.3,
                product_status: c.4,
                validate_type: c.5,
            })
        })
}

fn register_device() -> impl Strategy<Value = Data<RegisterDeviceData>> {
    (
        text(),
        text(),
        text(),
        text(),
        opt_text(),
        opt_text(),
        opt_text(),
    )
        .prop_map(|(i, p, d, s, n, de, je)| {
            Data(RegisterDeviceData {
                iot_id: i,
                product_key: p,
                device_name: d,
                device_secret: Secret::new(s),
                nickname: n,
                dev_eui: de,
                join_eui: je,
            })
        })
}

fn device_detail() -> impl Strategy<Value = Data<QueryDeviceDetailData>> {
    (
        (text(), text(), opt_text(), text(), opt_secret(), opt_text()),
        (
            opt_text(),
            opt_text(),
            opt_int(),
            proptest::option::of(any::<bool>()),
            opt_text(),
            status(),
        ),
        (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
        ),
    )
        .prop_map(|(a, b, c)| {
            Data(QueryDeviceDetailData {
                iot_id: a.0,
                product_key: a.1,
                product_name: a.2,
                device_name: a.3,
                device_secret: a.4,
                nickname: a.5,
                firmware_version: b.0,
                ip_address: b.1,
                node_type: b.2,
                owner: b.3,
                region: b.4,
                status: b.5,
                gmt_create: c.0,
                utc_create: c.1,
                gmt_active: c.2,
                utc_active: c.3,
                gmt_online: c.4,
                utc_online: c.5,
            })
        })
}

fn device_status() -> impl Strategy<Value = Data<GetDeviceStatusData>> {
    (status(), opt_int())
        .prop_map(|(status, timestamp)| Data(GetDeviceStatusData { status, timestamp }))
}

fn tsl_data() -> impl Strategy<Value = Data<TslData>> {
    (text(), opt_text()).prop_map(|(tsl_str, tsl_uri)| Data(TslData { tsl_str, tsl_uri }))
}

fn service_page() -> impl Strategy<Value = Data<ServiceDataPage>> {
    let info = (text(), text(), text(), text(), opt_text()).prop_map(
        |(identifier, name, time, input_data, output_data)| ServiceInfo {
            identifier,
            name,
            time,
            input_data,
            output_data,
        },
    );
    (
        any::<bool>(),
        any::<i64>(),
        proptest::collection::vec(info, 0..4),
    )
        .prop_map(|(next_valid, next_time, list)| {
            Data(ServiceDataPage {
                next_valid,
                next_time,
                list,
            })
        })
}

fn round_trip<B: ResponseBody + PartialEq + std::fmt::Debug>(
    action: &'static str,
    response: &Response<B>,
) {
    for format in [Format::Json, Format::Xml] {
        let body = encode_response(action, format, response);
        match decode_response::<B>(action, format, body.as_bytes()) {
            Ok(Decoded::Response(decoded)) => assert_eq!(&decoded, response, "{format:?}: {body}"),
            other => panic!("{format:?}: {body} decoded as {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn invoke_thing_service(r in response(invoke_data())) { round_trip(InvokeThingService::NAME, &r) }

    #[test]
    fn no_data_actions(r in response(Just(()))) {
        for action in [
            InvokeThingsService::NAME, DeleteProduct::NAME, DeleteDevice::NAME, DisableThing::NAME,
            EnableThing::NAME, ImportThingModelTsl::NAME, PublishThingModel::NAME,
        ] {
            round_trip(action, &r);
        }
    }

    #[test]
    fn create_product_response(r in response(create_product())) { round_trip(CreateProduct::NAME, &r) }

    #[test]
    fn query_product_response(r in response(query_product())) { round_trip(QueryProduct::NAME, &r) }

    #[test]
    fn register_device_response(r in response(register_device())) { round_trip(RegisterDevice::NAME, &r) }

    #[test]
    fn query_device_detail_response(r in response(device_detail())) { round_trip(QueryDeviceDetail::NAME, &r) }

    #[test]
    fn get_device_status_response(r in response(device_status())) { round_trip(GetDeviceStatus::NAME, &r) }

    #[test]
    fn thing_model_responses(r in response(tsl_data())) {
        round_trip(GetThingModelTsl::NAME, &r);
        round_trip(GetThingModelTslPublished::NAME, &r);
    }

    #[test]
    fn service_data_response(r in response(service_page())) { round_trip(QueryDeviceServiceData::NAME, &r) }

    #[test]
    fn gateway_errors(request_id in request_id(), host_id in text(), code in "[A-Za-z.]{1,30}", message in text(), recommend in opt_text()) {
        let err = GatewayError { request_id, host_id, code, message, recommend };
        for format in [Format::Json, Format::Xml] {
            let body = encode_gateway_error(format, &err);
            prop_assert_eq!(&decode_gateway_error(format, body.as_bytes()).unwrap(), &err);
            match decode_response::<Data<InvokeThingServiceData>>(InvokeThingService::NAME, format, body.as_bytes()) {
                Ok(Decoded::Gateway(g)) => prop_assert_eq!(&g, &err),
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

// ---------------------------------------------------------------- requests

fn pk() -> impl Strategy<Value = ProductKey> {
    "[A-Za-z0-9]{1,32}".prop_map(|s| ProductKey::new(s).unwrap())
}

fn dn() -> impl Strategy<Value = DeviceName> {
    "[A-Za-z0-9_@.:-]{4,32}".prop_map(|s| DeviceName::new(s).unwrap())
}

fn device() -> impl Strategy<Value = DeviceRef> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,64}".prop_map(|s| DeviceRef::IotId(IotId::new(s).unwrap())),
        (pk(), dn()).prop_map(|(product_key, device_name)| DeviceRef::Name {
            product_key,
            device_name
        }),
    ]
}

fn identifier() -> impl Strategy<Value = Identifier> {
    "([A-Za-z0-9_]{1,30}:)?[A-Za-z0-9_]{1,50}".prop_map(|s| Identifier::new(s).unwrap())
}

fn non_empty() -> impl Strategy<Value = String> {
    "[^\\x00]{1,40}"
}

fn opt_non_empty() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(non_empty())
}

fn request() -> impl Strategy<Value = ApiRequest> {
    let qos = proptest::option::of(prop_oneof![Just(Qos::AtMostOnce), Just(Qos::AtLeastOnce)]);
    prop_oneof![
        (
            device(),
            identifier(),
            non_empty(),
            qos.clone(),
            opt_non_empty()
        )
            .prop_map(|(device, identifier, args, qos, iot_instance_id)| {
                ApiRequest::InvokeThingService(InvokeThingService {
                    qos,
                    iot_instance_id,
                    ..InvokeThingService::new(device, identifier, args)
                })
            }),
        (
            pk(),
            proptest::collection::vec(dn(), 1..=100),
            identifier(),
            non_empty(),
            qos
        )
            .prop_map(|(product_key, device_names, identifier, args, qos)| {
                ApiRequest::InvokeThingsService(InvokeThingsService {
                    qos,
                    ..InvokeThingsService::new(product_key, device_names, identifier, args)
                })
            }),
        (device(), opt_non_empty()).prop_map(|(device, iot_instance_id)| {
            ApiRequest::QueryDeviceDetail(QueryDeviceDetail {
                iot_instance_id,
                ..QueryDeviceDetail::new(device)
            })
        }),
        device().prop_map(|device| ApiRequest::DisableThing(DisableThing::new(device))),
        (
            pk(),
            proptest::option::of(dn()),
            proptest::option::of("[a-zA-Z0-9_]{4,64}")
        )
            .prop_map(|(product_key, device_name, nickname)| {
                ApiRequest::RegisterDevice(RegisterDevice {
                    nickname,
                    ..RegisterDevice::new(product_key, device_name)
                })
            }),
        (
            pk(),
            non_empty(),
            proptest::option::of(("[A-Za-z0-9_]{1,30}", "[a-z]{4,30}"))
        )
            .prop_map(|(product_key, tsl_str, block)| {
                let (function_block_id, function_block_name) = block.unzip();
                ApiRequest::ImportThingModelTsl(ImportThingModelTsl {
                    function_block_id,
                    function_block_name,
                    ..ImportThingModelTsl::new(product_key, tsl_str)
                })
            }),
        (
            pk(),
            proptest::option::of("[A-Za-z0-9.]{1,16}"),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(product_key, model_version, simple)| {
                ApiRequest::GetThingModelTslPublished(GetThingModelTslPublished {
                    model_version,
                    simple,
                    ..GetThingModelTslPublished::new(product_key)
                })
            }),
        (
            device(),
            any::<i64>(),
            any::<i64>(),
            proptest::option::of(identifier()),
            proptest::option::of(0i64..=1),
            proptest::option::of(1i64..=50)
        )
            .prop_map(
                |(device, start_time, end_time, identifier, asc, page_size)| {
                    ApiRequest::QueryDeviceServiceData(QueryDeviceServiceData {
                        identifier,
                        asc,
                        page_size,
                        ..QueryDeviceServiceData::new(device, start_time, end_time)
                    })
                }
            ),
        (
            "[a-zA-Z0-9_]{4,30}",
            0i64..=1,
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(product_name, node_type, publish_auto)| {
                ApiRequest::CreateProduct(CreateProduct {
                    aliyun_commodity_code: Some("iothub_senior".into()),
                    data_format: Some(1),
                    publish_auto,
                    ..CreateProduct::new(product_name, node_type)
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn requests_parse_back_from_their_params(req in request()) {
        let params = req.to_params();
        let query = encode_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let parsed = Params::from_query_and_body(query.as_bytes(), None).unwrap();
        prop_assert_eq!(ApiRequest::parse(req.action(), &parsed).unwrap(), req);
    }
}
