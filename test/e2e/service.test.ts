/**
 * `cc-optout run` end to end (issue 11 items 1-3): the built CLI as a child process against the emulators, syncing
 * every 2 s. Opt-outs flow to both CRMs; /healthz, /readyz and /metrics answer (the token guards /metrics);
 * a local webhook receives ONE alert when Salesforce starts failing (its daily API limit) and one when it
 * recovers, while a second webhook that answers 500 never fails a run and its URL never reaches the logs;
 * SIGTERM stops the service with exit 0, the lease released and every opt-out delivered or still queued.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as http from 'http';
import { AddressInfo } from 'net';
import axios from 'axios';
import Database from 'better-sqlite3';
import { CliChild, Harness, crmSuppressed, spawnCli, startHarness, subscribedInBothCrms, waitFor } from './helpers';

interface Hook {
  url: string;
  bodies: Record<string, unknown>[];
  close(): Promise<void>;
}

/** A webhook receiver on 127.0.0.1 answering `status`; the path carries a secret, as a Slack URL does. */
async function webhookServer(status: number, secretPath: string): Promise<Hook> {
  const bodies: Record<string, unknown>[] = [];
  const server = http.createServer((req, res) => {
    let data = '';
    req.on('data', (d: Buffer) => (data += d.toString('utf8')));
    req.on('end', () => {
      if (req.url === `/hooks/${secretPath}`) bodies.push(JSON.parse(data) as Record<string, unknown>);
      res.statusCode = req.url === `/hooks/${secretPath}` ? status : 404;
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hooks/${secretPath}`,
    bodies,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

function logLines(child: CliChild): Record<string, unknown>[] {
  return child
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The value of one sample (`name{labels} value`) in Prometheus text, or null. */
function sample(text: string, name: string, labels = ''): number | null {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const [key, value] = line.split(' ');
    if (key === `${name}${labels ? `{${labels}}` : ''}`) return Number(value);
  }
  return null;
}

const TOKEN = 'service-token-0123456789abcdef';

describe('e2e: cc-optout run (service mode)', function () {
  this.timeout(180_000);
  let h: Harness;
  let good: Hook;
  let bad: Hook;
  let svc: CliChild | null = null;
  let base = '';
  const auth = { headers: { authorization: `Bearer ${TOKEN}` }, validateStatus: () => true };

  after(async () => {
    if (svc && svc.child.exitCode === null) svc.child.kill('SIGKILL');
    await good?.close();
    await bad?.close();
    await h?.stop();
  });

  it('syncs on its schedule, serves health, readiness and metrics, alerts once per change, and stops cleanly on SIGTERM', async () => {
    h = await startHarness({
      contacts: 800,
      seed: 1101,
      delivery: { batchSize: 50, backoffBaseSeconds: 1, backoffMaxSeconds: 2 },
    });
    good = await webhookServer(200, 'T000/B000/good-secret-path-1234');
    bad = await webhookServer(500, 'T000/B000/bad-secret-path-5678');
    const cfg = JSON.parse(fs.readFileSync(h.cfg.file, 'utf8')) as Record<string, unknown>;
    cfg.service = {
      token: '${SERVICE_TOKEN}',
      alerts: {
        webhooks: [
          { url: '${ALERT_URL}', format: 'json' },
          { url: '${ALERT_URL_2}', format: 'slack', timeoutSeconds: 2 },
        ],
        oldestQueuedMinutes: 120,
      },
    };
    fs.writeFileSync(h.cfg.file, JSON.stringify(cfg, null, 2));
    const env = { SERVICE_TOKEN: TOKEN, ALERT_URL: good.url, ALERT_URL_2: bad.url };
    svc = spawnCli(h, ['--log-format', 'json', 'run', '--every', '2s', '--listen', '127.0.0.1:0'], {
      env,
      timeoutMs: 170_000,
    });
    const listening = await waitFor(() => logLines(svc!).find((l) => l.msg === 'service listening'), {
      timeoutMs: 30_000,
      what: 'the service to listen',
    });
    base = String(listening.address);
    assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);

    // /healthz at once, without the token; /metrics needs it
    assert.equal((await axios.get(`${base}/healthz`, { validateStatus: () => true })).status, 200);
    assert.equal((await axios.get(`${base}/metrics`, { validateStatus: () => true })).status, 401);
    assert.equal(
      (
        await axios.get(`${base}/metrics`, {
          headers: { authorization: 'Bearer wrong-token-0123456789abcdef' },
          validateStatus: () => true,
        })
      ).status,
      401,
    );

    // the first run reconciles the whole unsubscribed set and delivers it; /readyz turns 200 once it finished
    const ready = await waitFor(
      async () => {
        const r = await axios.get(`${base}/readyz`, {
          validateStatus: () => true,
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        return r.status === 200 ? (r.data as { ready: boolean; lastRun: unknown }) : null;
      },
      { timeoutMs: 60_000, intervalMs: 200, what: '/readyz 200' },
    );
    assert.equal(ready.ready, true);
    assert.ok(ready.lastRun);
    // without the token /readyz says only ready / not ready
    assert.deepEqual((await axios.get(`${base}/readyz`)).data, { status: 'ready', ready: true });

    // new opt-outs in Constant Contact reach both CRMs on the following ticks
    const fresh = subscribedInBothCrms(h.emu, 4);
    h.emu.addOptOuts(fresh.slice(0, 2).map((c) => ({ contactId: c.contactId })));
    await waitFor(
      () =>
        fresh.slice(0, 2).every((c) => {
          const s = crmSuppressed(h.emu, c.email);
          return s.hubspot && s.salesforce;
        }),
      {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: 'the new opt-outs to be suppressed in HubSpot and Salesforce',
      },
    );

    // the status page is served too; with service.token set, only to someone who has it
    const anonPage = await axios.get(`${base}/status`, { validateStatus: () => true });
    assert.equal(anonPage.status, 401);
    assert.doesNotMatch(String(anonPage.data), /@/, 'no address shows before sign-in');
    const statusPage = await axios.get(`${base}/status`, auth);
    assert.equal(statusPage.status, 200);
    assert.match(String(statusPage.data), /data-target="hubspot"/);
    assert.match(String(statusPage.data), /data-target="salesforce"/);

    const m1 = (await axios.get(`${base}/metrics`, auth)).data as string;
    assert.ok((sample(m1, 'cc_optout_optouts_detected_total') ?? 0) >= 2, 'opt-outs detected');
    assert.ok(
      (sample(m1, 'cc_optout_deliveries_total', 'target="hubspot",outcome="applied"') ?? 0) > 0,
      'HubSpot applied deliveries',
    );
    assert.ok(
      (sample(m1, 'cc_optout_deliveries_total', 'target="salesforce",outcome="applied"') ?? 0) > 0,
      'Salesforce applied deliveries',
    );
    assert.ok(
      (sample(m1, 'cc_optout_api_calls_total', 'vendor="constant-contact"') ?? 0) > 0,
      'Constant Contact calls',
    );
    assert.equal(sample(m1, 'cc_optout_outbox_parked', 'target="hubspot"'), 0);
    assert.ok(sample(m1, 'cc_optout_outbox_queued', 'target="salesforce"') !== null);
    assert.ok(sample(m1, 'cc_optout_outbox_oldest_queued_age_seconds', 'target="salesforce"') !== null);
    const budget = sample(m1, 'cc_optout_constant_contact_daily_budget_remaining');
    assert.ok(budget !== null && budget > 0 && budget < 10_000, `budget left ${budget}`);
    const last = sample(m1, 'cc_optout_last_successful_sync_timestamp_seconds') ?? 0;
    assert.ok(Math.abs(last - Date.now() / 1000) < 120, `last successful sync ${last}`);
    assert.ok(
      (sample(m1, 'cc_optout_optout_to_crm_write_lag_seconds_count', 'target="salesforce"') ?? 0) > 0,
      'lag histogram observed',
    );
    assert.equal(good.bodies.length, 0, `no alert while all is well: ${JSON.stringify(good.bodies)}`);

    // Salesforce starts failing (daily API limit): ONE alert, however many runs see it
    h.emu.faults.set({ salesforce: { dailyApiLimit: 1 } });
    h.emu.addOptOuts(fresh.slice(2, 3).map((c) => ({ contactId: c.contactId })));
    const firing = await waitFor(
      () => good.bodies.find((b) => b.alert === 'target-halted:salesforce' && b.state === 'firing'),
      {
        timeoutMs: 30_000,
        intervalMs: 100,
        what: 'the Salesforce halted alert',
      },
    );
    assert.equal(firing.target, 'salesforce');
    assert.match(String(firing.summary), /halted \(quota\)|REQUEST_LIMIT_EXCEEDED|limit/i);
    // HubSpot keeps delivering meanwhile
    await waitFor(() => crmSuppressed(h.emu, fresh[2]!.email).hubspot, {
      timeoutMs: 20_000,
      intervalMs: 200,
      what: 'HubSpot to deliver while Salesforce fails',
    });
    // several more runs while Salesforce still fails: no second alert
    const runsBefore = logLines(svc).filter((l) => l.msg === 'run finished').length;
    await waitFor(() => logLines(svc!).filter((l) => l.msg === 'run finished').length >= runsBefore + 2, {
      timeoutMs: 20_000,
      what: 'two more runs',
    });
    assert.equal(
      good.bodies.filter((b) => b.alert === 'target-halted:salesforce').length,
      1,
      JSON.stringify(good.bodies),
    );
    // the failing webhook was tried (and retried once), the runs went on
    assert.ok(
      logLines(svc).some((l) => l.msg === 'alert webhook failed; the run goes on'),
      'failed webhook logged',
    );

    // Salesforce recovers: one "resolved" alert, and the queued opt-out is delivered
    h.emu.faults.set({ salesforce: { dailyApiLimit: 100_000 } });
    const resolved = await waitFor(
      () => good.bodies.find((b) => b.alert === 'target-halted:salesforce' && b.state === 'resolved'),
      {
        timeoutMs: 30_000,
        intervalMs: 100,
        what: 'the Salesforce recovered alert',
      },
    );
    assert.equal(resolved.target, 'salesforce');
    await waitFor(() => crmSuppressed(h.emu, fresh[2]!.email).salesforce, {
      timeoutMs: 20_000,
      intervalMs: 200,
      what: 'Salesforce to deliver after recovery',
    });
    assert.deepEqual(
      good.bodies.map((b) => `${String(b.alert)} ${String(b.state)}`),
      ['target-halted:salesforce firing', 'target-halted:salesforce resolved'],
    );

    // one more opt-out; SIGTERM while that run waits on HubSpot (slowed down): the batch in hand finishes, exit 0
    h.emu.faults.set({ hubspot: { latencyMs: 1500 } });
    const hsRequests = () => Object.values(h.emu.requestCounts().hubspot).reduce((a, c) => a + c.total, 0);
    const before = hsRequests();
    h.emu.addOptOuts(fresh.slice(3, 4).map((c) => ({ contactId: c.contactId })));
    await waitFor(() => hsRequests() > before, {
      timeoutMs: 20_000,
      intervalMs: 20,
      what: 'a run to call HubSpot for the last opt-out',
    });
    svc.child.kill('SIGTERM');
    const r = await svc.done;
    assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr.slice(-3000)}`);
    const lines = logLines(svc);
    assert.ok(
      lines.some((l) => l.msg === 'service stopped'),
      'service stopped logged',
    );
    const nonJson = r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith('{'));
    assert.deepEqual(nonJson, [], 'every stderr line is a JSON log line');
    assert.ok(
      lines.every((l) => typeof l.time === 'string' && typeof l.level === 'string'),
      'every log line has time and level',
    );
    // secrets never in the logs: the token and the webhook URLs' paths
    for (const secret of [TOKEN, 'good-secret-path-1234', 'bad-secret-path-5678'])
      assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret), `leaked ${secret}`);

    const db = new Database(h.storePath, { readonly: true });
    try {
      assert.equal((db.prepare('SELECT COUNT(*) n FROM run_lock').get() as { n: number }).n, 0, 'lease released');
      const truth = h.emu.truth();
      for (const target of ['hubspot', 'salesforce']) {
        const rows = db.prepare(`SELECT email, state FROM outbox WHERE target = ?`).all(target) as {
          email: string;
          state: string;
        }[];
        const byEmail = new Map(rows.map((x) => [x.email, x.state]));
        const knownOptOuts = (db.prepare(`SELECT email FROM opt_outs`).all() as { email: string }[]).map(
          (x) => x.email,
        );
        // every opt-out Constant Contact had when the last complete run began is in the outbox, delivered or queued
        for (const e of truth.optedOutEmails.filter((x) => knownOptOuts.includes(x))) {
          assert.ok(
            ['done', 'queued'].includes(byEmail.get(e) ?? 'missing'),
            `${target} ${e}: ${byEmail.get(e) ?? 'missing'}`,
          );
        }
        assert.ok(
          knownOptOuts.length >= truth.optedOutEmails.length - 1,
          'at most the last opt-out is still to be detected',
        );
      }
      const unfinished = db.prepare(`SELECT COUNT(*) n FROM runs WHERE finished_at IS NULL`).get() as { n: number };
      assert.equal(unfinished.n, 0, 'every run row finished');
      const lastRun = db.prepare(`SELECT exit_code FROM runs ORDER BY id DESC LIMIT 1`).get() as { exit_code: number };
      assert.equal(lastRun.exit_code, 143, 'the last run was stopped by the SIGTERM, after its batch');
      const lastOptOut = db.prepare(`SELECT target, state FROM outbox WHERE email = ?`).all(fresh[3]!.email) as {
        target: string;
        state: string;
      }[];
      assert.deepEqual(
        lastOptOut.map((x) => x.target).sort(),
        ['hubspot', 'salesforce'],
        'the last opt-out is queued for both targets',
      );
      for (const x of lastOptOut) assert.ok(['done', 'queued'].includes(x.state), `${x.target}: ${x.state}`);
    } finally {
      db.close();
    }
  });
});
