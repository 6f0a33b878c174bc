/* The city map: district outlines from the GeoJSON the engine serves
 * (/api/city, http.city_map), drawn as SVG by the console itself (no tiles,
 * no fonts from elsewhere), each district coloured by its worst open warning
 * grade, and the sensors whose position is known as dots (docs/console.md:
 * the sensor's own latest `lat` and `lon` values, else its `lat`/`lon`
 * labels, else a Point feature of the same file with a "topic" property). */
'use strict';

const CityMap = (() => {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 1000; /* the width of the drawing in SVG units */

  function svg(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
    return e;
  }

  /* Rings of a Polygon or MultiPolygon feature, as arrays of [lon, lat]. */
  function rings(geom) {
    if (!geom) return [];
    if (geom.type === 'Polygon') return geom.coordinates;
    if (geom.type === 'MultiPolygon') return geom.coordinates.flat();
    return [];
  }

  /* What a GeoJSON file gives the console: districts (id, names, rings),
   * sensor positions by topic, and a projection fitted to the districts. */
  function parse(geo) {
    const districts = [], points = new Map();
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (const f of (geo && geo.features) || []) {
      const p = f.properties || {};
      const g = f.geometry || {};
      if (g.type === 'Point' && p.topic) {
        points.set(p.topic, g.coordinates);
        continue;
      }
      const id = p.district || f.id;
      const rs = rings(g);
      if (!id || !rs.length) continue;
      districts.push({ id: String(id), name: p.name, rings: rs });
      for (const r of rs) for (const [x, y] of r) {
        minX = Math.min(minX, x); maxX = Math.max(maxX, x);
        minY = Math.min(minY, y); maxY = Math.max(maxY, y);
      }
    }
    if (!districts.length) return { districts, points, project: null };
    /* equirectangular, shrunk by cos(latitude) so shapes keep their look */
    const kx = Math.cos(((minY + maxY) / 2) * Math.PI / 180);
    const scale = W / Math.max(1e-9, (maxX - minX) * kx);
    const H = Math.max(1, (maxY - minY) * scale);
    const project = ([x, y]) => [(x - minX) * kx * scale, (maxY - y) * scale];
    return { districts, points, project, width: W, height: H, inside: ([x, y]) => x >= minX && x <= maxX && y >= minY && y <= maxY };
  }

  function centroid(ring, project) {
    let a = 0, cx = 0, cy = 0;
    const pts = ring.map(project);
    for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
      const f = pts[j][0] * pts[i][1] - pts[i][0] * pts[j][1];
      a += f; cx += (pts[j][0] + pts[i][0]) * f; cy += (pts[j][1] + pts[i][1]) * f;
    }
    if (Math.abs(a) < 1e-9) return pts[0];
    return [cx / (3 * a), cy / (3 * a)];
  }

  /* Draws the map into box.
   *   city: parse()'s result
   *   view.districts: Map id -> {grade (red|orange|yellow|blue|null), alerts}
   *   view.sensors: [{topic, pos: [lon, lat], cls}]
   *   view.name(d): the district's label; view.selected: its id or null
   *   view.onDistrict(id), view.onSensor(topic) */
  function draw(box, city, view) {
    const pad = 12;
    const root = svg('svg', {
      viewBox: `${-pad} ${-pad} ${city.width + 2 * pad} ${city.height + 2 * pad}`,
      class: 'city', role: 'img', preserveAspectRatio: 'xMidYMid meet',
    });
    const gd = svg('g', { class: 'districts' }), gl = svg('g', { class: 'labels' }), gs = svg('g', { class: 'sensors' });
    for (const d of city.districts) {
      const st = view.districts.get(d.id) || {};
      const path = d.rings.map(r => 'M' + r.map(c => city.project(c).map(v => v.toFixed(1)).join(',')).join('L') + 'Z').join('');
      const p = svg('path', {
        d: path, 'data-district': d.id, 'data-grade': st.grade || 'none', tabindex: '0', role: 'button',
        class: 'district g-' + (st.grade || 'none') + (view.selected === d.id ? ' selected' : ''),
      });
      const title = svg('title');
      title.textContent = view.name(d) + ' · ' + view.tip(st);
      p.append(title);
      p.addEventListener('click', () => view.onDistrict(d.id));
      p.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); view.onDistrict(d.id); } });
      gd.append(p);
      /* the name in the upper part of the district, clear of the sensors */
      const big = d.rings.reduce((a, r) => (r.length > a.length ? r : a), d.rings[0]);
      const [cx, cy] = centroid(big, city.project);
      const ys = big.map(c => city.project(c)[1]);
      const top = Math.min(...ys), h = Math.max(...ys) - top;
      const ly = Math.min(cy, top + 0.3 * h);
      const label = svg('text', { x: cx.toFixed(1), y: ly.toFixed(1), class: 'name', 'text-anchor': 'middle' });
      label.textContent = view.name(d);
      const sub = svg('text', { x: cx.toFixed(1), y: (ly + 24).toFixed(1), class: 'sub', 'text-anchor': 'middle' });
      sub.textContent = d.id + (st.alerts ? ' · ' + view.count(st.alerts) : '');
      gl.append(label, sub);
    }
    for (const s of view.sensors) {
      const [x, y] = city.project(s.pos);
      const c = svg('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: 5, class: 'sensor ' + s.cls, 'data-topic': s.topic });
      const title = svg('title');
      title.textContent = s.topic;
      c.append(title);
      c.addEventListener('click', e => { e.stopPropagation(); view.onSensor(s.topic); });
      gs.append(c);
    }
    root.append(gd, gs, gl);
    box.replaceChildren(root);
  }

  return { parse, draw };
})();
