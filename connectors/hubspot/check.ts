/**
 * `check()`: token valid, scopes granted (missing ones named), contact lookup allowed, subscription ids
 * exist for the business unit, audit properties exist with compatible types, what is known about batch
 * suppression. Every problem becomes a failing item; only a bug rejects.
 */
import { CheckItem, CheckReport } from '../../src/plugin';
import { MappedValue } from '../../src/domain';
import { redact } from '../../src/log';
import { Halt, HubSpotHttpError } from './api';
import type { HubSpotTarget } from './target';
import { PATHS } from './paths';
import { ResolvedHubSpotConfig } from './config';

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

const describeNeed = (n: ScopeNeed): string => (n.anyOf.length === 1 ? n.anyOf[0]! : `${n.anyOf[0]} (or ${n.anyOf.slice(1).join(' / ')})`);

function errMessage(e: unknown): string {
  if (e instanceof Halt) return e.error.message;
  return redact((e as Error)?.message ?? String(e));
}

/** Property types a mapped value can be written to. */
function compatibleTypes(v: MappedValue): { types: string[]; hint: string } {
  if (typeof v === 'object') {
    const c = v.constant;
    if (typeof c === 'number') return { types: ['number', 'string'], hint: 'a number or string property' };
    if (typeof c === 'boolean') return { types: ['bool', 'enumeration', 'string'], hint: 'a bool (single checkbox) or string property' };
    return { types: ['string', 'enumeration'], hint: 'a string or enumeration property' };
  }
  if (v === 'optOutDate') return { types: ['datetime', 'string'], hint: 'a datetime or string property (date properties need midnight values)' };
  return { types: ['string'], hint: 'a string (single-line text) property' };
}

