/**
 * Alerts of `cc-optout run`: a webhook call ONCE per state change (a condition starts, a condition ends), never
 * once per run. The state (which conditions are active, and a notification still owed) lives in the store's
 * key/value table, so a restart does not fire again what was already said.
 *
 * Conditions (keys): `target-halted:<target>` (the target stopped a run: auth, quota, outage, config),
 * `parked:<target>` (rows parked), `oldest-queued:<target>` (the oldest queued row waits longer than
 * `oldestQueuedMinutes`), `cc-reauth` (Constant Contact refresh token revoked: run `auth constant-contact`),
 * `run-fatal` (a run failed as a whole). A condition the last evaluation could not judge is left as it was.
 *
 * A failed webhook call (timeout, non-2xx, refused) never fails a run: it is logged (the URL masked: webhook
 * URLs are credentials) and retried once, at the next evaluation, unless the state changed again by then.
 */
import * as os from 'os';
import axios from 'axios';
import { ResolvedWebhook } from '../config';
import { Logger, redact } from '../log';
import { KeyValue } from '../plugin';

export type AlertStateName = 'firing' | 'resolved';

/** What the runner observed for one condition. */
export interface Condition {
  readonly key: string;
  readonly active: boolean;
  /** One line for people: what is wrong (or what it was, when it ends). */
  readonly summary: string;
  readonly target?: string;
}

export interface AlertEntry {
  active: boolean;
  /** When the current state began. */
  since: string;
  summary: string;
  target?: string;
  /** A notification not yet delivered to the webhooks listed (their index in the config): retried once. */
  pending?: { state: AlertStateName; attempts: number; hooks: number[] };
}

export type AlertState = Record<string, AlertEntry>;

export interface Notification {
  readonly key: string;
  readonly state: AlertStateName;
  readonly summary: string;
  readonly target?: string;
  /** When this state began. */
  readonly since: string;
  /** Indexes of the webhooks to call (all, or those that failed last time). */
  readonly hooks: readonly number[];
  /** A retry of a notification that failed before. */
  readonly retry: boolean;
}

/** A notification is tried at most this many times (the first call and one retry). */
export const MAX_ATTEMPTS = 2;

/**
 * The state machine: compare the observed conditions with the stored state. A transition (inactive -> active
 * or back) yields one notification to every webhook; an earlier notification still owed (its state unchanged
 * since) is retried to the webhooks that failed. Conditions not observed this time keep their state.
 */
export function evaluateAlerts(
  prev: AlertState,
  conditions: readonly Condition[],
  now: Date,
  hookCount: number,
): { next: AlertState; notify: Notification[] } {
  const next: AlertState = {};
  for (const [k, v] of Object.entries(prev))
    next[k] = { ...v, ...(v.pending ? { pending: { ...v.pending, hooks: [...v.pending.hooks] } } : {}) };
  const notify: Notification[] = [];
  const all = [...Array(hookCount).keys()];
  const seen = new Set<string>();
  for (const c of conditions) {
    seen.add(c.key);
    const before = prev[c.key];
    const wasActive = before?.active === true;
    if (c.active !== wasActive) {
      const state: AlertStateName = c.active ? 'firing' : 'resolved';
      // an ending condition is described as it was when it began (its summary then), unless there is none
      const summary = c.active ? c.summary : (before?.summary ?? c.summary);
      next[c.key] = { active: c.active, since: now.toISOString(), summary, ...(c.target ? { target: c.target } : {}) };
      if (hookCount > 0)
        notify.push({
          key: c.key,
          state,
          summary,
          target: c.target,
          since: now.toISOString(),
          hooks: all,
          retry: false,
        });
      continue;
    }
    if (c.active && before) next[c.key] = { ...next[c.key]!, summary: c.summary };
    const owed = before?.pending;
    if (owed && before && owed.attempts < MAX_ATTEMPTS && owed.state === (before.active ? 'firing' : 'resolved')) {
      const hooks = owed.hooks.filter((i) => i < hookCount);
      if (hooks.length > 0)
        notify.push({
          key: c.key,
          state: owed.state,
          summary: before.summary,
          target: before.target,
          since: before.since,
          hooks,
          retry: true,
        });
    }
  }
  // owed notifications of conditions not judged this time are retried too (their state is what was stored)
  for (const [k, v] of Object.entries(prev)) {
    if (seen.has(k) || !v.pending || v.pending.attempts >= MAX_ATTEMPTS) continue;
    const hooks = v.pending.hooks.filter((i) => i < hookCount);
    if (hooks.length > 0)
      notify.push({
        key: k,
        state: v.pending.state,
        summary: v.summary,
        target: v.target,
        since: v.since,
        hooks,
        retry: true,
      });
  }
  return { next, notify };
}

/** Record what the webhook calls did: failures are owed (once more), successes and exhausted retries are not. */
export function settleAlerts(
  state: AlertState,
  results: readonly { n: Notification; failed: readonly number[] }[],
): AlertState {
  const out: AlertState = { ...state };
  for (const { n, failed } of results) {
    const e = out[n.key];
    if (!e) continue;
    const attempts = n.retry ? (e.pending?.attempts ?? 1) + 1 : 1;
    const { pending: _drop, ...rest } = e;
    out[n.key] =
      failed.length > 0 && attempts < MAX_ATTEMPTS
        ? { ...rest, pending: { state: n.state, attempts, hooks: [...failed] } }
        : rest;
  }
  return out;
}

