/**
 * Service mode (issue 11 items 1-3) in unit: the alert state machine and its persistence, the bearer check and
 * the HTTP routes, the service config section and `run`'s options (exit 2 before any write), the backoff, and
 * the runner's scheduling decisions (overlap, backoff after failures, a vendor's retryAt, a held lock).
 */
import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ConfigError, decodeConfig } from '../../src/config';
import { clearSecrets, memoryLogger, redact } from '../../src/log';
import { KeyValue } from '../../src/plugin';
import { App } from '../../src/app';
import { RunSummary } from '../../src/engine';
import { OptOut } from '../../src/domain';
import { SqliteStateStore } from '../../src/store/sqlite';
import { RunLocked } from '../../src/store/types';
import { ReauthorizationRequired } from '../../src/source/types';
import {
  Alerter,
  AlertState,
  Condition,
  evaluateAlerts,
  maskUrl,
  settleAlerts,
  webhookBody,
} from '../../src/service/alerts';
import { backoffSeconds, nextAttemptAt } from '../../src/service/backoff';
import { bearerMatches, createServiceServer } from '../../src/service/server';
import { parseEvery, cronProblem } from '../../src/service/schedule';
import { ServiceRunner } from '../../src/service/runner';
import { checkRunOptions } from '../../src/service/cli';
import Ajv from 'ajv';
import { CONFIG_SCHEMA } from '../../src/spec';
import { runCliSync, testConfig, testRegistry } from '../helpers';

function memoryKv(): KeyValue & { data: Map<string, string> } {
  const data = new Map<string, string>();
  return { data, get: (k) => data.get(k) ?? null, set: (k, v) => void data.set(k, v) };
}

const T0 = new Date('2026-06-01T12:00:00Z');
const at = (s: number) => new Date(T0.getTime() + s * 1000);
const halted = (active: boolean): Condition => ({
  key: 'target-halted:sf',
  target: 'sf',
  active,
  summary: active ? 'target sf halted (quota): quota: limit' : 'target sf delivers again',
});

