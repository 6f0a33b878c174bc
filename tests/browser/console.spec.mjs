// The operators' console in a real browser against a real engine and broker,
// in Chinese and in English (docs/console.md).
//
// Started by tests/browser.test.sh (after dashboard.spec.mjs) with: CB_URL,
// CB_BROKER_PORT, CB_TOKEN, CB_OUT_DIR (screenshots), and for the restart:
// CB_PID (the running engine), CB_ENGINE_CMD (a file: its command, one
// argument a line), CB_PID_FILE (where the pid of the engine this spec starts
// goes), CB_ENGINE_LOG. The engine runs with http.time_zone=Asia/Shanghai
// and the rules flood_now (critical), gas_now (major, per sensor) and
// noise_now (info, per sensor), each with Chinese and English texts.
// Steps, each checked in both languages where it shows text:
//   1. language: the browser's language chooses, ?lang= overrides, the switch
//      is remembered; <html lang>; every catalogue key in both catalogues;
//   2. the clock: 24-hour, in the configured time zone;
//   3. grades and rule texts in the page's language; CAP-style grade names;
//   4. the map: districts coloured by the worst grade, sensors placed by the
//      map file's points and by their own lat/lon; a district opens its
//      alerts, sensors and chart;
//   5. info alerts grouped and collapsed, the live value beside a message;
//   6. wall (1920x1080) and laptop (1366x768) screens, screenshots of each;
//   7. the engine restarts: a banner while it is away, then by itself the
//      live stream again and the alerts, still in Chinese.
// Exits 0 when every step passed, 1 otherwise, one line per check.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { env, checker, publisher, run, sleep, until, text } from './support.mjs';

const { url, brokerPort, token } = env('console.spec');
const outDir = process.env.CB_OUT_DIR || 'tests/out';
const c = checker();
const check = c.check;
const publish = publisher(brokerPort);

async function api(path) {
  const r = await fetch(new URL(path, url));
  return r.json();
}

async function open(browser, locale, viewport, query) {
  const context = await browser.newContext({ viewport, locale });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  page.on('console', m => { if (m.type() === 'error' && !/Failed to load resource|ERR_CONNECTION_REFUSED|EventSource/.test(m.text())) errors.push(m.text()); });
  await page.goto(url + (query || ''), { waitUntil: 'load', timeout: 15000 });
  await page.waitForSelector('#h-live.good', { timeout: 15000 }).catch(() => {});
  return { context, page, errors };
}

/* Nothing sticks out sideways, and the alerts and the map begin on the
 * first screen. */
async function fits(page) {
  return page.evaluate(() => {
    const vw = window.innerWidth, vh = window.innerHeight;
    const inView = sel => { const r = document.querySelector(sel).getBoundingClientRect(); return r.top < vh && r.left < vw && r.width > 200; };
    return document.documentElement.scrollWidth <= vw + 1 && inView('.panel.alerts') && inView('.panel.map');
  });
}

