"""The official SDKs against a three-node thingcall cluster.

The classic Python SDK (v1 signatures) provisions through node A; a linkkit
device connects to node B and thingcall's simulator to node C; every node is
then called, sync and async, with the classic SDK (v1) and the tea SDK (v3).

usage: cluster_sdk.py HTTP_A HTTP_B HTTP_C MQTT_PORT_B MQTT_PORT_C AK SECRET TSL_FILE THINGCALL_BIN
Prints OK and exits 0 when every check passed.
"""
import json
import subprocess
import sys
import time

from aliyunsdkcore.client import AcsClient
from aliyunsdkiot.request.v20180120 import (
    CreateProductRequest, ImportThingModelTslRequest, PublishThingModelRequest, RegisterDeviceRequest,
    InvokeThingServiceRequest, QueryDeviceDetailRequest, GetDeviceStatusRequest, QueryDeviceServiceDataRequest,
)
from alibabacloud_iot20180120 import models as tea_models
from alibabacloud_iot20180120.client import Client as TeaClient
from alibabacloud_tea_openapi import models as open_api_models
from linkkit import linkkit

http_a, http_b, http_c, mqtt_b, mqtt_c, ak, secret, tsl_file, thingcall = sys.argv[1:10]
nodes = {"A": http_a, "B": http_b, "C": http_c}
classic = AcsClient(ak, secret, "cn-shanghai")


def tea(endpoint):
    return TeaClient(open_api_models.Config(access_key_id=ak, access_key_secret=secret, region_id="cn-shanghai",
                                            endpoint=endpoint, protocol="http"))


teas = {n: tea(e) for n, e in nodes.items()}


def do(req, node):
    req.set_endpoint(nodes[node])
    return json.loads(classic.do_action_with_exception(req))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def eventually(what, probe, within=1.0):
    deadline = time.time() + within
    while True:
        got = probe()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError("not within %.1f s: %s" % (within, what))
        time.sleep(0.02)


# 1. Provision through node A; every other node sees it within a second.
r = CreateProductRequest.CreateProductRequest()
r.set_ProductName("Cluster_%d" % int(time.time() * 1000))
r.set_NodeType(0)
r.set_AliyunCommodityCode("iothub_senior")
r.set_DataFormat(1)
created = do(r, "A")
check(created["Success"] is True, created)
pk = created["ProductKey"]
r = ImportThingModelTslRequest.ImportThingModelTslRequest()
r.set_ProductKey(pk)
r.set_TslStr(open(tsl_file, encoding="utf-8").read())
check(do(r, "A")["Success"] is True, "import")
r = PublishThingModelRequest.PublishThingModelRequest()
r.set_ProductKey(pk)
r.set_ModelVersion("v1.0.0")
check(do(r, "A")["Success"] is True, "publish")

devices = {}
for name in ("lk-on-b", "sim-on-c"):
    r = RegisterDeviceRequest.RegisterDeviceRequest()
    r.set_ProductKey(pk)
    r.set_DeviceName(name)
    reg = do(r, "A")
    check(reg["Success"] is True, reg)
    devices[name] = (reg["Data"]["IotId"], reg["Data"]["DeviceSecret"])


def detail_on(node, iot_id):
    r = QueryDeviceDetailRequest.QueryDeviceDetailRequest()
    r.set_IotId(iot_id)
    return do(r, node)


for node in ("B", "C"):
    for name, (iot_id, _) in devices.items():
        eventually("%s known on node %s" % (name, node), lambda: detail_on(node, iot_id)["Success"])


def status_on(node, name):
    r = GetDeviceStatusRequest.GetDeviceStatusRequest()
    r.set_ProductKey(pk)
    r.set_DeviceName(name)
    return do(r, node)["Data"]["Status"]


for node in nodes:
    check(status_on(node, "lk-on-b") == "UNACTIVE", "a fresh device is UNACTIVE on %s" % node)

