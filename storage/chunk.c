/* The chunk codec (storage/chunk.h): RAW, GORILLA and DECIMAL blobs of one
 * series' samples, the encoder's choice between them, and an iterator that
 * decodes sample by sample. Why these codecs, and what they measured:
 * docs/storage.md, "Chunk codec".
 *
 * Every blob starts with
 *
 *   u8 codec | uvarint n (samples, <= CB_CHUNK_MAX_SAMPLES)
 *
 * and then, with bits written most significant first and the last byte
 * padded with zero bits:
 *
 * RAW       n x (ts: 64 bits two's complement | value: 64 bits IEEE-754)
 *
 * GORILLA   (n > 0) varint ts0 (zig-zag)
 *           (n > 1) uvarint ts1 - ts0
 *           bits: value 0 (64 bits), then for each later sample i:
 *             i >= 2: the delta of delta of its ts, in buckets of
 *                     '0' (0), '10' + 14 bits, '110' + 17 bits,
 *                     '1110' + 20 bits, '1111' + 64 bits (two's complement:
 *                     Prometheus's widths for milliseconds);
 *             the value XOR the one before: '0' (same value), '10' + the
 *             bits inside the previous window of leading and trailing
 *             zeros, or '11' + 5 bits leading zeros (at most 31) + 6 bits
 *             length of the meaningful bits (64 written as 0) + those bits.
 *
 * DECIMAL   values as integers x = v * 10^d (see cb_chunk_decimal_scale)
 *           (n > 0) u8 order << 4 | d; varint ts0; varint x0, or for order
 *                   0 the base b (zig-zag)
 *           (n > 1) uvarint ts1 - ts0; order 2: varint x1 - x0 (zig-zag)
 *           bits: the widths w0..w3 (7 bits each) of the ts stream (when
 *             n > 2), then of the value stream (when it has a code: n > order);
 *             then for each sample i: for i >= 2 the ts's delta of delta;
 *             then by order, 0: x - b (every i), 1: x's delta (i >= 1),
 *             2: x's delta of delta (i >= 2);
 *             each zig-zag coded in a bucket '0' + w0 bits, '10' + w1,
 *             '110' + w2, '111' + w3 bits, the first bucket wide enough.
 *           The encoder picks the widths that make the chunk smallest (from
 *           the histogram of bit lengths) and the order with the fewest
 *           bits: 0 (b the middle of the chunk's range) for readings that
 *           scatter around a level, 1 for readings that wander, 2 for
 *           counters and ramps.
 *
 * Arithmetic on timestamps and integers is modulo 2^64, so any strictly
 * increasing int64 timestamps (INT64_MIN to INT64_MAX) encode; the decoder
 * checks that what it rebuilds is strictly increasing and finite. */
#include "storage/chunk.h"
#include "storage/varint.h"

#include <math.h>
#include <string.h>

#define TWO_POW_53 9007199254740992.0
#define WIDTH_BITS 7 /* a bucket width, 0..64 */

static const double pow10_tab[CB_CHUNK_MAX_DECIMALS + 1] = {1e0, 1e1, 1e2, 1e3, 1e4,
                                                            1e5, 1e6, 1e7, 1e8, 1e9};

const char *cb_chunk_strerror(int err)
{
    switch (err) {
    case CB_CHUNK_EORDER: return "timestamps not strictly increasing";
    case CB_CHUNK_EVALUE: return "value not finite";
    case CB_CHUNK_ECODEC: return "unknown codec";
    case CB_CHUNK_EUNFIT: return "values do not scale to decimal integers";
    case CB_CHUNK_ESPACE: return "output buffer too small";
    case CB_CHUNK_ETOOMANY: return "too many samples for one chunk";
    case CB_CHUNK_ECORRUPT: return "corrupt chunk";
    default: return err >= 0 ? "ok" : "unknown error";
    }
}

/* GORILLA's worst sample is 145 bits, DECIMAL's 134; the headers fit in 64. */
size_t cb_chunk_bound(size_t n)
{
    return 64 + 19 * n;
}

