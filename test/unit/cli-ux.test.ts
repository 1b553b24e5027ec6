/**
 * Command line experience (issue 8 items 16, 17, 21, 22), in-process: the multi-bar rendering on a fake TTY,
 * the engine stopping on an AbortSignal between batches, backfill --since reading only its window, parked
 * records named in the summary, readable connector state, the dry-run plan file, and commander parsing of
 * repeated --target and --version.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Writable } from 'stream';
import { FakeSource, contact, testConfig, testRegistry } from '../helpers';
import { memoryCrm } from '../fixtures/memory-connector';
import { Engine, ProgressEvent, RunSummary } from '../../src/engine';
import { SqliteStateStore } from '../../src/store/sqlite';
import { fakeClock } from '../../src/http/clock';
import { memoryLogger } from '../../src/log';
import {
  buildProgram,
  interruptible,
  progressBar,
  readable,
  renderSummary,
  writePlan,
  exitQuietlyOnEpipe,
} from '../../src/cli';

const T0 = new Date('2026-06-01T12:00:00Z');

/** A terminal as cli-progress sees one: isTTY, columns, and everything written kept in order. */
class FakeTty extends Writable {
  isTTY = true;
  columns = 140;
  chunks: string[] = [];
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(chunk.toString());
    cb();
  }
  text(): string {
    return this.chunks.join('');
  }
}

const strip = (s: string): string => s.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[78]/g, '');

function engineWith(opts: {
  emails: string[];
  crm: string;
  batchSize?: number;
  onProgress?: (e: ProgressEvent) => void;
  source?: FakeSource;
}) {
  const src = opts.source ?? new FakeSource();
  if (!opts.source)
    src.contacts = opts.emails.map((e, i) =>
      contact(e, 'unsubscribed', new Date(Date.UTC(2026, 4, 1 + i)).toISOString()),
    );
  const crm = memoryCrm(opts.crm, opts.emails);
  const registry = testRegistry();
  const base = testConfig(registry, [{ name: 'crm', crm: opts.crm }]);
  const config = { ...base, delivery: { ...base.delivery, batchSize: opts.batchSize ?? 50 } };
  const store = new SqliteStateStore(':memory:');
  const clock = fakeClock(T0);
  const engine = new Engine({
    config,
    store,
    registry,
    source: () => src,
    clock,
    logger: memoryLogger(),
    random: () => 0.5,
    onProgress: opts.onProgress,
  });
  return { engine, store, crm, src, clock };
}

describe('cli ux: progress bars (item 17)', () => {
  it('one line per phase and per target on a TTY, the scan bar sized by the reported count, the summary on a fresh line', async () => {
    const tty = new FakeTty();
    const bar = progressBar(true, tty);
    assert.ok(bar.onProgress, 'a TTY stream gets bars');
    bar.onProgress({ phase: 'scan', pages: 1, contacts: 500, optOuts: 480, total: 5000 });
    await new Promise((r) => setTimeout(r, 250)); // the multi-bar redraws on its own timer
    assert.match(
      strip(tty.text()),
      /scan\s+\|[^|]*\| 500\/5000 contacts/,
      'the first page fills a tenth of the bar, not all of it',
    );
    bar.onProgress({ phase: 'scan', pages: 10, contacts: 5000, optOuts: 4800, total: 5000 });
    // HubSpot and Salesforce deliver at the same time
    bar.onProgress({ phase: 'deliver', target: 'hubspot', done: 100, total: 4800 });
    bar.onProgress({ phase: 'deliver', target: 'salesforce', done: 200, total: 4800 });
    bar.onProgress({ phase: 'deliver', target: 'hubspot', done: 4800, total: 4800 });
    bar.onProgress({ phase: 'deliver', target: 'salesforce', done: 4800, total: 4800 });
    bar.stop();
    bar.stop(); // idempotent: a second stop must not redraw over what follows
    const all = tty.text();
    assert.ok(
      all.includes('\x1b[?25l') && all.includes('\x1b[?25h'),
      'the cursor is hidden while drawing and shown again',
    );
    assert.ok(all.lastIndexOf('\x1b[?7h') > all.lastIndexOf('\x1b[?7l'), 'line wrap is restored');
    // the final drawing, after the cursor is shown again
    const final = strip(all.slice(all.lastIndexOf('\x1b[?25h')));
    const lines = final.split('\n');
    assert.equal(lines.length, 4, `three bars on three lines, then a fresh line: ${JSON.stringify(final)}`);
    assert.match(lines[0]!, /^scan\s+\|.*\| 5000\/5000 contacts, 4800 opted out, 10 pages/);
    assert.match(lines[1]!, /^hubspot\s+\|.*\| 4800\/4800\s+100%/);
    assert.match(lines[2]!, /^salesforce\s+\|.*\| 4800\/4800\s+100%/);
    assert.equal(lines[3], '', 'the summary that follows starts at the beginning of an empty line');
    assert.ok(all.endsWith('\n'));
  });

  it('a scan without a reported count shows counts, not a full bar; later events after stop() draw new bars (the demo)', () => {
    const tty = new FakeTty();
    const bar = progressBar(true, tty);
    bar.onProgress!({ phase: 'scan', pages: 1, contacts: 50, optOuts: 50, total: null });
    bar.stop();
    const first = strip(tty.text());
    assert.match(first, /scan\s+50 contacts, 50 opted out, 1 pages \(total not reported\)/);
    assert.doesNotMatch(first, /scan\s+\|/, 'no bar that would read as complete');
    const n = tty.chunks.length;
    bar.onProgress!({ phase: 'deliver', target: 'crm', done: 1, total: 2 });
    bar.stop();
    assert.match(strip(tty.chunks.slice(n).join('')), /crm\s+\|.*\| 1\/2\s+50%/);
  });

  it('no bars when the stream is not a terminal or progress is off', () => {
    const pipe = new FakeTty();
    pipe.isTTY = false;
    assert.equal(progressBar(true, pipe).onProgress, undefined);
    assert.equal(progressBar(false, new FakeTty()).onProgress, undefined);
  });
});

