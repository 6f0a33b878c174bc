/* The operator's workflows beyond acknowledging (docs/console.md): a
 * silence from an alert, the silences list with Expire, closing a stale
 * alert by hand, the alert history, the audit log and the shift handover.
 * Every write goes to the API the terminal uses too (docs/alerts.md), with
 * its checks; the API's error message is shown as it comes. Uses app.js's
 * helpers (el, t, getJSON, postWrite, asOperator, operatorName, toast). */
'use strict';

const Workflows = (() => {
  const OPS = ['=', '!=', '=~', '!~'];
  const HOUR = 3600000;
  const PRESETS = [['last_hour', HOUR], ['shift', 8 * HOUR], ['day', 24 * HOUR]];
  const AUDIT_ACTIONS = ['ack', 'silence_create', 'silence_expire', 'silence_delete', 'close', 'rules_reload'];
  const page = { name: null, range: HOUR, rule: '', severity: '', action: '', shift: 'last8' };

  /* ---- a dialog that asks one thing (a comment, a note) ---- */

  /* Opens the ask dialog titled title with a text field labelled label,
   * required unless optional; on submit calls send(text), a promise. The
   * dialog stays open with the API's message when send rejects, and closes
   * when it resolves. */
  function ask(title, label, send, optional) {
    const d = document.getElementById('ask');
    document.getElementById('ask-title').textContent = title;
    document.getElementById('ask-label').textContent = label;
    const input = document.getElementById('ask-text');
    const err = document.getElementById('ask-error');
    input.value = '';
    input.required = !optional;
    err.hidden = true;
    const form = document.getElementById('ask-form');
    form.onsubmit = async ev => {
      ev.preventDefault();
      try {
        await send(input.value.trim());
        d.close();
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
      }
    };
    d.showModal();
    input.focus();
  }

  /* ---- silences ---- */

  function matcherRow(m) {
    const op = el('select', { class: 'm-op', 'aria-label': t('silence.op') },
      ...OPS.map(o => el('option', { value: o }, o)));
    op.value = m.op || '=';
    const row = el('div', { class: 'matcher' },
      el('input', { class: 'm-name', value: m.name, 'aria-label': t('silence.name'), required: true }),
      op,
      el('input', { class: 'm-value', value: m.value, 'aria-label': t('silence.value') }),
      el('button', { type: 'button', class: 'btn m-remove', title: t('silence.remove'), onclick: () => row.remove() }, '×'));
    return row;
  }

  /* The matchers that select this alert instance: its rule and its labels. */
  function matchersOf(a) {
    return [{ name: 'rule', value: a.rule }].concat(Object.entries(a.labels || {}).map(([name, value]) => ({ name, value })));
  }

  /* The dialog's silence as the API takes it, with ends from the duration
   * chosen (custom: a number of hours). */
  function silenceBody() {
    const sel = document.getElementById('silence-duration');
    const hours = sel.value === 'custom' ? Number(document.getElementById('silence-hours').value) : Number(sel.value);
    return {
      matchers: [...document.querySelectorAll('#silence-matchers .matcher')].map(r => ({
        name: r.querySelector('.m-name').value.trim(), op: r.querySelector('.m-op').value, value: r.querySelector('.m-value').value,
      })),
      ends: Date.now() + Math.round(hours * HOUR),
      comment: document.getElementById('silence-comment').value.trim(),
      created_by: operatorName().trim(),
    };
  }

  function openSilenceDialog(a) {
    document.getElementById('silence-for').textContent = t('silence.for', { title: titleOf(a), id: a.id });
    document.getElementById('silence-matchers').replaceChildren(...matchersOf(a).map(matcherRow));
    document.getElementById('silence-duration').value = '4';
    document.getElementById('silence-hours').hidden = true;
    document.getElementById('silence-comment').value = '';
    document.getElementById('silence-error').hidden = true;
    document.getElementById('silence-by').textContent = t('silence.by', { who: operatorName() });
    document.getElementById('silence').showModal();
  }

  async function submitSilence(ev) {
    ev.preventDefault();
    const err = document.getElementById('silence-error');
    try {
      const s = await postWrite('/api/silences', silenceBody());
      document.getElementById('silence').close();
      toast(t('silence.done', { id: s.id }));
      open('silences');
    } catch (e) {
      err.textContent = t('silence.failed', { error: e.message });
      err.hidden = false;
    }
  }

  function expire(s) {
    asOperator(() => ask(t('silence.expire_title', { id: s.id }), t('silence.expire_comment'), async comment => {
      await postWrite('/api/silences/' + s.id + '/expire', { by: operatorName().trim(), comment });
      toast(t('silence.expired', { id: s.id }));
      render();
    }));
  }

  function matcherText(m) { return m.name + (m.op || '=') + JSON.stringify(m.value); }

  async function renderSilences(body) {
    const list = (await getJSON('/api/silences')).silences || [];
    /* active first, then scheduled, then expired; newest first within */
    const rank = { active: 0, scheduled: 1, expired: 2 };
    list.sort((x, y) => (rank[x.state] - rank[y.state]) || (y.created_at - x.created_at));
    body.replaceChildren(list.length ? table(['silences.id', 'silences.state', 'silences.matchers', 'silences.window',
      'silences.by', 'silences.comment', ''], list.map(s => el('tr', { 'data-silence-id': s.id, class: 'st-' + s.state },
      el('td', {}, '#' + s.id),
      el('td', {}, el('span', { class: 'state ' + s.state }, t('silences.' + s.state))),
      el('td', { class: 'mono' }, s.matchers.map(matcherText).join(', ')),
      el('td', {}, I18N.full(s.starts) + ' – ' + I18N.full(s.ends)),
      el('td', {}, s.created_by, s.expired_by ? el('div', { class: 'sub' }, t('silences.expired_by', { who: s.expired_by })) : null),
      el('td', {}, s.comment),
      el('td', {}, s.state === 'expired' ? null :
        el('button', { type: 'button', class: 'btn expire', onclick: () => expire(s) }, t('silences.expire'))))))
      : el('p', { class: 'empty' }, t('silences.none')));
  }

  /* ---- closing a stale alert by hand ---- */

  function closeStale(a) {
    asOperator(() => ask(t('close.title', { title: titleOf(a) }), t('close.note'), async note => {
      await postWrite('/api/alerts/' + encodeURIComponent(a.id) + '/close', { by: operatorName().trim(), note });
      state.alerts.delete(a.id);
      renderAlerts();
      renderDistrict();
      toast(t('close.done', { id: a.id }));
    }));
  }

  /* ---- history, audit, handover ---- */

  function table(heads, rows) {
    return el('div', { class: 'table-wrap' }, el('table', { class: 'log' },
      el('thead', {}, el('tr', {}, ...heads.map(h => el('th', {}, h ? t(h) : '')))),
      el('tbody', {}, ...rows)));
  }

  function transitionRow(tr) {
    const g = gradeOf(tr);
    return el('tr', { 'data-transition': tr.id + '@' + tr.at, 'data-state': tr.state },
      el('td', { class: 'when' }, I18N.full(tr.at)),
      el('td', {}, gradeBadge(g)),
      el('td', {}, titleOf(tr), el('div', { class: 'sub mono' }, tr.id)),
      el('td', {}, el('span', { class: 'state ' + tr.state }, t('state.' + tr.state))),
      el('td', {}, messageOf(tr) || ''),
      el('td', {}, tr.by ? tr.by + (tr.note ? ': ' + tr.note : '') : (tr.reason || '')));
  }

  const TRANSITION_HEADS = ['history.at', 'history.grade', 'history.alert', 'history.state', 'history.message', 'history.by'];

  async function history(from, to, rule) {
    const q = new URLSearchParams({ from, to, limit: 10000 });
    if (rule) q.set('rule', rule);
    const list = (await getJSON('/api/alerts/history?' + q)).transitions || [];
    return list.sort((x, y) => y.at - x.at);  /* newest first */
  }

  async function renderHistory(body) {
    const to = Date.now();
    let list = await history(to - page.range, to + 1, page.rule);
    if (page.severity) list = list.filter(tr => tr.severity === page.severity);
    body.replaceChildren(list.length ? table(TRANSITION_HEADS, list.map(transitionRow))
      : el('p', { class: 'empty' }, t('history.none')));
  }

  async function renderAudit(body) {
    const to = Date.now();
    const q = new URLSearchParams({ from: to - page.range, to: to + 1 });
    if (page.action) q.set('action', page.action);
    const list = (await getJSON('/api/audit?' + q)).entries || [];
    body.replaceChildren(list.length ? table(['audit.at', 'audit.who', 'audit.action', 'audit.target', 'audit.note'],
      list.map(e => el('tr', { 'data-audit-seq': e.seq, 'data-action': e.action },
        el('td', { class: 'when' }, I18N.full(e.at)),
        el('td', {}, e.who),
        el('td', {}, t('audit.action.' + e.action)),
        el('td', { class: 'mono' }, e.target === null ? '–' : e.target),
        el('td', {}, e.note || ''))))
      : el('p', { class: 'empty' }, t('audit.none')));
  }

  /* Midnight of the day of ms in the console's time zone, as ms. */
  function zoneMidnight(ms) {
    const parts = {};
    for (const p of new Intl.DateTimeFormat('en-US', { timeZone: I18N.tz, hourCycle: 'h23', year: 'numeric', month: 'numeric',
      day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' }).formatToParts(new Date(ms))) parts[p.type] = Number(p.value);
    const wall = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
    const offset = wall - Math.floor(ms / 1000) * 1000;   /* the zone's offset from UTC then */
    return Date.UTC(parts.year, parts.month - 1, parts.day) - offset;
  }

  /* The shift chosen: [from, to). last8 is the last 8 hours; "HH" a shift
   * of 8 hours starting at HH:00 today in the console's time zone (the
   * previous day's when it has not started yet). */
  function shiftWindow(now) {
    if (page.shift === 'last8') return [now - 8 * HOUR, now];
    let from = zoneMidnight(now) + Number(page.shift) * HOUR;
    if (from > now) from -= 24 * HOUR;
    return [from, Math.min(from + 8 * HOUR, now)];
  }

  async function renderHandover(body) {
    const now = Date.now();
    const [from, to] = shiftWindow(now);
    const list = await history(from, to + 1, '');
    const by = s => list.filter(tr => tr.state === s);
    const open = sortAlerts([...state.alerts.values()].filter(a =>
      !(a.acknowledged || a.state === 'acknowledged') && (a.state === 'firing' || a.state === 'escalated')));
    const section = (key, rows, heads) => el('section', { class: 'handover-part', 'data-part': key },
      el('h3', {}, t('handover.' + key, { n: rows.length })),
      rows.length ? table(heads || TRANSITION_HEADS, rows) : el('p', { class: 'empty' }, t('handover.nothing')));
    body.replaceChildren(
      el('p', { class: 'handover-window' }, t('handover.window', { from: I18N.full(from), to: I18N.full(to), zone: I18N.tz, who: operatorName() || '–' })),
      section('unacked', open.map(a => el('tr', { 'data-alert-id': a.id },
        el('td', { class: 'when' }, I18N.full(a.since || a.at)),
        el('td', {}, gradeBadge(gradeOf(a))),
        el('td', {}, titleOf(a), el('div', { class: 'sub mono' }, a.id)),
        el('td', {}, el('span', { class: 'state ' + a.state }, t('state.' + a.state))),
        el('td', {}, messageOf(a) || ''),
        el('td', {}, a.stale ? t('state.stale') : ''))),
      ['handover.since', 'history.grade', 'history.alert', 'history.state', 'history.message', '']),
      section('fired', by('firing').map(transitionRow)),
      section('escalated', by('escalated').map(transitionRow)),
      section('acknowledged', by('acknowledged').map(transitionRow)),
      section('resolved', by('resolved').map(transitionRow)));
  }

  /* ---- the page: one of silences, history, audit, handover over the grid ---- */

  const PAGES = { silences: renderSilences, history: renderHistory, audit: renderAudit, handover: renderHandover };

  function presetButtons() {
    return el('div', { class: 'ranges', role: 'group', 'aria-label': t('page.range') },
      ...PRESETS.map(([k, ms]) => el('button', { type: 'button', class: page.range === ms ? 'on' : '', 'data-preset': k,
        onclick: () => { page.range = ms; render(); } }, t('page.preset.' + k))));
  }

  function selectOf(id, value, options, onchange) {
    const s = el('select', { id, onchange: e => { onchange(e.target.value); render(); } },
      ...options.map(([v, label]) => el('option', { value: v }, label)));
    s.value = value;
    return s;
  }

  function controls() {
    if (page.name === 'history') {
      return [presetButtons(),
        selectOf('history-rule', page.rule, [['', t('history.all_rules')]].concat([...state.rules.keys()].sort()
          .map(r => [r, (I18N.pick((state.rules.get(r) || {}).titles, null) || r) + ' (' + r + ')'])), v => { page.rule = v; }),
        selectOf('history-severity', page.severity, [['', t('history.all_grades')]].concat(SEVERITIES
          .map(s => [s, t('grade.' + SEV_GRADE[s])])), v => { page.severity = v; })];
    }
    if (page.name === 'audit') {
      return [presetButtons(), selectOf('audit-action', page.action, [['', t('audit.all_actions')]].concat(AUDIT_ACTIONS
        .map(a => [a, t('audit.action.' + a)])), v => { page.action = v; })];
    }
    if (page.name === 'handover') {
      return [selectOf('handover-shift', page.shift, [['last8', t('handover.last8')], ['0', '00:00–08:00'], ['8', '08:00–16:00'],
        ['16', '16:00–24:00']], v => { page.shift = v; }),
      el('button', { type: 'button', class: 'btn', id: 'handover-print', onclick: () => window.print() }, t('handover.print'))];
    }
    return [];
  }

  async function render() {
    const box = document.getElementById('page');
    if (!page.name) return;
    document.getElementById('page-title').textContent = t('page.' + page.name);
    document.getElementById('page-controls').replaceChildren(...controls());
    const body = document.getElementById('page-body');
    box.dataset.page = page.name;
    try {
      await PAGES[page.name](body);
    } catch (e) {
      body.replaceChildren(el('p', { class: 'empty error' }, t('page.failed', { error: e.message })));
    }
  }

  function open(name) {
    page.name = name;
    document.getElementById('page').hidden = false;
    document.body.classList.add('on-page');
    for (const b of document.querySelectorAll('nav.pages button')) b.classList.toggle('on', b.dataset.page === name);
    render();
  }

  function close() {
    page.name = null;
    document.getElementById('page').hidden = true;
    document.body.classList.remove('on-page');
    for (const b of document.querySelectorAll('nav.pages button')) b.classList.remove('on');
  }

  function start() {
    for (const b of document.querySelectorAll('nav.pages button')) b.addEventListener('click', () => open(b.dataset.page));
    document.getElementById('page-close').addEventListener('click', close);
    document.getElementById('silence-form').addEventListener('submit', submitSilence);
    document.getElementById('silence-cancel').addEventListener('click', () => document.getElementById('silence').close());
    document.getElementById('ask-cancel').addEventListener('click', () => document.getElementById('ask').close());
    document.getElementById('silence-add').addEventListener('click', () =>
      document.getElementById('silence-matchers').append(matcherRow({ name: '', value: '' })));
    document.getElementById('silence-duration').addEventListener('change', e => {
      document.getElementById('silence-hours').hidden = e.target.value !== 'custom';
    });
    const p = new URLSearchParams(location.search).get('page');
    if (p && PAGES[p]) open(p);
  }

  return {
    start, open, close, render, closeStale, ask,
    get page() { return page.name; },
    silenceFrom: a => asOperator(() => openSilenceDialog(a)),
  };
})();
