/**
 * The example config `cc-optout init` writes: the core's sections, and one target per connector from its
 * `example()`. JSON has no comments, so keys starting with "//" are comments: the config decoder ignores them
 * at any level (an example's top-level "//" becomes the target entry's comment).
 */
import type { Registry } from './registry';

export function exampleConfig(registry: Registry): Record<string, unknown> {
  return {
    '//': 'cc-optout config. Secrets are ${ENV_VAR} references resolved from the environment; never paste them here.',
    store: {
      '//': 'SQLite state: opt-outs, outbox, checkpoints, tokens (0600). Relative to this file.',
      path: './.cc-optout/state.db',
    },
    source: {
      '//': 'Constant Contact V3. Run `cc-optout auth constant-contact` once to obtain and store the first tokens.',
      type: 'constant-contact',
      clientId: '${CC_CLIENT_ID}',
      clientSecret: '${CC_CLIENT_SECRET}',
      apiBaseUrl: 'https://api.cc.email/v3',
      authBaseUrl: 'https://authz.constantcontact.com/oauth2/default/v1',
      rateLimit: {
        '//': 'Per APPLICATION, shared by every account it serves: 4/s, 10,000/day.',
        perSecond: 4,
        dailyBudget: 10000,
      },
      detection: {
        '//': 'window: optout_after window each run + full reconcile every reconcileEveryHours; full: reconcile every run.',
        mode: 'window',
        overlapMinutes: 10,
        lagMinutes: 2,
        reconcileEveryHours: 24,
        pageSize: 500,
      },
    },
    delivery: {
      '//': 'batchSize: emails per CRM delivery call (connectors chunk it to their API limits)',
      batchSize: 1000,
      maxAttempts: 12,
      backoffBaseSeconds: 60,
      backoffMaxSeconds: 21600,
      recheckNotFoundHours: 24,
    },
    // each connector gives its own example target config (`example()`): the core names no CRM
    targets: registry
      .ids()
      .map((id) => ({ id, connector: registry.get(id) }))
      .filter((x) => typeof x.connector?.example === 'function')
      .map(({ id, connector }) => {
        const { ['//']: comment, ...config } = connector!.example!() as Record<string, unknown>;
        return { ...(comment !== undefined ? { '//': comment } : {}), name: id, connector: id, config };
      }),
  };
}
