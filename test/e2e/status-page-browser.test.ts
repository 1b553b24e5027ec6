/**
 * The status page end to end in headless Chromium (Debian's `chromium` at /usr/bin/chromium, driven by
 * playwright-core): a store seeded by engine runs, the page served by fastify on 127.0.0.1, what it shows, requeue
 * refused without the token, then signing in and clicking requeue removes the row from the parked list.
 *
 * Chromium missing is a failure (CI installs it: .ci/run); `CC_OPTOUT_SKIP_BROWSER=1` skips this file.
 * Screenshots go to test-output/status-page/ (gitignored).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import Fastify, { FastifyInstance } from 'fastify';
import { chromium, BrowserContext, Page } from 'playwright-core';
import { registerStatusPage } from '../../src/service/page';
import { packageRoot } from '../../src/plugin';
import { HOSTILE_REASON, seedStatusStore } from '../fixtures/status-page';

const CHROMIUM = '/usr/bin/chromium';
const TOKEN = 'browser-test-token-9876543';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

describe('status page in a browser (headless Chromium)', function () {
  this.timeout(120_000);
  let dir: string;
  let app: FastifyInstance;
  let context: BrowserContext;
  let page: Page;
  let base: string;
  let seeded: Awaited<ReturnType<typeof seedStatusStore>>;
  const shots = path.join(packageRoot(), 'test-output', 'status-page');

  before(async function () {
    if (process.env.CC_OPTOUT_SKIP_BROWSER === '1') this.skip();
    assert.ok(
      fs.existsSync(CHROMIUM),
      `${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium), or set CC_OPTOUT_SKIP_BROWSER=1 to skip this test`,
    );
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cc-status-browser-'));
    fs.mkdirSync(shots, { recursive: true });
    seeded = await seedStatusStore({ tag: 'browser', storePath: path.join(dir, 'state.db') });
    app = Fastify();
    registerStatusPage(app, {
      store: seeded.store,
      targets: seeded.config.targets,
      token: TOKEN,
      now: () => seeded.clock.now(),
    });
    base = await app.listen({ host: '127.0.0.1', port: 0 });
    context = await chromium.launchPersistentContext(path.join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ARGS,
      viewport: { width: 1200, height: 900 },
    });
    page = context.pages()[0] ?? (await context.newPage());
  });

  after(async () => {
    await context?.close();
    await app?.close();
    seeded?.store.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const parkedEmails = async (target: string): Promise<string[]> =>
    page.locator(`section[data-target="${target}"] tr.parked-row td.email`).allTextContents();

  it('shows the targets, counts, parked rows and reasons (hostile text as text), runs and the lag chart', async () => {
    await page.goto(`${base}/status`);
    assert.equal(await page.title(), 'cc-optout status');
    assert.deepEqual(await page.locator('section.target h3').allTextContents(), ['crm-one', 'crm-two']);
    assert.equal(await page.locator('section[data-target="crm-one"] b.parked').textContent(), '3');
    assert.equal(await page.locator('section[data-target="crm-two"] b.queued').textContent(), '1');
    assert.equal(await page.locator('section[data-target="crm-two"] b.oldest').textContent(), '35 min');
    assert.deepEqual((await parkedEmails('crm-one')).sort(), ['evil+<b>x</b>@x.com', 'parked1@x.com', 'parked2@x.com']);
    const reason = page.locator('section[data-target="crm-one"] tr.parked-row[data-email="parked1@x.com"] td.reason');
    assert.equal(await reason.textContent(), 'rejected by CRM');
    // the hostile reason is shown verbatim as text; its script never ran and its markup made no elements
    assert.equal(
      await page.locator('section[data-target="crm-one"] tr.parked-row td.reason', { hasText: 'pwned2' }).textContent(),
      HOSTILE_REASON,
    );
    assert.equal(await page.locator('section.target img, section.target script, td.email b').count(), 0);
    assert.ok((await page.locator('#runs tr.run').count()) >= 4);
    assert.match(
      (await page.locator('#runs tr.run[data-run="4"]').textContent()) ?? '',
      /failed \(exit 1\).*refresh token was revoked/s,
    );
    assert.equal(await page.locator('#lag-chart').count(), 1);
    assert.equal(await page.locator('#lag-chart circle.lag-point').count(), 6);
    const box = await page.locator('#lag-chart').boundingBox();
    assert.ok(box && box.width > 300 && box.height > 100, 'the chart is drawn');
    assert.equal(await page.locator('form.requeue').count(), 0, 'no requeue button before signing in');
    await page.screenshot({ path: path.join(shots, '1-read-only.png'), fullPage: true });
  });

  it('refuses requeue without the token: 401, and the row stays parked', async () => {
    const r = await page.request.post(`${base}/status/requeue`, {
      form: { target: 'crm-one', email: 'parked1@x.com' },
    });
    assert.equal(r.status(), 401);
    const wrong = await page.request.post(`${base}/status/requeue`, {
      headers: { authorization: 'Bearer not-the-token-123' },
      data: { target: 'crm-one' },
    });
    assert.equal(wrong.status(), 401);
    await page.reload();
    assert.ok((await parkedEmails('crm-one')).includes('parked1@x.com'));
    assert.equal(seeded.store.targetStatus(['crm-one'], seeded.clock.now())[0]!.parked, 3);
  });

  it('a wrong token does not sign in; the right one shows requeue buttons, and a click requeues the row', async () => {
    await page.fill('#sign-in input[name="token"]', 'wrong-token-000000');
    await page.click('#sign-in button');
    assert.match((await page.locator('p.warn').textContent()) ?? '', /wrong token/);
    assert.equal(await page.locator('form.requeue').count(), 0);
    await page.goto(`${base}/status`);
    await page.fill('#sign-in input[name="token"]', TOKEN);
    await page.click('#sign-in button');
    await page.waitForSelector('form.requeue');
    const cookies = await context.cookies(`${base}/status`);
    const session = cookies.find((c) => c.name === 'cc_optout_status');
    assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies));
    assert.ok(!session.value.includes(TOKEN));
    await page.screenshot({ path: path.join(shots, '2-signed-in.png'), fullPage: true });
    await page.locator('tr.parked-row[data-email="parked1@x.com"] button', { hasText: 'Requeue' }).click();
    await page.waitForSelector('p.flash');
    assert.match((await page.locator('p.flash').textContent()) ?? '', /re-queued 1 parked record/);
    assert.deepEqual((await parkedEmails('crm-one')).sort(), ['evil+<b>x</b>@x.com', 'parked2@x.com']);
    assert.equal(await page.locator('section[data-target="crm-one"] b.parked').textContent(), '2');
    assert.equal(await page.locator('section[data-target="crm-one"] b.queued').textContent(), '1');
    const ev = seeded.store.events(null, ['requeued']);
    assert.deepEqual(
      ev.map((e) => e.email),
      ['parked1@x.com'],
    );
    await page.screenshot({ path: path.join(shots, '3-after-requeue.png'), fullPage: true });
  });
});
