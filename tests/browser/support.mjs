// What the browser specs share: their environment, one line per check, the
// broker, and Debian's Chromium driven by playwright-core.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';

/* The variables every spec needs (CB_URL, CB_BROKER_PORT, CB_TOKEN); exits
 * 2 when one is missing. */
export function env(spec) {
  const e = { url: process.env.CB_URL, brokerPort: process.env.CB_BROKER_PORT, token: process.env.CB_TOKEN };
  if (!e.url || !e.brokerPort || !e.token) {
    console.error(`${spec}: CB_URL, CB_BROKER_PORT and CB_TOKEN are required`);
    process.exit(2);
  }
  return e;
}

/* check(ok, what) prints "ok" or "FAIL" and the check; failed() counts. */
export function checker() {
  let failures = 0;
  const check = (ok, what) => {
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
    if (!ok) failures++;
  };
  return { check, failed: () => failures, fail: () => failures++ };
}

/* Publishes payload (a string, or an object sent as JSON) with QoS 1. */
export function publisher(port) {
  return (topic, payload) => execFileSync('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port),
    '-q', '1', '-t', topic, '-m', typeof payload === 'string' ? payload : JSON.stringify(payload)]);
}

/* Launches the browser, runs body(browser), closes it, and exits: 0 when
 * every check passed, 1 otherwise (an exception counts as a failure). */
export async function run(body, c) {
  const browser = await launch();
  try {
    await body(browser);
  } catch (e) {
    console.log('FAIL ' + (e && e.stack || e));
    c.fail();
  } finally {
    await browser.close();
  }
  process.exit(c.failed() ? 1 : 0);
}

function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    // playwright makes (and removes) its own temporary profile
    timeout: 30000,
  });
}

export const sleep = ms => new Promise(r => setTimeout(r, ms));

/* Polls fn (async) every 200 ms until it gives a truthy value or ms pass;
 * returns that value (or the last falsy one). */
export async function until(fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => null);
    if (v || Date.now() > end) return v;
    await sleep(200);
  }
}

/* The text of the first element sel selects, '' when there is none. */
export async function text(page, sel) {
  return (await page.locator(sel).first().textContent({ timeout: 5000 }).catch(() => '')) || '';
}