export async function runCheck(target: HubSpotTarget): Promise<CheckReport> {
  const cfg = target.cfg;
  const api = target.api;
  const items: CheckItem[] = [];
  const add = (name: string, ok: boolean, detail: string): void => {
    items.push({ name, ok, detail: redact(detail) });
  };

  // 1. Token validity, and its scopes when HubSpot tells us.
  let scopes: string[] | null = null;
  let tokenOk = false;
  try {
    const token = await api.accessToken();
    tokenOk = true; // a private-app token is "valid until HubSpot says otherwise"; an OAuth one was just refreshed
    if (cfg.auth.type === 'private-app') {
      const res = await api.call(`POST ${PATHS.privateAppTokenInfo}`, { method: 'POST', path: PATHS.privateAppTokenInfo, body: { tokenKey: token } });
      const b = (res.body ?? {}) as { scopes?: unknown; hubId?: unknown; appId?: unknown };
      scopes = Array.isArray(b.scopes) ? b.scopes.filter((s): s is string => typeof s === 'string') : null;
      add('token', true, `private app token is valid${b.hubId !== undefined ? ` (portal ${String(b.hubId)}${b.appId !== undefined ? `, app ${String(b.appId)}` : ''})` : ''}`);
    } else {
      const res = await api.call('GET /oauth/v1/access-tokens/{token}', { method: 'GET', path: PATHS.oauthTokenInfo(token), auth: false });
      const b = (res.body ?? {}) as { scopes?: unknown; hub_id?: unknown; expires_in?: unknown };
      scopes = Array.isArray(b.scopes) ? b.scopes.filter((s): s is string => typeof s === 'string') : null;
      add('token', true, `OAuth refresh succeeded and the access token is valid${b.hub_id !== undefined ? ` (portal ${String(b.hub_id)})` : ''}`);
    }
  } catch (e) {
    if (e instanceof HubSpotHttpError && tokenOk) {
      const endpoint = cfg.auth.type === 'private-app' ? `POST ${PATHS.privateAppTokenInfo}` : 'GET /oauth/v1/access-tokens/{token}';
      if (cfg.auth.type === 'private-app' && (e.status === 400 || e.status === 401)) {
        tokenOk = false;
        add('token', false, `HubSpot does not recognise the private app token (HTTP ${e.status}); check auth.accessToken`);
      } else {
        add(
          'token',
          true,
          `token-info endpoint ${endpoint} unavailable (HTTP ${e.status}); token validity is shown by the contact lookup below, scopes cannot be verified`,
        );
      }
    } else {
      tokenOk = false;
      add('token', false, errMessage(e));
    }
  }

  // 2. Scopes.
  const needs = requiredScopes(cfg);
  if (scopes === null) {
    add('scopes', true, `not verified (token info unavailable); needed: ${needs.map(describeNeed).join(', ')}`);
  } else {
    const granted = new Set(scopes);
    const missing = needs.filter((n) => !n.optional && !n.anyOf.some((s) => granted.has(s)));
    const missingOptional = needs.filter((n) => n.optional && !n.anyOf.some((s) => granted.has(s)));
    const extra = missingOptional.length > 0 ? `; optional scope not granted: ${missingOptional.map(describeNeed).join(', ')} (batch suppression unavailable, per-email writes will be used)` : '';
    if (missing.length > 0) {
      add('scopes', false, `missing scopes: ${missing.map((n) => `${describeNeed(n)} (to ${n.why})`).join(', ')}${extra}`);
    } else {
      add('scopes', true, `all required scopes granted${extra}`);
    }
  }

  // 3. Contact lookup (the same call deliver makes), with an address that cannot exist.
  if (tokenOk) {
    try {
      await api.sdk(`POST ${PATHS.batchRead}`, (client, options) =>
        client.crm.contacts.batchApi.read(
          { inputs: [{ id: 'cc-optout-check@example.invalid' }], idProperty: 'email', properties: ['email', 'hs_email_optout'], propertiesWithHistory: [] },
          false,
          options,
        ),
      );
      add('contact-lookup', true, 'batch read of contacts by email works');
    } catch (e) {
      const detail =
        e instanceof HubSpotHttpError && e.status === 403
          ? `HubSpot refused the contact lookup (403): grant scope ${SCOPES.contactsRead}`
          : errMessage(e);
      add('contact-lookup', false, detail);
    }
  }

  // 4. Subscription ids (subscriptions mode).
  if (cfg.suppression.type === 'subscriptions' && tokenOk) {
    try {
      const res = await api.call(`GET ${PATHS.definitions}`, { method: 'GET', path: PATHS.definitions, qs: { businessUnitId: String(cfg.businessUnitId) } });
      const defs = (((res.body ?? {}) as { results?: unknown }).results ?? []) as Array<{ id?: unknown; name?: unknown; isActive?: unknown }>;
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
        const available = [...byId.values()].slice(0, 20).map((d) => `${String(d.id)} ${String(d.name)}`).join(', ');
        add('subscriptions', false, `businessUnitId ${cfg.businessUnitId}: ${problems.join('; ')}. Available: ${available || 'none'}`);
      } else {
        add('subscriptions', true, `businessUnitId ${cfg.businessUnitId}: ${found.join(', ')}`);
      }
    } catch (e) {
      add('subscriptions', false, `could not read subscription definitions: ${errMessage(e)}`);
    }
  }

  // 5. Audit properties.
  if (tokenOk) {
    for (const [name, value] of Object.entries(cfg.properties)) {
      const path = PATHS.property(name);
      try {
        const res = await api.call(`GET ${path}`, { method: 'GET', path });
        const p = (res.body ?? {}) as { type?: unknown; fieldType?: unknown; calculated?: unknown; modificationMetadata?: { readOnlyValue?: unknown } };
        const { types, hint } = compatibleTypes(value);
        const type = String(p.type);
        if (p.modificationMetadata?.readOnlyValue === true || p.calculated === true) {
          add(`property:${name}`, false, `contact property ${name} is read-only in HubSpot; choose a custom property`);
        } else if (!types.includes(type)) {
          add(`property:${name}`, false, `contact property ${name} has type ${type}${p.fieldType ? `/${String(p.fieldType)}` : ''}; ${JSON.stringify(value)} needs ${hint}`);
        } else {
          add(`property:${name}`, true, `contact property ${name} exists (type ${type})`);
        }
      } catch (e) {
        if (e instanceof HubSpotHttpError && e.status === 404) {
          add(`property:${name}`, false, `contact property ${name} does not exist in HubSpot; create it (Settings > Properties) or remove it from "properties"`);
        } else {
          add(`property:${name}`, false, `could not read contact property ${name}: ${errMessage(e)}`);
        }
      }
    }
  }

  // 6. Batch suppression: what is known.
  const { mode, known } = target.batchState();
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
    add('batch-suppression', true, `not yet known (needs Marketing Hub Enterprise${scopes ? '; scope granted' : ''}): the first batch write decides${mode === 'auto' ? ', falling back to per-email on 403' : ''}`);
  }

  return { ok: items.every((i) => i.ok), items };
}
