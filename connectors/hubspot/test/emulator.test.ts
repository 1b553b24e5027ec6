import { strict as assert } from 'assert';
import axios, { AxiosResponse } from 'axios';
import { Client } from '@hubspot/api-client';
import { GroundTruth, HubSpotEmulator, World, startHubSpot } from '../../../src/emulators';

const ANCHOR = '2025-06-01T12:00:00Z';
const any = { validateStatus: () => true } as const;

describe('emulator: HubSpot', () => {
  let emu: HubSpotEmulator;
  let world: World;
  let truth: GroundTruth;
  let token: string;

  const post = (path: string, body: unknown, t = token): Promise<AxiosResponse> =>
    axios.post(`${emu.origin}${path}`, body, { headers: { authorization: `Bearer ${t}` }, ...any });
  const get = (path: string, t = token): Promise<AxiosResponse> =>
    axios.get(`${emu.origin}${path}`, { headers: { authorization: `Bearer ${t}` }, ...any });
  const read = (emails: string[], extra: Record<string, unknown> = {}): Promise<AxiosResponse> =>
    post('/crm/v3/objects/contacts/batch/read', {
      idProperty: 'email',
      properties: ['email', 'hs_email_optout'],
      propertiesWithHistory: [],
      inputs: emails.map((id) => ({ id })),
      ...extra,
    });
  /** An opted-out email whose HubSpot contact is not suppressed yet, not used by another test. */
  const fresh = (() => {
    let i = 0;
    return (): { email: string; id: string } => {
      const id = truth.hubspot.toSuppress[i++];
      return { id, email: world.hsById.get(id)!.norm };
    };
  })();

  before(async () => {
    emu = await startHubSpot({
      seed: 31,
      contacts: 800,
      anchor: ANCHOR,
      server: { knobs: { tenSecondLimit: 100_000 } },
    });
    world = emu.world;
    truth = world.truth();
    token = emu.connection().accessToken;
  });
  after(() => emu.stop());
  afterEach(() => {
    emu.setKnobs({
      tenSecondLimit: 100_000,
      batchAllowed: true,
      requireLegalBasis: false,
      force429Storm: 0,
      fail5xxRate: 0,
      fail5xxMode: 'before',
      dailyUsed: 0,
    });
  });

  it('requires a bearer token (401 INVALID_AUTHENTICATION)', async () => {
    const none = await axios.post(`${emu.origin}/crm/v3/objects/contacts/batch/read`, {}, any);
    assert.equal(none.status, 401);
    assert.equal(none.data.status, 'error');
    assert.equal(none.data.category, 'INVALID_AUTHENTICATION');
    const bad = await post('/crm/v3/objects/contacts/batch/read', {}, 'pat-na1-wrong');
    assert.equal(bad.status, 401);
  });

  describe('CRM contacts', () => {
    it('batch/read requires properties and propertiesWithHistory', async () => {
      const r = await post('/crm/v3/objects/contacts/batch/read', {
        idProperty: 'email',
        properties: ['email'],
        inputs: [{ id: 'x@example.com' }],
      });
      assert.equal(r.status, 400);
      assert.equal(r.data.category, 'VALIDATION_ERROR');
      assert.match(r.data.message, /propertiesWithHistory/);
    });

    it('batch/read by email is case-insensitive; missing emails come back as 207 OBJECT_NOT_FOUND', async () => {
      const mixedId = truth.hardCases.mixedCaseHubSpot[0];
      const mixed = world.hsById.get(mixedId)!;
      const missing = truth.hubspot.missingEmails.slice(0, 2);
      const asked = [mixed.norm.toUpperCase(), ...missing];
      const r = await read(asked);
      assert.equal(r.status, 207);
      assert.equal(r.data.status, 'COMPLETE');
      assert.equal(r.data.results.length, 1);
      const res = r.data.results[0];
      assert.equal(res.id, mixedId);
      assert.equal(res.archived, false);
      assert.ok(res.createdAt && res.updatedAt);
      for (const v of Object.values(res.properties)) assert.ok(v === null || typeof v === 'string');
      assert.ok(res.properties.hs_email_optout === 'true' || res.properties.hs_email_optout === 'false');
      assert.equal(res.properties.email, mixed.props.email, 'the stored (mixed-case) value comes back as is');
      assert.equal(r.data.numErrors, 1);
      const err = r.data.errors[0];
      assert.equal(err.status, 'error');
      assert.equal(err.category, 'OBJECT_NOT_FOUND');
      assert.equal(typeof err.message, 'string');
      assert.deepEqual(err.context.ids.sort(), missing.sort());
      const all = await read([mixed.norm]);
      assert.equal(all.status, 200);
      assert.equal(all.data.errors, undefined);
      // Case is ignored, surrounding whitespace is not: callers must trim.
      const padded = await read([` ${mixed.norm} `]);
      assert.equal(padded.status, 207);
      assert.deepEqual(padded.data.errors[0].context.ids, [` ${mixed.norm} `]);
    });

    it('batch/read caps inputs at 100 and returns property history when asked', async () => {
      const many = await read(Array.from({ length: 101 }, (_, i) => `x${i}@example.com`));
      assert.equal(many.status, 400);
      const h = world.data.hubspot[0];
      const r = await read([h.norm], { propertiesWithHistory: ['hs_email_optout'] });
      assert.ok(Array.isArray(r.data.results[0].propertiesWithHistory.hs_email_optout));
    });

    it('hs_email_optout cannot be written through batch/update; unknown properties fail too', async () => {
      const { id } = fresh();
      const ro = await post('/crm/v3/objects/contacts/batch/update', {
        inputs: [{ id, properties: { hs_email_optout: 'true' } }],
      });
      assert.equal(ro.status, 400);
      assert.equal(ro.data.category, 'VALIDATION_ERROR');
      assert.match(ro.data.message, /READ_ONLY_VALUE/);
      assert.equal(ro.data.errors[0].code, 'READ_ONLY_VALUE');
      assert.equal(world.hsById.get(id)!.props.hs_email_optout, 'false');
      const unknown = await post('/crm/v3/objects/contacts/batch/update', {
        inputs: [{ id, properties: { no_such_prop: 'x' } }],
      });
      assert.equal(unknown.status, 400);
      assert.match(unknown.data.message, /PROPERTY_DOESNT_EXIST/);
    });

    it('batch/update writes custom properties; unknown ids give 207', async () => {
      const { id } = fresh();
      const r = await post('/crm/v3/objects/contacts/batch/update', {
        inputs: [
          { id, properties: { cc_optout_date: '2025-05-30T10:00:00Z', cc_optout_source: 'Contact' } },
          { id: '999999999', properties: { cc_optout_source: 'Contact' } },
        ],
      });
      assert.equal(r.status, 207);
      assert.equal(r.data.results[0].id, id);
      assert.equal(r.data.results[0].properties.cc_optout_source, 'Contact');
      assert.deepEqual(r.data.errors[0].context.ids, ['999999999']);
      assert.equal(world.hsById.get(id)!.props.cc_optout_source, 'Contact');
      assert.equal(world.hsById.get(id)!.props.hs_email_optout, 'false', 'a custom property suppresses nothing');
      const dup = await post('/crm/v3/objects/contacts/batch/update', {
        inputs: [
          { id, properties: {} },
          { id, properties: {} },
        ],
      });
      assert.equal(dup.status, 400);
    });

    it('GET /crm/v3/properties/contacts/{name}: hs_email_optout is read-only', async () => {
      const p = await get('/crm/v3/properties/contacts/hs_email_optout');
      assert.equal(p.status, 200);
      assert.equal(p.data.modificationMetadata.readOnlyValue, true);
      const c = await get('/crm/v3/properties/contacts/cc_optout_date');
      assert.equal(c.data.modificationMetadata.readOnlyValue, false);
      const nf = await get('/crm/v3/properties/contacts/nope');
      assert.equal(nf.status, 404);
      assert.equal(nf.data.category, 'OBJECT_NOT_FOUND');
    });
  });

  describe('communication preferences', () => {
    it('v4 unsubscribe-all flips hs_email_optout to "true"', async () => {
      const { id, email } = fresh();
      const noChannel = await post(
        `/communication-preferences/v4/statuses/${encodeURIComponent(email)}/unsubscribe-all`,
        {},
      );
      assert.equal(noChannel.status, 400);
      const r = await post(
        `/communication-preferences/v4/statuses/${encodeURIComponent(email.toUpperCase())}/unsubscribe-all?channel=EMAIL`,
        {},
      );
      assert.equal(r.status, 200, JSON.stringify(r.data));
      assert.equal(r.data.status, 'COMPLETE');
      assert.ok(r.data.results.every((s: { status: string }) => s.status === 'UNSUBSCRIBED'));
      assert.equal(r.data.results[0].setStatusSuccessReason, 'UNSUBSCRIBE_FROM_ALL_OCCURRED');
      const after = await read([email]);
      assert.equal(after.data.results[0].properties.hs_email_optout, 'true');
      assert.equal(world.hsById.get(id)!.props.hs_email_optout, 'true');
      const again = await post(
        `/communication-preferences/v4/statuses/${encodeURIComponent(email)}/unsubscribe-all?channel=EMAIL`,
        {},
      );
      assert.equal(again.data.results[0].setStatusSuccessReason, 'NO_STATUS_CHANGE');
      assert.equal(world.hsWrites.get(id), 2, 'each call counts as a write');
      const wide = await get(
        `/communication-preferences/v4/statuses/${encodeURIComponent(email)}/unsubscribe-all?channel=EMAIL`,
      );
      assert.equal(wide.data.results[0].wideStatusType, 'PORTAL_WIDE');
      const v3 = await get(`/communication-preferences/v3/status/email/${encodeURIComponent(email)}`);
      assert.equal(v3.data.recipient, email);
      assert.ok(
        v3.data.subscriptionStatuses.every(
          (s: { status: string; sourceOfStatus: string }) =>
            s.status === 'NOT_SUBSCRIBED' && s.sourceOfStatus === 'PORTAL_WIDE_STATUS',
        ),
      );
    });

    it('batch unsubscribe-all works, and answers 403 when the portal lacks Enterprise (batchAllowed: false)', async () => {
      const a = fresh();
      const b = fresh();
      const missing = truth.hubspot.missingEmails[0];
      const r = await post('/communication-preferences/v4/statuses/batch/unsubscribe-all?channel=EMAIL', {
        inputs: [a.email, b.email, missing, 'not-an-email'],
      });
      assert.equal(r.status, 200);
      assert.equal(r.data.results.length, 3);
      assert.equal(r.data.numErrors, 1);
      assert.equal(world.hsById.get(a.id)!.props.hs_email_optout, 'true');
      assert.equal(world.hsById.get(b.id)!.props.hs_email_optout, 'true');
      assert.equal(world.hsOrphanStatusWrites.get(missing), 1, 'an email without a contact is recorded apart');
      const c = fresh();
      const viaHttp = await axios.post(`${emu.origin}/__emulator/faults`, { batchAllowed: false }, any);
      assert.equal(viaHttp.status, 200);
      const denied = await post('/communication-preferences/v4/statuses/batch/unsubscribe-all?channel=EMAIL', {
        inputs: [c.email],
      });
      assert.equal(denied.status, 403);
      assert.equal(denied.data.category, 'MISSING_SCOPES');
      assert.equal(world.hsById.get(c.id)!.props.hs_email_optout, 'false');
      const single = await post(
        `/communication-preferences/v4/statuses/${encodeURIComponent(c.email)}/unsubscribe-all?channel=EMAIL`,
        {},
      );
      assert.equal(single.status, 200, 'per-email fallback works on any tier');
    });

    it('definitions (v4 and v3) and v4 batch/write with the legal-basis knob', async () => {
      const d4 = await get('/communication-preferences/v4/definitions');
      assert.equal(d4.status, 200);
      const subId = Number(d4.data.results[0].id);
      const d3 = await get('/communication-preferences/v3/definitions');
      assert.equal(d3.data.subscriptionDefinitions.length, d4.data.results.length);
      const { email } = fresh();
      emu.setKnobs({ requireLegalBasis: true });
      const input = { subscriberIdString: email, subscriptionId: subId, statusState: 'UNSUBSCRIBED', channel: 'EMAIL' };
      const noBasis = await post('/communication-preferences/v4/statuses/batch/write', { inputs: [input] });
      assert.equal(noBasis.status, 400);
      assert.match(noBasis.data.message, /[Ll]egal basis/);
      const ok = await post('/communication-preferences/v4/statuses/batch/write', {
        inputs: [
          {
            ...input,
            legalBasis: 'LEGITIMATE_INTEREST_CLIENT',
            legalBasisExplanation: 'Opted out in Constant Contact',
          },
        ],
      });
      assert.equal(ok.status, 200, JSON.stringify(ok.data));
      assert.equal(ok.data.results[0].status, 'UNSUBSCRIBED');
      assert.equal(ok.data.results[0].subscriptionId, subId);
      const st = await post('/communication-preferences/v4/statuses/batch/read?channel=EMAIL', { inputs: [email] });
      const one = st.data.results[0].statuses.find((s: { subscriptionId: number }) => s.subscriptionId === subId);
      assert.equal(one.status, 'UNSUBSCRIBED');
      assert.equal(one.legalBasis, 'LEGITIMATE_INTEREST_CLIENT');
    });

    it('v3 unsubscribe: one subscription, legal basis knob, already-unsubscribed answered 400', async () => {
      const { id, email } = fresh();
      emu.setKnobs({ requireLegalBasis: true });
      const noBasis = await post('/communication-preferences/v3/unsubscribe', {
        emailAddress: email,
        subscriptionId: '1001',
      });
      assert.equal(noBasis.status, 400);
      const ok = await post('/communication-preferences/v3/unsubscribe', {
        emailAddress: email,
        subscriptionId: '1001',
        legalBasis: 'NON_GDPR',
        legalBasisExplanation: 'CC opt-out',
      });
      assert.equal(ok.status, 200, JSON.stringify(ok.data));
      assert.equal(ok.data.status, 'NOT_SUBSCRIBED');
      assert.equal(
        world.hsById.get(id)!.props.hs_email_optout,
        'false',
        'one subscription is not "unsubscribed from all"',
      );
      const again = await post('/communication-preferences/v3/unsubscribe', {
        emailAddress: email,
        subscriptionId: '1001',
        legalBasis: 'NON_GDPR',
        legalBasisExplanation: 'CC opt-out',
      });
      assert.equal(again.status, 400);
      assert.match(again.data.message, /already unsubscribed/);
    });
  });

  describe('limits, auth and faults', () => {
    it('rolling 10-second limit: rate headers on every response, 429 TEN_SECONDLY_ROLLING', async () => {
      emu.setKnobs({ tenSecondLimit: 5 });
      const rs: AxiosResponse[] = [];
      for (let i = 0; i < 7; i++) rs.push(await get('/communication-preferences/v4/definitions'));
      assert.deepEqual(
        rs.map((r) => r.status),
        [200, 200, 200, 200, 200, 429, 429],
      );
      for (const r of rs) {
        assert.equal(r.headers['x-hubspot-ratelimit-max'], '5');
        assert.ok(r.headers['x-hubspot-ratelimit-remaining'] !== undefined);
        assert.equal(r.headers['x-hubspot-ratelimit-interval-milliseconds'], '10000');
      }
      assert.equal(rs[4].headers['x-hubspot-ratelimit-remaining'], '0');
      const body = rs[5].data;
      assert.equal(body.status, 'error');
      assert.equal(body.errorType, 'RATE_LIMIT');
      assert.equal(body.policyName, 'TEN_SECONDLY_ROLLING');
      assert.ok(body.correlationId && body.message);
    });

    it('daily limit: 429 policyName DAILY', async () => {
      emu.setKnobs({ dailyLimit: 10, dailyUsed: 10 });
      const r = await get('/communication-preferences/v4/definitions');
      assert.equal(r.status, 429);
      assert.equal(r.data.policyName, 'DAILY');
      emu.setKnobs({ dailyLimit: 250_000 });
    });

    it('OAuth: refresh, token info, expiry -> EXPIRED_AUTHENTICATION', async () => {
      const c = emu.connection();
      const t = await axios.post(
        `${emu.origin}/oauth/v1/token`,
        new URLSearchParams({
          grant_type: 'refresh_token',
          client_id: c.clientId,
          client_secret: c.clientSecret,
          refresh_token: c.refreshToken,
        }).toString(),
        {
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
          ...any,
        },
      );
      assert.equal(t.status, 200);
      assert.equal(t.data.refresh_token, c.refreshToken);
      const oauth = t.data.access_token as string;
      assert.equal((await get('/communication-preferences/v4/definitions', oauth)).status, 200);
      const info = await axios.get(`${emu.origin}/oauth/v1/access-tokens/${oauth}`, any);
      assert.ok(info.data.scopes.includes('crm.objects.contacts.read'));
      const pinfo = await axios.post(
        `${emu.origin}/oauth/v2/private-apps/get/access-token-info`,
        { tokenKey: token },
        any,
      );
      assert.ok(pinfo.data.scopes.includes('communication_preferences.read_write'));
      const bad = await axios.post(
        `${emu.origin}/oauth/v1/token`,
        new URLSearchParams({
          grant_type: 'refresh_token',
          client_id: c.clientId,
          client_secret: c.clientSecret,
          refresh_token: 'nope',
        }).toString(),
        { headers: { 'content-type': 'application/x-www-form-urlencoded' }, ...any },
      );
      assert.equal(bad.status, 400);
      assert.equal(bad.data.status, 'BAD_REFRESH_TOKEN');
      emu.expireTokens();
      const exp = await get('/communication-preferences/v4/definitions', oauth);
      assert.equal(exp.status, 401);
      assert.equal(exp.data.category, 'EXPIRED_AUTHENTICATION');
      assert.equal(
        (await get('/communication-preferences/v4/definitions')).status,
        200,
        'private app tokens do not expire',
      );
    });

    it('missing scopes: 403 MISSING_SCOPES', async () => {
      const narrow = await startHubSpot({ world, server: { scopes: ['crm.objects.contacts.read'] } });
      try {
        const r = await axios.post(
          `${narrow.origin}/communication-preferences/v4/statuses/a%40example.com/unsubscribe-all?channel=EMAIL`,
          {},
          { headers: { authorization: `Bearer ${narrow.connection().accessToken}` }, ...any },
        );
        assert.equal(r.status, 403);
        assert.equal(r.data.category, 'MISSING_SCOPES');
      } finally {
        await narrow.stop();
      }
    });

    it('5xx after the write: the unsubscribe happened although the client saw an error', async () => {
      const { id, email } = fresh();
      emu.setKnobs({ fail5xxRate: 1, fail5xxMode: 'after' });
      const r = await post(
        `/communication-preferences/v4/statuses/${encodeURIComponent(email)}/unsubscribe-all?channel=EMAIL`,
        {},
      );
      assert.ok(r.status >= 500);
      assert.equal(r.data.status, 'error');
      assert.equal(world.hsById.get(id)!.props.hs_email_optout, 'true');
      emu.setKnobs({ fail5xxRate: 1, fail5xxMode: 'before' });
      const g = fresh();
      const r2 = await post(
        `/communication-preferences/v4/statuses/${encodeURIComponent(g.email)}/unsubscribe-all?channel=EMAIL`,
        {},
      );
      assert.ok(r2.status >= 500);
      assert.equal(world.hsById.get(g.id)!.props.hs_email_optout, 'false');
    });

    it('429 storm and request counts in /__emulator/state', async () => {
      await axios.post(`${emu.origin}/__emulator/reset-counts`, {}, any);
      await axios.post(`${emu.origin}/__emulator/faults`, { force429Storm: 1 }, any);
      const s = await get('/communication-preferences/v4/definitions');
      assert.equal(s.status, 429);
      assert.equal(s.data.policyName, 'TEN_SECONDLY_ROLLING');
      await get('/communication-preferences/v4/definitions');
      const st = await axios.get(`${emu.origin}/__emulator/state`, any);
      assert.deepEqual(st.data.requests['GET /communication-preferences/v4/definitions'], {
        total: 2,
        byStatus: { '200': 1, '429': 1 },
      });
      assert.ok(Array.isArray(st.data.hubspot.contacts));
      assert.ok(st.data.truth.hubspot.toSuppress.length > 0);
    });
  });

  it('works with @hubspot/api-client 13 (batch read 207, apiRequest for v4)', async () => {
    const client = new Client({ accessToken: token, basePath: emu.origin });
    const { email, id } = fresh();
    const missing = truth.hubspot.missingEmails[1];
    const res = await client.crm.contacts.batchApi.read({
      idProperty: 'email',
      inputs: [{ id: email }, { id: missing }],
      properties: ['email', 'hs_email_optout'],
      propertiesWithHistory: [],
    });
    assert.equal(res.results.length, 1);
    assert.equal(res.results[0].id, id);
    const withErrors = res as unknown as { numErrors?: number; errors?: Array<{ category: string }> };
    assert.equal(withErrors.numErrors, 1);
    const r = await client.apiRequest({
      method: 'POST',
      path: `/communication-preferences/v4/statuses/${encodeURIComponent(email)}/unsubscribe-all`,
      qs: { channel: 'EMAIL' },
    });
    assert.equal(r.status, 200);
    assert.equal(world.hsById.get(id)!.props.hs_email_optout, 'true');
  });
});
