"""The tea Python SDK (alibabacloud_iot20180120) against a running thingcall,
with its default v3 signature and with signature_algorithm="v2".

usage: tea_sdk.py HTTP_HOST:PORT ACCESS_KEY_ID ACCESS_KEY_SECRET PRODUCT_KEY DEVICE_NAME
The device must be online and answer Calibrate. Prints OK when every check passed.
"""
import json
import sys

from alibabacloud_iot20180120 import models as iot_models
from alibabacloud_iot20180120.client import Client
from alibabacloud_tea_openapi import models as open_api_models

endpoint, ak, sk, pk, dn = sys.argv[1:6]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def client(secret, algorithm):
    cfg = open_api_models.Config(access_key_id=ak, access_key_secret=secret, region_id="cn-shanghai",
                                 endpoint=endpoint, protocol="http")
    if algorithm:
        cfg.signature_algorithm = algorithm
    return Client(cfg)


for algorithm in (None, "v2"):
    c = client(sk, algorithm)
    resp = c.invoke_thing_service(iot_models.InvokeThingServiceRequest(
        product_key=pk, device_name=dn, identifier="Calibrate", args=json.dumps({"Offset": 1.5})))
    check(resp.body.success is True, resp.body)
    check("Result" in json.loads(resp.body.data.result), resp.body.data.result)
    check(resp.body.data.message_id.isdigit(), resp.body.data.message_id)

    status = c.get_device_status(iot_models.GetDeviceStatusRequest(product_key=pk, device_name=dn))
    check(status.body.data.status == "ONLINE", status.body)

    detail = c.query_device_detail(iot_models.QueryDeviceDetailRequest(product_key=pk, device_name=dn))
    check(detail.body.data.device_name == dn, detail.body)

    missing = c.invoke_thing_service(iot_models.InvokeThingServiceRequest(
        product_key=pk, device_name="nobody", identifier="Calibrate", args="{}"))
    check(missing.body.success is False and missing.body.code == "iot.device.NotExistedDevice", missing.body)

    try:
        client("not-the-secret", algorithm).get_device_status(
            iot_models.GetDeviceStatusRequest(product_key=pk, device_name=dn))
        raise AssertionError("a wrong secret was accepted (%s)" % algorithm)
    except Exception as e:  # the tea SDK raises TeaException
        check(getattr(e, "code", None) == "SignatureDoesNotMatch", repr(e))

print("OK")
