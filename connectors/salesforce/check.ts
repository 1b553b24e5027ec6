/**
 * check(): credentials, each mapped object and field (describe), API usage headroom, Person Accounts.
 * Every finding is a CheckItem that names exactly what is wrong; only read requests are sent.
 */
import { Capabilities, CheckItem, CheckReport, MappedValue, isTargetHalt } from '../../src/sdk';
import { ResolvedConfig, ResolvedObject } from './config';
import { SalesforceClient, SfApiError, KV_API_USAGE, safeMessage } from './client';

interface DescribeField {
  name: string;
  type: string;
  updateable: boolean;
  length?: number;
}

interface DescribeResult {
  name: string;
  updateable?: boolean;
  fields: DescribeField[];
}

interface LimitsResult {
  DailyApiRequests?: { Max: number; Remaining: number };
}

/** Remaining daily API requests below this share of the allocation fail the check. */
export const MIN_HEADROOM_SHARE = 0.05;
/** ... or below this absolute number. */
export const MIN_HEADROOM_REQUESTS = 100;

const TEXT = ['string', 'textarea'];

/** Salesforce field types a mapped value can be written to. */
export function compatibleTypes(v: MappedValue): string[] {
  if (typeof v === 'object') {
    const c = v.constant;
    if (typeof c === 'boolean') return ['boolean'];
    if (typeof c === 'number') return ['double', 'int', 'long', 'currency', 'percent', ...TEXT];
    return [...TEXT, 'picklist', 'multipicklist', 'email', 'url', 'phone', 'date', 'datetime'];
  }
  switch (v) {
    case 'optOutDate':
      return ['datetime', ...TEXT];
    case 'email':
      return ['email', ...TEXT];
    case 'reason':
    case 'source':
      return [...TEXT, 'picklist'];
    case 'contactId':
      return TEXT;
  }
}

function failText(e: unknown): string {
  if (isTargetHalt(e)) return `${e.kind}: ${e.message}`;
  if (e instanceof SfApiError) return `${e.errorCode}: ${e.message}`;
  return safeMessage(e instanceof Error ? e.message : String(e));
}

export async function runCheck(
  client: SalesforceClient,
  cfg: ResolvedConfig,
  caps: Capabilities,
): Promise<CheckReport> {
  const items: CheckItem[] = [];
  const add = (name: string, ok: boolean, detail: string): void => {
    items.push({ name, ok, detail });
  };
  try {
    // 1. Credentials: a token, then one authenticated read (GET /limits), which also gives the API headroom.
    let limits: LimitsResult | null = null;
    try {
      const conn = await client.connection();
      try {
        limits = await client.request<LimitsResult>('limits', { method: 'GET', url: '/limits' });
      } catch (e) {
        if (isTargetHalt(e) && e.kind !== 'quota') throw e;
        // an API error here (e.g. no permission to read limits) is an api-usage finding, not a credential one
        add('api usage', false, `cannot read /limits: ${failText(e)}`);
      }
      add('credentials', true, `${cfg.auth.type} auth: accepted by ${conn.instanceUrl} (API v${cfg.apiVersion})`);
    } catch (e) {
      add('credentials', false, `${cfg.auth.type} auth failed: ${failText(e)}`);
      return { ok: false, items };
    }

    // 2. API usage headroom
    if (limits) {
      const daily = limits.DailyApiRequests;
      if (!daily || typeof daily.Max !== 'number' || typeof daily.Remaining !== 'number') {
        add('api usage', false, 'GET /limits returned no DailyApiRequests');
      } else {
        const used = daily.Max - daily.Remaining;
        const floor = Math.max(MIN_HEADROOM_REQUESTS, Math.ceil(daily.Max * MIN_HEADROOM_SHARE));
        caps.kv.set(KV_API_USAGE, JSON.stringify({ used, max: daily.Max, at: caps.clock.now().toISOString() }));
        add(
          'api usage',
          daily.Remaining >= floor,
          `daily API requests: ${used} of ${daily.Max} used, ${daily.Remaining} remaining` +
            (daily.Remaining >= floor
              ? ''
              : ` (below the ${floor} kept as headroom; deliveries may stop with REQUEST_LIMIT_EXCEEDED)`),
        );
      }
    }

    // 3. Objects and fields
    if (cfg.objects.length === 0)
      add(
        'objects',
        false,
        'no object is enabled: enable at least one of objects.Contact, objects.Lead, objects.PersonAccount',
      );
    const describes = new Map<string, DescribeResult | null>();
    const describe = async (sobject: string): Promise<DescribeResult | null> => {
      if (!describes.has(sobject)) {
        try {
          const d = await client.request<DescribeResult>(`describe ${sobject}`, {
            method: 'GET',
            url: `/sobjects/${sobject}/describe`,
          });
          describes.set(sobject, d);
        } catch (e) {
          if (isTargetHalt(e)) throw e;
          add(
            `object ${sobject}`,
            false,
            `cannot describe ${sobject}: ${failText(e)} (does the integration user have access to it?)`,
          );
          describes.set(sobject, null);
        }
      }
      return describes.get(sobject) ?? null;
    };
    for (const obj of cfg.objects) {
      const d = await describe(obj.sobject);
      if (!d) continue;
      checkObject(obj, d, add);
    }
    const pa = cfg.objects.find((o) => o.key === 'PersonAccount');
    const contact = cfg.objects.find((o) => o.key === 'Contact');
    if (pa && contact) {
      const d = await describe('Contact');
      if (d && !d.fields.some((f) => f.name === 'IsPersonAccount')) {
        add(
          'Contact.IsPersonAccount',
          false,
          'Contact has no IsPersonAccount field, so Person Accounts are not enabled; disable objects.PersonAccount',
        );
      }
    }
  } catch (e) {
    add('salesforce', false, failText(e));
  } finally {
    client.flushUsage();
  }
  return { ok: items.every((i) => i.ok), items };
}

