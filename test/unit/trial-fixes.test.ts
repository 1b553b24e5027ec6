/**
 * Defects found by a new user's trial and an attacker's trial of the hardened build (issue 8): each test
 * failed before its fix.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { isLeft } from 'fp-ts/Either';
import { SecureUrl, isSecretKey } from '../../src/codec';
import { parseJsonText } from '../../src/config';
import { parseDate, writePlan } from '../../src/cli';
import { resolveNextHref } from '../../src/source/constant-contact';
import { formatErrors } from '../../src/codec';
import { FakeSource, contact, runCliSync, testEngine } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';
import { SqliteStateStore } from '../../src/store/sqlite';

const HS = { name: 'hubspot', connector: 'hubspot', config: { auth: { type: 'service-key', serviceKey: 'k' } } };

describe('trial fixes (issue 8, found by the new-user and attacker trials)', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-trial-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('--since dates are taken as typed', () => {
    const now = new Date('2026-12-01T10:00:00Z');
    it('a calendar date or a zoned date-time', () => {
      assert.equal(parseDate('2026-02-28', '--since', now), '2026-02-28T00:00:00.000Z');
      assert.equal(parseDate('2024-02-29', '--since', now), '2024-02-29T00:00:00.000Z');
      assert.equal(parseDate('2026-06-01T12:30:00+02:00', '--since', now), '2026-06-01T10:30:00.000Z');
    });
    for (const [v, why] of [
      ['2026-02-30', /not a date in the calendar/],
      ['2025-02-29', /not a date in the calendar/],
      ['2026-13-01', /not a date in the calendar/],
      ['2026-06-01T25:00:00Z', /not a time of day/],
      ['2026-06-01T10:00:00', /time zone/],
      ['2099-01-01', /in the future/],
      ['yesterday', /expected a date/],
    ] as const) {
      it(`refuses ${v}, naming the option`, () =>
        assert.throws(
          () => parseDate(v, '--since', now),
          (e: Error) => /^--since: got "/.test(e.message) && why.test(e.message),
        ));
    }
  });

  describe('URLs never carry credentials', () => {
    it('a user name or password in a URL is refused, and the password is not echoed', () => {
      for (const u of [
        'https://hsuser:hspass456@api.hubapi.com',
        'http://user:pw1234@127.0.0.1:1',
        'https://token@api.cc.email/v3',
      ]) {
        const r = SecureUrl.decode(u);
        assert.ok(isLeft(r), u);
        const text = isLeft(r) ? formatErrors(r.left, 'baseUrl').join('\n') : '';
        assert.match(text, /user name or password in the URL is not allowed/);
        assert.ok(!/hspass456|pw1234|token@/.test(text), text);
      }
    });
  });

  describe('config files may hold comments, as the README shows', () => {
    it('// and /* */ comments parse; a syntax error still names its line', () => {
      const text = '{\n  // the store\n  "store": { "path": "./s.db" }, /* block\n comment */ "targets": []\n}\n';
      assert.deepEqual(parseJsonText(text, 'c.json'), { store: { path: './s.db' }, targets: [] });
      assert.throws(() => parseJsonText('{\n  // a comment\n  "a": 1,\n  "b": \n}', 'c.json'), /line 5/);
      // "//" inside a string is not a comment
      assert.deepEqual(parseJsonText('{"u": "https://x.example//y"}', 'c.json'), { u: 'https://x.example//y' });
    });
  });

  describe('Constant Contact next links stay under the API path', () => {
    it('the same origin but another path (behind a proxy) is refused', () => {
      assert.throws(
        () => resolveNextHref('https://proxy.example/cc/v3', '/admin/export?all=1'),
        /outside the API path \/cc\/v3/,
      );
      assert.equal(
        resolveNextHref('https://proxy.example/cc/v3', '/v3/contacts?cursor=2'),
        'https://proxy.example/cc/v3/contacts?cursor=2',
      );
      assert.throws(() => resolveNextHref('https://api.cc.email/v3', '/v3/../admin'), /outside the API path/);
    });
  });

  describe('plan and audit files', () => {
    it('a dry-run plan replaces an existing 0644 file with a 0600 one (written through a temporary file)', () => {
      const file = path.join(dir, 'plan.csv');
      fs.writeFileSync(file, 'old', { mode: 0o644 });
      fs.chmodSync(file, 0o644);
      writePlan(file, [{ target: 'hubspot', email: 'a@example.com', kind: 'applied', recordIds: ['1'] }]);
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      assert.match(fs.readFileSync(file, 'utf8'), /a@example\.com/);
    });

    it('--output without --dry-run, or into a folder that does not exist, exits 2 before any run', () => {
      const cfg = path.join(dir, 'c.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({ source: { type: 'constant-contact', clientId: 'x', clientSecret: 'y' }, targets: [HS] }),
      );
      const r = runCliSync(['--config', cfg, 'backfill', '--output', path.join(dir, 'p.csv')]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--output .*add --dry-run/);
      const r2 = runCliSync(['--config', cfg, 'sync', '--dry-run', '--output', path.join(dir, 'nodir', 'p.csv')]);
      assert.equal(r2.code, 2, r2.stderr);
      assert.match(r2.stderr, /--output .*its folder cannot take the file/);
      assert.ok(
        !fs.existsSync(path.join(dir, 'state.db')) && !fs.existsSync(path.join(dir, '.cc-optout')),
        'no store was created',
      );
    });
  });

  it('audit --output FILE.json writes JSON (the format follows the extension unless --format says otherwise)', () => {
    const cfg = path.join(dir, 'c.json');
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        store: { path: './state.db' },
        source: { type: 'constant-contact', clientId: 'x' },
        targets: [HS],
      }),
    );
    new SqliteStateStore(path.join(dir, 'state.db')).close();
    const r = runCliSync(['--config', cfg, 'audit', '--output', path.join(dir, 'a.json')]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'a.json'), 'utf8')), { rows: [], resubscribed: [] });
    const r2 = runCliSync(['--config', cfg, '--json', 'audit', '--format', 'csv', '--output', path.join(dir, 'a.csv')]);
    assert.equal(r2.code, 0, r2.stderr);
    assert.deepEqual(JSON.parse(r2.stdout), { file: path.join(dir, 'a.csv'), format: 'csv', rows: 0 });
    assert.match(fs.readFileSync(path.join(dir, 'a.csv'), 'utf8'), /^email,cc_contact_id,target/);
  });

  it("the delivery history says how a row was queued: a backfill run's scan is origin backfill, a sync's is sync", async () => {
    const src = new FakeSource();
    src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
    memoryCrm('origin-crm', ['a@x.com', 'b@x.com']);
    const { engine, store, clock } = testEngine({ targets: [{ name: 'crm', crm: 'origin-crm' }], source: src });
    await engine.backfill();
    src.contacts.push(contact('b@x.com', 'unsubscribed', new Date(clock.now().getTime() - 60_000).toISOString()));
    clock.advance(60_000);
    await engine.sync();
    const origins = Object.fromEntries(store.deliveryHistory(null).map((e) => [e.email, e.origin]));
    assert.deepEqual(origins, { 'a@x.com': 'backfill', 'b@x.com': 'sync' });
  });

  it("an interrupted run records the signal's exit code (130 / 143) in its summary and run row", async () => {
    const src = new FakeSource();
    src.contacts = [contact('a@x.com', 'unsubscribed', '2026-05-01T00:00:00.000Z')];
    memoryCrm('sig-crm', ['a@x.com']);
    const { engine, store } = testEngine({ targets: [{ name: 'crm', crm: 'sig-crm' }], source: src });
    const ac = new AbortController();
    ac.abort('SIGTERM');
    const r = await engine.backfill({ signal: ac.signal });
    assert.equal(r.exitCode, 143);
    assert.equal(store.recentRuns(1)[0]!.exitCode, 143);
  });

  it('unlock refuses to remove the lock of a live process on this host (unless --force)', () => {
    const cfg = path.join(dir, 'c.json');
    fs.writeFileSync(
      cfg,
      JSON.stringify({
        store: { path: './state.db' },
        source: { type: 'constant-contact', clientId: 'x' },
        targets: [HS],
      }),
    );
    const s = new SqliteStateStore(path.join(dir, 'state.db'));
    s.acquireRunLock({
      owner: 'live',
      pid: process.pid,
      host: os.hostname(),
      command: 'backfill',
      now: new Date().toISOString(),
    });
    s.close();
    const r = runCliSync(['--config', cfg, 'unlock']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /held by a live process: cc-optout backfill \(pid \d+ on this host/);
    const j = runCliSync(['--config', cfg, '--json', 'unlock']);
    assert.equal(j.code, 3);
    assert.match(
      (JSON.parse(j.stdout) as { error: string; exitCode: number }).error,
      /live process/,
      '--json: the error is a JSON object on stdout',
    );
    const f = runCliSync(['--config', cfg, 'unlock', '--force']);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /run lock removed/);
  });

  it('a file path is not a secret: an unreadable key file is named in the message', () => {
    assert.equal(isSecretKey('privateKeyPath'), false);
    assert.equal(isSecretKey('privateKey'), true);
  });

  describe('read-only commands never create a store', () => {
    it('status on a store path that holds nothing exits 2 naming store.path; an unset ${VAR} in store.path is an error', () => {
      const cfg = path.join(dir, 'c.json');
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          store: { path: './typo/state.db' },
          source: { type: 'constant-contact', clientId: '${CC_ID}' },
          targets: [HS],
        }),
      );
      const r = runCliSync(['--config', cfg, 'status']);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /store\.path: .*typo\/state\.db: no state store here/);
      assert.ok(!fs.existsSync(path.join(dir, 'typo')), 'no folder created');
      fs.writeFileSync(
        cfg,
        JSON.stringify({
          store: { path: '${STORE_P}' },
          source: { type: 'constant-contact', clientId: 'x' },
          targets: [HS],
        }),
      );
      const r2 = runCliSync(['--config', cfg, 'status']);
      assert.equal(r2.code, 2, r2.stderr);
      assert.match(r2.stderr, /store\.path: environment variable STORE_P is not set/);
      assert.deepEqual(fs.readdirSync(dir), ['c.json']);
    });
  });
});
