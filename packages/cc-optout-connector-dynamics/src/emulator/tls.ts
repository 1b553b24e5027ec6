/**
 * A throw-away self-signed certificate for the emulator's Microsoft Entra endpoint (MSAL refuses authorities
 * that are not https), made at start-up with the `selfsigned` package and written to a private temp folder so
 * a config can name it as `auth.caFile`.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export interface TlsMaterial {
  key: string;
  cert: string;
  /** The certificate as a PEM file (mode 0600), to trust it as a CA. */
  caFile: string;
  dir: string;
}

export async function makeLoopbackCert(host: string): Promise<TlsMaterial> {
  const selfsigned = require('selfsigned') as {
    generate(attrs: unknown, opts: unknown): Promise<{ private: string; cert: string }>;
  };
  const now = Date.now();
  const pems = await selfsigned.generate([{ name: 'commonName', value: host }], {
    keyType: 'ec',
    curve: 'P-256',
    notBeforeDate: new Date(now - 60_000),
    notAfterDate: new Date(now + 7 * 24 * 3600_000),
    extensions: [
      { name: 'basicConstraints', cA: true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 7, ip: '127.0.0.1' },
          { type: 2, value: 'localhost' },
        ],
      },
    ],
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dataverse-emulator-'));
  const caFile = path.join(dir, 'entra-ca.pem');
  fs.writeFileSync(caFile, pems.cert, { mode: 0o600 });
  return { key: pems.private, cert: pems.cert, caFile, dir };
}
