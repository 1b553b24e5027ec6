/**
 * Delivery: look up (batch read by primary email, then CRM search on hs_additional_emails for the rest)
 * -> decide per email -> write suppression of the address through Communication Preferences -> optional
 * audit properties. One outcome per email.
 */
import {
  Capabilities,
  CheckReport,
  DeliveryMode,
  DeliveryReport,
  HaltInfo,
  Logger,
  OptOut,
  Outcome,
  OutcomeKind,
  Target,
  TargetHalt,
  isTargetHalt,
  mappedValue,
  normaliseEmail,
  redact,
} from '../../src/sdk';
import { ADDITIONAL_EMAILS, HubSpotApi, HubSpotHttpError, missingScopesOf } from './api';
import { ResolvedHubSpotConfig, LEGAL_BASIS_VALUES } from './config';
import { runCheck } from './check';
import { Paths } from './paths';

export { PATHS, encodeEmail, pathsFor } from './paths';
export { ADDITIONAL_EMAILS, missingScopesOf } from './api';

/** Inputs per batch read, batch write and batch update (HubSpot's documented max for CRM batch; v4 undocumented). */
export const CHUNK = 100;
/** Values per search (one `IN` filter on hs_additional_emails); also bounded by SEARCH_VALUE_CHARS. */
export const SEARCH_VALUES = 100;
/** Total characters of the values in one search request (keeps the body well inside HubSpot's request limits). */
export const SEARCH_VALUE_CHARS = 3000;
/** Results per search page (HubSpot's maximum). */
export const SEARCH_PAGE = 200;
/** Search returns at most 10,000 results per query: 50 pages of 200. */
const SEARCH_MAX_PAGES = 50;
/** Per-email writes in flight at once (the limiter still paces them). */
const PER_EMAIL_CONCURRENCY = 4;
/** A remembered batch refusal is re-tested after this long (a portal may be upgraded). */
const REFUSAL_TTL_MS = 24 * 3600_000;
export const BATCH_KV_PREFIX = 'hubspot.batch.';

interface Contact {
  readonly id: string;
  readonly optedOut: boolean;
}

interface Failure {
  readonly kind: 'failed-retryable' | 'failed-permanent';
  readonly message: string;
}

type WriteResultKind = 'applied' | 'already-suppressed' | Failure['kind'];

export type MatchedBy = 'primary' | 'additional-email';

interface WriteItem {
  readonly email: string;
  /** The contact whose primary address this is (audit properties go there). */
  readonly contactId: string | null;
  /** Contacts that hold this address as a secondary address (hs_additional_emails). */
  readonly secondaryOf: readonly string[];
}

/**
 * Split an hs_additional_emails value into normalised addresses. HubSpot separates them with `;`; `,` and
 * line breaks are accepted too (no address contains them unquoted), and an array value is read item by item.
 */
export function additionalEmails(value: unknown): string[] {
  if (Array.isArray(value)) return value.flatMap((v) => additionalEmails(v));
  if (typeof value !== 'string') return [];
  return value
    .split(/[;,\r\n]/)
    .map((x) => normaliseEmail(x))
    .filter((x) => x !== '');
}

/** An address usable as an email (and as a path segment): a non-empty local part and domain around an `@`. */
export function plausibleEmail(email: string): boolean {
  const at = email.lastIndexOf('@');
  return at > 0 && at < email.length - 1 && !/\s/.test(email.slice(at + 1));
}

/** A HubSpot answer this connector cannot read (a 2xx that is not the documented JSON). */
class UnreadableAnswer extends Error {}