/* ---- bits ------------------------------------------------------------------- */

static unsigned bit_length(uint64_t v)
{
    return v ? 64 - (unsigned)__builtin_clzll(v) : 0;
}

/* A bit writer into out[0..cap), or with out NULL a counter only. `len`
 * counts every byte, also those beyond cap (then `full` is set), so a
 * size is known even when it does not fit. */
struct bw {
    uint8_t *out;
    size_t cap, len;
    uint64_t acc; /* `n` pending bits, low-aligned; n < 8 between calls */
    unsigned n;
    uint64_t bits;
    int full;
};

static void bw_init(struct bw *w, uint8_t *out, size_t cap)
{
    memset(w, 0, sizeof *w);
    w->out = out;
    w->cap = cap;
}

static void bw_emit(struct bw *w, uint8_t b)
{
    if (w->len < w->cap)
        w->out[w->len] = b;
    else
        w->full = 1;
    w->len++;
}

/* Appends the low nb bits of v (nb 0..64), most significant first. */
static void bw_put(struct bw *w, uint64_t v, unsigned nb)
{
    if (nb > 32) {
        bw_put(w, v >> 32, nb - 32);
        nb = 32;
    }
    w->bits += nb;
    if (!w->out)
        return;
    w->acc = (w->acc << nb) | (v & ((UINT64_C(1) << nb) - 1));
    w->n += nb;
    while (w->n >= 8) {
        w->n -= 8;
        bw_emit(w, (uint8_t)(w->acc >> w->n));
    }
}

static void bw_uvarint(struct bw *w, uint64_t v)
{
    while (v >= 0x80) {
        bw_put(w, (v & 0x7f) | 0x80, 8);
        v >>= 7;
    }
    bw_put(w, v, 8);
}

/* Pads the last byte with zeros; returns the blob's length in bytes. */
static size_t bw_finish(struct bw *w)
{
    if (!w->out)
        return (size_t)((w->bits + 7) / 8);
    if (w->n)
        bw_emit(w, (uint8_t)(w->acc << (8 - w->n)));
    w->n = 0;
    return w->len;
}

/* The next nb bits (0..64) of the iterator's stream; sets `bad` and returns
 * 0 when the blob has run out. */
static uint64_t br_get(struct cb_chunk_iter *it, unsigned nb)
{
    if (nb > 32) {
        uint64_t hi = br_get(it, nb - 32);
        return (hi << 32) | br_get(it, 32);
    }
    if (nb == 0)
        return 0;
    if (it->nbits < nb) {
        while (it->nbits <= 56 && it->p < it->end) {
            it->acc = (it->acc << 8) | *it->p++;
            it->nbits += 8;
        }
        if (it->nbits < nb) {
            it->bad = 1;
            return 0;
        }
    }
    it->nbits -= nb;
    return (it->acc >> it->nbits) & ((UINT64_C(1) << nb) - 1);
}

static uint64_t bits_of(double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}

