/**
 * The JSON Schema of the config (`cc-optout spec dynamics`): the twin of the io-ts codec in config.ts; the
 * agreement test (test/unit/config.test.ts) runs both over the same accepted and refused examples.
 */
import { SECURE_URL_PATTERN } from 'cc-optout-connector/sdk';

/** SECURE_URL_PATTERN limited to an origin (an optional trailing slash, no path, query or fragment). */
export const ORIGIN_PATTERN = SECURE_URL_PATTERN.replace(/\(\[\/\?#\]\\S\*\)\?\$$/, '/?$');

const nonEmpty = { type: 'string', minLength: 1 };
const int = (minimum: number, maximum: number, description: string): Record<string, unknown> => ({
  type: 'integer',
  minimum,
  maximum,
  description,
});

export const schema: Record<string, unknown> = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'Microsoft Dynamics 365 / Dataverse target config',
  type: 'object',
  additionalProperties: false,
  patternProperties: { '^//': {} },
  required: ['url', 'auth'],
  properties: {
    url: {
      description:
        'The environment URL (an origin, no path), e.g. https://contoso.crm.dynamics.com. http:// only for loopback hosts (the emulator).',
      type: 'string',
      pattern: ORIGIN_PATTERN,
    },
    apiVersion: { description: 'Web API version (default 9.2).', type: 'string', pattern: '^9\\.[0-2]$' },
    auth: {
      type: 'object',
      additionalProperties: false,
      patternProperties: { '^//': {} },
      required: ['type', 'tenantId', 'clientId', 'clientSecret'],
      properties: {
        type: { const: 'client-credentials' },
        tenantId: { ...nonEmpty, description: 'Microsoft Entra tenant id (GUID) or domain.' },
        clientId: {
          ...nonEmpty,
          description: 'Application (client) id of the app registration (an application user in the environment).',
        },
        clientSecret: { ...nonEmpty, description: 'Client secret, as a ${ENV} reference.' },
        authorityHost: {
          description: 'Entra authority host (default https://login.microsoftonline.com). https only.',
          type: 'string',
          pattern: '^[Hh][Tt][Tt][Pp][Ss]://[^\\s/?#@]+([/?#]\\S*)?$',
        },
        caPath: {
          ...nonEmpty,
          description: 'PEM file of a CA to trust for the authority host (relative to the config file).',
        },
      },
    },
    entities: {
      description: 'Which tables to suppress; at least one.',
      type: 'object',
      not: { required: ['contact', 'lead'], properties: { contact: { const: false }, lead: { const: false } } },
      additionalProperties: false,
      patternProperties: { '^//': {} },
      properties: {
        contact: { type: 'boolean', description: 'Suppress contacts (default true).' },
        lead: { type: 'boolean', description: 'Suppress Open leads (default true).' },
      },
    },
    emailFields: {
      description: 'Email columns matched (default ["emailaddress1"]).',
      type: 'array',
      minItems: 1,
      uniqueItems: true,
      items: { enum: ['emailaddress1', 'emailaddress2', 'emailaddress3'] },
    },
    alsoSetDoNotEmail: {
      type: 'boolean',
      description: 'Also set donotemail (Do not allow Emails) to true (default false: donotbulkemail only).',
    },
    maxUrlLength: int(1000, 32768, 'Longest lookup URL in characters (default 16000; Dataverse accepts 32768).'),
    addressesPerQuery: int(1, 500, 'Addresses per lookup query (default 50).'),
    requestsPerBatch: int(1, 1000, 'PATCH requests per $batch (default 200; Dataverse allows 1000).'),
    rateLimit: {
      type: 'object',
      additionalProperties: false,
      patternProperties: { '^//': {} },
      properties: {
        perWindow: int(1, 1000000, 'Requests per window, paced on our side (default 6000).'),
        windowSeconds: int(1, 3600, 'Window length (default 300).'),
        maxRetryAfterSeconds: int(
          0,
          3600,
          'Longest Retry-After waited in-run (default 60); a longer one stops the target until then.',
        ),
        maxRetries: int(0, 10, 'Retries of one request after 429 / 5xx / network errors (default 4).'),
      },
    },
    timeoutSeconds: int(1, 600, 'Per-request timeout (default 60).'),
  },
};