describe('service: alert state machine', () => {
  it('fires once when a condition starts, not again while it lasts, and once when it ends', () => {
    let state: AlertState = {};
    const r1 = evaluateAlerts(state, [halted(false)], at(0), 1);
    assert.deepEqual(r1.notify, [], 'an inactive condition never seen before says nothing');
    state = r1.next;
    const r2 = evaluateAlerts(state, [halted(true)], at(10), 1);
    assert.deepEqual(
      r2.notify.map((n) => `${n.key} ${n.state}`),
      ['target-halted:sf firing'],
    );
    state = settleAlerts(
      r2.next,
      r2.notify.map((n) => ({ n, failed: [] })),
    );
    for (let i = 0; i < 5; i++) {
      const r = evaluateAlerts(state, [halted(true)], at(20 + i), 1);
      assert.deepEqual(r.notify, [], 'still active: no second alert');
      state = r.next;
    }
    const r3 = evaluateAlerts(state, [halted(false)], at(60), 1);
    assert.deepEqual(
      r3.notify.map((n) => `${n.key} ${n.state}`),
      ['target-halted:sf resolved'],
    );
    assert.match(r3.notify[0]!.summary, /halted \(quota\)/, 'the recovery names what it recovered from');
    state = settleAlerts(
      r3.next,
      r3.notify.map((n) => ({ n, failed: [] })),
    );
    assert.deepEqual(evaluateAlerts(state, [halted(false)], at(70), 1).notify, []);
  });

  it('a condition not judged this time keeps its state (no false recovery)', () => {
    const { next } = evaluateAlerts({}, [halted(true)], at(0), 1);
    const r = evaluateAlerts(next, [], at(10), 1);
    assert.deepEqual(r.notify, []);
    assert.equal(r.next['target-halted:sf']!.active, true);
  });

  it('a failed webhook is retried once at the next evaluation, only to the webhooks that failed, then dropped', () => {
    const r1 = evaluateAlerts({}, [halted(true)], at(0), 2);
    assert.deepEqual(r1.notify[0]!.hooks, [0, 1]);
    let state = settleAlerts(r1.next, [{ n: r1.notify[0]!, failed: [1] }]);
    const r2 = evaluateAlerts(state, [halted(true)], at(10), 2);
    assert.deepEqual(
      r2.notify.map((n) => [n.key, n.state, n.hooks, n.retry]),
      [['target-halted:sf', 'firing', [1], true]],
    );
    state = settleAlerts(r2.next, [{ n: r2.notify[0]!, failed: [1] }]);
    assert.equal(state['target-halted:sf']!.pending, undefined, 'given up after one retry');
    assert.deepEqual(evaluateAlerts(state, [halted(true)], at(20), 2).notify, []);
  });

  it('a state change supersedes a notification still owed', () => {
    const r1 = evaluateAlerts({}, [halted(true)], at(0), 1);
    const state = settleAlerts(r1.next, [{ n: r1.notify[0]!, failed: [0] }]);
    const r2 = evaluateAlerts(state, [halted(false)], at(10), 1);
    assert.deepEqual(
      r2.notify.map((n) => `${n.state} retry=${n.retry}`),
      ['resolved retry=false'],
    );
  });

  it('Alerter: persisted in the store, so a restart does not fire again; a failing webhook never throws and its URL is masked', async () => {
    const kv = memoryKv();
    const logger = memoryLogger();
    const calls: string[] = [];
    const hooks = [
      {
        url: 'https://hooks.example.test/services/T1/B1/very-secret-path',
        format: 'slack' as const,
        timeoutSeconds: 1,
      },
      { url: 'https://alerts.example.test/in/another-secret', format: 'json' as const, timeoutSeconds: 1 },
    ];
    const post = async (url: string) => {
      calls.push(url);
      if (url.includes('another-secret')) throw new Error('timeout of 1000ms exceeded');
    };
    const a = new Alerter(hooks, kv, logger, post);
    const sent = await a.update([halted(true)], at(0));
    assert.equal(sent.length, 1);
    assert.equal(calls.length, 2);
    // a new process (same store): same conditions, nothing fired; the owed retry goes to the failed hook only
    const b = new Alerter(hooks, kv, logger, post);
    await b.update([halted(true)], at(10));
    assert.deepEqual(calls.slice(2), [hooks[1]!.url]);
    await new Alerter(hooks, kv, logger, post).update([halted(true)], at(20));
    assert.equal(calls.length, 3, 'no more calls while the state holds');
    const text = logger.lines.join('\n');
    assert.ok(!text.includes('very-secret-path') && !text.includes('another-secret'), 'webhook paths never logged');
    assert.match(text, /alert webhook failed; the run goes on/);
    assert.match(text, /https:\/\/alerts\.example\.test\/…/);
  });

  it('webhook bodies: slack is {"text"}, json has the fields', () => {
    const n = {
      key: 'run-fatal',
      state: 'firing' as const,
      summary: 'a sync run failed: boom',
      since: T0.toISOString(),
      hooks: [0],
      retry: false,
    };
    const slack = webhookBody(n, 'slack') as Record<string, unknown>;
    assert.deepEqual(Object.keys(slack), ['text']);
    assert.match(String(slack.text), /FIRING: a sync run failed: boom/);
    const json = webhookBody(n, 'json') as Record<string, unknown>;
    for (const k of ['source', 'host', 'alert', 'state', 'summary', 'target', 'since', 'at', 'text'])
      assert.ok(k in json, k);
    assert.equal(maskUrl('https://hooks.slack.com/services/T/B/X'), 'https://hooks.slack.com/…');
  });
});

