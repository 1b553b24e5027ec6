/**
 * Run history and the audit export: `cc-optout runs` (every run: kind, start, end, status, counts per target and
 * outcome, API calls per vendor, exit code, error), and the audit text `cc-optout audit` prints and the status page
 * serves for download (one implementation, so both are the same).
 */
import { Command } from 'commander';
import { redact } from './log';
import { RunRecord, StateStore } from './store/types';
import { toCsv } from './csv';
import { intOption } from './commands';

export interface AuditExportOptions {
  format: 'csv' | 'json';
  /** Rows whose opt-out or CRM write happened on or after this time (history: deliveries since). */
  since?: string | null;
  /** Every delivery event instead of one row per record and target. */
  history?: boolean;
  /** Only this run's evidence: its deliveries (history), or the records it delivered or detected. */
  runId?: number | null;
}

/** The audit as `cc-optout audit` writes it (redacted); `count` is rows, or delivery events with `history`. */
export async function auditExport(store: StateStore, o: AuditExportOptions): Promise<{ text: string; count: number }> {
  const since = o.since ?? null;
  const runId = o.runId ?? null;
  let text: string;
  let count: number;
  if (o.history) {
    const history = await store.deliveryHistory(since, runId);
    count = history.length;
    if (o.format === 'json') text = JSON.stringify({ history }, null, 2);
    else {
      const header = [
        'delivered_at',
        'run_id',
        'run_kind',
        'target',
        'email',
        'cc_contact_id',
        'attempt',
        'origin',
        'outcome',
        'crm_record_ids',
        'message',
      ];
      const body = history.map((e) => [
        e.at,
        e.runId ?? '',
        e.runKind ?? '',
        e.target,
        e.email,
        e.contactId ?? '',
        e.attempt,
        e.origin ?? '',
        e.outcome,
        e.recordIds.join(' '),
        e.message ?? '',
      ]);
      text = toCsv([header, ...body]);
    }
  } else {
    const rows = await store.audit(since, runId);
    const events = await store.events(since, ['left-unsubscribed-set'], runId);
    count = rows.length;
    if (o.format === 'json') {
      text = JSON.stringify({ rows, resubscribed: events }, null, 2);
    } else {
      const header = [
        'email',
        'cc_contact_id',
        'target',
        'opted_out_at',
        'detected_at',
        'written_at',
        'lag_seconds',
        'closed_at',
        'crm_record_ids',
        'outcome',
        'attempts',
        'message',
      ];
      const body = rows.map((r) => [
        r.email,
        r.contactId,
        r.target,
        r.optedOutAt,
        r.detectedAt,
        r.writtenAt ?? '',
        r.lagSeconds ?? '',
        r.closedAt ?? '',
        r.recordIds.join(' '),
        r.outcome,
        r.attempts,
        r.message ?? '',
      ]);
      for (const e of events)
        body.push([
          e.email ?? '',
          '',
          '-',
          '',
          e.at,
          '',
          '',
          '',
          '',
          'left-unsubscribed-set (not propagated)',
          0,
          e.detail ?? '',
        ]);
      text = toCsv([header, ...body]);
    }
  }
  return { text: redact(text), count };
}

/** `sync (reconcile)`, `backfill (redeliver, dry run)`. */
export function runLabel(r: Pick<RunRecord, 'kind' | 'variant' | 'dryRun'>): string {
  const tags = [r.variant && r.variant !== r.kind ? r.variant : null, r.dryRun ? 'dry run' : null].filter(
    (t): t is string => !!t,
  );
  return tags.length ? `${r.kind} (${tags.join(', ')})` : r.kind;
}

function countsText(c: Partial<Record<string, number>>): string {
  const parts = Object.entries(c)
    .filter(([, n]) => (n ?? 0) > 0)
    .map(([k, n]) => `${k} ${n}`);
  return parts.length ? parts.join(', ') : 'nothing delivered';
}

export function durationSeconds(r: Pick<RunRecord, 'startedAt' | 'finishedAt'>): number | null {
  return r.finishedAt ? Math.max(0, (Date.parse(r.finishedAt) - Date.parse(r.startedAt)) / 1000) : null;
}

/** One run for people: a header line, then its targets, API calls and error. */
export function renderRun(r: RunRecord): string {
  const d = durationSeconds(r);
  const lines = [
    `run #${r.id} ${runLabel(r)}: ${r.status}${r.exitCode !== null ? `, exit ${r.exitCode}` : ''}; started ${r.startedAt}` +
      `${r.finishedAt ? `, ended ${r.finishedAt} (${d!.toFixed(1)} s)` : ''}${r.host ? `; pid ${r.pid} on ${r.host}` : ''}`,
  ];
  for (const [t, c] of Object.entries(r.counts)) lines.push(`  ${t}: ${countsText(c)}`);
  const calls = Object.entries(r.apiCalls).map(([k, v]) => `${k} ${v}`);
  lines.push(`  API calls: ${calls.length ? calls.join(', ') : 'none'}`);
  if (r.error) lines.push(`  error: ${r.error}`);
  return lines.join('\n');
}

interface GlobalOpts {
  json?: boolean;
}

/** `cc-optout runs [--limit N] [--json]`. */
export function registerRunsCommand<G extends GlobalOpts>(
  program: Command,
  g: () => G,
  withStoreContext: <T>(g: G, fn: (ctx: { store: StateStore }) => Promise<T>) => Promise<T>,
  out: (text: string) => void,
): void {
  program
    .command('runs')
    .description(
      'the run history, newest first: kind, start, end, status, counts per target and outcome, API calls, exit code, error',
    )
    .addOption(intOption('--limit <n>', 'how many runs', 1, 100_000, 20))
    .action(async (o: { limit: number }) =>
      withStoreContext(g(), async (ctx) => {
        const runs = await ctx.store.recentRuns(o.limit);
        if (g().json) {
          out(
            JSON.stringify(
              runs.map(({ summary: _summary, ...r }) => ({
                ...r,
                label: runLabel(r),
                durationSeconds: durationSeconds(r),
              })),
              null,
              2,
            ),
          );
        } else if (runs.length === 0) out('no runs recorded yet');
        else for (const r of runs) out(renderRun(r));
      }),
    );
}
