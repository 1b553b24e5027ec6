/**
 * Service mode hardening (attacker trial of `cc-optout run`): F1 a slow or huge webhook answer must not stop
 * syncing or shutdown; F2 DNS rebinding against the no-token loopback service (a forged Host is refused); F6
 * vendor text in Slack alerts is escaped and bounded, and /readyz with a token gives reasons only with it.
 */
import assert from 'assert';
import * as http from 'http';
import { AddressInfo } from 'net';
import Ajv from 'ajv';
import { ConfigError, decodeConfig } from '../../src/config';
import { memoryLogger } from '../../src/log';
import { CONFIG_SCHEMA } from '../../src/spec';
import { App } from '../../src/app';
import { RunSummary } from '../../src/engine';
import { SqliteStateStore } from '../../src/store/sqlite';
import { MAX_SUMMARY_CHARS, Notification, axiosPost, webhookBody } from '../../src/service/alerts';
import { createServiceServer } from '../../src/service/server';
import { ServiceRunner } from '../../src/service/runner';
import { testConfig, testRegistry } from '../helpers';

const T0 = new Date('2026-06-01T12:00:00Z');

function fakeApp(sync: () => Promise<RunSummary>): { app: App; store: SqliteStateStore; calls: () => number } {
  const registry = testRegistry();
  const config = testConfig(registry, [{ name: 'a', crm: 'a' }]);
  const store = new SqliteStateStore(':memory:');
  let n = 0;
  const engine = { sync: async () => (n++, sync()) } as unknown as App['engine'];
  const app: App = { config, store, registry, logger: memoryLogger(), engine, close: async () => store.close() };
  return { app, store, calls: () => n };
}

const service = (over = {}) => ({
  schedule: { kind: 'every' as const, seconds: 3600, text: 'every 1h' },
  listen: { host: '127.0.0.1', port: 0 },
  token: null,
  backoff: { baseSeconds: 30, maxSeconds: 120 },
  alerts: { webhooks: [], oldestQueuedMinutes: 60 },
  ...over,
});

/** A webhook on 127.0.0.1 that answers 200 at once, then sends its body one byte every 200 ms, for ever. */
async function tricklingServer(): Promise<{ url: string; close: () => Promise<void>; hits: () => number }> {
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' });
    const t = setInterval(() => res.write('x'), 200);
    res.on('close', () => clearInterval(t));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    hits: () => hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_res, rej) => setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms).unref()),
  ]);

