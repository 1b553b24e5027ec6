/** Shared test helpers: a fake Constant Contact source, an engine wired to the test connector. */
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import { ObservedContact } from '../src/domain';
import { createRegistry, compiledRoot, packageRoot, Registry } from '../src/registry';
import { decodeConfig, Config } from '../src/config';
import { SqliteStateStore } from '../src/store/sqlite';
import { Engine } from '../src/engine';
import { fakeClock } from '../src/http/clock';
import { memoryLogger } from '../src/log';
import { OptOutSource, ScanStats, SourcePage, QuotaExceeded } from '../src/source/types';

/** The compiled test plugin folder (test/fixtures/memory-connector). */
export const MEMORY_PLUGIN = path.join(compiledRoot(), 'test', 'fixtures', 'memory-connector');

/** A registry with only the test connector, loaded as a plugin from its folder (no built-in connectors). */
export function testRegistry(): Registry {
  const r = createRegistry({ connectorsDir: null });
  r.usePlugins([MEMORY_PLUGIN], process.cwd());
  return r;
}

export function contact(
  email: string,
  permission: string,
  optedOutAt: string | null,
  extra: Partial<ObservedContact> = {},
): ObservedContact {
  return {
    email,
    contactId: `c-${email}`,
    permission,
    optedOutAt,
    source: permission === 'unsubscribed' ? 'Contact' : null,
    reason: null,
    deleted: false,
    ...extra,
  };
}

/** An in-memory source that answers windows by opt-out date, pages of `pageSize`. */
export class FakeSource implements OptOutSource {
  contacts: ObservedContact[] = [];
  windowCalls: { after: string; before: string }[] = [];
  fullScans = 0;
  pageSize = 2;
  /** throw QuotaExceeded after this many pages in a scan */
  quotaAfterPages: number | null = null;
  /** lose the window results entirely (a source whose window filter misbehaves) */
  brokenWindow = false;

  private async pages(list: ObservedContact[], onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
    let pages = 0;
    for (let i = 0; i < list.length || (i === 0 && pages === 0); i += this.pageSize) {
      if (this.quotaAfterPages !== null && pages >= this.quotaAfterPages) {
        throw new QuotaExceeded(new Date('2030-01-01T00:00:00Z'), 'quota_exceeded');
      }
      await onPage({ contacts: list.slice(i, i + this.pageSize), skippedNoEmail: 0, quarantined: 0 });
      pages++;
      if (list.length === 0) break;
    }
    return { pages, contacts: list.length, skippedNoEmail: 0, quarantined: 0 };
  }

  scanWindow(after: Date, before: Date, onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
    this.windowCalls.push({ after: after.toISOString(), before: before.toISOString() });
    const hits = this.brokenWindow
      ? []
      : this.contacts.filter(
          (c) => c.optedOutAt && c.optedOutAt >= after.toISOString() && c.optedOutAt <= before.toISOString(),
        );
    return this.pages(hits, onPage);
  }

  scanUnsubscribed(onPage: (p: SourcePage) => Promise<void> | void): Promise<ScanStats> {
    this.fullScans++;
    return this.pages(
      this.contacts.filter((c) => c.permission === 'unsubscribed'),
      onPage,
    );
  }

  async unsubscribedCount(): Promise<number | null> {
    return this.contacts.filter((c) => c.permission === 'unsubscribed').length;
  }

  async check() {
    return { ok: true, items: [{ name: 'fake', ok: true, detail: 'fake source' }] };
  }
}

export function testConfig(
  registry: Registry,
  targets: { name: string; crm: string }[],
  extra: Record<string, unknown> = {},
): Config {
  return decodeConfig(
    {
      source: { type: 'constant-contact', clientId: 'client-1', ...(extra.source as object) },
      targets: targets.map((t) => ({ name: t.name, connector: 'memory-crm', config: { crm: t.crm } })),
      store: { path: ':memory:' },
      delivery: { batchSize: 50, maxAttempts: 3, backoffBaseSeconds: 60, backoffMaxSeconds: 3600 },
    },
    {},
    registry,
  );
}

export function testEngine(opts: {
  targets: { name: string; crm: string }[];
  source: FakeSource;
  storePath?: string;
  start?: Date;
  config?: Record<string, unknown>;
}) {
  const registry = testRegistry();
  const config = testConfig(registry, opts.targets, opts.config ?? {});
  const store = new SqliteStateStore(opts.storePath ?? ':memory:');
  const clock = fakeClock(opts.start ?? new Date('2026-06-01T12:00:00Z'));
  const logger = memoryLogger();
  const engine = new Engine({ config, store, registry, source: () => opts.source, clock, logger, random: () => 0.5 });
  return { engine, store, clock, logger, config, registry };
}

/** Run the built CLI synchronously with only PATH, HOME and `env` in its environment. */
export function runCliSync(
  args: string[],
  env: Record<string, string> = {},
  cwd?: string,
): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(packageRoot(), 'dist', 'src', 'cli.js'), ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: os.tmpdir(), ...env },
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
