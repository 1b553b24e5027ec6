/**
 * The store contract (./store-contract) against the PostgreSQL StoreBackend (`openPgBackend` in
 * src/store/postgres.ts), each test on a new empty database of the private test cluster (test/support/postgres).
 * A missing PostgreSQL server fails them; CC_OPTOUT_SKIP_POSTGRES=1 skips them, as everywhere, and says so.
 */
import type { StoreBackend } from '../../src/store/backend';
import { DEFAULT_ACCOUNT } from '../../src/store/backend';
import { openPgBackend } from '../../src/store/postgres';
import { freshDatabase, pgSkipped } from '../support/postgres';
import { storeContract } from './store-contract';

if (pgSkipped()) {
  console.log('store contract: PostgreSQL skipped: CC_OPTOUT_SKIP_POSTGRES=1');
  describe.skip('store contract: PostgreSQL (skipped: CC_OPTOUT_SKIP_POSTGRES=1)', () => {
    it('runs the store contract against PostgreSQL', () => undefined);
  });
} else {
  const open = openPgBackend;
  storeContract('PostgreSQL', async () => {
    const db = await freshDatabase('contract');
    let backend: StoreBackend;
    try {
      backend = await open(db.url);
    } catch (err) {
      await db.drop();
      throw err;
    }
    const store = await backend.account(DEFAULT_ACCOUNT);
    return {
      backend,
      store,
      reopen: () => backend.account(DEFAULT_ACCOUNT),
      cleanup: async () => {
        try {
          await store.close();
          await backend.close();
        } finally {
          await db.drop();
        }
      },
    };
  });
}
