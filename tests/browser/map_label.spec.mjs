// A sensor placed on the console's map by its topic (docs/console.md, "The
// city map file", the second source of positions): an engine whose
// sensors.label_pattern captures `lat` and `lon`, here
// city/{district}/{kind}/{sensor}/{lat}/{lon}. Started by
// tests/browser.test.sh against an engine of its own, with CB_URL,
// CB_BROKER_PORT, CB_TOKEN and CB_OUT_DIR.
//   - /api/sensors gives the sensor "position":{..,"from":"label"};
//   - the console draws its dot inside its district (d09 of etc/city.geojson);
//   - a topic whose latitude is no number (`north`) places nothing: listed by
//     /api/sensors with "position":null, no dot on the map;
//   - a reading of the sensor's own lat/lon wins over its topic's.
// Exits 0 when every check passed, 1 otherwise, one line per check.
import { join } from 'node:path';
import { env, checker, publisher, run, until } from './support.mjs';

const { url, brokerPort } = env('map_label.spec');
const outDir = process.env.CB_OUT_DIR || 'tests/out';
const c = checker();
const check = c.check;
const publish = publisher(brokerPort);

const placed = 'city/d09/river/s88/30.53/114.215';
const nowhere = 'city/d09/river/s89/north/114.215';
const moved = 'city/d02/air/s31/30.53/114.215';

async function sensor(topic) {
  const r = await fetch(new URL('/api/sensors', url));
  const body = await r.json();
  return (body.sensors || []).find(s => s.topic === topic) || null;
}

/* The dot of topic lies inside the district's shape on the page. */
async function inside(page, topic, district) {
  const dot = await page.locator(`#map circle[data-topic="${topic}"]`).boundingBox().catch(() => null);
  const box = await page.locator(`#map path[data-district="${district}"]`).boundingBox().catch(() => null);
  return !!(dot && box && dot.x >= box.x && dot.x <= box.x + box.width &&
    dot.y >= box.y && dot.y <= box.y + box.height);
}

await run(async browser => {
  publish(placed, { level: 1.1 });
  publish(nowhere, { level: 1.2 });
  // its topic says d09, its own readings say d02's corner of the city
  publish(moved, { pm25: 20 });
  const s = await until(async () => {
    const v = await sensor(placed);
    return v && v.position ? v : null;
  }, 15000);
  check(s && s.position.from === 'label' && s.position.lat === 30.53 && s.position.lon === 114.215,
    `/api/sensors places ${placed} by its labels (${JSON.stringify(s && s.position)})`);
  const n = await until(() => sensor(nowhere), 15000);
  check(n && n.position === null, `a latitude "north" places nothing (${JSON.stringify(n && n.position)})`);

  const context = await browser.newContext({ viewport: { width: 1920, height: 1080 }, locale: 'zh-CN' });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', e => errors.push(String(e)));
  await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  await page.locator(`#map circle[data-topic="${placed}"]`).waitFor({ timeout: 15000 }).catch(() => {});
  check(await inside(page, placed, 'd09'), 'the console draws the label-placed sensor inside its district d09');
  check(await page.locator(`#map circle[data-topic="${nowhere}"]`).count() === 0,
    'no dot for the sensor whose topic places nothing');

  // Its own reading now puts the third sensor inside d02: the reading wins.
  const d02 = await page.evaluate(async () => {
    const city = await (await fetch('/api/city')).json();
    const f = city.features.find(x => (x.properties && x.properties.district) === 'd02' &&
      /Polygon/.test(x.geometry.type));
    const ring = f.geometry.type === 'Polygon' ? f.geometry.coordinates[0] : f.geometry.coordinates[0][0];
    const lon = ring.reduce((a, p) => a + p[0], 0) / ring.length;
    const lat = ring.reduce((a, p) => a + p[1], 0) / ring.length;
    return { lat, lon };
  });
  publish(moved, { lat: d02.lat, lon: d02.lon });
  const m = await until(async () => {
    const v = await sensor(moved);
    return v && v.position && v.position.from === 'reading' ? v : null;
  }, 15000);
  check(!!m, `a reading of lat/lon wins over the topic's labels (${JSON.stringify(m && m.position)})`);
  await page.reload({ waitUntil: 'load' });
  await page.locator(`#map circle[data-topic="${moved}"]`).waitFor({ timeout: 15000 }).catch(() => {});
  check(await inside(page, moved, 'd02') && !(await inside(page, moved, 'd09')),
    'the console then draws it where its reading puts it (d02), not where its topic does');
  await page.screenshot({ path: join(outDir, 'console-map-label.png') });
  check(errors.length === 0, `no script errors (${errors.join(' | ')})`);
  await context.close();
}, c);
