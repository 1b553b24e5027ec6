/**
 * `check()`: token valid, scopes granted (missing ones named), contact lookup allowed, subscription ids
 * exist for the business unit, audit properties exist with compatible types, what is known about batch
 * suppression. Every problem becomes a failing item; only a bug rejects.
 */
import { CheckItem, CheckReport, MappedValue, isTargetHalt, redact } from '../../src/sdk';
import { ADDITIONAL_EMAILS, HubSpotApi, HubSpotHttpError, missingScopesOf } from './api';
import { ResolvedHubSpotConfig } from './config';

/** What the check needs of the target (HubSpotTarget has it): no import of target.ts, so no import circle. */
export interface CheckSubject {
  readonly cfg: ResolvedHubSpotConfig;
  readonly api: HubSpotApi;
  batchState(): {
    mode: 'auto' | 'always' | 'never';
    known: { decision: 'refused' | 'available'; at: string; detail?: string } | null;
  };
}

interface ScopeNeed {
  /** Any one of these satisfies the need. */
  readonly anyOf: readonly string[];
  readonly why: string;
  /** Informative only: its absence is reported but does not fail the check. */
  readonly optional?: boolean;
}

export const SCOPES = {
  contactsRead: 'crm.objects.contacts.read',
  contactsWrite: 'crm.objects.contacts.write',
  prefsWrite: 'communication_preferences.write',
  prefsRead: 'communication_preferences.read',
  prefsReadWrite: 'communication_preferences.read_write',
  batchWrite: 'communication_preferences.statuses.batch.write',
} as const;

export function requiredScopes(cfg: ResolvedHubSpotConfig): ScopeNeed[] {
  const needs: ScopeNeed[] = [
    { anyOf: [SCOPES.contactsRead], why: 'look up contacts by email' },
    { anyOf: [SCOPES.prefsWrite, SCOPES.prefsReadWrite], why: 'write subscription statuses' },
  ];
  if (cfg.suppression.type === 'subscriptions') {
    needs.push({ anyOf: [SCOPES.prefsRead, SCOPES.prefsReadWrite], why: 'read subscription definitions (check)' });
  }
  if (Object.keys(cfg.properties).length > 0) {
    needs.push({ anyOf: [SCOPES.contactsWrite], why: 'write audit properties' });
  }
  if (cfg.suppression.batch !== 'never') {
    needs.push({ anyOf: [SCOPES.batchWrite], why: 'batch suppression', optional: cfg.suppression.batch === 'auto' });
  }
  return needs;
}

const describeNeed = (n: ScopeNeed): string =>
  n.anyOf.length === 1 ? n.anyOf[0]! : `${n.anyOf[0]} (or ${n.anyOf.slice(1).join(' / ')})`;

function errMessage(e: unknown): string {
  if (isTargetHalt(e)) return e.message;
  return redact((e as Error)?.message ?? String(e));
}

/** Property types a mapped value can be written to. */
function compatibleTypes(v: MappedValue): { types: string[]; hint: string } {
  if (typeof v === 'object') {
    const c = v.constant;
    if (typeof c === 'number') return { types: ['number', 'string'], hint: 'a number or string property' };
    if (typeof c === 'boolean')
      return { types: ['bool', 'enumeration', 'string'], hint: 'a bool (single checkbox) or string property' };
    return { types: ['string', 'enumeration'], hint: 'a string or enumeration property' };
  }
  if (v === 'optOutDate')
    return {
      types: ['datetime', 'string'],
      hint: 'a datetime or string property (date properties need midnight values)',
    };
  return { types: ['string'], hint: 'a string (single-line text) property' };
}

/** The check's shared state: the config, the API, the items so far, the scopes 403s named as missing. */
interface CheckRun {
  readonly cfg: ResolvedHubSpotConfig;
  readonly api: HubSpotApi;
  readonly tokenName: string;
  add(name: string, ok: boolean, detail: string): void;
  /** A 403's missing scopes (remembered for the scopes item), or null when `e` is not a 403 naming them. */
  note403(e: unknown): string | null;
  readonly missingFrom403: Set<string>;
}

interface TokenInfo {
  haveToken: boolean;
  scopes: string[] | null;
  portal: string | null;
  tokenInfoNote: string;
}

/** The check: each step adds named items; every problem is a failing item, only a bug rejects. */
export async function runCheck(target: CheckSubject): Promise<CheckReport> {
  const items: CheckItem[] = [];
  const run = startRun(target, items);
  const token = await checkTokenInfo(run);
  const tokenOk = token.haveToken && (await checkContactRead(run, token));
  if (tokenOk && run.cfg.matchAdditionalEmails) await checkSearch(run);
  if (tokenOk && run.cfg.suppression.type === 'subscriptions') await checkSubscriptions(run);
  if (tokenOk) await checkProperties(run);
  checkScopes(run, token.scopes, tokenOk);
  checkBatch(run, target.batchState(), token.scopes);
  return { ok: items.every((i) => i.ok), items };
}

