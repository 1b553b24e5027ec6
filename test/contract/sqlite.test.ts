/**
 * The store contract (./store-contract) against the in-process SQLite store: on a file (with a second handle on
 * the same file for the durability and lease-takeover tests) and on ':memory:'.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
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
