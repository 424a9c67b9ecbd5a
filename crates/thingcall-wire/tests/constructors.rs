//! Each request's `new` sets exactly the required parameters: what it
//! encodes is the action's minimal valid request, and it parses back.

#![allow(clippy::unwrap_used)] // test code

use thingcall_core::{DeviceName, DeviceRef, Identifier, IotId, ProductKey};
use thingcall_wire::Params;
use thingcall_wire::actions::*;

fn pk() -> ProductKey {
    ProductKey::new("a1TestPk001").unwrap()
}

fn dev() -> DeviceRef {
    DeviceRef::IotId(IotId::new("Q7uOhVRdZRRlDnTLv00100").unwrap())
}

/// The parameter names `request` encodes, sorted, and a check that they
/// parse back into the same request.
fn names<A: Action + PartialEq + std::fmt::Debug>(request: &A) -> Vec<String> {
    let pairs = request.to_params();
    let query =
        thingcall_wire::form::encode_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let parsed =
        A::from_params(&Params::from_query_and_body(query.as_bytes(), None).unwrap()).unwrap();
    assert_eq!(&parsed, request);
    let mut names: Vec<String> = pairs.into_iter().map(|(k, _)| k).collect();
    names.sort();
    names
}

#[test]
fn constructors_set_only_the_required_parameters() {
    let id = Identifier::new("Calibrate").unwrap();
    let dn = DeviceName::new("dev1").unwrap();
    assert_eq!(
        names(&InvokeThingService::new(
            dev(),
            id.clone(),
            r#"{"Offset":1.5}"#
        )),
        ["Args", "Identifier", "IotId"]
    );
    assert_eq!(
        names(&InvokeThingsService::new(pk(), vec![dn.clone()], id, "{}")),
        ["Args", "DeviceName.1", "Identifier", "ProductKey"]
    );
    assert_eq!(
        names(&CreateProduct::new("Lamp_1", 0)),
        ["NodeType", "ProductName"]
    );
    assert_eq!(names(&QueryProduct::new(pk())), ["ProductKey"]);
    assert_eq!(names(&DeleteProduct::new(pk())), ["ProductKey"]);
    assert_eq!(
        names(&RegisterDevice::new(pk(), Some(dn))),
        ["DeviceName", "ProductKey"]
    );
    assert_eq!(names(&RegisterDevice::new(pk(), None)), ["ProductKey"]);
    for n in [
        names(&QueryDeviceDetail::new(dev())),
        names(&GetDeviceStatus::new(dev())),
        names(&DeleteDevice::new(dev())),
        names(&DisableThing::new(dev())),
        names(&EnableThing::new(dev())),
    ] {
        assert_eq!(n, ["IotId"]);
    }
    assert_eq!(
        names(&ImportThingModelTsl::new(pk(), r#"{"schema":"x"}"#)),
        ["ProductKey", "TslStr"]
    );
    assert_eq!(names(&PublishThingModel::new(pk())), ["ProductKey"]);
    assert_eq!(names(&GetThingModelTsl::new(pk())), ["ProductKey"]);
    assert_eq!(names(&GetThingModelTslPublished::new(pk())), ["ProductKey"]);
    assert_eq!(
        names(&QueryDeviceServiceData::new(dev(), 1, 2)),
        ["EndTime", "IotId", "StartTime"]
    );
}

#[test]
fn struct_update_fills_in_the_options() {
    let call = InvokeThingService {
        qos: Some(thingcall_core::Qos::AtLeastOnce),
        ..InvokeThingService::new(dev(), Identifier::new("set").unwrap(), "{}")
    };
    assert_eq!(names(&call), ["Args", "Identifier", "IotId", "Qos"]);
}
