// @alicloud/pop-core (the Node RPC client) against a running thingcall, GET and POST.
// usage: node pop_core.js http://HOST:PORT ACCESS_KEY_ID ACCESS_KEY_SECRET PRODUCT_KEY DEVICE_NAME
'use strict';
const RPCClient = require('@alicloud/pop-core');

const [endpoint, accessKeyId, accessKeySecret, pk, dn] = process.argv.slice(2);
const client = new RPCClient({ accessKeyId, accessKeySecret, endpoint, apiVersion: '2018-01-20' });

function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + JSON.stringify(what));
}

(async () => {
  for (const method of ['GET', 'POST']) {
    const r = await client.request('InvokeThingService',
      { ProductKey: pk, DeviceName: dn, Identifier: 'Calibrate', Args: JSON.stringify({ Offset: 1.5 }) }, { method });
    check(r.Success === true, r);
    check('Result' in JSON.parse(r.Data.Result), r);
    const s = await client.request('GetDeviceStatus', { ProductKey: pk, DeviceName: dn }, { method });
    check(s.Data.Status === 'ONLINE', s);
    // pop-core turns a body with a Code into an error.
    try {
      await client.request('GetDeviceStatus', { ProductKey: pk, DeviceName: 'nobody' }, { method });
      throw new Error('an unknown device was found');
    } catch (e) {
      check(e.code === 'iot.device.NotExistedDevice', { method, code: e.code, message: e.message });
    }
  }
  console.log('OK');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
