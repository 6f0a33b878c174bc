// The operator's workflows in the console, in a real browser against a real
// engine and broker (docs/console.md, "Operator pages"): an acknowledgement
// with the operator's name and a note; a silence from an
// alert (a bad matcher refused with the API's message, then created, listed
// and in the audit log), expired with a comment; a stale alert closed by hand
// (409 shown while it has evidence; the stale mark and its end come on the
// event stream); history and audit pages with filters;
// the shift handover, its presets (00–08, 08–16, 16–24 in the engine's time
// zone) and its print stylesheet; then every page again on a laptop screen
// (1366x768): nothing sticks out sideways, a screenshot of each.
//
// One language per run (CB_LANG: zh-CN, the default, or en-US): the test
// script runs it once in each, each time against a fresh engine of its own
// with sensors.stale_after=2s so an alert's sensors fall silent quickly.
// CB_URL, CB_BROKER_PORT, CB_TOKEN, CB_OUT_DIR as the other specs.
// Screenshots: tests/out/workflows-<zh|en>-*.png.
import { join } from 'node:path';
import { env, checker, publisher, run, until, text } from './support.mjs';

const { url, brokerPort, token } = env('workflows.spec');
const outDir = process.env.CB_OUT_DIR || 'tests/out';
const c = checker();
const check = c.check;
const publish = publisher(brokerPort);
const LANG = process.env.CB_LANG || 'zh-CN';
const ZH = LANG === 'zh-CN';
const tag = ZH ? 'zh' : 'en';
// What the page must say, per language (the catalogues' texts, written out
// so a wrong or missing catalogue entry fails).
const L = ZH ? {
  name: '王芳', ackTitle: '确认告警：燃气泄漏', ackNote: '已派抢修三队前往', silenceTitle: '静默通知', refused: '引擎拒绝', comment: '燃气公司正在检修 s01',
  active: '生效中', expired: '已结束', expiredBy: '由 王芳 结束', expireNote: '检修完成', stale: '数据中断',
  closeNote: '水位计 s02 已拆下维修', closeAction: '手动关闭', unacked: '仍在告警、尚未确认',
  titles: { silences: '静默', history: '告警历史', audit: '操作日志', handover: '交接班' },
} : {
  name: 'Wang Fang', ackTitle: 'Acknowledge Methane leak', ackNote: 'repair crew 3 sent', silenceTitle: 'Silence notifications', refused: 'the engine refused',
  comment: 'the gas company is servicing s01', active: 'active', expired: 'expired',
  expiredBy: 'ended by Wang Fang', expireNote: 'service done', stale: 'stale',
  closeNote: 'gauge s02 removed for repair', closeAction: 'closed by hand', unacked: 'Still firing, unacknowledged',
  titles: { silences: 'Silences', history: 'History', audit: 'Audit log', handover: 'Shift handover' },
};
const NAME = L.name;

async function api(path) {
  const r = await fetch(new URL(path, url));
  return r.json();
}

/* A tab signed in by the #token= link, the operator's name remembered. */
async function open(browser, locale, viewport) {
  const context = await browser.newContext({ viewport: viewport || { width: 1920, height: 1080 }, locale });
  await context.addInitScript(n => localStorage.setItem('citybrain.operator', n), NAME);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  page.on('console', m => { if (m.type() === 'error' && !/Failed to load resource|EventSource/.test(m.text())) errors.push(m.text()); });
  await page.goto(url + '#token=' + encodeURIComponent(token), { waitUntil: 'load', timeout: 15000 });
  await page.waitForSelector('#h-live.good', { timeout: 15000 }).catch(() => {});
  return { context, page, errors };
}

/* The audit log's entries of action, once there are some (they are written
 * by the alert store's writer thread: committed a moment after the action's
 * answer, docs/alerts.md "Persistence"), waiting at most 10 s. */
async function audit(action) {
  const read = async () => ((await api('/api/audit?action=' + action)).entries || []);
  return (await until(async () => { const e = await read(); return e.length ? e : null; }, 10000)) || await read();
}

/* The handover preset starting at hour h (0, 8, 16) of today in zone, as
 * docs/console.md says: the previous day's when it has not started yet, a
 * shift under way ending now. [from, to] in ms. */
function shiftWindow(zone, h, now) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-GB', { timeZone: zone, hourCycle: 'h23',
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' })
    .formatToParts(new Date(now)).map(x => [x.type, Number(x.value)]));
  const sinceMidnight = ((parts.hour * 60 + parts.minute) * 60 + parts.second) * 1000 + now % 1000;
  let from = now - sinceMidnight + h * 3600000;
  if (from > now) from -= 24 * 3600000;
  return [from, Math.min(from + 8 * 3600000, now)];
}