static double double_of(uint64_t u)
{
    double v;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* ---- RAW ----------------------------------------------------------------------- */

/* RAW's body (after the count): each ts and value bits, 64 bits each. */
static void enc_raw(const struct cb_chunk_point *pts, size_t n, struct bw *w)
{
    for (size_t i = 0; i < n; i++) {
        bw_put(w, (uint64_t)pts[i].ts_ms, 64);
        bw_put(w, bits_of(pts[i].value), 64);
    }
}

/* ---- GORILLA --------------------------------------------------------------------- */

/* The delta-of-delta buckets after '0': prefix, its length, payload bits. */
static const struct { uint8_t code, len, width; } dod_buckets[4] = {
    {0x2, 2, 14}, {0x6, 3, 17}, {0xe, 4, 20}, {0xf, 4, 64},
};

static int fits_signed(int64_t v, unsigned width)
{
    if (width >= 64)
        return 1;
    int64_t half = INT64_C(1) << (width - 1);
    return v >= -half && v < half;
}

static void gorilla_put_dod(struct bw *w, uint64_t dod)
{
    if (dod == 0) {
        bw_put(w, 0, 1);
        return;
    }
    unsigned k = 0;
    while (!fits_signed((int64_t)dod, dod_buckets[k].width))
        k++;
    bw_put(w, dod_buckets[k].code, dod_buckets[k].len);
    bw_put(w, dod, dod_buckets[k].width);
}

/* XOR-codes `bits` against `prev`; *lead and *sig are the current window
 * (sig 0: none yet). */
static void gorilla_put_value(struct bw *w, uint64_t bits, uint64_t prev, uint8_t *lead,
                              uint8_t *sig)
{
    uint64_t x = bits ^ prev;
    if (!x) {
        bw_put(w, 0, 1);
        return;
    }
    unsigned l = (unsigned)__builtin_clzll(x), t = (unsigned)__builtin_ctzll(x);
    if (l > 31)
        l = 31;
    if (*sig && l >= *lead && t >= 64u - *lead - *sig) {
        bw_put(w, 0x2, 2);
        bw_put(w, x >> (64 - *lead - *sig), *sig);
        return;
    }
    unsigned s = 64 - l - t;
    bw_put(w, 0x3, 2);
    bw_put(w, l, 5);
    bw_put(w, s & 63, 6);
    bw_put(w, x >> t, s);
    *lead = (uint8_t)l;
    *sig = (uint8_t)s;
}

/* GORILLA's body (after the count): ts0 and the first ts delta as varints,
 * the first value's 64 bits, then per later sample the ts's delta of delta
 * (from the third) and the value XOR the previous one. */
static void enc_gorilla(const struct cb_chunk_point *pts, size_t n, struct bw *w)
{
    if (n == 0)
        return;
    bw_uvarint(w, storage__zigzag((uint64_t)pts[0].ts_ms));
    if (n > 1)
        bw_uvarint(w, (uint64_t)pts[1].ts_ms - (uint64_t)pts[0].ts_ms);
    uint64_t prev = bits_of(pts[0].value), tdelta = 0;
    bw_put(w, prev, 64);
    uint8_t lead = 0, sig = 0;
    for (size_t i = 1; i < n; i++) {
        uint64_t d = (uint64_t)pts[i].ts_ms - (uint64_t)pts[i - 1].ts_ms;
        if (i >= 2)
            gorilla_put_dod(w, d - tdelta);
        tdelta = d;
        uint64_t b = bits_of(pts[i].value);
        gorilla_put_value(w, b, prev, &lead, &sig);
        prev = b;
    }
}

/* ---- DECIMAL ---------------------------------------------------------------------- */

/* x = round(v * 10^d) when it reads back as v bit for bit and |x| <= 2^53.
 * The division is the decoder's formula: what passes here decodes exactly. */
static int scaled(double v, int d, int64_t *x)
{
    double s = v * pow10_tab[d];
    if (!(fabs(s) <= TWO_POW_53))
        return 0;
    int64_t r = (int64_t)round(s);
    if (bits_of((double)r / pow10_tab[d]) != bits_of(v))
        return 0;
    *x = r;
    return 1;
}

/* Scaled integers kept from the scale's scan for the encoder, so a chunk of
 * the store's size (about 120) is scaled (a division per value) once, not
 * in each of the encoder's passes; longer chunks scale again per pass. */
#define XCACHE 512

/* cb_chunk_decimal_scale, also leaving each value's integer at that scale in
 * xs[0..n) when xs is not NULL (n <= XCACHE). */
static int decimal_scale(const struct cb_chunk_point *pts, size_t n, int64_t *xs)
{
    int d = 0;
    size_t raised = 0; /* values before this one were only checked at a smaller d */
    int64_t x;
    for (size_t i = 0; i < n; i++) {
        if (!scaled(pts[i].value, d, &x)) {
            do {
                if (++d > CB_CHUNK_MAX_DECIMALS)
                    return -1;
            } while (!scaled(pts[i].value, d, &x));
            raised = i;
        }
        if (xs)
            xs[i] = x;
    }
    for (size_t i = 0; i < raised; i++) {
        if (!scaled(pts[i].value, d, &x))
            return -1;
        if (xs)
            xs[i] = x;
    }
    return d;
}

int cb_chunk_decimal_scale(const struct cb_chunk_point *pts, size_t n)
{
    return decimal_scale(pts, n, NULL);
}

/* Bucket widths for one stream: w[3] is the longest bit length, w[0..2]
 * the lengths (or 0) that minimise the stream's bits among the lengths
 * present. hist[b] counts the values of bit length b.
 *
 * With widths A <= B <= C <= top and cum(X) the values of length <= X, the
 * stream takes count + (count - cum(A)) + (count - cum(B)) (the bucket
 * codes 0, 10, 110, 111) + cum(A) A + (cum(B) - cum(A)) B + (cum(C) -
 * cum(B)) C + (count - cum(C)) top bits. Given B, the terms in A,
 * cum(A) (A - B - 1), and those in C, (cum(C) - cum(B)) C - cum(C) top, are
 * independent: for each B the best A and the best C are found apart, so the
 * search is quadratic in the lengths present, where trying every triple was
 * cubic (4.6 % of the writer's CPU at steady state, perf). */
struct stream_plan {
    uint8_t w[4];
    uint64_t bits; /* the codes, without the widths' header */
};

static void plan_stream(const uint32_t hist[65], uint64_t count, struct stream_plan *sp)
{
    memset(sp, 0, sizeof *sp);
    if (count == 0)
        return;
    uint8_t cand[66];
    int64_t cum[66]; /* values of bit length <= cand[k] */
    size_t nc = 0;
    int64_t run = hist[0];
    cand[nc] = 0;
    cum[nc++] = run;
    for (unsigned b = 1; b <= 64; b++)
        if (hist[b]) {
            run += hist[b];
            cand[nc] = (uint8_t)b;
            cum[nc++] = run;
        }
    int64_t top = cand[nc - 1], n = (int64_t)count;
    int64_t best = INT64_MAX;
    for (size_t b = 0; b < nc; b++) {
        /* the a <= b least in cum(a) (cand(a) - cand(b) - 1), the c >= b
         * least in (cum(c) - cum(b)) cand(c) - cum(c) top; the lowest on ties */
        size_t a = 0, c = b;
        for (size_t k = 1; k <= b; k++)
            if (cum[k] * (cand[k] - cand[b] - 1) < cum[a] * (cand[a] - cand[b] - 1))
                a = k;
        for (size_t k = b + 1; k < nc; k++)
            if ((cum[k] - cum[b]) * cand[k] - cum[k] * top <
                (cum[c] - cum[b]) * cand[c] - cum[c] * top)
                c = k;
        int64_t bits = n + (n - cum[a]) + (n - cum[b]) + cum[a] * cand[a] +
                       (cum[b] - cum[a]) * cand[b] + (cum[c] - cum[b]) * cand[c] +
                       (n - cum[c]) * top;
        if (bits < best) {
            best = bits;
            sp->w[0] = cand[a];
            sp->w[1] = cand[b];
            sp->w[2] = cand[c];
        }
    }
    sp->w[3] = (uint8_t)top;
    sp->bits = (uint64_t)best;
}

static const uint8_t bucket_code[4] = {0x0, 0x2, 0x6, 0x7};
static const uint8_t bucket_len[4] = {1, 2, 3, 3};

static void put_bucketed(struct bw *w, const uint8_t widths[4], uint64_t z)
{
    unsigned len = bit_length(z), k = 0;
    while (k < 3 && len > widths[k])
        k++;
    if (widths[k] <= 29) { /* code and value in one put */
        bw_put(w, (uint64_t)bucket_code[k] << widths[k] | z, bucket_len[k] + widths[k]);
        return;
    }
    bw_put(w, bucket_code[k], bucket_len[k]);
    bw_put(w, z, widths[k]);
}

static void put_widths(struct bw *w, const uint8_t widths[4])
{
    for (int k = 0; k < 4; k++)
        bw_put(w, widths[k], WIDTH_BITS);
}

/* Encodes with scale 10^d (d from cb_chunk_decimal_scale). Returns 0, or
 * CB_CHUNK_EUNFIT when a value does not scale at d. */
static int enc_decimal(const struct cb_chunk_point *pts, size_t n, int d, const int64_t *xs,
                       struct bw *w)
{
    if (n == 0)
        return 0;
#define SCALED(i) (xs ? (x = xs[i], 1) : scaled(pts[i].value, d, &x))
    /* Pass 1: the histograms of the ts stream and of the value streams of
     * orders 1 and 2, and the integers' range. */
    uint32_t hts[65] = {0}, hv[3][65] = {{0}};
    int64_t x = 0, x0 = 0, prevx = 0, lo = INT64_MAX, hi = INT64_MIN;
    uint64_t dx = 0, prevdx = 0, firstdx = 0;
    for (size_t i = 0; i < n; i++) {
        if (!SCALED(i))
            return CB_CHUNK_EUNFIT;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        if (i == 0)
            x0 = x;
        if (i >= 1) {
            dx = (uint64_t)x - (uint64_t)prevx;
            hv[1][bit_length(storage__zigzag(dx))]++;
            if (i == 1)
                firstdx = dx;
        }
        if (i >= 2) {
            hv[2][bit_length(storage__zigzag(dx - prevdx))]++;
            uint64_t td = (uint64_t)pts[i].ts_ms - (uint64_t)pts[i - 1].ts_ms;
            uint64_t tp = (uint64_t)pts[i - 1].ts_ms - (uint64_t)pts[i - 2].ts_ms;
            hts[bit_length(storage__zigzag(td - tp))]++;
        }
        prevx = x;
        prevdx = dx;
    }
    /* Order 0 codes every integer against the middle of their range. */
    int64_t base = lo + (hi - lo) / 2;
    for (size_t i = 0; i < n; i++) {
        SCALED(i);
        hv[0][bit_length(storage__zigzag((uint64_t)x - (uint64_t)base))]++;
    }
    /* The order whose header and stream take the fewest bits. */
    struct stream_plan pt, pv[3];
    uint64_t ncodes[3] = {n, n - 1, n > 2 ? n - 2 : 0}, cost[3];
    plan_stream(hts, ncodes[2], &pt);
    for (int o = 0; o < 3; o++) {
        plan_stream(hv[o], ncodes[o], &pv[o]);
        cost[o] = pv[o].bits + (ncodes[o] ? 4 * WIDTH_BITS : 0) +
                  8 * storage__uvarint_len(storage__zigzag((uint64_t)(o == 0 ? base : x0)));
    }
    if (n > 1)
        cost[2] += 8 * storage__uvarint_len(storage__zigzag(firstdx));
    int order = 0;
    for (int o = 1; o < 3; o++)
        if (cost[o] < cost[order])
            order = o;
    const uint8_t *vw = pv[order].w;

    /* Pass 2: the blob. */
    bw_put(w, (uint64_t)(order << 4 | d), 8);
    bw_uvarint(w, storage__zigzag((uint64_t)pts[0].ts_ms));
    bw_uvarint(w, storage__zigzag((uint64_t)(order == 0 ? base : x0)));
    if (n > 1)
        bw_uvarint(w, (uint64_t)pts[1].ts_ms - (uint64_t)pts[0].ts_ms);
    if (n > 1 && order == 2)
        bw_uvarint(w, storage__zigzag(firstdx));
    if (ncodes[2])
        put_widths(w, pt.w);
    if (ncodes[order])
        put_widths(w, vw);
    prevx = prevdx = 0;
    uint64_t tdelta = 0;
    for (size_t i = 0; i < n; i++) {
        SCALED(i);
        dx = (uint64_t)x - (uint64_t)prevx;
        uint64_t td = i ? (uint64_t)pts[i].ts_ms - (uint64_t)pts[i - 1].ts_ms : 0;
        if (i >= 2)
            put_bucketed(w, pt.w, storage__zigzag(td - tdelta));
        if (order == 0)
            put_bucketed(w, vw, storage__zigzag((uint64_t)x - (uint64_t)base));
        else if (order == 1 && i >= 1)
            put_bucketed(w, vw, storage__zigzag(dx));
        else if (order == 2 && i >= 2)
            put_bucketed(w, vw, storage__zigzag(dx - prevdx));
        tdelta = td;
        prevx = x;
        prevdx = dx;
    }
    return 0;
#undef SCALED
}

/* ---- the encoder -------------------------------------------------------------------- */

/* Writes the blob of `codec` (not AUTO) through w: header and body. Returns
 * 0 or CB_CHUNK_EUNFIT (DECIMAL at scale d). */
static int enc_codec(const struct cb_chunk_point *pts, size_t n, enum cb_chunk_codec codec, int d,
                     const int64_t *xs, struct bw *w)
{
    bw_put(w, codec, 8);
    bw_uvarint(w, n);
    switch (codec) {
    case CB_CHUNK_RAW:
        enc_raw(pts, n, w);
        return 0;
    case CB_CHUNK_GORILLA:
        enc_gorilla(pts, n, w);
        return 0;
    default:
        return enc_decimal(pts, n, d, xs, w);
    }
}

/* The codec into out: its length, or CB_CHUNK_ESPACE / CB_CHUNK_EUNFIT.
 * xs: DECIMAL's integers at scale d, or NULL to scale in each pass. */
static long enc_into(const struct cb_chunk_point *pts, size_t n, enum cb_chunk_codec codec, int d,
                     const int64_t *xs, uint8_t *out, size_t cap)
{
    struct bw w;
    bw_init(&w, out, cap);
    int r = enc_codec(pts, n, codec, d, xs, &w);
    if (r < 0)
        return r;
    size_t len = bw_finish(&w);
    return w.full ? CB_CHUNK_ESPACE : (long)len;
}

long cb_chunk_encode(const struct cb_chunk_point *pts, size_t n, enum cb_chunk_codec codec,
                     uint8_t *out, size_t cap)
{
    if (codec != CB_CHUNK_AUTO && codec != CB_CHUNK_RAW && codec != CB_CHUNK_GORILLA &&
        codec != CB_CHUNK_DECIMAL)
        return CB_CHUNK_ECODEC;
    if (n > CB_CHUNK_MAX_SAMPLES)
        return CB_CHUNK_ETOOMANY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(pts[i].value))
            return CB_CHUNK_EVALUE;
        if (i > 0 && pts[i].ts_ms <= pts[i - 1].ts_ms)
            return CB_CHUNK_EORDER;
    }
    int64_t xcache[XCACHE], *xs = n <= XCACHE ? xcache : NULL;
    int d = codec == CB_CHUNK_DECIMAL || codec == CB_CHUNK_AUTO ? decimal_scale(pts, n, xs) : 0;
    if (codec == CB_CHUNK_DECIMAL && d < 0)
        return CB_CHUNK_EUNFIT;
    if (codec != CB_CHUNK_AUTO)
        return enc_into(pts, n, codec, d, xs, out, cap);

    /* AUTO encodes once, chosen by what the scale's scan found: DECIMAL when
     * every value scales, else GORILLA; RAW only when that blob would be
     * longer than RAW's (so a blob never exceeds 16 bytes a sample plus its
     * header). Trying DECIMAL and GORILLA both and keeping the smaller cost
     * the store's writer 18 % of its CPU and saved no byte on the
     * city's readings nor on the generated set (docs/storage.md, "The
     * choice, by measurement"). */
    size_t raw_len = 1 + storage__uvarint_len(n) + 16 * n;
    long len = enc_into(pts, n, d >= 0 ? CB_CHUNK_DECIMAL : CB_CHUNK_GORILLA, d, xs, out, cap);
    if (len > 0 && (size_t)len <= raw_len)
        return len;
    if (len < 0 && len != CB_CHUNK_ESPACE)
        return len;
    return enc_into(pts, n, CB_CHUNK_RAW, 0, NULL, out, cap); /* longer than RAW, or no room */
}

