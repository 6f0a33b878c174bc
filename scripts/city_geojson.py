#!/usr/bin/env python3
"""Writes etc/city.geojson: the map of the simulator's city (`citybrain sim`,
`make demo`) for the console. Twelve districts d01..d12 on a 4 x 3 grid whose
shared borders are bent a little so the outlines read as a city, and a point
for every sensor the simulator can run there (s01..s03 of each of its nine
kinds), with the topic it publishes on. Deterministic: run it again and the
file is the same.  usage: scripts/city_geojson.py > etc/city.geojson
A real city replaces the file (http.city_map); docs/console.md has the format."""
import json
import math

COLS, ROWS = 4, 3
LON0, LAT0 = 114.20, 30.52          # south-west corner
DLON, DLAT = 0.032, 0.026           # one district cell
KINDS = ["river", "rain", "air", "gas", "bridge", "traffic", "manhole", "underpass", "noise"]
NAMES = [  # (zh-CN, en-US), d01 first; row 0 is the north
    ("江滨区", "Jiangbin"), ("河西区", "Hexi"), ("老城区", "Old Town"), ("东湖区", "Donghu"),
    ("新港区", "Xingang"), ("南桥区", "Nanqiao"), ("北站区", "Beizhan"), ("高新区", "Hi-Tech Park"),
    ("西山区", "Xishan"), ("临江区", "Linjiang"), ("花园区", "Huayuan"), ("开发区", "Development Zone"),
]


def rnd(*key):
    """A stable pseudo-random number in [-1, 1) for a key."""
    h = 2166136261
    for k in key:
        for c in str(k).encode():
            h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return (h / 2**31) - 1.0


def corner(i, j):
    """Grid vertex i (0..COLS) west to east, j (0..ROWS) north to south."""
    x, y = LON0 + i * DLON, LAT0 + (ROWS - j) * DLAT
    if 0 < i < COLS:
        x += 0.22 * DLON * rnd("cx", i, j)
    if 0 < j < ROWS:
        y += 0.22 * DLAT * rnd("cy", i, j)
    return (x, y)


def edge(a, b, key):
    """The bent middle of the border from a to b (shared by both sides)."""
    mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = math.hypot(dx, dy) or 1.0
    on_rim = key[0] in ("h", "v") and key[2] in (0, COLS if key[0] == "v" else ROWS)
    k = 0 if on_rim else 0.12 * rnd(*key)
    return (mx - dy / n * k * n, my + dx / n * k * n)


def ring(i, j):
    a, b, c, d = corner(i, j), corner(i + 1, j), corner(i + 1, j + 1), corner(i, j + 1)
    pts = [a, edge(a, b, ("h", i, j)), b, edge(b, c, ("v", j, i + 1)), c,
           edge(d, c, ("h", i, j + 1)), d, edge(a, d, ("v", j, i)), a]
    # GeoJSON (RFC 7946): exterior rings counter-clockwise
    pts = pts[::-1]
    return [[round(x, 5), round(y, 5)] for x, y in pts]


features = []
for n in range(COLS * ROWS):
    i, j = n % COLS, n // COLS
    d = "d%02d" % (n + 1)
    zh, en = NAMES[n]
    features.append({"type": "Feature", "id": d,
                     "properties": {"district": d, "name": {"zh-CN": zh, "en-US": en}},
                     "geometry": {"type": "Polygon", "coordinates": [ring(i, j)]}})
for n in range(COLS * ROWS):
    i, j = n % COLS, n // COLS
    d = "d%02d" % (n + 1)
    cx, cy = corner(i, j)
    ex, ey = corner(i + 1, j + 1)
    for k, kind in enumerate(KINDS):
        for s in range(1, 4):
            fx = 0.2 + 0.6 * ((k % 3) + (s - 1) / 3 + 0.15) / 3 + 0.03 * rnd("sx", d, kind, s)
            # the lower part of the district: its name is written above
            fy = 0.48 + 0.4 * ((k // 3) + 0.5) / 3 + 0.04 * rnd("sy", d, kind, s)
            x, y = cx + (ex - cx) * fx, cy + (ey - cy) * fy
            topic = "city/%s/%s/s%02d" % (d, kind, s)
            features.append({"type": "Feature",
                             "properties": {"topic": topic},
                             "geometry": {"type": "Point",
                                          "coordinates": [round(x, 5), round(y, 5)]}})

doc = {"type": "FeatureCollection",
       "name": {"zh-CN": "模拟城市", "en-US": "The simulated city"},
       "features": features}
text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
# one feature a line: small diffs when a real city edits its file
print(text.replace(',{"type":"Feature"', ',\n{"type":"Feature"'))
