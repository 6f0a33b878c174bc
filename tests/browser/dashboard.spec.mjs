// The dashboard in a real browser against a real engine.
//
// Started by tests/browser.test.sh, which runs mosquitto and `citybrain run`
// and passes: CB_URL (the dashboard), CB_BROKER_PORT, CB_TOKEN, CB_OUT (the
// screenshot path). Steps:
//   1. the page loads, with no request leaving loopback;
//   2. one MQTT message (mosquitto_pub) makes an alert that appears on the
//      page within a second, without a reload (Server-Sent Events);
//   3. acknowledging it on the page (the sign-in dialog takes the token and
//      the operator's name once, then the acknowledgement asks a note)
//      changes its state in the API, by that name, with that note;
//   4. a screenshot is saved.
// Exits 0 when every step passed, 1 otherwise, with one line per step.
import { env, checker, publisher, run } from './support.mjs';

const { url, brokerPort, token } = env('dashboard.spec');
const out = process.env.CB_OUT || 'tests/out/dashboard.png';
const c = checker();
const check = c.check;
const publish = publisher(brokerPort);

async function api(path, init) {
  const r = await fetch(new URL(path, url), init);
  return { status: r.status, body: await r.json().catch(() => null) };
}

await run(async browser => {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  const page = await context.newPage();
  const offsite = [];
  page.on('request', r => {
    const u = new URL(r.url());
    if (!['127.0.0.1', 'localhost'].includes(u.hostname) && u.protocol !== 'data:') offsite.push(r.url());
  });
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });

  // 1. the page loads and the live stream opens
  const resp = await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  check(resp && resp.status() === 200, 'the page loads (200)');
  await page.waitForSelector('#h-live.good', { timeout: 10000 }).catch(() => {});
  check(await page.locator('#h-live.good').count() === 1, 'the live event stream is open');
  check(await page.evaluate(() => typeof window.uPlot === 'function'), 'the chart library is served locally');

  // 2. one message makes an alert, shown within a second
  const t0 = Date.now();
  publish('city/d07/river/s12', JSON.stringify({ level: 9.5 }));
  const card = page.locator('[data-alert-id="flood_now/district=d07"]');
  let shown = true;
  await card.waitFor({ state: 'visible', timeout: 1000 }).catch(() => { shown = false; });
  const latency = Date.now() - t0;
  check(shown, `the alert appears on the page within 1 s (${latency} ms)`);
  if (!shown) // let a slow (sanitizer) build finish, so the rest can still be checked
    await card.waitFor({ state: 'visible', timeout: 10000 }).catch(() => {});

  // 3. acknowledging on the page changes the state in the API
  const before = await api('/api/alerts?rule=flood_now');
  const a0 = before.body && before.body.alerts && before.body.alerts[0];
  check(a0 && a0.acknowledged === false, 'the API shows the alert unacknowledged');
  await card.locator('button.ack').click({ timeout: 5000 }).catch(() => {});
  const signin = page.locator('#signin[open]');
  await signin.waitFor({ timeout: 5000 }).catch(() => {});
  check(await signin.count() === 1, 'acknowledging before signing in opens the sign-in');
  await page.fill('#signin-token', token).catch(() => {});
  await page.fill('#signin-name', 'Li Wei').catch(() => {});
  await page.click('#signin-submit').catch(() => {});
  await page.locator('#ask[open]').waitFor({ timeout: 5000 }).catch(() => {});
  check(await page.locator('#ask[open]').count() === 1, 'then the acknowledgement asks a note');
  await page.fill('#ask-text', 'crew 3 dispatched').catch(() => {});
  await page.click('#ask-submit').catch(() => {});
  await page.locator('[data-alert-id="flood_now/district=d07"][data-state="acknowledged"]')
    .waitFor({ timeout: 5000 }).catch(() => {});
  const after = await api('/api/alerts?rule=flood_now');
  const a1 = after.body && after.body.alerts && after.body.alerts[0];
  check(a1 && a1.acknowledged === true, 'acknowledged on the page → acknowledged in the API');
  check(a1 && a1.acked_by === 'Li Wei' && a1.ack_note === 'crew 3 dispatched', 'by the name given at sign-in, with the note');
  check((await page.locator('[data-alert-id="flood_now/district=d07"] .acked-by').first().textContent().catch(() => ''))
    .includes('Li Wei: crew 3 dispatched'), 'the card shows who acknowledged it and the note');
  check(await page.evaluate(() => sessionStorage.getItem('citybrain.token')) === token &&
    await page.evaluate(() => localStorage.getItem('citybrain.token')) === null,
    'the token is kept in this tab only (sessionStorage)');

  // the map and the sensors reflect the message
  await page.waitForSelector('#map path[data-district="d07"].g-red', { timeout: 20000 }).catch(() => {});
  check(await page.locator('#map path[data-district="d07"].g-red').count() === 1, 'district d07 is red on the map');
  await page.waitForSelector('#sensors tbody tr[data-topic="city/d07/river/s12"]', { timeout: 20000 }).catch(() => {});
  check(await page.locator('#sensors tbody tr[data-topic="city/d07/river/s12"]').count() === 1,
    'the sensor is listed');
  await page.waitForSelector('#chart .uplot', { timeout: 10000 }).catch(() => {});
  check(await page.locator('#chart .uplot').count() === 1, 'the series chart is drawn');

  check(offsite.length === 0, 'nothing is requested from outside loopback' +
    (offsite.length ? ': ' + offsite.join(', ') : ''));
  check(errors.length === 0, 'no script errors' + (errors.length ? ': ' + errors.join(' | ') : ''));

  // 4. screenshot
  await page.waitForTimeout(300); // let the flash animation settle for the picture
  await page.screenshot({ path: out, fullPage: true });
  console.log(`screenshot ${out}`);
  await context.close();
}, c);
