/**
 * `cc-optout run` in fleet mode end to end (issue 13, item 6): ONE PostgreSQL, seven Constant Contact accounts
 * under one Constant Contact application (each its own emulated Constant Contact account and tokens and its own
 * HubSpot portal: six registered in the store's registry, plus the config file's own account `default`), and
 * THREE `cc-optout run --workers 2` processes sharing the work.
 *
 * - every opt-out of every account reaches its HubSpot portal, and no HubSpot record is written twice;
 * - no lease is worked by two owners at once (the workers' claim/release log lines per key never overlap, and
 *   every claim carries a higher fence than the one before);
 * - a process SIGKILLed mid-way: its leases are taken over within one lease TTL (`--lease-ttl`);
 * - a process SIGTERMed: it exits 0 and its leases are taken over at once (handed back due now).
 *
 * FLEET_E2E_LOGS=<dir> keeps each process's log lines there (A.log, B.log, C.log) for a look afterwards.
 */
import { strict as assert } from 'assert';
import { ChildProcess, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Client } from 'pg';
import { Emulators, startEmulators } from '../../src/emulators';
import { freshDatabase, pgSkipped } from '../support/postgres';
import { CLI, sleep, waitFor } from './helpers';

const TTL_S = 3;
const APP_ID = 'cc-fleet-e2e-app';
const APP_SECRET = 'cc-fleet-e2e-app-secret-0123456789';
const ACCOUNTS = ['acme', 'globex', 'initech', 'umbrella', 'hooli', 'stark'];

