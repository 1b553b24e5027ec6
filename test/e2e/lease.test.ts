/**
 * End to end through the CLI (issue 8 #20): the run lock is a lease. A lock left by a process that died on
 * another host (a container restart) no longer blocks runs for 6 hours; a live lease still does; `unlock` says
 * whether a lock was held.
 */
import { strict as assert } from 'assert';
import { Harness, runCli, startHarness } from './helpers';
import { SqliteStateStore } from '../../src/store/sqlite';

describe('e2e: the run lock is a lease (a holder that died on another host is taken over)', function () {
  this.timeout(120_000);
  let h: Harness;
  before(async () => {
    h = await startHarness({ contacts: 400, seed: 812 });
  });
  after(() => h?.stop());

  const putLock = (renewedAgoMs: number, leaseMs = 90_000): void => {
    const s = new SqliteStateStore(h.storePath);
    const now = Date.now() - renewedAgoMs;
    s.acquireRunLock({
      owner: 'old-container',
      pid: 1,
      host: 'container-before-restart',
      command: 'sync',
      now: new Date(now).toISOString(),
      leaseMs,
    });
    s.close();
  };

  it('a lease renewed moments ago on another host blocks (exit 3, names the holder and the lease)', async () => {
    putLock(1_000);
    const r = await runCli(h, ['sync']);
    assert.equal(r.code, 3, r.stderr);
    assert.match(
      r.stderr,
      /not started: another cc-optout sync is running \(pid 1 on container-before-restart.*valid until/,
    );
  });

  it('the same lock, not renewed for more than 90 s (its holder died in a restart), is taken over: the sync runs', async () => {
    putLock(120_000);
    const r = await runCli(h, ['--json', 'sync']);
    assert.equal(r.code, 0, r.stderr);
    const s = new SqliteStateStore(h.storePath);
    try {
      assert.equal(s.runLock(), null, 'released after the run');
      assert.equal(s.events(null, ['run-lock-taken-over']).length, 1, 'the takeover is recorded');
    } finally {
      s.close();
    }
  });

  it('unlock says which lock it removed, or that none was held', async () => {
    putLock(0, 3_600_000);
    const r1 = await runCli(h, ['unlock']);
    assert.equal(r1.code, 0, r1.stderr);
    assert.match(
      r1.stdout,
      /run lock removed: it was held by cc-optout sync \(pid 1 on container-before-restart\) since /,
    );
    const r2 = await runCli(h, ['unlock']);
    assert.equal(r2.code, 0, r2.stderr);
    assert.match(r2.stdout, /^no run lock was held/);
  });
});
