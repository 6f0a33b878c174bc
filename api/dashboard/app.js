/* citybrain console: plain JS, no build step (docs/console.md). Reads the
 * HTTP API of the engine that serves this page; live alert transitions come
 * from /api/events. Text from the API is always set with textContent, never
 * as HTML; every string of the console itself comes from I18N (i18n.js).
 *
 * Robust on the wall: health is polled every few seconds; while the engine
 * cannot be reached a banner says so, and when it answers again the console
 * reconnects its event stream and reloads everything by itself. */
'use strict';

const t = I18N.t;
const SEVERITIES = ['critical', 'major', 'warning', 'info'];
const GRADES = ['red', 'orange', 'yellow', 'blue'];
const GRADE_RANK = { red: 4, orange: 3, yellow: 2, blue: 1 };
const SEV_GRADE = { critical: 'red', major: 'orange', warning: 'yellow', info: 'blue' };
const TOKEN_KEY = 'citybrain.token';      /* sessionStorage: this tab only */
const NAME_KEY = 'citybrain.operator';    /* localStorage */
const COLLAPSE_KEY = 'citybrain.collapsed.'; /* localStorage, per grade */
const HEALTH_EVERY = 3000;

const state = {
  console: { time_zone: null, city_map: false, writes: true },
  alerts: new Map(),   // id -> alert object
  sensors: [],
  rules: new Map(),    // name -> {metrics, title, titles}
  fresh: new Set(),    // ids that just changed: flash once
  topic: null,
  topicAuto: false,    // the chart's sensor was chosen by the console, not the operator
  metric: null,
  range: 3600000,
  plots: new Map(),    // chart box id -> uPlot
  city: null,          // CityMap.parse() result
  district: null,      // the open district, or null
  dtopic: null,        // the sensor charted in the district panel
  dmetric: null,
  offlineSince: 0,     // when the engine stopped answering, 0 when it answers
  es: null,
  esRetry: 1000,
  pendingAck: null,    // a write waiting for sign-in (a function)
};