/** Chunks of addresses for one search each: at most SEARCH_VALUES values and SEARCH_VALUE_CHARS characters. */
export function searchChunks(emails: readonly string[]): string[][] {
  const out: string[][] = [];
  let cur: string[] = [];
  let chars = 0;
  for (const e of emails) {
    if (cur.length > 0 && (cur.length >= SEARCH_VALUES || chars + e.length > SEARCH_VALUE_CHARS)) {
      out.push(cur);
      cur = [];
      chars = 0;
    }
    cur.push(e);
    chars += e.length;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** One suppression write: an email, and for subscriptions mode one subscription id. */
interface Unit {
  readonly email: string;
  readonly subscriptionId: string | null;
}

interface BatchDecision {
  decision: 'refused' | 'available';
  at: string;
  detail?: string;
}

interface ItemError {
  status?: unknown;
  category?: unknown;
  message?: unknown;
  context?: unknown;
}

const LEGAL_BASIS = /legal[\s_-]*basis/i;
const ALREADY_UNSUBSCRIBED = /already\s+(been\s+)?(unsubscribed|opted[\s-]*out)/i;

export function legalBasisFailure(cfg: ResolvedHubSpotConfig, hubspotMessage: string): Failure {
  const hs = hubspotMessage ? ` (HubSpot: ${hubspotMessage})` : '';
  if (cfg.legalBasis === null || cfg.legalBasisExplanation === null) {
    const missing = [
      cfg.legalBasis === null ? '"legalBasis"' : null,
      cfg.legalBasisExplanation === null ? '"legalBasisExplanation"' : null,
    ]
      .filter(Boolean)
      .join(' and ');
    return {
      kind: 'failed-permanent',
      message: redact(
        `HubSpot requires a legal basis for this portal (data-privacy settings are on)${hs}: add ${missing} to this target's config ` +
          `(legalBasis: one of ${LEGAL_BASIS_VALUES.join(', ')}; legalBasisExplanation: a sentence), then re-queue`,
      ),
    };
  }
  return {
    kind: 'failed-permanent',
    message: redact(
      `HubSpot rejected the legal basis${hs}: check "legalBasis" and "legalBasisExplanation" in this target's config`,
    ),
  };
}

function strings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (typeof v === 'number') return [String(v)];
  if (Array.isArray(v)) return v.flatMap(strings);
  return [];
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Which of `candidates` an item error is about: its context values, else an email named in its message. */
function attribute(
  err: ItemError,
  candidates: readonly string[],
  normalise: (s: string) => string = normaliseEmail,
): string[] {
  const set = new Set(candidates);
  const hits = new Set<string>();
  if (err.context && typeof err.context === 'object') {
    for (const vals of Object.values(err.context as Record<string, unknown>)) {
      for (const v of strings(vals)) {
        const n = normalise(v);
        if (set.has(n)) hits.add(n);
      }
    }
  }
  if (hits.size === 0 && typeof err.message === 'string') {
    const m = err.message.toLowerCase();
    for (const c of candidates) {
      if (new RegExp(`(^|[^a-z0-9._%+-])${escapeRegExp(c)}($|[^a-z0-9-]|\\.(?![a-z0-9]))`).test(m)) hits.add(c);
    }
  }
  return [...hits];
}

function itemMessage(err: ItemError): string {
  const parts = [
    typeof err.category === 'string' ? err.category : null,
    typeof err.message === 'string' ? err.message : null,
  ].filter(Boolean);
  return parts.join(': ') || 'error without a message';
}

export class HubSpotTarget implements Target {
  private readonly logger: Logger;
  /** The batch decision for this run (and from kv, for REFUSAL_TTL_MS). */
  private batch: BatchDecision | null = null;
  /** A 403 on the batch status reads (kept like a batch refusal, under its own key: its scope is `.batch.read`). */
  private batchReadRefusal: BatchDecision | null = null;

  constructor(
    readonly cfg: ResolvedHubSpotConfig,
    private readonly caps: Capabilities,
    readonly api: HubSpotApi,
  ) {
    this.logger = caps.logger.child({ target: caps.targetName, connector: 'hubspot' });
    try {
      const raw = caps.kv.get(this.batchKey());
      const d = raw ? (JSON.parse(raw) as BatchDecision) : null;
      if (d && (d.decision === 'refused' || d.decision === 'available') && typeof d.at === 'string') {
        const age = caps.clock.now().getTime() - Date.parse(d.at);
        if (d.decision === 'available' || age < REFUSAL_TTL_MS) this.batch = d;
      }
    } catch {
      this.batch = null;
    }
    try {
      const raw = caps.kv.get(this.batchReadKey());
      const d = raw ? (JSON.parse(raw) as BatchDecision) : null;
      if (
        d &&
        d.decision === 'refused' &&
        typeof d.at === 'string' &&
        caps.clock.now().getTime() - Date.parse(d.at) < REFUSAL_TTL_MS
      )
        this.batchReadRefusal = d;
    } catch {
      this.batchReadRefusal = null;
    }
  }

  async check(): Promise<CheckReport> {
    try {
      return await runCheck(this);
    } catch (e) {
      if (isTargetHalt(e)) throw e;
      throw new TargetHalt('fatal', redact(`check failed unexpectedly: ${(e as Error).message}`));
    }
  }

  deliver(batch: readonly OptOut[], mode: DeliveryMode): Promise<DeliveryReport> {
    return this.deliverNow(batch, mode);
  }

  async close(): Promise<void> {
    /* node-fetch keeps no sockets we own; nothing to release */
  }

  // -------------------------------------------------------------------------------------------
  // Batch decision

  batchKey(): string {
    return BATCH_KV_PREFIX + this.cfg.suppression.type;
  }

  /** Where a 403 on the batch status reads is remembered. */
  batchReadKey(): string {
    return `${BATCH_KV_PREFIX}${this.cfg.suppression.type}.read`;
  }

  /**
   * Read address statuses in batch before writing secondary addresses? Not when batch is off (`never`), known
   * refused for writes (a portal without the batch endpoints), or the reads themselves answered 403.
   */
  private useBatchRead(): boolean {
    if (this.cfg.suppression.batch === 'never') return false;
    if (this.batch?.decision === 'refused') return false;
    return this.batchReadRefusal === null;
  }

  /** What is known about batch suppression: for `check` and the plan. */
  batchState(): { mode: 'auto' | 'always' | 'never'; known: BatchDecision | null } {
    return { mode: this.cfg.suppression.batch, known: this.batch };
  }

  private useBatch(): boolean {
    const mode = this.cfg.suppression.batch;
    if (mode === 'never') return false;
    if (mode === 'always') return true;
    return this.batch?.decision !== 'refused';
  }

  private noteBatch(decision: 'refused' | 'available', detail?: string): void {
    if (this.batch?.decision === decision) return;
    this.batch = { decision, at: this.caps.clock.now().toISOString(), ...(detail ? { detail } : {}) };
    this.caps.kv.set(this.batchKey(), JSON.stringify(this.batch));
    if (decision === 'refused')
      this.logger.warn('hubspot batch suppression refused (403); falling back to per-email writes', { detail });
    else this.logger.info('hubspot batch suppression available');
  }

  // -------------------------------------------------------------------------------------------
  // Deliver

  private async deliverNow(batch: readonly OptOut[], mode: DeliveryMode): Promise<DeliveryReport> {
    const optOuts = new Map<string, OptOut>();
    for (const o of batch) {
      const key = normaliseEmail(o.email);
      if (!optOuts.has(key)) optOuts.set(key, o);
    }
    const emails = [...optOuts.keys()];
    const outcomes = new Map<string, Outcome>();
    const set = (
      email: string,
      kind: OutcomeKind,
      recordIds: readonly string[],
      extra: { message?: string; action?: string; matchedBy?: MatchedBy } = {},
    ): void => {
      outcomes.set(email, {
        email,
        kind,
        recordIds,
        ...(extra.matchedBy ? { matchedBy: extra.matchedBy } : {}),
        ...(extra.message ? { message: redact(extra.message) } : {}),
        ...(extra.action ? { action: extra.action } : {}),
      });
    };
    let halt: HaltInfo | undefined;
    for (const email of emails) {
      if (!plausibleEmail(email))
        set(email, 'failed-permanent', [], {
          message: 'not an email address (needs a local part, "@" and a domain); nothing sent to HubSpot',
        });
    }
    const lookupEmails = emails.filter((e) => !outcomes.has(e));

    try {
      // 1. Lookups: ceil(M/100) batch reads.
      const contacts = new Map<string, Contact>();
      for (let i = 0; i < lookupEmails.length; i += CHUNK) {
        const chunk = lookupEmails.slice(i, i + CHUNK);
        const r = await this.lookup(chunk);
        for (const [email, c] of r.contacts) contacts.set(email, c);
        for (const [email, f] of r.failed) set(email, f.kind, [], { message: f.message });
      }

      // 1b. Addresses no contact has as its primary: CRM search on hs_additional_emails, ~ceil(F/100) searches.
      const secondary = new Map<string, string[]>();
      const notPrimary = emails.filter((e) => !outcomes.has(e) && !contacts.has(e));
      if (this.cfg.matchAdditionalEmails && notPrimary.length > 0) {
        const r = await this.searchAdditional(notPrimary);
        for (const [email, ids] of r.matches) secondary.set(email, ids);
        for (const [email, f] of r.failed) set(email, f.kind, [], { message: f.message });
      }

      // 2. Decide.
      let toWrite: WriteItem[] = [];
      for (const email of emails) {
        if (outcomes.has(email)) continue;
        const c = contacts.get(email);
        const sec = secondary.get(email);
        if (c && c.optedOut) {
          set(email, 'already-suppressed', [c.id], {
            matchedBy: 'primary',
            message: 'hs_email_optout is already true (unsubscribed from all email)',
          });
        } else if (c) {
          toWrite.push({ email, contactId: c.id, secondaryOf: [] });
        } else if (sec) {
          // hs_email_optout belongs to the contact's primary address: the address's own status is read in 2b.
          toWrite.push({ email, contactId: null, secondaryOf: sec });
        } else if (this.cfg.onlyExistingContacts) {
          const where = this.cfg.matchAdditionalEmails
            ? 'as its primary email or in hs_additional_emails'
            : 'as its primary email (matchAdditionalEmails is false)';
          set(email, 'not-found', [], {
            message: `no HubSpot contact has this address ${where} (onlyExistingContacts is true)`,
          });
        } else {
          toWrite.push({ email, contactId: null, secondaryOf: [] });
        }
      }

      // 2b. Secondary addresses: their own status is not in any lookup; read it in batch (ceil(F/100) reads, a
      // read also in a dry run) and write only those not suppressed yet. Without the batch reads: write them all.
      const secondaryItems = toWrite.filter((w) => w.contactId === null && w.secondaryOf.length > 0);
      if (secondaryItems.length > 0 && this.useBatchRead()) {
        const suppressed = await this.readSuppressed(secondaryItems.map((w) => w.email));
        for (const w of secondaryItems) {
          const why = suppressed.get(w.email);
          if (why === undefined) continue;
          set(w.email, 'already-suppressed', [...w.secondaryOf], {
            matchedBy: 'additional-email',
            message: `${matchNote(w.secondaryOf)}; ${why}`,
          });
        }
        if (suppressed.size > 0) toWrite = toWrite.filter((w) => !outcomes.has(w.email));
      }

      // 3. Plan, or write then audit.
      if (mode === 'plan') {
        const viaBatch = this.useBatch();
        for (const item of toWrite) {
          set(item.email, 'planned', recordIdsOf(item), {
            ...matchOf(item),
            action: this.describe(item, optOuts.get(item.email)!, viaBatch),
          });
        }
      } else if (toWrite.length > 0) {
        const byEmail = new Map(toWrite.map((w) => [w.email, w]));
        await this.write(toWrite, (email, kind, message) => {
          const item = byEmail.get(email)!;
          const note = item.secondaryOf.length > 0 ? matchNote(item.secondaryOf) : undefined;
          set(email, kind, recordIdsOf(item), {
            ...matchOf(item),
            message: [note, message].filter(Boolean).join('; ') || undefined,
          });
        });
        const applied = toWrite.filter((w) => outcomes.get(w.email)?.kind === 'applied' && w.contactId !== null);
        const notes = await this.audit(
          applied.map((w) => ({ email: w.email, contactId: w.contactId!, optOut: optOuts.get(w.email)! })),
        );
        for (const [email, note] of notes) {
          const o = outcomes.get(email)!;
          outcomes.set(email, { ...o, message: redact(o.message ? `${o.message}; ${note}` : note) });
        }
      }
    } catch (e) {
      if (isTargetHalt(e)) {
        halt = e;
      } else {
        this.logger.error('hubspot delivery failed unexpectedly', {
          error: redact((e as Error)?.message ?? String(e)),
        });
        halt = {
          kind: 'fatal',
          message: redact(`unexpected error delivering to HubSpot: ${(e as Error)?.message ?? String(e)}`),
        };
      }
    }

    const handled = outcomes.size;
    for (const email of emails) {
      if (!outcomes.has(email))
        set(email, 'failed-retryable', [], { message: halt ? `not delivered: ${halt.message}` : 'not delivered' });
    }
    if (halt) {
      this.logger.warn('hubspot target halted', {
        kind: halt.kind,
        message: halt.message,
        delivered: handled,
        of: emails.length,
      });
      // Nothing handled and not a daily stop: a target-wide failure (nothing in the batch was done).
      if (handled === 0 && halt.kind !== 'quota') throw new TargetHalt(halt);
    }
    const list: Outcome[] = batch.map((o) => {
      const out = outcomes.get(normaliseEmail(o.email))!;
      return out.email === o.email ? out : { ...out, email: o.email };
    });
    if (halt) throw new TargetHalt(halt.kind, halt.message, { retryAt: halt.retryAt, outcomes: list });
    return { outcomes: list };
  }

  private get paths(): Paths {
    return this.api.paths;
  }

  private describe(item: WriteItem, optOut: OptOut, viaBatch: boolean): string {
    const cfg = this.cfg;
    const v =
      this.paths.version === 'legacy'
        ? {
            batchAll: 'v4 batch unsubscribe-all',
            oneAll: 'v4 per-email unsubscribe-all',
            batchWrite: 'v4 batch/write',
            one: 'v3 unsubscribe',
          }
        : {
            batchAll: `${this.paths.version} batch unsubscribe-all`,
            oneAll: `${this.paths.version} per-email unsubscribe-all`,
            batchWrite: `${this.paths.version} batch/write`,
            one: `${this.paths.version} unsubscribe`,
          };
    const who = item.contactId
      ? `contact ${item.contactId} (${item.email})`
      : item.secondaryOf.length > 0
        ? `${item.email} (${matchNote(item.secondaryOf)})`
        : `${item.email} (no HubSpot contact; status set by email)`;
    const bu = cfg.businessUnitId !== 0 ? `, businessUnitId ${cfg.businessUnitId}` : '';
    let action: string;
    if (cfg.suppression.type === 'unsubscribe-all') {
      action = `unsubscribe-all EMAIL for ${who} via ${viaBatch ? v.batchAll : v.oneAll}${bu}`;
    } else {
      const ids = cfg.suppression.subscriptionIds.join(', ');
      const legal = cfg.legalBasis ? `, legal basis ${cfg.legalBasis}` : '';
      action = `unsubscribe EMAIL from subscription${cfg.suppression.subscriptionIds.length > 1 ? 's' : ''} ${ids} for ${who} via ${viaBatch ? v.batchWrite : v.one}${legal}`;
    }
    const props = this.auditProperties(optOut);
    if (item.contactId && Object.keys(props).length > 0) {
      action += `; then set ${Object.entries(props)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ')}`;
    }
    return action;
  }

  // -------------------------------------------------------------------------------------------
  // Lookup

  private async lookup(
    emails: readonly string[],
  ): Promise<{ contacts: Map<string, Contact>; failed: Map<string, Failure> }> {
    const properties = [...new Set(['email', 'hs_email_optout', ...Object.keys(this.cfg.properties)])];
    const contacts = new Map<string, Contact>();
    const failed = new Map<string, Failure>();
    try {
      const path = this.paths.batchRead;
      const raw = await this.api.call(`POST ${path}`, {
        method: 'POST',
        path,
        qs: { archived: 'false' },
        body: { inputs: emails.map((id) => ({ id })), idProperty: 'email', properties, propertiesWithHistory: [] },
      });
      if (!raw.body || typeof raw.body !== 'object' || Array.isArray(raw.body)) {
        for (const email of emails)
          failed.set(email, {
            kind: 'failed-retryable',
            message: `HubSpot contact lookup answered HTTP ${raw.status} without a readable JSON body; looked up again later`,
          });
        return { contacts, failed };
      }
      const res = raw.body as {
        results?: Array<{ id?: unknown; properties?: Record<string, unknown> }>;
        errors?: ItemError[];
      };
      for (const r of Array.isArray(res.results) ? res.results : []) {
        const email = r.properties?.email;
        if (typeof email !== 'string' || email === '') continue;
        const key = normaliseEmail(email);
        const optOut =
          String(r.properties?.hs_email_optout ?? '')
            .trim()
            .toLowerCase() === 'true';
        const prev = contacts.get(key);
        // Two records for one email (should not happen: email is unique): suppressed only if both are.
        contacts.set(
          key,
          prev ? { id: prev.id, optedOut: prev.optedOut && optOut } : { id: String(r.id), optedOut: optOut },
        );
      }
      const errors = Array.isArray(res.errors) ? res.errors : [];
      for (const err of errors) {
        if (err.category === 'OBJECT_NOT_FOUND') continue; // missing: simply absent from results
        for (const email of attribute(err, emails)) {
          if (!contacts.has(email))
            failed.set(email, { kind: 'failed-retryable', message: `HubSpot lookup error: ${itemMessage(err)}` });
        }
      }
      return { contacts, failed };
    } catch (e) {
      if (isTargetHalt(e)) throw e;
      if (e instanceof HubSpotHttpError && e.status === 403) {
        throw contactsScopeHalt('lookup', e);
      }
      if (e instanceof HubSpotHttpError && e.status === 400) {
        // Refused for what this chunk holds (e.g. one malformed address); nothing is written yet: the engine
        // splits the batch until the address(es) at fault stand alone.
        throw new TargetHalt({
          kind: 'bad-request',
          message: redact(`HubSpot refused the contact lookup as a bad request: ${e.message}`),
        });
      }
      if (e instanceof HubSpotHttpError && e.status >= 400 && e.status < 500 && e.status !== 429) {
        for (const email of emails)
          failed.set(email, { kind: 'failed-retryable', message: `HubSpot contact lookup refused: ${e.message}` });
        return { contacts, failed };
      }
      throw new TargetHalt({
        kind: e instanceof HubSpotHttpError && e.status === 429 ? 'rate-limit' : 'unavailable',
        message: redact(`HubSpot contact lookup failed after retries: ${(e as Error).message}`),
      });
    }
  }

  /**
   * Find contacts holding `emails` as secondary addresses: CRM search, one `IN` filter on hs_additional_emails
   * per request (within the filter limits), paced by the search limiter, every page read via `after`. HubSpot's
   * match is not trusted: each result's `;`-separated values are compared exactly (trimmed, lower-cased).
   */
  private async searchAdditional(
    emails: readonly string[],
  ): Promise<{ matches: Map<string, string[]>; failed: Map<string, Failure> }> {
    const matches = new Map<string, string[]>();
    const failed = new Map<string, Failure>();
    const path = this.paths.search;
    const queue = searchChunks(emails);
    /** Single addresses the search refused with a 400, decided once the queue is drained. */
    const refused: Array<{ email: string; error: HubSpotHttpError }> = [];
    let anySearchOk = false;
    while (queue.length > 0) {
      const chunk = queue.shift()!;
      const wanted = new Set(chunk);
      let after = '0';
      let pages = 0;
      try {
        for (;;) {
          const raw = await this.api.call(`POST ${path}`, {
            method: 'POST',
            path,
            search: true,
            body: {
              filterGroups: [{ filters: [{ propertyName: ADDITIONAL_EMAILS, operator: 'IN', values: chunk }] }],
              properties: ['email', ADDITIONAL_EMAILS],
              sorts: [],
              limit: SEARCH_PAGE,
              after,
            },
          });
          pages += 1;
          anySearchOk = true;
          if (!raw.body || typeof raw.body !== 'object' || Array.isArray(raw.body)) {
            throw new UnreadableAnswer(
              `HubSpot search on hs_additional_emails answered HTTP ${raw.status} without a readable JSON body`,
            );
          }
          const b = raw.body as {
            results?: Array<{ id?: unknown; properties?: Record<string, unknown> }>;
            paging?: { next?: { after?: unknown } };
          };
          for (const r of Array.isArray(b.results) ? b.results : []) {
            if (r?.id === undefined || r.id === null) continue;
            const id = String(r.id);
            for (const a of additionalEmails(r.properties?.[ADDITIONAL_EMAILS])) {
              if (!wanted.has(a)) continue;
              const ids = matches.get(a) ?? [];
              if (!ids.includes(id)) ids.push(id);
              matches.set(a, ids);
            }
          }
          const next = b.paging?.next?.after;
          if (next === undefined || next === null || String(next) === '') break;
          if (String(next) === after)
            throw new UnreadableAnswer(
              `HubSpot search on hs_additional_emails returned the cursor just sent (${after}) as the next page`,
            );
          if (pages >= SEARCH_MAX_PAGES) {
            // Past 10,000 results HubSpot stops paging: the rest of this chunk cannot be told apart from not-found.
            for (const e of chunk) {
              if (!matches.has(e))
                failed.set(e, {
                  kind: 'failed-retryable',
                  message: 'HubSpot search on hs_additional_emails returned more than 10,000 results; not decided',
                });
            }
            break;
          }
          after = String(next);
        }
      } catch (e) {
        if (isTargetHalt(e)) throw e;
        if (e instanceof HubSpotHttpError && e.status === 403) {
          throw contactsScopeHalt('search', e);
        }
        if (e instanceof UnreadableAnswer) {
          for (const em of chunk)
            if (!matches.has(em))
              failed.set(em, { kind: 'failed-retryable', message: `${e.message}; not decided, looked up again later` });
          continue;
        }
        if (e instanceof HubSpotHttpError && e.status === 400 && !LEGAL_BASIS.test(e.bodyText())) {
          // Refused for what the chunk holds (e.g. one odd address): split until the refused address stands alone.
          if (chunk.length > 1) {
            const mid = Math.ceil(chunk.length / 2);
            queue.unshift(chunk.slice(0, mid), chunk.slice(mid));
            continue;
          }
          for (const em of chunk) refused.push({ email: em, error: e });
          continue;
        }
        if (e instanceof HubSpotHttpError && e.status >= 400 && e.status < 500 && e.status !== 429) {
          // Never guess not-found: these stay queued and are looked up again.
          for (const em of chunk)
            if (!matches.has(em))
              failed.set(em, {
                kind: 'failed-retryable',
                message: `HubSpot search on hs_additional_emails refused: ${e.message}`,
              });
          continue;
        }
        // Rate-limit storm or outage: defer only the addresses still needing the search (this chunk and the
        // rest); the addresses matched by primary email are written anyway.
        const f: Failure = {
          kind: 'failed-retryable',
          message: redact(
            `HubSpot contact search on hs_additional_emails failed after retries: ${(e as Error).message}; looked up again later`,
          ),
        };
        for (const em of chunk) if (!matches.has(em)) failed.set(em, f);
        for (const rest of queue.splice(0)) for (const em of rest) if (!matches.has(em)) failed.set(em, f);
      }
    }
    for (const { email, error } of refused) {
      // Other searches succeeded: HubSpot refuses this address itself (permanent, with its message). None did:
      // the refusal may be request-wide, so nothing is decided (never not-found).
      failed.set(
        email,
        anySearchOk
          ? {
              kind: 'failed-permanent',
              message: `HubSpot refused the search on hs_additional_emails for this address alone (other searches succeeded): ${error.message}`,
            }
          : { kind: 'failed-retryable', message: `HubSpot search on hs_additional_emails refused: ${error.message}` },
      );
    }
    return { matches, failed };
  }

  /**
   * Which of `emails` are already suppressed as addresses (email -> why), by the batch status reads, 100 per
   * call: unsubscribe-all mode reads the wide statuses (`UNSUBSCRIBED`, portal-wide or for this business
   * unit); subscriptions mode reads the subscription statuses (every configured id `UNSUBSCRIBED`). A read
   * never fails the delivery: a 403 is remembered (no more reads, kv for REFUSAL_TTL_MS) and any other failure
   * (after the retry policy) leaves its addresses to be written. Only a Halt (daily limit, 401) stops.
   */
  private async readSuppressed(emails: readonly string[]): Promise<Map<string, string>> {
    const cfg = this.cfg;
    const out = new Map<string, string>();
    const all = cfg.suppression.type === 'unsubscribe-all';
    const subIds = cfg.suppression.type === 'subscriptions' ? cfg.suppression.subscriptionIds : [];
    const path = all ? this.paths.batchUnsubscribeAllRead : this.paths.batchStatusRead;
    for (let i = 0; i < emails.length && this.useBatchRead(); i += CHUNK) {
      const chunk = emails.slice(i, i + CHUNK);
      const wanted = new Set(chunk);
      let body: unknown;
      try {
        const res = await this.api.call(`POST ${path}`, {
          method: 'POST',
          path,
          qs: { channel: 'EMAIL', businessUnitId: String(cfg.businessUnitId) },
          body: { inputs: chunk },
        });
        body = res.body;
      } catch (e) {
        if (isTargetHalt(e)) throw e;
        if (e instanceof HubSpotHttpError && e.status === 403) {
          this.batchReadRefusal = {
            decision: 'refused',
            at: this.caps.clock.now().toISOString(),
            detail: e.hubspotMessage() || e.message,
          };
          this.caps.kv.set(this.batchReadKey(), JSON.stringify(this.batchReadRefusal));
          this.logger.warn(
            'hubspot batch status read refused (403); secondary addresses are written without a status read',
            { detail: redact(this.batchReadRefusal.detail ?? '') },
          );
          break;
        }
        this.logger.warn('hubspot batch status read failed; writing those secondary addresses without it', {
          error: redact((e as Error)?.message ?? String(e)),
        });
        continue;
      }
      const b = (body && typeof body === 'object' ? body : {}) as { results?: unknown };
      const results = (Array.isArray(b.results) ? b.results : []) as Array<{
        subscriberIdString?: unknown;
        wideStatuses?: unknown;
        statuses?: unknown;
      }>;
      // Per address: all results must agree (a repeated address counts as suppressed only if every answer says so).
      const verdict = new Map<string, boolean>();
      for (const r of results) {
        if (typeof r?.subscriberIdString !== 'string') continue;
        const em = normaliseEmail(r.subscriberIdString);
        if (!wanted.has(em)) continue;
        const ok = all
          ? wideUnsubscribed(r.wideStatuses, cfg.businessUnitId)
          : subscriptionsUnsubscribed(r.statuses, subIds);
        verdict.set(em, (verdict.get(em) ?? true) && ok);
      }
      for (const [em, ok] of verdict) {
        if (!ok) continue;
        out.set(
          em,
          all
            ? 'the address is already unsubscribed from all email (HubSpot status)'
            : `the address is already unsubscribed from subscription${subIds.length > 1 ? 's' : ''} ${subIds.join(', ')} (HubSpot status)`,
        );
      }
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  /** Turn a non-Halt failure of one write request into a per-email failure. */
  private failureOf(e: unknown): Failure {
    if (e instanceof HubSpotHttpError) {
      if (e.status === 400 && LEGAL_BASIS.test(e.bodyText())) return legalBasisFailure(this.cfg, e.hubspotMessage());
      if (e.status === 429 || e.status >= 500)
        return { kind: 'failed-retryable', message: `${e.message} (after retries)` };
      return { kind: 'failed-permanent', message: e.message };
    }
    return { kind: 'failed-retryable', message: redact(`request failed: ${(e as Error)?.message ?? String(e)}`) };
  }

  private itemFailure(err: ItemError): Failure {
    const text = itemMessage(err);
    if (LEGAL_BASIS.test(text)) return legalBasisFailure(this.cfg, text);
    const status = Number(err.status);
    const category = typeof err.category === 'string' ? err.category : '';
    if (status === 429 || status >= 500 || /RATE_LIMIT|INTERNAL|TIMEOUT|UNAVAILABLE/i.test(category)) {
      return { kind: 'failed-retryable', message: `HubSpot: ${text}` };
    }
    if ((status >= 400 && status < 500) || /VALIDATION|INVALID|NOT_FOUND|CONFLICT|BLOCKED|GDPR/i.test(category)) {
      return { kind: 'failed-permanent', message: `HubSpot: ${text}` };
    }
    return { kind: 'failed-retryable', message: `HubSpot: ${text}` };
  }

  private scopeHalt(e: HubSpotHttpError, what: string, scopes: string): TargetHalt {
    return new TargetHalt({
      kind: 'auth',
      message: redact(`HubSpot refused ${what} (403): the token needs scope ${scopes} (${e.hubspotMessage()})`),
    });
  }

  /**
   * Write suppression for `items`, reporting one result per email through `done` as soon as it is known,
   * so that a halt part-way keeps what was already written.
   */
  private async write(
    items: readonly WriteItem[],
    done: (email: string, kind: WriteResultKind, message?: string) => void,
  ): Promise<void> {
    const cfg = this.cfg;
    const subs = cfg.suppression.type === 'subscriptions' ? cfg.suppression.subscriptionIds : [null];
    const units: Unit[] = items.flatMap((it) => subs.map((s) => ({ email: it.email, subscriptionId: s })));
    const ledger = new Ledger(units, done);

    let perEmail: Unit[] = [];
    if (this.useBatch()) {
      for (let i = 0; i < units.length; i += CHUNK) {
        const chunk = units.slice(i, i + CHUNK);
        if (!this.useBatch()) {
          perEmail.push(...chunk);
          continue;
        }
        const fallback = await this.writeBatch(chunk, ledger);
        perEmail.push(...fallback);
      }
    } else {
      perEmail = units;
    }
    if (perEmail.length > 0) await this.writePerEmail(perEmail, ledger);
  }

  /** One batch request. Returns the units to retry per-email (batch refused, or a 400 to isolate). */
  private async writeBatch(chunk: readonly Unit[], ledger: Ledger): Promise<Unit[]> {
    const cfg = this.cfg;
    const emails = [...new Set(chunk.map((u) => u.email))];
    let label: string;
    let req: { method: 'POST'; path: string; qs?: Record<string, string>; body: unknown };
    if (cfg.suppression.type === 'unsubscribe-all') {
      label = `POST ${this.paths.batchUnsubscribeAll}`;
      req = {
        method: 'POST',
        path: this.paths.batchUnsubscribeAll,
        qs: { channel: 'EMAIL', businessUnitId: String(cfg.businessUnitId) },
        body: { inputs: emails },
      };
    } else {
      label = `POST ${this.paths.batchWrite}`;
      req = {
        method: 'POST',
        path: this.paths.batchWrite,
        body: {
          inputs: chunk.map((u) => ({
            subscriberIdString: u.email,
            channel: 'EMAIL',
            statusState: 'UNSUBSCRIBED',
            subscriptionId: Number(u.subscriptionId),
            ...(cfg.legalBasis ? { legalBasis: cfg.legalBasis } : {}),
            ...(cfg.legalBasisExplanation ? { legalBasisExplanation: cfg.legalBasisExplanation } : {}),
          })),
        },
      };
    }
    try {
      const res = await this.api.call(label, req);
      if (this.cfg.suppression.batch === 'auto') this.noteBatch('available');
      this.mapBatchResult(res.body, chunk, emails, ledger);
      return [];
    } catch (e) {
      if (isTargetHalt(e)) throw e;
      if (e instanceof HubSpotHttpError && e.status === 403) {
        if (cfg.suppression.batch === 'auto') {
          this.noteBatch('refused', e.hubspotMessage() || e.message);
          return [...chunk];
        }
        throw new TargetHalt({
          kind: 'config',
          message: redact(
            `HubSpot refused batch suppression (403: needs Marketing Hub Enterprise and scope communication_preferences.statuses.batch.write; ${e.hubspotMessage()}); ` +
              'set suppression.batch to "auto" (fall back to per-email) or "never"',
          ),
        });
      }
      if (e instanceof HubSpotHttpError && e.status === 400 && !LEGAL_BASIS.test(e.bodyText()) && emails.length > 1) {
        // One bad input can fail a whole batch: isolate it with per-email writes.
        this.logger.warn('hubspot batch write rejected (400); retrying its emails one by one', { error: e.message });
        return [...chunk];
      }
      const f = this.failureOf(e);
      for (const u of chunk) ledger.fail(u, f);
      return [];
    }
  }

  private mapBatchResult(body: unknown, chunk: readonly Unit[], emails: readonly string[], ledger: Ledger): void {
    if (
      !body ||
      typeof body !== 'object' ||
      Array.isArray(body) ||
      !Array.isArray((body as { results?: unknown }).results)
    ) {
      // Not the documented answer (no results[]: an empty body, an HTML page): nothing is known to be written.
      const what = typeof body === 'string' ? 'a non-JSON body' : 'no results list';
      for (const u of chunk)
        ledger.fail(u, {
          kind: 'failed-retryable',
          message: `HubSpot answered the batch write with ${what}; not known to be written, retried later`,
        });
      return;
    }
    const b = body as { results?: unknown; errors?: unknown };
    const results = Array.isArray(b.results)
      ? (b.results as Array<{
          subscriberIdString?: unknown;
          subscriptionId?: unknown;
          setStatusSuccessReason?: unknown;
        }>)
      : [];
    const errors = Array.isArray(b.errors) ? (b.errors as ItemError[]) : [];
    const okEmails = new Set<string>();
    /** Emails with a result that names no subscription (covers all of that email's units). */
    const okWhole = new Set<string>();
    const okPairs = new Set<string>();
    const unchangedPairs = new Set<string>();
    for (const r of results) {
      if (typeof r?.subscriberIdString !== 'string') continue;
      const em = normaliseEmail(r.subscriberIdString);
      okEmails.add(em);
      if (r.subscriptionId === undefined || r.subscriptionId === null) okWhole.add(em);
      if (r.subscriptionId !== undefined) {
        okPairs.add(`${em}|${String(r.subscriptionId)}`);
        if (r.setStatusSuccessReason === 'NO_STATUS_CHANGE') unchangedPairs.add(`${em}|${String(r.subscriptionId)}`);
      }
    }
    const failed = new Map<string, Failure>();
    let unattributed: Failure | null = null;
    for (const err of errors) {
      const f = this.itemFailure(err);
      const hits = attribute(err, emails);
      if (hits.length === 0) unattributed ??= f;
      for (const h of hits) if (!failed.has(h) || f.kind === 'failed-permanent') failed.set(h, f);
    }
    for (const u of chunk) {
      const f = failed.get(u.email);
      if (f) {
        ledger.fail(u, f);
      } else if (
        unattributed &&
        !(okPairs.has(`${u.email}|${u.subscriptionId}`) || (u.subscriptionId === null && okEmails.has(u.email)))
      ) {
        ledger.fail(u, {
          kind: 'failed-retryable',
          message: `HubSpot reported an error it did not attribute to an email: ${unattributed.message}`,
        });
      } else if (u.subscriptionId !== null && unchangedPairs.has(`${u.email}|${u.subscriptionId}`)) {
        ledger.ok(u, `already unsubscribed from subscription ${u.subscriptionId}`, true);
      } else if (
        u.subscriptionId === null
          ? okEmails.has(u.email)
          : okPairs.has(`${u.email}|${u.subscriptionId}`) || okWhole.has(u.email)
      ) {
        ledger.ok(u);
      } else {
        // Only an address HubSpot lists in results is written; a silent omission is not.
        ledger.fail(u, {
          kind: 'failed-retryable',
          message: `HubSpot's batch answer did not list this address${u.subscriptionId !== null ? ` for subscription ${u.subscriptionId}` : ''}; not known to be written, retried later`,
        });
      }
    }
  }

  private async writePerEmail(units: readonly Unit[], ledger: Ledger): Promise<void> {
    const cfg = this.cfg;
    // Group by email so one worker handles all of an email's subscriptions.
    const byEmail = new Map<string, Unit[]>();
    for (const u of units) byEmail.set(u.email, [...(byEmail.get(u.email) ?? []), u]);
    await pool([...byEmail.values()], PER_EMAIL_CONCURRENCY, async (group) => {
      for (const u of group) {
        try {
          let res;
          if (u.subscriptionId === null) {
            const path = this.paths.unsubscribeAll(u.email);
            res = await this.api.call(`POST ${path}`, {
              method: 'POST',
              path,
              qs: { channel: 'EMAIL', businessUnitId: String(cfg.businessUnitId) },
            });
          } else {
            res = await this.api.call(`POST ${this.paths.unsubscribe} (${u.email}, subscription ${u.subscriptionId})`, {
              method: 'POST',
              path: this.paths.unsubscribe,
              body: {
                emailAddress: u.email,
                subscriptionId: u.subscriptionId,
                ...(cfg.legalBasis ? { legalBasis: cfg.legalBasis } : {}),
                ...(cfg.legalBasisExplanation ? { legalBasisExplanation: cfg.legalBasisExplanation } : {}),
              },
            });
          }
          const unreadable = unreadableWriteAnswer(res.body, u.subscriptionId === null);
          if (unreadable) {
            ledger.fail(u, {
              kind: 'failed-retryable',
              message: `HubSpot answered the status write with ${unreadable}; not known to be written, retried later`,
            });
            continue;
          }
          ledger.ok(u);
        } catch (e) {
          if (isTargetHalt(e)) throw e;
          if (e instanceof HubSpotHttpError && e.status === 403) {
            throw this.scopeHalt(
              e,
              'the subscription status write',
              'communication_preferences.write (or communication_preferences.read_write)',
            );
          }
          if (
            e instanceof HubSpotHttpError &&
            e.status === 400 &&
            u.subscriptionId !== null &&
            ALREADY_UNSUBSCRIBED.test(e.bodyText())
          ) {
            ledger.ok(u, `already unsubscribed from subscription ${u.subscriptionId}`, true);
            continue;
          }
          ledger.fail(u, this.failureOf(e));
        }
      }
    });
  }

  // -------------------------------------------------------------------------------------------
  // Audit properties

  private auditProperties(o: OptOut): Record<string, string> {
    const out: Record<string, string> = {};
    for (const [name, v] of Object.entries(this.cfg.properties)) {
      const value = mappedValue(v, o);
      if (value !== null && value !== undefined) out[name] = String(value);
    }
    return out;
  }

  /**
   * Batch update the audit properties of contacts whose suppression was just applied. Best effort: the
   * suppression stands either way; a failure is noted on the outcome. Returns email -> note.
   */
  private async audit(
    applied: readonly { email: string; contactId: string; optOut: OptOut }[],
  ): Promise<Map<string, string>> {
    const notes = new Map<string, string>();
    if (Object.keys(this.cfg.properties).length === 0) return notes;
    const inputs = applied
      .map((a) => ({ a, properties: this.auditProperties(a.optOut) }))
      .filter((x) => Object.keys(x.properties).length > 0);
    for (let i = 0; i < inputs.length; i += CHUNK) {
      const chunk = inputs.slice(i, i + CHUNK);
      const byId = new Map(chunk.map((x) => [x.a.contactId, x.a.email]));
      try {
        const path = this.paths.batchUpdate;
        const res = await this.api.call(`POST ${path}`, {
          method: 'POST',
          path,
          body: { inputs: chunk.map((x) => ({ id: x.a.contactId, properties: x.properties })) },
        });
        const rb = (res.body && typeof res.body === 'object' ? res.body : {}) as { errors?: unknown };
        const errors = (Array.isArray(rb.errors) ? rb.errors : []) as ItemError[];
        for (const err of errors) {
          const ids = attribute(err, [...byId.keys()], (s) => s.trim());
          const targets = ids.length > 0 ? ids.map((id) => byId.get(id)!) : chunk.map((x) => x.a.email);
          for (const email of targets) notes.set(email, `audit properties not written: ${itemMessage(err)}`);
        }
      } catch (e) {
        if (isTargetHalt(e)) throw e;
        this.logger.warn('hubspot audit property update failed', { error: (e as Error).message });
        for (const x of chunk) notes.set(x.a.email, `audit properties not written: ${(e as Error).message}`);
      }
    }
    return notes;
  }
}

/** A `wideStatuses` list says "unsubscribed from all email" for this business unit (or portal-wide). */
export function wideUnsubscribed(wideStatuses: unknown, businessUnitId: number): boolean {
  if (!Array.isArray(wideStatuses)) return false;
  return (wideStatuses as Array<Record<string, unknown>>).some(
    (w) =>
      !!w &&
      w.status === 'UNSUBSCRIBED' &&
      (w.channel === undefined || w.channel === 'EMAIL') &&
      (w.wideStatusType === 'PORTAL_WIDE' ||
        (w.wideStatusType === 'BUSINESS_UNIT_WIDE' &&
          (w.businessUnitId === undefined || Number(w.businessUnitId) === businessUnitId))),
  );
}

/** A `statuses` list has every one of `subscriptionIds` `UNSUBSCRIBED`. */
export function subscriptionsUnsubscribed(statuses: unknown, subscriptionIds: readonly string[]): boolean {
  if (!Array.isArray(statuses) || subscriptionIds.length === 0) return false;
  const unsub = new Set(
    (statuses as Array<Record<string, unknown>>)
      .filter(
        (s) =>
          !!s &&
          s.status === 'UNSUBSCRIBED' &&
          (s.channel === undefined || s.channel === 'EMAIL') &&
          s.subscriptionId !== undefined,
      )
      .map((s) => String(s.subscriptionId)),
  );
  return subscriptionIds.every((id) => unsub.has(id));
}

/**
 * Why a 2xx answer to a per-email write does not show the write (null: it does). The contract answers with a
 * JSON object: unsubscribe-all with a status envelope (`status`, `results[]`), unsubscribe with the subscription status.
 */
function unreadableWriteAnswer(body: unknown, all: boolean): string | null {
  if (typeof body === 'string') return 'a non-JSON body';
  if (!body || typeof body !== 'object' || Array.isArray(body)) return 'an empty body';
  const b = body as { results?: unknown; status?: unknown };
  if (all && !Array.isArray(b.results) && typeof b.status !== 'string') return 'neither a status nor results';
  if (!all && Object.keys(b).length === 0) return 'an empty object';
  return null;
}

/** A 403 on a contact read: the target stops, naming the scope HubSpot says is missing. */
function contactsScopeHalt(what: 'lookup' | 'search', e: HubSpotHttpError): TargetHalt {
  return new TargetHalt({
    kind: 'auth',
    message: redact(
      `HubSpot refused the contact ${what} (403): the token needs scope ${missingScopesOf(e) ?? 'crm.objects.contacts.read'} (${e.hubspotMessage()})`,
    ),
  });
}

function recordIdsOf(item: WriteItem): string[] {
  return item.contactId ? [item.contactId] : [...item.secondaryOf];
}

function matchOf(item: WriteItem): { matchedBy?: MatchedBy } {
  return item.contactId
    ? { matchedBy: 'primary' }
    : item.secondaryOf.length > 0
      ? { matchedBy: 'additional-email' }
      : {};
}

function matchNote(ids: readonly string[]): string {
  return `secondary address (hs_additional_emails) of contact${ids.length > 1 ? 's' : ''} ${ids.join(', ')}`;
}

interface LedgerEntry {
  left: number;
  total: number;
  /** Units HubSpot reported as already in the requested state. */
  unchanged: number;
  failures: Failure[];
  /** Subscription ids of the failures, same order (subscriptions mode). */
  failedSubs: string[];
  notes: string[];
}

/** Collects per-unit results and reports one result per email once all its units are in. */
class Ledger {
  private readonly state = new Map<string, LedgerEntry>();

  constructor(
    units: readonly Unit[],
    private readonly done: (email: string, kind: WriteResultKind, message?: string) => void,
  ) {
    for (const u of units) {
      const s = this.state.get(u.email) ?? { left: 0, total: 0, unchanged: 0, failures: [], failedSubs: [], notes: [] };
      s.left += 1;
      s.total += 1;
      this.state.set(u.email, s);
    }
  }

  /** `unchanged`: HubSpot says the status was already what we asked for. */
  ok(u: Unit, note?: string, unchanged = false): void {
    const s = this.state.get(u.email)!;
    if (note) s.notes.push(note);
    if (unchanged) s.unchanged += 1;
    this.settle(u.email, s);
  }

  fail(u: Unit, f: Failure): void {
    const s = this.state.get(u.email)!;
    s.failures.push(f);
    if (u.subscriptionId !== null) s.failedSubs.push(u.subscriptionId);
    this.settle(u.email, s);
  }

  private settle(email: string, s: LedgerEntry): void {
    s.left -= 1;
    if (s.left > 0) return;
    if (s.failures.length === 0) {
      const note = s.notes.length > 0 ? [...new Set(s.notes)].join('; ') : undefined;
      this.done(email, s.unchanged === s.total ? 'already-suppressed' : 'applied', note);
      return;
    }
    const permanent = s.failures.some((f) => f.kind === 'failed-permanent');
    // Group identical messages: "subscriptions 111, 222: <message>".
    const groups = new Map<string, string[]>();
    s.failures.forEach((f, i) =>
      groups.set(f.message, [
        ...(groups.get(f.message) ?? []),
        ...(s.failedSubs[i] !== undefined ? [s.failedSubs[i]!] : []),
      ]),
    );
    const message = [...groups]
      .map(([m, subs]) =>
        subs.length === 0 ? m : `subscription${subs.length > 1 ? 's' : ''} ${subs.join(', ')}: ${m}`,
      )
      .join('; ');
    this.done(email, permanent ? 'failed-permanent' : 'failed-retryable', message);
  }
}

/** Run `fn` over `items` with at most `n` at once; the first thrown error stops new work and is rethrown. */
async function pool<T>(items: readonly T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  const worker = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        failure ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  if (failure !== null) throw (failure as { error: unknown }).error;
}
