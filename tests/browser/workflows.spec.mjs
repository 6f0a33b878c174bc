// The operator's workflows in the console, in a real browser against a real
// engine and broker (docs/console.md, "Operator pages"): a silence from an
// alert (a bad matcher refused with the API's message, then created, listed
// and in the audit log), expired with a comment; a stale alert closed by hand
// (409 shown while it has evidence; the stale mark and its end come on the
// event stream); history and audit pages with filters;
// the shift handover and its print stylesheet; Chinese and English.
//
// Started by tests/browser.test.sh against its own engine, which runs with
// sensors.stale_after=2s so an alert's sensors fall silent quickly. CB_URL,
// CB_BROKER_PORT, CB_TOKEN, CB_OUT_DIR as the other specs.
import { join } from 'node:path';
import { env, checker, publisher, run, until, text } from './support.mjs';

const { url, brokerPort, token } = env('workflows.spec');
const outDir = process.env.CB_OUT_DIR || 'tests/out';
const c = checker();
const check = c.check;
const publish = publisher(brokerPort);
const NAME = '王芳';

async function api(path) {
  const r = await fetch(new URL(path, url));
  return r.json();
}

/* A tab signed in by the #token= link, the operator's name remembered. */
async function open(browser, locale) {
  const context = await browser.newContext({ viewport: { width: 1920, height: 1080 }, locale });
  await context.addInitScript(n => localStorage.setItem('citybrain.operator', n), NAME);
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  page.on('console', m => { if (m.type() === 'error' && !/Failed to load resource|EventSource/.test(m.text())) errors.push(m.text()); });
  await page.goto(url + '#token=' + encodeURIComponent(token), { waitUntil: 'load', timeout: 15000 });
  await page.waitForSelector('#h-live.good', { timeout: 15000 }).catch(() => {});
  return { context, page, errors };
}

async function audit(action) {
  return ((await api('/api/audit?action=' + action)).entries || []);
}

