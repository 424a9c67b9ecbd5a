"""The classic official Python SDK (aliyun-python-sdk-core + aliyun-python-sdk-iot)
against a running thingcall, with the official device SDK (linkkit) as the device.

usage: classic_sdk.py HTTP_HOST:PORT MQTT_PORT ACCESS_KEY_ID ACCESS_KEY_SECRET TSL_FILE
Prints OK and exits 0 when every check passed.
"""
import json
import sys
import time
import xml.etree.ElementTree as ET

from aliyunsdkcore.client import AcsClient
from aliyunsdkcore.acs_exception.exceptions import ServerException
from aliyunsdkiot.request.v20180120 import (
    CreateProductRequest, ImportThingModelTslRequest, PublishThingModelRequest, RegisterDeviceRequest,
    InvokeThingServiceRequest, QueryDeviceDetailRequest, GetDeviceStatusRequest, QueryDeviceServiceDataRequest,
)
from linkkit import linkkit

endpoint, mqtt_port, ak, secret, tsl_file = sys.argv[1:6]
client = AcsClient(ak, secret, "cn-shanghai")


def do(req, c=client):
    req.set_endpoint(endpoint)
    return json.loads(c.do_action_with_exception(req))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# 1. Provision.
r = CreateProductRequest.CreateProductRequest()
r.set_ProductName("PySdk_%d" % int(time.time() * 1000))
r.set_NodeType(0)
r.set_AliyunCommodityCode("iothub_senior")
r.set_DataFormat(1)
r.set_PublishAuto(False)
created = do(r)
check(created["Success"] is True, created)
pk = created["ProductKey"]
check(created["Data"]["ProductKey"] == pk, created)

r = ImportThingModelTslRequest.ImportThingModelTslRequest()
r.set_ProductKey(pk)
r.set_TslStr(open(tsl_file, encoding="utf-8").read())
check(do(r)["Success"] is True, "import")

r = PublishThingModelRequest.PublishThingModelRequest()
r.set_ProductKey(pk)
r.set_ModelVersion("v1.0.0")
check(do(r)["Success"] is True, "publish")

r = RegisterDeviceRequest.RegisterDeviceRequest()
r.set_ProductKey(pk)
r.set_DeviceName("py-dev-1")
reg = do(r)
check(reg["Success"] is True, reg)
iot_id, device_secret = reg["Data"]["IotId"], reg["Data"]["DeviceSecret"]

r = GetDeviceStatusRequest.GetDeviceStatusRequest()
r.set_IotId(iot_id)
check(do(r)["Data"]["Status"] == "UNACTIVE", "fresh device is UNACTIVE")

# 2. The device: the official Python device SDK.
lk = linkkit.LinkKit(host_name="cn-shanghai", product_key=pk, device_name="py-dev-1", device_secret=device_secret)
lk.config_mqtt(port=int(mqtt_port), secure="", endpoint="127.0.0.1", keep_alive=60)
lk.thing_setup(tsl_file)
enabled = []
lk.on_thing_enable = lambda userdata: enabled.append(True)


def on_call(identifier, request_id, params, userdata):
    data = {"Result": 1} if identifier == "Calibrate" else {"Accepted": 1}
    lk.thing_answer_service(identifier, request_id, 200, data)


lk.on_thing_call_service = on_call
lk.connect_async()
deadline = time.time() + 20
while not enabled and time.time() < deadline:
    time.sleep(0.05)
check(enabled, "linkkit connected")

r = GetDeviceStatusRequest.GetDeviceStatusRequest()
r.set_ProductKey(pk)
r.set_DeviceName("py-dev-1")
# Presence is recorded as the session starts, a moment after the device sees it.
deadline = time.time() + 5
while do(r)["Data"]["Status"] != "ONLINE":
    check(time.time() < deadline, "device ONLINE")
    time.sleep(0.05)

# 3. Invoke: sync and async.
r = InvokeThingServiceRequest.InvokeThingServiceRequest()
r.set_ProductKey(pk)
r.set_DeviceName("py-dev-1")
r.set_Identifier("Calibrate")
r.set_Args(json.dumps({"Offset": 1.5}))
sync = do(r)
check(sync["Success"] is True, sync)
check(json.loads(sync["Data"]["Result"]) == {"Result": 1}, sync)
check(sync["Data"]["MessageId"].isdigit(), sync)

r = InvokeThingServiceRequest.InvokeThingServiceRequest()
r.set_IotId(iot_id)
r.set_Identifier("Reboot")
r.set_Args(json.dumps({"Delay": 2}))
r.set_Qos(1)
asyn = do(r)
check(asyn["Success"] is True and "Result" not in asyn["Data"], asyn)

# 4. Details, records, errors.
r = QueryDeviceDetailRequest.QueryDeviceDetailRequest()
r.set_IotId(iot_id)
detail = do(r)
check(detail["Data"]["DeviceName"] == "py-dev-1" and detail["Data"]["Status"] == "ONLINE", detail)

r = QueryDeviceServiceDataRequest.QueryDeviceServiceDataRequest()
r.set_IotId(iot_id)
r.set_StartTime(0)
r.set_EndTime(int(time.time() * 1000) + 60000)
r.set_Asc(1)
r.set_PageSize(10)
records = do(r)
identifiers = [x["Identifier"] for x in records["Data"]["List"]["ServiceInfo"]]
check(identifiers[:2] == ["Calibrate", "Reboot"], records)

r = InvokeThingServiceRequest.InvokeThingServiceRequest()
r.set_ProductKey(pk)
r.set_DeviceName("nobody")
r.set_Identifier("Calibrate")
r.set_Args("{}")
missing = do(r)
check(missing["Success"] is False and missing["Code"] == "iot.device.NotExistedDevice", missing)

r = InvokeThingServiceRequest.InvokeThingServiceRequest()
r.set_IotId(iot_id)
r.set_Identifier("Calibrate")
r.set_Args(json.dumps({"Offset": 99}))
bad = do(r)
check(bad["Code"] == "iot.device.InvokeThingServiceFailed" and "/Offset" in bad["ErrorMessage"], bad)

# A wrong secret: the SDK recognises thingcall's string-to-sign in the
# message and reports InvalidAccessKeySecret, as it does against Alibaba.
wrong = AcsClient(ak, "not-the-secret", "cn-shanghai")
r = GetDeviceStatusRequest.GetDeviceStatusRequest()
r.set_IotId(iot_id)
try:
    do(r, wrong)
    raise AssertionError("a wrong secret was accepted")
except ServerException as e:
    check(e.get_http_status() == 400, e)
    check(e.get_error_code() == "InvalidAccessKeySecret", e.get_error_code())

# 5. XML through do_action.
r = GetDeviceStatusRequest.GetDeviceStatusRequest()
r.set_IotId(iot_id)
r.set_accept_format("XML")
r.set_endpoint(endpoint)
root = ET.fromstring(client.do_action(r))
check(root.tag == "GetDeviceStatusResponse", root.tag)
check(root.find("Success").text == "true", ET.tostring(root))
check(root.find("Data/Status").text == "ONLINE", ET.tostring(root))

lk.disconnect()
print("OK")