# 2. The devices: linkkit on node B, the simulator on node C.
lk = linkkit.LinkKit(host_name="cn-shanghai", product_key=pk, device_name="lk-on-b",
                     device_secret=devices["lk-on-b"][1])
lk.config_mqtt(port=int(mqtt_b), secure="", endpoint="127.0.0.1", keep_alive=60)
lk.thing_setup(tsl_file)
enabled = []
lk.on_thing_enable = lambda userdata: enabled.append(True)
answered = []


def on_call(identifier, request_id, params, userdata):
    answered.append(identifier)
    data = {"Result": 7} if identifier == "Calibrate" else {"Accepted": 1}
    lk.thing_answer_service(identifier, request_id, 200, data)


lk.on_thing_call_service = on_call
lk.connect_async()
sim = subprocess.Popen([thingcall, "device", "simulate", "--mqtt", "127.0.0.1:%s" % mqtt_c, "--product-key", pk,
                        "--device-name", "sim-on-c", "--device-secret", devices["sim-on-c"][1], "--tsl", tsl_file],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    eventually("linkkit connected", lambda: enabled, within=20)
    for node in nodes:
        for name in devices:
            eventually("%s ONLINE on %s" % (name, node), lambda: status_on(node, name) == "ONLINE", within=10)
        d = detail_on(node, devices["lk-on-b"][0])
        check(d["Data"]["Status"] == "ONLINE" and d["Data"]["IpAddress"] == "127.0.0.1", d)

    # 3. Every node calls every device: sync and async with v1, sync with v3.
    async_ids = []
    for node in nodes:
        for name in devices:
            r = InvokeThingServiceRequest.InvokeThingServiceRequest()
            r.set_ProductKey(pk)
            r.set_DeviceName(name)
            r.set_Identifier("Calibrate")
            r.set_Args(json.dumps({"Offset": 1.5}))
            sync = do(r, node)
            check(sync["Success"] is True, (node, name, sync))
            check("Result" in json.loads(sync["Data"]["Result"]), sync)

            r = InvokeThingServiceRequest.InvokeThingServiceRequest()
            r.set_IotId(devices[name][0])
            r.set_Identifier("Reboot")
            r.set_Args(json.dumps({"Delay": 2}))
            asyn = do(r, node)
            check(asyn["Success"] is True and "Result" not in asyn["Data"], (node, name, asyn))
            async_ids.append((name, asyn["Data"]["MessageId"]))

            v3 = teas[node].invoke_thing_service(tea_models.InvokeThingServiceRequest(
                product_key=pk, device_name=name, identifier="Calibrate", args=json.dumps({"Offset": 2.5})))
            check(v3.body.success is True, (node, name, v3.body))
            check("Result" in json.loads(v3.body.data.result), v3.body.data.result)
            st = teas[node].get_device_status(tea_models.GetDeviceStatusRequest(product_key=pk, device_name=name))
            check(st.body.data.status == "ONLINE", st.body)
    check(answered.count("Calibrate") == 6 and answered.count("Reboot") == 3, answered)

    # 4. Message ids are unique across nodes; every async reply completed
    #    its record, whichever node the device is on, seen from every node.
    check(len({m for _, m in async_ids}) == len(async_ids), async_ids)

    def records(node, name):
        r = QueryDeviceServiceDataRequest.QueryDeviceServiceDataRequest()
        r.set_IotId(devices[name][0])
        r.set_StartTime(0)
        r.set_EndTime(int(time.time() * 1000) + 60000)
        r.set_Asc(1)
        r.set_PageSize(50)
        return do(r, node)["Data"]["List"]["ServiceInfo"]

    def all_replied(node):
        for name in devices:
            listed = records(node, name)
            reboots = [x for x in listed if x["Identifier"] == "Reboot"]
            if len(listed) != 9 or len(reboots) != 3 or not all(x.get("OutputData") for x in reboots):
                return False
        return True

    for node in nodes:
        eventually("every record complete on %s" % node, lambda: all_replied(node), within=5)
finally:
    sim.terminate()
    sim.wait()
    lk.disconnect()
print("OK")
