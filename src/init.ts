/**
 * The example config `cc-optout init` writes. JSON has no comments, so keys starting with "//" are
 * comments: the config decoder ignores them at any level.
 */
export function exampleConfig(): Record<string, unknown> {
  return {
    '//': 'cc-optout config. Secrets are ${ENV_VAR} references resolved from the environment; never paste them here.',
    store: { '//': 'SQLite state: opt-outs, outbox, checkpoints, tokens (0600). Relative to this file.', path: './.cc-optout/state.db' },
    source: {
      '//': 'Constant Contact V3. Run `cc-optout auth constant-contact` once to obtain and store the first tokens.',
      type: 'constant-contact',
      clientId: '${CC_CLIENT_ID}',
      clientSecret: '${CC_CLIENT_SECRET}',
      apiBaseUrl: 'https://api.cc.email/v3',
      authBaseUrl: 'https://authz.constantcontact.com/oauth2/default/v1',
      rateLimit: { '//': 'Per APPLICATION, shared by every account it serves: 4/s, 10,000/day.', perSecond: 4, dailyBudget: 10000 },
      detection: {
        '//': 'window: optout_after window each run + full reconcile every reconcileEveryHours; full: reconcile every run.',
        mode: 'window',
        overlapMinutes: 10,
        lagMinutes: 2,
        reconcileEveryHours: 24,
        pageSize: 500,
      },
    },
    delivery: { '//': 'batchSize: emails per CRM delivery call (connectors chunk it to their API limits)', batchSize: 1000, maxAttempts: 12, backoffBaseSeconds: 60, backoffMaxSeconds: 21600, recheckNotFoundHours: 24 },
    targets: [
      {
        '//': 'HubSpot: opt-outs land in the subscription status (Communication Preferences API, API version 2026-09). Auth: a Service Key (Development > Keys > Service keys); private-app tokens and OAuth work too. See connectors/hubspot/README.md.',
        name: 'hubspot',
        connector: 'hubspot',
        config: {
          auth: { type: 'service-key', serviceKey: '${HUBSPOT_SERVICE_KEY}' },
          suppression: { type: 'unsubscribe-all', batch: 'auto' },
          onlyExistingContacts: true,
        },
      },
      {
        '//': 'Salesforce: HasOptedOutOfEmail on Contacts and unconverted Leads. See connectors/salesforce/README.md.',
        name: 'salesforce',
        connector: 'salesforce',
        config: {
          loginUrl: 'https://login.salesforce.com',
          auth: { type: 'jwt', clientId: '${SF_CLIENT_ID}', username: '${SF_USERNAME}', privateKeyPath: '${SF_PRIVATE_KEY_PATH}' },
          objects: { Contact: { enabled: true }, Lead: { enabled: true } },
        },
      },
    ],
  };
}
