/**
 * `cc-optout run` fleet options (src/service/fleet-cli.ts): each bad value names its option; the rule that picks
 * fleet mode; the config file's own account as a document.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FLEET_DEFAULTS, checkFleetOptions, fileAccountDocument, fleetModeWanted } from '../../src/service/fleet-cli';
import { AccountRecord } from '../../src/store/backend';

const rec = (id: string): AccountRecord => ({
  id,
  config: {},
  priority: 1,
  createdAt: '2026-12-01T00:00:00Z',
  updatedAt: '2026-12-01T00:00:00Z',
});

describe('run: fleet options (src/service/fleet-cli.ts)', () => {
  it('defaults, and values read from --workers, --concurrency, --lease-ttl', () => {
    assert.deepEqual(checkFleetOptions({}), {
      settings: {
        workers: FLEET_DEFAULTS.workers,
        concurrency: FLEET_DEFAULTS.concurrency,
        ttlMs: FLEET_DEFAULTS.leaseTtlSeconds * 1000,
      },
      problems: [],
    });
    assert.deepEqual(checkFleetOptions({ workers: '4', concurrency: '3', leaseTtl: '2s' }).settings, {
      workers: 4,
      concurrency: 3,
      ttlMs: 2000,
    });
  });

  it('a bad value is a problem naming its option', () => {
    const { problems } = checkFleetOptions({ workers: '0', concurrency: 'x', leaseTtl: 'soon' });
    assert.equal(problems.length, 3);
    assert.match(problems[0]!, /^--workers: got "0", expected a whole number from 1 to 64/);
    assert.match(problems[1]!, /^--concurrency: got "x"/);
    assert.match(problems[2]!, /^--lease-ttl: expected a duration/);
    assert.match(checkFleetOptions({ workers: '65' }).problems[0]!, /--workers/);
  });

  it('fleet mode: --fleet, --workers, or an account other than default in the registry', () => {
    assert.equal(fleetModeWanted({}, []), false);
    assert.equal(fleetModeWanted({}, [rec('default')]), false, 'a single-account store stays single');
    assert.equal(fleetModeWanted({}, [rec('default'), rec('acme')]), true);
    assert.equal(fleetModeWanted({ fleet: true }, []), true);
    assert.equal(fleetModeWanted({ workers: '2' }, []), true);
  });

  it("the config file's source, targets and delivery become the default account's document, unresolved", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-opts-'));
    try {
      const file = path.join(dir, 'c.json');
      fs.writeFileSync(
        file,
        `{ // comment
          "store": { "path": "./s.db" }, "service": { "every": "1m" },
          "source": { "type": "constant-contact", "clientId": "\${CC_ID}" },
          "targets": [{ "name": "hubspot", "connector": "hubspot", "config": {} }],
          "delivery": { "batchSize": 10 } }`,
      );
      assert.deepEqual(fileAccountDocument(file), {
        source: { type: 'constant-contact', clientId: '${CC_ID}' },
        targets: [{ name: 'hubspot', connector: 'hubspot', config: {} }],
        delivery: { batchSize: 10 },
      });
      assert.equal(fileAccountDocument(path.join(dir, 'missing.json')), null);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
