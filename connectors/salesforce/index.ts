/**
 * Salesforce target: sets the email opt-out checkbox (default `HasOptedOutOfEmail`) on every Contact,
 * unconverted Lead and (opt-in) Person Account whose email opted out of Constant Contact.
 *
 * Built on jsforce 3.10.16 (see README.md for config, API-NOTES for the jsforce traps handled in client.ts).
 */
import * as E from 'fp-ts/Either';
import * as TE from 'fp-ts/TaskEither';
import { Capabilities, CheckReport, Connector, DeliveryMode, DeliveryReport, Target, TargetError } from '../../src/plugin';
import { OptOut } from '../../src/domain';
import { SalesforceConfig, resolveConfig } from './config';
import { SalesforceClient, ClientOptions, safeMessage } from './client';
import { Delivery } from './deliver';
import { runCheck } from './check';

export { SalesforceConfig } from './config';

function unexpected(e: unknown): TargetError {
  return { kind: 'fatal', halt: true, message: `Salesforce connector error: ${safeMessage(e instanceof Error ? e.message : String(e))}` };
}

/** `open` with client options (tests shorten retry policies through this). */
export function openSalesforce(config: SalesforceConfig, caps: Capabilities, opts: ClientOptions = {}): Target {
  const cfg = resolveConfig(config);
  const client = new SalesforceClient(cfg, caps, opts);
  const delivery = new Delivery(client, cfg, caps);
  // One operation at a time per target: the client's error classification reads the last response.
  let queue: Promise<unknown> = Promise.resolve();
  const serial = <A>(task: () => Promise<A>): Promise<A> => {
    const next = queue.then(task, task);
    queue = next.catch(() => undefined);
    return next;
  };
  return {
    check: (): TE.TaskEither<TargetError, CheckReport> => () =>
      serial(() => runCheck(client, cfg, caps)).then(
        (r) => E.right(r),
        (e) => E.left(unexpected(e)),
      ),
    deliver: (batch: readonly OptOut[], mode: DeliveryMode): TE.TaskEither<TargetError, DeliveryReport> => () =>
      serial(() => delivery.run(batch, mode)).catch((e) => E.left(unexpected(e))),
    close: async () => {
      client.flushUsage();
    },
  };
}

export const connector: Connector<SalesforceConfig> = {
  id: 'salesforce',
  config: SalesforceConfig,
  // deliver() chunks lookups (~100 emails) and writes (200, or Bulk 2.0 above bulkThreshold) itself
  maxBatch: 5000,
  open: (config, caps) => openSalesforce(config, caps),
};

export default connector;