/* ---- small helpers ---- */

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmt(v) {
  if (typeof v !== 'number' || !isFinite(v)) return '–';
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function districtOf(labels) {
  if (!labels) return null;
  return labels.district || labels.zone || labels.area || null;
}

/* Labels as chips, district first, then the sensor, then the rest. */
function labelChips(labels) {
  const order = k => (k === 'district' ? 0 : k === 'sensor' ? 1 : 2);
  return Object.entries(labels || {})
    .sort((a, b) => order(a[0]) - order(b[0]) || a[0].localeCompare(b[0]))
    .map(([k, v]) => el('span', { class: 'chip label-' + k, title: k }, el('i', {}, k), ' ', v));
}

function gradeOf(a) {
  return GRADE_RANK[a.grade] ? a.grade : SEV_GRADE[a.severity] || 'blue';
}

function gradeBadge(g) {
  return el('span', { class: 'grade ' + g, title: t('grade.title'), 'data-grade': g }, t('grade.' + g));
}

function titleOf(a) {
  const rule = state.rules.get(a.rule);
  return I18N.pick(a.titles, null) || I18N.pick(rule && rule.titles, null) || a.title ||
    (rule && rule.title) || a.rule;
}

function messageOf(a) { return I18N.pick(a.messages, a.message); }

let toastTimer = null;
function toast(text, isError) {
  const box = document.getElementById('toast');
  box.textContent = text;
  box.className = 'toast' + (isError ? ' error' : '');
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

/* Reads carry the tab's token when it has one: with departments configured
 * (http.department) or http.open_reads off, reads without one are refused. */
async function getJSON(path) {
  const headers = token() ? { 'Authorization': 'Bearer ' + token() } : {};
  const r = await fetch(path, { cache: 'no-store', headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(body.error || ('HTTP ' + r.status));
    e.status = r.status;
    throw e;
  }
  return body;
}

/* ---- health and the connection ---- */

function setPill(id, text, good) {
  const p = document.getElementById(id);
  p.textContent = text;
  p.className = 'pill ' + (good === undefined ? '' : good ? 'good' : 'bad');
}

function showOffline() {
  const b = document.getElementById('offline');
  if (!state.offlineSince) { b.hidden = true; return; }
  b.textContent = t('offline.banner', { time: I18N.time(state.offlineSince) });
  b.hidden = false;
}

function markOffline() {
  setPill('h-status', t('health.unreachable'), false);
  setPill('h-mqtt', t('health.mqtt', { state: '?' }));
  setPill('h-storage', t('health.storage', { state: '?' }));
  setPill('h-live', t('health.reconnecting'), false);
  showOffline();
}

async function loadHealth() {
  let h;
  try {
    h = await getJSON('/api/health');
  } catch (e) {
    if (e.status === undefined || e.status >= 500) {
      if (!state.offlineSince) state.offlineSince = Date.now();
      markOffline();
      return;
    }
    h = {};
  }
  const wasOffline = state.offlineSince;
  state.offlineSince = 0;
  showOffline();
  setPill('h-status', h.status === 'ok' ? t('health.engine_ok') : t('health.engine', { state: h.status }), h.status === 'ok');
  setPill('h-mqtt', h.mqtt === 'connected' ? t('health.mqtt_connected') : t('health.mqtt', { state: h.mqtt }), h.mqtt === 'connected');
  setPill('h-storage', h.storage === 'ok' ? t('health.storage_ok') : t('health.storage', { state: h.storage }), h.storage === 'ok');
  if (wasOffline) {
    /* the engine is back (perhaps restarted): start over */
    toast(t('offline.back'));
    connectEvents();
    loadAll();
  }
}

/* ---- alerts ---- */

function isOpen(a) { return a.state !== 'resolved'; }

async function loadAlerts() {
  try {
    const body = await getJSON('/api/alerts');
    state.alerts = new Map((body.alerts || []).filter(isOpen).map(a => [a.id, a]));
    renderAlerts();
    renderMap();
    renderDistrict();
  } catch (e) {
    if (!state.offlineSince) toast(t('alerts.failed', { error: e.message }), true);
  }
}

async function loadRules() {
  try {
    const body = await getJSON('/api/rules');
    state.rules = new Map((body.rules || []).map(r => [r.name, r]));
    renderAlerts();
  } catch (e) { /* the titles fall back to the alert's own */ }
}

/* ---- signing in: the operator token lives in this tab only ---- */

function token() { return sessionStorage.getItem(TOKEN_KEY); }
function operatorName() { return localStorage.getItem(NAME_KEY) || ''; }

function renderOperator() {
  const signed = !!token();
  document.getElementById('signin-open').hidden = signed;
  document.getElementById('signout').hidden = !signed;
  const who = document.getElementById('operator-name');
  who.hidden = !signed;
  who.textContent = signed ? t('signin.as', { name: operatorName() || t('signin.unnamed') }) : '';
}

function openSignin() {
  document.getElementById('signin-name').value = operatorName();
  document.getElementById('signin-token').value = token() || ''; /* signed in by a link: only the name is missing */
  const d = document.getElementById('signin');
  if (!d.open) d.showModal();
  document.getElementById('signin-token').focus();
}

function signIn(tok, name) {
  sessionStorage.setItem(TOKEN_KEY, tok.trim());
  if (name !== undefined) localStorage.setItem(NAME_KEY, name.trim());
  renderOperator();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  renderOperator();
}

/* A link such as http://host:port/#token=... (make demo prints one) signs
 * this tab in; the token leaves the address bar at once. */
function tokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (!m) return;
  signIn(decodeURIComponent(m[1]));
  history.replaceState(null, '', location.pathname + location.search);
}

/* Runs then() once the tab has a token and the operator's name: at once,
 * or after the sign-in (the API records who does every write, and the audit
 * log keeps it). Returns false when writes are off on this engine. */
function asOperator(then) {
  if (!state.console.writes) { toast(t('ack.no_writes'), true); return false; }
  if (!token() || !operatorName().trim()) {
    state.pendingAck = then;
    openSignin();
    return true;
  }
  then();
  return true;
}

/* POSTs body as JSON to path with the operator token. Resolves to the
 * answer's JSON; rejects with an Error carrying the API's message and
 * .status. A refused token (401, 403) signs the tab out. */
async function postWrite(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    headers: { 'Authorization': 'Bearer ' + token(), 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({}));
  if (r.status === 401 || r.status === 403) {
    signOut();
    const e = new Error((answer.error || 'not allowed') + ' — ' + t('signin.refused'));
    e.status = r.status;
    throw e;
  }
  if (!r.ok) {
    const e = new Error(answer.error || ('HTTP ' + r.status));
    e.status = r.status;
    throw e;
  }
  return answer;
}

/* Acknowledges with the operator's name and a note (optional), asked in a
 * dialog that shows the API's refusal as it comes. */
function acknowledge(a) {
  asOperator(() => Workflows.ask(t('ack.title', { title: titleOf(a) }), t('ack.note'), async note => {
    const body = await postWrite('/api/alerts/' + encodeURIComponent(a.id) + '/ack',
      note ? { by: operatorName().trim(), note } : { by: operatorName().trim() });
    state.alerts.set(a.id, Object.assign({}, a, body, { acknowledged: true }));
    renderAlerts();
    renderDistrict();
    toast(t('ack.done', { id: a.id }));
  }, true));
}

/* ---- the live value beside a message ---- */

/* The sensors an alert covers: those whose labels agree with every label of
 * the alert they have, and that report a metric its rule reads. */
function alertSensors(a, metrics) {
  const labels = Object.entries(a.labels || {});
  return state.sensors.filter(s => {
    const sl = s.labels || {};
    if (!labels.every(([k, v]) => !(k in sl) || sl[k] === v)) return false;
    if (!labels.some(([k]) => k in sl)) return false;
    return metrics.some(m => s.metrics && s.metrics[m]);
  });
}

/* "now · ch4 12.0 %LEL · level 3.10–3.42 (3 sensors)", or null. */
function liveText(a) {
  const rule = state.rules.get(a.rule);
  const metrics = (rule && rule.metrics) || [];
  if (!metrics.length) return null;
  const ss = alertSensors(a, metrics);
  const parts = [];
  for (const m of metrics) {
    const vs = ss.map(s => s.metrics[m]).filter(v => v && typeof v.value === 'number');
    if (!vs.length) continue;
    const unit = vs[0].unit ? ' ' + vs[0].unit : '';
    if (vs.length === 1) {
      parts.push(m + ' ' + fmt(vs[0].value) + unit);
    } else {
      const lo = Math.min(...vs.map(v => v.value)), hi = Math.max(...vs.map(v => v.value));
      parts.push(m + ' ' + t('alert.live_range', { lo: fmt(lo), hi: fmt(hi), n: vs.length }) + unit);
    }
  }
  return parts.length ? parts.join(' · ') : null;
}

function updateLive() {
  for (const span of document.querySelectorAll('.live[data-live-for]')) {
    const a = state.alerts.get(span.dataset.liveFor);
    const text = a && liveText(a);
    span.hidden = !text;
    span.lastChild.textContent = text || '';
  }
}

/* ---- the alert list ---- */

function alertCard(a) {
  const acked = a.acknowledged || a.state === 'acknowledged';
  const stateName = acked ? 'acknowledged' : a.state;
  const sev = SEVERITIES.includes(a.severity) ? a.severity : 'info';
  const g = gradeOf(a);
  const since = a.since || a.at;
  const live = liveText(a);
  const msg = messageOf(a);
  return el('article', {
    class: 'alert ' + sev + ' g-' + g + (acked ? ' acknowledged' : '') + (state.fresh.has(a.id) ? ' new' : ''),
    'data-alert-id': a.id, 'data-state': stateName, 'data-grade': g,
  },
    el('div', { class: 'bar' }),
    el('div', { class: 'body' },
      el('div', { class: 'title' },
        gradeBadge(g),
        el('span', { class: 'name' }, titleOf(a)),
        el('span', { class: 'state ' + stateName }, t('state.' + stateName)),
        a.silenced ? el('span', { class: 'state silenced' }, t('state.silenced')) : null,
        a.stale ? el('span', { class: 'state stale', title: t('state.stale_title') }, t('state.stale')) : null),
      msg ? el('div', { class: 'msg' }, msg) : null,
      el('div', { class: 'live', 'data-live-for': a.id, title: t('alert.live_title'), hidden: !live },
        el('b', {}, t('alert.live')), ' ', el('span', {}, live || '')),
      el('div', { class: 'meta' },
        ...labelChips(a.labels),
        el('span', { class: 'since', 'data-since': since }, t('alert.since', { time: I18N.hm(since), ago: I18N.ago(since) })),
        acked && a.acked_by ? el('span', { class: 'acked-by' }, t('alert.acked_by', { who: a.acked_by }) +
          (a.ack_note ? ': ' + a.ack_note : '')) : null)),
    el('div', { class: 'actions' },
      acked || a.state === 'pending' ? null :
        el('button', { class: 'ack btn', type: 'button', onclick: () => acknowledge(a) },
          t('ack.button')),
      el('button', { class: 'silence btn', type: 'button', onclick: () => Workflows.silenceFrom(a) },
        t('silence.button')),
      a.stale ? el('button', { class: 'close btn', type: 'button', onclick: () => Workflows.closeStale(a) },
        t('close.button')) : null));
}

function sortAlerts(list) {
  return list.sort((x, y) => (GRADE_RANK[gradeOf(y)] - GRADE_RANK[gradeOf(x)]) ||
    ((x.acknowledged ? 1 : 0) - (y.acknowledged ? 1 : 0)) || ((y.since || y.at) - (x.since || x.at)));
}

function collapsed(g) {
  const v = localStorage.getItem(COLLAPSE_KEY + g);
  return v === null ? g === 'blue' : v === '1';
}

/* One group per warning grade, worst first. A collapsed group (blue by
 * default, so a district's many info alerts never push the red ones out of
 * view) shows one line per rule with its count. */
function renderAlerts() {
  const box = document.getElementById('alerts');
  const counts = document.getElementById('alert-counts');
  const list = sortAlerts([...state.alerts.values()]);
  box.replaceChildren();
  counts.replaceChildren();
  if (!list.length) box.append(el('p', { class: 'empty' }, t('alerts.empty')));
  for (const g of GRADES) {
    const group = list.filter(a => gradeOf(a) === g);
    if (!group.length) continue;
    counts.append(el('span', { class: 'count ' + g, title: t('grade.' + g) }, group.length + ' ' + t('grade.short.' + g)));
    const shut = collapsed(g);
    const head = el('button', {
      type: 'button', class: 'group-head', 'aria-expanded': shut ? 'false' : 'true',
      onclick: () => { localStorage.setItem(COLLAPSE_KEY + g, shut ? '0' : '1'); renderAlerts(); },
    }, gradeBadge(g), el('span', { class: 'n' }, t('group.count', { n: group.length })),
    el('span', { class: 'toggle' }, shut ? t('group.show', { n: group.length }) : t('group.hide')));
    const sec = el('section', { class: 'sev-group g-' + g + (shut ? ' collapsed' : ''), 'data-group': g }, head);
    if (shut) {
      const byRule = new Map();
      for (const a of group) {
        const k = titleOf(a);
        byRule.set(k, (byRule.get(k) || 0) + 1);
      }
      sec.append(el('div', { class: 'group-summary' },
        ...[...byRule].map(([title, n]) => el('span', { class: 'chip' }, t('group.rule_count', { title, n })))));
    } else {
      sec.append(...group.map(alertCard));
    }
    box.append(sec);
  }
  state.fresh.clear();
}

function onTransition(ev) {
  let tr;
  try { tr = JSON.parse(ev.data); } catch (e) { return; }
  if (!tr || !tr.id) return;
  if (tr.state === 'resolved') {
    state.alerts.delete(tr.id);
  } else {
    const prev = state.alerts.get(tr.id) || {};
    const next = Object.assign({}, prev, tr);
    next.stale = !!tr.stale; /* a transition says whether it is stale */
    if (tr.state === 'acknowledged') Object.assign(next, { acknowledged: true, acked_by: tr.by, ack_note: tr.note });
    state.alerts.set(tr.id, next);
    state.fresh.add(tr.id);
  }
  renderAlerts();
  renderMap();
  renderDistrict();
  sensorsSoon();
}

/* A firing alert marked stale (its verdict unknown, or its sensors silent)
 * or fresh again: no transition, a notice of its own on the event stream. */
function onStale(ev) {
  let n;
  try { n = JSON.parse(ev.data); } catch (e) { return; }
  const a = n && state.alerts.get(n.id);
  if (!a || !!a.stale === !!n.stale) return;
  state.alerts.set(n.id, Object.assign({}, a, { stale: !!n.stale }));
  renderAlerts();
  renderMap();
  renderDistrict();
}

/* A transition means telemetry arrived: refresh the sensors (and so the map
 * and the charts) shortly after, once per burst. */
let sensorsTimer = null;
function sensorsSoon() {
  if (sensorsTimer) return;
  sensorsTimer = setTimeout(() => { sensorsTimer = null; loadSensors(); loadSeries(); }, 1000);
}

/* The event stream. EventSource retries by itself after a dropped
 * connection, but gives up for good on some failures (a refused connection
 * while the engine restarts, an error status): then a new one is made, with
 * a growing delay, and the list is reloaded whole when it opens. */
function connectEvents() {
  if (!window.EventSource) return;
  if (state.es) state.es.close();
  /* EventSource cannot send headers: the token goes as access_token. */
  const es = new EventSource('/api/events' + (token() ? '?access_token=' + encodeURIComponent(token()) : ''));
  state.es = es;
  es.addEventListener('open', () => { state.esRetry = 1000; setPill('h-live', t('health.live'), true); loadAlerts(); });
  es.addEventListener('error', () => {
    setPill('h-live', t('health.reconnecting'), false);
    if (es.readyState === EventSource.CLOSED && state.es === es) {
      setTimeout(() => { if (state.es === es) connectEvents(); }, state.esRetry);
      state.esRetry = Math.min(state.esRetry * 2, 10000);
    }
  });
  es.addEventListener('transition', onTransition);
  es.addEventListener('stale', onStale);
}

/* ---- sensors ---- */

async function loadSensors() {
  try {
    const body = await getJSON('/api/sensors');
    state.sensors = body.sensors || [];
    renderSensors();
    renderMap();
    renderDistrict();
    fillTopics();
    updateLive();
  } catch (e) {
    if (!state.offlineSince) toast(t('sensors.failed', { error: e.message }), true);
  }
}

function latestText(s) {
  const parts = [];
  for (const [m, v] of Object.entries(s.metrics || {})) {
    if (m === 'lat' || m === 'lon') continue;
    parts.push(m + ' ' + fmt(v && v.value) + (v && v.unit ? ' ' + v.unit : ''));
    if (parts.length === 3) break;
  }
  return parts.join(' · ');
}

function sensorRow(s, selected, onpick) {
  return el('tr', { class: selected ? 'selected' : '', 'data-topic': s.topic, onclick: onpick },
    el('td', { class: 'topic' }, s.topic),
    el('td', {}, districtOf(s.labels) || '–'),
    el('td', {}, latestText(s)),
    el('td', {}, I18N.ago(s.last_ts)),
    el('td', {}, el('span', { class: 'badge ' + (s.stale ? 'stale' : 'fresh') }, t(s.stale ? 'sensors.stale' : 'sensors.fresh'))));
}

function renderSensors() {
  const tbody = document.querySelector('#sensors tbody');
  let fresh = 0, stale = 0;
  tbody.replaceChildren(...state.sensors.map(s => {
    s.stale ? stale++ : fresh++;
    return sensorRow(s, s.topic === state.topic, () => selectSensor(s.topic));
  }));
  document.getElementById('sensor-counts').replaceChildren(
    el('span', { class: 'count fresh' }, t('sensors.count_fresh', { n: fresh })),
    el('span', { class: 'count stale' }, t('sensors.count_stale', { n: stale })));
}

/* ---- the map ---- */

async function loadCity() {
  const box = document.getElementById('map');
  if (!state.console.city_map) {
    box.replaceChildren(el('p', { class: 'empty' }, t('map.none')));
    return;
  }
  try {
    state.city = CityMap.parse(await getJSON('/api/city'));
    renderMap();
  } catch (e) {
    box.replaceChildren(el('p', { class: 'empty' }, t('map.failed', { error: e.message })));
  }
}

function districtStates() {
  const by = new Map();
  for (const a of state.alerts.values()) {
    const d = districtOf(a.labels);
    if (!d) continue;
    const x = by.get(d) || { grade: null, alerts: 0 };
    x.alerts++;
    const g = gradeOf(a);
    if (!x.grade || GRADE_RANK[g] > GRADE_RANK[x.grade]) x.grade = g;
    by.set(d, x);
  }
  return by;
}

/* Where a sensor is: the engine's position for it (its own latest lat/lon
 * readings, else its lat/lon labels), else the map file's Point with its
 * topic. */
function sensorPos(s) {
  const p = s.position;
  if (p && isFinite(p.lat) && isFinite(p.lon)) return [p.lon, p.lat];
  return (state.city && state.city.points.get(s.topic)) || null;
}

function districtName(d) {
  return I18N.pick(d.name, typeof d.name === 'string' ? d.name : d.id);
}

function renderMap() {
  const city = state.city;
  if (!city || !city.project) return;
  const alerting = new Map();
  for (const a of state.alerts.values())
    for (const s of alertSensors(a, ((state.rules.get(a.rule) || {}).metrics) || []))
      if (!alerting.has(s.topic) || GRADE_RANK[gradeOf(a)] > GRADE_RANK[alerting.get(s.topic)])
        alerting.set(s.topic, gradeOf(a));
  const sensors = [];
  for (const s of state.sensors) {
    const pos = sensorPos(s);
    if (!pos) continue;
    sensors.push({ topic: s.topic, pos, cls: (s.stale ? 'stale' : 'fresh') + (alerting.has(s.topic) ? ' g-' + alerting.get(s.topic) : '') });
  }
  CityMap.draw(document.getElementById('map'), city, {
    districts: districtStates(), sensors, selected: state.district,
    name: districtName,
    tip: st => (st.grade ? t('grade.' + st.grade) + ' · ' + t('map.alerts', { n: st.alerts }) : t('map.calm')),
    count: n => t('map.alerts', { n }),
    onDistrict: openDistrict,
    onSensor: topic => { selectSensor(topic); const d = districtOf((state.sensors.find(s => s.topic === topic) || {}).labels); if (d) openDistrict(d, topic); },
  });
  document.getElementById('map-legend').replaceChildren(
    ...GRADES.map(g => el('span', { class: 'key g-' + g }, el('i'), t('grade.short.' + g))),
    el('span', { class: 'key g-none' }, el('i'), t('map.calm')));
}

/* ---- a district's panel: its alerts, sensors and their chart ---- */

/* Opens district id, charting topic, else a sensor of its worst alert,
 * else its first sensor. */
function openDistrict(id, topic) {
  state.district = id;
  const ss = state.sensors.filter(s => districtOf(s.labels) === id);
  state.dtopic = topic || worstSensor(a => districtOf(a.labels) === id) || (ss[0] && ss[0].topic) || null;
  state.dmetric = null;
  document.getElementById('district-panel').hidden = false;
  renderMap();
  renderDistrict();
  loadDistrictSeries();
}

function closeDistrict() {
  state.district = null;
  document.getElementById('district-panel').hidden = true;
  destroyPlot('district-chart');
  renderMap();
}

function renderDistrict() {
  const panel = document.getElementById('district-panel');
  const id = state.district;
  if (!id) return;
  panel.dataset.district = id;
  const d = state.city && state.city.districts.find(x => x.id === id);
  document.getElementById('district-title').textContent =
    t('district.title', { name: d ? districtName(d) : id, id });
  const alerts = sortAlerts([...state.alerts.values()].filter(a => districtOf(a.labels) === id));
  document.getElementById('district-alerts').replaceChildren(...(alerts.length ? alerts.map(alertCard)
    : [el('p', { class: 'empty' }, t('district.no_alerts'))]));
  const ss = state.sensors.filter(s => districtOf(s.labels) === id);
  document.querySelector('#district-sensors tbody').replaceChildren(...ss.map(s =>
    sensorRow(s, s.topic === state.dtopic, () => { state.dtopic = s.topic; state.dmetric = null; renderDistrict(); loadDistrictSeries(); })));
  const s = ss.find(x => x.topic === state.dtopic);
  const metrics = s ? Object.keys(s.metrics || {}).filter(m => m !== 'lat' && m !== 'lon') : [];
  if (!metrics.includes(state.dmetric)) state.dmetric = metrics[0] || null;
  const sel = document.getElementById('district-metric');
  sel.replaceChildren(...metrics.map(m => el('option', { value: m }, m)));
  if (state.dmetric) sel.value = state.dmetric;
}

function loadDistrictSeries() {
  if (state.district) drawSeries('district-chart', state.dtopic, state.dmetric, state.range, 200);
}

/* ---- charts ---- */

/* A sensor of the worst open alert (of those that pass filter), or null:
 * what a chart shows first. */
function worstSensor(filter) {
  const worst = sortAlerts([...state.alerts.values()].filter(a => !filter || filter(a)))[0];
  const ss = worst ? alertSensors(worst, ((state.rules.get(worst.rule) || {}).metrics) || []) : [];
  return ss.length ? ss[0].topic : null;
}

function fillTopics() {
  const sel = document.getElementById('sel-topic');
  const keep = state.topic;
  sel.replaceChildren(...state.sensors.map(s => el('option', { value: s.topic }, s.topic)));
  /* until the operator picks one, the chart follows the worst alert */
  if (!state.topic || state.topicAuto) {
    state.topic = worstSensor() || state.topic || (state.sensors[0] && state.sensors[0].topic) || null;
    state.topicAuto = true;
  }
  if (state.topic) sel.value = state.topic;
  if (keep !== state.topic || !state.metric) fillMetrics();
}

function fillMetrics() {
  const s = state.sensors.find(x => x.topic === state.topic);
  const metrics = s ? Object.keys(s.metrics || {}).filter(m => m !== 'lat' && m !== 'lon') : [];
  const sel = document.getElementById('sel-metric');
  sel.replaceChildren(...metrics.map(m => el('option', { value: m }, m)));
  if (!metrics.includes(state.metric)) state.metric = metrics[0] || null;
  if (state.metric) sel.value = state.metric;
  loadSeries();
}

function selectSensor(topic) {
  state.topic = topic;
  state.topicAuto = false;
  document.getElementById('sel-topic').value = topic;
  renderSensors();
  fillMetrics();
}

function loadSeries() {
  drawSeries('chart', state.topic, state.metric, state.range, 240);
  loadDistrictSeries();
}

function destroyPlot(boxId) {
  const p = state.plots.get(boxId);
  if (p) p.destroy();
  state.plots.delete(boxId);
}

/* Axis labels in the console's time zone, 24-hour: the time within a day,
 * the date across days. */
function axisValues(rangeMs) {
  return (u, splits) => splits.map(s => (rangeMs > 2 * 86400000 ? I18N.md(s * 1000) : I18N.hm(s * 1000)));
}

/* Draws topic/metric over the last rangeMs into the box with id boxId. */
async function drawSeries(boxId, topic, metric, rangeMs, height) {
  const box = document.getElementById(boxId);
  if (!topic || !metric) {
    destroyPlot(boxId);
    box.replaceChildren(el('p', { class: 'empty' }, t('chart.pick')));
    return;
  }
  const to = Date.now(), from = to - rangeMs;
  const step = Math.max(1000, Math.ceil(rangeMs / 300 / 1000) * 1000);
  const q = new URLSearchParams({ topic, metric, from, to, step: step + 'ms' });
  let body;
  try {
    body = await getJSON('/api/series?' + q);
  } catch (e) {
    destroyPlot(boxId);
    box.replaceChildren(el('p', { class: 'empty' }, t('chart.failed', { error: e.message })));
    return;
  }
  const b = body.buckets || [];
  /* The API sends the buckets that hold samples; the chart gets every bucket
   * of the range, empty ones as gaps, so the time axis is the range asked. */
  const st = body.step || step, f0 = Math.floor((body.from || from) / st) * st, t1 = body.to || to;
  const at = new Map(b.map(x => [x.ts, x]));
  const xs = [], avg = [], mn = [], mx = [];
  for (let ts = f0; ts < t1 && xs.length < 20000; ts += st) {
    const x = at.get(ts);
    xs.push(ts / 1000); avg.push(x ? x.avg : null); mn.push(x ? x.min : null); mx.push(x ? x.max : null);
  }
  destroyPlot(boxId);
  if (!window.uPlot) {
    box.replaceChildren(el('p', { class: 'empty' }, t('chart.missing', { n: b.length })));
    return;
  }
  box.replaceChildren();
  if (!b.length) {
    box.append(el('p', { class: 'empty' }, t('chart.no_samples', { metric })));
    return;
  }
  const axis = { stroke: '#8b9bb0', grid: { stroke: '#243142' }, ticks: { stroke: '#243142' } };
  const opts = {
    width: Math.max(280, box.clientWidth || 600), height,
    scales: { x: { time: true, range: () => [f0 / 1000, t1 / 1000] } },
    cursor: { points: { size: 8 } },
    axes: [Object.assign({ values: axisValues(rangeMs) }, axis), axis],
    series: [
      { label: t('chart.time'), value: (u, v) => (v === null ? '–' : I18N.full(v * 1000)) },
      { label: t('chart.avg', { metric }), stroke: '#4da3ff', width: 2, points: { show: true, size: 5, fill: '#4da3ff' } },
      { label: t('chart.min'), stroke: '#3ddc84', width: 1, dash: [4, 4] },
      { label: t('chart.max'), stroke: '#ff9f1a', width: 1, dash: [4, 4] },
    ],
  };
  state.plots.set(boxId, new window.uPlot(opts, [xs, avg, mn, mx], box));
}

/* ---- the clock, in the engine's time zone, 24-hour ---- */

function tick() {
  const now = Date.now();
  document.getElementById('clock-time').textContent = I18N.time(now);
  document.getElementById('clock-date').textContent = I18N.date(now);
  document.getElementById('clock-zone').textContent = t('clock.zone', { zone: I18N.tz });
}

function refreshAges() {
  for (const e of document.querySelectorAll('.since[data-since]')) {
    const ms = Number(e.dataset.since);
    e.textContent = t('alert.since', { time: I18N.hm(ms), ago: I18N.ago(ms) });
  }
  if (state.offlineSince) showOffline();
}

/* Everything drawn again in the new language. */
function switchLanguage() {
  I18N.switchTo(I18N.other());
  tick();
  renderOperator();
  renderAlerts();
  renderSensors();
  renderMap();
  renderDistrict();
  Workflows.render();
  if (state.offlineSince) markOffline();
  else { loadSeries(); loadHealth(); }
}

async function loadConsole() {
  try {
    state.console = Object.assign(state.console, await getJSON('/api/console'));
  } catch (e) { /* an older engine: defaults */ }
  I18N.setZone(state.console.time_zone);
}

function loadAll() {
  loadRules();
  loadAlerts();
  loadSensors();
}

/* ---- start ---- */

async function start() {
  await I18N.start();
  await loadConsole();
  tick();
  tokenFromFragment();
  renderOperator();
  document.getElementById('lang-switch').addEventListener('click', switchLanguage);
  document.getElementById('signin-open').addEventListener('click', openSignin);
  document.getElementById('signout').addEventListener('click', signOut);
  document.getElementById('signin-cancel').addEventListener('click', () => {
    state.pendingAck = null;
    document.getElementById('signin').close();
  });
  document.getElementById('signin-form').addEventListener('submit', () => {
    signIn(document.getElementById('signin-token').value, document.getElementById('signin-name').value);
    const p = state.pendingAck;
    state.pendingAck = null;
    if (p) p();
  });
  document.getElementById('district-close').addEventListener('click', closeDistrict);
  Workflows.start();
  document.addEventListener('keydown', e => { if (e.key === 'Escape' && state.district) closeDistrict(); });
  document.getElementById('sel-topic').addEventListener('change', e => selectSensor(e.target.value));
  document.getElementById('sel-metric').addEventListener('change', e => { state.metric = e.target.value; loadSeries(); });
  document.getElementById('district-metric').addEventListener('change', e => { state.dmetric = e.target.value; loadDistrictSeries(); });
  for (const b of document.querySelectorAll('.ranges button')) {
    b.addEventListener('click', () => {
      state.range = Number(b.dataset.range);
      for (const o of document.querySelectorAll('.ranges button')) o.classList.toggle('on', o === b);
      loadSeries();
    });
  }
  window.addEventListener('resize', () => {
    for (const [id, p] of state.plots) {
      const box = document.getElementById(id);
      p.setSize({ width: Math.max(280, box.clientWidth), height: p.height });
    }
  });
  setInterval(tick, 1000);
  loadHealth();
  loadAll();
  loadCity();
  connectEvents();
  setInterval(loadHealth, HEALTH_EVERY);
  setInterval(() => { if (!state.offlineSince) loadSensors(); }, 5000);
  setInterval(() => { if (!state.offlineSince) loadAlerts(); }, 30000); /* a safety net */
  setInterval(() => { if (!state.offlineSince) loadSeries(); }, 60000);
  setInterval(refreshAges, 5000);
}

start();
