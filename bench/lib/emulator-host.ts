/**
 * Child process that hosts the three emulators for a benchmark (forked by bench/lib/harness.ts).
 *
 * The emulators run in their own process so that the benchmark process measures the connector alone:
 * its CPU time, its peak RSS (the 100k-contact dataset lives here, not there) and its event loop. On a
 * multi-core machine the emulator then answers in parallel, as a remote API would.
 *
 * Protocol (IPC): the parent sends `{ id, cmd, arg }`, the child answers `{ id, ok, value | error }`.
 * The first message from the child is `{ ready: true, connection }` once the servers listen.
 */
import { Emulators, EmulatorOptions, startEmulators } from '../../src/emulators';

export type HostCommand =
  | { cmd: 'addOptOuts'; arg: number }
  | { cmd: 'faults'; arg: Parameters<Emulators['faults']['set']>[0] }
  | { cmd: 'truth' }
  | { cmd: 'verify' }
  | { cmd: 'requestCounts' }
  | { cmd: 'resetCounts' }
  | { cmd: 'rss' }
  | { cmd: 'stop' };

export interface HostConnection {
  cc: Emulators['cc'];
  hubspot: Emulators['hubspot'];
  salesforce: Emulators['salesforce'];
}

async function main(): Promise<void> {
  const opts = JSON.parse(process.argv[2] ?? '{}') as EmulatorOptions;
  const emu = await startEmulators(opts);
  const send = (m: unknown): void => {
    process.send?.(m);
  };
  process.on('message', (raw: unknown) => {
    const m = raw as HostCommand & { id: number };
    const id = m.id;
    const reply = (value: unknown): void => send({ id: m.id, ok: true, value });
    try {
      switch (m.cmd) {
        case 'addOptOuts':
          reply(emu.addOptOuts(m.arg).length);
          break;
        case 'faults':
          emu.faults.set(m.arg);
          reply(emu.faults.get());
          break;
        case 'truth':
          reply(emu.truth());
          break;
        case 'verify':
          reply(emu.verify());
          break;
        case 'requestCounts':
          reply(emu.requestCounts());
          break;
        case 'resetCounts':
          for (const s of Object.values(emu.servers)) s.counts.clear();
          reply(true);
          break;
        case 'rss':
          reply({ rss: process.memoryUsage.rss(), maxRss: process.resourceUsage().maxRSS * 1024 });
          break;
        case 'stop':
          void emu.stop().then(() => {
            reply(true);
            process.disconnect?.();
            setTimeout(() => process.exit(0), 50).unref();
          });
          break;
        default:
          send({ id, ok: false, error: `unknown command ${(raw as { cmd: string }).cmd}` });
      }
    } catch (e) {
      send({ id, ok: false, error: (e as Error).message });
    }
  });
  // The parent went away (crash, Ctrl-C): do not linger.
  process.on('disconnect', () => {
    void emu.stop().finally(() => process.exit(0));
  });
  send({
    ready: true,
    connection: { cc: emu.cc, hubspot: emu.hubspot, salesforce: emu.salesforce } satisfies HostConnection,
  });
}

main().catch((e: Error) => {
  process.stderr.write(`emulator host failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
