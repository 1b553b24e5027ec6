/**
 * Hardening of the Constant Contact source and of detection (issue 8): next-link origin check (#1), token
 * responses (#2), quarantined records and resubscribes (#5), bounded scans (#7), garbage checkpoints (#10),
 * enum values and dates (#11), one quarantine row per record (#12).
 * nock throws on any request it was not told about: a request to evil.example fails the test by itself.
 */
import assert from 'assert';
import nock from 'nock';
import {
  createConstantContactSource,
  DEFAULT_MAX_PAGES,
  pagesForCount,
  resolveNextHref,
} from '../../src/source/constant-contact';
import Ajv from 'ajv';
import { isLeft } from 'fp-ts/Either';
import { ConstantContactConfig } from '../../src/config';
import { CONFIG_SCHEMA, SOURCE_SCHEMA } from '../../src/spec';
import { SourceError, SourceDeps } from '../../src/source/types';
import { CHECKPOINT_LAST_FULL, CHECKPOINT_WINDOW, Engine, SOURCE_KV } from '../../src/engine';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Database from 'better-sqlite3';
import { MIGRATIONS, SqliteStateStore } from '../../src/store/sqlite';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import { FakeSource, contact, testConfig, testEngine, testRegistry } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';
import {
  API,
  AUTH_ORIGIN,
  AUTH_PATH,
  form,
  kvWithAccessToken,
  makeConfig,
  makeDeps,
  memKv,
  unsubscribed,
} from '../fixtures/cc/helpers';
import { TokenManager, MAX_EXPIRES_IN_S } from '../../src/source/constant-contact/auth';
import { decodeContacts } from '../../src/source/constant-contact/codecs';
import { isOptedOut } from '../../src/domain';
import { QuarantinedRecord } from '../../src/source/types';

const TOKEN = 'access-token-A0-valid';
const BASE = 'https://api.cc.email/v3';

function page(contacts: unknown[], next?: string): Record<string, unknown> {
  return next ? { contacts, _links: { next: { href: next } } } : { contacts };
}

/** An engine over a real SQLite store (in memory) whose source is the real Constant Contact source on nock. */
export function ccEngine(
  opts: { start?: Date; source?: Record<string, unknown>; crm?: string; crmEmails?: string[] } = {},
) {
  const registry = testRegistry();
  const crmName = opts.crm ?? `cc-hard-${Math.random().toString(36).slice(2)}`;
  const crm = memoryCrm(crmName, opts.crmEmails ?? []);
  const config = testConfig(registry, [{ name: 'crm', crm: crmName }], { source: opts.source ?? {} });
  const store = new SqliteStateStore(':memory:');
  const kv = store.kv(SOURCE_KV);
  kv.set('refresh_token', 'refresh-token-R1-seed');
  kv.set('access_token', TOKEN);
  kv.set('access_expires_at', '2099-01-01T00:00:00.000Z');
  const clock = fakeClock(opts.start ?? new Date('2026-06-01T12:00:00Z'));
  const logger = memoryLogger();
  const engine = new Engine({
    config,
    store,
    registry,
    source: (deps: SourceDeps) => createConstantContactSource(config.source, deps),
    clock,
    logger,
    random: () => 0.5,
  });
  return { engine, store, clock, logger, config, crm };
}

