import { strict as assert } from 'assert';
import { Pool } from 'pg';
import { maskUrl, migrate, openPgPool } from '../../src/store/pg/pool';
import { freshDatabase, pgSkipped } from '../support/postgres';

describe('PostgreSQL plumbing (a real server)', function () {
  this.timeout(60_000);
  let db: { url: string; drop: () => Promise<void> };
  let pool: Pool;
  before(async function () {
    if (pgSkipped()) this.skip();
    db = await freshDatabase('migrate');
    pool = openPgPool(db.url);
  });
  after(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('applies each set once, also when two instances migrate at the same time', async () => {
    const set = ['CREATE TABLE m_one (id int)', 'ALTER TABLE m_one ADD COLUMN v text'];
    const other = openPgPool(db.url);
    try {
      const [a, b] = await Promise.all([migrate(pool, 'store', set), migrate(other, 'store', set)]);
      assert.equal(a, 2);
      assert.equal(b, 2);
    } finally {
      await other.end();
    }
    const cols = await pool.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'm_one'");
    assert.deepEqual(cols.rows.map((r) => r.column_name).sort(), ['id', 'v']);
    assert.equal(await migrate(pool, 'store', [...set, 'CREATE TABLE m_two (id int)']), 3);
    await assert.rejects(migrate(pool, 'store', set), /newer than this cc-optout knows/);
  });

  it('never shows a URL password', () => {
    assert.equal(maskUrl('postgres://u:s3cret@h:5432/db'), 'postgres://u:***@h:5432/db');
    assert.doesNotMatch(maskUrl('postgres://u:s3cret@h/db'), /s3cret/);
    assert.equal(
      maskUrl('postgres://u@h/db?password=s3cret&sslmode=require'),
      'postgres://u@h/db?password=***&sslmode=require',
    );
  });
});
