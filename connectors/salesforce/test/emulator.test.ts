import { strict as assert } from 'assert';
import { generateKeyPairSync, sign } from 'crypto';
import * as net from 'net';
import axios, { AxiosResponse } from 'axios';
import { Connection } from 'jsforce';
import { GroundTruth, SalesforceEmulator, World, escapeSoql, startSalesforce } from '../../../src/emulators';
import { parseCsv } from '../../../src/emulators/csv';

const ANCHOR = '2025-06-01T12:00:00Z';
const any = { validateStatus: () => true } as const;
const V = '/services/data/v59.0';

function signJwt(privateKeyPem: string, claims: Record<string, unknown>): string {
  const enc = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = `${enc({ alg: 'RS256', typ: 'JWT' })}.${enc(claims)}`;
  return `${head}.${sign('RSA-SHA256', Buffer.from(head), privateKeyPem).toString('base64url')}`;
}

describe('emulator: Salesforce', () => {
  let emu: SalesforceEmulator;
  let world: World;
  let truth: GroundTruth;
  let token: string;
  const auth = (t = token) => ({ headers: { authorization: `Bearer ${t}` }, ...any });
  const query = (soql: string, headers: Record<string, string> = {}): Promise<AxiosResponse> =>
    axios.get(`${emu.origin}${V}/query`, {
      params: { q: soql },
      headers: { authorization: `Bearer ${token}`, ...headers },
      ...any,
    });
  const patch = (records: unknown[], allOrNone = false): Promise<AxiosResponse> =>
    axios.patch(`${emu.origin}${V}/composite/sobjects`, { allOrNone, records }, auth());
  const jwtClaims = () => ({
    iss: emu.clientId,
    sub: emu.username,
    aud: emu.origin,
    exp: Math.floor(Date.now() / 1000) + 180,
  });
  const tokenReq = (params: Record<string, string>): Promise<AxiosResponse> =>
    axios.post(`${emu.origin}/services/oauth2/token`, new URLSearchParams(params).toString(), {
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      ...any,
    });
  const used = new Set<string>();
  /** A toSuppress record of a type, not used by another test. */
  const fresh = (type: 'Contact' | 'Lead') => {
    const rec = truth.salesforce.toSuppress
      .map((id) => world.sfById.get(id)!)
      .find((r) => r.type === type && !used.has(r.Id));
    assert.ok(rec, `a fresh ${type}`);
    used.add(rec.Id);
    return rec;
  };

  before(async () => {
    emu = await startSalesforce({ seed: 41, contacts: 4000, anchor: ANCHOR });
    world = emu.world;
    truth = world.truth();
    const r = await tokenReq({
      grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
      assertion: signJwt(emu.privateKeyPem, jwtClaims()),
    });
    assert.equal(r.status, 200, JSON.stringify(r.data));
    token = r.data.access_token;
  });
  after(() => emu.stop());
  afterEach(() => {
    emu.setKnobs({
      lockNext: 0,
      lockRate: 0,
      dailyApiLimit: 100_000,
      force429Storm: 0,
      fail5xxRate: 0,
      bulkInProgressPolls: 0,
    });
  });

  describe('OAuth', () => {
    it('JWT bearer: a correctly signed assertion gets a session with instance_url and id', async () => {
      const r = await tokenReq({
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        assertion: signJwt(emu.privateKeyPem, jwtClaims()),
      });
      assert.equal(r.status, 200);
      assert.equal(r.data.instance_url, emu.origin);
      assert.match(r.data.id, /\/id\/00D\w{15}\/005\w{15}$/);
      assert.equal(r.data.token_type, 'Bearer');
      assert.equal(r.data.refresh_token, undefined);
    });

    it('JWT bearer: a wrong key, audience, subject, issuer or expiry is rejected', async () => {
      const other = generateKeyPairSync('rsa', { modulusLength: 2048 })
        .privateKey.export({ type: 'pkcs8', format: 'pem' })
        .toString();
      const wrongKey = await tokenReq({
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        assertion: signJwt(other, jwtClaims()),
      });
      assert.equal(wrongKey.status, 400);
      assert.equal(wrongKey.data.error, 'invalid_grant');
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ aud: 'https://evil.example.com' }, 'invalid_grant'],
        [{ sub: 'someone@else' }, 'invalid_grant'],
        [{ iss: 'not-the-client' }, 'invalid_client_id'],
        [{ exp: Math.floor(Date.now() / 1000) - 10 }, 'invalid_grant'],
      ];
      for (const [override, error] of cases) {
        const r = await tokenReq({
          grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
          assertion: signJwt(emu.privateKeyPem, { ...jwtClaims(), ...override }),
        });
        assert.equal(r.status, 400, JSON.stringify(override));
        assert.equal(r.data.error, error, JSON.stringify(override));
      }
      // Audience may also be the standard login host.
      const std = await tokenReq({
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        assertion: signJwt(emu.privateKeyPem, { ...jwtClaims(), aud: 'https://login.salesforce.com' }),
      });
      assert.equal(std.status, 200);
    });

    it('client credentials and refresh token grants; username-password is blocked', async () => {
      const c = emu.connection();
      const cc = await tokenReq({
        grant_type: 'client_credentials',
        client_id: c.clientId,
        client_secret: c.clientSecret,
      });
      assert.equal(cc.status, 200);
      const rt = await tokenReq({
        grant_type: 'refresh_token',
        client_id: c.clientId,
        client_secret: c.clientSecret,
        refresh_token: c.refreshToken,
      });
      assert.equal(rt.status, 200);
      const pw = await tokenReq({ grant_type: 'password', client_id: c.clientId, username: c.username, password: 'x' });
      assert.equal(pw.status, 400);
    });

    it('invalid or expired sessions get 401 INVALID_SESSION_ID (array body)', async () => {
      const r = await axios.get(`${emu.origin}${V}/limits`, auth('00Dbogus!token'));
      assert.equal(r.status, 401);
      assert.deepEqual(r.data, [{ errorCode: 'INVALID_SESSION_ID', message: 'Session expired or invalid' }]);
      const c = emu.connection();
      const cc = await tokenReq({
        grant_type: 'client_credentials',
        client_id: c.clientId,
        client_secret: c.clientSecret,
      });
      const t = cc.data.access_token as string;
      assert.equal((await axios.get(`${emu.origin}${V}/limits`, auth(t))).status, 200);
      await axios.post(`${emu.origin}/__emulator/faults`, { expireTokens: true }, any);
      assert.equal((await axios.get(`${emu.origin}${V}/limits`, auth(t))).status, 401);
      const again = await tokenReq({
        grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
        assertion: signJwt(emu.privateKeyPem, jwtClaims()),
      });
      token = again.data.access_token;
    });
  });

  describe('REST', () => {
    it('every /services/data response carries Sforce-Limit-Info; past the allocation 403 REQUEST_LIMIT_EXCEEDED', async () => {
      const a = await axios.get(`${emu.origin}${V}/limits`, auth());
      const m = /^api-usage=(\d+)\/(\d+)$/.exec(a.headers['sforce-limit-info'] as string);
      assert.ok(m, String(a.headers['sforce-limit-info']));
      assert.equal(Number(m[2]), 100_000);
      assert.equal(a.data.DailyApiRequests.Max, 100_000);
      const nf = await axios.get(`${emu.origin}${V}/sobjects/Nope/describe`, auth());
      assert.equal(nf.status, 404);
      assert.ok(nf.headers['sforce-limit-info']);
      emu.setKnobs({ dailyApiLimit: Number(m[1]) + 2 });
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) statuses.push((await axios.get(`${emu.origin}${V}/limits`, auth())).status);
      const over = await axios.get(`${emu.origin}${V}/limits`, auth());
      assert.equal(over.status, 403);
      assert.equal(over.data[0].errorCode, 'REQUEST_LIMIT_EXCEEDED');
      assert.ok(over.headers['sforce-limit-info']);
      assert.ok(statuses.includes(403));
    });

    it('SOQL: Email IN is case-insensitive', async () => {
      const recId = truth.hardCases.mixedCaseSalesforce.find((id) => world.sfById.get(id)!.type === 'Contact')!;
      const rec = world.sfById.get(recId)!;
      const r = await query(
        `SELECT Id, Email, HasOptedOutOfEmail FROM Contact WHERE Email IN ('${rec.norm!.toUpperCase()}', 'nobody@example.com')`,
      );
      assert.equal(r.status, 200, JSON.stringify(r.data));
      assert.equal(r.data.done, true);
      const ids = r.data.records.map((x: { Id: string }) => x.Id);
      assert.ok(ids.includes(recId));
      const hit = r.data.records.find((x: { Id: string }) => x.Id === recId);
      assert.deepEqual(Object.keys(hit), ['attributes', 'Id', 'Email', 'HasOptedOutOfEmail']);
      assert.equal(hit.attributes.type, 'Contact');
      assert.equal(hit.Email, rec.fields.Email, 'stored case comes back');
      assert.equal(typeof hit.HasOptedOutOfEmail, 'boolean');
    });

    it('SOQL: IsConverted = false leaves converted Leads out; duplicates come back together', async () => {
      const conv = world.sfById.get(truth.salesforce.convertedLeads[0] ?? truth.hardCases.convertedLeads[0])!;
      const email = conv.norm!;
      const all = await query(`SELECT Id FROM Lead WHERE Email IN ('${email}')`);
      assert.ok(all.data.records.some((x: { Id: string }) => x.Id === conv.Id));
      const open = await query(`SELECT Id FROM Lead WHERE Email IN ('${email}') AND IsConverted = false`);
      assert.ok(!open.data.records.some((x: { Id: string }) => x.Id === conv.Id));
      const dupEmail = truth.hardCases.sfTwoContacts[0];
      const two = await query(`SELECT Id FROM Contact WHERE Email IN ('${dupEmail}')`);
      assert.ok(two.data.totalSize >= 2);
      const cl = truth.hardCases.sfContactAndLead[0];
      const leads = await query(`select id from lead where email = '${cl.toUpperCase()}'`);
      const contacts = await query(`select id from contact where email = '${cl}'`);
      assert.ok(leads.data.totalSize >= 1 && contacts.data.totalSize >= 1);
    });

    it('SOQL: escaped quotes and backslashes; malformed queries and unknown fields', async () => {
      const odd = "o'brien\\x@example.com";
      world.addSalesforceRecord('Contact', "O'Brien\\X@Example.com");
      const r = await query(`SELECT Id, Email FROM Contact WHERE Email IN ('${escapeSoql(odd)}')`);
      assert.equal(r.status, 200, JSON.stringify(r.data));
      assert.equal(r.data.totalSize, 1);
      assert.equal(r.data.records[0].Email, "O'Brien\\X@Example.com");
      const unescaped = await query(`SELECT Id FROM Contact WHERE Email IN ('o'brien@example.com')`);
      assert.equal(unescaped.status, 400);
      assert.equal(unescaped.data[0].errorCode, 'MALFORMED_QUERY');
      const field = await query('SELECT Id, Nope__c FROM Contact');
      assert.equal(field.data[0].errorCode, 'INVALID_FIELD');
      const person = await query('SELECT Id FROM Account WHERE IsPersonAccount = true');
      assert.equal(person.status, 400, 'no person accounts in this org');
      assert.equal(person.data[0].errorCode, 'INVALID_FIELD');
      const obj = await query('SELECT Id FROM Opportunity');
      assert.equal(obj.data[0].errorCode, 'INVALID_TYPE');
    });

    it('pages past 2,000 rows with nextRecordsUrl (and honours Sforce-Query-Options batchSize)', async () => {
      const first = await query('SELECT Id FROM Contact');
      const total = first.data.totalSize as number;
      assert.ok(total > 2000, `need > 2000 contacts, have ${total}`);
      assert.equal(first.data.records.length, 2000);
      assert.equal(first.data.done, false);
      assert.match(first.data.nextRecordsUrl, /^\/services\/data\/v59\.0\/query\/01g[A-Za-z0-9]+-2000$/);
      const second = await axios.get(`${emu.origin}${first.data.nextRecordsUrl}`, auth());
      assert.equal(second.data.records.length, total - 2000);
      assert.equal(second.data.done, true);
      const ids = [...first.data.records, ...second.data.records].map((x: { Id: string }) => x.Id);
      assert.equal(new Set(ids).size, total);
      const small = await query('SELECT Id FROM Contact', { 'Sforce-Query-Options': 'batchSize=200' });
      assert.equal(small.data.records.length, 200);
      assert.match(small.data.nextRecordsUrl, /-200$/);
      const badLoc = await axios.get(`${emu.origin}${V}/query/01gnope-2000`, auth());
      assert.equal(badLoc.data[0].errorCode, 'INVALID_QUERY_LOCATOR');
    });

    it('rejects URLs over 16,384 bytes (414) and oversized headers (431)', async () => {
      // A raw socket: under nock (test/setup), an http.request whose head exceeds 16 KB never leaves the
      // client (the interceptor's parser hangs), so these two requests bypass the http module.
      const rawGet = (path: string, headers: Record<string, string>): Promise<string> =>
        new Promise((resolve, reject) => {
          const u = new URL(emu.origin);
          const s = net.connect(Number(u.port), u.hostname, () => {
            const hs = Object.entries({
              Host: u.host,
              Connection: 'close',
              Authorization: `Bearer ${token}`,
              ...headers,
            })
              .map(([k, v]) => `${k}: ${v}\r\n`)
              .join('');
            s.write(`GET ${path} HTTP/1.1\r\n${hs}\r\n`);
          });
          let buf = '';
          s.on('data', (d) => (buf += d.toString()));
          s.on('end', () => resolve(buf));
          s.on('error', reject);
        });
      const emails = Array.from({ length: 700 }, (_, i) => `'someone.with.a.long.address.${i}@example.com'`).join(',');
      const q = (list: string) =>
        `${V}/query?q=${encodeURIComponent(`SELECT Id FROM Contact WHERE Email IN (${list})`)}`;
      const long = await rawGet(q(emails), {});
      assert.match(long, /^HTTP\/1\.1 414 /);
      assert.match(long, /URI_TOO_LONG/);
      const big = await rawGet(`${V}/limits`, { 'X-Padding': 'x'.repeat(16_500) });
      assert.match(big, /^HTTP\/1\.1 431 /);
      const ok = await query(`SELECT Id FROM Contact WHERE Email IN (${emails.split(',').slice(0, 100).join(',')})`);
      assert.equal(ok.status, 200);
    });

    it('sObject Collections: >200 records rejected with EXCEEDED_ID_LIMIT', async () => {
      const recs = Array.from({ length: 201 }, (_, i) => ({
        attributes: { type: 'Contact' },
        Id: truth.salesforce.untouched[i],
        HasOptedOutOfEmail: false,
      }));
      const r = await patch(recs);
      assert.equal(r.status, 400);
      assert.equal(r.data[0].errorCode, 'EXCEEDED_ID_LIMIT');
    });

    it('sObject Collections: per-record results in input order, with the right error codes', async () => {
      const ok1 = fresh('Contact');
      const ok2 = fresh('Lead');
      const conv = world.sfById.get(truth.hardCases.convertedLeads[0])!;
      const gone = fresh('Contact');
      emu.deleteRecords([gone.Id]);
      const r = await patch([
        { attributes: { type: 'Contact' }, Id: ok1.Id, HasOptedOutOfEmail: true, CC_Opt_Out_Source__c: 'Contact' },
        { attributes: { type: 'Lead' }, Id: conv.Id, HasOptedOutOfEmail: true },
        { attributes: { type: 'Contact' }, Id: gone.Id, HasOptedOutOfEmail: true },
        { attributes: { type: 'Contact' }, Id: ok1.Id, No_Such__c: 'x' },
        { attributes: { type: 'Lead' }, id: ok2.Id, HasOptedOutOfEmail: true },
        { attributes: { type: 'Lead' }, Id: ok2.Id, IsConverted: true },
      ]);
      assert.equal(r.status, 200);
      const codes = r.data.map((x: { success: boolean; errors: Array<{ statusCode: string }> }) =>
        x.success ? 'ok' : x.errors[0].statusCode,
      );
      assert.deepEqual(codes, [
        'ok',
        'CANNOT_UPDATE_CONVERTED_LEAD',
        'ENTITY_IS_DELETED',
        'INVALID_FIELD',
        'ok',
        'INVALID_FIELD_FOR_INSERT_UPDATE',
      ]);
      assert.equal(r.data[0].id, ok1.Id);
      assert.deepEqual(r.data[0].errors, []);
      assert.equal(r.data[1].id, undefined, 'failed items carry no id');
      assert.equal(typeof r.data[1].errors[0].message, 'string');
      assert.ok(Array.isArray(r.data[1].errors[0].fields));
      assert.equal(world.sfById.get(ok1.Id)!.fields.HasOptedOutOfEmail, true);
      assert.equal(world.sfById.get(ok2.Id)!.fields.HasOptedOutOfEmail, true);
      assert.equal(world.sfById.get(conv.Id)!.fields.HasOptedOutOfEmail, conv.initialOptOut);
    });

    it('sObject Collections: UNABLE_TO_LOCK_ROW knob and allOrNone rollback', async () => {
      const a = fresh('Contact');
      const b = fresh('Contact');
      emu.setKnobs({ lockNext: 1 });
      const r = await patch([
        { attributes: { type: 'Contact' }, Id: a.Id, HasOptedOutOfEmail: true },
        { attributes: { type: 'Contact' }, Id: b.Id, HasOptedOutOfEmail: true },
      ]);
      assert.equal(r.data[0].errors[0].statusCode, 'UNABLE_TO_LOCK_ROW');
      assert.equal(r.data[1].success, true);
      const conv = world.sfById.get(truth.hardCases.convertedLeads[0])!;
      const rb = await patch(
        [
          { attributes: { type: 'Contact' }, Id: a.Id, HasOptedOutOfEmail: true },
          { attributes: { type: 'Lead' }, Id: conv.Id, HasOptedOutOfEmail: true },
        ],
        true,
      );
      assert.equal(rb.data[0].errors[0].statusCode, 'ALL_OR_NONE_OPERATION_ROLLED_BACK');
      assert.equal(world.sfById.get(a.Id)!.fields.HasOptedOutOfEmail, false, 'rolled back');
    });

    it('describe lists fields with type and updateable; Account has no person fields here', async () => {
      const d = await axios.get(`${emu.origin}${V}/sobjects/Lead/describe`, auth());
      assert.equal(d.status, 200);
      const f = (n: string) => d.data.fields.find((x: { name: string }) => x.name === n);
      assert.deepEqual([f('HasOptedOutOfEmail').type, f('HasOptedOutOfEmail').updateable], ['boolean', true]);
      assert.equal(f('IsConverted').updateable, false);
      const acc = await axios.get(`${emu.origin}${V}/sobjects/Account/describe`, auth());
      assert.ok(!acc.data.fields.some((x: { name: string }) => x.name === 'PersonEmail'));
    });
  });

  describe('Bulk API 2.0 ingest', () => {
    it('runs an update job end to end, with failed results as CSV (sf__Id, sf__Error first)', async () => {
      const okRec = fresh('Contact');
      const conv = world.sfById.get(truth.hardCases.convertedLeads[1] ?? truth.hardCases.convertedLeads[0])!;
      const lead = fresh('Lead');
      const base = `${emu.origin}${V}/jobs/ingest`;
      const job = await axios.post(
        base,
        { object: 'Lead', operation: 'update', contentType: 'CSV', lineEnding: 'LF' },
        auth(),
      );
      assert.equal(job.status, 200, JSON.stringify(job.data));
      assert.equal(job.data.state, 'Open');
      const id = job.data.id as string;
      const csv = `Id,HasOptedOutOfEmail\n${lead.Id},true\n${conv.Id},true\n00QDn00000zzzzz,true\n`;
      const up = await axios.put(`${base}/${id}/batches`, csv, {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/csv' },
        ...any,
      });
      assert.equal(up.status, 201);
      const close = await axios.patch(`${base}/${id}`, { state: 'UploadComplete' }, auth());
      assert.equal(close.status, 200);
      const info = await axios.get(`${base}/${id}`, auth());
      assert.equal(info.data.state, 'JobComplete');
      assert.equal(info.data.numberRecordsProcessed, 3);
      assert.equal(info.data.numberRecordsFailed, 2);
      const failed = await axios.get(`${base}/${id}/failedResults/`, auth());
      assert.match(String(failed.headers['content-type']), /text\/csv/);
      const rows = parseCsv(failed.data as string);
      assert.deepEqual(rows[0], ['sf__Id', 'sf__Error', 'Id', 'HasOptedOutOfEmail']);
      assert.equal(rows.length, 3);
      assert.ok(rows.some((r) => r[0] === conv.Id && r[1].startsWith('CANNOT_UPDATE_CONVERTED_LEAD')));
      const ok = parseCsv((await axios.get(`${base}/${id}/successfulResults/`, auth())).data as string);
      assert.deepEqual(ok[0].slice(0, 2), ['sf__Id', 'sf__Created']);
      assert.equal(ok[1][0], lead.Id);
      const un = parseCsv((await axios.get(`${base}/${id}/unprocessedrecords/`, auth())).data as string);
      assert.deepEqual(un, [['Id', 'HasOptedOutOfEmail']]);
      assert.equal(world.sfById.get(lead.Id)!.fields.HasOptedOutOfEmail, true);
      assert.equal(world.sfById.get(okRec.Id)!.fields.HasOptedOutOfEmail, false);
    });

    it('reports InProgress for a while when asked, and fails a job with an unknown column', async () => {
      emu.setKnobs({ bulkInProgressPolls: 1 });
      const base = `${emu.origin}${V}/jobs/ingest`;
      const rec = fresh('Contact');
      const job = await axios.post(base, { object: 'Contact', operation: 'update' }, auth());
      await axios.put(`${base}/${job.data.id}/batches`, `Id,HasOptedOutOfEmail\n${rec.Id},true\n`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/csv' },
        ...any,
      });
      await axios.patch(`${base}/${job.data.id}`, { state: 'UploadComplete' }, auth());
      assert.equal((await axios.get(`${base}/${job.data.id}`, auth())).data.state, 'InProgress');
      assert.equal((await axios.get(`${base}/${job.data.id}`, auth())).data.state, 'JobComplete');
      const late = await axios.put(`${base}/${job.data.id}/batches`, 'Id\n', {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/csv' },
        ...any,
      });
      assert.ok(late.status >= 400, 'no upload after UploadComplete');
      const bad = await axios.post(base, { object: 'Contact', operation: 'update' }, auth());
      await axios.put(`${base}/${bad.data.id}/batches`, `Id,Nope__c\n${rec.Id},x\n`, {
        headers: { authorization: `Bearer ${token}`, 'content-type': 'text/csv' },
        ...any,
      });
      await axios.patch(`${base}/${bad.data.id}`, { state: 'UploadComplete' }, auth());
      const st = await axios.get(`${base}/${bad.data.id}`, auth());
      assert.equal(st.data.state, 'Failed');
      assert.match(st.data.errorMessage, /Nope__c/);
    });
  });

  it('works with jsforce 3.10.16: query, collections update, Bulk 2.0', async function () {
    this.timeout(20_000);
    const conn = new Connection({ instanceUrl: emu.origin, accessToken: token, version: '59.0' });
    const c1 = fresh('Contact');
    const c2 = fresh('Contact');
    const q = await conn.query<{ Id: string; Email: string }>(
      `SELECT Id, Email FROM Contact WHERE Email IN ('${c1.norm}', '${c2.norm}')`,
    );
    assert.ok(q.records.some((r) => r.Id === c1.Id));
    const res = await conn
      .sobject('Contact')
      .update([{ Id: c1.Id, HasOptedOutOfEmail: true }], { allowRecursive: true });
    assert.equal(res[0].success, true);
    assert.equal(world.sfById.get(c1.Id)!.fields.HasOptedOutOfEmail, true);
    assert.ok(conn.limitInfo.apiUsage && conn.limitInfo.apiUsage.limit === 100_000);
    conn.bulk2.pollInterval = 50;
    const results = await conn.bulk2.loadAndWaitForResults({
      object: 'Contact',
      operation: 'update',
      input: [{ Id: c2.Id, HasOptedOutOfEmail: true }],
    });
    assert.equal(results.successfulResults.length, 1);
    assert.equal(results.failedResults.length, 0);
    assert.equal(world.sfById.get(c2.Id)!.fields.HasOptedOutOfEmail, true);
  });

  it('Person Accounts (when enabled): PersonEmail lookup with IsPersonAccount = true, PersonHasOptedOutOfEmail update', async () => {
    const pa = await startSalesforce({ seed: 43, contacts: 600, anchor: ANCHOR, personAccounts: true });
    try {
      const t = pa.world.truth();
      const target = pa.world.sfById.get(t.salesforce.personAccountsToSuppress[0])!;
      const c = pa.connection();
      const h = { headers: { authorization: `Bearer ${c.accessToken}` }, ...any };
      const q = await axios.get(`${pa.origin}${V}/query`, {
        params: {
          q: `SELECT Id, PersonEmail, PersonHasOptedOutOfEmail FROM Account WHERE PersonEmail IN ('${target.norm!.toUpperCase()}') AND IsPersonAccount = true`,
        },
        ...h,
      });
      assert.equal(q.status, 200, JSON.stringify(q.data));
      assert.deepEqual(
        q.data.records.map((r: { Id: string }) => r.Id),
        [target.Id],
      );
      const biz = await axios.get(`${pa.origin}${V}/query`, {
        params: { q: 'SELECT Id FROM Account WHERE IsPersonAccount = false' },
        ...h,
      });
      assert.ok(biz.data.totalSize > 0);
      const u = await axios.patch(
        `${pa.origin}${V}/composite/sobjects`,
        {
          allOrNone: false,
          records: [{ attributes: { type: 'Account' }, Id: target.Id, PersonHasOptedOutOfEmail: true }],
        },
        h,
      );
      assert.equal(u.data[0].success, true);
      assert.ok(pa.world.verify().salesforce.notSuppressed.every((id) => id !== target.Id));
    } finally {
      await pa.stop();
    }
  });

  it('exposes CRM state and verification in /__emulator/state', async () => {
    const st = await axios.get(`${emu.origin}/__emulator/state`, any);
    assert.equal(st.data.vendor, 'salesforce');
    assert.ok(st.data.salesforce.records.length > 0);
    assert.ok(st.data.verification.salesforce.writes > 0);
    assert.ok(st.data.requests['PATCH /services/data/vXX.X/composite/sobjects'].total > 0);
  });
});