/* ---- the decoder -------------------------------------------------------------------- */

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t z;
    if (storage__get_uvarint(p, end, &z) < 0)
        return -1;
    *out = storage__unzigzag(z);
    return 0;
}

static int corrupt(struct cb_chunk_iter *it)
{
    it->bad = 1;
    return CB_CHUNK_ECORRUPT;
}

static int read_widths(struct cb_chunk_iter *it, uint8_t widths[4])
{
    for (int k = 0; k < 4; k++) {
        uint64_t v = br_get(it, WIDTH_BITS);
        if (v > 64)
            return -1;
        widths[k] = (uint8_t)v;
    }
    return it->bad ? -1 : 0;
}

int cb_chunk_iter_init(struct cb_chunk_iter *it, const uint8_t *blob, size_t len)
{
    memset(it, 0, sizeof *it);
    it->bad = 1;
    if (len < 2)
        return CB_CHUNK_ECORRUPT;
    const uint8_t *p = blob + 1, *end = blob + len;
    uint64_t n, ts0 = 0, tdelta = 0, x0 = 0, xdelta = 0;
    it->codec = blob[0];
    if (it->codec < CB_CHUNK_RAW || it->codec > CB_CHUNK_DECIMAL)
        return CB_CHUNK_ECORRUPT;
    if (storage__get_uvarint(&p, end, &n) < 0 || n > CB_CHUNK_MAX_SAMPLES)
        return CB_CHUNK_ECORRUPT;
    it->n = (uint32_t)n;
    if (it->codec == CB_CHUNK_DECIMAL && n > 0) {
        if (p >= end)
            return CB_CHUNK_ECORRUPT;
        uint8_t h = *p++;
        unsigned d = h & 15;
        it->order = (uint8_t)(h >> 4);
        if (d > CB_CHUNK_MAX_DECIMALS || it->order > 2)
            return CB_CHUNK_ECORRUPT;
        it->scale = pow10_tab[d];
    }
    if (it->codec != CB_CHUNK_RAW && n > 0 && get_varint(&p, end, &ts0) < 0)
        return CB_CHUNK_ECORRUPT;
    if (it->codec == CB_CHUNK_DECIMAL && n > 0 && get_varint(&p, end, &x0) < 0)
        return CB_CHUNK_ECORRUPT;
    if (it->codec != CB_CHUNK_RAW && n > 1 && storage__get_uvarint(&p, end, &tdelta) < 0)
        return CB_CHUNK_ECORRUPT;
    if (it->codec == CB_CHUNK_DECIMAL && n > 1 && it->order == 2 &&
        get_varint(&p, end, &xdelta) < 0)
        return CB_CHUNK_ECORRUPT;
    it->p = p;
    it->end = end;
    it->bad = 0;
    it->ts = (int64_t)ts0;
    it->tdelta = tdelta;
    it->v = it->base = x0; /* order 0: the header's integer is the base */
    it->vdelta = xdelta;
    if (it->codec == CB_CHUNK_DECIMAL) {
        if (n > 2 && read_widths(it, it->tw) < 0)
            return corrupt(it);
        if (n > it->order && read_widths(it, it->vw) < 0)
            return corrupt(it);
    }
    return 0;
}

