/**
 * Row -> record mappers shared by the SQLite and PostgreSQL stores: both select the same columns under the same
 * names for these reads, so what a record means (an audit row's outcome, its first write, a delivery event) is
 * decided in one place and the two stores cannot drift apart.
 */
import type { AuditRow, DeliveryEvent, ParkedRow, QuarantineRow } from './types';

export interface AuditDbRow {
  email: string;
  contact_id: string;
  target: string;
  opted_out_at: string;
  enqueued_at: string;
  state: string;
  outcome: string | null;
  completed_at: string | null;
  attempts: number;
  last_error: string | null;
  record_ids: string | null;
  first_applied_at: string | null;
  first_applied_ids: string | null;
  last_kind: string | null;
  last_at: string | null;
  deliveries: number;
}

export function auditRowFrom(r: AuditDbRow): AuditRow {
  // written_at is the CRM write: only `applied` deliveries were written (not-found / already-suppressed were not)
  const written = r.first_applied_at ?? (r.state === 'done' && r.outcome === 'applied' ? r.completed_at : null);
  const lag = written ? Math.max(0, Math.round((Date.parse(written) - Date.parse(r.opted_out_at)) / 1000)) : null;
  const everApplied = r.first_applied_at !== null;
  const ids = r.state === 'done' && everApplied ? r.first_applied_ids : r.record_ids;
  return {
    email: r.email,
    contactId: r.contact_id,
    target: r.target,
    optedOutAt: r.opted_out_at,
    detectedAt: r.enqueued_at,
    writtenAt: written,
    closedAt: r.state === 'queued' ? null : r.completed_at,
    lagSeconds: lag,
    recordIds: ids ? (JSON.parse(ids) as string[]) : [],
    outcome:
      r.state === 'queued'
        ? r.outcome === 'failed-retryable'
          ? 'queued (retrying)'
          : 'queued'
        : r.state === 'done' && everApplied
          ? 'applied'
          : (r.outcome ?? r.state),
    attempts: r.attempts,
    message: r.last_error,
    lastOutcome: r.last_kind,
    lastDeliveryAt: r.last_at,
    deliveries: r.deliveries,
  };
}

export interface DeliveryDbRow {
  id: number;
  at: string;
  run_id: number | null;
  run_kind: string | null;
  target: string;
  email: string;
  contact_id: string | null;
  attempt: number | null;
  origin: string | null;
  kind: string;
  record_ids: string | null;
  message: string | null;
}

export function deliveryEventFrom(r: DeliveryDbRow): DeliveryEvent {
  return {
    id: r.id,
    at: r.at,
    runId: r.run_id,
    runKind: r.run_kind,
    target: r.target,
    email: r.email,
    contactId: r.contact_id,
    attempt: r.attempt ?? 0,
    origin: r.origin,
    outcome: r.kind,
    recordIds: r.record_ids ? (JSON.parse(r.record_ids) as string[]) : [],
    message: r.message,
  };
}

export interface QuarantineDbRow {
  id: number;
  run_id: number | null;
  source: string;
  record_id: string | null;
  reason: string;
  raw: string;
  at: string;
  last_seen_at: string | null;
  seen_count: number;
}

export function quarantineRowFrom(r: QuarantineDbRow): QuarantineRow {
  return {
    id: r.id,
    runId: r.run_id,
    source: r.source,
    recordId: r.record_id,
    reason: r.reason,
    raw: JSON.parse(r.raw) as unknown,
    at: r.at,
    lastSeenAt: r.last_seen_at ?? r.at,
    timesSeen: r.seen_count,
  };
}

export interface ParkedDbRow {
  target: string;
  email: string;
  opted_out_at: string;
  completed_at: string | null;
  attempts: number;
  last_error: string | null;
}

export function parkedRowFrom(r: ParkedDbRow): ParkedRow {
  return {
    target: r.target,
    email: r.email,
    optedOutAt: r.opted_out_at,
    parkedAt: r.completed_at,
    attempts: r.attempts,
    reason: r.last_error,
  };
}