await run(async browser => {
  // ---- the telemetry: alerts of three grades, a sensor with its own position
  publish('city/d07/river/s02', { level: 9.6 });                 // critical, red
  publish('city/d05/gas/s01', { ch4: 12 });                      // major, orange
  for (const s of ['s01', 's02', 's03']) publish('city/d02/noise/' + s, { db: 75 }); // info, blue
  publish('city/d09/river/s77', { level: 1.2, lat: 30.53, lon: 114.215 }); // placed by lat/lon
  await until(async () => (await api('/api/alerts')).alerts.filter(a => a.state !== 'pending').length >= 5, 20000);
  const all = (await api('/api/alerts')).alerts;
  const flood = all.find(a => a.rule === 'flood_now');
  check(flood && flood.titles && flood.titles['zh-CN'] === '河道水位超过 9 米' &&
    flood.messages && flood.messages['zh-CN'] === 'd07：河道水位超过 9 米' &&
    flood.messages['en-US'] === 'd07: river level above 9 m',
    '/api/alerts carries titles and messages in zh-CN and en-US');

  // ---- 1. Chinese: chosen by the browser's language
  const cat = {};
  for (const l of ['zh-CN', 'en-US']) cat[l] = await (await fetch(new URL('i18n/' + l + '.json', url))).json();
  const missing = Object.keys(cat['zh-CN']).filter(k => !(k in cat['en-US']))
    .concat(Object.keys(cat['en-US']).filter(k => !(k in cat['zh-CN'])));
  check(missing.length === 0, 'both catalogues have the same keys' + (missing.length ? ': ' + missing.join(', ') : ''));

  const zh = await open(browser, 'zh-CN', { width: 1920, height: 1080 });
  let p = zh.page;
  check(await p.evaluate(() => document.documentElement.lang) === 'zh-CN', 'zh: a Chinese browser gets <html lang="zh-CN">');
  check(await text(p, '#alerts-title') === '告警' && await text(p, '#map-title') === '城市地图', 'zh: the panels are titled in Chinese');
  // no catalogue key shows as itself
  const raw = await p.evaluate(() => [...document.querySelectorAll('[data-i18n]')].filter(e => e.textContent === e.dataset.i18n).map(e => e.dataset.i18n));
  check(raw.length === 0, 'zh: every marked string comes from the catalogue' + (raw.length ? ': ' + raw.join(', ') : ''));

  // ---- 2. the clock: 24-hour, Asia/Shanghai
  const clock = await text(p, '#clock-time');
  const want = new Intl.DateTimeFormat('en-GB', { timeZone: 'Asia/Shanghai', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(new Date());
  check(/^\d\d:\d\d:\d\d$/.test(clock) && clock.slice(0, 5) === want, `zh: the clock is 24-hour in Asia/Shanghai (${clock}, expected ${want}:..)`);
  check((await text(p, '#clock-zone')).includes('Asia/Shanghai'), 'zh: the time zone is shown');

  // ---- 3. grades and the rule's own Chinese texts
  const card = p.locator('[data-alert-id="flood_now/district=d07"]').first();
  await card.waitFor({ timeout: 10000 }).catch(() => {});
  check((await card.locator('.grade').first().textContent().catch(() => '')) === '红色预警（Ⅰ级）', 'zh: a critical alert is 红色预警（Ⅰ级）');
  check((await card.locator('.name').textContent().catch(() => '')) === '河道水位超过 9 米', 'zh: the rule\'s Chinese title');
  check((await card.locator('.msg').textContent().catch(() => '')) === 'd07：河道水位超过 9 米', 'zh: the rule\'s Chinese message');
  const gas = p.locator('[data-alert-id="gas_now/city/d05/gas/s01"]').first();
  check((await gas.locator('.grade').textContent().catch(() => '')) === '橙色预警（Ⅱ级）', 'zh: a major alert is 橙色预警（Ⅱ级）');

  // ---- 5. info alerts grouped and collapsed; the live value
  check(await p.locator('[data-group="blue"].collapsed').count() === 1 &&
    await p.locator('[data-group="blue"] article.alert').count() === 0 &&
    (await text(p, '[data-group="blue"] .group-summary')).includes('噪声超过 70 分贝 × 3'),
    'zh: the three info alerts are one collapsed line (蓝色预警) under the red and orange ones');
  const order = await p.evaluate(() => [...document.querySelectorAll('[data-group]')].map(e => e.dataset.group).join(','));
  check(order === 'red,orange,blue', `zh: groups worst first (${order})`);
  await p.click('[data-group="blue"] .group-head');
  check(await p.locator('[data-group="blue"] article.alert').count() === 3, 'zh: the info group opens on a click');
  await p.click('[data-group="blue"] .group-head');
  // the live value comes with the sensors' poll, which may land after the alert
  const live0 = (await until(async () => {
    const v = await text(p, '[data-alert-id="gas_now/city/d05/gas/s01"] .live');
    return v.includes('ch4') ? v : null;
  }, 10000)) || await text(p, '[data-alert-id="gas_now/city/d05/gas/s01"] .live');
  check(live0.includes('现值') && live0.includes('ch4 12.0'), `zh: the live value is beside the message (${live0})`);
  publish('city/d05/gas/s01', { ch4: 15.5 });
  const moved = await until(async () => (await text(p, '[data-alert-id="gas_now/city/d05/gas/s01"] .live')).includes('ch4 15.5'), 20000);
  const msgNow = await text(p, '[data-alert-id="gas_now/city/d05/gas/s01"] .msg');
  check(moved && msgNow.includes('12%'), `zh: the live value follows the sensor (15.5) while the message keeps the transition's 12% (${msgNow})`);

  // ---- 4. the map
  await p.waitForSelector('#map path[data-district="d07"].g-red', { timeout: 10000 }).catch(() => {});
  check(await p.locator('#map path[data-district="d07"].g-red').count() === 1 &&
    await p.locator('#map path[data-district="d05"].g-orange').count() === 1 &&
    await p.locator('#map path[data-district="d02"].g-blue').count() === 1 &&
    await p.locator('#map path[data-district="d11"].g-none').count() === 1,
    'zh: districts are coloured by their worst open grade (d07 red, d05 orange, d02 blue, d11 none)');
  check((await p.locator('#map text.name').allTextContents()).includes('北站区'), 'zh: districts are named in Chinese from the map file');
  check(await p.locator('#map circle[data-topic="city/d07/river/s02"]').count() === 1, 'a sensor is placed by the map file\'s point for its topic');
  const own = p.locator('#map circle[data-topic="city/d09/river/s77"]');
  await own.waitFor({ timeout: 10000 }).catch(() => {});
  const d09 = await p.locator('#map path[data-district="d09"]').boundingBox().catch(() => null);
  const dot = await own.boundingBox().catch(() => null);
  check(dot && d09 && dot.x >= d09.x && dot.x <= d09.x + d09.width && dot.y >= d09.y && dot.y <= d09.y + d09.height,
    'a sensor is placed by its own lat/lon (inside district d09)');
  await zh.page.screenshot({ path: join(outDir, 'console-zh-1920x1080.png') });
  check(await fits(p), 'zh 1920x1080: no sideways scroll; alerts and map on the first screen');
  await p.click('#map path[data-district="d07"]');
  const panel = p.locator('#district-panel[data-district="d07"]');
  await panel.waitFor({ state: 'visible', timeout: 5000 }).catch(() => {});
  check(await panel.isVisible().catch(() => false) && (await text(p, '#district-title')).includes('北站区'), 'zh: a click on d07 opens its panel');
  check(await panel.locator('[data-alert-id="flood_now/district=d07"]').count() === 1, 'zh: the panel lists the district\'s alerts');
  check(await panel.locator('tr[data-topic="city/d07/river/s02"]').count() === 1, 'zh: the panel lists the district\'s sensors');
  await p.waitForSelector('#district-chart .uplot', { timeout: 10000 }).catch(() => {});
  check(await p.locator('#district-chart .uplot').count() === 1, 'zh: the panel charts a sensor of the district');
  await p.screenshot({ path: join(outDir, 'console-zh-district.png') });
  await p.click('#district-close');

  // ---- 1. the switch, remembered; ?lang= wins
  await p.click('#lang-switch');
  await p.waitForFunction(() => document.documentElement.lang === 'en-US', null, { timeout: 5000 }).catch(() => {});
  check(await text(p, '#alerts-title') === 'Alerts' && await p.evaluate(() => localStorage.getItem('citybrain.lang')) === 'en-US',
    'the switch turns the page English and is remembered');
  await p.reload({ waitUntil: 'load' });
  await p.waitForSelector('#h-live.good', { timeout: 15000 }).catch(() => {});
  check(await p.evaluate(() => document.documentElement.lang) === 'en-US', 'a Chinese browser that chose English stays English after a reload');
  await p.goto(url + '?lang=zh', { waitUntil: 'load' });
  await p.waitForFunction(() => document.documentElement.lang === 'zh-CN', null, { timeout: 5000 }).catch(() => {});
  check(await text(p, '#alerts-title') === '告警', '?lang=zh overrides the remembered choice');
  check(zh.errors.length === 0, 'zh: no script errors' + (zh.errors.length ? ': ' + zh.errors.join(' | ') : ''));
  await zh.context.close();

  // ---- English, on a laptop
  const en = await open(browser, 'en-US', { width: 1366, height: 768 });
  p = en.page;
  check(await p.evaluate(() => document.documentElement.lang) === 'en-US', 'en: an English browser gets <html lang="en-US">');
  const ecard = p.locator('[data-alert-id="flood_now/district=d07"]').first();
  await ecard.waitFor({ timeout: 10000 }).catch(() => {});
  check((await ecard.locator('.grade').first().textContent().catch(() => '')) === 'Red warning (Level I)', 'en: a critical alert is "Red warning (Level I)"');
  check((await ecard.locator('.name').textContent().catch(() => '')) === 'River level above 9 m' &&
    (await ecard.locator('.msg').textContent().catch(() => '')) === 'd07: river level above 9 m', 'en: the rule\'s English title and message');
  check((await text(p, '[data-group="blue"] .group-head .grade')) === 'Blue warning (Level IV)', 'en: info alerts are "Blue warning (Level IV)", collapsed');
  const elive = await text(p, '[data-alert-id="gas_now/city/d05/gas/s01"] .live');
  check(elive.startsWith('now') && elive.includes('ch4 15.5'), `en: the live value is labelled "now" (${elive})`);
  check((await p.locator('#map text.name').allTextContents()).includes('Beizhan'), 'en: districts are named in English from the map file');
  const eclock = await text(p, '#clock-time');
  check(/^\d\d:\d\d:\d\d$/.test(eclock), `en: the clock is 24-hour too (${eclock})`);
  check(await fits(p), 'en 1366x768: no sideways scroll; alerts and map on the first screen');
  await p.screenshot({ path: join(outDir, 'console-en-1366x768.png') });
  await p.click('#map path[data-district="d05"]');
  await p.waitForSelector('#district-chart .uplot', { timeout: 10000 }).catch(() => {});
  check((await text(p, '#district-title')).includes('Xingang') && await p.locator('#district-panel [data-alert-id="gas_now/city/d05/gas/s01"]').count() === 1 &&
    await p.locator('#district-chart .uplot').count() === 1, 'en: district d05 opens with its alert and chart');
  await p.screenshot({ path: join(outDir, 'console-en-district.png') });
  await p.click('#district-close');

  // ---- the other sizes, for the reviewer
  await p.setViewportSize({ width: 1920, height: 1080 });
  await sleep(500);
  check(await fits(p), 'en 1920x1080: no sideways scroll; alerts and map on the first screen');
  await p.screenshot({ path: join(outDir, 'console-en-1920x1080.png') });

  // ---- 7. the engine restarts
  const cmdFile = process.env.CB_ENGINE_CMD, pidFile = process.env.CB_PID_FILE;
  if (cmdFile && pidFile && process.env.CB_PID) {
    process.kill(Number(process.env.CB_PID), 'SIGTERM');
    const banner = p.locator('#offline');
    await banner.waitFor({ state: 'visible', timeout: 20000 }).catch(() => {});
    const btext = await banner.textContent().catch(() => '');
    check(await banner.isVisible().catch(() => false) && btext.includes('Cannot reach the engine'), `en: while the engine is away a banner says so (${btext})`);
    check(await p.locator('#h-status.bad').count() === 1, 'en: the health pill turns red');
    await p.screenshot({ path: join(outDir, 'console-en-offline.png') });
    // and in Chinese
    await p.click('#lang-switch');
    await p.waitForFunction(() => document.documentElement.lang === 'zh-CN', null, { timeout: 5000 }).catch(() => {});
    check((await banner.textContent().catch(() => '')).includes('无法连接引擎'), 'zh: the banner says it in Chinese');
    const args = readFileSync(cmdFile, 'utf8').split('\n').filter(Boolean);
    const log = openSync(process.env.CB_ENGINE_LOG || '/dev/null', 'a');
    const child = spawn(args[0], args.slice(1), {
      detached: true, stdio: ['ignore', log, log],
      env: Object.assign({}, process.env, { CITYBRAIN_API_TOKEN: token }),
    });
    writeFileSync(pidFile, String(child.pid));
    child.unref();
    await banner.waitFor({ state: 'hidden', timeout: 40000 }).catch(() => {});
    check(!(await banner.isVisible().catch(() => true)), 'zh: the banner goes when the engine is back');
    await p.waitForSelector('#h-live.good', { timeout: 30000 }).catch(() => {});
    check(await p.locator('#h-live.good').count() === 1, 'zh: the live stream is reconnected by itself');
    // a transition after the restart reaches the page without a reload
    publish('city/d08/river/s01', { level: 9.9 });
    await p.waitForSelector('[data-alert-id="flood_now/district=d08"]', { timeout: 15000 }).catch(() => {});
    check(await p.locator('[data-alert-id="flood_now/district=d08"]').count() >= 1 &&
      await p.locator('[data-alert-id="flood_now/district=d07"]').count() >= 1,
      'zh: after the restart, old alerts are back and new ones arrive live');
    // the alerts from before the restart still speak Chinese (the store keeps
    // every language's message, not only the first one's)
    check((await text(p, '[data-alert-id="flood_now/district=d07"] .msg')) === 'd07：河道水位超过 9 米',
      `zh: after the restart, an alert from before it keeps its Chinese message (${await text(p, '[data-alert-id="flood_now/district=d07"] .msg')})`);
  }
  check(en.errors.length === 0, 'en: no script errors' + (en.errors.length ? ': ' + en.errors.join(' | ') : ''));
  await en.context.close();
}, c);