describe('cli ux: interruption (item 16)', () => {
  it('an aborted signal stops delivery after the batch in hand; the rest stays queued and a rerun delivers it once', async () => {
    const emails = Array.from({ length: 10 }, (_, i) => `p${i}@x.com`);
    const ac = new AbortController();
    const { engine, store, crm } = engineWith({
      emails,
      crm: 'sig1',
      batchSize: 2,
      onProgress: (e) => {
        if (e.phase === 'deliver' && e.done >= 4) ac.abort();
      },
    });
    const r = await engine.backfill({ signal: ac.signal });
    assert.equal(r.interrupted, true);
    assert.equal(r.targets.crm!.outcomes.applied, 4, 'two batches, then stop');
    assert.equal(r.targets.crm!.queued, 6);
    assert.equal(r.exitCode, 3);
    const again = await engine.backfill();
    assert.equal(again.interrupted, undefined);
    assert.equal(again.targets.crm!.outcomes.applied, 6);
    assert.equal(again.exitCode, 0);
    assert.equal(crm.writes, 10, 'every email written exactly once');
    assert.equal(store.targetStatus(['crm'], T0)[0]!.queued, 0);
  });

  it('an aborted signal stops detection after the committed page: the checkpoint does not move, delivery does not start', async () => {
    const emails = Array.from({ length: 6 }, (_, i) => `d${i}@x.com`);
    const ac = new AbortController();
    const { engine, store, crm } = engineWith({
      emails,
      crm: 'sig2',
      onProgress: (e) => {
        if (e.phase === 'scan') ac.abort();
      },
    });
    const r = await engine.sync({ signal: ac.signal });
    assert.equal(r.interrupted, true);
    assert.equal(r.detection.complete, false);
    assert.equal(r.detection.pages, 1, 'no page requested after the signal');
    assert.equal(crm.writes, 0);
    assert.equal(
      store.getCheckpoint('cc.optout_window.before'),
      null,
      'a full reconcile that did not finish sets no checkpoint',
    );
    const again = await engine.sync();
    assert.equal(again.exitCode, 0);
    assert.equal(crm.writes, 6);
  });

  it('the first signal restores the terminal at once, aborts the run, and no bar is drawn again by the batch in hand', async () => {
    const listeners = process.listenerCount('SIGINT');
    const tty = new FakeTty();
    const err = new FakeTty();
    const bar = progressBar(true, tty);
    const control = interruptible(err);
    try {
      bar.onProgress!({ phase: 'deliver', target: 'hubspot', done: 5, total: 100 });
      await new Promise((r) => setTimeout(r, 150));
      process.emit('SIGINT', 'SIGINT');
      assert.equal(control.signal.aborted, true);
      assert.equal(control.received(), 'SIGINT');
      const all = tty.text();
      assert.ok(all.lastIndexOf('\x1b[?25h') > all.lastIndexOf('\x1b[?25l'), 'cursor shown again');
      assert.ok(all.lastIndexOf('\x1b[?7h') > all.lastIndexOf('\x1b[?7l'), 'line wrap on again');
      assert.match(err.text(), /stopping after the batch in hand/);
      const n = tty.chunks.length;
      bar.onProgress!({ phase: 'deliver', target: 'hubspot', done: 10, total: 100 });
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(tty.chunks.length, n, 'nothing drawn after the signal');
    } finally {
      control.dispose();
      bar.stop();
    }
    assert.equal(process.listenerCount('SIGINT'), listeners, 'handlers removed after the run');
  });

  it('EPIPE on stdout exits quietly with 0; other stream errors are not swallowed', () => {
    const s = new Writable({ write: (_c, _e, cb) => cb() });
    let code: number | null = null;
    exitQuietlyOnEpipe(s, (c) => (code = c));
    s.emit('error', Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
    assert.equal(code, 0);
    assert.throws(() => s.emit('error', Object.assign(new Error('boom'), { code: 'EIO' })), /boom/);
  });
});

describe('cli ux: say why (item 22)', () => {
  it('backfill --since reads only the opt-out window since that date, not the whole unsubscribed set', async () => {
    const src = new FakeSource();
    src.contacts = [
      contact('old@x.com', 'unsubscribed', '2026-01-01T00:00:00.000Z'),
      contact('new@x.com', 'unsubscribed', '2026-05-20T00:00:00.000Z'),
    ];
    const { engine, crm } = engineWith({ emails: ['old@x.com', 'new@x.com'], crm: 'since1', source: src });
    const r = await engine.backfill({ since: '2026-05-01T00:00:00.000Z' });
    assert.equal(src.fullScans, 0, 'no full scan');
    assert.equal(src.windowCalls.length, 1);
    assert.equal(src.windowCalls[0]!.after, '2026-05-01T00:00:00.000Z');
    assert.equal(r.detection.mode, 'window');
    assert.equal(r.detection.contactsSeen, 1);
    assert.deepEqual(r.targets.crm!.outcomes, { applied: 1 });
    assert.deepEqual(crm.delivered.flat(), ['new@x.com']);
  });

  it('a run names the records it parked, with the reason, the first few and a count', async () => {
    const emails = Array.from({ length: 8 }, (_, i) => `bad${i}@x.com`);
    const { engine, crm } = engineWith({ emails, crm: 'park1' });
    for (const e of emails) crm.failPermanent.add(e);
    const r = await engine.sync();
    const t = r.targets.crm!;
    assert.equal(t.parked, 8);
    assert.equal(t.parkedRecords!.length, 5);
    assert.deepEqual(t.parkedRecords![0], { email: 'bad0@x.com', message: 'rejected by CRM' });
    const text = renderSummary(r);
    assert.match(text, /parked by this run \(8; fix the cause, then `cc-optout requeue --target crm`\):/);
    assert.match(text, /\n {4}bad0@x\.com: rejected by CRM\n/);
    assert.match(text, /\.\.\. and 3 more/);
  });

  it('status shows connector state as words, not JSON', () => {
    const s = readable({
      day: '2026-12-01',
      used: 12,
      limit: 10000,
      batchDecision: { mode: 'per-email', reason: '403 on batch' },
    });
    assert.equal(s, 'day 2026-12-01, used 12, limit 10000, batch decision (mode per-email, reason 403 on batch)');
    assert.doesNotMatch(s, /[{}"]/);
  });

  it('a dry-run plan goes to a file (CSV or JSON by extension or --format); the summary prints the count and the path', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-plan-'));
    try {
      const plan = [
        {
          target: 'hubspot',
          email: 'a@x.com',
          kind: 'planned' as const,
          recordIds: ['101'],
          action: 'unsubscribe-all',
        },
        {
          target: 'salesforce',
          email: 'b@x.com',
          kind: 'not-found' as const,
          recordIds: [],
          message: 'no Contact/Lead with this email',
        },
      ];
      writePlan(path.join(dir, 'p.json'), plan);
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, 'p.json'), 'utf8')), plan);
      writePlan(path.join(dir, 'p.csv'), plan);
      const csv = fs.readFileSync(path.join(dir, 'p.csv'), 'utf8').trim().split('\n');
      assert.equal(csv[0], 'target,email,kind,crm_record_ids,action,message');
      assert.equal(csv[2], 'salesforce,b@x.com,not-found,,,no Contact/Lead with this email');
      writePlan(path.join(dir, 'p.out'), plan, 'json');
      assert.equal((JSON.parse(fs.readFileSync(path.join(dir, 'p.out'), 'utf8')) as unknown[]).length, 2);
      assert.equal(fs.statSync(path.join(dir, 'p.csv')).mode & 0o777, 0o600);
      const summary = {
        command: 'backfill',
        dryRun: true,
        runId: 1,
        startedAt: T0.toISOString(),
        durationMs: 5,
        targets: {},
        apiCalls: {},
        quarantined: 0,
        exitCode: 0,
        messages: [],
        plan,
      } as unknown as RunSummary;
      summary.detection = {
        mode: 'skipped',
        pages: 0,
        contactsSeen: 0,
        optOutsSeen: 0,
        newOptOuts: 0,
        resubscribed: 0,
        skippedNoEmail: 0,
        quarantined: 0,
        complete: true,
      };
      const text = renderSummary(summary, path.join(dir, 'p.csv'));
      assert.match(text, /plan: 2 entries written to .*p\.csv/);
      assert.doesNotMatch(text, /a@x\.com/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cli ux: consistency (item 21)', () => {
  function parsed(args: string[]): Record<string, unknown> {
    const program = buildProgram();
    let seen: Record<string, unknown> = {};
    for (const c of program.commands) {
      c.action((o: Record<string, unknown>) => {
        seen = { command: c.name(), ...o };
      });
    }
    program.parse(['node', 'cli', ...args]);
    return seen;
  }

  for (const cmd of ['sync', 'backfill', 'requeue']) {
    it(`${cmd}: --target is repeatable and keeps every value`, () => {
      assert.deepEqual(parsed([cmd, '--target', 'hubspot', '--target', 'salesforce']).target, [
        'hubspot',
        'salesforce',
      ]);
    });
  }

  it('--version prints the package version; every command help shows the global options', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as {
      version: string;
    };
    const program = buildProgram();
    let written = '';
    program.configureOutput({ writeOut: (s) => (written += s), writeErr: (s) => (written += s) });
    assert.throws(
      () => program.parse(['node', 'cli', '--version']),
      (e: { code?: string }) => e.code === 'commander.version',
    );
    assert.equal(written.trim(), pkg.version);
    for (const c of buildProgram().commands) {
      const help = c.helpInformation();
      assert.match(
        help,
        /Global Options:[\s\S]*--config <path>[\s\S]*--json/,
        `${c.name()} --help shows the global options`,
      );
    }
  });

  it('the README names only options that exist', () => {
    const readme = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'README.md'), 'utf8');
    const program = buildProgram();
    const rows = readme.split('\n').filter((l) => /^\| `[a-z]/.test(l));
    assert.ok(rows.length >= 10);
    for (const row of rows) {
      const usage = /^\| `([^`]+)`/.exec(row)![1]!;
      const words = usage.split(' ');
      let cmd = program.commands.find((c) => c.name() === words[0]);
      assert.ok(cmd, `README command ${words[0]}`);
      if (words[1] && cmd.commands.some((c) => c.name() === words[1]))
        cmd = cmd.commands.find((c) => c.name() === words[1])!;
      const flags = [...usage.matchAll(/--[a-z-]+/g)].map((m) => m[0]);
      for (const f of flags) {
        const known = [...cmd.options, ...program.options].some(
          (o) => o.long === f || (f.startsWith('--no-') && o.long === f),
        );
        assert.ok(known, `README: ${usage} names ${f}, which ${cmd.name()} does not have`);
      }
    }
    for (const need of [
      'quarantine [--limit N]',
      'emulate [--contacts N] [--seed S] [--dir DIR] [--port N]',
      'demo [--contacts N] [--seed S] [--new-opt-outs N] [--dir DIR]',
    ]) {
      assert.ok(readme.includes(need), `README documents ${need}`);
    }
  });
});
