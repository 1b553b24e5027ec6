/**
 * The store contract (./store-contract) against the in-process SQLite store: on a file (with a second handle on
 * the same file for the durability and lease-takeover tests) and on ':memory:'; then the same through the SQLite
 * StoreBackend (`openBackend(path)`: the account registry, an added account in its own file).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DEFAULT_ACCOUNT } from '../../src/store/backend';
import { openBackend } from '../../src/store/open';
import { SqliteStateStore } from '../../src/store/sqlite';
import { storeContract } from './store-contract';

storeContract('SQLite (file)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-contract-'));
  const file = path.join(dir, 'state.db');
  const opened: SqliteStateStore[] = [];
  const open = (): SqliteStateStore => {
    const s = new SqliteStateStore(file);
    opened.push(s);
    return s;
  };
  return {
    store: open(),
    reopen: async () => open(),
    cleanup: async () => {
      for (const s of opened) if (s.db.open) s.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

storeContract('SQLite (:memory:)', async () => {
  const store = new SqliteStateStore(':memory:');
  return {
    store,
    cleanup: async () => {
      if (store.db.open) store.close();
    },
  };
});

storeContract('SQLite backend (file, with the account registry)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-contract-b-'));
  const file = path.join(dir, 'state.db');
  const backend = await openBackend(file);
  const others: SqliteStateStore[] = [];
  return {
    backend,
    store: await backend.account(DEFAULT_ACCOUNT),
    // a second process on the same file (the backend hands out one store per account)
    reopen: async () => {
      const s = new SqliteStateStore(file);
      others.push(s);
      return s;
    },
    cleanup: async () => {
      for (const s of others) if (s.db.open) s.close();
      await backend.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
});

storeContract('SQLite backend (:memory:)', async () => {
  const backend = await openBackend(':memory:');
  return { backend, store: await backend.account(DEFAULT_ACCOUNT), cleanup: () => backend.close() };
});