await run(async browser => {
  const gasId = 'gas_now/city/d05/gas/s01', floodId = 'flood_now/district=d07';
  publish('city/d05/gas/s01', { ch4: 14 });
  await until(async () => (await api('/api/alerts')).alerts.filter(a => a.state === 'firing').length >= 1, 20000);

  const zh = await open(browser, 'zh-CN');
  const p = zh.page;
  const card = p.locator(`#alerts [data-alert-id="${gasId}"]`);
  await card.waitFor({ timeout: 10000 }).catch(() => {});

  // ---- 1. a silence from the alert: matchers prefilled from its rule and labels
  await card.locator('button.silence').click();
  const dlg = p.locator('#silence[open]');
  await dlg.waitFor({ timeout: 5000 }).catch(() => {});
  const matchers = await p.$$eval('#silence-matchers .matcher', rows => rows.map(r =>
    r.querySelector('.m-name').value + r.querySelector('.m-op').value + r.querySelector('.m-value').value));
  check(matchers.includes('rule=gas_now') && matchers.includes('district=d05') && matchers.includes('sensor=s01'),
    `zh: the silence dialog is prefilled with the alert's rule and labels (${matchers.join(' ')})`);
  check((await text(p, '#silence-title')) === '静默通知', 'zh: the silence dialog speaks Chinese');
  // a regular expression that does not compile: the API's 400 message is shown
  const first = p.locator('#silence-matchers .matcher').first();
  await first.locator('.m-op').selectOption('=~');
  await first.locator('.m-value').fill('gas(');
  await p.fill('#silence-comment', '燃气公司正在检修 s01');
  await p.click('#silence-submit');
  await p.locator('#silence-error:not([hidden])').waitFor({ timeout: 5000 }).catch(() => {});
  const err = await text(p, '#silence-error');
  check(err.includes('bad regular expression') && await dlg.count() === 1, `zh: a bad matcher is refused with the API's message (${err})`);
  await p.screenshot({ path: join(outDir, 'workflows-zh-silence-error.png') });
  await first.locator('.m-op').selectOption('=');
  await first.locator('.m-value').fill('gas_now');
  await p.selectOption('#silence-duration', '8');
  await p.screenshot({ path: join(outDir, 'workflows-zh-silence-dialog.png') });
  await p.click('#silence-submit');
  const row = p.locator('#page[data-page="silences"] tr[data-silence-id]').first();
  await row.waitFor({ timeout: 5000 }).catch(() => {});
  const sils = (await api('/api/silences')).silences || [];
  const s = sils[0] || {};
  check(sils.length === 1 && s.state === 'active' && s.created_by === NAME && s.comment === '燃气公司正在检修 s01' &&
    Math.abs(s.ends - s.starts - 8 * 3600000) < 60000, `the silence reaches the engine: active, by ${NAME}, 8 h (${JSON.stringify(s)})`);
  check((await row.locator('.state').textContent().catch(() => '')) === '生效中', 'zh: the silences page lists it as 生效中');
  const created = await audit('silence_create');
  check(created.length === 1 && created[0].who === NAME && created[0].target === String(s.id), 'the audit log has its silence_create by the operator');
  await p.screenshot({ path: join(outDir, 'workflows-zh-silences.png') });

  // ---- expire it, with a comment
  await row.locator('button.expire').click();
  await p.locator('#ask[open]').waitFor({ timeout: 5000 }).catch(() => {});
  await p.fill('#ask-text', '检修完成');
  await p.click('#ask-submit');
  const gone = await until(async () => (await row.locator('.state').textContent()) === '已结束', 5000);
  check(gone && (await row.textContent()).includes('由 王芳 结束') && await row.locator('button.expire').count() === 0,
    'zh: Expire ends the silence: listed as 已结束, by whom, no Expire button');
  const expired = await audit('silence_expire');
  check(expired.length === 1 && expired[0].who === NAME && expired[0].note === '检修完成', 'the audit log has its silence_expire with the comment');
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
    'zh: an alert whose sensor falls silent turns 数据中断 with a Close button, from the event stream alone');
  await p.unroute(alertsOnly);
  await fcard.locator('button.close').click();
  await p.locator('#ask[open]').waitFor({ timeout: 5000 }).catch(() => {});
  // evidence arrives while the dialog is open: the API answers 409, shown
  publish('city/d07/river/s02', { level: 9.7 });
  await until(async () => !(await api('/api/alerts')).alerts.find(a => a.id === floodId).stale, 5000);
  const unmarked = await until(async () => await fcard.locator('.state.stale').count() === 0, 5000);
  check(unmarked, 'zh: evidence again: the stale mark goes at once (event stream)');
  await p.fill('#ask-text', '水位计 s02 已拆下维修');
  await p.click('#ask-submit');
  await p.locator('#ask-error:not([hidden])').waitFor({ timeout: 5000 }).catch(() => {});
  const cerr = await text(p, '#ask-error');
  check(cerr.length > 0 && await p.locator('#ask[open]').count() === 1, `zh: closing an alert that has evidence shows the 409 message (${cerr})`);
  await p.screenshot({ path: join(outDir, 'workflows-zh-close-409.png') });
  // silent again: now it closes
  await until(async () => (await api('/api/alerts')).alerts.find(a => a.id === floodId).stale, 15000);
  await p.click('#ask-submit');
  await p.locator('#ask').waitFor({ state: 'hidden', timeout: 5000 }).catch(() => {});
  const closed = await until(async () => !(await api('/api/alerts')).alerts.find(a => a.id === floodId && a.state !== 'resolved'), 5000);
  check(closed && await p.locator('#ask[open]').count() === 0, 'the stale alert is closed by hand');
  const cl = await audit('close');
  check(cl.length === 1 && cl[0].who === NAME && cl[0].target === floodId && cl[0].note === '水位计 s02 已拆下维修', 'the audit log has the close with the note');
  check(await p.locator(`#alerts [data-alert-id="${floodId}"]`).count() === 0, 'zh: the closed alert leaves the list');

  // acknowledge the gas alert, for the handover
  await p.locator(`#alerts [data-alert-id="${gasId}"] button.ack`).click();
  await until(async () => (await api('/api/alerts')).alerts.find(a => a.id === gasId).acked_by === NAME, 5000);
  publish('city/d02/noise/s01', { db: 80 });          // still firing, unacknowledged
  await until(async () => (await api('/api/alerts')).alerts.find(a => a.id.startsWith('noise_now') && a.state === 'firing'), 10000);

  // ---- 3. history, newest first, with the grade filter
  await p.click('#nav-history');
  await p.locator('#page[data-page="history"] tr[data-transition]').first().waitFor({ timeout: 5000 }).catch(() => {});
  const hist = await p.$$eval('#page tr[data-transition]', rs => rs.map(r => r.dataset.transition));
  const ats = hist.map(h => Number(h.split('@').pop()));
  check(hist.length >= 4 && ats.every((a, i) => i === 0 || ats[i - 1] >= a), `zh: history lists transitions newest first (${hist.length})`);
  check(await p.locator(`#page tr[data-transition^="${floodId}@"][data-state="resolved"]`).count() === 1 &&
    (await text(p, `#page tr[data-transition^="${floodId}@"][data-state="resolved"]`)).includes('水位计 s02 已拆下维修'),
  'zh: history shows the close with who and the note');
  await p.selectOption('#history-severity', 'critical');
  await until(async () => (await p.$$eval('#page tr[data-transition]', rs => rs.every(r => r.dataset.transition.startsWith('flood_now')))), 5000);
  const crit = await p.$$eval('#page tr[data-transition]', rs => rs.map(r => r.dataset.transition));
  check(crit.length >= 2 && crit.every(x => x.startsWith('flood_now/')), 'zh: the grade filter keeps only 红色预警 (critical) transitions');
  await p.screenshot({ path: join(outDir, 'workflows-zh-history.png') });

  // ---- the audit log, with the action filter
  await p.click('#nav-audit');
  await p.locator('#page[data-page="audit"] tr[data-audit-seq]').first().waitFor({ timeout: 5000 }).catch(() => {});
  const acts = await p.$$eval('#page tr[data-audit-seq]', rs => rs.map(r => r.dataset.action));
  check(['ack', 'close', 'silence_expire', 'silence_create'].every((a, i) => acts[i] === a), `zh: the audit log, newest first (${acts.join(' ')})`);
  await p.selectOption('#audit-action', 'close');
  await until(async () => (await p.$$eval('#page tr[data-audit-seq]', rs => rs.length === 1)), 5000);
  check((await p.$$eval('#page tr[data-audit-seq]', rs => rs.map(r => r.dataset.action))).join() === 'close' &&
    (await text(p, '#page tr[data-audit-seq]')).includes('手动关闭'), 'zh: the action filter keeps only 手动关闭');
  await p.selectOption('#audit-action', '');
  await p.screenshot({ path: join(outDir, 'workflows-zh-audit.png') });

  // ---- 4. the shift handover, on screen and on paper
  await p.click('#nav-handover');
  await p.locator('#page[data-page="handover"] [data-part="unacked"]').waitFor({ timeout: 5000 }).catch(() => {});
  const part = async k => p.$$eval(`#page [data-part="${k}"] tr[data-alert-id], #page [data-part="${k}"] tr[data-transition]`,
    rs => rs.map(r => (r.dataset.alertId || r.dataset.transition.split('@')[0])));
  const unacked = await part('unacked'), fired = await part('fired'), acked = await part('acknowledged'), resolved = await part('resolved');
  check(unacked.some(id => id.startsWith('noise_now/')) && !unacked.includes(gasId), `zh handover: still unacknowledged lists the noise alert, not the acknowledged one (${unacked})`);
  check(fired.includes(gasId) && fired.includes(floodId), 'zh handover: what fired during the shift');
  check(acked.includes(gasId) && (await text(p, '#page [data-part="acknowledged"]')).includes(NAME), 'zh handover: acknowledged, by whom');
  check(resolved.includes(floodId), 'zh handover: resolved during the shift');
  check((await text(p, '#page [data-part="unacked"] h3')).startsWith('仍在告警、尚未确认'), 'zh handover: in Chinese');
  await p.screenshot({ path: join(outDir, 'workflows-zh-handover.png'), fullPage: true });
  await p.emulateMedia({ media: 'print' });
  check(!(await p.locator('header.top').isVisible()) && await p.locator('#page [data-part="fired"]').isVisible(),
    'handover printed: the header goes, the handover stays');
  await p.screenshot({ path: join(outDir, 'workflows-zh-handover-print.png'), fullPage: true });
  await p.emulateMedia({ media: 'screen' });
  check(zh.errors.length === 0, 'zh: no script errors' + (zh.errors.length ? ': ' + zh.errors.join(' | ') : ''));
  await zh.context.close();

  // ---- English: the same pages
  const en = await open(browser, 'en-US');
  const q = en.page;
  const shots = { silences: 'Silences', history: 'History', audit: 'Audit log', handover: 'Shift handover' };
  for (const [pg, title] of Object.entries(shots)) {
    await q.click('#nav-' + pg);
    await q.locator(`#page[data-page="${pg}"] #page-body > *`).first().waitFor({ timeout: 5000 }).catch(() => {});
    check((await text(q, '#page-title')) === title, `en: the ${pg} page is titled "${title}"`);
    await q.screenshot({ path: join(outDir, `workflows-en-${pg}.png`), fullPage: pg === 'handover' });
  }
  check((await text(q, '#page [data-part="unacked"] h3')).startsWith('Still firing, unacknowledged'), 'en handover: in English');
  await q.click('#page-close');
  await q.locator(`#alerts [data-alert-id="${gasId}"] button.silence`).click();
  check((await text(q, '#silence-title')) === 'Silence notifications', 'en: the silence dialog speaks English');
  await q.screenshot({ path: join(outDir, 'workflows-en-silence-dialog.png') });
  check(en.errors.length === 0, 'en: no script errors' + (en.errors.length ? ': ' + en.errors.join(' | ') : ''));
  await en.context.close();
}, c);
