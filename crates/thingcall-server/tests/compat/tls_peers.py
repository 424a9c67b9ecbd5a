"""The official Python peers over TLS and WebSocket, changed only in endpoint and CA:
the classic SDK (aliyunsdkcore, HTTPS, CA from ALIBABA_CLOUD_CA_BUNDLE), the tea SDK
(HTTPS, RuntimeOptions(ca=...)), linkkit (MQTT over TLS, securemode=2, cadata=...) and
paho-mqtt over ws:// and wss:// (transport="websockets").

usage: tls_peers.py HTTPS_HOST:PORT MQTTS_PORT WS_PORT WSS_PORT ACCESS_KEY_ID ACCESS_KEY_SECRET TSL_FILE CA_FILE
The environment must carry ALIBABA_CLOUD_CA_BUNDLE=CA_FILE. Prints OK when every check passed.
"""
import hashlib
import hmac
import json
import os
import sys
import time

import paho.mqtt.client as paho
from aliyunsdkcore.client import AcsClient
from aliyunsdkiot.request.v20180120 import (
    CreateProductRequest, ImportThingModelTslRequest, PublishThingModelRequest, RegisterDeviceRequest,
    InvokeThingServiceRequest, GetDeviceStatusRequest, QueryDeviceServiceDataRequest,
)
from alibabacloud_iot20180120 import models as iot_models
from alibabacloud_iot20180120.client import Client as TeaClient
from alibabacloud_tea_openapi import models as open_api_models
from alibabacloud_tea_util import models as util_models
from linkkit import linkkit

https, mqtts_port, ws_port, wss_port, ak, sk, tsl_file, ca_file = sys.argv[1:9]
ca_text = open(ca_file, encoding="ascii").read()
client = AcsClient(ak, sk, "cn-shanghai")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def do(req):
    req.set_endpoint(https)
    req.set_protocol_type("https")
    return json.loads(client.do_action_with_exception(req))


def wait(cond, what, seconds=20):
    deadline = time.time() + seconds
    while not cond():
        if time.time() > deadline:
            raise AssertionError("timed out: " + what)
        time.sleep(0.05)


check(os.environ.get("ALIBABA_CLOUD_CA_BUNDLE") == ca_file, "the classic SDK trusts the test CA by env")

# 1. Provision over HTTPS with the classic SDK.
r = CreateProductRequest.CreateProductRequest()
r.set_ProductName("TlsPy_%d" % int(time.time() * 1000))
r.set_NodeType(0)
r.set_AliyunCommodityCode("iothub_senior")
r.set_DataFormat(1)
created = do(r)
check(created["Success"] is True, created)
pk = created["ProductKey"]
r = ImportThingModelTslRequest.ImportThingModelTslRequest()
r.set_ProductKey(pk)
r.set_TslStr(open(tsl_file, encoding="utf-8").read())
check(do(r)["Success"] is True, "import")
r = PublishThingModelRequest.PublishThingModelRequest()
r.set_ProductKey(pk)
r.set_ModelVersion("v1.0.0")
check(do(r)["Success"] is True, "publish")

secrets = {}
for dn in ("lk-tls", "paho-ws", "paho-wss"):
    r = RegisterDeviceRequest.RegisterDeviceRequest()
    r.set_ProductKey(pk)
    r.set_DeviceName(dn)
    reg = do(r)
    check(reg["Success"] is True, reg)
    secrets[dn] = reg["Data"]["DeviceSecret"]


def invoke(dn, identifier, args):
    r = InvokeThingServiceRequest.InvokeThingServiceRequest()
    r.set_ProductKey(pk)
    r.set_DeviceName(dn)
    r.set_Identifier(identifier)
    r.set_Args(json.dumps(args))
    return do(r)


def status(dn):
    r = GetDeviceStatusRequest.GetDeviceStatusRequest()
    r.set_ProductKey(pk)
    r.set_DeviceName(dn)
    return do(r)["Data"]["Status"]


# 2. linkkit over TLS with the test CA (securemode=2).
lk = linkkit.LinkKit(host_name="cn-shanghai", product_key=pk, device_name="lk-tls",
                     device_secret=secrets["lk-tls"])
lk.config_mqtt(port=int(mqtts_port), secure="TLS", cadata=ca_text, endpoint="127.0.0.1", keep_alive=60)
lk.thing_setup(tsl_file)
enabled = []
lk.on_thing_enable = lambda userdata: enabled.append(True)


def on_call(identifier, request_id, params, userdata):
    data = {"Result": 7} if identifier == "Calibrate" else {"Accepted": 1}
    lk.thing_answer_service(identifier, request_id, 200, data)


