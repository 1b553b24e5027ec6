/**
 * The PostgreSQL state store's schema: the "store" migration set (see ./pool `migrate`), applied once per database
 * under an advisory lock. Each entry moves the set from version i to i+1; never edit a released entry, append one.
 *
 * Every table carries `account` (one Constant Contact connection) first in its primary key and indexes, so any
 * number of accounts share one database and an account's rows are found (and removed) through its prefix.
 * Times are ISO-8601 text and every text column compares bytewise (COLLATE "C"), exactly as the SQLite store
 * compares them, so both stores order and filter the same way whatever the database's locale.
 * Run, backfill ids are numbered per account (1, 2, ... like one SQLite file); event, outcome and quarantine ids are
 * global identities (only their order is used).
 */

const T = 'text COLLATE "C"';

export const STORE_MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE cc_accounts (
    id          ${T} PRIMARY KEY,
    config      jsonb,
    priority    integer NOT NULL DEFAULT 1,
    created_at  ${T} NOT NULL,
    updated_at  ${T} NOT NULL
  );

  CREATE TABLE cc_opt_outs (
    account        ${T} NOT NULL,
    email          ${T} NOT NULL,
    contact_id     ${T} NOT NULL,
    opted_out_at   ${T} NOT NULL,
    source         ${T},
    reason         ${T},
    deleted        boolean NOT NULL DEFAULT false,
    state          ${T} NOT NULL DEFAULT 'active' CHECK (state IN ('active','left')),
    first_seen_at  ${T} NOT NULL,
    last_seen_at   ${T} NOT NULL,
    left_at        ${T},
    PRIMARY KEY (account, email)
  );
  CREATE INDEX cc_opt_outs_state ON cc_opt_outs (account, state, opted_out_at);

  CREATE TABLE cc_outbox (
    account         ${T} NOT NULL,
    target          ${T} NOT NULL,
    email           ${T} NOT NULL,
    state           ${T} NOT NULL CHECK (state IN ('queued','done','parked')),
    enqueued_at     ${T} NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at ${T} NOT NULL,
    last_error      ${T},
    outcome         ${T},
    record_ids      ${T},
    completed_at    ${T},
    origin          ${T} NOT NULL DEFAULT 'sync',
    -- the opt-out's time, copied (and kept by the trigger below) so the oldest queued opt-out is an index read
    opted_out_at    ${T},
    PRIMARY KEY (account, target, email),
    FOREIGN KEY (account, email) REFERENCES cc_opt_outs (account, email)
  );
  -- dueOutbox and queuedOutbox read their page in index order (a LIMIT stops the scan), however many are queued
  CREATE INDEX cc_outbox_due ON cc_outbox (account, target, next_attempt_at, opted_out_at, email) WHERE state = 'queued';
  CREATE INDEX cc_outbox_queued ON cc_outbox (account, target, opted_out_at, email) WHERE state = 'queued';
  -- the closed rows' counts (targetStatus); the queued ones are counted in the indexes above. Partial: a query for
  -- queued rows never takes this one, with or without table statistics
  CREATE INDEX cc_outbox_counts ON cc_outbox (account, target, state, outcome) WHERE state <> 'queued';
  CREATE INDEX cc_outbox_done ON cc_outbox (account, target, completed_at) WHERE state = 'done';
  CREATE INDEX cc_outbox_email ON cc_outbox (account, email);

  CREATE FUNCTION cc_outbox_opted_out_at() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    UPDATE cc_outbox SET opted_out_at = NEW.opted_out_at WHERE account = NEW.account AND email = NEW.email;
    RETURN NULL;
  END $$;
  CREATE TRIGGER cc_opt_outs_opted_out_at AFTER UPDATE OF opted_out_at ON cc_opt_outs
    FOR EACH ROW WHEN (OLD.opted_out_at IS DISTINCT FROM NEW.opted_out_at) EXECUTE FUNCTION cc_outbox_opted_out_at();

  -- the delivery history: append-only (compliance evidence). Only removing a whole account (SET LOCAL
  -- cc_optout.remove_account to its id, in removeAccount's transaction) may delete its rows.
  CREATE TABLE cc_outcomes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account     ${T} NOT NULL,
    run_id      integer,
    target      ${T} NOT NULL,
    email       ${T} NOT NULL,
    kind        ${T} NOT NULL,
    record_ids  ${T},
    message     ${T},
    at          ${T} NOT NULL,
    attempt     integer,
    origin      ${T}
  );
  CREATE INDEX cc_outcomes_target_email ON cc_outcomes (account, target, email, kind, id);
  CREATE INDEX cc_outcomes_at ON cc_outcomes (account, at);
  CREATE INDEX cc_outcomes_run ON cc_outcomes (account, run_id);
  CREATE INDEX cc_outcomes_applied ON cc_outcomes (account, at) WHERE kind = 'applied';
  CREATE FUNCTION cc_outcomes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF TG_OP = 'DELETE' AND OLD.account = current_setting('cc_optout.remove_account', true) THEN
      RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the delivery history (cc_outcomes) is append-only';
  END $$;
  CREATE TRIGGER cc_outcomes_no_change BEFORE UPDATE OR DELETE ON cc_outcomes
    FOR EACH ROW EXECUTE FUNCTION cc_outcomes_append_only();

  CREATE TABLE cc_checkpoints (
    account ${T} NOT NULL, key ${T} NOT NULL, value ${T} NOT NULL, updated_at ${T} NOT NULL,
    PRIMARY KEY (account, key)
  );
  CREATE TABLE cc_kv (
    account ${T} NOT NULL, namespace ${T} NOT NULL, key ${T} NOT NULL, value ${T} NOT NULL, updated_at ${T} NOT NULL,
    PRIMARY KEY (account, namespace, key)
  );

  CREATE TABLE cc_runs (
    account     ${T} NOT NULL,
    id          integer NOT NULL,
    kind        ${T} NOT NULL,
    dry_run     boolean NOT NULL,
    started_at  ${T} NOT NULL,
    finished_at ${T},
    exit_code   integer,
    summary     ${T},
    status      ${T},
    variant     ${T},
    owner       ${T},
    pid         integer,
    host        ${T},
    counts      ${T},
    api_calls   ${T},
    error       ${T},
    PRIMARY KEY (account, id)
  );
  CREATE INDEX cc_runs_running ON cc_runs (account) WHERE status = 'running';

  CREATE TABLE cc_quarantine (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account      ${T} NOT NULL,
    run_id       integer,
    source       ${T} NOT NULL,
    record_id    ${T},
    reason       ${T} NOT NULL,
    raw          ${T} NOT NULL,
    at           ${T} NOT NULL,
    fingerprint  ${T} NOT NULL,
    last_seen_at ${T} NOT NULL,
    seen_count   integer NOT NULL DEFAULT 1,
    UNIQUE (account, source, fingerprint)
  );
  CREATE INDEX cc_quarantine_seen ON cc_quarantine (account, last_seen_at, id);

  CREATE TABLE cc_events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account ${T} NOT NULL,
    run_id  integer,
    kind    ${T} NOT NULL,
    email   ${T},
    detail  ${T},
    at      ${T} NOT NULL
  );
  CREATE INDEX cc_events_id ON cc_events (account, id);
  CREATE INDEX cc_events_kind ON cc_events (account, kind, id);
  CREATE INDEX cc_events_run ON cc_events (account, run_id, kind);

  CREATE TABLE cc_backfills (
    account           ${T} NOT NULL,
    id                integer NOT NULL,
    since             ${T},
    targets           ${T} NOT NULL,
    started_at        ${T} NOT NULL,
    scan_completed_at ${T},
    finished_at       ${T},
    PRIMARY KEY (account, id)
  );

  CREATE TABLE cc_run_lock (
    account     ${T} PRIMARY KEY,
    owner       ${T} NOT NULL,
    pid         integer NOT NULL,
    host        ${T} NOT NULL,
    command     ${T} NOT NULL,
    acquired_at ${T} NOT NULL,
    renewed_at  ${T} NOT NULL,
    expires_at  ${T} NOT NULL
  );
  `,
];

/** Every table holding an account's state (removeAccount empties each, in one transaction). */
export const ACCOUNT_TABLES: readonly string[] = [
  'cc_outcomes',
  'cc_outbox',
  'cc_opt_outs',
  'cc_checkpoints',
  'cc_kv',
  'cc_runs',
  'cc_quarantine',
  'cc_events',
  'cc_backfills',
  'cc_run_lock',
];