interface Proc {
  name: string;
  child: ChildProcess;
  out: string;
  err: string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

interface LogLine {
  time: string;
  level: string;
  msg: string;
  worker?: string;
  lease?: string;
  fence?: number;
  [k: string]: unknown;
}

function lines(p: Proc): LogLine[] {
  return p.err
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

function accountDoc(e: Emulators, i: number): Record<string, unknown> {
  return {
    source: {
      type: 'constant-contact',
      clientId: '${CC_CLIENT_ID}',
      clientSecret: '${CC_CLIENT_SECRET}',
      refreshToken: `\${CC_REFRESH_TOKEN_${i}}`,
      apiBaseUrl: e.cc.apiBaseUrl,
      authBaseUrl: e.cc.authBaseUrl,
      // lifted for the test: seven accounts polled every second or two
      rateLimit: { perSecond: 200, dailyBudget: 10_000_000 },
      detection: { overlapMinutes: 10, lagMinutes: 0 },
    },
    delivery: { maxAttempts: 12, backoffBaseSeconds: 1, backoffMaxSeconds: 5 },
    targets: [
      {
        name: 'hubspot',
        connector: 'hubspot',
        config: {
          baseUrl: e.hubspot.baseUrl,
          auth: { type: 'service-key', serviceKey: `\${HUBSPOT_SERVICE_KEY_${i}}` },
          suppression: { type: 'unsubscribe-all', batch: 'auto' },
          onlyExistingContacts: true,
        },
      },
    ],
  };
}

describe('e2e: three `cc-optout run --workers 2` on one PostgreSQL (fleet mode)', function () {
  this.timeout(120_000);
  const worlds: Emulators[] = [];
  const procs: Proc[] = [];
  let dir = '';
  let url = '';
  let db: Client | null = null;
  let drop: (() => Promise<void>) | null = null;

  before(function () {
    if (pgSkipped()) this.skip();
  });

  after(async () => {
    if (process.env.FLEET_E2E_LOGS)
      for (const p of procs) fs.writeFileSync(path.join(process.env.FLEET_E2E_LOGS, `${p.name}.log`), p.err);
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await db?.end();
    await drop?.().catch(() => undefined);
    await Promise.all(worlds.map((w) => w.stop()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('shares seven accounts across three processes: disjoint leases, every opt-out once, takeover after SIGKILL, handover on SIGTERM', async () => {
    const t0 = Date.now();
    const database = await freshDatabase('fleet-run');
    url = database.url;
    drop = database.drop;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-fleet-e2e-'));
    // seven accounts (index 0 = the config file's `default`), one application
    for (let i = 0; i <= ACCOUNTS.length; i++)
      worlds.push(
        await startEmulators({ contacts: 80, seed: 1300 + i, cc: { clientId: APP_ID, clientSecret: APP_SECRET } }),
      );
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '',
      HOME: dir,
      CC_CLIENT_ID: APP_ID,
      CC_CLIENT_SECRET: APP_SECRET,
    };
    worlds.forEach((w, i) => {
      env[`CC_REFRESH_TOKEN_${i}`] = w.cc.refreshToken;
      env[`HUBSPOT_SERVICE_KEY_${i}`] = w.hubspot.serviceKey;
    });
    const file = path.join(dir, 'cc-optout.config.json');
    fs.writeFileSync(file, JSON.stringify(accountDoc(worlds[0]!, 0)));

    // the six other accounts, registered the way `accounts add` does
    const { openBackend } = await import('../../src/store/open');
    const backend = await openBackend(url);
    try {
      for (const [i, id] of ACCOUNTS.entries())
        await backend.putAccount({ id, config: accountDoc(worlds[i + 1]!, i + 1) }, new Date().toISOString());
    } finally {
      await backend.close();
    }

    const start = (name: string): Proc => {
      const child = spawn(
        process.execPath,
        [
          CLI,
          '--config',
          file,
          '--store',
          url,
          '--log-format',
          'json',
          '--log-level',
          'debug',
          'run',
          '--workers',
          '2',
          '--lease-ttl',
          `${TTL_S}s`,
          '--every',
          '1s',
          '--listen',
          '127.0.0.1:0',
        ],
        { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const p: Proc = {
        name,
        child,
        out: '',
        err: '',
        exit: new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal }))),
      };
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (p.out += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (p.err += d));
      procs.push(p);
      return p;
    };
    const [a, b, c] = [start('A'), start('B'), start('C')];
    const ownersOf = (p: Proc): Set<string> =>
      new Set(
        lines(p)
          .map((l) => l.worker)
          .filter((w): w is string => typeof w === 'string'),
      );

    db = new Client({ connectionString: url });
    await db.connect();
    const leaseRows = async (): Promise<{ key: string; owner: string | null; fence: number; expires: number }[]> =>
      (
        await db!.query<{ key: string; owner: string | null; fence: string; expires_at: Date | null }>(
          'SELECT key, owner, fence, expires_at FROM cc_leases ORDER BY key',
        )
      ).rows.map((r) => ({
        key: r.key,
        owner: r.owner,
        fence: Number(r.fence),
        expires: r.expires_at ? r.expires_at.getTime() : 0,
      }));

    const allDelivered = (): boolean =>
      worlds.every((w) => {
        const v = w.verify().hubspot;
        return v.notSuppressed.length === 0 && v.secondary.notUnsubscribed.length === 0;
      });

    // 1. the initial opt-outs of all seven accounts reach their portals, the three processes sharing the work
    await waitFor(allDelivered, { timeoutMs: 40_000, intervalMs: 200, what: 'every account delivered' });
    const keys = (await leaseRows()).map((r) => r.key);
    assert.equal(keys.length, 14, `7 account leases + 7 deliver leases: ${keys.join(', ')}`);
    const polledBy = (p: Proc): Set<string> =>
      new Set(
        lines(p)
          .filter((l) => l.msg === 'poll finished')
          .map((l) => String(l.account)),
      );
    const workedBy = [a, b, c].map((p) => polledBy(p).size);
    assert.ok(
      workedBy.filter((n) => n > 0).length >= 2,
      `the work is shared (accounts polled per process: ${workedBy.join(', ')})`,
    );
    const firstPhaseMs = Date.now() - t0;

    // 2. SIGKILL A while it holds leases; new opt-outs everywhere; A's leases are taken over within one TTL
    await waitFor(
      async () => (await leaseRows()).some((r) => ownersOf(a).has(r.owner ?? '') && r.expires > Date.now()),
      {
        timeoutMs: 15_000,
        intervalMs: 20,
        what: 'A to hold a lease',
      },
    );
    const heldByA = (await leaseRows()).filter((r) => ownersOf(a).has(r.owner ?? '') && r.expires > Date.now());
    a.child.kill('SIGKILL');
    const killedAt = Date.now();
    for (const w of worlds) w.addOptOuts(2);
    const takeover = new Map<string, number>();
    await waitFor(
      async () => {
        const rows = await leaseRows();
        for (const h of heldByA) {
          const r = rows.find((x) => x.key === h.key);
          if (!takeover.has(h.key) && r && r.fence > h.fence && !ownersOf(a).has(r.owner ?? ''))
            takeover.set(h.key, Date.now() - killedAt);
        }
        return takeover.size === heldByA.length;
      },
      { timeoutMs: (TTL_S + 5) * 1000, intervalMs: 20, what: "A's leases taken over" },
    );
    const takeoverMs = Math.max(...takeover.values());
    assert.ok(takeoverMs <= TTL_S * 1000 + 1000, `taken over within one TTL (+1 s of claim loop): ${takeoverMs} ms`);
    await waitFor(allDelivered, { timeoutMs: 30_000, intervalMs: 200, what: 'delivered after the SIGKILL' });

    // 3. SIGTERM B while it holds leases: it exits 0 and the others pick its leases up at once
    await waitFor(
      async () => (await leaseRows()).some((r) => ownersOf(b).has(r.owner ?? '') && r.expires > Date.now()),
      {
        timeoutMs: 15_000,
        intervalMs: 20,
        what: 'B to hold a lease',
      },
    );
    for (const w of worlds) w.addOptOuts(2);
    const heldByB = (await leaseRows()).filter((r) => ownersOf(b).has(r.owner ?? '') && r.expires > Date.now());
    b.child.kill('SIGTERM');
    const termAt = Date.now();
    const exitB = await b.exit;
    assert.equal(exitB.code, 0, `B exits 0 on SIGTERM\n${b.err.slice(-3000)}`);
    const handover = new Map<string, number>();
    await waitFor(
      async () => {
        const rows = await leaseRows();
        for (const h of heldByB) {
          const r = rows.find((x) => x.key === h.key);
          if (!handover.has(h.key) && r && r.fence > h.fence && ownersOf(c).has(r.owner ?? ''))
            handover.set(h.key, Date.now() - termAt);
        }
        return handover.size === heldByB.length;
      },
      { timeoutMs: (TTL_S + 5) * 1000, intervalMs: 20, what: "B's leases handed over" },
    );
    const handoverMs = Math.max(...handover.values());
    const releasedDueNow = lines(b).filter((l) => l.msg === 'lease releasing' && l.nextDueAt === 'now').length;
    assert.ok(releasedDueNow >= heldByB.length, `B released its leases due now (${releasedDueNow})`);
    assert.ok(handoverMs < TTL_S * 1000, `handed over before the lease could expire: ${handoverMs} ms`);
    await waitFor(allDelivered, { timeoutMs: 30_000, intervalMs: 200, what: 'delivered after the SIGTERM' });

    // 4. C alone: stop it too
    c.child.kill('SIGTERM');
    assert.equal((await c.exit).code, 0, c.err.slice(-3000));

    // every opt-out of every account reached its portal, and no HubSpot record was written twice
    for (const [i, w] of worlds.entries()) {
      const v = w.verify().hubspot;
      assert.deepEqual(v.notSuppressed, [], `account ${i}: nothing missing`);
      assert.deepEqual(v.repeatedWrites, [], `account ${i}: no record written twice`);
      assert.deepEqual(v.secondary.repeatedWrites, [], `account ${i}: no secondary address written twice`);
      assert.deepEqual(v.unnecessaryWrites, [], `account ${i}: no unnecessary write`);
    }

    // no key was worked by two owners at once: per key, the [claimed, releasing] windows never overlap (A's
    // windows end at its SIGKILL), and the fences grow
    const windows = new Map<string, { owner: string; fence: number; from: number; to: number }[]>();
    for (const p of procs) {
      const open = new Map<string, { owner: string; fence: number; from: number }>();
      const end = p === a ? killedAt : Number.MAX_SAFE_INTEGER;
      for (const l of lines(p)) {
        if (!l.lease || !l.worker) continue;
        const id = `${l.worker} ${l.lease} ${l.fence}`;
        if (l.msg === 'lease claimed')
          open.set(id, { owner: l.worker, fence: Number(l.fence), from: Date.parse(l.time) });
        if (
          l.msg === 'lease releasing' ||
          l.msg === 'lease lost: another worker took it over; the work in hand stops'
        ) {
          const w = open.get(id);
          if (!w) continue;
          open.delete(id);
          const list = windows.get(l.lease) ?? [];
          list.push({ ...w, to: Date.parse(l.time) });
          windows.set(l.lease, list);
        }
      }
      for (const [id, w] of open) {
        const key = id.split(' ')[1]!;
        const list = windows.get(key) ?? [];
        list.push({ ...w, to: end });
        windows.set(key, list);
      }
    }
    let claims = 0;
    for (const [key, list] of windows) {
      list.sort((x, y) => x.fence - y.fence);
      claims += list.length;
      for (let i = 1; i < list.length; i++) {
        const prev = list[i - 1]!;
        const cur = list[i]!;
        assert.ok(cur.fence > prev.fence, `${key}: fence ${cur.fence} after ${prev.fence}`);
        assert.ok(
          cur.from >= prev.to || cur.owner === prev.owner,
          `${key}: ${cur.owner} (fence ${cur.fence}) claimed at ${new Date(cur.from).toISOString()} while ${prev.owner} (fence ${prev.fence}) held it until ${new Date(prev.to).toISOString()}`,
        );
      }
    }
    assert.ok(claims > 14, `leases went round (${claims} claims)`);

    // what `status` shows per account: last and next poll, calls spent today, share of the budget
    const { fleetStatus } = await import('../../src/fleet/status');
    const { createPgLeases, createPgBudget } = await import('../../src/fleet/postgres');
    const statusBackend = await openBackend(url);
    try {
      const pool = (statusBackend as unknown as { pool: import('pg').Pool }).pool;
      const st = await fleetStatus({
        backend: statusBackend,
        leases: createPgLeases(pool),
        budget: createPgBudget(pool),
        app: APP_ID,
      });
      assert.deepEqual(st.accounts.map((x) => x.id).sort(), ['default', ...ACCOUNTS].sort());
      for (const x of st.accounts) {
        assert.ok(x.lastPollAt && x.nextPollAt, `${x.id}: polled and scheduled`);
        assert.ok(x.callsToday >= 2, `${x.id}: ${x.callsToday} calls today`);
        assert.ok(x.share > 0 && x.share < 1, `${x.id}: share ${x.share}`);
      }
      const shares = st.accounts.reduce((a, x) => a + x.share, 0);
      assert.ok(Math.abs(shares - 1) < 1e-9, `shares sum to 1 (${shares})`);
      const calls = st.accounts.reduce((a, x) => a + x.callsToday, 0);
      assert.ok(
        st.budget && st.budget.used >= calls,
        `the shared ledger counted every call (${st.budget?.used} >= ${calls})`,
      );
    } finally {
      await statusBackend.close();
    }
    const totalMs = Date.now() - t0;
    // the numbers, for the report
    console.log(
      `      fleet e2e: first delivery of 7 accounts ${firstPhaseMs} ms; takeover after SIGKILL ${takeoverMs} ms (TTL ${TTL_S} s; ${heldByA.length} leases); handover after SIGTERM ${handoverMs} ms (${heldByB.length} leases); ${claims} claims; total ${totalMs} ms`,
    );
    await sleep(0);
  });
});
