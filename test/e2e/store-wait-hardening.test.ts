/**
 * A PostgreSQL server that is not reachable at start-up is not a config error: a one-shot command exits 1 (not 2,
 * which the systemd unit never restarts), and `run` waits for the server with backoff, then starts; SIGTERM during
 * the wait exits cleanly.
 */
import { strict as assert } from 'assert';
import axios from 'axios';
import * as net from 'net';
import { freshDatabase, pgSkipped } from '../support/postgres';
import { Harness, runCli, spawnCli, startHarness, waitFor } from './helpers';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** A TCP forwarder 127.0.0.1:port -> target (the PostgreSQL server "coming up" late). */
async function forward(port: number, target: { host: string; port: number }): Promise<() => Promise<void>> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((c) => {
    const up = net.connect(target.port, target.host);
    sockets.add(c).add(up);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    c.pipe(up).pipe(c);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
}

function jsonLines(text: string): { msg?: string; address?: string; error?: string }[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { msg?: string; address?: string; error?: string });
}

describe('e2e: a PostgreSQL server not reachable at start-up', function () {
  this.timeout(120_000);
  let h: Harness;
  before(async function () {
    if (pgSkipped()) this.skip();
    h = await startHarness({ contacts: 60, seed: 5151 });
  });
  after(async () => h?.stop());

  it('one-shot commands exit 1 (not 2: nothing is wrong with the config), password masked', async () => {
    const port = await freePort();
    for (const args of [['status'], ['accounts', 'list'], ['check']]) {
      const r = await runCli(h, ['--store', `postgres://cc:secretpw@127.0.0.1:${port}/cc`, ...args]);
      assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      assert.match(r.stderr, /nothing accepts connections at 127\.0\.0\.1/);
      assert.ok(!r.stderr.includes('secretpw'), r.stderr);
    }
  });

  it('run waits for the server with backoff, then starts and serves /readyz', async () => {
    const db = await freshDatabase('storewait');
    const real = new URL(db.url);
    const port = await freePort();
    const late = new URL(db.url);
    late.port = String(port);
    let stopForward: (() => Promise<void>) | null = null;
    const svc = spawnCli(
      h,
      ['--store', late.toString(), '--log-format', 'json', 'run', '--every', '1h', '--listen', '127.0.0.1:0'],
      { timeoutMs: 110_000 },
    );
    try {
      await waitFor(
        () => jsonLines(svc.stderr()).filter((l) => /state store not reachable/.test(l.msg ?? '')).length >= 2,
        { timeoutMs: 30_000, what: 'two failed attempts logged' },
      ).catch((err: Error) => {
        throw new Error(`${err.message}\n${svc.stderr().slice(-3000)}`);
      });
      assert.equal(svc.child.exitCode, null, 'still running while the server is down');
      const failure = jsonLines(svc.stderr()).find((l) => /not reachable/.test(l.msg ?? ''))!;
      assert.match(failure.error ?? '', /nothing accepts connections/);
      stopForward = await forward(port, { host: real.hostname, port: Number(real.port) });
      const listening = await waitFor(() => jsonLines(svc.stderr()).find((l) => l.msg === 'service listening'), {
        timeoutMs: 60_000,
        what: 'the service to listen once the server is up',
      }).catch((err: Error) => {
        throw new Error(`${err.message}\n${svc.stderr().slice(-3000)}`);
      });
      const r = await axios.get(`${listening.address}/healthz`, { validateStatus: () => true });
      assert.equal(r.status, 200);
      svc.child.kill('SIGTERM');
      const done = await svc.done;
      assert.equal(done.code, 0, done.stderr.slice(-2000));
    } finally {
      if (svc.child.exitCode === null) svc.child.kill('SIGKILL');
      await stopForward?.();
      await db.drop();
    }
  });

  it('SIGTERM while waiting for the server exits cleanly (0)', async () => {
    const port = await freePort();
    const svc = spawnCli(
      h,
      ['--store', `postgres://cc@127.0.0.1:${port}/cc`, '--log-format', 'json', 'run', '--listen', '127.0.0.1:0'],
      { timeoutMs: 60_000 },
    );
    try {
      await waitFor(() => /state store not reachable/.test(svc.stderr()), {
        timeoutMs: 30_000,
        what: 'a failed attempt logged',
      });
      const t0 = Date.now();
      svc.child.kill('SIGTERM');
      const done = await svc.done;
      assert.equal(done.code, 0, done.stderr.slice(-2000));
      assert.ok(Date.now() - t0 < 10_000, 'stopped without waiting for the backoff');
    } finally {
      if (svc.child.exitCode === null) svc.child.kill('SIGKILL');
    }
  });
});
