/**
 * The HubSpot emulator on HubSpot's 2026 platform (issue 9, deliverable 5): date-versioned paths with the
 * numeric ones counted as legacy, Service Keys, seeded secondary addresses (hs_additional_emails) with a
 * ground truth that requires them unsubscribed, and CRM search with its filter limits, paging, result cap
 * and own 5 requests/s limit. Driven with axios against the emulator on 127.0.0.1.
 */
import { strict as assert } from 'assert';
import axios, { AxiosResponse } from 'axios';
import {
  GroundTruth,
  HubSpotEmulator,
  World,
  generateDataset,
  splitAdditionalEmails,
  startHubSpot,
} from '../../../src/emulators';

const ANCHOR = '2025-06-01T12:00:00Z';
const any = { validateStatus: () => true } as const;
const FAST = { tenSecondLimit: 100_000, searchPerSecondLimit: 100_000 };

describe('emulator: HubSpot 2026 platform', () => {
  let emu: HubSpotEmulator;
  let world: World;
  let truth: GroundTruth;
  let token: string;
  let serviceKey: string;

  const post = (path: string, body: unknown, t = token): Promise<AxiosResponse> =>
    axios.post(`${emu.origin}${path}`, body, { headers: { authorization: `Bearer ${t}` }, ...any });
  const get = (path: string, t = token): Promise<AxiosResponse> =>
    axios.get(`${emu.origin}${path}`, { headers: { authorization: `Bearer ${t}` }, ...any });
  const form = (path: string, f: Record<string, string>): Promise<AxiosResponse> =>
    axios.post(`${emu.origin}${path}`, new URLSearchParams(f).toString(), {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      ...any,
    });
  const search = (body: unknown, t = token, version = '2026-09'): Promise<AxiosResponse> =>
    post(`/crm/objects/${version}/contacts/search`, body, t);
  const state = async (): Promise<Record<string, any>> =>
    (await axios.get(`${emu.origin}/__emulator/state?summary=1`)).data;
  /** A secondary-only opted-out address not unsubscribed yet, not used by another test. */
  const freshSecondary = (() => {
    let i = 0;
    return (): { email: string; contactId: string } => {
      const m = truth.hubspot.secondaryMatches.filter((x) => !x.alreadyUnsubscribed)[i++];
      assert.ok(m, 'enough secondary-only opt-outs in the dataset');
      return m;
    };
  })();

  before(async () => {
    emu = await startHubSpot({ seed: 21, contacts: 2000, anchor: ANCHOR, server: { knobs: FAST } });
    world = emu.world;
    truth = world.truth();
    token = emu.connection().accessToken;
    serviceKey = emu.connection().serviceKey;
  });
  after(() => emu.stop());
  afterEach(() => {
    emu.setKnobs({ ...FAST, datedMultiStatus: true, searchResultCap: 10_000, force429Storm: 0 });
  });

  describe('seeded secondary addresses and the ground truth', () => {
    it('contacts hold secondary addresses in hs_additional_emails (";"-separated, spaces, mixed case), unique across the portal', () => {
      const holders = world.data.hubspot.filter((h) => h.props.hs_additional_emails);
      assert.ok(holders.length > 20, `${holders.length} contacts with secondary addresses`);
      const values = holders.map((h) => h.props.hs_additional_emails!);
      assert.ok(
        values.some((v) => v.includes(';')),
        'some hold several',
      );
      assert.ok(
        values.some((v) => /; /.test(v)),
        'some with a space after the separator',
      );
      assert.ok(
        values.some((v) => v !== v.toLowerCase()),
        'some in mixed case',
      );
      const primaries = new Set(world.data.hubspot.map((h) => h.norm));
      const all = holders.flatMap((h) => splitAdditionalEmails(h.props.hs_additional_emails));
      assert.equal(new Set(all).size, all.length, 'no secondary address twice');
      for (const e of all) assert.ok(!primaries.has(e), `${e} is nobody's primary address`);
      assert.deepEqual(all.sort(), world.data.hubspotAdditional.map((a) => a.norm).sort());
    });

    it('some opted-out Constant Contact addresses are ONLY a secondary address, and the truth requires them unsubscribed', () => {
      const m = truth.hubspot.secondaryMatches;
      assert.ok(m.length >= 3, `${m.length} secondary-only opt-outs`);
      assert.deepEqual(
        truth.hardCases.hubspotSecondaryOnly,
        m.map((x) => x.email),
      );
      for (const x of m) {
        assert.ok(truth.optedOutEmails.includes(x.email));
        assert.ok(!world.hsByNorm.has(x.email), 'not a primary address');
        const holder = world.hsById.get(x.contactId)!;
        assert.ok(splitAdditionalEmails(holder.props.hs_additional_emails).includes(x.email));
        assert.ok(
          truth.hubspot.untouched.includes(holder.id) ||
            truth.hubspot.toSuppress.includes(holder.id) ||
            truth.hubspot.alreadySuppressed.includes(holder.id),
        );
        assert.ok(!truth.hubspot.missingEmails.includes(x.email), 'a secondary-only address is not "missing"');
        assert.equal(truth.hubspot.emailsToUnsubscribe.includes(x.email), !x.alreadyUnsubscribed);
      }
      assert.ok(truth.hubspot.secondaryAlreadyUnsubscribed.length > 0, 'some are unsubscribed already');
      assert.deepEqual(
        [...truth.hubspot.secondaryToUnsubscribe, ...truth.hubspot.secondaryAlreadyUnsubscribed].sort(),
        m.map((x) => x.email).sort(),
      );
      // subscribed Constant Contact addresses are held as secondary addresses too (must stay untouched)
      const optedOut = new Set(truth.optedOutEmails);
      assert.ok(world.data.hubspotAdditional.some((a) => world.ccByNorm.has(a.norm) && !optedOut.has(a.norm)));
      const v = world.verify();
      assert.equal(v.hubspot.secondary.expected, truth.hubspot.secondaryToUnsubscribe.length);
      assert.deepEqual(
        v.hubspot.secondary.notUnsubscribed,
        truth.hubspot.secondaryToUnsubscribe,
        'nothing unsubscribed yet: all missed',
      );
      assert.equal(v.hubspot.ok, false);
    });

    it('is deterministic, and even a minimal dataset holds a secondary-only opt-out', () => {
      const a = generateDataset({ seed: 8, contacts: 500, anchor: ANCHOR });
      const b = generateDataset({ seed: 8, contacts: 500, anchor: ANCHOR });
      assert.deepEqual(a.hubspotAdditional, b.hubspotAdditional);
      assert.deepEqual(a.hubspot, b.hubspot);
      const tiny = new World({ seed: 99, contacts: 60, anchor: ANCHOR }).truth();
      assert.ok(tiny.hubspot.secondaryToUnsubscribe.length > 0 && tiny.hubspot.secondaryAlreadyUnsubscribed.length > 0);
    });

    it('addOptOuts({hubspot: "secondary"}) and addHubSpotAdditionalEmail add secondary-only opt-outs at run time', () => {
      const w = new World({ seed: 5, contacts: 200, anchor: ANCHOR });
      const [a] = w.addOptOuts([{ email: 'Late.Secondary@Example.org', hubspot: 'secondary' }]);
      const t = w.truth();
      assert.ok(t.hubspot.secondaryToUnsubscribe.includes(a.email));
      assert.ok(!w.hsByNorm.has(a.email));
      const holder = w.hsByAdditional.get(a.email)!.contact;
      assert.equal(holder.props.hs_additional_emails, 'Late.Secondary@Example.org');
      assert.throws(() => w.addHubSpotAdditionalEmail(holder.id, holder.norm), /already belongs/);
    });
  });

  describe('date-versioned paths; numeric ones logged as legacy', () => {
    it('2026-09 and 2026-03 answer batch read (207 for missing), properties, definitions, statuses and OAuth; no legacy call counted', async () => {
      await axios.post(`${emu.origin}/__emulator/reset-counts`);
      const id = truth.hubspot.toSuppress[0];
      const email = world.hsById.get(id)!.norm;
      for (const v of ['2026-09', '2026-03']) {
        const r = await post(`/crm/objects/${v}/contacts/batch/read`, {
          idProperty: 'email',
          properties: ['email', 'hs_email_optout', 'hs_additional_emails'],
          propertiesWithHistory: [],
          inputs: [{ id: email }, { id: 'nobody@nowhere.example' }],
        });
        assert.equal(r.status, 207, v);
        assert.equal(r.data.results[0].id, id);
        assert.equal(r.data.errors[0].category, 'OBJECT_NOT_FOUND');
        assert.deepEqual(r.data.errors[0].context.ids, ['nobody@nowhere.example']);
        const props = await get(`/crm/properties/${v}/contacts/hs_additional_emails`);
        assert.equal(props.status, 200);
        assert.equal(props.data.modificationMetadata.readOnlyValue, true);
        const defs = await get(`/communication-preferences/${v}/definitions`);
        assert.equal(defs.status, 200);
        assert.ok(defs.data.results.length > 0);
        const st = await post(`/communication-preferences/${v}/statuses/batch/read?channel=EMAIL`, { inputs: [email] });
        assert.equal(st.status, 200);
        assert.equal(st.data.results[0].subscriberIdString, email);
        const v3 = await get(`/communication-preferences/${v}/status/email/${encodeURIComponent(email)}`);
        assert.equal(v3.status, 200);
        assert.equal(v3.data.recipient, email);
        const tok = await form(`/oauth/${v}/token`, {
          grant_type: 'refresh_token',
          client_id: emu.clientId,
          client_secret: emu.clientSecret,
          refresh_token: emu.refreshToken,
        });
        assert.equal(tok.status, 200);
        const intro = await form(`/oauth/${v}/token/introspect`, {
          client_id: emu.clientId,
          client_secret: emu.clientSecret,
          token: tok.data.access_token,
        });
        assert.equal(intro.status, 200);
        assert.equal(intro.data.active, true);
        assert.equal(intro.data.hub_id, emu.connection().portalId);
        const inactive = await form(`/oauth/${v}/token/introspect`, {
          client_id: emu.clientId,
          client_secret: emu.clientSecret,
          token: serviceKey,
        });
        assert.equal(inactive.data.active, false, 'a Service Key is no OAuth token');
        const withToken = await post(
          `/crm/objects/${v}/contacts/batch/read`,
          { idProperty: 'email', properties: ['email'], propertiesWithHistory: [], inputs: [{ id: email }] },
          tok.data.access_token,
        );
        assert.equal(withToken.status, 200);
      }
      const s = await state();
      assert.deepEqual(s.legacyCalls, { count: 0, byEndpoint: {}, paths: [] });
      assert.equal(emu.legacyCallCount(), 0);
    });

    it('numeric-version calls (v1-v4, even unmatched ones) still work and are counted in legacyCalls; reset-counts clears them', async () => {
      await axios.post(`${emu.origin}/__emulator/reset-counts`);
      const email = world.hsById.get(truth.hubspot.toSuppress[1])!.norm;
      const r = await post('/crm/v3/objects/contacts/batch/read', {
        idProperty: 'email',
        properties: ['email'],
        propertiesWithHistory: [],
        inputs: [{ id: email }],
      });
      assert.equal(r.status, 200);
      assert.equal((await get(`/communication-preferences/v4/statuses/${email}?channel=EMAIL`)).status, 200);
      assert.equal(
        (
          await form('/oauth/v1/token', {
            grant_type: 'refresh_token',
            client_id: emu.clientId,
            client_secret: emu.clientSecret,
            refresh_token: emu.refreshToken,
          })
        ).status,
        200,
      );
      assert.equal((await post('/oauth/v2/private-apps/get/access-token-info', { tokenKey: token })).status, 200);
      assert.equal((await get('/crm/v4/objects/contacts/1/associations/companies')).status, 404);
      const s = await state();
      assert.equal(s.legacyCalls.count, 5);
      assert.equal(s.legacyCalls.byEndpoint['POST /crm/v3/objects/contacts/batch/read'], 1);
      assert.equal(s.legacyCalls.byEndpoint['GET /communication-preferences/v4/statuses/{subscriberIdString}'], 1);
      assert.equal(s.legacyCalls.byEndpoint['POST /oauth/v1/token'], 1);
      assert.equal(s.legacyCalls.byEndpoint['POST /oauth/v2/private-apps/get/access-token-info'], 1);
      assert.equal(s.legacyCalls.byEndpoint['GET (unmatched)'], 1);
      assert.ok(s.legacyCalls.paths.includes(`GET /communication-preferences/v4/statuses/${email}`));
      await axios.post(`${emu.origin}/__emulator/reset-counts`);
      assert.equal((await state()).legacyCalls.count, 0);
    });

    it('a secondary address unsubscribed through 2026-09 changes that address only; the holder keeps its hs_email_optout', async () => {
      const m = freshSecondary();
      const holder = world.hsById.get(m.contactId)!;
      const before = holder.props.hs_email_optout;
      const r = await post(`/communication-preferences/2026-09/statuses/${m.email}/unsubscribe-all?channel=EMAIL`, {});
      assert.equal(r.status, 200);
      assert.ok(r.data.results.every((s: { status: string }) => s.status === 'UNSUBSCRIBED'));
      assert.equal(holder.props.hs_email_optout, before, 'the primary address keeps its status');
      assert.equal(world.hsAddressUnsubscribed(m.email), true);
      assert.equal(world.hsSecondaryStatusWrites.get(m.email), 1);
      assert.equal(world.hsOrphanStatusWrites.has(m.email), false, 'not an orphan: a contact holds it');
      assert.equal(world.hsWrites.get(holder.id) ?? 0, 0, 'no write counted on the holder');
      const v = world.verify();
      assert.ok(!v.hubspot.secondary.notUnsubscribed.includes(m.email));
      // an already-unsubscribed opted-out secondary address may be written (NO_STATUS_CHANGE); a subscribed one may not
      const already = truth.hubspot.secondaryAlreadyUnsubscribed[0];
      const again = await post(
        `/communication-preferences/2026-09/statuses/${already}/unsubscribe-all?channel=EMAIL`,
        {},
      );
      assert.equal(again.data.results[0].setStatusSuccessReason, 'NO_STATUS_CHANGE');
      const optedOut = new Set(truth.optedOutEmails);
      const subscribed = world.data.hubspotAdditional.find((a) => !optedOut.has(a.norm))!.norm;
      await post(`/communication-preferences/2026-09/statuses/${subscribed}/unsubscribe-all?channel=EMAIL`, {});
      assert.deepEqual(world.verify().hubspot.secondary.unnecessaryWrites, [subscribed]);
      world.hubspotStatuses.delete(subscribed);
      world.hsSecondaryStatusWrites.delete(subscribed);
      // batch read by email still does not find a secondary address
      const br = await post('/crm/objects/2026-09/contacts/batch/read', {
        idProperty: 'email',
        properties: ['email'],
        propertiesWithHistory: [],
        inputs: [{ id: m.email }],
      });
      assert.equal(br.status, 207);
      assert.deepEqual(br.data.errors[0].context.ids, [m.email]);
    });

    it('2026-09 batch unsubscribe-all and v3-style single-subscription unsubscribe; datedMultiStatus: false answers partial failures with 200', async () => {
      const a = freshSecondary();
      const b = freshSecondary();
      const r = await post('/communication-preferences/2026-09/statuses/batch/unsubscribe-all?channel=EMAIL', {
        inputs: [a.email],
      });
      assert.equal(r.status, 200);
      assert.equal(r.data.results[0].subscriberIdString, a.email);
      const sub = emu.connection().subscriptionIds[0];
      const u = await post('/communication-preferences/2026-09/unsubscribe', {
        emailAddress: b.email,
        subscriptionId: sub,
      });
      assert.equal(u.status, 200);
      assert.equal(u.data.status, 'NOT_SUBSCRIBED');
      const bad = {
        inputs: [{ subscriberIdString: b.email, channel: 'EMAIL', subscriptionId: 999, statusState: 'UNSUBSCRIBED' }],
      };
      assert.equal((await post('/communication-preferences/2026-09/statuses/batch/write', bad)).status, 207);
      const missing = {
        idProperty: 'email',
        properties: ['email'],
        propertiesWithHistory: [],
        inputs: [{ id: 'nobody@nowhere.example' }],
      };
      emu.setKnobs({ datedMultiStatus: false });
      const w = await post('/communication-preferences/2026-09/statuses/batch/write', bad);
      assert.equal(w.status, 200);
      assert.equal(w.data.numErrors, 1);
      const br = await post('/crm/objects/2026-09/contacts/batch/read', missing);
      assert.equal(br.status, 200);
      assert.equal(br.data.errors[0].category, 'OBJECT_NOT_FOUND');
      assert.equal(
        (await post('/crm/v3/objects/contacts/batch/read', missing)).status,
        207,
        'numeric versions keep 207',
      );
    });
  });

  describe('Service Keys', () => {
    it('a Service Key (Bearer) reads and writes with its scopes; the private-app token-info endpoint answers for private-app tokens only', async () => {
      const email = world.hsById.get(truth.hubspot.toSuppress[2])!.norm;
      const r = await post(
        '/crm/objects/2026-09/contacts/batch/read',
        { idProperty: 'email', properties: ['email'], propertiesWithHistory: [], inputs: [{ id: email }] },
        serviceKey,
      );
      assert.equal(r.status, 200);
      assert.equal(
        (
          await search(
            { filterGroups: [{ filters: [{ propertyName: 'email', operator: 'EQ', value: email }] }] },
            serviceKey,
          )
        ).data.total,
        1,
      );
      const info = await post('/oauth/v2/private-apps/get/access-token-info', { tokenKey: serviceKey });
      assert.equal(info.status, 401);
      assert.equal(info.data.category, 'INVALID_AUTHENTICATION');
      const pat = await post('/oauth/v2/private-apps/get/access-token-info', { tokenKey: token });
      assert.equal(pat.status, 200);
      assert.equal(pat.data.hubId, emu.connection().portalId);
      assert.equal(
        (
          await post(
            '/crm/objects/2026-09/contacts/batch/read',
            { inputs: [], properties: [], propertiesWithHistory: [] },
            'sk-na1-wrong',
          )
        ).status,
        401,
      );
    });

    it('missing scopes: 403 MISSING_SCOPES with context.missingScopes; its own ten-secondly window', async () => {
      const small = await startHubSpot({
        world,
        server: {
          serviceKey: 'sk-na1-configured',
          serviceKeyScopes: ['crm.objects.contacts.read'],
          knobs: { tenSecondLimit: 3 },
        },
      });
      try {
        const key = small.connection().serviceKey;
        assert.equal(key, 'sk-na1-configured', 'a configured key');
        assert.deepEqual(small.connection().serviceKeyScopes, ['crm.objects.contacts.read']);
        const call = (path: string, body: unknown, t = key): Promise<AxiosResponse> =>
          axios.post(`${small.origin}${path}`, body, { headers: { authorization: `Bearer ${t}` }, ...any });
        const w = await call('/communication-preferences/2026-09/statuses/batch/unsubscribe-all?channel=EMAIL', {
          inputs: ['a@example.com'],
        });
        assert.equal(w.status, 403);
        assert.equal(w.data.category, 'MISSING_SCOPES');
        assert.deepEqual(w.data.context.missingScopes, ['communication_preferences.statuses.batch.write']);
        assert.deepEqual(w.data.errors[0].context.missingScopes, ['communication_preferences.statuses.batch.write']);
        const u = await call('/crm/objects/2026-09/contacts/batch/update', { inputs: [] });
        assert.deepEqual(u.data.context.missingScopes, ['crm.objects.contacts.write']);
        // 3 requests used by this key: the 4th is limited, while the private app token has a window of its own
        const limited = await call('/crm/objects/2026-09/contacts/batch/read', {
          inputs: [],
          properties: [],
          propertiesWithHistory: [],
        });
        assert.equal(limited.status, 200);
        const over = await call('/crm/objects/2026-09/contacts/batch/read', {
          inputs: [],
          properties: [],
          propertiesWithHistory: [],
        });
        assert.equal(over.status, 429);
        assert.equal(over.data.policyName, 'TEN_SECONDLY_ROLLING');
        assert.match(over.data.groupName, /service-key/);
        const pat = await call(
          '/crm/objects/2026-09/contacts/batch/read',
          { inputs: [], properties: [], propertiesWithHistory: [] },
          small.connection().accessToken,
        );
        assert.equal(pat.status, 200);
      } finally {
        await small.stop();
      }
    });
  });

  describe('CRM search', () => {
    const filter = (propertyName: string, operator: string, v: string | string[]): Record<string, unknown> =>
      Array.isArray(v) ? { propertyName, operator, values: v } : { propertyName, operator, value: v };
    const one = (...filters: Record<string, unknown>[]): Record<string, unknown> => ({
      filterGroups: [{ filters }],
      properties: ['email', 'hs_additional_emails'],
      limit: 200,
    });

    it('EQ and IN on hs_additional_emails match any ";"-separated value (trimmed, case-insensitive); email matches the primary only', async () => {
      const holder = world.data.hubspot.find(
        (h) =>
          (h.props.hs_additional_emails ?? '').includes('; ') &&
          splitAdditionalEmails(h.props.hs_additional_emails).length >= 2,
      )!;
      assert.ok(holder, 'a contact with several secondary addresses');
      const [first, second] = splitAdditionalEmails(holder.props.hs_additional_emails);
      for (const v of ['2026-09', '2026-03']) {
        const eq = await search(one(filter('hs_additional_emails', 'EQ', second)), token, v);
        assert.equal(eq.status, 200);
        assert.equal(eq.data.total, 1);
        assert.equal(eq.data.results[0].id, holder.id);
        assert.equal(
          eq.data.results[0].properties.hs_additional_emails,
          holder.props.hs_additional_emails,
          'the stored value comes back as is',
        );
      }
      const upper = await search(one(filter('hs_additional_emails', 'EQ', first.toUpperCase())));
      assert.deepEqual(
        upper.data.results.map((r: { id: string }) => r.id),
        [holder.id],
      );
      const sec = truth.hubspot.secondaryMatches.slice(0, 4);
      const inn = await search(
        one(filter('hs_additional_emails', 'IN', [...sec.map((m) => m.email), 'nobody@nowhere.example'])),
      );
      assert.deepEqual(
        inn.data.results.map((r: { id: string }) => r.id).sort(),
        [...new Set(sec.map((m) => m.contactId))].sort(),
      );
      const byEmail = await search(one(filter('email', 'EQ', sec[0].email)));
      assert.equal(byEmail.data.total, 0, 'email matches primary addresses only');
      const primary = await search(one(filter('email', 'EQ', holder.norm)));
      assert.equal(primary.data.results[0].id, holder.id);
      // filter groups are ORed, filters ANDed
      const or = await search({
        filterGroups: [
          { filters: [filter('email', 'EQ', holder.norm)] },
          { filters: [filter('hs_additional_emails', 'EQ', sec[0].email)] },
        ],
      });
      assert.equal(or.data.total, new Set([holder.id, sec[0].contactId]).size);
      const and = await search(
        one(filter('email', 'EQ', holder.norm), filter('hs_additional_emails', 'EQ', 'nobody@nowhere.example')),
      );
      assert.equal(and.data.total, 0);
      const tokenMatch = await search(one(filter('hs_additional_emails', 'CONTAINS_TOKEN', 'secondary')));
      assert.ok(
        tokenMatch.data.total > 0 &&
          tokenMatch.data.results.every((r: { properties: { hs_additional_emails: string } }) =>
            /secondary/i.test(r.properties.hs_additional_emails),
          ),
      );
      const has = await search({
        filterGroups: [{ filters: [{ propertyName: 'hs_additional_emails', operator: 'HAS_PROPERTY' }] }],
        limit: 0,
      });
      assert.equal(has.data.total, world.data.hubspot.filter((h) => h.props.hs_additional_emails).length);
    });

    it('filter limits: at most 5 filterGroups, 6 filters per group, 18 in all, 200 per page -> 400 VALIDATION_ERROR', async () => {
      const f = filter('email', 'EQ', 'x@example.com');
      const groups = (sizes: number[]): Record<string, unknown> => ({
        filterGroups: sizes.map((n) => ({ filters: Array.from({ length: n }, () => f) })),
      });
      assert.equal((await search(groups([1, 1, 1, 1, 1]))).status, 200);
      assert.equal((await search(groups([6, 6, 6]))).status, 200, '18 filters in all are allowed');
      for (const [sizes, pattern] of [
        [[1, 1, 1, 1, 1, 1], /filter groups/i],
        [[7], /filters per group/],
        [[4, 4, 4, 4, 3], /19 in all/],
      ] as const) {
        const r = await search(groups([...sizes]));
        assert.equal(r.status, 400, JSON.stringify(sizes));
        assert.equal(r.data.status, 'error');
        assert.equal(r.data.category, 'VALIDATION_ERROR');
        assert.match(r.data.message, pattern);
        assert.ok(r.data.correlationId);
      }
      const tooMany = await search({ limit: 201 });
      assert.equal(tooMany.status, 400);
      assert.match(tooMany.data.message, /limit/);
      const badOp = await search(one({ propertyName: 'email', operator: 'LIKE', value: 'x' }));
      assert.equal(badOp.status, 400);
      const noProp = await search(one(filter('no_such_property', 'EQ', 'x')));
      assert.equal(noProp.status, 400);
      const inValues = await search(
        one(
          filter(
            'hs_additional_emails',
            'IN',
            Array.from({ length: 101 }, (_, i) => `a${i}@example.com`),
          ),
        ),
      );
      assert.equal(inValues.status, 400);
    });

    it('pages with after (limit up to 200) through every result; the 10,000-result cap', async () => {
      const all = world.data.hubspot.length;
      const seen: string[] = [];
      let after: string | undefined;
      let pages = 0;
      do {
        const r = await search({ filterGroups: [], properties: ['email'], limit: 200, ...(after ? { after } : {}) });
        assert.equal(r.status, 200);
        assert.equal(r.data.total, all);
        assert.ok(r.data.results.length <= 200);
        seen.push(...r.data.results.map((x: { id: string }) => x.id));
        after = r.data.paging?.next?.after;
        pages++;
      } while (after);
      assert.equal(pages, Math.ceil(all / 200));
      assert.deepEqual(
        seen,
        world.data.hubspot.map((h) => h.id).sort((a, b) => Number(a) - Number(b)),
      );
      const past = await search({ after: '10000', limit: 10 });
      assert.equal(past.status, 400, 'cannot page past 10,000 results');
      assert.match(past.data.message, /10000/);
      emu.setKnobs({ searchResultCap: 250 });
      const first = await search({ limit: 200 });
      assert.equal(first.data.total, all, 'total counts every match');
      const second = await search({ limit: 200, after: first.data.paging.next.after });
      assert.equal(second.data.results.length, 50);
      assert.equal(second.data.paging, undefined, 'no page beyond the cap');
    });

    it('its own limit of 5 requests/s per token: 429 SECONDLY, no rate headers, exempt from the ten-secondly window', async () => {
      emu.setKnobs({ searchPerSecondLimit: 5, tenSecondLimit: 2 });
      const rs = await Promise.all(Array.from({ length: 7 }, () => search({ limit: 1 })));
      const ok = rs.filter((r) => r.status === 200);
      const limited = rs.filter((r) => r.status === 429);
      assert.equal(ok.length, 5);
      assert.equal(limited.length, 2);
      for (const r of limited) {
        assert.equal(r.data.status, 'error');
        assert.equal(r.data.errorType, 'RATE_LIMIT');
        assert.equal(r.data.policyName, 'SECONDLY');
        assert.equal(r.headers['x-hubspot-ratelimit-max'], undefined);
      }
      assert.equal(ok[0].headers['x-hubspot-ratelimit-remaining'], undefined, 'search sends no rate headers');
      // another token has a window of its own; the ten-secondly window (2) was not used by the searches
      assert.equal((await search({ limit: 1 }, serviceKey)).status, 200);
      const read = await post('/crm/objects/2026-09/contacts/batch/read', {
        inputs: [],
        properties: [],
        propertiesWithHistory: [],
      });
      assert.equal(read.status, 200);
      assert.equal(read.headers['x-hubspot-ratelimit-max'], '2');
      await new Promise((r) => setTimeout(r, 1100));
      assert.equal((await search({ limit: 1 })).status, 200, 'the window rolls after a second');
    });
  });
});