describe('service: bearer token and routes', () => {
  const token = 'abcdefghijklmnop0123';
  it('bearerMatches', () => {
    assert.equal(bearerMatches(`Bearer ${token}`, token), true);
    assert.equal(bearerMatches(`bearer ${token}`, token), true);
    assert.equal(bearerMatches(`Bearer ${token}x`, token), false);
    assert.equal(bearerMatches(`Bearer ${token.slice(0, -1)}`, token), false);
    assert.equal(bearerMatches(undefined, token), false);
    assert.equal(bearerMatches('', token), false);
    assert.equal(bearerMatches(`Basic ${token}`, token), false);
    assert.equal(bearerMatches(token, token), false);
  });

  it('/healthz and /readyz are open; /metrics (and anything else) needs the token; /readyz is 503 with reasons', async () => {
    let ready = false;
    const app = createServiceServer({
      token,
      readiness: () => ({ ready, reasons: ready ? [] : ['waiting for the first run to finish'] }),
      metrics: async () => 'cc_optout_up 1\n',
      metricsContentType: 'text/plain; version=0.0.4',
      logger: memoryLogger(),
    });
    try {
      assert.equal((await app.inject({ url: '/healthz' })).statusCode, 200);
      const r503 = await app.inject({ url: '/readyz', headers: { authorization: `Bearer ${token}` } });
      assert.equal(r503.statusCode, 503);
      assert.deepEqual((r503.json() as { reasons: string[] }).reasons, ['waiting for the first run to finish']);
      ready = true;
      assert.equal((await app.inject({ url: '/readyz' })).statusCode, 200);
      const denied = await app.inject({ url: '/metrics' });
      assert.equal(denied.statusCode, 401);
      assert.ok(!denied.body.includes(token));
      assert.equal((await app.inject({ url: '/metrics', headers: { authorization: 'Bearer nope' } })).statusCode, 401);
      const root = await app.inject({ url: '/', headers: {} });
      assert.equal(root.statusCode, 302, 'a browser at / reaches the sign-in form, not a 401');
      assert.equal(root.headers.location, '/status');
      assert.equal(
        (await app.inject({ url: '/anything-else', headers: {} })).statusCode,
        401,
        'routes mounted later are guarded too (the status page at /status checks the token itself)',
      );
      const ok = await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${token}` } });
      assert.equal(ok.statusCode, 200);
      assert.equal(ok.body, 'cc_optout_up 1\n');
    } finally {
      await app.close();
    }
  });

  it('without a token /metrics is open (loopback only, enforced by the config)', async () => {
    const app = createServiceServer({
      token: null,
      readiness: () => ({ ready: true, reasons: [] }),
      metrics: async () => '',
      metricsContentType: 'text/plain',
      logger: memoryLogger(),
    });
    try {
      assert.equal((await app.inject({ url: '/metrics' })).statusCode, 200);
    } finally {
      await app.close();
    }
  });
});

describe('service: config section and run options', () => {
  afterEach(() => clearSecrets());
  const registry = testRegistry();
  const raw = (service: unknown) => ({
    source: { type: 'constant-contact', clientId: 'c' },
    targets: [{ name: 'a', connector: 'memory-crm', config: { crm: 'a' } }],
    service,
  });
  const problems = (service: unknown, env: NodeJS.ProcessEnv = {}): string[] => {
    try {
      decodeConfig(raw(service), env, registry);
      return [];
    } catch (e) {
      if (e instanceof ConfigError) return e.problems;
      throw e;
    }
  };

  it('unset service ${ENV} references stop only `run`: sync and the read-only commands do without the section', () => {
    const svc = { token: '${SVC_TOKEN_UNSET}', alerts: { webhooks: [{ url: '${HOOK_UNSET}', format: 'slack' }] } };
    // sync (requireEnv) and status (requireEnv: false) decode, the service section left out
    assert.equal(decodeConfig(raw(svc), {}, registry).service!.token, null);
    assert.equal(decodeConfig(raw(svc), {}, registry, null, { requireEnv: false }).service!.alerts.webhooks.length, 0);
    // run needs them, and names each
    assert.throws(
      () => decodeConfig(raw(svc), {}, registry, null, { serviceEnv: true }),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.problems.some((p) => /^service\.token: environment variable SVC_TOKEN_UNSET is not set/.test(p)) &&
        e.problems.some((p) =>
          /^service\.alerts\.webhooks\[0\]\.url: environment variable HOOK_UNSET is not set/.test(p),
        ),
    );
    // a set reference is used as always, and a broken section with no unset reference still fails every command
    const ok = decodeConfig(
      raw(svc),
      { SVC_TOKEN_UNSET: 'tok-0123456789abcdef', HOOK_UNSET: 'https://hooks.example.test/x' },
      registry,
    );
    assert.equal(ok.service!.token, 'tok-0123456789abcdef');
    assert.ok(problems({ every: 'soon' }).some((p) => /^service\.every/.test(p)));
  });

  it('defaults: every 5m on 127.0.0.1:9464, no token, no webhooks', () => {
    const c = decodeConfig(raw(undefined), {}, registry);
    assert.deepEqual(c.service!.schedule, { kind: 'every', seconds: 300, text: 'every 5m' });
    assert.deepEqual(c.service!.listen, { host: '127.0.0.1', port: 9464 });
    assert.equal(c.service!.token, null);
    assert.deepEqual(c.service!.alerts, { webhooks: [], oldestQueuedMinutes: 60 });
    assert.deepEqual(c.service!.backoff, { baseSeconds: 30, maxSeconds: 1800 });
  });

  it('each bad value is named with its path', () => {
    const cases: [unknown, RegExp][] = [
      [{ every: '5 minutes' }, /^service\.every: got "5 minutes"/],
      [{ every: '0s' }, /^service\.every/],
      [{ every: '25h' }, /^service\.every/],
      [{ cron: 'every day' }, /^service\.cron: got "every day"/],
      [{ every: '5m', cron: '*/5 * * * *' }, /^service: set either every or cron, not both/],
      [{ listen: 'localhost' }, /^service\.listen: got "localhost"/],
      [{ listen: '127.0.0.1:70000' }, /^service\.listen/],
      [
        { listen: '0.0.0.0:9464' },
        /^service\.listen: got "0\.0\.0\.0:9464", a non-loopback address; set service\.token/,
      ],
      [{ token: 'short' }, /^service\.token: got \[redacted\], expected a string of at least 16/],
      [{ alerts: { webhooks: [{ url: 'http://hooks.example.test/x' }] } }, /^service\.alerts\.webhooks\[0\]\.url/],
      [
        { alerts: { webhooks: [{ url: 'https://hooks.example.test/x', format: 'xml' }] } },
        /^service\.alerts\.webhooks\[0\]\.format: got "xml"/,
      ],
      [{ alerts: { oldestQueuedMinutes: 0 } }, /^service\.alerts\.oldestQueuedMinutes: got 0/],
      [{ backoff: { baseSeconds: 600, maxSeconds: 60 } }, /^service\.backoff\.baseSeconds: got 600, expected at most/],
      [{ listn: '127.0.0.1:1' }, /^service\.listn: .*unknown key "listn"/],
    ];
    for (const [service, re] of cases) {
      const p = problems(service);
      assert.ok(
        p.some((x) => re.test(x)),
        `${JSON.stringify(service)}: ${JSON.stringify(p)}`,
      );
    }
  });

  it('valid: cron, a token from ${ENV} with a public address, webhooks from ${ENV} (registered as secrets)', () => {
    const url = 'https://hooks.slack.example.test/services/T0/B0/XYZsecret';
    const c = decodeConfig(
      raw({
        cron: '*/5 * * * *',
        listen: '0.0.0.0:9464',
        token: '${SVC_TOKEN}',
        alerts: { webhooks: [{ url: '${HOOK}', format: 'slack' }], oldestQueuedMinutes: 30 },
      }),
      { SVC_TOKEN: 'tok-0123456789abcdef', HOOK: url },
      registry,
    );
    assert.deepEqual(c.service!.schedule, { kind: 'cron', pattern: '*/5 * * * *', text: 'cron */5 * * * *' });
    assert.equal(c.service!.token, 'tok-0123456789abcdef');
    assert.deepEqual(c.service!.alerts.webhooks, [{ url, format: 'slack', timeoutSeconds: 5 }]);
    assert.equal(redact(`posting to ${url}`), 'posting to [redacted]');
    assert.equal(redact('token tok-0123456789abcdef'), 'token [redacted]');
  });

  it("the config JSON Schema (src/config.schema.json): the same section (a valid one passes, the codec's refusals fail)", () => {
    const validate = new Ajv({ allErrors: true, strict: false }).compile(CONFIG_SCHEMA as object);
    const full = (service: unknown) => ({
      source: { type: 'constant-contact', clientId: 'c' },
      targets: [{ name: 'a', connector: 'hubspot', config: {} }],
      service,
    });
    assert.equal(
      validate(
        full({
          every: '2s',
          listen: '127.0.0.1:0',
          token: '${T}',
          alerts: { webhooks: [{ url: 'https://hooks.example.test/x', format: 'slack' }], oldestQueuedMinutes: 5 },
        }),
      ),
      true,
      JSON.stringify(validate.errors),
    );
    for (const bad of [
      { every: '5m', cron: '* * * * *' },
      { listn: 'x' },
      { alerts: { webhooks: [{ url: 'http://hooks.example.test/x' }] } },
      { alerts: { webhooks: [{ url: 'https://h.example.test', format: 'xml' }] } },
    ]) {
      assert.equal(validate(full(bad)), false, JSON.stringify(bad));
      assert.ok(problems(bad).length > 0, JSON.stringify(bad));
    }
  });

  it('parseEvery / cronProblem / checkRunOptions', () => {
    assert.equal(parseEvery('2s'), 2);
    assert.equal(parseEvery('5m'), 300);
    assert.equal(parseEvery('1h30m'), 5400);
    assert.equal(typeof parseEvery(''), 'string');
    assert.equal(typeof parseEvery('5'), 'string');
    assert.equal(cronProblem('*/5 * * * *'), null);
    assert.match(cronProblem('61 * * * *') ?? '', /not a cron pattern/);
    assert.deepEqual(checkRunOptions({ every: '2s', listen: '127.0.0.1:0' }), []);
    assert.match(checkRunOptions({ every: 'soon' })[0]!, /^--every: expected a duration/);
    assert.match(checkRunOptions({ every: '1m', cron: '* * * * *' })[0]!, /^--every and --cron/);
    assert.match(checkRunOptions({ listen: 'nowhere' })[0]!, /^--listen: got "nowhere"/);
  });

  it('the CLI: a bad --every or a bad service section exits 2 naming it, before any write (no store created)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-service-'));
    try {
      const file = path.join(dir, 'cc.json');
      const write = (service: unknown) =>
        fs.writeFileSync(
          file,
          JSON.stringify({
            store: { path: './state.db' },
            source: { type: 'constant-contact', clientId: 'c', apiBaseUrl: 'http://127.0.0.1:9/v3' },
            targets: [
              { name: 'h', connector: 'hubspot', config: { auth: { type: 'private-app', accessToken: 'pat-x' } } },
            ],
            service,
          }),
        );
      write(undefined);
      let r = runCliSync(['--config', file, 'run', '--every', '10 minutes']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--every: expected a duration/);
      r = runCliSync(['--config', file, 'run', '--listen', '0.0.0.0:9464']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /non-loopback address; set .*token/);
      write({ every: '5m', alerts: { webhooks: [{ url: 'ftp://x' }] } });
      r = runCliSync(['--config', file, 'run']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /service\.alerts\.webhooks\[0\]\.url/);
      assert.equal(fs.existsSync(path.join(dir, 'state.db')), false, 'nothing written');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('service: backoff', () => {
  const p = { baseSeconds: 30, maxSeconds: 1800 };
  it('exponential from the base, capped', () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 7, 100, 10_000].map((n) => backoffSeconds(n, p)),
      [0, 30, 60, 120, 240, 480, 960, 1800, 1800, 1800],
    );
  });
  it("a vendor's retryAt later than the backoff wins; an earlier or unreadable one does not", () => {
    assert.equal(nextAttemptAt(T0, 1, p).toISOString(), at(30).toISOString());
    assert.equal(nextAttemptAt(T0, 1, p, at(3600).toISOString()).toISOString(), at(3600).toISOString());
    assert.equal(nextAttemptAt(T0, 2, p, at(5).toISOString()).toISOString(), at(60).toISOString());
    assert.equal(nextAttemptAt(T0, 1, p, 'garbage').toISOString(), at(30).toISOString());
  });
});

describe('service: the runner schedules runs', () => {
  function fakeApp(sync: () => Promise<RunSummary>): { app: App; store: SqliteStateStore; calls: () => number } {
    const registry = testRegistry();
    const config = testConfig(registry, [{ name: 'a', crm: 'a' }]);
    const store = new SqliteStateStore(':memory:');
    let n = 0;
    const engine = { sync: async () => (n++, sync()) } as unknown as App['engine'];
    const app: App = { config, store, registry, logger: memoryLogger(), engine, close: async () => store.close() };
    return { app, store, calls: () => n };
  }
  const summary = (over: Partial<RunSummary> = {}): RunSummary => ({
    command: 'sync',
    dryRun: false,
    runId: 1,
    startedAt: T0.toISOString(),
    durationMs: 10,
    detection: {
      mode: 'window',
      pages: 1,
      contactsSeen: 0,
      optOutsSeen: 0,
      newOptOuts: 0,
      resubscribed: 0,
      skippedNoEmail: 0,
      quarantined: 0,
      complete: true,
    },
    targets: { a: { outcomes: {}, batches: 0, queued: 0, parked: 0 } },
    apiCalls: {},
    quarantined: 0,
    exitCode: 0,
    messages: [],
    ...over,
  });
  const service = (over = {}) => ({
    schedule: { kind: 'every' as const, seconds: 2, text: 'every 2s' },
    listen: { host: '127.0.0.1', port: 0 },
    token: null,
    backoff: { baseSeconds: 30, maxSeconds: 120 },
    alerts: { webhooks: [], oldestQueuedMinutes: 60 },
    ...over,
  });

  it('failures back off exponentially (capped) instead of running on every tick; a success resets it', async () => {
    let clock = T0;
    let fail = true;
    const f = fakeApp(async () => {
      if (fail) throw new Error('connect ECONNREFUSED');
      return summary();
    });
    const logger = memoryLogger();
    const r = new ServiceRunner({ app: f.app, service: service(), logger, now: () => clock });
    const tickAt = async (s: number) => {
      clock = at(s);
      r.tick();
      await r.idle();
    };
    try {
      await tickAt(0); // fails: next not before +30 s
      assert.equal(f.calls(), 1);
      for (const s of [2, 10, 29]) await tickAt(s);
      assert.equal(f.calls(), 1, 'ticks during the backoff start no run');
      await tickAt(30); // fails again: +60 s
      assert.equal(f.calls(), 2);
      await tickAt(89);
      assert.equal(f.calls(), 2);
      await tickAt(90); // third failure: +120 s (the cap)
      await tickAt(209);
      assert.equal(f.calls(), 3);
      await tickAt(210); // fourth: still +120 s
      assert.equal(f.calls(), 4);
      assert.equal((await r.readiness()).ready, false);
      assert.match((await r.readiness()).reasons.join(' '), /last run failed: connect ECONNREFUSED/);
      fail = false;
      await tickAt(330);
      assert.equal(f.calls(), 5);
      await tickAt(332);
      assert.equal(f.calls(), 6, 'after a success every tick runs again');
      assert.equal((await r.readiness()).ready, true);
      assert.ok(logger.lines.some((l) => /tick skipped: backing off after failed runs/.test(l)));
    } finally {
      await r.stop();
      f.store.close();
    }
  });

  it("the daily quota's reset is respected; a held lock is skipped, not a failure; a revoked token is reported", async () => {
    let clock = T0;
    let next: () => Promise<RunSummary> = async () =>
      summary({
        exitCode: 3,
        detection: { ...summary().detection, complete: false, retryAt: at(7200).toISOString(), stoppedReason: 'quota' },
      });
    const f = fakeApp(() => next());
    const r = new ServiceRunner({ app: f.app, service: service(), logger: memoryLogger(), now: () => clock });
    const tickAt = async (s: number) => {
      clock = at(s);
      r.tick();
      await r.idle();
    };
    try {
      await tickAt(0);
      await tickAt(3600);
      assert.equal(f.calls(), 1, 'no run before the quota resets');
      next = async () => {
        throw new RunLocked('held by backfill');
      };
      await tickAt(7200);
      await tickAt(7202);
      assert.equal(f.calls(), 3, 'a held lock does not back off');
      next = async () => {
        throw new ReauthorizationRequired('Constant Contact refused the refresh token (invalid_grant)');
      };
      await tickAt(7204);
      const rd = await r.readiness();
      assert.equal(rd.ready, false);
      assert.match(rd.reasons.join(' '), /Constant Contact credentials: .*invalid_grant.*auth constant-contact/);
      assert.deepEqual(
        (await r.conditions())
          .filter((c) => c.active)
          .map((c) => c.key)
          .sort(),
        ['cc-reauth', 'run-fatal'],
      );
    } finally {
      await r.stop();
      f.store.close();
    }
  });

  it('a halted target is not "resolved" by a run that never reached it (its rows waiting out their backoff)', async () => {
    let clock = T0;
    const halted = {
      outcomes: { 'failed-retryable': 5 },
      batches: 1,
      queued: 5,
      parked: 0,
      halted: 'unavailable: HTTP 500',
    };
    const idle = { outcomes: {}, batches: 0, queued: 5, parked: 0 };
    const delivered = { outcomes: { applied: 5 }, batches: 1, queued: 0, parked: 0 };
    let next: RunSummary['targets']['a'] = halted;
    const f = fakeApp(async () => summary({ targets: { a: next } }));
    const r = new ServiceRunner({ app: f.app, service: service(), logger: memoryLogger(), now: () => clock });
    const haltedState = async () => (await r.conditions()).find((c) => c.key === 'target-halted:a');
    try {
      clock = at(0);
      r.tick();
      await r.idle();
      assert.equal((await haltedState())?.active, true);
      next = idle;
      clock = at(100);
      r.tick();
      await r.idle();
      assert.equal(await haltedState(), undefined, 'not observed: the alert keeps firing');
      next = delivered;
      clock = at(200);
      r.tick();
      await r.idle();
      assert.equal((await haltedState())?.active, false, 'resolved once the target delivered again');
    } finally {
      await r.stop();
      f.store.close();
    }
  });

  it('parked rows and an old queued row become alert conditions (and recover); alerts fire once across a restart', async () => {
    let clock = T0;
    const f = fakeApp(async () => summary());
    const posts: Record<string, unknown>[] = [];
    const svc = service({
      alerts: {
        webhooks: [{ url: 'http://127.0.0.1:9/hook', format: 'json' as const, timeoutSeconds: 1 }],
        oldestQueuedMinutes: 30,
      },
    });
    const mk = () =>
      new ServiceRunner({
        app: f.app,
        service: svc,
        logger: memoryLogger(),
        now: () => clock,
        post: async (_u, body) => void posts.push(body as Record<string, unknown>),
      });
    const opt = (email: string): OptOut => ({
      email,
      contactId: `id-${email}`,
      optedOutAt: '2026-05-01T00:00:00.000Z',
      source: 'Contact',
      reason: null,
      deleted: false,
    });
    f.store.commitDetection({
      runId: 1,
      added: [opt('p@x.com'), opt('q@x.com')],
      resubscribed: [],
      targets: ['a'],
      now: T0.toISOString(),
    });
    f.store.recordOutcomes({
      runId: 1,
      target: 'a',
      now: T0,
      policy: { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 60 },
      outcomes: [{ email: 'p@x.com', kind: 'failed-permanent', recordIds: [], message: 'bad' }],
    });
    const active = async (r: ServiceRunner) =>
      (await r.conditions())
        .filter((c) => c.active)
        .map((c) => c.key)
        .sort();
    let r = mk();
    try {
      assert.deepEqual(await active(r), ['parked:a'], 'q@x.com was queued just now');
      clock = at(31 * 60);
      assert.deepEqual(await active(r), ['oldest-queued:a', 'parked:a']);
      r.tick();
      await r.idle();
      assert.deepEqual(posts.map((p) => `${String(p.alert)} ${String(p.state)}`).sort(), [
        'oldest-queued:a firing',
        'parked:a firing',
      ]);
      await r.stop();
      // a restart with the same store: nothing new to say
      r = mk();
      r.tick();
      await r.idle();
      assert.equal(posts.length, 2);
      f.store.requeueParked('a', clock.toISOString());
      f.store.recordOutcomes({
        runId: 1,
        target: 'a',
        now: clock,
        policy: { maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 60 },
        outcomes: ['p@x.com', 'q@x.com'].map((email) => ({ email, kind: 'applied' as const, recordIds: ['1'] })),
      });
      clock = at(32 * 60);
      r.tick();
      await r.idle();
      assert.deepEqual(
        posts
          .slice(2)
          .map((p) => `${String(p.alert)} ${String(p.state)}`)
          .sort(),
        ['oldest-queued:a resolved', 'parked:a resolved'],
      );
    } finally {
      await r.stop();
      f.store.close();
    }
  });

  it('a tick while a run is in progress is skipped', async () => {
    let release!: () => void;
    const f = fakeApp(() => new Promise<RunSummary>((res) => (release = () => res(summary()))));
    const logger = memoryLogger();
    const r = new ServiceRunner({ app: f.app, service: service(), logger });
    try {
      r.tick();
      r.tick();
      r.tick();
      assert.equal(f.calls(), 1);
      assert.equal(logger.lines.filter((l) => /tick skipped: the previous run is still in progress/.test(l)).length, 2);
      release();
      await r.idle();
      const m = await r.metrics.metrics();
      assert.match(m, /cc_optout_ticks_skipped_total\{reason="overlap"\} 2/);
      assert.match(m, /cc_optout_runs_total\{result="ok"\} 1/);
    } finally {
      await r.stop();
      f.store.close();
    }
  });
});
