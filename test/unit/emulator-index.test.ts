import { strict as assert } from 'assert';
import axios from 'axios';
import { DEFAULT_KNOBS, Emulators, startEmulators } from '../../src/emulators';

const any = { validateStatus: () => true } as const;

describe('emulator: startEmulators', () => {
  let emu: Emulators;

  before(async () => {
    emu = await startEmulators({
      seed: 51,
      contacts: 500,
      anchor: '2025-06-01T12:00:00Z',
      cc: { knobs: { perSecondLimit: 1000, tokenRatePerSecond: 1000 } },
    });
  });
  after(() => emu.stop());

  it('starts three servers on 127.0.0.1 ephemeral ports with the documented connection shape', () => {
    const origins = [emu.cc.origin, emu.hubspot.baseUrl, emu.salesforce.instanceUrl];
    for (const o of origins) assert.match(o, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(new Set(origins).size, 3);
    assert.equal(emu.cc.apiBaseUrl, `${emu.cc.origin}/v3`);
    assert.equal(emu.cc.authBaseUrl, `${emu.cc.origin}/oauth2/default/v1`);
    assert.ok(emu.cc.clientId && emu.cc.clientSecret && emu.cc.refreshToken);
    assert.match(emu.hubspot.accessToken, /^pat-/);
    assert.ok(emu.hubspot.clientId && emu.hubspot.clientSecret && emu.hubspot.refreshToken);
    assert.equal(emu.salesforce.loginUrl, emu.salesforce.instanceUrl);
    assert.match(emu.salesforce.privateKeyPem, /BEGIN PRIVATE KEY/);
    assert.ok(emu.salesforce.username && emu.salesforce.clientId && emu.salesforce.accessToken);
  });

  it('shares one world: opt-outs added now show in Constant Contact and in every ground truth', async () => {
    const before = emu.truth().counts.optedOut;
    const [added] = emu.addOptOuts(1);
    assert.equal(emu.truth().counts.optedOut, before + 1);
    for (const origin of [emu.cc.origin, emu.hubspot.baseUrl, emu.salesforce.instanceUrl]) {
      const st = await axios.get(`${origin}/__emulator/state?summary=1`, any);
      assert.equal(st.data.truth.counts.optedOut, before + 1);
      assert.equal(st.data.truth.addedOptOuts.at(-1).contactId, added.contactId);
    }
    const ccConn = await axios.get(`${emu.cc.origin}/__emulator/connection`, any);
    assert.equal(ccConn.data.clientId, emu.cc.clientId);
  });

  it('faults.set applies common knobs to all three and vendor knobs to one; bad knobs throw', () => {
    emu.faults.set({ latencyMs: 5, hubspot: { batchAllowed: false }, salesforce: { lockRate: 0.5 } });
    const k = emu.faults.get();
    assert.deepEqual([k.cc.latencyMs, k.hubspot.latencyMs, k.salesforce.latencyMs], [5, 5, 5]);
    assert.equal(k.hubspot.batchAllowed, false);
    assert.equal(k.salesforce.lockRate, 0.5);
    assert.throws(() => emu.faults.set({ batchAllowed: false } as never), /unknown common knob/);
    assert.throws(() => emu.faults.set({ cc: { perSecondLimit: 'fast' as never } }), /perSecondLimit/);
    emu.faults.reset();
    const r = emu.faults.get();
    assert.equal(r.hubspot.batchAllowed, DEFAULT_KNOBS.hubspot.batchAllowed);
    assert.equal(r.cc.latencyMs, 0);
    assert.equal(r.cc.perSecondLimit, 1000, 'reset returns to the start options');
  });

  it('latency knob delays responses', async () => {
    emu.faults.set({ latencyMs: 120 });
    try {
      const t0 = Date.now();
      await axios.get(`${emu.salesforce.instanceUrl}/services/data/v59.0/limits`, {
        headers: { authorization: `Bearer ${emu.salesforce.accessToken}` },
        ...any,
      });
      assert.ok(Date.now() - t0 >= 110);
    } finally {
      emu.faults.reset();
    }
  });

  it('expireTokens invalidates sessions on every server; request counts are kept per vendor', async () => {
    const sf = await axios.get(`${emu.salesforce.instanceUrl}/services/data/v59.0/limits`, {
      headers: { authorization: `Bearer ${emu.salesforce.accessToken}` },
      ...any,
    });
    assert.equal(sf.status, 200);
    emu.faults.set({ expireTokens: true });
    const after = await axios.get(`${emu.salesforce.instanceUrl}/services/data/v59.0/limits`, {
      headers: { authorization: `Bearer ${emu.salesforce.accessToken}` },
      ...any,
    });
    assert.equal(after.status, 401);
    const counts = emu.requestCounts();
    assert.ok(counts.salesforce['GET /services/data/vXX.X/limits'].total >= 2);
    assert.deepEqual(Object.keys(counts).sort(), ['cc', 'hubspot', 'salesforce']);
  });

  it('verify() starts not ok (nothing suppressed yet) and lists what is expected', () => {
    const v = emu.verify();
    assert.equal(v.ok, false);
    assert.equal(v.hubspot.expected, emu.truth().hubspot.toSuppress.length);
    assert.equal(v.salesforce.notSuppressed.length, v.salesforce.expected);
  });
});
