import { strict as assert } from 'assert';
import { openBackend, withoutPassword } from '../../src/store/open';
import { maskUrl, pgUrlProblem } from '../../src/store/pg/url';

describe('PostgreSQL URLs in messages', () => {
  it('a one-letter password is masked in the URL without garbling the rest of the message', () => {
    const url = 'postgres://cc:e@db.internal:5432/cc';
    const msg = withoutPassword(`store.url: ${url}: cannot connect: the server refused the password for cc:e@db`, url);
    assert.equal(
      msg,
      'store.url: postgres://cc:***@db.internal:5432/cc: cannot connect: the server refused the password for cc:***@db',
    );
  });

  it('a long password is masked wherever it appears', () => {
    const url = 'postgres://cc:s3cretpass@db/cc';
    assert.equal(withoutPassword('auth failed (s3cretpass)', url), 'auth failed (***)');
  });

  it("a password with an unencoded '/' is masked whole and refused before any connection (exit 2 naming store.url)", async () => {
    const url = 'postgres://cc:pa/ss#w?rd@db.internal/cc';
    assert.equal(maskUrl(url), 'postgres://cc:***@db.internal/cc');
    assert.match(pgUrlProblem(url) ?? '', /percent-encode/);
    await assert.rejects(openBackend(url), (err: Error & { field?: string }) => {
      assert.equal(err.field, 'store.url');
      assert.doesNotMatch(err.message, /pa\/ss|w\?rd/);
      assert.match(err.message, /percent-encode/);
      return true;
    });
  });

  it('a well-formed URL has no shape problem', () => {
    assert.equal(pgUrlProblem('postgres://cc:p%2Fss@db:5432/cc'), null);
  });
});