enum cb_chunk_codec cb_chunk_iter_codec(const struct cb_chunk_iter *it)
{
    return (enum cb_chunk_codec)it->codec;
}

size_t cb_chunk_iter_count(const struct cb_chunk_iter *it)
{
    return it->n;
}

static uint64_t get_bucketed(struct cb_chunk_iter *it, const uint8_t widths[4])
{
    unsigned k = 0;
    while (k < 2 && br_get(it, 1))
        k++;
    if (k == 2)
        k += (unsigned)br_get(it, 1);
    return storage__unzigzag(br_get(it, widths[k]));
}

static uint64_t gorilla_get_dod(struct cb_chunk_iter *it)
{
    unsigned k = 0;
    if (!br_get(it, 1))
        return 0;
    while (k < 3 && br_get(it, 1))
        k++;
    unsigned width = dod_buckets[k].width;
    uint64_t v = br_get(it, width);
    if (width < 64 && (v >> (width - 1)) & 1)
        v |= ~((UINT64_C(1) << width) - 1);
    return v;
}

static void gorilla_get_value(struct cb_chunk_iter *it)
{
    if (!br_get(it, 1))
        return;
    if (br_get(it, 1)) {
        unsigned l = (unsigned)br_get(it, 5), s = (unsigned)br_get(it, 6);
        if (s == 0)
            s = 64;
        if (l + s > 64) {
            it->bad = 1;
            return;
        }
        it->lead = (uint8_t)l;
        it->sig = (uint8_t)s;
    } else if (it->sig == 0) {
        it->bad = 1; /* a window reused before there was one */
        return;
    }
    it->v ^= br_get(it, it->sig) << (64 - it->lead - it->sig);
}

