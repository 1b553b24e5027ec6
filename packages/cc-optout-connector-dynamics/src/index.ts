/**
 * cc-optout-connector-dynamics: the Microsoft Dynamics 365 / Dataverse target of cc-optout, built only
 * against the connector SDK (`cc-optout-connector/sdk`).
 *
 * Suppression: `donotbulkemail = true` (and `donotemail` with `alsoSetDoNotEmail`) on every contact and
 * every Open lead (statecode 0) holding the opted-out address in a configured email column. Lookups by OData
 * `$filter` (`eq` / `or`, several addresses per query), writes by `$batch` change sets, auth by Microsoft
 * Entra ID client credentials (@azure/msal-node). See README.md for the config and the Dataverse facts used.
 */
import * as fs from 'fs';
import * as path from 'path';
import {
  Capabilities,
  CheckReport,
  Connector,
  DeliveryMode,
  DeliveryReport,
  OptOut,
  Target,
  TargetHalt,
  defineConnector,
} from 'cc-optout-connector/sdk';
import { AuthFailure, msalTokenSource, TokenSource } from './auth';
import { DataverseClient, DataverseHalt } from './client';
import { DynamicsConfig, Resolved, resolveConfig } from './config';
import { Delivery } from './deliver';
import { runCheck } from './check';
import { schema } from './schema';
import { dataverseEmulatorFactory } from './emulator';

export { DynamicsConfig, resolveConfig } from './config';
export { schema } from './schema';

function version(): string {
  for (const p of [path.join(__dirname, '..', 'package.json'), path.join(__dirname, '..', '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'cc-optout-connector-dynamics' && pkg.version) return pkg.version;
    } catch {
      // not here
    }
  }
  return '0.0.0';
}

export interface OpenOptions {
  /** Replace the MSAL token source (tests). */
  tokens?: TokenSource;
  /** Backoff base for 5xx retries (tests shorten it). */
  backoffBaseMs?: number;
}

export function openDynamics(config: DynamicsConfig, caps: Capabilities, opts: OpenOptions = {}): Target {
  const cfg: Resolved = resolveConfig(config);
  caps.secrets.register(cfg.auth.clientSecret);
  const redact = (s: string): string => caps.secrets.redact(s);
  let tokens = opts.tokens;
  if (!tokens) {
    let ca: string | null = null;
    let caProblem: string | null = null;
    if (cfg.auth.caPath) {
      try {
        ca = caps.readFile(cfg.auth.caPath);
      } catch (e) {
        caProblem = `auth.caPath: cannot read ${cfg.auth.caPath}: ${(e as Error).message}`;
      }
    }
    tokens =
      caProblem !== null
        ? { get: () => Promise.reject(new AuthFailure('config', caProblem!)) }
        : msalTokenSource(
            {
              tenantId: cfg.auth.tenantId,
              clientId: cfg.auth.clientId,
              clientSecret: cfg.auth.clientSecret,
              authorityHost: cfg.auth.authorityHost,
              ca,
              resource: cfg.url,
              timeoutMs: cfg.timeoutMs,
            },
            (v) => caps.secrets.register(v),
            redact,
          );
  }
  const pacer = caps.http.limiter({ perWindow: cfg.rateLimit.perWindow, windowMs: cfg.rateLimit.windowSeconds * 1000 });
  const client = new DataverseClient(
    {
      url: cfg.url,
      apiVersion: cfg.apiVersion,
      timeoutMs: cfg.timeoutMs,
      maxRetryAfterSeconds: cfg.rateLimit.maxRetryAfterSeconds,
      maxRetries: cfg.rateLimit.maxRetries,
      backoffBaseMs: opts.backoffBaseMs ?? 1000,
    },
    {
      tokens,
      pacer,
      sleep: (ms) => caps.clock.sleep(ms),
      now: () => caps.clock.now(),
      record: (n) => caps.calls.record('dynamics', n),
      redact,
      warn: (msg, fields) => caps.logger.warn(msg, { target: caps.targetName, ...(fields ?? {}) }),
    },
  );
  const delivery = new Delivery(client, cfg, caps);
  // one operation at a time per target
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <A>(task: () => Promise<A>): Promise<A> => {
    const next = queue.then(task, task);
    queue = next.catch(() => undefined);
    return next;
  };
  const asHalt = (e: unknown): never => {
    if (e instanceof DataverseHalt) throw new TargetHalt(e.kind, e.message, { retryAt: e.retryAt });
    throw e;
  };
  return {
    check: (): Promise<CheckReport> => serial(() => runCheck(client, tokens!, cfg)).catch(asHalt),
    deliver: (batch: readonly OptOut[], mode: DeliveryMode): Promise<DeliveryReport> =>
      serial(() => delivery.run(batch, mode)).catch(asHalt),
  };
}

export const connector: Connector<DynamicsConfig> = defineConnector<DynamicsConfig>({
  id: 'dynamics',
  version: version(),
  description:
    'Microsoft Dynamics 365 / Dataverse (Web API v9.2, @azure/msal-node client credentials): sets donotbulkemail (and optionally donotemail) on every contact and Open lead with the address in emailaddress1..3; OData $filter lookups, $batch change-set writes, 429 Retry-After honoured.',
  config: DynamicsConfig,
  schema,
  capabilities: { dryRun: true, backfill: true, suppressionModes: ['donotbulkemail', 'donotbulkemail+donotemail'] },
  // lookups are chunked (addressesPerQuery) and writes packed (requestsPerBatch) inside one deliver()
  maxBatch: 1000,
  example: () => ({
    url: 'https://contoso.crm.dynamics.com',
    auth: {
      type: 'client-credentials',
      tenantId: '${DYNAMICS_TENANT_ID}',
      clientId: '${DYNAMICS_CLIENT_ID}',
      clientSecret: '${DYNAMICS_CLIENT_SECRET}',
    },
    entities: { contact: true, lead: true },
    emailFields: ['emailaddress1', 'emailaddress2', 'emailaddress3'],
    alsoSetDoNotEmail: false,
  }),
  emulator: () => dataverseEmulatorFactory(),
  open: (config, caps) => openDynamics(config, caps),
});

export default connector;
