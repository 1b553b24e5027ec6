/**
 * The Dataverse emulator itself, over raw HTTP (axios): the documented behaviours the connector relies on.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as https from 'https';
import * as net from 'net';
import axios, { AxiosRequestConfig } from 'axios';
import { DataverseEmulator, MAX_URL_LENGTH } from '../../src/emulator';
import { evaluate, parseFilter } from '../../src/emulator/filter';

describe('dataverse emulator', function () {
  this.timeout(30_000);
  let emu: DataverseEmulator;
  let token = '';
  const opts = (extra: AxiosRequestConfig = {}): AxiosRequestConfig => ({
    ...extra,
    validateStatus: () => true,
    headers: { Authorization: `Bearer ${token}`, ...(extra.headers ?? {}) },
  });

  before(async () => {
    emu = await new DataverseEmulator({ seed: 3, contacts: 50 }).start();
    const c = emu.connection();
    const agent = new https.Agent({ ca: fs.readFileSync(c.caFile, 'utf8') });
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      client_id: c.clientId,
      client_secret: c.clientSecret,
      scope: `${c.url}/.default`,
    });
    const r = await axios.post(`${c.authorityHost}/${c.tenantId}/oauth2/v2.0/token`, form.toString(), {
      httpsAgent: agent,
    });
    token = r.data.access_token;
    const bad = await axios.post(
      `${c.authorityHost}/${c.tenantId}/oauth2/v2.0/token`,
      new URLSearchParams({ ...Object.fromEntries(form), scope: 'https://other.crm.dynamics.com/.default' }).toString(),
      { httpsAgent: agent, validateStatus: () => true },
    );
    assert.equal(bad.status, 400);
    assert.equal(bad.data.error, 'invalid_scope');
  });
  after(() => emu.stop());

  it('filter: quotes doubled, eq ignores case, and/or/not/parentheses, syntax errors', () => {
    const e = parseFilter("(emailaddress1 eq 'O''Brien@X.org' or emailaddress2 eq 'b@x.org') and not statecode eq 1");
    assert.equal(evaluate(e, { emailaddress1: "o'brien@x.org", statecode: 0 }), true);
    assert.equal(evaluate(e, { emailaddress1: "o'brien@x.org", statecode: 1 }), false);
    assert.equal(evaluate(e, { emailaddress2: 'B@X.ORG', statecode: 0 }), true);
    assert.throws(() => parseFilter("emailaddress1 eq 'open"), /unterminated/);
    assert.throws(() => parseFilter('emailaddress1 gt 3'), /expected eq or ne/);
  });

  it('queries: 401 without a token, unknown columns 400, URLs over 32,768 characters 414, paging with nextLink', async () => {
    const api = emu.connection().apiBaseUrl;
    assert.equal((await axios.get(`${api}/contacts`, { validateStatus: () => true })).status, 401);
    const unknown = await axios.get(`${api}/contacts?$select=nope`, opts());
    assert.equal(unknown.status, 400);
    assert.match(unknown.data.error.message, /Could not find a property named 'nope'/);
    // over a raw socket: under nock a request line past 16 KB never leaves the client
    const u = new URL(api);
    const status = await new Promise<string>((resolve, reject) => {
      const sock = net.connect(Number(u.port), u.hostname, () => {
        sock.write(
          `GET ${u.pathname}/contacts?$filter=${encodeURIComponent(`emailaddress1 eq '${'x'.repeat(MAX_URL_LENGTH)}'`)} HTTP/1.1\r\nHost: ${u.host}\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`,
        );
      });
      let got = '';
      sock.on('data', (d) => (got += d.toString()));
      sock.on('end', () => resolve(got.split('\r\n')[0]));
      sock.on('error', reject);
    });
    assert.match(status, /^HTTP\/1\.1 414/);
    const page1 = await axios.get(
      `${api}/contacts?$select=emailaddress1`,
      opts({ headers: { Prefer: 'odata.maxpagesize=5' } }),
    );
    assert.equal(page1.data.value.length, 5);
    assert.ok(page1.data.value[0].contactid, 'the primary key comes back unselected');
    const page2 = await axios.get(page1.data['@odata.nextLink'], opts({ headers: { Prefer: 'odata.maxpagesize=5' } }));
    assert.equal(page2.status, 200);
    assert.notEqual(page2.data.value[0].contactid, page1.data.value[0].contactid);
  });

  it('PATCH is an upsert unless If-Match: *; a change set rolls back on its first failure', async () => {
    const api = emu.connection().apiBaseUrl;
    const ghost = '11111111-2222-4333-8444-555555555555';
    const noUpsert = await axios.patch(
      `${api}/contacts(${ghost})`,
      { donotbulkemail: true },
      opts({ headers: { 'If-Match': '*' } }),
    );
    assert.equal(noUpsert.status, 404);
    assert.equal(emu.record('contact', ghost), undefined);
    const upsert = await axios.patch(`${api}/contacts(${ghost})`, { donotbulkemail: true }, opts());
    assert.equal(upsert.status, 204);
    assert.ok(emu.record('contact', ghost));

    const real = [...emu.records.values()].find((r) => r.entity === 'contact' && r.fields.donotbulkemail === false)!;
    const part = (cid: number, id: string): string =>
      `--cs\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: ${cid}\r\n\r\nPATCH ${api}/contacts(${id}) HTTP/1.1\r\nContent-Type: application/json\r\nIf-Match: *\r\n\r\n{"donotbulkemail":true}\r\n`;
    const body = `--b\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n${part(1, real.id)}${part(2, '99999999-2222-4333-8444-555555555555')}--cs--\r\n--b--\r\n`;
    const res = await axios.post(
      `${api}/$batch`,
      body,
      opts({ headers: { 'Content-Type': 'multipart/mixed; boundary=b' }, responseType: 'text' }),
    );
    assert.equal(res.status, 200);
    assert.match(res.data, /HTTP\/1\.1 404/);
    assert.equal(real.fields.donotbulkemail, false, 'the first PATCH of the failed change set was rolled back');
  });

  it('a $batch of more than 1,000 requests is refused whole; 429 carries Retry-After past the request limit', async () => {
    const api = emu.connection().apiBaseUrl;
    const id = [...emu.records.values()][0].id;
    const parts = Array.from(
      { length: 1001 },
      () =>
        `--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nGET ${api}/contacts(${id}) HTTP/1.1\r\n\r\n`,
    ).join('');
    const big = await axios.post(
      `${api}/$batch`,
      `${parts}--b--\r\n`,
      opts({ headers: { 'Content-Type': 'multipart/mixed; boundary=b' } }),
    );
    assert.equal(big.status, 400);
    emu.setKnobs({ requestLimit: 2, windowSeconds: 60 });
    const codes: number[] = [];
    let retryAfter = '';
    for (let i = 0; i < 4; i++) {
      const r = await axios.get(`${api}/WhoAmI`, opts());
      codes.push(r.status);
      if (r.status === 429) retryAfter = String(r.headers['retry-after']);
    }
    assert.ok(codes.includes(429), JSON.stringify(codes));
    assert.match(retryAfter, /^\d+$/);
    assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60);
    emu.setKnobs({ requestLimit: 6000, windowSeconds: 300 });
    assert.deepEqual(emu.setKnobs({ bogus: 1 }), ['unknown knob "bogus"']);
  });
});