lk.on_thing_call_service = on_call
posted = []
lk.on_thing_prop_post = lambda request_id, code, data, message, userdata: posted.append((request_id, code))
lk.connect_async()
wait(lambda: enabled, "linkkit connected over TLS")

# Property posts are checked against the published model and answered.
rc, first = lk.thing_post_property({"Brightness": 50})
check(rc == 0, "post sent")
wait(lambda: len(posted) == 1, "the property post answered")
check(posted[0] == (first, 200), posted)
rc, second = lk.thing_post_property({"Brightness": 500})
wait(lambda: len(posted) == 2, "the out-of-range post answered")
check(posted[1] == (second, 6306), posted)
# Presence is recorded as the session starts, a moment after the device sees it.
wait(lambda: status("lk-tls") == "ONLINE", "linkkit ONLINE", seconds=5)
sync = invoke("lk-tls", "Calibrate", {"Offset": 1.5})
check(sync["Success"] is True and json.loads(sync["Data"]["Result"]) == {"Result": 7}, sync)
asyn = invoke("lk-tls", "Reboot", {"Delay": 1})
check(asyn["Success"] is True and "Result" not in asyn["Data"], asyn)


def reboot_answered():
    r = QueryDeviceServiceDataRequest.QueryDeviceServiceDataRequest()
    r.set_ProductKey(pk)
    r.set_DeviceName("lk-tls")
    r.set_StartTime(0)
    r.set_EndTime(int(time.time() * 1000) + 60000)
    r.set_Asc(1)
    r.set_PageSize(10)
    rows = do(r)["Data"]["List"]["ServiceInfo"]
    return any(x["Identifier"] == "Reboot" and "Accepted" in json.dumps(x) for x in rows)


wait(reboot_answered, "the async reply reached the record over TLS")

# 3. The tea SDK over HTTPS, trusting the CA through its runtime options.
tea = TeaClient(open_api_models.Config(access_key_id=ak, access_key_secret=sk, region_id="cn-shanghai",
                                       endpoint=https, protocol="https"))
runtime = util_models.RuntimeOptions(ca=ca_file)
resp = tea.invoke_thing_service_with_options(iot_models.InvokeThingServiceRequest(
    product_key=pk, device_name="lk-tls", identifier="Calibrate", args=json.dumps({"Offset": 2})), runtime)
check(resp.body.success is True and json.loads(resp.body.data.result) == {"Result": 7}, resp.body)
lk.disconnect()


# 4. paho-mqtt over ws:// and wss://, answering RRPC by hand.
def paho_device(dn, port, tls):
    secret = secrets[dn]
    bare = "%s.%s" % (pk, dn)
    content = "clientId%sdeviceName%sproductKey%s" % (bare, dn, pk)
    password = hmac.new(secret.encode(), content.encode(), hashlib.sha1).hexdigest()
    c = paho.Client(client_id="%s|securemode=%d,signmethod=hmacsha1|" % (bare, 2 if tls else 3),
                    transport="websockets")
    c.ws_set_options(path="/mqtt")
    if tls:
        c.tls_set(ca_certs=ca_file)
    c.username_pw_set("%s&%s" % (dn, pk), password)
    ready = []

    def on_connect(cl, userdata, flags, rc):
        check(rc == 0, "CONNACK %d over %s" % (rc, "wss" if tls else "ws"))
        cl.subscribe("/sys/%s/%s/rrpc/request/+" % (pk, dn), qos=0)

    def on_subscribe(cl, userdata, mid, granted):
        check(granted == (0,), granted)
        ready.append(True)

    def on_message(cl, userdata, msg):
        req = json.loads(msg.payload)
        rrpc_id = msg.topic.rsplit("/", 1)[1]
        reply = {"id": req["id"], "code": 200, "data": {"Result": 9 if tls else 8}}
        cl.publish("/sys/%s/%s/rrpc/response/%s" % (pk, dn, rrpc_id), json.dumps(reply), qos=0)

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", int(port), keepalive=60)
    c.loop_start()
    wait(lambda: ready, "paho subscribed over %s" % ("wss" if tls else "ws"))
    return c


for dn, port, tls, want in (("paho-ws", ws_port, False, 8), ("paho-wss", wss_port, True, 9)):
    c = paho_device(dn, port, tls)
    wait(lambda: status(dn) == "ONLINE", dn + " ONLINE", seconds=5)
    r = invoke(dn, "Calibrate", {"Offset": 1})
    check(r["Success"] is True and json.loads(r["Data"]["Result"]) == {"Result": want}, r)
    c.disconnect()
    c.loop_stop()

print("OK")
