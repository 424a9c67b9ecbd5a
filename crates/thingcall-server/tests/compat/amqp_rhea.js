// Server-side subscription with rhea, in the shape of Alibaba's Node.js AMQP sample:
// container.connect({host, port, transport: 'tls', idle_time_out: 60000, username, password})
// with the password signed as the sample signs it, then open_receiver() with no address.
// The CA comes from NODE_EXTRA_CA_CERTS, so the sample's code needs no change.
// Provisioning with @alicloud/pop-core over HTTPS; the device is the official Node device
// SDK over mqtts://, answering an async service.
// usage: node amqp_rhea.js https://HOST:PORT ACCESS_KEY_ID ACCESS_KEY_SECRET PRODUCT_KEY
//        DEVICE_NAME DEVICE_SECRET MQTTS_URL AMQPS_HOST AMQPS_PORT
'use strict';
const crypto = require('crypto');
const container = require('rhea');
const iot = require('alibabacloud-iot-device-sdk');
const RPCClient = require('@alicloud/pop-core');

const [endpoint, accessKeyId, accessKeySecret, pk, dn, secret, brokerUrl, amqpHost, amqpPort] =
  process.argv.slice(2);
const api = new RPCClient({ accessKeyId, accessKeySecret, endpoint, apiVersion: '2018-01-20' });

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + JSON.stringify(what));
}

async function waitFor(cond, what, ms = 20000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('timed out: ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The sample's connection: a fresh container per consumer so that each can be closed alone.
function consumer(groupId, clientId, accept) {
  const c = container.create_container();
  const timestamp = Date.now();
  const username = `${clientId}|authMode=aksign,signMethod=hmacsha1,timestamp=${timestamp},authId=${accessKeyId},iotInstanceId=,consumerGroupId=${groupId}|`;
  const signContent = `authId=${accessKeyId}&timestamp=${timestamp}`;
  const password = Buffer.from(crypto.createHmac('sha1', accessKeySecret).update(signContent).digest())
    .toString('base64');
  const got = [];
  c.on('message', (context) => {
    const msg = context.message;
    got.push({
      topic: msg.application_properties.topic,
      messageId: msg.application_properties.messageId,
      propertiesId: msg.message_id,
      generateTime: msg.application_properties.generateTime,
      raw: Buffer.from(msg.body.content).toString(),
      body: JSON.parse(Buffer.from(msg.body.content).toString()),
    });
    if (accept) context.delivery.accept();
  });
  const connection = c.connect({
    host: amqpHost, port: Number(amqpPort), transport: 'tls', reconnect: false,
    idle_time_out: 60000, username, password,
  });
  // The sample calls open_receiver() and accepts; rhea also accepts by itself unless told
  // not to, which the consumer that holds its messages does.
  if (accept) connection.open_receiver();
  else connection.open_receiver({ autoaccept: false });
  return { got, close: () => connection.close() };
}

(async () => {
  const group = await api.request('CreateConsumerGroup', { GroupName: 'rhea_group' }, { method: 'POST' });
  check(group.Success === true, group);
  const sub = await api.request('CreateSubscribeRelation', {
    ProductKey: pk, Type: 'AMQP', 'ConsumerGroupIds.1': group.GroupId,
    DeviceDataFlag: true, DeviceStatusChangeFlag: true,
  }, { method: 'POST' });
  check(sub.Success === true, sub);

  const first = consumer(group.GroupId, 'rhea-client', true);
  const device = iot.device({ productKey: pk, deviceName: dn, deviceSecret: secret, brokerUrl });
  device.on('error', (e) => console.error('device error', e && e.message));
  // The device SDK draws a new id for a reply unless given one; Alibaba forwards an async
  // reply only when it carries the id of the call, so the callback echoes it.
  device.onService('Reboot', (res, reply) => reply({ id: res.id, code: 200, data: { Accepted: 1 } }));
  await new Promise((resolve) => device.on('connect', resolve));
  // onService subscribes without telling when it is granted; ask again to know.
  await new Promise((resolve, reject) => device._mqttClient.subscribe(
    `/sys/${pk}/${dn}/thing/service/Reboot`, { qos: 0 }, (err) => (err ? reject(err) : resolve())));
  const statusTopic = `/as/mqtt/status/${pk}/${dn}`;
  await waitFor(() => first.got.some((m) => m.topic === statusTopic && m.body.status === 'online'),
    'online status');
  const online = first.got.find((m) => m.topic === statusTopic);
  check(online.propertiesId === online.messageId && typeof online.generateTime === 'number', online);

  const called = await api.request('InvokeThingService', {
    ProductKey: pk, DeviceName: dn, Identifier: 'Reboot', Args: JSON.stringify({ Delay: 1 }),
  }, { method: 'POST' });
  check(called.Success === true, called);
  const replyTopic = `/${pk}/${dn}/thing/downlink/reply/message`;
  await waitFor(() => first.got.some((m) => m.topic === replyTopic), 'the async reply');
  const replyMessage = first.got.find((m) => m.topic === replyTopic);
  const reply = replyMessage.body;
  // requestId is a JSON number (a Long, as Alibaba sends it) beyond 2^53: read its digits
  // from the text, as a JavaScript consumer must.
  const requestId = /"requestId":(\d+)/.exec(replyMessage.raw)[1];
  check(requestId === String(called.Data.MessageId), [replyMessage.raw, called.Data]);
  check(reply.code === 200 && reply.data.Accepted === 1, reply);
  check(reply.topic === `/sys/${pk}/${dn}/thing/service/Reboot`, reply);

  device.end();
  await waitFor(() => first.got.some((m) => m.topic === statusTopic && m.body.status === 'offline'),
    'offline status');
  first.close();

  // A message held without accepting comes again after a reconnect.
  const device2 = iot.device({ productKey: pk, deviceName: dn, deviceSecret: secret, brokerUrl });
  await new Promise((resolve) => device2.on('connect', resolve));
  const holder = consumer(group.GroupId, 'rhea-holder', false);
  await waitFor(() => holder.got.length > 0, 'a message to hold');
  const held = holder.got[0].messageId;
  holder.close();
  const again = consumer(group.GroupId, 'rhea-again', true);
  await waitFor(() => again.got.some((m) => m.messageId === held), 'the held message again');
  again.close();
  device2.end();
  console.log('OK');
  process.exit(0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
