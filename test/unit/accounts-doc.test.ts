import { strict as assert } from 'assert';
import * as path from 'path';
import {
  accountDocumentProblems,
  accountIdProblem,
  decodeAccount,
  documentTargets,
  literalSecretFields,
  storedDocument,
  unknownAccountMessage,
} from '../../src/accounts';
import { ConfigError } from '../../src/config';
import { createRegistry } from '../../src/registry';

const doc = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  source: { type: 'constant-contact', clientId: '${ACME_CC_ID}', clientSecret: '${ACME_CC_SECRET}' },
  targets: [
    {
      name: 'hs',
      connector: 'hubspot',
      config: {
        baseUrl: 'http://127.0.0.1:1',
        auth: { type: 'service-key', serviceKey: '${ACME_HS_KEY}' },
        suppression: { type: 'unsubscribe-all' },
      },
    },
  ],
  ...over,
});

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

describe('account documents', () => {
  it('decode with the config decoder: references resolved from the environment, the document left as written', () => {
    const d = doc();
    const c = decodeAccount(
      d,
      { ACME_CC_ID: 'id-1', ACME_CC_SECRET: 's3cr3t-value', ACME_HS_KEY: 'k' },
      createRegistry(),
    );
    assert.equal(c.source.clientId, 'id-1');
    assert.deepEqual(
      c.targets.map((t) => t.name),
      ['hs'],
    );
    assert.equal((d.source as { clientId: string }).clientId, '${ACME_CC_ID}');
    // read-only use: unset references are not errors, the structure still is
    assert.equal(decodeAccount(d, {}, createRegistry(), { requireEnv: false }).targets.length, 1);
  });

  it('names the field of every problem, inside the document', () => {
    const bad = doc({ source: { type: 'constant-contact', clientId: '', apiBaseUrl: 'ftp://x' } });
    const p = problems(() => decodeAccount(bad, {}, createRegistry(), { requireEnv: false }));
    assert.ok(
      p.some((l) => l.startsWith('source.clientId: ')),
      p.join('\n'),
    );
    assert.ok(
      p.some((l) => l.startsWith('source.apiBaseUrl: ')),
      p.join('\n'),
    );
    const target = doc();
    (target.targets as { config: Record<string, unknown> }[])[0]!.config.suppression = { type: 'nope' };
    assert.ok(
      problems(() => decodeAccount(target, {}, createRegistry(), { requireEnv: false })).some((l) =>
        l.startsWith('targets[0].config.suppression'),
      ),
    );
    // a missing variable is an error when the account runs
    assert.ok(
      problems(() => decodeAccount(doc(), {}, createRegistry())).some((l) =>
        /source\.clientId: environment variable ACME_CC_ID is not set/.test(l),
      ),
    );
  });

  it("refuses the config file's own sections and unknown keys, naming them; comments are fine", () => {
    assert.deepEqual(accountDocumentProblems(doc({ '//': 'a comment', $comment: 'x' })), []);
    const p = accountDocumentProblems(doc({ store: { path: 'x' }, plugins: [], service: {}, sauce: 1 }));
    assert.equal(p.length, 4, p.join('\n'));
    assert.match(p[0]!, /^store: not allowed in an account .*--store/);
    assert.match(p[1]!, /^plugins: not allowed/);
    assert.match(p[2]!, /^service: not allowed/);
    assert.match(p[3]!, /^sauce: unknown key/);
    assert.match(accountDocumentProblems([])[0]!, /expected a JSON object/);
    assert.ok(
      problems(() => decodeAccount(doc({ store: {} }), {}, createRegistry())).some((l) => l.startsWith('store:')),
    );
  });

  it('finds inline secrets by field, never a ${ENV} reference or a path', () => {
    const d = doc();
    assert.deepEqual(literalSecretFields(d), []);
    (d.source as Record<string, unknown>).clientSecret = 'inline-secret';
    (d.targets as { config: { auth: Record<string, unknown> } }[])[0]!.config.auth = {
      type: 'private-app',
      accessToken: 'pat-123',
      privateKeyPath: './k.pem',
    };
    assert.deepEqual(literalSecretFields(d), ['source.clientSecret', 'targets[0].config.auth.accessToken']);
  });

  it("stores relative file paths absolute from the account file's folder; references and other strings as written", () => {
    const stored = storedDocument(
      { targets: [{ config: { auth: { privateKeyPath: './k.pem', keyFromEnvPath: '${KEY}', name: './x' } } }] },
      '/etc/acme',
    ) as { targets: { config: { auth: Record<string, string> } }[] };
    const auth = stored.targets[0]!.config.auth;
    assert.equal(auth.privateKeyPath, path.resolve('/etc/acme', 'k.pem'));
    assert.equal(auth.keyFromEnvPath, '${KEY}');
    assert.equal(auth.name, './x');
  });

  it('ids: ACCOUNT_ID; the unknown-account message lists the known ids', () => {
    assert.equal(accountIdProblem('acme-1'), null);
    assert.match(accountIdProblem('Acme')!, /got "Acme", expected 1-64 lower-case/);
    assert.match(accountIdProblem('-x')!, /expected/);
    assert.deepEqual(documentTargets(doc()), ['hs']);
    const m = unknownAccountMessage(
      'nope',
      [{ id: 'acme', config: {}, priority: 1, createdAt: '', updatedAt: '' }],
      '--account',
    );
    assert.match(m, /^--account nope: no such account; known accounts: default, acme/);
  });
});
