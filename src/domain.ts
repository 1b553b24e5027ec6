/**
 * The shared vocabulary of the connector: opt-outs, per-email outcomes, email normalisation.
 * No I/O here. Every other module (engine, store, source, connectors) speaks these types.
 */

/** Emails are compared trimmed and lower-cased everywhere (Constant Contact, HubSpot, Salesforce). */
export function normaliseEmail(raw: string): string {
  return raw.trim().toLowerCase();
}

/** A person who opted out in Constant Contact. `email` is always normalised. */
export interface OptOut {
  readonly email: string;
  /** Constant Contact `contact_id`. */
  readonly contactId: string;
  /** ISO-8601 date-time of the opt-out (`email_address.opt_out_date`, else `email_address.updated_at`). */
  readonly optedOutAt: string;
  /** `email_address.opt_out_source` (Contact | Account | System ...), null when absent. */
  readonly source: string | null;
  /** `email_address.opt_out_reason`, null when absent. */
  readonly reason: string | null;
  /** True when the Constant Contact contact was deleted after opting out (the opt-out still holds). */
  readonly deleted: boolean;
}

/**
 * What the source observed about one contact. Detection turns these into opt-outs.
 * `permission` is `email_address.permission_to_send`.
 */
export interface ObservedContact {
  readonly email: string;
  readonly contactId: string;
  readonly permission: string;
  readonly optedOutAt: string | null;
  readonly source: string | null;
  readonly reason: string | null;
  readonly deleted: boolean;
}

export function isOptedOut(c: ObservedContact): boolean {
  return c.permission === 'unsubscribed';
}

/** ISO-8601 UTC with milliseconds, so stored dates compare correctly as strings (SQL `>=`, `--since`). */
export function canonicalTime(raw: string): string {
  const t = Date.parse(raw);
  return Number.isNaN(t) ? raw : new Date(t).toISOString();
}

export function toOptOut(c: ObservedContact, fallbackAt: string): OptOut {
  return {
    email: c.email,
    contactId: c.contactId,
    optedOutAt: canonicalTime(c.optedOutAt ?? fallbackAt),
    source: c.source,
    reason: c.reason,
    deleted: c.deleted,
  };
}

/**
 * The result of delivering one opt-out to one target.
 * - applied: the CRM now suppresses this email (a write happened).
 * - already-suppressed: every matching CRM record was already suppressed; no write.
 * - not-found: no CRM record has this email (nothing to suppress).
 * - failed-retryable: stays queued and is retried on a later run with backoff.
 * - failed-permanent: parked with its reason; visible in `status`.
 * - planned: dry run only; `action` says what would be written.
 */
export const OUTCOME_KINDS = [
  'applied',
  'already-suppressed',
  'not-found',
  'failed-retryable',
  'failed-permanent',
  'planned',
] as const;
export type OutcomeKind = (typeof OUTCOME_KINDS)[number];

export interface Outcome {
  readonly email: string;
  readonly kind: OutcomeKind;
  /** CRM record ids matched (and written, for `applied`), e.g. HubSpot contact ids, Salesforce Ids. */
  readonly recordIds: readonly string[];
  /** Why it failed, or extra detail. Must never contain a secret. */
  readonly message?: string;
  /** Dry run: a human-readable description of the write that would happen. */
  readonly action?: string;
  /** How the CRM records were found, when the connector says (e.g. HubSpot: `primary`, `additional-email`). */
  readonly matchedBy?: string;
}

/** Outcomes that close an outbox row. */
export function isFinal(kind: OutcomeKind): boolean {
  return kind === 'applied' || kind === 'already-suppressed' || kind === 'not-found';
}

/** Values an opt-out can contribute to audit fields in a CRM mapping. */
export const OPT_OUT_VALUE_KEYS = ['optOutDate', 'reason', 'source', 'contactId', 'email'] as const;
export type OptOutValueKey = (typeof OPT_OUT_VALUE_KEYS)[number];

/**
 * Mapping values: either the name of an opt-out attribute, or `{ "constant": "..." }`.
 */
export type MappedValue = OptOutValueKey | { readonly constant: string | number | boolean };

export function mappedValue(v: MappedValue, o: OptOut): string | number | boolean | null {
  if (typeof v === 'object') return v.constant;
  switch (v) {
    case 'optOutDate':
      return o.optedOutAt;
    case 'reason':
      return o.reason;
    case 'source':
      return o.source;
    case 'contactId':
      return o.contactId;
    case 'email':
      return o.email;
  }
}

/** A namespaced key/value store (tokens, usage counters), durable per call. Re-exported by the plugin contract. */
export interface KeyValue {
  get(key: string): string | null;
  /**
   * Store a value. An embedded store (SQLite) writes it durably (committed) before it returns; a server-backed
   * store (PostgreSQL) may queue the write and make it durable in `flush()`: a caller that must not lose the value
   * (a rotated refresh token) awaits `kv.flush?.()` right after.
   */
  set(key: string, value: string): void;
  /**
   * Resolves once every `set()` so far is durable; rejects when one could not be stored. Absent (or a no-op) when
   * `set()` is durable already. Call it as `await kv.flush?.()`.
   */
  flush?(): Promise<void>;
  /**
   * Store a credential the vendor just issued (a rotated refresh token, its access token). Like `set()`, but a
   * server-backed store writes it even when the caller's fleet lease has moved on to another worker: a rotation
   * kills the old token, so the new one is the only one that works and must not be refused with the other writes
   * of a stale worker (only the holder of the newest token can rotate it, so the last write is the newest token).
   * Absent: use `set()`.
   */
  setCredential?(key: string, value: string): void;
}

/** A source record that cannot be trusted, kept aside with the reason. Re-exported by source/types. */
export interface QuarantinedRecord {
  readonly reason: string;
  readonly raw: unknown;
  readonly recordId: string | null;
  /** The record's normalised email address when one could be read (not stored: it is in `raw`). */
  readonly email?: string | null;
}

/** A config (or store path) that cannot be used: the CLI exits 2 before any write. Re-exported by config. */
export class ConfigError extends Error {
  constructor(
    readonly problems: string[],
    readonly file?: string,
  ) {
    super(`${file ? `config ${file}` : 'config'} is invalid:\n` + problems.map((p) => `  - ${p}`).join('\n'));
    this.name = 'ConfigError';
  }
}
