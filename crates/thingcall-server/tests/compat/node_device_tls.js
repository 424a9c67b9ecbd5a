// The official Node device SDK (alibabacloud-iot-device-sdk) over mqtts:// on the plain
// MQTT port (the gateway tells TLS by the first byte) and over wss://, trusting the test CA
// through NODE_EXTRA_CA_CERTS, with @alicloud/pop-core calling over HTTPS.
// Its start-up subscriptions must all be granted, another device's topics refused.
// usage: node node_device_tls.js https://HOST:PORT ACCESS_KEY_ID ACCESS_KEY_SECRET PRODUCT_KEY
//        DEVICE_NAME DEVICE_SECRET BROKER_URL OTHER_DEVICE_NAME
'use strict';
const iot = require('alibabacloud-iot-device-sdk');
const RPCClient = require('@alicloud/pop-core');

const [endpoint, accessKeyId, accessKeySecret, pk, dn, secret, brokerUrl, other] = process.argv.slice(2);
const api = new RPCClient({ accessKeyId, accessKeySecret, endpoint, apiVersion: '2018-01-20' });

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + JSON.stringify(what));
}

function subscribe(client, topics) {
  return new Promise((resolve, reject) => {
    client.subscribe(topics, { qos: 0 }, (err, granted) => (err ? reject(err) : resolve(granted)));
  });
}

(async () => {
  const device = iot.device({ productKey: pk, deviceName: dn, deviceSecret: secret, brokerUrl });
  device.on('error', (e) => console.error('device error', e && e.message));
  await new Promise((resolve, reject) => {
    device.on('connect', resolve);
    setTimeout(() => reject(new Error('no connect over ' + brokerUrl)), 20000);
  });
  device.onService('Calibrate', (res, reply) => {
    reply({ code: 200, data: { Result: 5 } }, 'sync');
  });

  // What the SDK subscribes to at start (its own list), asked again to read the grants.
  const own = [
    `/shadow/get/${pk}/${dn}`,
    `/ext/session/${pk}/${dn}/combine/login_reply`,
    `/ext/session/${pk}/${dn}/combine/logout_reply`,
    `/sys/${pk}/${dn}/thing/event/property/post_reply`,
    `/sys/${pk}/${dn}/rrpc/request/+`,
  ];
  const granted = await subscribe(device._mqttClient, own);
  for (const g of granted) check(g.qos !== 128, { refused: g.topic });
  const theirs = [
    `/shadow/get/${pk}/${other}`,
    `/ext/session/${pk}/${other}/combine/login_reply`,
    `/ext/ntp/${pk}/${other}/response`,
    `/ota/device/upgrade/${pk}/${other}`,
    `/${pk}/${other}/user/get`,
    `/sys/${pk}/${other}/rrpc/request/+`,
  ];
  const refused = await subscribe(device._mqttClient, theirs);
  for (const g of refused) check(g.qos === 128, { granted: g.topic });

  // Presence is recorded as the session starts, a moment after the device sees it.
  const deadline = Date.now() + 5000;
  for (;;) {
    const status = await api.request('GetDeviceStatus', { ProductKey: pk, DeviceName: dn }, { method: 'POST' });
    if (status.Data.Status === 'ONLINE') break;
    check(Date.now() < deadline, status);
    await new Promise((r) => setTimeout(r, 50));
  }
  const r = await api.request('InvokeThingService',
    { ProductKey: pk, DeviceName: dn, Identifier: 'Calibrate', Args: JSON.stringify({ Offset: 1.5 }) },
    { method: 'POST' });
  check(r.Success === true, r);
  check(JSON.parse(r.Data.Result).Result === 5, r);
  device.end();
  console.log('OK');
  process.exit(0);
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
