/* citybrain dashboard: plain JS, no build step. Reads the HTTP API of the
 * engine that serves this page; live alert transitions come from
 * /api/events (EventSource reconnects and resumes with Last-Event-ID by
 * itself). Text from the API is always set with textContent, never as HTML. */
'use strict';

const SEVERITIES = ['critical', 'major', 'warning', 'info'];
const RANK = { critical: 4, major: 3, warning: 2, info: 1 };
const TOKEN_KEY = 'citybrain.token';
const OPERATOR_KEY = 'citybrain.operator';
/* The four-colour warning grade (red I, orange II, yellow III, blue IV). */
const GRADE_LEVEL = { red: 'I', orange: 'II', yellow: 'III', blue: 'IV' };
const SEV_GRADE = { critical: 'red', major: 'orange', warning: 'yellow', info: 'blue' };

const state = {
  alerts: new Map(),   // id -> alert object
  sensors: [],
  fresh: new Set(),    // ids that just changed: flash once
  topic: null,
  metric: null,
  range: 86400000,
  plot: null,
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

function ago(ms) {
  if (ms === null || ms === undefined) return 'never';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min ago';
  return Math.floor(s / 86400) + ' d ago';
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
  return GRADE_LEVEL[a.grade] ? a.grade : SEV_GRADE[a.severity] || 'blue';
}

let toastTimer = null;
function toast(text, isError) {
  const t = document.getElementById('toast');
  t.textContent = text;
  t.className = 'toast' + (isError ? ' error' : '');
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function getJSON(path) {
  const r = await fetch(path, { cache: 'no-store' });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
  return body;
}

/* ---- health ---- */

function setPill(id, text, good) {
  const p = document.getElementById(id);
  p.textContent = text;
  p.className = 'pill ' + (good === undefined ? '' : good ? 'good' : 'bad');
}

async function loadHealth() {
  try {
    const h = await getJSON('/api/health');
    setPill('h-status', h.status === 'ok' ? 'engine ok' : 'engine ' + h.status, h.status === 'ok');
    setPill('h-mqtt', 'MQTT ' + h.mqtt, h.mqtt === 'connected');
    setPill('h-storage', 'storage ' + h.storage, h.storage === 'ok');
  } catch (e) {
    setPill('h-status', 'engine unreachable', false);
  }
}

/* ---- alerts ---- */

function isOpen(a) { return a.state !== 'resolved'; }

async function loadAlerts() {
  try {
    const body = await getJSON('/api/alerts');
    state.alerts = new Map((body.alerts || []).filter(isOpen).map(a => [a.id, a]));
    renderAlerts();
    renderDistricts();
  } catch (e) {
    toast('alerts: ' + e.message, true);
  }
}

function token() {
  let t = localStorage.getItem(TOKEN_KEY);
  if (!t) {
    t = window.prompt('API token to acknowledge alerts (kept in this browser):');
    if (t) localStorage.setItem(TOKEN_KEY, t.trim());
  }
  return t ? t.trim() : null;
}

// Who acknowledges: the API records it (and the audit log keeps it), so the
// page asks once for the operator's name and keeps it in this browser.
function operator() {
  let n = localStorage.getItem(OPERATOR_KEY);
  if (!n || !n.trim()) {
    n = window.prompt('Your name, recorded with each acknowledgement:');
    if (n && n.trim()) localStorage.setItem(OPERATOR_KEY, n.trim());
  }
  return n && n.trim() ? n.trim() : null;
}

async function acknowledge(a, button) {
  const t = token();
  if (!t) return;
  const by = operator();
  if (!by) return;
  button.disabled = true;
  try {
    const r = await fetch('/api/alerts/' + encodeURIComponent(a.id) + '/ack', {
      method: 'POST',
      headers: { 'Authorization': 'Bearer ' + t, 'Content-Type': 'application/json' },
      body: JSON.stringify({ by }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401 || r.status === 403) {
      localStorage.removeItem(TOKEN_KEY);
      throw new Error(body.error || 'not allowed');
    }
    if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
    state.alerts.set(a.id, Object.assign({}, a, body, { acknowledged: true }));
    renderAlerts();
    toast('acknowledged ' + a.id);
  } catch (e) {
    button.disabled = false;
    toast('acknowledge failed: ' + e.message, true);
  }
}

function alertCard(a) {
  const acked = a.acknowledged || a.state === 'acknowledged';
  const stateName = acked ? 'acknowledged' : a.state;
  const sev = SEVERITIES.includes(a.severity) ? a.severity : 'info';
  const card = el('article', {
    class: 'alert ' + sev + (acked ? ' acknowledged' : '') + (state.fresh.has(a.id) ? ' new' : ''),
    'data-alert-id': a.id, 'data-state': stateName,
  },
    el('div', { class: 'bar' }),
    el('div', { class: 'body' },
      el('div', { class: 'title' },
        el('span', { class: 'grade ' + gradeOf(a), title: 'warning grade' },
          gradeOf(a) + ' ' + GRADE_LEVEL[gradeOf(a)]),
        el('span', { class: 'name' }, a.title || a.rule),
        el('span', { class: 'state ' + stateName }, stateName),
        a.silenced ? el('span', { class: 'state silenced' }, 'silenced') : null,
        a.stale ? el('span', { class: 'state stale', title: 'no evidence either way: its sensors are silent or its condition is unknown; it stays as it is until they speak' },
          'stale') : null),
      a.message ? el('div', { class: 'msg' }, a.message) : null,
      el('div', { class: 'meta' },
        ...labelChips(a.labels),
        el('span', { class: 'since', 'data-since': a.since || a.at }, 'since ' + ago(a.since || a.at)),
        acked && a.acked_by ? el('span', { class: 'acked-by' }, '✓ ' + a.acked_by) : null)),
    acked || a.state === 'pending' ? el('span') :
      el('button', { class: 'ack', type: 'button', onclick: ev => acknowledge(a, ev.currentTarget) },
        'Acknowledge'));
  return card;
}

function renderAlerts() {
  const box = document.getElementById('alerts');
  const counts = document.getElementById('alert-counts');
  const list = [...state.alerts.values()];
  box.replaceChildren();
  counts.replaceChildren();
  if (!list.length) {
    box.append(el('p', { class: 'empty' }, 'No open alerts. All quiet.'));
  }
  for (const sev of SEVERITIES) {
    const group = list.filter(a => (SEVERITIES.includes(a.severity) ? a.severity : 'info') === sev)
      .sort((x, y) => (x.acknowledged - y.acknowledged) || ((y.since || y.at) - (x.since || x.at)));
    if (!group.length) continue;
    counts.append(el('span', { class: 'count ' + sev, title: sev }, group.length + ' ' + sev));
    box.append(el('div', { class: 'sev-group ' + sev }, el('h3', {}, sev), ...group.map(alertCard)));
  }
  state.fresh.clear();
}

function onTransition(ev) {
  let t;
  try { t = JSON.parse(ev.data); } catch (e) { return; }
  if (!t || !t.id) return;
  if (t.state === 'resolved') {
    state.alerts.delete(t.id);
  } else {
    const prev = state.alerts.get(t.id) || {};
    const next = Object.assign({}, prev, t);
    if (t.state === 'acknowledged') next.acknowledged = true;
    state.alerts.set(t.id, next);
    state.fresh.add(t.id);
  }
  renderAlerts();
  renderDistricts();
  sensorsSoon();
}

/* A transition means telemetry arrived: refresh the sensors (and so the
 * districts and the chart) shortly after, once per burst. */
let sensorsTimer = null;
function sensorsSoon() {
  if (sensorsTimer) return;
  sensorsTimer = setTimeout(() => { sensorsTimer = null; loadSensors(); loadSeries(); }, 1000);
}

function connectEvents() {
  if (!window.EventSource) return;
  const es = new EventSource('/api/events');
  es.addEventListener('open', () => { setPill('h-live', 'live', true); loadAlerts(); });
  es.addEventListener('error', () => setPill('h-live', 'reconnecting…', false));
  es.addEventListener('transition', onTransition);
}

/* ---- sensors and districts ---- */

async function loadSensors() {
  try {
    const body = await getJSON('/api/sensors');
    state.sensors = body.sensors || [];
    renderSensors();
    renderDistricts();
    fillTopics();
  } catch (e) {
    toast('sensors: ' + e.message, true);
  }
}

function latestText(s) {
  const parts = [];
  for (const [m, v] of Object.entries(s.metrics || {})) {
    parts.push(m + ' ' + fmt(v && v.value) + (v && v.unit ? ' ' + v.unit : ''));
    if (parts.length === 3) break;
  }
  return parts.join(' · ');
}

function renderSensors() {
  const tbody = document.querySelector('#sensors tbody');
  tbody.replaceChildren();
  let fresh = 0, stale = 0;
  for (const s of state.sensors) {
    s.stale ? stale++ : fresh++;
    tbody.append(el('tr', {
      class: s.topic === state.topic ? 'selected' : '', 'data-topic': s.topic,
      onclick: () => selectSensor(s.topic),
    },
      el('td', { class: 'topic' }, s.topic),
      el('td', {}, districtOf(s.labels) || '–'),
      el('td', {}, latestText(s)),
      el('td', {}, ago(s.last_ts)),
      el('td', {}, el('span', { class: 'badge ' + (s.stale ? 'stale' : 'fresh') }, s.stale ? 'stale' : 'fresh'))));
  }
  const c = document.getElementById('sensor-counts');
  c.replaceChildren(el('span', { class: 'count fresh' }, fresh + ' fresh'),
    el('span', { class: 'count stale' }, stale + ' stale'));
}

function renderDistricts() {
  const by = new Map();
  const get = d => {
    if (!by.has(d)) by.set(d, { name: d, alerts: 0, worst: null, fresh: 0, stale: 0, kinds: new Set() });
    return by.get(d);
  };
  for (const s of state.sensors) {
    const d = districtOf(s.labels);
    if (!d) continue;
    s.stale ? get(d).stale++ : get(d).fresh++;
    if (s.labels && s.labels.kind) get(d).kinds.add(s.labels.kind);
  }
  for (const a of state.alerts.values()) {
    const d = districtOf(a.labels);
    if (!d) continue;
    const x = get(d);
    x.alerts++;
    if (!x.worst || (RANK[a.severity] || 0) > (RANK[x.worst] || 0)) x.worst = a.severity;
  }
  const box = document.getElementById('districts');
  box.replaceChildren();
  const list = [...by.values()].sort((a, b) =>
    ((RANK[b.worst] || 0) - (RANK[a.worst] || 0)) || a.name.localeCompare(b.name));
  if (!list.length) box.append(el('p', { class: 'empty' }, 'No district labels yet.'));
  for (const x of list) {
    const grade = x.worst ? SEV_GRADE[x.worst] : 'none';
    box.append(el('div', { class: 'district ' + (x.worst || 'calm') + ' g-' + grade, 'data-district': x.name },
      el('div', { class: 'name' }, x.name,
        x.worst ? el('span', { class: 'grade ' + grade }, grade + ' ' + GRADE_LEVEL[grade]) : null),
      el('div', { class: 'line' }, el('b', {}, String(x.alerts)), x.alerts === 1 ? ' alert' : ' alerts',
        x.worst ? ' · worst ' + x.worst : ''),
      el('div', { class: 'line' }, el('b', {}, String(x.fresh)), ' fresh · ',
        el('b', { class: x.stale ? 'stale-n' : '' }, String(x.stale)), ' stale'),
      x.kinds.size ? el('div', { class: 'line kinds' }, [...x.kinds].sort().join(' · ')) : null));
  }
}

/* ---- the chart ---- */

function fillTopics() {
  const sel = document.getElementById('sel-topic');
  const keep = state.topic;
  sel.replaceChildren(...state.sensors.map(s => el('option', { value: s.topic }, s.topic)));
  if (!state.topic && state.sensors.length) state.topic = state.sensors[0].topic;
  if (state.topic) sel.value = state.topic;
  if (keep !== state.topic || !state.metric) fillMetrics();
}

function fillMetrics() {
  const s = state.sensors.find(x => x.topic === state.topic);
  const metrics = s ? Object.keys(s.metrics || {}) : [];
  const sel = document.getElementById('sel-metric');
  sel.replaceChildren(...metrics.map(m => el('option', { value: m }, m)));
  if (!metrics.includes(state.metric)) state.metric = metrics[0] || null;
  if (state.metric) sel.value = state.metric;
  loadSeries();
}

function selectSensor(topic) {
  state.topic = topic;
  document.getElementById('sel-topic').value = topic;
  renderSensors();
  fillMetrics();
}

async function loadSeries() {
  const box = document.getElementById('chart');
  if (!state.topic || !state.metric) return;
  const to = Date.now(), from = to - state.range;
  const step = Math.max(1000, Math.ceil(state.range / 300 / 1000) * 1000);
  const q = new URLSearchParams({ topic: state.topic, metric: state.metric, from, to, step: step + 'ms' });
  let body;
  try {
    body = await getJSON('/api/series?' + q);
  } catch (e) {
    box.replaceChildren(el('p', { class: 'empty' }, 'series: ' + e.message));
    return;
  }
  const b = body.buckets || [];
  /* The API sends the buckets that hold samples; the chart gets every bucket
   * of the range, empty ones as gaps, so the time axis is the range asked. */
  const st = body.step || step, f0 = Math.floor((body.from || from) / st) * st, t1 = body.to || to;
  const at = new Map(b.map(x => [x.ts, x]));
  const xs = [], avg = [], mn = [], mx = [];
  for (let t = f0; t < t1 && xs.length < 20000; t += st) {
    const x = at.get(t);
    xs.push(t / 1000); avg.push(x ? x.avg : null); mn.push(x ? x.min : null); mx.push(x ? x.max : null);
  }
  const data = [xs, avg, mn, mx];
  if (!window.uPlot) {
    box.replaceChildren(el('p', { class: 'empty' }, b.length + ' buckets (chart library missing: run make dashboard)'));
    return;
  }
  const width = Math.max(300, box.clientWidth || 600);
  const opts = {
    width, height: 260,
    scales: { x: { time: true, range: () => [f0 / 1000, t1 / 1000] } },
    cursor: { points: { size: 8 } },
    axes: [
      { stroke: '#8b9bb0', grid: { stroke: '#243142' }, ticks: { stroke: '#243142' } },
      { stroke: '#8b9bb0', grid: { stroke: '#243142' }, ticks: { stroke: '#243142' } },
    ],
    series: [
      {},
      { label: state.metric + ' avg', stroke: '#4da3ff', width: 2, points: { show: true, size: 5, fill: '#4da3ff' } },
      { label: 'min', stroke: '#3ddc84', width: 1, dash: [4, 4] },
      { label: 'max', stroke: '#ff9f1a', width: 1, dash: [4, 4] },
    ],
  };
  if (state.plot) state.plot.destroy();
  box.replaceChildren();
  if (!b.length) {
    box.append(el('p', { class: 'empty' }, 'No samples for ' + state.metric + ' in this range.'));
    state.plot = null;
    return;
  }
  state.plot = new window.uPlot(opts, data, box);
}

function refreshAges() {
  for (const e of document.querySelectorAll('.since[data-since]'))
    e.textContent = 'since ' + ago(Number(e.dataset.since));
}

/* ---- start ---- */

function tick() {
  document.getElementById('clock').textContent =
    new Date().toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function start() {
  document.getElementById('sel-topic').addEventListener('change', e => selectSensor(e.target.value));
  document.getElementById('sel-metric').addEventListener('change', e => { state.metric = e.target.value; loadSeries(); });
  for (const b of document.querySelectorAll('.ranges button')) {
    b.addEventListener('click', () => {
      state.range = Number(b.dataset.range);
      for (const o of document.querySelectorAll('.ranges button')) o.classList.toggle('on', o === b);
      loadSeries();
    });
  }
  window.addEventListener('resize', () => {
    const box = document.getElementById('chart');
    if (state.plot) state.plot.setSize({ width: Math.max(300, box.clientWidth), height: 260 });
  });
  tick();
  setInterval(tick, 1000);
  loadHealth();
  loadAlerts();
  loadSensors();
  connectEvents();
  setInterval(loadHealth, 10000);
  setInterval(loadSensors, 10000);
  setInterval(loadAlerts, 30000);   /* a safety net: events keep it current */
  setInterval(loadSeries, 60000);
  setInterval(refreshAges, 5000);   /* keeps "since" fresh */
}

start();