/* Sample it->i of a GORILLA or DECIMAL blob into *out (ts and value). */
static void next_coded(struct cb_chunk_iter *it, struct cb_chunk_point *out)
{
    uint32_t i = it->i;
    int dec = it->codec == CB_CHUNK_DECIMAL;
    if (i >= 2)
        it->tdelta += dec ? get_bucketed(it, it->tw) : gorilla_get_dod(it);
    if (i >= 1)
        it->ts = (int64_t)((uint64_t)it->ts + it->tdelta);
    if (!dec) {
        if (i == 0)
            it->v = br_get(it, 64);
        else
            gorilla_get_value(it);
    } else if (it->order == 0) {
        it->v = it->base + get_bucketed(it, it->vw);
    } else if (it->order == 1 && i >= 1) {
        it->v += get_bucketed(it, it->vw);
    } else if (i >= 1) {
        if (i >= 2)
            it->vdelta += get_bucketed(it, it->vw);
        it->v += it->vdelta;
    }
    out->ts_ms = it->ts;
    out->value = dec ? (double)(int64_t)it->v / it->scale : double_of(it->v);
}

int cb_chunk_iter_next(struct cb_chunk_iter *it, struct cb_chunk_point *out)
{
    if (it->bad)
        return CB_CHUNK_ECORRUPT;
    if (it->i == it->n) {
        /* The end: nothing but the last byte's zero padding may be left. */
        if (it->p != it->end || it->nbits >= 8 ||
            (it->acc & ((UINT64_C(1) << it->nbits) - 1)) != 0)
            return corrupt(it);
        return 0;
    }
    int64_t prev = it->ts;
    if (it->codec == CB_CHUNK_RAW) {
        out->ts_ms = (int64_t)br_get(it, 64);
        out->value = double_of(br_get(it, 64));
        it->ts = out->ts_ms;
    } else {
        next_coded(it, out);
    }
    if (it->bad || !isfinite(out->value) || (it->i > 0 && out->ts_ms <= prev))
        return corrupt(it);
    it->i++;
    return 1;
}

/* The samples with from <= ts < to (every sample when all) into out. */
static long decode_points(const uint8_t *blob, size_t len, int64_t from, int64_t to, int all,
                          struct cb_chunk_point *out, size_t cap)
{
    struct cb_chunk_iter it;
    int r = cb_chunk_iter_init(&it, blob, len);
    if (r < 0)
        return r;
    size_t k = 0;
    struct cb_chunk_point pt;
    while ((r = cb_chunk_iter_next(&it, &pt)) == 1) {
        if (!all && pt.ts_ms >= to)
            break;
        if (!all && pt.ts_ms < from)
            continue;
        if (k == cap)
            return CB_CHUNK_ESPACE;
        out[k++] = pt;
    }
    return r < 0 ? r : (long)k;
}

long cb_chunk_decode_range(const uint8_t *blob, size_t len, int64_t from, int64_t to,
                           struct cb_chunk_point *out, size_t cap)
{
    return decode_points(blob, len, from, to, 0, out, cap);
}

long cb_chunk_decode(const uint8_t *blob, size_t len, struct cb_chunk_point *out, size_t cap)
{
    return decode_points(blob, len, 0, 0, 1, out, cap);
}