function checkObject(
  obj: ResolvedObject,
  d: DescribeResult,
  add: (name: string, ok: boolean, detail: string) => void,
): void {
  const fields = new Map(d.fields.map((f) => [f.name.toLowerCase(), f]));
  const get = (name: string): DescribeField | undefined => fields.get(name.toLowerCase());
  const where = obj.key === 'PersonAccount' ? 'Account' : obj.sobject;

  if (obj.key === 'PersonAccount') {
    const ok = !!get('IsPersonAccount') && !!get('PersonEmail');
    add(
      'PersonAccount',
      ok,
      ok
        ? 'Person Accounts are enabled (Account has IsPersonAccount and PersonEmail)'
        : 'Person Accounts are not enabled in this org (Account has no IsPersonAccount / PersonEmail); disable objects.PersonAccount',
    );
    if (!ok) return;
  } else {
    add(`object ${obj.key}`, true, `${obj.key} is accessible`);
  }
  const email = get(obj.emailField);
  if (!email)
    add(`${where}.${obj.emailField}`, false, `${where} has no ${obj.emailField} field visible to the integration user`);

  const f = get(obj.field);
  if (!f) {
    add(
      `${where}.${obj.field}`,
      false,
      `${where} has no field "${obj.field}" (check objects.${obj.key}.field and field-level security)`,
    );
  } else if (f.type !== 'boolean') {
    add(
      `${where}.${obj.field}`,
      false,
      `${where}.${obj.field} is a ${f.type} field; the suppression field must be a checkbox (boolean)`,
    );
  } else if (!f.updateable) {
    add(
      `${where}.${obj.field}`,
      false,
      `${where}.${obj.field} is not updateable by the integration user (field-level security)`,
    );
  } else {
    add(`${where}.${obj.field}`, true, 'boolean, updateable');
  }

  for (const [name, source] of obj.extraFields) {
    const x = get(name);
    const what = typeof source === 'object' ? `constant ${JSON.stringify(source.constant)}` : source;
    if (!x) {
      add(`${where}.${name}`, false, `${where} has no field "${name}" (objects.${obj.key}.extraFields)`);
      continue;
    }
    if (!x.updateable) {
      add(`${where}.${name}`, false, `${where}.${name} is not updateable by the integration user`);
      continue;
    }
    const types = compatibleTypes(source);
    if (!types.includes(x.type)) {
      const hint =
        source === 'optOutDate' && x.type === 'date'
          ? ' (optOutDate is a date-time: use a Date/Time or text field)'
          : '';
      add(
        `${where}.${name}`,
        false,
        `${where}.${name} is a ${x.type} field; ${what} needs one of ${types.join(', ')}${hint}`,
      );
      continue;
    }
    add(`${where}.${name}`, true, `${x.type}, updateable, receives ${what}`);
  }
}
