import { strict as assert } from 'assert';
import { createHash, randomBytes } from 'crypto';
import axios, { AxiosResponse } from 'axios';
import { ConstantContactEmulator, GroundTruth, World, startConstantContact } from '../../src/emulators';

const ANCHOR = '2025-06-01T12:00:00Z';
const DAY = 86_400_000;
const any = { validateStatus: () => true, maxRedirects: 0 } as const;

interface Contact {
  contact_id: string;
  email_address?: {
    address: string;
    permission_to_send: string;
    updated_at: string;
    opt_out_date?: string;
    opt_out_source?: string;
  };
  updated_at: string;
  deleted_at?: string;
  sms_channel?: unknown;
}
interface Page {
  contacts: Contact[];
  contacts_count?: number;
  _links?: { next?: { href: string } };
}

describe('emulator: Constant Contact', () => {
  let emu: ConstantContactEmulator;
  let world: World;
  let truth: GroundTruth;
  let refresh: string;
  let access: string;
  const basic = (): string => `Basic ${Buffer.from(`${emu.clientId}:${emu.clientSecret}`).toString('base64')}`;
  const form = { 'content-type': 'application/x-www-form-urlencoded' };

  async function tokenRequest(
    params: Record<string, string>,
    headers: Record<string, string> = { authorization: basic() },
  ): Promise<AxiosResponse> {
    return axios.post(`${emu.origin}/oauth2/default/v1/token`, new URLSearchParams(params).toString(), {
      headers: { ...form, ...headers },
      ...any,
    });
  }

  async function refreshNow(): Promise<void> {
    const r = await tokenRequest({ grant_type: 'refresh_token', refresh_token: refresh });
    assert.equal(r.status, 200, JSON.stringify(r.data));
    refresh = r.data.refresh_token;
    access = r.data.access_token;
  }

  const get = (pathAndQuery: string, token = access): Promise<AxiosResponse> =>
    axios.get(`${emu.origin}${pathAndQuery}`, { headers: { authorization: `Bearer ${token}` }, ...any });

  async function all(query: string): Promise<{ contacts: Contact[]; pages: number; hrefs: string[] }> {
    const contacts: Contact[] = [];
    const hrefs: string[] = [];
    let r = await get(`/v3/contacts?${query}`);
    let pages = 1;
    for (;;) {
      assert.equal(r.status, 200, JSON.stringify(r.data));
      const page = r.data as Page;
      contacts.push(...page.contacts);
      const href = page._links?.next?.href;
      if (!href) break;
      hrefs.push(href);
      r = await get(href);
      pages++;
    }
    return { contacts, pages, hrefs };
  }

  before(async () => {
    emu = await startConstantContact({
      seed: 21,
      contacts: 800,
      anchor: ANCHOR,
      server: { knobs: { perSecondLimit: 10_000, tokenRatePerSecond: 10_000 } },
    });
    world = emu.world;
    truth = world.truth();
    refresh = emu.connection().refreshToken;
    await refreshNow();
  });
  after(() => emu.stop());
  afterEach(() => {
    emu.setKnobs({
      perSecondLimit: 10_000,
      tokenRatePerSecond: 10_000,
      dailyQuota: 10_000,
      force429Storm: 0,
      fail5xxRate: 0,
      throttleBodyShape: 'array',
      unsubscribedIncludesDeleted: false,
      dailyUsed: 0,
    });
  });

  it('exposes the connection: /v3 API base, OAuth base, client and initial refresh token', () => {
    const c = emu.connection();
    assert.match(c.origin, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(c.apiBaseUrl, `${c.origin}/v3`);
    assert.equal(c.authBaseUrl, `${c.origin}/oauth2/default/v1`);
    assert.ok(c.clientId && c.clientSecret && c.refreshToken);
  });

  describe('OAuth', () => {
    it('rotates refresh tokens: the new one works, the old one gets 400 invalid_grant', async () => {
      const old = refresh;
      await refreshNow();
      assert.notEqual(refresh, old);
      const again = await tokenRequest({ grant_type: 'refresh_token', refresh_token: old });
      assert.equal(again.status, 400);
      assert.equal(again.data.error, 'invalid_grant');
      assert.equal(emu.isRefreshTokenValid(old), false);
      assert.equal(emu.isRefreshTokenValid(refresh), true);
      const r = await get('/v3/contacts?limit=1');
      assert.equal(r.status, 200);
    });

    it('returns the same refresh token when rotation is off', async () => {
      emu.setKnobs({ rotateRefreshTokens: false });
      try {
        const r = await tokenRequest({ grant_type: 'refresh_token', refresh_token: refresh });
        assert.equal(r.status, 200);
        assert.equal(r.data.refresh_token, refresh);
        assert.equal(r.data.expires_in, 86_400);
        assert.equal(r.data.token_type, 'Bearer');
        access = r.data.access_token;
      } finally {
        emu.setKnobs({ rotateRefreshTokens: true });
      }
    });

    it('rejects a wrong client secret, a JSON body and unknown grants', async () => {
      const bad = await tokenRequest(
        { grant_type: 'refresh_token', refresh_token: refresh },
        { authorization: `Basic ${Buffer.from(`${emu.clientId}:nope`).toString('base64')}` },
      );
      assert.equal(bad.status, 401);
      assert.equal(bad.data.error, 'invalid_client');
      const js = await axios.post(
        `${emu.origin}/oauth2/default/v1/token`,
        { grant_type: 'refresh_token' },
        { headers: { authorization: basic() }, ...any },
      );
      assert.equal(js.status, 400);
      const g = await tokenRequest({ grant_type: 'password' });
      assert.equal(g.data.error, 'unsupported_grant_type');
    });

    it('401 is a single object; expired tokens recover by refreshing', async () => {
      const none = await axios.get(`${emu.origin}/v3/contacts`, any);
      assert.equal(none.status, 401);
      assert.ok(!Array.isArray(none.data));
      assert.equal(none.data.error_key, 'unauthorized');
      assert.equal(typeof none.data.error_message, 'string');
      emu.setKnobs({ expireTokens: true });
      const expired = await get('/v3/contacts?limit=1');
      assert.equal(expired.status, 401);
      assert.deepEqual(Object.keys(expired.data).sort(), ['error_key', 'error_message']);
      await refreshNow();
      assert.equal((await get('/v3/contacts?limit=1')).status, 200);
    });

    it('access tokens expire after their TTL', async () => {
      let now = Date.parse('2025-06-02T00:00:00Z');
      const e2 = await startConstantContact({
        seed: 2,
        contacts: 100,
        anchor: ANCHOR,
        now: () => now,
        server: { knobs: { accessTokenTtlSec: 60 } },
      });
      try {
        const r = await axios.post(
          `${e2.origin}/oauth2/default/v1/token`,
          new URLSearchParams({ grant_type: 'refresh_token', refresh_token: e2.connection().refreshToken }).toString(),
          {
            headers: {
              ...form,
              authorization: `Basic ${Buffer.from(`${e2.clientId}:${e2.clientSecret}`).toString('base64')}`,
            },
            ...any,
          },
        );
        assert.equal(r.data.expires_in, 60);
        const ok = await axios.get(`${e2.origin}/v3/contacts?limit=1`, {
          headers: { authorization: `Bearer ${r.data.access_token}` },
          ...any,
        });
        assert.equal(ok.status, 200);
        now += 61_000;
        const late = await axios.get(`${e2.origin}/v3/contacts?limit=1`, {
          headers: { authorization: `Bearer ${r.data.access_token}` },
          ...any,
        });
        assert.equal(late.status, 401);
        assert.equal(late.data.error_key, 'unauthorized');
      } finally {
        await e2.stop();
      }
    });

    it('authorization code with PKCE (S256): redirect with code and state, verifier checked, code single-use', async () => {
      const verifier = randomBytes(32).toString('base64url');
      const challenge = createHash('sha256').update(verifier).digest('base64url');
      const redirect = 'http://127.0.0.1:9/callback';
      const q = new URLSearchParams({
        client_id: emu.clientId,
        redirect_uri: redirect,
        response_type: 'code',
        scope: 'contact_data offline_access',
        state: 'xyz',
        code_challenge: challenge,
        code_challenge_method: 'S256',
      });
      const a = await axios.get(`${emu.origin}/oauth2/default/v1/authorize?${q}`, any);
      assert.equal(a.status, 302);
      const loc = new URL(a.headers.location as string);
      assert.equal(`${loc.origin}${loc.pathname}`, redirect);
      assert.equal(loc.searchParams.get('state'), 'xyz');
      const code = loc.searchParams.get('code')!;
      const wrong = await tokenRequest(
        {
          grant_type: 'authorization_code',
          code,
          redirect_uri: redirect,
          code_verifier: 'not-the-verifier',
          client_id: emu.clientId,
        },
        {},
      );
      assert.equal(wrong.status, 400);
      assert.equal(wrong.data.error, 'invalid_grant');
      // The failed attempt consumed the code (single use): start again.
      const a2 = await axios.get(`${emu.origin}/oauth2/default/v1/authorize?${q}`, any);
      const code2 = new URL(a2.headers.location as string).searchParams.get('code')!;
      const ok = await tokenRequest(
        {
          grant_type: 'authorization_code',
          code: code2,
          redirect_uri: redirect,
          code_verifier: verifier,
          client_id: emu.clientId,
        },
        {},
      );
      assert.equal(ok.status, 200, JSON.stringify(ok.data));
      assert.ok(ok.data.access_token && ok.data.refresh_token);
      const reuse = await tokenRequest(
        {
          grant_type: 'authorization_code',
          code: code2,
          redirect_uri: redirect,
          code_verifier: verifier,
          client_id: emu.clientId,
        },
        {},
      );
      assert.equal(reuse.data.error, 'invalid_grant');
    });

    it('device flow: authorization_pending, then tokens', async () => {
      const d = await axios.post(
        `${emu.origin}/oauth2/default/v1/device/authorize`,
        new URLSearchParams({ client_id: emu.clientId, scope: 'contact_data offline_access' }).toString(),
        { headers: form, ...any },
      );
      assert.equal(d.status, 200);
      assert.ok(d.data.device_code && d.data.user_code && d.data.verification_uri && d.data.interval >= 1);
      const params = {
        grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
        device_code: d.data.device_code,
        client_id: emu.clientId,
      };
      const p1 = await tokenRequest(params, {});
      assert.equal(p1.status, 400);
      assert.equal(p1.data.error, 'authorization_pending');
      const p2 = await tokenRequest(params, {});
      assert.equal(p2.status, 200, JSON.stringify(p2.data));
      assert.ok(p2.data.refresh_token);
    });

    it('token endpoint allows about one request per second', async () => {
      emu.setKnobs({ tokenRatePerSecond: 1 });
      await new Promise((r) => setTimeout(r, 2100));
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++)
        statuses.push((await tokenRequest({ grant_type: 'refresh_token', refresh_token: 'junk' })).status);
      assert.deepEqual(statuses.slice(0, 2), [400, 400]);
      assert.ok(
        statuses.slice(2).every((s) => s === 429),
        statuses.join(','),
      );
    });
  });

  describe('GET /v3/contacts', () => {
    it('returns swagger-shaped contacts, 50 by default', async () => {
      const r = await get('/v3/contacts');
      assert.equal(r.status, 200);
      const page = r.data as Page;
      assert.equal(page.contacts.length, 50);
      assert.equal(page._links?.next?.href.startsWith('/v3/contacts?cursor='), true);
      const c = page.contacts.find((x) => x.email_address)!;
      assert.match(c.contact_id, /^[0-9a-f-]{36}$/);
      for (const k of ['address', 'permission_to_send', 'created_at', 'updated_at', 'opt_in_source', 'confirm_status'])
        assert.ok(k in c.email_address!, k);
      for (const k of ['first_name', 'last_name', 'create_source', 'created_at', 'updated_at']) assert.ok(k in c, k);
      assert.ok(
        page.contacts.every((x) => x.deleted_at === undefined),
        'no status = only contacts that are not deleted',
      );
    });

    it('answers invalid parameters with an ARRAY of errors', async () => {
      for (const q of [
        'limit=0',
        'limit=501',
        'limit=abc',
        'status=gone',
        'updated_after=yesterday',
        'include=everything',
        'cursor=@@@',
      ]) {
        const r = await get(`/v3/contacts?${q}`);
        assert.equal(r.status, 400, q);
        assert.ok(Array.isArray(r.data), q);
        assert.equal(typeof r.data[0].error_key, 'string');
        assert.equal(typeof r.data[0].error_message, 'string');
      }
      const r500 = await get('/v3/contacts?limit=500');
      assert.equal(r500.data.contacts.length, 500);
      const nf = await get('/v3/nowhere');
      assert.equal(nf.status, 404);
      assert.ok(Array.isArray(nf.data));
    });

    it('updated_after misses the trap contact while optout_after finds it', async () => {
      const trap = truth.hardCases.recentTrap[0];
      const o = truth.optOuts.find((x) => x.contactId === trap.contactId)!;
      const since = new Date(Date.parse(o.optOutDate) - DAY).toISOString();
      const byUpdated = await all(`status=all&limit=500&updated_after=${encodeURIComponent(since)}`);
      assert.ok(
        !byUpdated.contacts.some((c) => c.contact_id === trap.contactId),
        'updated_after must miss the unsubscribe',
      );
      const byOptout = await all(`status=all&limit=500&optout_after=${encodeURIComponent(since)}`);
      const hit = byOptout.contacts.find((c) => c.contact_id === trap.contactId);
      assert.ok(hit, 'optout_after finds it');
      assert.equal(hit.email_address!.permission_to_send, 'unsubscribed');
      assert.ok(Date.parse(hit.updated_at) < Date.parse(hit.email_address!.updated_at));
      // Every trap in the window is found by optout_after and none by updated_after.
      const recent = truth.optOuts.filter((x) => x.trap && Date.parse(x.optOutDate) >= Date.parse(since));
      const found = new Set(byOptout.contacts.map((c) => c.contact_id));
      for (const x of recent) assert.ok(found.has(x.contactId));
    });

    it('opt-out bounds are inclusive', async () => {
      const o = truth.optOuts.find((x) => !x.deleted)!;
      const r = await all(
        `status=all&optout_after=${encodeURIComponent(o.optOutDate)}&optout_before=${encodeURIComponent(o.optOutDate)}`,
      );
      assert.ok(r.contacts.some((c) => c.contact_id === o.contactId));
      for (const c of r.contacts) assert.equal(c.email_address!.opt_out_date, o.optOutDate);
    });

    it('status: unsubscribed excludes deleted contacts (knob flips it), all and deleted include them', async () => {
      const deletedOptOut = truth.hardCases.unsubscribedThenDeleted[0].contactId;
      const unsub = await all('status=unsubscribed&limit=500');
      assert.equal(unsub.contacts.length, truth.counts.unsubscribedNotDeleted);
      assert.ok(unsub.contacts.every((c) => c.email_address!.permission_to_send === 'unsubscribed' && !c.deleted_at));
      assert.ok(!unsub.contacts.some((c) => c.contact_id === deletedOptOut));
      emu.setKnobs({ unsubscribedIncludesDeleted: true });
      const unsub2 = await all('status=unsubscribed&limit=500');
      assert.equal(unsub2.contacts.length, truth.counts.optedOut);
      emu.setKnobs({ unsubscribedIncludesDeleted: false });
      const everyone = await all('status=all&limit=500');
      assert.equal(everyone.contacts.length, truth.counts.contacts);
      const deleted = await all('status=deleted&limit=500');
      assert.equal(deleted.contacts.length, truth.counts.deleted);
      for (const c of deleted.contacts) assert.match(c.deleted_at!, /^\d{4}-\d{2}-\d{2}$/, 'deleted_at is a date');
      const dnu = deleted.contacts.find((c) => c.contact_id === truth.hardCases.deletedNotUnsubscribed[0].contactId)!;
      assert.notEqual(dnu.email_address!.permission_to_send, 'unsubscribed');
      assert.ok(
        dnu.email_address!.opt_out_date,
        'a deleted contact shows an opt_out_date although it never unsubscribed',
      );
    });

    it('SMS-only contacts come without email_address', async () => {
      const r = await all('status=all&limit=500');
      const sms = r.contacts.find((c) => c.contact_id === truth.hardCases.smsOnly[0].contactId)!;
      assert.equal(sms.email_address, undefined);
      assert.ok(sms.sms_channel);
      const mixed = r.contacts.find((c) => c.contact_id === truth.hardCases.mixedCaseCc[0].contactId)!;
      assert.notEqual(mixed.email_address!.address, mixed.email_address!.address.trim().toLowerCase());
    });

    it('paginates with host-relative /v3 next links whose cursor replays the filters', async () => {
      const r = await all('status=unsubscribed&limit=20&include_count=true');
      assert.ok(r.pages > 3);
      for (const h of r.hrefs) {
        assert.ok(h.startsWith('/v3/contacts?cursor='), h);
        assert.ok(!/status=|limit=/.test(h), 'the cursor is opaque');
      }
      const ids = r.contacts.map((c) => c.contact_id);
      assert.equal(new Set(ids).size, ids.length, 'no duplicates');
      assert.equal(ids.length, truth.counts.unsubscribedNotDeleted);
      assert.ok(r.contacts.every((c) => c.email_address!.permission_to_send === 'unsubscribed'));
      const first = await get('/v3/contacts?status=unsubscribed&limit=20&include_count=true');
      assert.equal(first.data.contacts_count, truth.counts.unsubscribedNotDeleted);
      assert.equal(first.data.contacts.length, 20);
      // Joining the link to the API base (…/v3) instead of the host doubles the prefix: 404.
      const doubled = await axios.get(`${emu.origin}/v3${r.hrefs[0]}`, {
        headers: { authorization: `Bearer ${access}` },
        ...any,
      });
      assert.equal(doubled.status, 404);
    });

    it('GET /v3/contacts/counts agrees with the collection', async () => {
      const r = await get('/v3/contacts/counts?include=new_subscriber');
      assert.equal(r.status, 200);
      assert.equal(r.data.unsubscribed, truth.counts.unsubscribedNotDeleted);
      assert.equal(r.data.total, truth.counts.contacts - truth.counts.deleted);
      for (const k of ['explicit', 'implicit', 'pending', 'new_subscriber']) assert.equal(typeof r.data[k], 'number');
    });

    it('sees opt-outs added at run time (also through POST /__emulator/optouts)', async () => {
      const since = new Date(Date.now() - 1000).toISOString();
      const [a] = emu.world.addOptOuts(1);
      const viaAdmin = await axios.post(`${emu.origin}/__emulator/optouts`, { count: 2 }, any);
      assert.equal(viaAdmin.status, 200);
      assert.equal(viaAdmin.data.added.length, 2);
      const r = await all(`status=all&optout_after=${encodeURIComponent(since)}`);
      const ids = r.contacts.map((c) => c.contact_id);
      for (const id of [a.contactId, ...viaAdmin.data.added.map((x: { contactId: string }) => x.contactId)])
        assert.ok(ids.includes(id));
      const u = await all(`status=all&updated_after=${encodeURIComponent(since)}`);
      assert.ok(!u.contacts.some((c) => c.contact_id === a.contactId), 'updated_after still misses them');
    });
  });

  describe('limits and faults', () => {
    it('4 requests per second: the rest get 429 throttled (array body)', async () => {
      emu.setKnobs({ perSecondLimit: 4 });
      await new Promise((r) => setTimeout(r, 1100));
      const rs = await Promise.all(Array.from({ length: 8 }, () => get('/v3/contacts?limit=1')));
      const ok = rs.filter((r) => r.status === 200).length;
      const throttled = rs.filter((r) => r.status === 429);
      assert.equal(ok, 4);
      assert.equal(throttled.length, 4);
      assert.ok(Array.isArray(throttled[0].data));
      assert.equal(throttled[0].data[0].error_key, 'throttled');
      emu.setKnobs({ throttleBodyShape: 'object' });
      await new Promise((r) => setTimeout(r, 1100));
      const rs2 = await Promise.all(Array.from({ length: 6 }, () => get('/v3/contacts?limit=1')));
      const t2 = rs2.find((r) => r.status === 429)!;
      assert.equal(t2.data.error_key, 'throttled');
    });

    it('daily quota: 429 quota_exceeded', async () => {
      emu.setKnobs({ dailyQuota: 100, dailyUsed: 100 });
      const r = await get('/v3/contacts?limit=1');
      assert.equal(r.status, 429);
      assert.equal(r.data[0].error_key, 'quota_exceeded');
    });

    it('fault knobs over HTTP: 429 storms, 5xx, and request counts in /__emulator/state', async () => {
      await axios.post(`${emu.origin}/__emulator/reset-counts`, {}, any);
      const bad = await axios.post(`${emu.origin}/__emulator/faults`, { noSuchKnob: 1 }, any);
      assert.equal(bad.status, 400);
      const set = await axios.post(`${emu.origin}/__emulator/faults`, { force429Storm: 2 }, any);
      assert.equal(set.status, 200);
      const s1 = await get('/v3/contacts?limit=1');
      const s2 = await get('/v3/contacts?limit=1');
      const s3 = await get('/v3/contacts?limit=1');
      assert.deepEqual([s1.status, s2.status, s3.status], [429, 429, 200]);
      await axios.post(`${emu.origin}/__emulator/faults`, { fail5xxRate: 1 }, any);
      const f = await get('/v3/contacts?limit=1');
      assert.ok(f.status >= 500 && f.status <= 503);
      assert.ok(Array.isArray(f.data));
      await axios.post(`${emu.origin}/__emulator/faults`, { fail5xxRate: 0 }, any);
      const st = await axios.get(`${emu.origin}/__emulator/state`, any);
      assert.equal(st.data.vendor, 'constant-contact');
      const counts = st.data.requests['GET /v3/contacts'];
      assert.equal(counts.total, 4);
      assert.equal(counts.byStatus['429'], 2);
      assert.equal(counts.byStatus['200'], 1);
      assert.ok(Array.isArray(st.data.truth.optedOutEmails));
      assert.ok(st.data.verification);
      const summary = await axios.get(`${emu.origin}/__emulator/state?summary=1`, any);
      assert.equal(summary.data.truth.optedOutEmails, undefined);
      const conn = await axios.get(`${emu.origin}/__emulator/connection`, any);
      assert.equal(conn.data.apiBaseUrl, `${emu.origin}/v3`);
    });
  });
});
