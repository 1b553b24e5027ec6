/**
 * The status page (issue 11 item 5) through fastify's inject: what it shows, escaping of vendor text, and that
 * requeue is shown and accepted only with the service token (401 and no change otherwise), CSRF-safe.
 */
import { strict as assert } from 'assert';
import Fastify, { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { registerStatusPage } from '../../src/service/page';
import { auditExport } from '../../src/history';
import { HOSTILE_EMAIL, HOSTILE_REASON, seedStatusStore } from '../fixtures/status-page';

const TOKEN = 'status-page-token-123456';

function cookieOf(r: LightMyRequestResponse): string {
  const c = r.headers['set-cookie'];
  const v = Array.isArray(c) ? c[0]! : String(c ?? '');
  return v.split(';')[0]!;
}

describe('status page (issue 11 item 5)', () => {
  let app: FastifyInstance;
  let seeded: Awaited<ReturnType<typeof seedStatusStore>>;

  beforeEach(async () => {
    seeded = await seedStatusStore({ tag: `sp-${Math.random().toString(36).slice(2)}` });
    app = Fastify();
    registerStatusPage(app, {
      store: seeded.store,
      targets: seeded.config.targets,
      token: TOKEN,
      now: () => seeded.clock.now(),
    });
    await app.ready();
  });
  afterEach(async () => {
    await app.close();
    seeded.store.close();
  });

  const parked = (): number => seeded.store.targetStatus(['crm-one'], seeded.clock.now())[0]!.parked;

  it('shows targets, queued counts and age, parked rows with reasons, runs, the lag chart and audit links; read-only', async () => {
    const r = await app.inject({ method: 'GET', url: '/status' });
    assert.equal(r.statusCode, 200);
    assert.match(String(r.headers['content-type']), /text\/html/);
    assert.match(String(r.headers['content-security-policy']), /default-src 'none'/);
    assert.doesNotMatch(String(r.headers['content-security-policy']), /script-src/);
    const b = r.body;
    assert.match(b, /data-target="crm-one"/);
    assert.match(b, /data-target="crm-two"/);
    assert.match(b, /queued <b class="queued">1<\/b>/, 'crm-two holds slow@x.com');
    assert.match(b, /oldest queued opt-out: <b class="oldest">35 min<\/b>/);
    assert.match(b, /parked <b class="parked">3<\/b>/);
    assert.match(b, /<td class="email">parked1@x\.com<\/td><td class="reason">rejected by CRM<\/td>/);
    assert.match(b, /<table id="runs">/);
    assert.match(b, /class="status-failed">failed \(exit 1\)/);
    assert.match(b, /the Constant Contact refresh token was revoked/);
    assert.match(b, /<svg id="lag-chart"/);
    assert.equal(
      (b.match(/class="lag-point"/g) ?? []).length,
      6,
      'one point per first write of a synced opt-out (a, b, c in each CRM)',
    );
    assert.match(b, /href="\/status\/audit\.csv"/);
    assert.doesNotMatch(b, /\/status\/requeue/, 'no requeue form without the token');
    assert.match(b, /id="sign-in"/);
  });

  it('escapes vendor text: a hostile reason and address are shown as text, never as markup', async () => {
    const r = await app.inject({ method: 'GET', url: '/status' });
    assert.ok(!r.body.includes('<script>document.title'), 'no script element from the reason');
    assert.ok(!r.body.includes('<img src=x'), 'no img element from the reason');
    assert.ok(!r.body.includes('<b>x</b>'), 'no markup from the address');
    assert.ok(
      r.body.includes(
        '&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;&lt;img src=x onerror=&quot;document.title=&#39;pwned2&#39;&quot;&gt; &quot;quoted&quot; &amp; &#39;single&#39;',
      ),
    );
    assert.ok(r.body.includes('evil+&lt;b&gt;x&lt;/b&gt;@x.com'));
    assert.equal(HOSTILE_REASON.length > 0 && HOSTILE_EMAIL.length > 0, true);
  });

  it('refuses requeue without the token (401, nothing changes): no auth, a wrong bearer, a cookie without CSRF, another origin', async () => {
    const before = parked();
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const attempts = [
      { headers: form, payload: 'target=crm-one' },
      { headers: { ...form, authorization: 'Bearer wrong-token-000000' }, payload: 'target=crm-one' },
      {
        headers: { 'content-type': 'application/json', authorization: 'Bearer wrong-token-000000' },
        payload: JSON.stringify({ target: 'crm-one' }),
      },
    ];
    for (const a of attempts) {
      const r = await app.inject({ method: 'POST', url: '/status/requeue', ...a });
      assert.equal(r.statusCode, 401, r.body);
    }
    const login = await app.inject({ method: 'POST', url: '/status/login', headers: form, payload: `token=${TOKEN}` });
    const cookie = cookieOf(login);
    const noCsrf = await app.inject({
      method: 'POST',
      url: '/status/requeue',
      headers: { ...form, cookie },
      payload: 'target=crm-one',
    });
    assert.equal(noCsrf.statusCode, 401);
    const page = await app.inject({ method: 'GET', url: '/status', headers: { cookie } });
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)![1]!;
    const cross = await app.inject({
      method: 'POST',
      url: '/status/requeue',
      headers: { ...form, cookie, origin: 'https://evil.example', host: 'localhost:80' },
      payload: `target=crm-one&csrf=${encodeURIComponent(csrf)}`,
    });
    assert.equal(cross.statusCode, 401);
    assert.equal(parked(), before, 'nothing was requeued');
    assert.equal(seeded.store.events(null, ['requeued']).length, 0);
  });

  it('sign-in sets an HttpOnly SameSite=Strict cookie (not the token); with it the page shows requeue buttons and a row requeue is audited', async () => {
    const form = { 'content-type': 'application/x-www-form-urlencoded' };
    const bad = await app.inject({ method: 'POST', url: '/status/login', headers: form, payload: 'token=nope' });
    assert.equal(bad.statusCode, 401);
    assert.equal(bad.headers['set-cookie'], undefined);
    const login = await app.inject({ method: 'POST', url: '/status/login', headers: form, payload: `token=${TOKEN}` });
    assert.equal(login.statusCode, 303);
    const setCookie = String(login.headers['set-cookie']);
    assert.match(setCookie, /HttpOnly/);
    assert.match(setCookie, /SameSite=Strict/);
    assert.ok(!setCookie.includes(TOKEN), 'the cookie is not the token');
    const cookie = cookieOf(login);
    const page = await app.inject({ method: 'GET', url: '/status', headers: { cookie } });
    assert.match(page.body, /Requeue all 3 parked/);
    assert.equal((page.body.match(/<button type="submit">Requeue<\/button>/g) ?? []).length, 3);
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)![1]!;
    const r = await app.inject({
      method: 'POST',
      url: '/status/requeue',
      headers: { ...form, cookie },
      payload: `target=crm-one&email=parked1%40x.com&csrf=${encodeURIComponent(csrf)}`,
    });
    assert.equal(r.statusCode, 303);
    assert.equal(r.headers.location, '/status?requeued=1');
    assert.equal(parked(), 2);
    const ev = seeded.store.events(null, ['requeued']);
    assert.equal(ev.length, 1);
    assert.equal(ev[0]!.email, 'parked1@x.com');
    assert.deepEqual(JSON.parse(ev[0]!.detail!), {
      target: 'crm-one',
      via: 'status-page',
      parkedFor: 'rejected by CRM',
    });
    // the next delivery of that row says it was requeued
    seeded.crms.one.failPermanent.delete('parked1@x.com');
    await seeded.engine.sync();
    const last = seeded.store
      .deliveryHistory(null)
      .filter((e) => e.email === 'parked1@x.com')
      .pop()!;
    assert.deepEqual([last.origin, last.outcome], ['requeue', 'applied']);
  });

  it('a bearer token requeues a whole target (JSON); an unknown target is a 400 that changes nothing', async () => {
    const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const unknown = await app.inject({
      method: 'POST',
      url: '/status/requeue',
      headers: auth,
      payload: JSON.stringify({ target: 'nosuch' }),
    });
    assert.equal(unknown.statusCode, 400);
    assert.match(unknown.body, /target: expected one of crm-one, crm-two/);
    assert.equal(parked(), 3);
    const r = await app.inject({
      method: 'POST',
      url: '/status/requeue',
      headers: auth,
      payload: JSON.stringify({ target: 'crm-one' }),
    });
    assert.equal(r.statusCode, 200);
    assert.deepEqual(r.json(), { requeued: 3, target: 'crm-one' });
    assert.equal(parked(), 0);
  });

  it('without a configured token the page is read-only and every requeue is refused', async () => {
    const ro = Fastify();
    registerStatusPage(ro, { store: seeded.store, targets: ['crm-one', 'crm-two'], now: () => seeded.clock.now() });
    await ro.ready();
    try {
      const p = await ro.inject({ method: 'GET', url: '/status' });
      assert.match(p.body, /read-only \(no <code>service\.token<\/code> configured\)/);
      const r = await ro.inject({
        method: 'POST',
        url: '/status/requeue',
        headers: { authorization: 'Bearer anything-at-all', 'content-type': 'application/json' },
        payload: '{"target":"crm-one"}',
      });
      assert.equal(r.statusCode, 401);
      assert.equal(parked(), 3);
    } finally {
      await ro.close();
    }
  });

  it('privateView (as cc-optout run mounts it): without the token only the sign-in form shows, no email, and the audit is 401', async () => {
    const pv = Fastify();
    registerStatusPage(pv, {
      store: seeded.store,
      targets: seeded.config.targets,
      token: TOKEN,
      privateView: true,
      now: () => seeded.clock.now(),
    });
    await pv.ready();
    try {
      const anon = await pv.inject({ method: 'GET', url: '/status' });
      assert.equal(anon.statusCode, 401);
      assert.match(anon.body, /id="sign-in"/);
      assert.doesNotMatch(anon.body, /parked1@x\.com|crm-one/, 'nothing of the state shows before sign-in');
      assert.equal((await pv.inject({ method: 'GET', url: '/status/audit.csv' })).statusCode, 401);
      const bearer = { authorization: `Bearer ${TOKEN}` };
      const ok = await pv.inject({ method: 'GET', url: '/status', headers: bearer });
      assert.equal(ok.statusCode, 200);
      assert.match(ok.body, /parked1@x\.com/);
      assert.equal((await pv.inject({ method: 'GET', url: '/status/audit.csv', headers: bearer })).statusCode, 200);
      const login = await pv.inject({
        method: 'POST',
        url: '/status/login',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        payload: `token=${TOKEN}`,
      });
      const cookie = String(login.headers['set-cookie']).split(';')[0]!;
      assert.match((await pv.inject({ method: 'GET', url: '/status', headers: { cookie } })).body, /parked1@x\.com/);
    } finally {
      await pv.close();
    }
  });

  it('the audit downloads are the same text as cc-optout audit (CSV/JSON, --history, one run)', async () => {
    const csv = await app.inject({ method: 'GET', url: '/status/audit.csv' });
    assert.equal(csv.statusCode, 200);
    assert.match(String(csv.headers['content-disposition']), /attachment; filename="cc-optout-audit\.csv"/);
    assert.equal(csv.body, (await auditExport(seeded.store, { format: 'csv' })).text);
    const hist = await app.inject({ method: 'GET', url: '/status/audit.json?history=1&run=1' });
    assert.equal(hist.body, (await auditExport(seeded.store, { format: 'json', history: true, runId: 1 })).text);
    const events = (hist.json() as { history: { runId: number }[] }).history;
    assert.ok(events.length > 0 && events.every((e) => e.runId === 1));
    const bad = await app.inject({ method: 'GET', url: '/status/audit.csv?run=999' });
    assert.equal(bad.statusCode, 400);
  });
});
