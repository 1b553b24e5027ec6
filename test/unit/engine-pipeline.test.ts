/**
 * Detection and delivery pipelined (issue 12): the targets deliver committed pages while the scan goes on;
 * a kill mid-scan loses nothing and the rerun delivers each email once; a target halting mid-scan stops
 * alone; a scan failing mid-way still delivers what it committed, and the run fails as before.
 */
import assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ObservedContact } from '../../src/domain';
import { CHECKPOINT_WINDOW, RunSummary } from '../../src/engine';
import { OptOutSource, ScanStats, SourcePage } from '../../src/source/types';
import { SqliteStateStore } from '../../src/store/sqlite';
import { FakeSource, contact, testEngine } from '../helpers';
import { MemoryCrm, memoryCrm } from '../fixtures/memory-connector';

const T0 = new Date('2026-06-01T12:00:00Z');

function optOuts(n: number, prefix = 'p'): ObservedContact[] {
  return Array.from({ length: n }, (_, i) =>
    contact(
      `${prefix}${String(i).padStart(4, '0')}@x.com`,
      'unsubscribed',
      new Date(Date.UTC(2026, 0, 1) + i * 60_000).toISOString(),
    ),
  );
}

/**
 * A source that serves its contacts in pages with a real pause between them (a rate-limited vendor), and can
 * hang (a process killed mid-scan) or fail after some pages. `served(page)` is told before each page goes out.
 */
class PagedSource implements OptOutSource {
  pageSize = 10;
  pauseMs = 3;
  hangAtPage: number | null = null;
  failAtPage: number | null = null;
  served: (page: number, isLast: boolean) => void = () => undefined;
  constructor(public contacts: ObservedContact[]) {}

  private async pages(list: ObservedContact[], onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
    const count = Math.ceil(list.length / this.pageSize);
    for (let p = 0; p < count; p++) {
      await new Promise((r) => setTimeout(r, this.pauseMs));
      if (p === this.hangAtPage) await new Promise(() => undefined);
      if (p === this.failAtPage) throw new Error('Constant Contact answered HTTP 500 on page ' + p);
      this.served(p, p === count - 1);
      await onPage({
        contacts: list.slice(p * this.pageSize, (p + 1) * this.pageSize),
        skippedNoEmail: 0,
        quarantined: 0,
      });
    }
    return { pages: count, contacts: list.length, skippedNoEmail: 0, quarantined: 0 };
  }

  scanWindow(after: Date, before: Date, onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
    return this.pages(
      this.contacts.filter((c) => c.optedOutAt! >= after.toISOString() && c.optedOutAt! <= before.toISOString()),
      onPage,
    );
  }

  scanUnsubscribed(onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
    return this.pages(this.contacts, onPage);
  }

  async unsubscribedCount(): Promise<number | null> {
    return this.contacts.length;
  }

  async check() {
    return { ok: true, items: [] };
  }
}

function engineFor(src: OptOutSource, targets: { name: string; crm: string }[], storePath?: string, start = T0) {
  return testEngine({ targets, source: src as unknown as FakeSource, storePath, start });
}

/** Every email the CRM was sent, with how often. */
function sends(crm: MemoryCrm): Map<string, number> {
  const m = new Map<string, number>();
  for (const e of crm.delivered.flat()) m.set(e, (m.get(e) ?? 0) + 1);
  return m;
}

