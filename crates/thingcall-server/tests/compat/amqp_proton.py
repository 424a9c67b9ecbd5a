"""Server-side subscription with python-qpid-proton, in the shape of Alibaba's Python
AMQP sample (MessagingHandler, amqps://, SASL PLAIN user/password built as the
sample builds them, heartbeat=60, create_receiver(conn) with no address). The CA
comes from SSL_CERT_FILE, so the sample's code needs no change. On Python 3 proton hands the
data section over as a memoryview, so the body is read with bytes(...).decode().

usage: amqp_proton.py HTTPS_HOST:PORT MQTTS_PORT AMQPS_HOST:PORT ACCESS_KEY_ID ACCESS_KEY_SECRET TSL_FILE CA_FILE
Prints OK when every check passed.
"""
import base64
import hashlib
import hmac
import json
import sys
import threading
import time

from aliyunsdkcore.client import AcsClient
from aliyunsdkiot.request.v20180120 import (
    CreateProductRequest, ImportThingModelTslRequest, PublishThingModelRequest, RegisterDeviceRequest,
    InvokeThingServiceRequest, CreateConsumerGroupRequest, CreateSubscribeRelationRequest,
    QueryConsumerGroupStatusRequest,
)
from linkkit import linkkit
from proton.handlers import MessagingHandler
from proton.reactor import Container

https, mqtts_port, amqps, ak, sk, tsl_file, ca_file = sys.argv[1:8]
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


# 1. Provision with the official SDK: product, model, device, group, subscription.
r = CreateProductRequest.CreateProductRequest()
r.set_ProductName("Amqp_%d" % int(time.time() * 1000))
r.set_NodeType(0)
r.set_AliyunCommodityCode("iothub_senior")
r.set_DataFormat(1)
pk = do(r)["ProductKey"]
r = ImportThingModelTslRequest.ImportThingModelTslRequest()
r.set_ProductKey(pk)
r.set_TslStr(open(tsl_file, encoding="utf-8").read())
do(r)
r = PublishThingModelRequest.PublishThingModelRequest()
r.set_ProductKey(pk)
r.set_ModelVersion("v1.0.0")
do(r)
r = RegisterDeviceRequest.RegisterDeviceRequest()
r.set_ProductKey(pk)
r.set_DeviceName("lk-amqp")
secret = do(r)["Data"]["DeviceSecret"]
r = CreateConsumerGroupRequest.CreateConsumerGroupRequest()
r.set_GroupName("proton_group")
created = do(r)
check(created["Success"] is True, created)
group = created["GroupId"]
r = CreateSubscribeRelationRequest.CreateSubscribeRelationRequest()
r.set_ProductKey(pk)
r.set_Type("AMQP")
r.set_ConsumerGroupIdss([group])
r.set_DeviceDataFlag(True)
r.set_DeviceStatusChangeFlag(True)
check(do(r)["Success"] is True, "subscribed")


class Sample(MessagingHandler):
    """The sample's handler: accepts (or, with accept=False, holds) every message."""

    def __init__(self, accept):
        super().__init__(prefetch=10, auto_accept=False)
        self.accept_them = accept
        self.got = []
        self.lock = threading.Lock()
        self.conn = None
        self.stop = False

    def on_start(self, event):
        timestamp = str(int(time.time() * 1000))
        client_id = "proton-client"
        username = (client_id + "|authMode=aksign,signMethod=hmacsha1,timestamp=" + timestamp
                    + ",authId=" + ak + ",iotInstanceId=,consumerGroupId=" + group + "|")
        content = "authId=" + ak + "&timestamp=" + timestamp
        password = base64.b64encode(hmac.new(sk.encode(), content.encode(), hashlib.sha1).digest()).decode()
        self.conn = event.container.connect("amqps://" + amqps, user=username, password=password,
                                            heartbeat=60, reconnect=False)
        self.receiver = event.container.create_receiver(self.conn)
        event.container.schedule(0.1, self)

    def on_timer_task(self, event):
        if self.stop:
            self.conn.close()
        else:
            event.container.schedule(0.1, self)

    def on_message(self, event):
        m = event.message
        with self.lock:
            self.got.append((m.properties.get("topic"), m.properties.get("messageId"),
                             m.properties.get("generateTime"), json.loads(bytes(m.body).decode("utf-8"))))
        if self.accept_them:
            self.accept(event.delivery)
        event.receiver.flow(1)


def run(handler):
    t = threading.Thread(target=lambda: Container(handler).run(), daemon=True)
    t.start()
    return t


def topics(h):
    with h.lock:
        return [g[0] for g in h.got]


# 2. A consumer that accepts; a linkkit device comes online.
first = Sample(accept=True)
t1 = run(first)
lk = linkkit.LinkKit(host_name="cn-shanghai", product_key=pk, device_name="lk-amqp", device_secret=secret)
lk.config_mqtt(port=int(mqtts_port), secure="TLS", cadata=open(ca_file).read(), endpoint="127.0.0.1",
               keep_alive=60)
lk.thing_setup(tsl_file)
enabled = []
lk.on_thing_enable = lambda userdata: enabled.append(True)
lk.on_thing_call_service = lambda identifier, request_id, params, userdata: lk.thing_answer_service(
    identifier, request_id, 200, {"Accepted": 1})
lk.connect_async()
wait(lambda: enabled, "linkkit connected")
status_topic = "/as/mqtt/status/%s/lk-amqp" % pk
wait(lambda: status_topic in topics(first), "online status message")
online = [g for g in first.got if g[0] == status_topic][0]
check(online[3]["status"] == "online" and online[3]["productKey"] == pk, online)
check(isinstance(online[2], int) and online[1].isdigit(), online)

# 3-4. An async service call; its reply is pushed.
r = InvokeThingServiceRequest.InvokeThingServiceRequest()
r.set_ProductKey(pk)
r.set_DeviceName("lk-amqp")
r.set_Identifier("Reboot")
r.set_Args(json.dumps({"Delay": 1}))
called = do(r)
message_id = called["Data"]["MessageId"]
reply_topic = "/%s/lk-amqp/thing/downlink/reply/message" % pk
wait(lambda: reply_topic in topics(first), "the async reply pushed")
reply = [g for g in first.got if g[0] == reply_topic][0][3]
check(str(reply["requestId"]) == str(message_id), (reply, message_id))
check(reply["code"] == 200 and reply["data"] == {"Accepted": 1}, reply)
check(reply["topic"] == "/sys/%s/lk-amqp/thing/service/Reboot" % pk, reply)

# 5. Offline status.
lk.disconnect()
wait(lambda: [g for g in first.got if g[0] == status_topic and g[3]["status"] == "offline"], "offline status")
first.stop = True
t1.join(10)

# 6. A message held without accepting is delivered again after a reconnect.
r = QueryConsumerGroupStatusRequest.QueryConsumerGroupStatusRequest()
r.set_GroupId(group)
check(do(r)["Success"] is True, "status query")
lk.connect_async()
wait(lambda: status_topic and True, "reconnect")
holder = Sample(accept=False)
t2 = run(holder)
wait(lambda: holder.got, "a message to hold")
held = holder.got[0][1]
holder.stop = True
t2.join(10)
again = Sample(accept=True)
t3 = run(again)
wait(lambda: any(g[1] == held for g in again.got), "the held message delivered again")
again.stop = True
t3.join(10)
lk.disconnect()
print("OK")
