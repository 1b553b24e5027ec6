import assert from 'assert';
import { createLogger, memoryLogger, redact, registerSecret, clearSecrets } from '../../src/log';

describe('logging and redaction', () => {
  afterEach(() => clearSecrets());

  it('masks registered secrets, bearer/basic credentials and token-looking fields in every line', () => {
    registerSecret('rotating-refresh-token-42');
    const log = memoryLogger();
    log.info('refreshed', {
      token: 'rotating-refresh-token-42',
      header: 'Bearer abcdefghijklmnop',
      body: 'grant_type=refresh_token&refresh_token=zzzzzzzz',
    });
    log.error('failed with Basic Y2xpZW50OnNlY3JldA==', { err: new Error('access_token: "qwertyuiop" rejected') });
    const text = log.lines.join('\n');
    for (const s of [
      'rotating-refresh-token-42',
      'abcdefghijklmnop',
      'zzzzzzzz',
      'Y2xpZW50OnNlY3JldA==',
      'qwertyuiop',
    ]) {
      assert.ok(!text.includes(s), `${s} leaked: ${text}`);
    }
    assert.match(text, /\[redacted\]/);
  });

  it('writes JSON lines with time, level and message; respects the level', () => {
    const lines: string[] = [];
    const log = createLogger({
      format: 'json',
      level: 'info',
      write: (l) => lines.push(l),
      clock: () => new Date('2026-01-01T00:00:00Z'),
    });
    log.debug('hidden');
    log.child({ target: 'hs' }).warn('slow', { ms: 5 });
    assert.strictEqual(lines.length, 1);
    assert.deepStrictEqual(JSON.parse(lines[0]!), {
      time: '2026-01-01T00:00:00.000Z',
      level: 'warn',
      msg: 'slow',
      target: 'hs',
      ms: 5,
    });
  });

  it('text format keeps fields readable and redacted', () => {
    const lines: string[] = [];
    registerSecret('s3cr3t-value');
    createLogger({ format: 'text', level: 'debug', write: (l) => lines.push(l) }).info('hello', {
      a: 1,
      b: 's3cr3t-value',
    });
    assert.strictEqual(lines[0], 'INFO  hello a=1 b=[redacted]');
    assert.strictEqual(redact('nothing secret'), 'nothing secret');
  });
});
