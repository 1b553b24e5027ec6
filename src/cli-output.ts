/**
 * What every command module shares: exit codes, the secret-free stdout writer, the error that carries an exit
 * code, the global options. Command modules (commands.ts, connector-commands.ts) import this, never cli.ts,
 * so nothing imports the CLI entry point.
 */
import type { ProgressEvent } from './engine';
import { LogLevel, redact } from './log';

export const EXIT = { ok: 0, fatal: 1, config: 2, incomplete: 3 } as const;

export interface GlobalOpts {
  config: string;
  json?: boolean;
  logFormat: 'text' | 'json';
  logLevel: LogLevel;
  progress: boolean;
  /** `--store`: a path (SQLite) or a postgres:// URL, overriding the config's store.url / store.path. */
  store?: string;
  /** `--account`: the account a command opens (default `default`: the config file's own). */
  account?: string;
}

/** Output that never carries a secret. */
export function out(text: string): void {
  process.stdout.write(redact(text) + (text.endsWith('\n') ? '' : '\n'));
}

export class ExitError extends Error {
  /** `summaryPrinted`: the command already wrote its result (a run summary) to stdout. */
  constructor(
    readonly code: number,
    message: string,
    readonly summaryPrinted = false,
  ) {
    super(message);
  }
}

/** What cli.ts hands to the command modules it registers (progress bars and signal handling live there). */
export interface CommandHelpers {
  out: typeof out;
  ExitError: typeof ExitError;
  progressBar: (enabled: boolean) => { onProgress?: (e: ProgressEvent) => void; stop: () => void };
  interruptible?: (
    stderr?: NodeJS.WritableStream,
    graceful?: boolean,
  ) => { signal: AbortSignal; received: () => NodeJS.Signals | null; dispose: () => void };
}