function startRun(target: CheckSubject, items: CheckItem[]): CheckRun {
  const cfg = target.cfg;
  const authType = cfg.auth.type;
  const missingFrom403 = new Set<string>();
  return {
    cfg,
    api: target.api,
    tokenName:
      authType === 'service-key'
        ? 'Service Key'
        : authType === 'private-app'
          ? 'private app token'
          : 'OAuth access token',
    add: (name, ok, detail) => {
      items.push({ name, ok, detail: redact(detail) });
    },
    note403: (e) => {
      if (!(e instanceof HubSpotHttpError) || e.status !== 403) return null;
      const m = missingScopesOf(e);
      if (m) for (const x of m.split(', ')) missingFrom403.add(x);
      return m;
    },
    missingFrom403,
  };
}

/**
 * 1. Token: get one (OAuth: refresh through the token endpoint of the version in use), then its info where
 *    HubSpot offers one. Token info is informative only: the real read (checkContactRead) decides validity.
 */
async function checkTokenInfo(run: CheckRun): Promise<TokenInfo> {
  const info: TokenInfo = { haveToken: false, scopes: null, portal: null, tokenInfoNote: '' };
  try {
    const token = await run.api.accessToken();
    info.haveToken = true;
    // Service Keys: HubSpot documents no token-info endpoint for them; the read in checkContactRead is the test.
    if (run.cfg.auth.type === 'private-app') Object.assign(info, await privateAppTokenInfo(run, token));
    else if (run.cfg.auth.type === 'oauth') Object.assign(info, await oauthTokenInfo(run, token));
  } catch (e) {
    run.add('token', false, errMessage(e));
  }
  return info;
}

/** Scopes and portal of a private app token (never decisive: documented for legacy private-app tokens only). */
async function privateAppTokenInfo(run: CheckRun, token: string): Promise<Partial<TokenInfo>> {
  const paths = run.api.paths;
  try {
    const res = await run.api.call(`POST ${paths.privateAppTokenInfo}`, {
      method: 'POST',
      path: paths.privateAppTokenInfo,
      body: { tokenKey: token },
    });
    const b = (res.body ?? {}) as { scopes?: unknown; hubId?: unknown; appId?: unknown };
    return {
      scopes: Array.isArray(b.scopes) ? b.scopes.filter((x): x is string => typeof x === 'string') : null,
      ...(b.hubId !== undefined
        ? { portal: `portal ${String(b.hubId)}${b.appId !== undefined ? `, app ${String(b.appId)}` : ''}` }
        : {}),
    };
  } catch (e) {
    return { tokenInfoNote: `; token info unavailable (${errMessage(e)})` };
  }
}

/** Scopes and portal of an OAuth access token (legacy GET, or the 2026 introspection POST). */
async function oauthTokenInfo(run: CheckRun, token: string): Promise<Partial<TokenInfo>> {
  const { cfg, api } = run;
  if (cfg.auth.type !== 'oauth') return {};
  const paths = api.paths;
  const path = paths.oauthTokenInfo(token);
  try {
    const res =
      paths.version === 'legacy'
        ? await api.call('GET /oauth/v1/access-tokens/{token}', { method: 'GET', path, auth: false })
        : await api.call(`POST ${path}`, {
            method: 'POST',
            path,
            auth: false,
            form: {
              client_id: cfg.auth.clientId,
              client_secret: cfg.auth.clientSecret,
              token,
              token_type_hint: 'access_token',
            },
          });
    const b = (res.body ?? {}) as {
      scopes?: unknown;
      scope?: unknown;
      hub_id?: unknown;
      hubId?: unknown;
      active?: unknown;
    };
    const hub = b.hub_id ?? b.hubId;
    return {
      scopes: Array.isArray(b.scopes)
        ? b.scopes.filter((x): x is string => typeof x === 'string')
        : typeof b.scope === 'string'
          ? b.scope.split(/\s+/).filter(Boolean)
          : null,
      ...(hub !== undefined ? { portal: `portal ${String(hub)}` } : {}),
      ...(b.active === false ? { tokenInfoNote: '; token introspection says the token is not active' } : {}),
    };
  } catch (e) {
    return { tokenInfoNote: `; token info unavailable (${errMessage(e)})` };
  }
}