/** A webhook URL for logs: scheme and host only (the path of a Slack URL is its credential). */
export function maskUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}/…`;
  } catch {
    return '[webhook URL]';
  }
}

/** A summary carries vendor text (error descriptions): at most this many characters reach a webhook. */
export const MAX_SUMMARY_CHARS = 500;

/** Vendor detail cut to a bounded length (redacted first, so a cut never leaves half a secret behind). */
export function boundedSummary(summary: string): string {
  const s = redact(summary);
  return s.length > MAX_SUMMARY_CHARS ? `${s.slice(0, MAX_SUMMARY_CHARS - 1)}…` : s;
}

/** Slack's documented escaping of message text: `&`, `<`, `>` (no mentions, no links from vendor text). */
export function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function notificationText(n: Notification): string {
  const what = n.state === 'firing' ? 'FIRING' : 'RESOLVED';
  return redact(
    `[cc-optout on ${os.hostname()}] ${what}: ${boundedSummary(n.summary)}${n.state === 'resolved' ? ' (recovered)' : ''} (since ${n.since})`,
  );
}

export function webhookBody(n: Notification, format: 'slack' | 'json'): unknown {
  if (format === 'slack') return { text: slackEscape(notificationText(n)) };
  return {
    source: 'cc-optout',
    host: os.hostname(),
    alert: n.key,
    state: n.state,
    summary: boundedSummary(n.summary),
    target: n.target ?? null,
    since: n.since,
    at: new Date().toISOString(),
    text: notificationText(n),
  };
}

export type Post = (url: string, body: unknown, timeoutMs: number) => Promise<void>;

/** A webhook's answer is not read beyond this (a hostile or broken endpoint cannot fill the memory). */
export const MAX_WEBHOOK_RESPONSE_BYTES = 8 * 1024;
/** What we send is one short message (the summary is bounded). */
export const MAX_WEBHOOK_REQUEST_BYTES = 16 * 1024;

/**
 * POST JSON with axios: a 2xx is success; anything else (status, timeout, refused) throws. No redirects. The
 * timeout is a deadline for the whole call (axios' own `timeout` is only an idle-socket timeout: an endpoint
 * that trickles one byte a second would hold it for ever).
 */
export const axiosPost: Post = async (url, body, timeoutMs) => {
  await axios.post(url, body, {
    timeout: timeoutMs,
    signal: AbortSignal.timeout(timeoutMs),
    maxContentLength: MAX_WEBHOOK_RESPONSE_BYTES,
    maxBodyLength: MAX_WEBHOOK_REQUEST_BYTES,
    maxRedirects: 0,
    headers: { 'content-type': 'application/json' },
    validateStatus: (s) => s >= 200 && s < 300,
  });
};

export const ALERTS_KV_KEY = 'alerts';

export function loadAlertState(kv: KeyValue, logger: Logger): AlertState {
  const raw = kv.get(ALERTS_KV_KEY);
  if (!raw) return {};
  try {
    const v = JSON.parse(raw) as unknown;
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as AlertState;
  } catch {
    // fall through
  }
  logger.warn('service: ignoring an unreadable alert state in the store (alerts start afresh)');
  return {};
}

/**
 * Evaluate, call the webhooks, persist. Never throws: a webhook failure is logged and owed, a store failure is
 * logged (the alerts are then evaluated again next time).
 */
export class Alerter {
  constructor(
    private readonly hooks: readonly ResolvedWebhook[],
    private readonly kv: KeyValue,
    private readonly logger: Logger,
    private readonly post: Post = axiosPost,
  ) {}

  state(): AlertState {
    return loadAlertState(this.kv, this.logger);
  }

  async update(conditions: readonly Condition[], now: Date): Promise<Notification[]> {
    try {
      const { next, notify } = evaluateAlerts(this.state(), conditions, now, this.hooks.length);
      // persisted before the calls: a crash while calling does not fire the change again on restart
      this.kv.set(ALERTS_KV_KEY, JSON.stringify(next));
      await this.kv.flush?.();
      const results: { n: Notification; failed: number[] }[] = [];
      for (const n of notify) {
        const failed: number[] = [];
        await Promise.all(
          n.hooks.map(async (i) => {
            const hook = this.hooks[i]!;
            try {
              await this.post(hook.url, webhookBody(n, hook.format), hook.timeoutSeconds * 1000);
              this.logger.info('alert sent', {
                alert: n.key,
                state: n.state,
                webhook: maskUrl(hook.url),
                retry: n.retry,
              });
            } catch (err) {
              failed.push(i);
              this.logger.warn('alert webhook failed; the run goes on', {
                alert: n.key,
                state: n.state,
                webhook: maskUrl(hook.url),
                error: redact((err as Error).message),
                willRetry: !n.retry,
              });
            }
          }),
        );
        results.push({ n, failed: failed.sort((a, b) => a - b) });
      }
      if (results.length > 0) {
        this.kv.set(ALERTS_KV_KEY, JSON.stringify(settleAlerts(next, results)));
        await this.kv.flush?.();
      }
      return notify;
    } catch (err) {
      this.logger.error('service: alert evaluation failed', { error: redact((err as Error).message) });
      return [];
    }
  }
}
