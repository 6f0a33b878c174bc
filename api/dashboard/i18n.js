/* The console's languages and clock (docs/console.md).
 *
 * Every visible string comes from a catalogue, i18n/<tag>.json, one per
 * language, with the same keys. The language is, first to last: ?lang= in
 * the URL (zh, zh-CN, en, en-US), the operator's switch (remembered in
 * localStorage), the browser's languages, and Chinese. Times are 24-hour, in
 * the time zone the engine serves in /api/console (http.time_zone). */
'use strict';

const I18N = (() => {
  const LANGS = ['zh-CN', 'en-US'];
  const KEY = 'citybrain.lang';
  const state = { lang: 'zh-CN', cat: {}, cats: {}, tz: 'Asia/Shanghai', fmt: null };

  /* zh, zh-CN, zh-Hans-CN... → zh-CN; en, en-GB... → en-US; else null. */
  function normalise(tag) {
    if (!tag) return null;
    const t = String(tag).toLowerCase();
    if (t === 'zh' || t.startsWith('zh-')) return 'zh-CN';
    if (t === 'en' || t.startsWith('en-')) return 'en-US';
    return null;
  }

  function choose() {
    const q = normalise(new URLSearchParams(location.search).get('lang'));
    if (q) return q;
    let kept = null;
    try { kept = normalise(localStorage.getItem(KEY)); } catch (e) { /* private mode */ }
    if (kept) return kept;
    for (const l of navigator.languages || [navigator.language]) {
      const n = normalise(l);
      if (n) return n;
    }
    return 'zh-CN';
  }

  /* Both catalogues are read at the start, so the switch works while the
   * engine cannot be reached. */
  async function fetchAll() {
    await Promise.all(LANGS.map(async l => {
      const r = await fetch('i18n/' + l + '.json', { cache: 'no-cache' });
      if (!r.ok) throw new Error('catalogue ' + l + ': HTTP ' + r.status);
      state.cats[l] = await r.json();
    }));
  }

  function load(lang) {
    state.cat = state.cats[lang] || {};
    state.lang = lang;
    document.documentElement.lang = lang;
    makeFormats();
  }

  function makeFormats() {
    const base = { timeZone: state.tz, hourCycle: 'h23' };
    let tz = state.tz;
    try { new Intl.DateTimeFormat('en-US', { timeZone: tz }); } catch (e) { tz = undefined; }
    const o = Object.assign({}, base, { timeZone: tz });
    state.fmt = {
      time: new Intl.DateTimeFormat(state.lang, Object.assign({ hour: '2-digit', minute: '2-digit', second: '2-digit' }, o)),
      hm: new Intl.DateTimeFormat(state.lang, Object.assign({ hour: '2-digit', minute: '2-digit' }, o)),
      date: new Intl.DateTimeFormat(state.lang, Object.assign({ year: 'numeric', month: '2-digit', day: '2-digit' }, o)),
      weekday: new Intl.DateTimeFormat(state.lang, Object.assign({ weekday: 'short' }, o)),
      md: new Intl.DateTimeFormat(state.lang, Object.assign({ month: '2-digit', day: '2-digit' }, o)),
      full: new Intl.DateTimeFormat(state.lang, Object.assign({ year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' }, o)),
    };
  }

  /* The text of key with {name} replaced from vars; the key itself when the
   * catalogue lacks it (a test checks that both catalogues have every key). */
  function t(key, vars) {
    let s = Object.prototype.hasOwnProperty.call(state.cat, key) ? state.cat[key] : key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
    return s;
  }

  /* Sets the static texts of the page: data-i18n (text), data-i18n-title
   * (tooltip), data-i18n-label (aria-label). */
  function apply(root) {
    for (const e of (root || document).querySelectorAll('[data-i18n]')) e.textContent = t(e.dataset.i18n);
    for (const e of (root || document).querySelectorAll('[data-i18n-title]')) e.title = t(e.dataset.i18nTitle);
    for (const e of (root || document).querySelectorAll('[data-i18n-label]')) e.setAttribute('aria-label', t(e.dataset.i18nLabel));
    document.title = t('app.title');
  }

  function ago(ms) {
    if (ms === null || ms === undefined || !ms) return t('ago.never');
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return t('ago.s', { n: s });
    if (s < 3600) return t('ago.min', { n: Math.floor(s / 60) });
    if (s < 86400) return t('ago.h', { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
    return t('ago.d', { n: Math.floor(s / 86400) });
  }

  return {
    LANGS,
    get lang() { return state.lang; },
    get tz() { return state.tz; },
    setZone(tz) { if (tz) { state.tz = tz; makeFormats(); } },
    async start() { await fetchAll(); load(choose()); apply(); },
    switchTo(lang) {
      try { localStorage.setItem(KEY, lang); } catch (e) { /* private mode */ }
      load(lang);
      apply();
    },
    other() { return state.lang === 'zh-CN' ? 'en-US' : 'zh-CN'; },
    t, apply, ago,
    time: ms => state.fmt.time.format(new Date(ms)),
    hm: ms => state.fmt.hm.format(new Date(ms)),
    date: ms => state.fmt.date.format(new Date(ms)) + ' ' + state.fmt.weekday.format(new Date(ms)),
    md: ms => state.fmt.md.format(new Date(ms)),
    full: ms => state.fmt.full.format(new Date(ms)),
    /* A text of the API in the console's language: obj[lang] of a
     * {"zh-CN":…,"en-US":…} object, else the fallback. */
    pick(obj, fallback) { return (obj && obj[state.lang]) || fallback; },
  };
})();