/** 2. The real read deliver makes (batch read by email, an address that cannot exist): proves the token. */
async function checkContactRead(run: CheckRun, info: TokenInfo): Promise<boolean> {
  const { api, add, tokenName, note403 } = run;
  const paths = api.paths;
  const { portal, tokenInfoNote } = info;
  let tokenOk = false;
  const path = paths.batchRead;
  try {
    await api.call(`POST ${path}`, {
      method: 'POST',
      path,
      qs: { archived: 'false' },
      body: {
        inputs: [{ id: 'cc-optout-check@example.invalid' }],
        idProperty: 'email',
        properties: ['email', 'hs_email_optout'],
        propertiesWithHistory: [],
      },
    });
    tokenOk = true;
    add(
      'token',
      true,
      `${tokenName} is valid (a contact read succeeded; API version ${paths.version})${portal ? ` (${portal})` : ''}${tokenInfoNote}`,
    );
    add('contact-lookup', true, 'batch read of contacts by email works');
  } catch (e) {
    const missing = note403(e);
    if (e instanceof HubSpotHttpError && e.status === 403) {
      tokenOk = true; // authenticated, but not allowed
      add(
        'token',
        true,
        `${tokenName} is valid (HubSpot answered 403, not 401)${portal ? ` (${portal})` : ''}${tokenInfoNote}`,
      );
      add(
        'contact-lookup',
        false,
        `HubSpot refused the contact lookup (403): grant scope ${missing ?? SCOPES.contactsRead}`,
      );
    } else if (isTargetHalt(e) && e.kind === 'auth') {
      add('token', false, errMessage(e));
    } else {
      add('token', false, `could not verify the ${tokenName}: ${errMessage(e)}`);
    }
  }
  return tokenOk;
}

/** 3. Secondary addresses: one search (limit 1) on hs_additional_emails, as deliver makes it. */
async function checkSearch(run: CheckRun): Promise<void> {
  const { api, add, note403 } = run;
  const paths = api.paths;
  const path = paths.search;
  try {
    await api.call(`POST ${path}`, {
      method: 'POST',
      path,
      search: true,
      body: {
        filterGroups: [
          {
            filters: [{ propertyName: ADDITIONAL_EMAILS, operator: 'IN', values: ['cc-optout-check@example.invalid'] }],
          },
        ],
        properties: ['email', ADDITIONAL_EMAILS],
        sorts: [],
        limit: 1,
        after: '0',
      },
    });
    add('contact-search', true, `search on ${ADDITIONAL_EMAILS} works (secondary addresses are matched)`);
  } catch (e) {
    const missing = note403(e);
    add(
      'contact-search',
      false,
      missing || (e instanceof HubSpotHttpError && e.status === 403)
        ? `HubSpot refused the contact search (403): grant scope ${missing ?? SCOPES.contactsRead}`
        : `contact search on ${ADDITIONAL_EMAILS} failed: ${errMessage(e)} (set matchAdditionalEmails to false to match primary addresses only)`,
    );
  }
}

/** 4. Subscription ids (subscriptions mode). */
async function checkSubscriptions(run: CheckRun): Promise<void> {
  const { cfg, api, add, note403 } = run;
  const paths = api.paths;
  if (cfg.suppression.type !== 'subscriptions') return;
  try {
    const res = await api.call(`GET ${paths.definitions}`, {
      method: 'GET',
      path: paths.definitions,
      qs: { businessUnitId: String(cfg.businessUnitId) },
    });
    const defs = (((res.body ?? {}) as { results?: unknown }).results ?? []) as Array<{
      id?: unknown;
      name?: unknown;
      isActive?: unknown;
    }>;
    const byId = new Map(defs.filter((d) => d && d.id !== undefined).map((d) => [String(d.id), d]));
    const problems: string[] = [];
    const found: string[] = [];
    for (const id of cfg.suppression.subscriptionIds) {
      const d = byId.get(id);
      if (!d) problems.push(`${id} not found`);
      else if (d.isActive === false) problems.push(`${id} (${String(d.name)}) is inactive`);
      else found.push(`${id} (${String(d.name)})`);
    }
    if (problems.length > 0) {
      const available = [...byId.values()]
        .slice(0, 20)
        .map((d) => `${String(d.id)} ${String(d.name)}`)
        .join(', ');
      add(
        'subscriptions',
        false,
        `businessUnitId ${cfg.businessUnitId}: ${problems.join('; ')}. Available: ${available || 'none'}`,
      );
    } else {
      add('subscriptions', true, `businessUnitId ${cfg.businessUnitId}: ${found.join(', ')}`);
    }
  } catch (e) {
    const missing = note403(e);
    add(
      'subscriptions',
      false,
      `could not read subscription definitions: ${missing ? `grant scope ${missing}` : errMessage(e)}`,
    );
  }
}