describe('service hardening: a slow webhook (F1)', function () {
  this.timeout(20_000);

  it('axiosPost: the timeout is a deadline for the whole call (a trickling answer fails in time)', async () => {
    const hook = await tricklingServer();
    try {
      const t0 = Date.now();
      await assert.rejects(within(axiosPost(hook.url, { text: 'x' }, 1000), 5000, 'the webhook call'));
      const ms = Date.now() - t0;
      assert.ok(ms < 3000, `gave up after ${ms} ms`);
    } finally {
      await hook.close();
    }
  });

  it('axiosPost: a huge webhook answer is not read into memory', async () => {
    const server = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(Buffer.alloc(1024 * 1024, 'x'));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    try {
      await assert.rejects(axiosPost(`http://127.0.0.1:${port}/hook`, { text: 'x' }, 5000), /maxContentLength/);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('a trickling webhook neither holds up the next tick nor the shutdown', async () => {
    const hook = await tricklingServer();
    let clock = T0;
    let fail = true;
    const f = fakeApp(async () => {
      if (fail) throw new Error('boom');
      throw new Error('still broken');
    });
    const logger = memoryLogger();
    const r = new ServiceRunner({
      app: f.app,
      service: service({
        alerts: { webhooks: [{ url: hook.url, format: 'json', timeoutSeconds: 30 }], oldestQueuedMinutes: 60 },
      }),
      logger,
      now: () => clock,
    });
    let stopped = false;
    try {
      r.tick();
      // the run fails at once, its run-fatal alert goes to the trickling webhook
      const t0 = Date.now();
      while (hook.hits() === 0 && Date.now() - t0 < 5000) await new Promise((res) => setTimeout(res, 20));
      assert.equal(hook.hits(), 1, 'the alert reached the webhook');
      await new Promise((res) => setTimeout(res, 300));
      fail = false;
      clock = new Date(T0.getTime() + 3600_000); // past the backoff
      r.tick();
      assert.equal(f.calls(), 2, 'the next tick ran');
      assert.ok(!logger.lines.some((l) => /previous run is still in progress/.test(l)), 'no tick skipped for overlap');
      const s0 = Date.now();
      await within(r.stop('SIGTERM'), 8000, 'stop()');
      stopped = true;
      const ms = Date.now() - s0;
      assert.ok(ms < 6000, `stop() took ${ms} ms`);
    } finally {
      if (!stopped) await r.stop().catch(() => undefined);
      await hook.close();
      f.store.close();
    }
  });
});

describe('service hardening: DNS rebinding (F2)', () => {
  const deps = (listenHost?: string) => ({
    token: null,
    readiness: () => ({ ready: true, reasons: [] }),
    metrics: async () => 'cc_optout_up 1\n',
    metricsContentType: 'text/plain',
    logger: memoryLogger(),
    ...(listenHost ? { listenHost } : {}),
  });

  it('without a token a forged Host is refused (421) on every route but /healthz; loopback names are served', async () => {
    const app = createServiceServer(deps());
    try {
      for (const url of ['/metrics', '/readyz', '/status', '/status/audit.csv']) {
        const r = await app.inject({ url, headers: { host: 'attacker.example:19465' } });
        assert.equal(r.statusCode, 421, url);
      }
      assert.equal((await app.inject({ url: '/healthz', headers: { host: 'attacker.example' } })).statusCode, 200);
      for (const host of ['127.0.0.1:19465', 'localhost', 'LOCALHOST:9464', '[::1]:9464', '127.0.0.1'])
        assert.equal((await app.inject({ url: '/metrics', headers: { host } })).statusCode, 200, host);
      assert.equal(
        (await app.inject({ url: '/metrics', headers: { host: '127.0.0.1.attacker.example' } })).statusCode,
        421,
      );
    } finally {
      await app.close();
    }
  });

  it('the configured listen host is allowed too', async () => {
    const app = createServiceServer(deps('127.0.0.2'));
    try {
      assert.equal((await app.inject({ url: '/metrics', headers: { host: '127.0.0.2:9464' } })).statusCode, 200);
      assert.equal((await app.inject({ url: '/metrics', headers: { host: '127.0.0.3:9464' } })).statusCode, 421);
    } finally {
      await app.close();
    }
  });

  it('the status page mounted by the runner (audit CSV with every email) refuses a forged Host', async () => {
    const f = fakeApp(async () => {
      throw new Error('not run');
    });
    const r = new ServiceRunner({ app: f.app, service: service(), logger: memoryLogger() });
    try {
      const forged = await r.server.inject({ url: '/status/audit.csv', headers: { host: 'attacker.example:19465' } });
      assert.equal(forged.statusCode, 421);
      const ok = await r.server.inject({ url: '/status/audit.csv', headers: { host: '127.0.0.1:19465' } });
      assert.equal(ok.statusCode, 200);
    } finally {
      await r.stop();
      f.store.close();
    }
  });
});

describe('service hardening: service.allowedHosts (F2)', () => {
  const registry = testRegistry();
  const raw = (service: unknown) => ({
    source: { type: 'constant-contact', clientId: 'c' },
    targets: [{ name: 'a', connector: 'memory-crm', config: { crm: 'a' } }],
    service,
  });

  it('decoded (default none), a bad entry named with its path, the JSON Schema agrees', () => {
    assert.deepEqual(decodeConfig(raw(undefined), {}, registry).service!.allowedHosts, []);
    const ok = { allowedHosts: ['cc-optout.internal', '[fd00::1]'] };
    assert.deepEqual(decodeConfig(raw(ok), {}, registry).service!.allowedHosts, ok.allowedHosts);
    const bad = { allowedHosts: ['evil.example:9464'] };
    assert.throws(
      () => decodeConfig(raw(bad), {}, registry),
      (e: unknown) =>
        e instanceof ConfigError && /^service\.allowedHosts\[0\]: got "evil\.example:9464"/.test(e.problems[0]!),
    );
    const validate = new Ajv({ strict: false }).compile(CONFIG_SCHEMA);
    assert.equal(validate(raw(ok)), true, JSON.stringify(validate.errors));
    assert.equal(validate(raw(bad)), false);
  });

  it('the runner serves a listed Host name without a token, and still refuses others', async () => {
    const f = fakeApp(async () => {
      throw new Error('not run');
    });
    const r = new ServiceRunner({
      app: f.app,
      service: service({ allowedHosts: ['CC-Optout.internal'] }),
      logger: memoryLogger(),
    });
    try {
      const listed = await r.server.inject({ url: '/metrics', headers: { host: 'cc-optout.internal:9464' } });
      assert.equal(listed.statusCode, 200);
      const other = await r.server.inject({ url: '/metrics', headers: { host: 'attacker.example:9464' } });
      assert.equal(other.statusCode, 421);
    } finally {
      await r.stop();
      f.store.close();
    }
  });
});

describe('service hardening: vendor text in alerts, /readyz detail (F6)', () => {
  const hostile =
    'target a halted (auth): auth: <!channel> your login expired, sign in at <https://evil.example|https://authz.constantcontact.com/login> & more ' +
    'x'.repeat(5000);
  const n: Notification = {
    key: 'target-halted:a',
    state: 'firing',
    summary: hostile,
    target: 'a',
    since: T0.toISOString(),
    hooks: [0],
    retry: false,
  };

  it('slack text escapes &, <, > (no mention, no disguised link) and vendor detail is bounded', () => {
    const { text } = webhookBody(n, 'slack') as { text: string };
    assert.ok(!/[<>]/.test(text), text.slice(0, 200));
    assert.ok(text.includes('&lt;!channel&gt;'));
    assert.ok(text.includes('&lt;https://evil.example|https://authz.constantcontact.com/login&gt; &amp; more'));
    assert.ok(text.length < MAX_SUMMARY_CHARS * 2 + 200, `slack text is ${text.length} characters`);
    const json = webhookBody(n, 'json') as { summary: string; text: string };
    assert.ok(json.summary.length <= MAX_SUMMARY_CHARS, `json summary is ${json.summary.length} characters`);
    assert.ok(json.text.length < MAX_SUMMARY_CHARS + 200);
  });

  it('with a token, /readyz says only ready / not ready; the reasons need the bearer token', async () => {
    const token = 'service-token-0123456789abcdef';
    let ready = false;
    const app = createServiceServer({
      token,
      readiness: () => ({
        ready,
        reasons: ready ? [] : ['target a: auth: vendor said <secret-ish detail>'],
        host: 'h1',
      }),
      metrics: async () => '',
      metricsContentType: 'text/plain',
      logger: memoryLogger(),
    });
    try {
      const anon = await app.inject({ url: '/readyz' });
      assert.equal(anon.statusCode, 503);
      assert.deepEqual(anon.json(), { status: 'not ready', ready: false });
      const authed = await app.inject({ url: '/readyz', headers: { authorization: `Bearer ${token}` } });
      assert.equal(authed.statusCode, 503);
      assert.deepEqual((authed.json() as { reasons: string[] }).reasons, [
        'target a: auth: vendor said <secret-ish detail>',
      ]);
      ready = true;
      assert.deepEqual((await app.inject({ url: '/readyz' })).json(), { status: 'ready', ready: true });
    } finally {
      await app.close();
    }
  });
});
