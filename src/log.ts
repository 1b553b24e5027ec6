/**
 * Logging with secret redaction. Every secret the process learns (config secrets resolved from the
 * environment, access and refresh tokens obtained at run time) is registered here, and every log line,
 * error message and audit field passes through `redact` before it leaves the process.
 */

// One set per process, whatever copy of this module loaded it (a connector bundling its own copy of the package
// must still have its secrets masked in the core's logs): kept on globalThis under a registry symbol.
const SECRETS_KEY = Symbol.for('cc-optout.secrets');
const secrets: Set<string> =
  ((globalThis as Record<symbol, unknown>)[SECRETS_KEY] as Set<string> | undefined) ??
  (((globalThis as Record<symbol, unknown>)[SECRETS_KEY] = new Set<string>()) as Set<string>);

/** Register a secret value so that it is masked wherever it would be printed. Short values are ignored. */
export function registerSecret(value: string | undefined | null): void {
  if (typeof value === 'string' && value.length >= 6) secrets.add(value);
}

/** Test helper: forget registered secrets. */
export function clearSecrets(): void {
  secrets.clear();
}

const TOKENISH = /\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}/g;
const KEYED =
  /(\\?"?(?:access_token|refresh_token|client_secret|private_key|password|authorization|code_verifier|device_code|assertion)\\?"?\s*[:=]\s*\\?"?)([^"\\&\s,}]{4,})/gi;

export function redact(text: string): string {
  let out = text;
  for (const s of secrets) {
    if (out.includes(s)) out = out.split(s).join('[redacted]');
  }
  out = out.replace(TOKENISH, '$1 [redacted]');
  out = out.replace(KEYED, '$1[redacted]');
  return out;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export interface LoggerOptions {
  format: 'text' | 'json';
  level: LogLevel;
  /** Where lines go; defaults to stderr so that `--json` summaries on stdout stay parseable. */
  write?: (line: string) => void;
  clock?: () => Date;
}

function safeStringify(v: unknown): string {
  if (v instanceof Error) return v.message;
  if (typeof v === 'string') return v;
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}

export function createLogger(opts: LoggerOptions, base: Record<string, unknown> = {}): Logger {
  const write = opts.write ?? ((line: string) => process.stderr.write(line + '\n'));
  const clock = opts.clock ?? (() => new Date());
  const emit = (level: LogLevel, msg: string, fields?: Record<string, unknown>): void => {
    if (LEVELS[level] < LEVELS[opts.level]) return;
    const all: Record<string, unknown> = { ...base, ...(fields ?? {}) };
    for (const [k, v] of Object.entries(all)) if (v instanceof Error) all[k] = v.message;
    if (opts.format === 'json') {
      write(redact(JSON.stringify({ time: clock().toISOString(), level, msg, ...all })));
    } else {
      const extra = Object.entries(all)
        .map(([k, v]) => `${k}=${safeStringify(v)}`)
        .join(' ');
      write(redact(`${level.toUpperCase().padEnd(5)} ${msg}${extra ? ' ' + extra : ''}`));
    }
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(opts, { ...base, ...fields }),
  };
}

/** A logger that keeps lines in memory (tests, and the demo's quiet mode). */
export function memoryLogger(level: LogLevel = 'debug'): Logger & { lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ format: 'json', level, write: (l) => lines.push(l) });
  return Object.assign(logger, { lines });
}
