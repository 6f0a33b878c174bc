// The dashboard in a real browser against a real engine.
//
// Started by tests/browser.test.sh, which runs mosquitto and `citybrain run`
// and passes: CB_URL (the dashboard), CB_BROKER_PORT, CB_TOKEN, CB_OUT (the
// screenshot path). Steps:
//   1. the page loads, with no request leaving loopback;
//   2. one MQTT message (mosquitto_pub) makes an alert that appears on the
//      page within a second, without a reload (Server-Sent Events);
//   3. acknowledging it on the page (token and operator's name typed once
//      into the prompts) changes its state in the API, by that name;
//   4. a screenshot is saved.
// Exits 0 when every step passed, 1 otherwise, with one line per step.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';

const url = process.env.CB_URL;
const brokerPort = process.env.CB_BROKER_PORT;
const token = process.env.CB_TOKEN;
const out = process.env.CB_OUT || 'tests/out/dashboard.png';
if (!url || !brokerPort || !token) {
  console.error('dashboard.spec: CB_URL, CB_BROKER_PORT and CB_TOKEN are required');
  process.exit(2);
}

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

async function api(path, init) {
  const r = await fetch(new URL(path, url), init);
  return { status: r.status, body: await r.json().catch(() => null) };
}

function publish(topic, payload) {
  execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(brokerPort), '-q', '1',
    '-t', topic, '-m', payload]);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  // playwright makes (and removes) its own temporary profile
  timeout: 30000,
});
try {
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
  // The acknowledge button asks for the token once, and for the operator's
  // name once (the API records who acknowledges).
  let prompts = 0;
  const operator = 'duty officer';
  page.on('dialog', d => { prompts++; d.accept(/token/i.test(d.message()) ? token : operator); });

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
  await page.locator('[data-alert-id="flood_now/district=d07"][data-state="acknowledged"]')
    .waitFor({ timeout: 5000 }).catch(() => {});
  const after = await api('/api/alerts?rule=flood_now');
  const a1 = after.body && after.body.alerts && after.body.alerts[0];
  check(a1 && a1.acknowledged === true, 'acknowledged on the page → acknowledged in the API');
  check(a1 && a1.acked_by === operator, 'the API records who acknowledged: the name given');
  check(prompts === 2, 'the token and the name were asked once each');
  check(await page.evaluate(() => localStorage.getItem('citybrain.operator')) === operator,
    "the operator's name is kept in localStorage");
  check(await page.evaluate(() => localStorage.getItem('citybrain.token')) === token,
    'the token is kept in localStorage');

  // district overview and sensors reflect the message
  await page.waitForSelector('[data-district="d07"]', { timeout: 20000 }).catch(() => {});
  check(await page.locator('[data-district="d07"]').count() === 1, 'district d07 is in the overview');
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
} catch (e) {
  console.log('FAIL ' + (e && e.stack || e));
  failures++;
} finally {
  await browser.close();
}
process.exit(failures ? 1 : 0);
