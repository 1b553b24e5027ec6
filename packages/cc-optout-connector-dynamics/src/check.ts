/**
 * check(): a real read with named items: a token from Microsoft Entra ID, WhoAmI (the application user),
 * and per table a `$top=1` query selecting every column the connector reads or writes (a missing column, a
 * missing table or a missing read privilege is named). Nothing is written, so the write privilege is not
 * proven here: the first delivery would halt on a 403.
 */
import { CheckItem, CheckReport } from 'cc-optout-connector/sdk';
import { TokenSource } from './auth';
import { DataverseClient, DataverseHalt, DataverseRequestError } from './client';
import { Resolved } from './config';
import { ENTITIES } from './odata';

const describe = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export async function runCheck(client: DataverseClient, tokens: TokenSource, cfg: Resolved): Promise<CheckReport> {
  const items: CheckItem[] = [];
  try {
    await tokens.get();
    items.push({
      name: 'token',
      ok: true,
      detail: `Microsoft Entra ID (${cfg.auth.authorityHost}) issued a client-credentials token for ${cfg.url}/.default`,
    });
  } catch (e) {
    items.push({ name: 'token', ok: false, detail: describe(e) });
    return { ok: false, items };
  }
  try {
    const who = await client.getJson<{ UserId?: string; OrganizationId?: string }>('WhoAmI');
    items.push({
      name: 'whoami',
      ok: typeof who.UserId === 'string',
      detail:
        typeof who.UserId === 'string'
          ? `application user ${who.UserId} in organization ${who.OrganizationId ?? '?'}`
          : 'WhoAmI answered without a UserId',
    });
  } catch (e) {
    items.push({ name: 'whoami', ok: false, detail: describe(e) });
    if (e instanceof DataverseHalt && e.kind !== 'auth') return { ok: false, items };
  }
  for (const key of cfg.entities) {
    const spec = ENTITIES[key];
    const cols = [
      spec.idColumn,
      ...cfg.emailFields,
      'donotbulkemail',
      ...(cfg.alsoSetDoNotEmail ? ['donotemail'] : []),
      ...(key === 'lead' ? ['statecode'] : []),
    ];
    const name = `${spec.entitySet} readable (${cols.slice(1).join(', ')})`;
    try {
      await client.getJson(`${spec.entitySet}?$select=${cols.join(',')}&$top=1`);
      items.push({
        name,
        ok: true,
        detail: `read ${spec.entitySet} with every column the connector uses${key === 'lead' ? '; only Open leads (statecode 0) are written' : ''}`,
      });
    } catch (e) {
      let detail = describe(e);
      if (e instanceof DataverseRequestError && e.status === 404)
        detail = `the environment has no ${spec.entitySet} table (set entities.${key}: false): ${detail}`;
      else if (e instanceof DataverseRequestError && e.status === 400)
        detail = `a column is missing on ${key}: ${detail}`;
      items.push({ name, ok: false, detail });
    }
  }
  items.push({
    name: 'write privilege',
    ok: true,
    detail: 'not checked (it needs a write); a missing privilege halts the first delivery with HTTP 403',
  });
  return { ok: items.every((i) => i.ok), items };
}