/** 5. Audit properties: exist, writable, of a type the mapped value fits. */
async function checkProperties(run: CheckRun): Promise<void> {
  const { cfg, api, add, note403 } = run;
  const paths = api.paths;
  for (const [name, value] of Object.entries(cfg.properties)) {
    const path = paths.property(name);
    try {
      const res = await api.call(`GET ${path}`, { method: 'GET', path });
      const p = (res.body ?? {}) as {
        type?: unknown;
        fieldType?: unknown;
        calculated?: unknown;
        modificationMetadata?: { readOnlyValue?: unknown };
      };
      const { types, hint } = compatibleTypes(value);
      const type = String(p.type);
      if (p.modificationMetadata?.readOnlyValue === true || p.calculated === true) {
        add(`property:${name}`, false, `contact property ${name} is read-only in HubSpot; choose a custom property`);
      } else if (!types.includes(type)) {
        add(
          `property:${name}`,
          false,
          `contact property ${name} has type ${type}${p.fieldType ? `/${String(p.fieldType)}` : ''}; ${JSON.stringify(value)} needs ${hint}`,
        );
      } else {
        add(`property:${name}`, true, `contact property ${name} exists (type ${type})`);
      }
    } catch (e) {
      if (e instanceof HubSpotHttpError && e.status === 404) {
        add(
          `property:${name}`,
          false,
          `contact property ${name} does not exist in HubSpot; create it (Settings > Properties) or remove it from "properties"`,
        );
      } else {
        const missing = note403(e);
        add(
          `property:${name}`,
          false,
          `could not read contact property ${name}: ${missing ? `grant scope ${missing}` : errMessage(e)}`,
        );
      }
    }
  }
}

/** 6. Scopes: from token info when HubSpot gave it, else from the 403s above (write scopes need a write to verify). */
function checkScopes(run: CheckRun, scopes: string[] | null, tokenOk: boolean): void {
  const { cfg, add, tokenName, missingFrom403 } = run;
  const needs = requiredScopes(cfg);
  if (scopes === null) {
    if (missingFrom403.size > 0) {
      add(
        'scopes',
        false,
        `missing scopes (HubSpot 403 context.missingScopes): ${[...missingFrom403].join(', ')}; needed in all: ${needs.map(describeNeed).join(', ')}`,
      );
    } else if (tokenOk) {
      add(
        'scopes',
        true,
        `reads allowed; write scopes not verifiable without a write (no token info for this ${tokenName}); needed: ${needs.map(describeNeed).join(', ')}`,
      );
    }
  } else {
    const granted = new Set(scopes);
    const missing = needs.filter((n) => !n.optional && !n.anyOf.some((x) => granted.has(x)));
    const missingOptional = needs.filter((n) => n.optional && !n.anyOf.some((x) => granted.has(x)));
    const extra =
      missingOptional.length > 0
        ? `; optional scope not granted: ${missingOptional.map(describeNeed).join(', ')} (batch suppression unavailable, per-email writes will be used)`
        : '';
    if (missing.length > 0) {
      add(
        'scopes',
        false,
        `missing scopes: ${missing.map((n) => `${describeNeed(n)} (to ${n.why})`).join(', ')}${extra}`,
      );
    } else {
      add('scopes', true, `all required scopes granted${extra}`);
    }
  }
}

/** 7. Batch suppression: what is known. */
function checkBatch(run: CheckRun, state: ReturnType<CheckSubject['batchState']>, scopes: string[] | null): void {
  const { add } = run;
  const { mode, known } = state;
  const batchScopeMissing = scopes !== null && !scopes.includes(SCOPES.batchWrite);
  if (mode === 'never') {
    add('batch-suppression', true, 'disabled by config (suppression.batch = "never"): one request per email');
  } else if (known?.decision === 'refused') {
    add(
      'batch-suppression',
      mode === 'auto',
      mode === 'auto'
        ? `refused by HubSpot (403 at ${known.at}${known.detail ? `: ${known.detail}` : ''}); per-email fallback in use, re-tested after 24 h`
        : `refused by HubSpot (403 at ${known.at}); suppression.batch is "always": set it to "auto" or "never"`,
    );
  } else if (known?.decision === 'available') {
    add('batch-suppression', true, `available (a batch write succeeded at ${known.at})`);
  } else if (batchScopeMissing) {
    add(
      'batch-suppression',
      mode === 'auto',
      `scope ${SCOPES.batchWrite} not granted: ${mode === 'auto' ? 'per-email writes will be used' : 'batch writes will fail; grant it or set suppression.batch to "auto"'}`,
    );
  } else {
    add(
      'batch-suppression',
      true,
      `not yet known (needs Marketing Hub Enterprise${scopes ? '; scope granted' : ''}): the first batch write decides${mode === 'auto' ? ', falling back to per-email on 403' : ''}`,
    );
  }
}