await run(async browser => {
  const gasId = 'gas_now/city/d05/gas/s01', floodId = 'flood_now/district=d07';
  publish('city/d05/gas/s01', { ch4: 14 });
  await until(async () => (await api('/api/alerts')).alerts.filter(a => a.state === 'firing').length >= 1, 20000);

  const tab = await open(browser, LANG);
  const p = tab.page;
  const card = p.locator(`#alerts [data-alert-id="${gasId}"]`);
  await card.waitFor({ timeout: 10000 }).catch(() => {});

  // ---- 1. a silence from the alert: matchers prefilled from its rule and labels
  await card.locator('button.silence').click();
  const dlg = p.locator('#silence[open]');
  await dlg.waitFor({ timeout: 5000 }).catch(() => {});
  const matchers = await p.$$eval('#silence-matchers .matcher', rows => rows.map(r =>
    r.querySelector('.m-name').value + r.querySelector('.m-op').value + r.querySelector('.m-value').value));
  check(matchers.includes('rule=gas_now') && matchers.includes('district=d05') && matchers.includes('sensor=s01'),
    `${tag}: the silence dialog is prefilled with the alert's rule and labels (${matchers.join(' ')})`);
  check((await text(p, '#silence-title')) === L.silenceTitle, `${tag}: the silence dialog is titled "${L.silenceTitle}"`);
  // a regular expression that does not compile: the API's 400 message is shown
  const first = p.locator('#silence-matchers .matcher').first();
  await first.locator('.m-op').selectOption('=~');
  await first.locator('.m-value').fill('gas(');
  await p.fill('#silence-comment', L.comment);
  await p.click('#silence-submit');
  await p.locator('#silence-error:not([hidden])').waitFor({ timeout: 5000 }).catch(() => {});
  const err = await text(p, '#silence-error');
  check(err.includes(L.refused) && err.includes('bad regular expression') && await dlg.count() === 1,
    `${tag}: a bad matcher is refused with the API's message (${err})`);
  await p.screenshot({ path: join(outDir, `workflows-${tag}-silence-error.png`) });
  await first.locator('.m-op').selectOption('=');
  await first.locator('.m-value').fill('gas_now');
  await p.selectOption('#silence-duration', '8');
  await p.screenshot({ path: join(outDir, `workflows-${tag}-silence-dialog.png`) });
  await p.click('#silence-submit');
  const row = p.locator('#page[data-page="silences"] tr[data-silence-id]').first();
  await row.waitFor({ timeout: 5000 }).catch(() => {});
  const sils = (await api('/api/silences')).silences || [];
  const s = sils[0] || {};
  check(sils.length === 1 && s.state === 'active' && s.created_by === NAME && s.comment === L.comment &&
    Math.abs(s.ends - s.starts - 8 * 3600000) < 60000, `the silence reaches the engine: active, by ${NAME}, 8 h (${JSON.stringify(s)})`);
  check((await row.locator('.state').textContent().catch(() => '')) === L.active, `${tag}: the silences page lists it as ${L.active}`);
  const created = await audit('silence_create');
  check(created.length === 1 && created[0].who === NAME && created[0].target === String(s.id), 'the audit log has its silence_create by the operator');
  await p.screenshot({ path: join(outDir, `workflows-${tag}-silences.png`) });

  // ---- expire it, with a comment
  await row.locator('button.expire').click();
  await p.locator('#ask[open]').waitFor({ timeout: 5000 }).catch(() => {});
  await p.fill('#ask-text', L.expireNote);
  await p.click('#ask-submit');
  const gone = await until(async () => (await row.locator('.state').textContent()) === L.expired, 5000);
  check(gone && (await row.textContent()).includes(L.expiredBy) && await row.locator('button.expire').count() === 0,
    `${tag}: Expire ends the silence: listed as ${L.expired}, by whom, no Expire button`);
  const expired = await audit('silence_expire');
  check(expired.length === 1 && expired[0].who === NAME && expired[0].note === L.expireNote, 'the audit log has its silence_expire with the comment');
  await p.click('#page-close');

  // ---- 2. close a stale alert by hand: its sensor went silent (stale_after 2 s).
  // The stale mark comes on the event stream (`event: stale`): the page's own
  // reloads of /api/alerts are answered from a copy taken while the alert was
  // fresh, so only the stream can show it.
  publish('city/d07/river/s02', { level: 9.6 });
  const fresh = await until(async () => {
    const r = await fetch(new URL('/api/alerts', url));
    const body = await r.text();
    const f = JSON.parse(body).alerts.find(a => a.id === floodId && a.state === 'firing');
    return f && !f.stale ? body : null;
  }, 10000);
  const alertsOnly = u => new URL(u).pathname === '/api/alerts';
  await p.route(alertsOnly, r => r.fulfill({ status: 200, contentType: 'application/json', body: fresh || '{"alerts":[]}' }));
  const fcard = p.locator(`#alerts [data-alert-id="${floodId}"]`);
  await fcard.waitFor({ timeout: 10000 }).catch(() => {});
  const freshFirst = await fcard.locator('.state.stale').count() === 0;
  await fcard.locator('button.close').waitFor({ timeout: 15000 }).catch(() => {});
  check(fresh && freshFirst && await fcard.locator('.state.stale').count() === 1 && await fcard.locator('button.close').count() === 1,
    `${tag}: an alert whose sensor falls silent turns ${L.stale} with a Close button, from the event stream alone`);
  await p.unroute(alertsOnly);
  await fcard.locator('button.close').click();
  await p.locator('#ask[open]').waitFor({ timeout: 5000 }).catch(() => {});
  // evidence arrives while the dialog is open: the API answers 409, shown
  publish('city/d07/river/s02', { level: 9.7 });
  await until(async () => !(await api('/api/alerts')).alerts.find(a => a.id === floodId).stale, 5000);
  const unmarked = await until(async () => await fcard.locator('.state.stale').count() === 0, 5000);
  check(unmarked, `${tag}: evidence again: the stale mark goes at once (event stream)`);
  await p.fill('#ask-text', L.closeNote);
  await p.click('#ask-submit');
  await p.locator('#ask-error:not([hidden])').waitFor({ timeout: 5000 }).catch(() => {});
  const cerr = await text(p, '#ask-error');
  check(cerr.length > 0 && await p.locator('#ask[open]').count() === 1, `${tag}: closing an alert that has evidence shows the 409 message (${cerr})`);
  await p.screenshot({ path: join(outDir, `workflows-${tag}-close-409.png`) });
  // silent again: now it closes
  await until(async () => (await api('/api/alerts')).alerts.find(a => a.id === floodId).stale, 15000);
  await p.click('#ask-submit');
  await p.locator('#ask').waitFor({ state: 'hidden', timeout: 5000 }).catch(() => {});
  const closed = await until(async () => !(await api('/api/alerts')).alerts.find(a => a.id === floodId && a.state !== 'resolved'), 5000);
  check(closed && await p.locator('#ask[open]').count() === 0, 'the stale alert is closed by hand');
  const cl = await audit('close');
  check(cl.length === 1 && cl[0].who === NAME && cl[0].target === floodId && cl[0].note === L.closeNote, 'the audit log has the close with the note');
  check(await p.locator(`#alerts [data-alert-id="${floodId}"]`).count() === 0, `${tag}: the closed alert leaves the list`);

  // ---- acknowledge the gas alert with a note (and for the handover)
  await p.locator(`#alerts [data-alert-id="${gasId}"] button.ack`).click();
  await p.locator('#ask[open]').waitFor({ timeout: 5000 }).catch(() => {});
  check((await text(p, '#ask-title')) === L.ackTitle, `${tag}: Acknowledge asks a note ("${await text(p, '#ask-title')}")`);
  await p.fill('#ask-text', L.ackNote);
  await p.screenshot({ path: join(outDir, `workflows-${tag}-ack-dialog.png`) });
  await p.click('#ask-submit');
  const ackedApi = await until(async () => {
    const g = (await api('/api/alerts')).alerts.find(a => a.id === gasId);
    return g.acked_by === NAME && g.ack_note === L.ackNote;
  }, 5000);
  const ackAudit = await audit('ack');
  check(ackedApi && ackAudit.length === 1 && ackAudit[0].who === NAME && ackAudit[0].note === L.ackNote,
    `${tag}: the acknowledgement reaches the engine and the audit log with the name and the note`);
  await p.locator(`#alerts [data-alert-id="${gasId}"] .acked-by`).first().waitFor({ timeout: 5000 }).catch(() => {});
  check((await text(p, `#alerts [data-alert-id="${gasId}"] .acked-by`)).includes(NAME + ': ' + L.ackNote),
    `${tag}: the card shows who acknowledged it and the note`);
  publish('city/d02/noise/s01', { db: 80 });          // still firing, unacknowledged
  await until(async () => (await api('/api/alerts')).alerts.find(a => a.id.startsWith('noise_now') && a.state === 'firing'), 10000);

  // ---- 3. history, newest first, with the grade filter
  await p.click('#nav-history');
  await p.locator('#page[data-page="history"] tr[data-transition]').first().waitFor({ timeout: 5000 }).catch(() => {});
  const hist = await p.$$eval('#page tr[data-transition]', rs => rs.map(r => r.dataset.transition));
  const ats = hist.map(h => Number(h.split('@').pop()));
  check(hist.length >= 4 && ats.every((a, i) => i === 0 || ats[i - 1] >= a), `${tag}: history lists transitions newest first (${hist.length})`);
  check(await p.locator(`#page tr[data-transition^="${floodId}@"][data-state="resolved"]`).count() === 1 &&
    (await text(p, `#page tr[data-transition^="${floodId}@"][data-state="resolved"]`)).includes(L.closeNote),
  `${tag}: history shows the close with who and the note`);
  await p.selectOption('#history-severity', 'critical');
  await until(async () => (await p.$$eval('#page tr[data-transition]', rs => rs.every(r => r.dataset.transition.startsWith('flood_now')))), 5000);
  const crit = await p.$$eval('#page tr[data-transition]', rs => rs.map(r => r.dataset.transition));
  check(crit.length >= 2 && crit.every(x => x.startsWith('flood_now/')), `${tag}: the grade filter keeps only the red (critical) transitions`);
  await p.screenshot({ path: join(outDir, `workflows-${tag}-history.png`) });

  // ---- the audit log, with the action filter
  await p.click('#nav-audit');
  await p.locator('#page[data-page="audit"] tr[data-audit-seq]').first().waitFor({ timeout: 5000 }).catch(() => {});
  const acts = await p.$$eval('#page tr[data-audit-seq]', rs => rs.map(r => r.dataset.action));
  check(['ack', 'close', 'silence_expire', 'silence_create'].every((a, i) => acts[i] === a), `${tag}: the audit log, newest first (${acts.join(' ')})`);
  await p.selectOption('#audit-action', 'close');
  await until(async () => (await p.$$eval('#page tr[data-audit-seq]', rs => rs.length === 1)), 5000);
  check((await p.$$eval('#page tr[data-audit-seq]', rs => rs.map(r => r.dataset.action))).join() === 'close' &&
    (await text(p, '#page tr[data-audit-seq]')).includes(L.closeAction), `${tag}: the action filter keeps only ${L.closeAction}`);
  await p.selectOption('#audit-action', '');
  await p.screenshot({ path: join(outDir, `workflows-${tag}-audit.png`) });

  // ---- 4. the shift handover, on screen and on paper
  await p.click('#nav-handover');
  await p.locator('#page[data-page="handover"] [data-part="unacked"]').waitFor({ timeout: 5000 }).catch(() => {});
  const part = async k => p.$$eval(`#page [data-part="${k}"] tr[data-alert-id], #page [data-part="${k}"] tr[data-transition]`,
    rs => rs.map(r => (r.dataset.alertId || r.dataset.transition.split('@')[0])));
  const unacked = await part('unacked'), fired = await part('fired'), acked = await part('acknowledged'), resolved = await part('resolved');
  check(unacked.some(id => id.startsWith('noise_now/')) && !unacked.includes(gasId), `${tag} handover: still unacknowledged lists the noise alert, not the acknowledged one (${unacked})`);
  check(fired.includes(gasId) && fired.includes(floodId), `${tag} handover: what fired during the shift`);
  check(acked.includes(gasId) && (await text(p, '#page [data-part="acknowledged"]')).includes(NAME), `${tag} handover: acknowledged, by whom`);
  check(resolved.includes(floodId), `${tag} handover: resolved during the shift`);
  check((await text(p, '#page [data-part="unacked"] h3')).startsWith(L.unacked), `${tag} handover: headed "${L.unacked}"`);
  await p.screenshot({ path: join(outDir, `workflows-${tag}-handover.png`), fullPage: true });
  await p.emulateMedia({ media: 'print' });
  check(!(await p.locator('header.top').isVisible()) && await p.locator('#page [data-part="fired"]').isVisible(),
    'handover printed: the header goes, the handover stays');
  await p.screenshot({ path: join(outDir, `workflows-${tag}-handover-print.png`), fullPage: true });
  await p.emulateMedia({ media: 'screen' });

  // ---- the handover's shift presets, in the engine's time zone
  const zone = (await api('/api/console')).time_zone;
  const trs = (await api('/api/alerts/history?limit=10000')).transitions || [];
  for (const h of [0, 8, 16]) {
    await p.selectOption('#handover-shift', String(h));
    await p.locator('#page [data-part="fired"]').waitFor({ timeout: 5000 }).catch(() => {});
    const [from, to] = shiftWindow(zone, h, Date.now());
    const want = trs.filter(t => t.state === 'firing' && t.at >= from && t.at <= to).map(t => t.id).sort();
    const hh = n => String(n % 24).padStart(2, '0') + ':00:00';
    // the page renders the shift after reading the history: wait for it
    const starts = async () => ((await text(p, '#page .handover-window')).match(/\d\d:\d\d:\d\d/) || [''])[0];
    await until(async () => (await starts()) === hh(h) &&
      (await part('fired')).sort().join() === want.join(), 5000);
    const got = (await part('fired')).sort();
    const win = await text(p, '#page .handover-window');
    check((await starts()) === hh(h) && (to < Date.now() - 60000 ? win.includes(hh(h + 8)) : true) && win.includes(zone),
      `${tag} handover ${String(h).padStart(2, '0')}:00–${String(h + 8).padStart(2, '0')}:00: the window is the shift in ${zone} (${win})`);
    check(got.join() === want.join(), `${tag} handover ${hh(h).slice(0, 5)}: fired lists the firings of that shift only (${got.length}, expected ${want.length})`);
    await p.screenshot({ path: join(outDir, `workflows-${tag}-handover-${String(h).padStart(2, '0')}.png`), fullPage: true });
  }
  await p.selectOption('#handover-shift', 'last8');
  check(tab.errors.length === 0, `${tag}: no script errors` + (tab.errors.length ? ': ' + tab.errors.join(' | ') : ''));
  await tab.context.close();

  // ---- a laptop screen: every page, nothing sticks out sideways
  const lap = await open(browser, LANG, { width: 1366, height: 768 });
  const q = lap.page;
  const over = async () => q.evaluate(() => {
    const vw = document.documentElement.clientWidth;
    const out = [...document.querySelectorAll('body *')].filter(e => {
      if (!e.getClientRects().length || getComputedStyle(e).position === 'fixed') return false;
      const r = e.getBoundingClientRect();
      return r.width > 0 && r.right > vw + 1;
    }).map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className && e.className.baseVal === undefined ? '.' + String(e.className).split(' ')[0] : ''));
    return { wide: document.documentElement.scrollWidth > window.innerWidth + 1, out: out.slice(0, 5) };
  });
  const fitsLaptop = async what => {
    const o = await over();
    check(!o.wide && o.out.length === 0, `${tag} 1366x768 ${what}: nothing sticks out sideways` + (o.out.length ? ' (' + o.out.join(' ') + ')' : ''));
  };
  await q.locator('#alerts article.alert, #alerts [data-group]').first().waitFor({ timeout: 10000 }).catch(() => {});
  await fitsLaptop('alerts');
  const head = await q.evaluate(() => document.querySelector('header.top').getBoundingClientRect().height);
  check(head <= 768 * 0.15, `${tag} 1366x768: the header is at most two lines (${Math.round(head)} px of 768)`);
  await q.screenshot({ path: join(outDir, `workflows-${tag}-1366-alerts.png`) });
  await q.locator('#map path[data-district]').first().scrollIntoViewIfNeeded().catch(() => {});
  await q.click('#map path[data-district="d05"]');
  await q.waitForSelector('#district-chart .uplot', { timeout: 10000 }).catch(() => {});
  await fitsLaptop('map and a district');
  await q.screenshot({ path: join(outDir, `workflows-${tag}-1366-map.png`) });
  await q.click('#district-close');
  for (const [pg, title] of Object.entries(L.titles)) {
    await q.click('#nav-' + pg);
    await q.locator(`#page[data-page="${pg}"] #page-body > *`).first().waitFor({ timeout: 5000 }).catch(() => {});
    check((await text(q, '#page-title')) === title, `${tag}: the ${pg} page is titled "${title}"`);
    await fitsLaptop(pg);
    await q.screenshot({ path: join(outDir, `workflows-${tag}-1366-${pg}.png`), fullPage: true });
  }
  await q.click('#page-close');
  await q.locator(`#alerts [data-alert-id="${gasId}"] button.silence`).click();
  await q.locator('#silence[open]').waitFor({ timeout: 5000 }).catch(() => {});
  await fitsLaptop('the silence dialog');
  await q.screenshot({ path: join(outDir, `workflows-${tag}-1366-silence-dialog.png`) });
  check(lap.errors.length === 0, `${tag} 1366x768: no script errors` + (lap.errors.length ? ': ' + lap.errors.join(' | ') : ''));
  await lap.context.close();
}, c);