function tmpStore(): { file: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-optout-pipeline-'));
  return { file: path.join(dir, 'state.db'), cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

describe('engine: detection and delivery pipelined', () => {
  it('a backfill delivers committed pages before the scan reaches its last page, and every opt-out once', async () => {
    const people = optOuts(205);
    const crm = memoryCrm(
      'pipe-1',
      people.map((c) => c.email),
    );
    const src = new PagedSource(people);
    let deliveredBeforeLastPage = -1;
    src.served = (_p, isLast) => {
      if (isLast) deliveredBeforeLastPage = crm.delivered.flat().length;
    };
    const { engine } = engineFor(src, [{ name: 'crm', crm: 'pipe-1' }]);
    const r = await engine.backfill();
    assert.ok(
      deliveredBeforeLastPage >= 50,
      `delivery started while the scan went on (delivered before the last page: ${deliveredBeforeLastPage})`,
    );
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 205 });
    assert.strictEqual(r.exitCode, 0);
    assert.strictEqual(r.detection.complete, true);
    const s = sends(crm);
    assert.strictEqual(s.size, 205);
    assert.ok(
      [...s.values()].every((n) => n === 1),
      'no email sent twice',
    );
    // the worker took full batches while the scan went on (batchSize 50): no extra CRM calls for pipelining
    assert.deepStrictEqual(
      crm.delivered.map((b) => b.length),
      [50, 50, 50, 50, 5],
    );
  });

  it('a sync (full reconcile) delivers while it scans, too', async () => {
    const people = optOuts(120);
    const crm = memoryCrm(
      'pipe-2',
      people.map((c) => c.email),
    );
    const src = new PagedSource(people);
    let deliveredBeforeLastPage = -1;
    src.served = (_p, isLast) => {
      if (isLast) deliveredBeforeLastPage = crm.delivered.flat().length;
    };
    const { engine, store } = engineFor(src, [{ name: 'crm', crm: 'pipe-2' }]);
    const r = await engine.sync();
    assert.strictEqual(r.detection.mode, 'full');
    assert.ok(deliveredBeforeLastPage > 0, 'delivery started before the last page');
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 120 });
    assert.ok(store.getCheckpoint(CHECKPOINT_WINDOW));
  });

  it('a run killed mid-scan (while its worker waits for pages) loses nothing; the rerun delivers each email exactly once', async () => {
    const { file, cleanup } = tmpStore();
    try {
      const people = optOuts(200);
      const crm = memoryCrm(
        'pipe-3',
        people.map((c) => c.email),
      );
      const src = new PagedSource(people);
      src.hangAtPage = 12; // 12 pages (120 opt-outs) committed, then the process "dies"
      const first = engineFor(src, [{ name: 'crm', crm: 'pipe-3' }], file);
      void first.engine.backfill();
      for (let i = 0; i < 400 && crm.delivered.flat().length < 100; i++) await new Promise((r) => setTimeout(r, 5));
      await new Promise((r) => setTimeout(r, 50));
      assert.strictEqual(crm.delivered.flat().length, 100, 'two full batches went out while the scan ran');
      // a new process on the same store, after the dead holder's lease expired
      const src2 = new PagedSource(people);
      const second = engineFor(src2, [{ name: 'crm', crm: 'pipe-3' }], file, new Date(T0.getTime() + 10 * 60_000));
      const r = await second.engine.backfill();
      assert.strictEqual(r.exitCode, 0, JSON.stringify(r.messages));
      assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 100 });
      const s = sends(crm);
      assert.strictEqual(s.size, 200);
      assert.ok(
        [...s.values()].every((n) => n === 1),
        'each email sent once over both runs',
      );
      assert.strictEqual(crm.records.filter((x) => x.suppressed).length, 200);
      (second.store as SqliteStateStore).close();
      (first.store as SqliteStateStore).close();
    } finally {
      cleanup();
    }
  });

  it('a target that halts mid-scan stops alone: the scan completes and the other target gets everything', async () => {
    const people = optOuts(200);
    const capped = memoryCrm(
      'pipe-4a',
      people.map((c) => c.email),
    );
    capped.haltAfterWrites = 30;
    memoryCrm(
      'pipe-4b',
      people.map((c) => c.email),
    );
    const src = new PagedSource(people);
    const { engine, store } = engineFor(src, [
      { name: 'capped', crm: 'pipe-4a' },
      { name: 'other', crm: 'pipe-4b' },
    ]);
    const r = await engine.backfill();
    assert.strictEqual(r.detection.complete, true);
    assert.strictEqual(r.detection.newOptOuts, 200);
    assert.match(r.targets.capped!.halted ?? '', /quota: daily limit reached/);
    assert.strictEqual(r.targets.capped!.outcomes.applied, 30);
    assert.strictEqual(capped.delivered.length, 1, 'the halted target is not called again in this run');
    assert.strictEqual(r.targets.capped!.queued, 170, 'the rest stays queued');
    assert.deepStrictEqual(r.targets.other!.outcomes, { applied: 200 });
    assert.strictEqual(r.exitCode, 3);
    // every queued row of the halted target waits for its retry time
    assert.strictEqual(store.countDue('capped', new Date('2998-01-01T00:00:00Z')), 0);
  });

  it('a scan failing mid-way: the committed pages are still delivered, the run fails as before, the rerun delivers the rest once', async () => {
    const people = optOuts(200);
    const crm = memoryCrm(
      'pipe-5',
      people.map((c) => c.email),
    );
    const src = new PagedSource(people);
    src.failAtPage = 12;
    const { engine, store } = engineFor(src, [{ name: 'crm', crm: 'pipe-5' }]);
    await assert.rejects(engine.backfill(), /HTTP 500 on page 12/);
    assert.strictEqual(crm.delivered.flat().length, 120, 'the 12 committed pages were delivered');
    const st = store.targetStatus(['crm'], T0)[0]!;
    assert.deepStrictEqual(st.done, { applied: 120 });
    assert.strictEqual(st.queued, 0);
    assert.strictEqual(store.getCheckpoint(CHECKPOINT_WINDOW), null, 'no checkpoint past an incomplete scan');
    src.failAtPage = null;
    const r: RunSummary = await engine.backfill();
    assert.deepStrictEqual(r.targets.crm!.outcomes, { applied: 80 });
    const s = sends(crm);
    assert.strictEqual(s.size, 200);
    assert.ok([...s.values()].every((n) => n === 1));
  });

  it('interrupted mid-scan: the batch in hand finishes, nothing more is taken, the rerun resumes', async () => {
    const people = optOuts(200);
    const crm = memoryCrm(
      'pipe-6',
      people.map((c) => c.email),
    );
    const src = new PagedSource(people);
    const ac = new AbortController();
    src.served = (p) => {
      if (p === 11) ac.abort('SIGINT');
    };
    const { engine } = engineFor(src, [{ name: 'crm', crm: 'pipe-6' }]);
    const r = await engine.backfill({ signal: ac.signal });
    assert.strictEqual(r.interrupted, true);
    assert.strictEqual(r.exitCode, 130);
    assert.strictEqual(r.detection.complete, false);
    const before = crm.delivered.flat().length;
    assert.ok(before <= 100, `at most the batches taken before the signal (${before})`);
    const r2 = await engine.backfill();
    assert.strictEqual(r2.exitCode, 0);
    const s = sends(crm);
    assert.strictEqual(s.size, 200);
    assert.ok([...s.values()].every((n) => n === 1));
  });
});
