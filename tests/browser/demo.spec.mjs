// `make demo` as an operator meets it: the signed-in link the demo prints
// opens the console, the chart draws (uPlot served by the engine), and an
// acknowledgement made on the page is accepted (tests/demo.test.sh then finds
// it in the SQLite store). Environment: CB_URL (the console), CB_TOKEN (the
// operator token the demo printed), CB_BROKER_PORT, CB_OUT (screenshot).
// Prints "acked ID" for the test to look up.
import { env, checker, run } from './support.mjs';

const { url, token } = env('demo.spec');
const out = process.env.CB_OUT || 'tests/out/demo.png';
const c = checker();
const check = c.check;

await run(async browser => {
  const context = await browser.newContext({ viewport: { width: 1920, height: 1080 }, locale: 'zh-CN' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  await page.goto(url + '#token=' + token, { waitUntil: 'load', timeout: 15000 });
  await page.waitForSelector('#h-live.good', { timeout: 15000 }).catch(() => {});
  check(await page.evaluate(() => sessionStorage.getItem('citybrain.token')) === token &&
    await page.evaluate(() => location.hash) === '', 'the printed link signs the tab in and leaves the address bar');
  check(await page.locator('#operator-name:not([hidden])').count() === 1, 'the console shows it is signed in');

  await page.waitForSelector('#chart .uplot canvas', { timeout: 20000 }).catch(() => {});
  const box = await page.locator('#chart .uplot canvas').first().boundingBox().catch(() => null);
  check(box && box.width > 200 && box.height > 100, 'the chart draws (uPlot from the engine, no network)');
  check(!(await page.locator('#chart').textContent()).includes('make dashboard'), 'no "chart library missing"');

  const button = page.locator('#alerts article.alert:not([data-state="acknowledged"]) button.ack').first();
  await button.waitFor({ timeout: 60000 }).catch(() => {});
  const card = button.locator('xpath=ancestor::article');
  const id = await card.getAttribute('data-alert-id').catch(() => null);
  check(!!id, `a firing alert to acknowledge (${id})`);
  if (id) {
    await button.click();
    // signed in by the link, the console still needs who acknowledges: the
    // sign-in asks for the name (the token is already there)
    await page.locator('#signin[open]').waitFor({ timeout: 5000 }).catch(() => {});
    check(await page.locator('#signin[open]').count() === 1 &&
      await page.locator('#signin-token').inputValue() === token,
      "the console asks who acknowledges before the first acknowledgement");
    await page.fill('#signin-name', '值班员 Li Wei');
    await page.click('#signin-submit');
    await page.locator('#ask[open]').waitFor({ timeout: 5000 }).catch(() => {});
    check(await page.locator('#ask-title').textContent() === '确认告警：' + await card.locator('.name').first().textContent(),
      'the acknowledgement asks a note (确认告警：<title>)');
    await page.click('#ask-submit'); // the note is optional
    await page.locator(`[data-alert-id="${id}"][data-state="acknowledged"]`).first()
      .waitFor({ timeout: 10000 }).catch(() => {});
    check(await page.locator(`[data-alert-id="${id}"][data-state="acknowledged"]`).count() >= 1,
      'the console shows it acknowledged');
    console.log('acked ' + id);
  }
  check(errors.length === 0, 'no script errors' + (errors.length ? ': ' + errors.join(' | ') : ''));
  await page.screenshot({ path: out });
  await context.close();
}, c);
