"""A device driven by the official Python device SDK (aliyun-iot-linkkit).

It connects to thingcall's gateway exactly as it would to Alibaba's MQTT
endpoint (plain TCP, securemode=3), and answers every service call. Each
event is printed on its own line for the Rust test to follow.

usage: linkkit_device.py PORT PRODUCT_KEY DEVICE_NAME DEVICE_SECRET TSL_FILE
"""
import json
import sys
import time

from linkkit import linkkit


def main():
    port, pk, dn, secret, tsl = sys.argv[1:6]
    lk = linkkit.LinkKit(host_name="cn-shanghai", product_key=pk, device_name=dn, device_secret=secret)
    lk.config_mqtt(port=int(port), secure="", endpoint="127.0.0.1", keep_alive=60)
    lk.thing_setup(tsl)

    def on_connect(session_flag, rc, userdata):
        print("connected %s" % rc, flush=True)

    def on_thing_enable(userdata):
        print("enabled", flush=True)

    def on_call(identifier, request_id, params, userdata):
        print("call %s %s %s" % (identifier, request_id, json.dumps(params)), flush=True)
        data = {"Result": 1} if identifier == "Calibrate" else {"Accepted": 1}
        rc = lk.thing_answer_service(identifier, request_id, 200, data)
        print("answered %s %s" % (identifier, rc), flush=True)

    def on_prop_changed(params, userdata):
        print("set %s" % json.dumps(params), flush=True)

    lk.on_connect = on_connect
    lk.on_thing_enable = on_thing_enable
    lk.on_thing_call_service = on_call
    lk.on_thing_prop_changed = on_prop_changed
    lk.connect_async()
    # Run until the test closes stdin (or 60 s pass).
    deadline = time.time() + 60
    while time.time() < deadline:
        line = sys.stdin.readline()
        if not line:
            break
    lk.disconnect()


if __name__ == "__main__":
    main()