describe('cc hardening', () => {
  afterEach(() => nock.cleanAll());

  describe('#2 token responses: a rotated refresh token is stored first', () => {
    const TOKEN_PATH = `${AUTH_PATH}/token`;
    const R1 = 'refresh-token-R1-seed';
    const R2 = 'refresh-token-R2-rotated';
    const A1 = 'access-token-A1-fresh';
    const start = new Date('2026-01-01T10:00:00Z');

    function manager() {
      const kv = memKv({ refresh_token: R1 });
      const deps = makeDeps(kv, start);
      return { kv, deps, tokens: new TokenManager(makeConfig(), deps) };
    }

    it('accepts expires_in as a numeric string and scope: null, and stores the rotated token first', async () => {
      const { kv, tokens } = manager();
      nock(AUTH_ORIGIN)
        .post(TOKEN_PATH)
        .reply(200, { access_token: A1, refresh_token: R2, expires_in: '86400', scope: null, token_type: null });
      assert.strictEqual(await tokens.refresh(), A1);
      assert.strictEqual(kv.get('refresh_token'), R2);
      assert.strictEqual(kv.writes[0]![0], 'refresh_token', 'the refresh token is the first write');
      assert.strictEqual(kv.get('access_expires_at'), new Date(start.getTime() + 86_400_000).toISOString());
    });

    it('clamps an absurd expires_in (1e300) to the longest believed lifetime instead of failing', async () => {
      const { kv, tokens, deps } = manager();
      nock(AUTH_ORIGIN).post(TOKEN_PATH).reply(200, { access_token: A1, refresh_token: R2, expires_in: 1e300 });
      assert.strictEqual(await tokens.refresh(), A1);
      assert.strictEqual(kv.get('refresh_token'), R2);
      assert.strictEqual(
        kv.get('access_expires_at'),
        new Date(start.getTime() + MAX_EXPIRES_IN_S * 1000).toISOString(),
      );
      assert.ok(
        deps.logger.lines.some((l) => /expires_in \(1e\+300 s\)/.test(l)),
        deps.logger.lines.join('\n'),
      );
    });

    it('a body that cannot be used still leaves the new refresh token stored, and says so without any token', async () => {
      const { kv, tokens } = manager();
      nock(AUTH_ORIGIN).post(TOKEN_PATH).reply(200, { access_token: A1, refresh_token: R2, expires_in: 'tomorrow' });
      await assert.rejects(tokens.refresh(), (e: unknown) => {
        assert.ok(e instanceof SourceError);
        assert.match(e.message, /expires_in/);
        assert.match(e.message, /new refresh token it carried is stored/);
        assert.ok(!e.message.includes(R2) && !e.message.includes(A1), e.message);
        return true;
      });
      assert.strictEqual(kv.get('refresh_token'), R2, 'the rotated refresh token survives');
      // the next refresh sends R2, not the dead R1
      const next = nock(AUTH_ORIGIN)
        .post(TOKEN_PATH, (b) => form(b)['refresh_token'] === R2)
        .reply(200, { access_token: 'access-token-A2', refresh_token: 'refresh-token-R3', expires_in: 3600 });
      assert.strictEqual(await tokens.refresh(), 'access-token-A2');
      assert.ok(next.isDone());
    });
  });

  describe('#5 a quarantined record is not a resubscribe', () => {
    async function fullSync(env: ReturnType<typeof ccEngine>, contacts: unknown[]) {
      nock(API)
        .get('/v3/contacts')
        .query((q) => q['status'] === 'unsubscribed')
        .reply(200, page(contacts));
      // the reconcile's deleted read and look-ups of known opt-outs it did not return: nobody
      nock(API)
        .get('/v3/contacts')
        .query((q) => q['status'] !== 'unsubscribed')
        .times(5)
        .reply(200, page([]));
      nock(API).get('/v3/contacts/counts').reply(200, { unsubscribed: contacts.length });
      const r = await env.engine.sync({ full: true });
      env.clock.advance(60 * 60_000);
      return r;
    }
    const leftEvents = (env: ReturnType<typeof ccEngine>) =>
      env.store.events(null, ['left-unsubscribed-set']).map((e) => e.email);

    it('a known opt-out whose record arrives malformed in a full reconcile stays active', async () => {
      const env = ccEngine();
      await fullSync(env, [unsubscribed('a@example.com'), unsubscribed('b@example.com')]);
      assert.strictEqual(env.store.countOptOuts().active, 2);
      const broken = unsubscribed('A@example.com');
      (broken['email_address'] as Record<string, unknown>)['opt_out_date'] = 12345;
      const r = await fullSync(env, [broken, unsubscribed('b@example.com')]);
      assert.strictEqual(r.detection.quarantined, 1);
      assert.strictEqual(r.detection.resubscribed, 0);
      assert.deepStrictEqual(leftEvents(env), []);
      assert.strictEqual(env.store.knownOptOuts(['a@example.com']).get('a@example.com')!.state, 'active');
      await env.engine.close();
    });

    it('a quarantined record with an unreadable address holds back every "left the set" conclusion, and the run says so', async () => {
      const env = ccEngine();
      await fullSync(env, [unsubscribed('a@example.com'), unsubscribed('b@example.com')]);
      const broken = unsubscribed('a@example.com');
      (broken['email_address'] as Record<string, unknown>)['address'] = 42;
      const r = await fullSync(env, [broken]);
      assert.deepStrictEqual(leftEvents(env), []);
      assert.strictEqual(env.store.countOptOuts().active, 2);
      assert.ok(
        r.messages.some((m) => /quarantined record\(s\) have an unreadable email address/.test(m)),
        r.messages.join('\n'),
      );
      await env.engine.close();
    });

    it('a well-formed record that says subscribed, or no record at all, still marks a resubscribe', async () => {
      const env = ccEngine();
      await fullSync(env, [
        unsubscribed('a@example.com'),
        unsubscribed('b@example.com'),
        unsubscribed('c@example.com'),
      ]);
      const back = unsubscribed('a@example.com', { deleted_at: '2026-05-01' });
      (back['email_address'] as Record<string, unknown>)['permission_to_send'] = 'implicit';
      const r = await fullSync(env, [back, unsubscribed('c@example.com')]);
      assert.strictEqual(r.detection.resubscribed, 2);
      assert.deepStrictEqual(leftEvents(env).sort(), ['a@example.com', 'b@example.com']);
      await env.engine.close();
    });
  });

  describe('#11 enum values and dates', () => {
    const now = new Date('2026-06-01T12:00:00Z');
    function decode(...raws: unknown[]) {
      const q: QuarantinedRecord[] = [];
      const unknownSources: string[] = [];
      const r = decodeContacts(
        raws,
        (rec) => q.push(rec),
        now,
        (v) => unknownSources.push(v),
      );
      return { ...r, q, unknownSources };
    }
    const withEmail = (email: string, fields: Record<string, unknown>) => {
      const c = unsubscribed(email);
      Object.assign(c['email_address'] as Record<string, unknown>, fields);
      return c;
    };

    it('compares permission_to_send and opt_out_source case-insensitively', () => {
      const r = decode(
        withEmail('a@example.com', { permission_to_send: 'UNSUBSCRIBED', opt_out_source: 'CONTACT' }),
        withEmail('b@example.com', { permission_to_send: ' Implicit ' }),
      );
      assert.deepStrictEqual(r.q, []);
      assert.strictEqual(r.contacts[0]!.permission, 'unsubscribed');
      assert.ok(isOptedOut(r.contacts[0]!), '"UNSUBSCRIBED" is unsubscribed');
      assert.strictEqual(r.contacts[0]!.source, 'Contact');
      assert.strictEqual(r.contacts[1]!.permission, 'implicit');
      assert.ok(!isOptedOut(r.contacts[1]!));
    });

    it('quarantines an unknown permission_to_send, naming the field and the known values', () => {
      const r = decode(withEmail('a@example.com', { permission_to_send: 'unsubscribed_all' }));
      assert.strictEqual(r.contacts.length, 0);
      assert.strictEqual(r.q.length, 1);
      assert.match(
        r.q[0]!.reason,
        /email_address\.permission_to_send: got "unsubscribed_all", expected one of explicit, implicit/,
      );
      assert.deepStrictEqual(r.quarantinedEmails, ['a@example.com']);
    });

    for (const date of ['+275760-09-13T00:00:00Z', '9999-12-31', '2026-06-03T12:00:00Z', '1970-01-01T00:00:00Z']) {
      it(`quarantines the opt-out date ${date}`, () => {
        const r = decode(withEmail('a@example.com', { opt_out_date: date }));
        assert.strictEqual(r.contacts.length, 0, 'not stored as an opt-out date');
        assert.strictEqual(r.q.length, 1);
        assert.match(r.q[0]!.reason, /email_address\.opt_out_date: got ".*", a date (in the future|before 1990-01-01)/);
      });
    }

    it('allows a day of clock skew, and keeps (but reports) an unknown opt_out_source', () => {
      const r = decode(
        withEmail('a@example.com', {
          opt_out_date: '2026-06-01T20:00:00Z',
          updated_at: '2026-06-01T20:00:00Z',
          opt_out_source: 'Partner',
        }),
      );
      assert.deepStrictEqual(r.q, []);
      assert.strictEqual(r.contacts[0]!.optedOutAt, '2026-06-01T20:00:00Z');
      assert.strictEqual(r.contacts[0]!.source, 'Partner');
      assert.deepStrictEqual(r.unknownSources, ['Partner']);
    });

    it('source: a far-future email_address.updated_at is quarantined through the real scan (the fake clock is now)', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN), now);
      const source = createConstantContactSource(makeConfig(), deps);
      nock(API)
        .get('/v3/contacts')
        .query(true)
        .reply(
          200,
          page([
            withEmail('a@example.com', { opt_out_date: null, updated_at: '9999-12-31T00:00:00Z' }),
            unsubscribed('b@example.com'),
          ]),
        );
      const seen: string[] = [];
      const stats = await source.scanUnsubscribed((p) => void seen.push(...p.contacts.map((c) => c.email)));
      assert.deepStrictEqual(seen, ['b@example.com']);
      assert.strictEqual(stats.quarantined, 1);
      assert.match(
        deps.quarantined[0]!.reason,
        /email_address\.updated_at: got "9999-12-31T00:00:00Z", a date in the future/,
      );
    });
  });

  describe('#12 one quarantine row per record', () => {
    it('the same malformed record quarantined on every run keeps one row, with a count and the last sighting', async () => {
      const env = ccEngine();
      const broken = unsubscribed('a@example.com');
      (broken['email_address'] as Record<string, unknown>)['opt_out_date'] = 12345;
      const noId = { email_address: { address: 'x@example.com' } };
      for (let run = 0; run < 3; run++) {
        nock(API)
          .get('/v3/contacts')
          .query((q) => q['status'] === 'unsubscribed')
          .reply(200, page([broken, noId, unsubscribed('b@example.com')]));
        nock(API)
          .get('/v3/contacts')
          .query((q) => q['status'] !== 'unsubscribed')
          .times(5)
          .reply(200, page([])); // the reconcile's deleted read
        nock(API).get('/v3/contacts/counts').reply(200, { unsubscribed: 1 });
        const r = await env.engine.sync({ full: true });
        assert.strictEqual(r.detection.quarantined, 2, 'each scan still reports what it quarantined');
        assert.strictEqual(r.quarantined, 2, `run ${run + 1}: the store holds one row per record`);
        env.clock.advance(3600_000);
      }
      const rows = env.store.quarantined(10);
      assert.strictEqual(rows.length, 2);
      for (const row of rows) {
        assert.strictEqual(row.timesSeen, 3);
        assert.strictEqual(row.at, '2026-06-01T12:00:00.000Z');
        assert.ok(row.lastSeenAt > row.at, `${row.lastSeenAt} after ${row.at}`);
      }
      assert.deepStrictEqual(rows.map((r) => r.recordId).sort(), [broken['contact_id'], null].sort());
      await env.engine.close();
    });

    it('a record seen again with another problem updates its row (reason, raw) rather than adding one', () => {
      const s = new SqliteStateStore(':memory:');
      s.quarantine(
        1,
        'constant-contact',
        { reason: 'first', raw: { contact_id: 'c1', v: 1 }, recordId: 'c1' },
        '2026-01-01T00:00:00.000Z',
      );
      s.quarantine(
        2,
        'constant-contact',
        { reason: 'second', raw: { contact_id: 'c1', v: 2 }, recordId: 'c1' },
        '2026-01-02T00:00:00.000Z',
      );
      s.quarantine(2, 'constant-contact', { reason: 'other', raw: 7, recordId: null }, '2026-01-02T00:00:00.000Z');
      const rows = s.quarantined(10);
      assert.strictEqual(s.countQuarantined(), 2);
      const c1 = rows.find((r) => r.recordId === 'c1')!;
      assert.deepStrictEqual(
        [c1.reason, c1.raw, c1.runId, c1.timesSeen, c1.at, c1.lastSeenAt],
        ['second', { contact_id: 'c1', v: 2 }, 2, 2, '2026-01-01T00:00:00.000Z', '2026-01-02T00:00:00.000Z'],
      );
      s.close();
    });

    it('migration 3 folds the duplicates an older store already holds into one row per record', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-hard-'));
      const file = path.join(dir, 'state.db');
      const old = new Database(file);
      old.exec(MIGRATIONS[0]!);
      old.exec(MIGRATIONS[1]!);
      old.pragma('user_version = 2');
      const ins = old.prepare(
        `INSERT INTO quarantine (run_id, source, record_id, reason, raw, at) VALUES (?, 'constant-contact', ?, ?, ?, ?)`,
      );
      for (let i = 1; i <= 3; i++) ins.run(i, 'c1', `r${i}`, '{"contact_id":"c1"}', `2026-01-0${i}T00:00:00.000Z`);
      for (let i = 1; i <= 2; i++) ins.run(i, null, 'root', '5', `2026-01-0${i}T00:00:00.000Z`);
      ins.run(1, null, 'root', '6', '2026-01-01T00:00:00.000Z');
      old.close();
      const s = new SqliteStateStore(file);
      assert.strictEqual(s.schemaVersion, MIGRATIONS.length);
      assert.strictEqual(s.countQuarantined(), 3);
      const c1 = s.quarantined(10).find((r) => r.recordId === 'c1')!;
      assert.deepStrictEqual(
        [c1.timesSeen, c1.at, c1.lastSeenAt],
        [3, '2026-01-01T00:00:00.000Z', '2026-01-03T00:00:00.000Z'],
      );
      // and a sighting after the upgrade lands on the folded row
      s.quarantine(9, 'constant-contact', { reason: 'again', raw: 5, recordId: null }, '2026-02-01T00:00:00.000Z');
      s.quarantine(
        9,
        'constant-contact',
        { reason: 'again', raw: { contact_id: 'c1' }, recordId: 'c1' },
        '2026-02-01T00:00:00.000Z',
      );
      assert.strictEqual(s.countQuarantined(), 3);
      assert.deepStrictEqual(
        s
          .quarantined(10)
          .map((r) => r.timesSeen)
          .sort(),
        [1, 3, 4],
      );
      s.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
  });

  describe('#10 a garbage stored checkpoint is repaired by a full reconcile, not a crash loop', () => {
    const T0 = new Date('2026-06-01T12:00:00Z');
    const cases: Array<[string, string, string]> = [
      [CHECKPOINT_WINDOW, 'banana', 'not a date-time'],
      [CHECKPOINT_WINDOW, '9999-01-01T00:00:00.000Z', 'a time in the future'],
      [CHECKPOINT_LAST_FULL, 'banana', 'not a date-time'],
      [CHECKPOINT_LAST_FULL, '+275760-09-13T00:00:00.000Z', 'a time in the future'],
    ];
    for (const [key, value, why] of cases) {
      it(`${key} = ${value}: the run reconciles fully, says so naming the key, and stores good checkpoints`, async () => {
        const src = new FakeSource();
        src.contacts = [
          contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z'),
          contact('new@x.com', 'unsubscribed', '2026-06-01T11:00:00.000Z'),
        ];
        memoryCrm('cc-hard-cp', ['a@x.com', 'new@x.com']);
        const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'cc-hard-cp' }], source: src, start: T0 });
        // a store that had run before: both checkpoints recent, then one of them damaged
        store.setCheckpoint(CHECKPOINT_WINDOW, '2026-06-01T11:30:00.000Z', T0.toISOString());
        store.setCheckpoint(CHECKPOINT_LAST_FULL, '2026-06-01T11:30:00.000Z', T0.toISOString());
        store.setCheckpoint(key, value, T0.toISOString());
        for (let run = 1; run <= 2; run++) {
          const r = await engine.sync();
          if (run === 1) {
            assert.strictEqual(r.detection.mode, 'full');
            assert.ok(
              r.messages.some(
                (m) => m.includes(`stored checkpoint ${key}`) && m.includes(why) && m.includes('full reconcile'),
              ),
              r.messages.join('\n'),
            );
            assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 2 });
          } else {
            assert.strictEqual(r.detection.mode, 'window', 'repaired: the next run is incremental again');
            assert.strictEqual(r.exitCode, 0);
          }
          assert.ok(!Number.isNaN(Date.parse(store.getCheckpoint(CHECKPOINT_WINDOW)!)));
          assert.ok(Date.parse(store.getCheckpoint(CHECKPOINT_LAST_FULL)!) <= T0.getTime() + 3600_000);
        }
        await engine.close();
      });
    }
  });

  describe('#7 a scan is bounded', () => {
    /** A hostile API: every page has one new contact and a next link with a new cursor. */
    function endless(count?: number) {
      let n = 0;
      const requests: string[] = [];
      const scope = nock(API)
        .persist()
        .get('/v3/contacts')
        .query(true)
        .reply(200, (uri) => {
          requests.push(uri);
          n += 1;
          const body: Record<string, unknown> = page([unsubscribed(`p${n}@example.com`)], `/v3/contacts?cursor=c${n}`);
          if (n === 1 && count !== undefined) body['contacts_count'] = count;
          return body;
        });
      return { requests, scope };
    }

    it('asks for include_count on the first page only, and stops at the count the API reported plus a margin', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(
        makeConfig({ detection: { ...makeConfig().detection, pageSize: 2 } }),
        deps,
      );
      const { requests } = endless(4);
      const seen: string[] = [];
      await assert.rejects(
        source.scanUnsubscribed((p) => void seen.push(...p.contacts.map((c) => c.email))),
        (e: unknown) =>
          e instanceof SourceError &&
          /stopped after 4 pages/.test(e.message) &&
          /4 contacts the API reported/.test(e.message),
      );
      assert.strictEqual(pagesForCount(4, 2), 4);
      assert.strictEqual(requests.length, 4, 'no page beyond the bound is requested');
      assert.match(requests[0]!, /include_count=true/);
      assert.doesNotMatch(requests[1]!, /include_count/);
      assert.strictEqual(seen.length, 4);
    });

    it('without a count, stops at source.detection.maxPages (default DEFAULT_MAX_PAGES)', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(
        makeConfig({ detection: { ...makeConfig().detection, maxPages: 7 } }),
        deps,
      );
      const { requests } = endless();
      await assert.rejects(
        source.scanUnsubscribed(() => undefined),
        /stopped after 7 pages .*source\.detection\.maxPages \(7\)/,
      );
      assert.strictEqual(requests.length, 7);
      assert.strictEqual(deps.callCounts.get('constant-contact'), 7);
      assert.ok(
        DEFAULT_MAX_PAGES * 500 >= 1_000_000 && DEFAULT_MAX_PAGES <= 10_000 / 2,
        'the default leaves half the daily budget',
      );
    });

    it('engine: endless cursors end the run with the error, keep the pages read, and leave the checkpoints alone', async () => {
      const { engine, store } = ccEngine({ source: { detection: { maxPages: 3 } } });
      const { requests } = endless();
      await assert.rejects(engine.sync({ full: true }), /stopped after 3 pages/);
      await engine.close();
      assert.strictEqual(requests.length, 3);
      assert.strictEqual(store.countOptOuts().active, 3);
      assert.strictEqual(store.getCheckpoint(CHECKPOINT_WINDOW), null);
      assert.strictEqual(store.getCheckpoint(CHECKPOINT_LAST_FULL), null);
    });

    it('a scan within the bound is untouched (a count of 0 still allows the empty last page)', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(makeConfig(), deps);
      nock(API)
        .get('/v3/contacts')
        .query(true)
        .reply(200, { ...page([], '/v3/contacts?cursor=2'), contacts_count: 0 })
        .get('/v3/contacts')
        .query({ cursor: '2' })
        .reply(200, page([]));
      const stats = await source.scanUnsubscribed(() => undefined);
      assert.strictEqual(stats.pages, 2);
    });

    it('maxPages is in the source codec and in the config JSON Schema (src/config.schema.json), with the same bounds', () => {
      const ajv = new Ajv({ strict: false, allErrors: true });
      const validate = ajv.compile(SOURCE_SCHEMA);
      for (const [maxPages, ok] of [
        [1, true],
        [5000, true],
        [100000, true],
        [0, false],
        [100001, false],
        [2.5, false],
        ['10', false],
      ] as const) {
        const cfg = { type: 'constant-contact', clientId: 'x', detection: { maxPages } };
        assert.strictEqual(!isLeft(ConstantContactConfig.decode(cfg)), ok, `codec, maxPages ${maxPages}`);
        assert.strictEqual(validate(cfg), ok, `schema, maxPages ${maxPages}`);
      }
      const top = JSON.stringify(CONFIG_SCHEMA);
      assert.match(top, /"maxPages":\{"type":"integer","minimum":1,"maximum":100000,"default":5000\}/);
    });
  });

  describe('#1 next-link origin check', () => {
    const hostile = [
      '//evil.example/v3/contacts?cursor=2',
      '/\\evil.example/v3/contacts',
      'http:evil.example/v3/contacts',
      'https://evil.example/v3/contacts?cursor=2',
      'https://api.cc.email:8443/v3/contacts?cursor=2',
      'https://user:pw@api.cc.email/v3/contacts?cursor=2',
      ' \t//evil.example/v3/contacts',
      '\\\\evil.example/v3/contacts',
    ];
    for (const href of hostile) {
      it(`refuses ${JSON.stringify(href)} with an error naming the link and the configured origin`, () => {
        assert.throws(
          () => resolveNextHref(BASE, href),
          (e: unknown) =>
            e instanceof SourceError &&
            /not to the configured API origin https:\/\/api\.cc\.email/.test(e.message) &&
            /_links\.next\.href/.test(e.message),
        );
      });
    }
    it('keeps host-relative, same-origin absolute and proxy-prefixed links working', () => {
      assert.strictEqual(
        resolveNextHref(BASE, '/v3/contacts?cursor=abc%3D&limit=500'),
        'https://api.cc.email/v3/contacts?cursor=abc%3D&limit=500',
      );
      assert.strictEqual(
        resolveNextHref(BASE, 'https://API.cc.email:443/v3/contacts?cursor=abc'),
        'https://api.cc.email/v3/contacts?cursor=abc',
      );
      assert.strictEqual(
        resolveNextHref('http://127.0.0.1:8080/cc/v3', '/v3/contacts?cursor=abc'),
        'http://127.0.0.1:8080/cc/v3/contacts?cursor=abc',
      );
      assert.strictEqual(
        resolveNextHref('http://127.0.0.1:8080/cc/v3', 'http://127.0.0.1:8080/v3/contacts?cursor=abc'),
        'http://127.0.0.1:8080/cc/v3/contacts?cursor=abc',
      );
      // http: with the base's own scheme is path-relative by the URL standard: it stays on the base origin
      assert.strictEqual(
        new URL(resolveNextHref('http://127.0.0.1:8080/v3', 'http:evil.example/v3')).origin,
        'http://127.0.0.1:8080',
      );
    });

    it('source: the page carrying a hostile link is not handed on, and the token never leaves the API host', async () => {
      const deps = makeDeps(kvWithAccessToken(TOKEN));
      const source = createConstantContactSource(makeConfig(), deps);
      nock(API)
        .get('/v3/contacts')
        .query(true)
        .reply(200, page([unsubscribed('first@example.com')], '/v3/contacts?cursor=2'))
        .get('/v3/contacts')
        .query({ cursor: '2' })
        .reply(200, page([unsubscribed('second@example.com')], '//evil.example/v3/contacts?cursor=3'));
      const evil = nock('https://evil.example')
        .get(/.*/)
        .reply(200, page([unsubscribed('planted@example.com')]));
      const seen: string[] = [];
      await assert.rejects(
        source.scanUnsubscribed((p) => void seen.push(...p.contacts.map((c) => c.email))),
        (e: unknown) => e instanceof SourceError && /evil\.example/.test(e.message) && /rejected/.test(e.message),
      );
      assert.deepStrictEqual(seen, ['first@example.com'], 'the page with the hostile link is rejected whole');
      assert.ok(!evil.isDone(), 'no request went to evil.example');
    });

    it('engine: nothing from a page with a hostile link is committed, the checkpoint does not move, the run says why', async () => {
      const { engine, store } = ccEngine();
      nock(API)
        .get('/v3/contacts')
        .query(true)
        .reply(200, page([unsubscribed('first@example.com')], '/v3/contacts?cursor=2'))
        .get('/v3/contacts')
        .query({ cursor: '2' })
        .reply(200, page([unsubscribed('second@example.com')], 'http:evil.example/v3/contacts?cursor=3'));
      const evil = nock('http://evil.example')
        .get(/.*/)
        .reply(200, page([unsubscribed('planted@example.com')]));
      await assert.rejects(engine.sync({ full: true }), /points to http:\/\/evil\.example/);
      await engine.close();
      const known = store.knownOptOuts(['first@example.com', 'second@example.com', 'planted@example.com']);
      assert.deepStrictEqual([...known.keys()], ['first@example.com']);
      assert.strictEqual(store.getCheckpoint('cc.optout_window.before'), null);
      assert.strictEqual(store.getCheckpoint('cc.last_full_reconcile'), null);
      assert.ok(!evil.isDone());
    });
  });
});
