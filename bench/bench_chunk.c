/* The chunk codec benchmark (storage/chunk.c): bytes per sample and speed of
 * each codec on the simulator's city and on generated real-looking series,
 * beside Prometheus's TSDB on the same city samples. Prints `key value
 * [baseline]` lines for bench/run.sh, and `# ...` lines with the details
 * (per metric, per kind of series) that the table leaves out:
 *
 *   chunk_city_samples                the city: `citybrain sim --out -` for
 *                                     a simulated day (4 districts x 3
 *                                     sensors x 9 kinds, each sensor every
 *                                     10 s: 132 series), decoded by the
 *                                     engine's payload decoder and grouped
 *                                     by (topic, metric)
 *   chunk_city_bytes_per_sample_C_N   codec C (raw, gorilla, decimal, best)
 *                                     with chunks of N samples (120, 240,
 *                                     480): blob bytes / samples. decimal
 *                                     falls back to gorilla in a chunk it
 *                                     cannot scale; best is CB_CHUNK_AUTO
 *                                     (encoded once: DECIMAL when the values
 *                                     scale, else GORILLA, RAW when smaller)
 *   chunk_city_bytes_per_sample_tried_all_N   the smallest of the three per
 *                                     chunk (what AUTO chose before it
 *                                     encoded once), and AUTO's excess
 *   chunk_city_int_coding_K           the decimal chunks of 120 with their
 *                                     scaled integers coded otherwise: K =
 *                                     varint (zig-zag LEB128 of ts delta of
 *                                     delta and value delta), simple8b (the
 *                                     same two streams in Simple-8b words),
 *                                     fixed_buckets (Gorilla's fixed ts
 *                                     buckets for both), beside the chosen
 *                                     per-chunk buckets (decimal)
 *   chunk_city_promtool_bytes_per_sample   the same samples written by
 *                                     `promtool tsdb create-blocks-from
 *                                     openmetrics` (Debian's prometheus):
 *                                     every file of its blocks, and the
 *                                     chunks files alone, per sample
 *   chunk_city_store_bytes_per_sample the same day written through the store
 *                                     (cb_store_append, a commit per minute,
 *                                     the head sealed every 2 simulated
 *                                     minutes as the writer does, closed so
 *                                     the rollups are derived, checkpointed):
 *                                     file bytes per sample, and the raw
 *                                     samples' tables alone (dbstat)
 *   chunk_city_store_v6_bytes_per_sample   the same through the layout before
 *                                     chunks (schema 6, one row per sample)
 *   chunk_gen_bytes_per_sample_C_N    generated series (temperatures with 1
 *                                     decimal, pressures with 2, noisy levels
 *                                     with 3, valve steps, energy counters
 *                                     that reset, full-precision gateway
 *                                     averages; timestamps with jitter and
 *                                     gaps), one day each
 *   chunk_encode_ns_per_sample_C, chunk_decode_ns_per_sample_C
 *                                     the city in chunks of 120, the fastest
 *                                     of several passes (a shared machine
 *                                     only ever slows a pass down)
 *
 * Usage: bench_chunk [--hours H] [--in FILE] [--no-promtool]
 *   --hours H      simulated hours of the city and the generated series (24;
 *                  BENCH_QUICK=1: 2)
 *   --in FILE      read the city from FILE (`citybrain sim --out` JSON Lines)
 *                  instead of running $CB_BIN (default build/citybrain)
 *   --no-promtool  skip Prometheus (also skipped when promtool is missing:
 *                  apt-get install prometheus) */
#include <dirent.h>
#include <sqlite3.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/config.h"
#include "base/strbuf.h"
#include "ingest/ingest.h"
#include "storage/chunk.h"
#include "storage/storage.h"
#include "storage/storage_int.h"
#include "tests/support/splitmix.h"

#define CITY_START INT64_C(1767225600000) /* 2026-01-01 00:00 UTC */
#define CITY_SENSORS 108                  /* citybrain sim's default city */
#define CITY_PERIOD_S 10
#define MAX_SERIES 4096

static const size_t chunk_sizes[] = {120, 240, 480};
enum { NSIZES = 3 };

/* ---- series ----------------------------------------------------------------- */

struct series {
    char key[128]; /* "topic metric" */
    char kind[32]; /* what the breakdown groups by */
    struct cb_chunk_point *pts;
    size_t n, cap;
};

struct dataset {
    struct series s[MAX_SERIES];
    size_t n;
    size_t slot[2 * MAX_SERIES]; /* open addressing: index + 1, 0 empty */
    uint64_t samples;
};

static void die(const char *what)
{
    fprintf(stderr, "bench_chunk: %s\n", what);
    exit(1);
}

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* The series named key (created with kind when new). */
static struct series *series_of(struct dataset *d, const char *key, const char *kind)
{
    size_t mask = 2 * MAX_SERIES - 1, i = hash(key) & mask;
    for (; d->slot[i]; i = (i + 1) & mask)
        if (!strcmp(d->s[d->slot[i] - 1].key, key))
            return &d->s[d->slot[i] - 1];
    if (d->n == MAX_SERIES)
        die("too many series");
    struct series *s = &d->s[d->n++];
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->kind, sizeof s->kind, "%s", kind);
    d->slot[i] = d->n;
    return s;
}

static void add_point(struct dataset *d, struct series *s, int64_t ts, double v)
{
    if (s->n && ts <= s->pts[s->n - 1].ts_ms)
        return; /* one sample per (series, ts), as the store keeps it */
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->pts = realloc(s->pts, s->cap * sizeof *s->pts);
        if (!s->pts)
            die("out of memory");
    }
    s->pts[s->n++] = (struct cb_chunk_point){ts, v};
    d->samples++;
}

static void dataset_free(struct dataset *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->s[i].pts);
    free(d);
}

static struct dataset *dataset_new(void)
{
    struct dataset *d = calloc(1, sizeof *d);
    if (!d)
        die("out of memory");
    return d;
}

/* ---- the city --------------------------------------------------------------- */

/* One `citybrain sim --out` line, {"topic":"T","payload":P,"ts":MS}, into
 * the dataset through the engine's decoder. Returns 0, or -1 when the line
 * is not of that shape. */
static int city_line(struct dataset *d, struct cb_decoder *dec, char *line)
{
    char *t = strstr(line, "{\"topic\":\"");
    char *p = strstr(line, "\",\"payload\":");
    char *e = strrchr(line, ',');
    if (!t || !p || !e || e < p || strncmp(e, ",\"ts\":", 6))
        return -1;
    *p = 0;
    const char *topic = t + 10, *payload = p + 12;
    size_t len = (size_t)(e - payload);
    int64_t arrival = strtoll(e + 6, NULL, 10);
    if (len >= 2 && payload[0] == '"') { /* a bare number, as a JSON string */
        payload++;
        len -= 2;
    }
    struct cb_decoded out;
    if (cb_decode(dec, topic, payload, len, arrival, &out) != CB_REJECT_NONE)
        return 0;
    char key[128];
    for (size_t i = 0; i < out.n; i++) {
        snprintf(key, sizeof key, "%s %s", topic, out.samples[i].metric);
        add_point(d, series_of(d, key, out.samples[i].metric), out.samples[i].ts_ms,
                  out.samples[i].value);
    }
    return 0;
}

/* The city from `citybrain sim --out` (run here, or read from path). */
static struct dataset *load_city(const char *path, int hours)
{
    struct dataset *d = dataset_new();
    FILE *f;
    char cmd[1024];
    if (path) {
        f = fopen(path, "r");
    } else {
        const char *bin = getenv("CB_BIN");
        snprintf(cmd, sizeof cmd,
                 "'%s' sim --out - --duration %dh --rate %g --start %lld --quiet",
                 bin && *bin ? bin : "build/citybrain", hours,
                 (double)CITY_SENSORS / CITY_PERIOD_S, (long long)CITY_START);
        f = popen(cmd, "r");
    }
    if (!f)
        die("cannot read the city");
    struct cb_config cfg;
    cb_config_defaults(&cfg);
    struct cb_decode_limits lim;
    cb_decode_limits_from_config(&lim, &cfg);
    cb_config_free(&cfg);
    struct cb_decoder *dec = cb_decoder_new(&lim);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, f)) > 0)
        if (city_line(d, dec, line) < 0)
            die("a line that is not `citybrain sim --out` JSON Lines");
    free(line);
    cb_decoder_free(dec);
    if (path ? fclose(f) : pclose(f))
        die(path ? "reading the city failed" : "citybrain sim failed (CB_BIN?)");
    if (!d->samples)
        die("the city has no samples");
    return d;
}

/* ---- generated real-looking series ------------------------------------------------ */

static double gauss(uint64_t *s)
{
    return sqrt(-2.0 * log(cb_splitmix_unit(s))) * cos(6.283185307179586 * cb_splitmix_unit(s));
}

static double round_to(double v, int decimals)
{
    double p = pow(10.0, decimals);
    return round(v * p) / p;
}

enum gen_kind { TEMP_1DEC, PRESSURE_2DEC, LEVEL_3DEC, VALVE_STEPS, ENERGY_COUNTER, GATEWAY_AVG,
                GEN_KINDS };
static const char *const gen_names[GEN_KINDS] = {"temp_1dec",   "pressure_2dec",  "level_3dec",
                                                 "valve_steps", "energy_counter", "gateway_avg"};
static const int gen_period_s[GEN_KINDS] = {30, 60, 10, 10, 10, 15};

/* 20 series of each kind over `hours`: the sensor's clock jitters by a few
 * ms, one reading in 500 is lost, and once a day a sensor is offline for
 * 10 to 40 minutes. */
static struct dataset *load_generated(int hours)
{
    struct dataset *d = dataset_new();
    uint64_t s = 16;
    for (int k = 0; k < GEN_KINDS; k++)
        for (int j = 0; j < 20; j++) {
            char key[64];
            snprintf(key, sizeof key, "gen/%s/%02d v", gen_names[k], j);
            struct series *se = series_of(d, key, gen_names[k]);
            int64_t period = gen_period_s[k] * 1000, end = CITY_START + hours * INT64_C(3600000);
            int64_t off_at = CITY_START + (int64_t)(cb_splitmix_next(&s) % (uint64_t)(end - CITY_START));
            int64_t off_for = (10 + (int64_t)(cb_splitmix_next(&s) % 31)) * 60000;
            double base = 10.0 + (double)(cb_splitmix_next(&s) % 200) / 10.0, state = base, avg = 0;
            double energy = (double)(cb_splitmix_next(&s) % 100000) / 10.0;
            int valve = 50;
            for (int64_t t = CITY_START + (int64_t)(cb_splitmix_next(&s) % 1000); t < end; t += period) {
                double h = (double)((t / 1000) % 86400) / 3600.0, v;
                switch (k) {
                case TEMP_1DEC:
                    v = round_to(base + 4.0 * sin((h - 8.0) * M_PI / 12.0) + 0.08 * gauss(&s), 1);
                    break;
                case PRESSURE_2DEC:
                    state += 0.02 * gauss(&s);
                    v = round_to(1000.0 + state, 2);
                    break;
                case LEVEL_3DEC:
                    v = round_to(base / 10.0 + 0.1 * sin(h * M_PI / 12.0) + 0.01 * gauss(&s), 3);
                    break;
                case VALVE_STEPS:
                    if (cb_splitmix_next(&s) % 360 == 0)
                        valve = 25 * (int)(cb_splitmix_next(&s) % 5);
                    v = valve;
                    break;
                case ENERGY_COUNTER:
                    energy = cb_splitmix_next(&s) % 50000 == 0 ? 0.0
                                                       : energy + (double)(cb_splitmix_next(&s) % 8) / 1000.0;
                    v = round_to(energy, 3);
                    break;
                default: /* an average of three readings, as a gateway computes it */
                    avg = (round_to(base + gauss(&s), 1) + round_to(base + gauss(&s), 1) +
                           round_to(base + gauss(&s), 1)) / 3.0;
                    v = avg;
                    break;
                }
                int64_t jitter = (int64_t)(cb_splitmix_next(&s) % 9) - 4;
                if (t >= off_at && t < off_at + off_for)
                    continue;
                if (cb_splitmix_next(&s) % 500 == 0)
                    continue;
                add_point(d, se, t + jitter, v);
            }
        }
    return d;
}

/* ---- sizes --------------------------------------------------------------------------- */

struct tally {
    uint64_t samples, chunks;
    uint64_t raw, gorilla, decimal, best; /* bytes; decimal falls back to gorilla */
    uint64_t tried;                       /* the smallest of the three per chunk */
    uint64_t decimal_chunks;              /* chunks DECIMAL could scale */
    uint64_t best_codec[4];               /* chunks AUTO gave each codec */
};

/* The samples of chunk [from, from + n) of s into the tally. */
static void tally_chunk(struct tally *t, const struct cb_chunk_point *pts, size_t n, uint8_t *buf,
                        size_t cap)
{
    long raw = cb_chunk_encode(pts, n, CB_CHUNK_RAW, buf, cap);
    long gor = cb_chunk_encode(pts, n, CB_CHUNK_GORILLA, buf, cap);
    long dec = cb_chunk_encode(pts, n, CB_CHUNK_DECIMAL, buf, cap);
    long best = cb_chunk_encode(pts, n, CB_CHUNK_AUTO, buf, cap);
    if (raw < 0 || gor < 0 || best < 0 || (dec < 0 && dec != CB_CHUNK_EUNFIT))
        die("encoding failed");
    t->samples += n;
    t->chunks++;
    t->raw += (uint64_t)raw;
    t->gorilla += (uint64_t)gor;
    t->decimal += (uint64_t)(dec > 0 ? dec : gor);
    t->decimal_chunks += dec > 0;
    t->best += (uint64_t)best;
    t->best_codec[buf[0] & 3]++;
    long least = raw < gor ? raw : gor;
    t->tried += (uint64_t)(dec > 0 && dec < least ? dec : least);
}

static double per(uint64_t bytes, uint64_t samples)
{
    return samples ? (double)bytes / (double)samples : 0.0;
}

/* ---- other codings of the scaled integers ----------------------------------------- */

/* Simple-8b: 64-bit words of a 4-bit selector and 60 bits holding 240 or
 * 120 zeros, or 60 x 1 bit ... 1 x 60 bits; greedy. Values of 60 bits or
 * more take two words (an escape). Returns the words. */
static uint64_t simple8b_words(const uint64_t *v, size_t n)
{
    static const struct { unsigned count, bits; } sel[] = {
        {240, 0}, {120, 0}, {60, 1}, {30, 2}, {20, 3}, {15, 4}, {12, 5}, {10, 6},
        {8, 7},   {7, 8},   {6, 10}, {5, 12}, {4, 15}, {3, 20}, {2, 30}, {1, 60},
    };
    uint64_t words = 0;
    size_t i = 0;
    while (i < n) {
        size_t take = 0;
        for (size_t k = 0; k < sizeof sel / sizeof sel[0] && !take; k++) {
            if (sel[k].count > n - i && sel[k].count > 1)
                continue;
            size_t j = 0;
            while (j < sel[k].count && i + j < n &&
                   (sel[k].bits == 60 ? v[i + j] < (UINT64_C(1) << 60)
                                      : v[i + j] < (UINT64_C(1) << sel[k].bits)))
                j++;
            if (j == sel[k].count)
                take = j;
        }
        if (!take) { /* 60 bits or more */
            words += 2;
            i++;
        } else {
            words++;
            i += take;
        }
    }
    return words;
}

/* Bits of v in Gorilla's fixed delta-of-delta buckets (0, 14, 17, 20, 64). */
static unsigned fixed_bucket_bits(int64_t v)
{
    static const unsigned width[] = {14, 17, 20};
    if (v == 0)
        return 1;
    for (unsigned k = 0; k < 3; k++)
        if (v >= -(INT64_C(1) << (width[k] - 1)) && v < (INT64_C(1) << (width[k] - 1)))
            return 2 + k + width[k];
    return 4 + 64;
}

struct int_coding {
    uint64_t samples, varint, simple8b, fixed, adaptive; /* bytes */
};

/* A DECIMAL chunk's integers coded the other ways: same header (codec, n,
 * scale, ts0, x0, first ts delta), then ts deltas of deltas and value
 * deltas. */
static void code_ints(struct int_coding *ic, const struct cb_chunk_point *pts, size_t n, int d,
                      long adaptive_len)
{
    if (n < 3)
        return;
    uint64_t *tz = malloc(n * sizeof *tz), *vz = malloc(n * sizeof *vz);
    if (!tz || !vz)
        die("out of memory");
    double p = pow(10.0, d);
    int64_t x0 = (int64_t)round(pts[0].value * p), prevx = x0;
    size_t head = 1 + storage__uvarint_len(n) + 1 +
                  storage__uvarint_len(storage__zigzag((uint64_t)pts[0].ts_ms)) +
                  storage__uvarint_len(storage__zigzag((uint64_t)x0)) +
                  storage__uvarint_len((uint64_t)(pts[1].ts_ms - pts[0].ts_ms));
    uint64_t varint = 0, fixed_bits = 0;
    for (size_t i = 1; i < n; i++) {
        int64_t x = (int64_t)round(pts[i].value * p);
        vz[i - 1] = storage__zigzag((uint64_t)(x - prevx));
        varint += storage__uvarint_len(vz[i - 1]);
        fixed_bits += fixed_bucket_bits(x - prevx);
        if (i >= 2) {
            int64_t dod = (pts[i].ts_ms - pts[i - 1].ts_ms) - (pts[i - 1].ts_ms - pts[i - 2].ts_ms);
            tz[i - 2] = storage__zigzag((uint64_t)dod);
            varint += storage__uvarint_len(tz[i - 2]);
            fixed_bits += fixed_bucket_bits(dod);
        }
        prevx = x;
    }
    ic->samples += n;
    ic->varint += head + varint;
    ic->simple8b += head + 8 * (simple8b_words(tz, n - 2) + simple8b_words(vz, n - 1));
    ic->fixed += head + (fixed_bits + 7) / 8;
    ic->adaptive += (uint64_t)adaptive_len;
    free(tz);
    free(vz);
}

/* ---- per dataset ------------------------------------------------------------------------ */

/* Sizes of every codec for each chunk size, the breakdown by kind at 120
 * (as # lines), and for the city the other integer codings. */
static void measure(const char *name, struct dataset *d, struct tally tl[NSIZES],
                    struct int_coding *ic)
{
    size_t cap = cb_chunk_bound(480);
    uint8_t *buf = malloc(cap);
    if (!buf)
        die("out of memory");
    memset(tl, 0, NSIZES * sizeof *tl);
    for (size_t z = 0; z < NSIZES; z++)
        for (size_t i = 0; i < d->n; i++)
            for (size_t at = 0; at < d->s[i].n; at += chunk_sizes[z]) {
                size_t n = d->s[i].n - at < chunk_sizes[z] ? d->s[i].n - at : chunk_sizes[z];
                tally_chunk(&tl[z], d->s[i].pts + at, n, buf, cap);
                int dd;
                if (ic && z == 0 && (dd = cb_chunk_decimal_scale(d->s[i].pts + at, n)) >= 0)
                    code_ints(ic, d->s[i].pts + at, n, dd,
                              cb_chunk_encode(d->s[i].pts + at, n, CB_CHUNK_DECIMAL, buf, cap));
            }
    /* the breakdown: kinds in order of first appearance */
    for (size_t i = 0; i < d->n; i++) {
        size_t first = 0;
        while (strcmp(d->s[first].kind, d->s[i].kind))
            first++;
        if (first != i)
            continue;
        struct tally k = {0};
        size_t nseries = 0;
        for (size_t j = i; j < d->n; j++)
            if (!strcmp(d->s[j].kind, d->s[i].kind)) {
                nseries++;
                for (size_t at = 0; at < d->s[j].n; at += 120) {
                    size_t n = d->s[j].n - at < 120 ? d->s[j].n - at : 120;
                    tally_chunk(&k, d->s[j].pts + at, n, buf, cap);
                }
            }
        printf("# %s %-15s %3zu series %8llu samples, bytes/sample at 120: gorilla %5.2f "
               "decimal %5.2f best %5.2f (chunks decimal %llu gorilla %llu raw %llu)\n",
               name, d->s[i].kind, nseries, (unsigned long long)k.samples,
               per(k.gorilla, k.samples), per(k.decimal, k.samples), per(k.best, k.samples),
               (unsigned long long)k.best_codec[CB_CHUNK_DECIMAL],
               (unsigned long long)k.best_codec[CB_CHUNK_GORILLA],
               (unsigned long long)k.best_codec[CB_CHUNK_RAW]);
    }
    free(buf);
}

static void print_sizes(const char *name, const struct tally tl[NSIZES])
{
    printf("chunk_%s_bytes_per_sample_raw_120 %.2f\n", name, per(tl[0].raw, tl[0].samples));
    printf("chunk_%s_bytes_per_sample_gorilla_120 %.3f\n", name, per(tl[0].gorilla, tl[0].samples));
    printf("chunk_%s_bytes_per_sample_decimal_120 %.3f (DECIMAL in %.0f %% of chunks, else "
           "GORILLA)\n",
           name, per(tl[0].decimal, tl[0].samples),
           100.0 * (double)tl[0].decimal_chunks / (double)tl[0].chunks);
    for (size_t z = 0; z < NSIZES; z++)
        printf("chunk_%s_bytes_per_sample_best_%zu %.3f %.3f (GORILLA alone); chunks: %llu "
               "DECIMAL, %llu GORILLA, %llu RAW\n",
               name, chunk_sizes[z], per(tl[z].best, tl[z].samples),
               per(tl[z].gorilla, tl[z].samples),
               (unsigned long long)tl[z].best_codec[CB_CHUNK_DECIMAL],
               (unsigned long long)tl[z].best_codec[CB_CHUNK_GORILLA],
               (unsigned long long)tl[z].best_codec[CB_CHUNK_RAW]);
    for (size_t z = 0; z < NSIZES; z++)
        printf("chunk_%s_bytes_per_sample_tried_all_%zu %.3f (the smallest of the three per "
               "chunk, which AUTO chose before it encoded once: %+.2f %%)\n",
               name, chunk_sizes[z], per(tl[z].tried, tl[z].samples),
               100.0 * ((double)tl[z].best / (double)tl[z].tried - 1.0));
}

/* ---- speed --------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ns per sample to encode (and decode) the dataset in chunks of 120 with
 * codec: the fastest of 5 passes. */
static void speed(struct dataset *d, enum cb_chunk_codec codec, double *enc_ns, double *dec_ns)
{
    size_t nchunks = 0;
    for (size_t i = 0; i < d->n; i++)
        nchunks += (d->s[i].n + 119) / 120;
    size_t cap = cb_chunk_bound(120);
    uint8_t *blobs = malloc(nchunks * cap);
    long *lens = malloc(nchunks * sizeof *lens);
    struct cb_chunk_point out[120];
    if (!blobs || !lens)
        die("out of memory");
    double best_enc = 1e30, best_dec = 1e30;
    uint64_t samples = 0, sink = 0;
    for (int pass = 0; pass < 5; pass++) {
        double t0 = now_s();
        size_t c = 0;
        samples = 0;
        for (size_t i = 0; i < d->n; i++)
            for (size_t at = 0; at < d->s[i].n; at += 120, c++) {
                size_t n = d->s[i].n - at < 120 ? d->s[i].n - at : 120;
                lens[c] = cb_chunk_encode(d->s[i].pts + at, n, codec, blobs + c * cap, cap);
                if (lens[c] == CB_CHUNK_EUNFIT)
                    lens[c] = cb_chunk_encode(d->s[i].pts + at, n, CB_CHUNK_GORILLA,
                                              blobs + c * cap, cap);
                samples += n;
            }
        double t1 = now_s();
        for (c = 0; c < nchunks; c++) {
            long k = cb_chunk_decode(blobs + c * cap, (size_t)lens[c], out, 120);
            if (k <= 0)
                die("decoding failed");
            sink += (uint64_t)out[k - 1].ts_ms;
        }
        double t2 = now_s();
        if (t1 - t0 < best_enc)
            best_enc = t1 - t0;
        if (t2 - t1 < best_dec)
            best_dec = t2 - t1;
    }
    if (sink == 42)
        fprintf(stderr, " ");
    *enc_ns = best_enc * 1e9 / (double)samples;
    *dec_ns = best_dec * 1e9 / (double)samples;
    free(blobs);
    free(lens);
}

/* ---- Prometheus ------------------------------------------------------------------------------ */

static int64_t tree_bytes(const char *path, int chunks_only, int inside_chunks)
{
    struct stat st;
    if (lstat(path, &st))
        return 0;
    if (!S_ISDIR(st.st_mode))
        return !chunks_only || inside_chunks ? (int64_t)st.st_size : 0;
    DIR *dir = opendir(path);
    if (!dir)
        return 0;
    int64_t sum = 0;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(dir)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            sum += tree_bytes(p, chunks_only, inside_chunks || !strcmp(e->d_name, "chunks"));
        }
    closedir(dir);
    return sum;
}

/* The city as OpenMetrics into promtool; bytes per sample of its blocks
 * (all files, and the chunks files alone). Returns 0, or -1 when promtool
 * is missing or fails. */
static int promtool_bytes(struct dataset *d, double *all, double *chunks)
{
    const char *tool = getenv("PROMTOOL") ? getenv("PROMTOOL") : "promtool";
    char dir[] = "/tmp/citybrain-bench-chunk.XXXXXX", cmd[2048], file[600], out[600];
    snprintf(cmd, sizeof cmd, "'%s' --version > /dev/null 2>&1", tool);
    if (system(cmd) != 0 || !mkdtemp(dir))
        return -1;
    snprintf(file, sizeof file, "%s/city.om", dir);
    snprintf(out, sizeof out, "%s/blocks", dir);
    FILE *f = fopen(file, "w");
    if (!f)
        return -1;
    struct cb_strbuf num;
    cb_strbuf_init(&num);
    for (size_t i = 0; i < d->n; i++) {
        char topic[128];
        snprintf(topic, sizeof topic, "%s", d->s[i].key);
        *strchr(topic, ' ') = 0;
        for (size_t j = 0; j < d->s[i].n; j++) {
            const struct cb_chunk_point *p = &d->s[i].pts[j];
            cb_strbuf_reset(&num);
            cb_strbuf_json_number(&num, p->value); /* the shortest exact text */
            fprintf(f, "%s{sensor=\"%s\"} %s %lld.%03lld\n", d->s[i].kind, topic, num.data,
                    (long long)(p->ts_ms / 1000), (long long)(p->ts_ms % 1000));
        }
    }
    cb_strbuf_free(&num);
    fputs("# EOF\n", f);
    int rc = fclose(f) ? -1 : 0;
    snprintf(cmd, sizeof cmd, "'%s' tsdb create-blocks-from openmetrics --quiet '%s' '%s' >&2",
             tool, file, out);
    if (rc == 0 && system(cmd) != 0)
        rc = -1;
    if (rc == 0) {
        *all = per((uint64_t)tree_bytes(out, 0, 0), d->samples);
        *chunks = per((uint64_t)tree_bytes(out, 1, 0), d->samples);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_chunk: could not remove %s\n", dir);
    return rc;
}

/* ---- the store ------------------------------------------------------------------------------- */

/* The city written through the store (cb_store_append, a commit per
 * simulated minute of all series) into a new database at schema `version`
 * (7 and later: chunks, sealed at the end; 6: one row per sample, the
 * layout before chunks), closed (the rollups derived) and checkpointed.
 * Sets the bytes per sample of the whole file and of the raw samples'
 * tables alone (dbstat). Returns 0, or -1 when the store fails. */
static int store_bytes(struct dataset *d, int version, double *file, double *raw)
{
    char dir[] = "/tmp/citybrain-bench-store.XXXXXX", path[600], err[512], cmd[700];
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/city.db", dir);
    struct cb_config cfg;
    if (cb_config_defaults(&cfg) < 0)
        return -1;
    free(cfg.storage_db);
    cfg.storage_db = strdup(path);
    cfg.storage_commit_interval_ms = 60000; /* commits by cb_store_flush */
    cfg.storage_retention_interval_ms = INT64_C(30) * 24 * 3600 * 1000;
    cfg.storage_max_pending_rows = 10000000;
    int rc = -1;
    struct cb_store *s = storage__open(&cfg, NULL, version, err, sizeof err);
    if (!s)
        goto out;
    size_t *at = calloc(d->n, sizeof *at);
    struct cb_sample smp;
    for (int64_t t = CITY_START;; t += 60000) {
        int left = 0;
        for (size_t i = 0; i < d->n; i++) {
            char topic[128];
            snprintf(topic, sizeof topic, "%s", d->s[i].key);
            char *sp = strchr(topic, ' ');
            *sp = 0;
            smp.metric = sp + 1;
            for (; at[i] < d->s[i].n && d->s[i].pts[at[i]].ts_ms < t + 60000; at[i]++) {
                smp.ts_ms = d->s[i].pts[at[i]].ts_ms;
                smp.value = d->s[i].pts[at[i]].value;
                cb_store_append(s, topic, NULL, &smp, 1, 0);
            }
            left |= at[i] < d->s[i].n;
        }
        cb_store_flush(s);
        /* the writer seals every 2 minutes of its clock; this loop runs
         * faster than the simulated time, so it seals by the simulated one */
        if (version >= 7 && (t - CITY_START) % STORAGE_SEAL_SPAN_MS == 0)
            storage__seal(s);
        if (!left)
            break;
    }
    free(at);
    if (version >= 7)
        storage__seal(s);
    cb_store_close(s);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) == SQLITE_OK &&
        sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) == SQLITE_OK) {
        sqlite3_stmt *st = NULL;
        struct stat sb;
        if (stat(path, &sb) == 0 &&
            sqlite3_prepare_v2(db, "SELECT sum(pgsize) FROM dbstat WHERE name IN ('chunks', "
                                   "'head_blocks', 'head', 'samples', 'samples_v6')",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            *file = per((uint64_t)sb.st_size, d->samples);
            *raw = per((uint64_t)sqlite3_column_int64(st, 0), d->samples);
            rc = 0;
        }
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
out:
    cb_config_free(&cfg);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_chunk: could not remove %s\n", dir);
    return rc;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const char *q = getenv("BENCH_QUICK"), *in = NULL;
    int hours = q && !strcmp(q, "1") ? 2 : 24, prom = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--hours") && i + 1 < argc)
            hours = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--in") && i + 1 < argc)
            in = argv[++i];
        else if (!strcmp(argv[i], "--no-promtool"))
            prom = 0;
        else {
            fprintf(stderr, "usage: bench_chunk [--hours H] [--in FILE] [--no-promtool]\n");
            return 2;
        }
    }
    if (hours < 1 || hours > 24 * 31)
        die("--hours must be in 1..744");

    struct dataset *city = load_city(in, hours);
    struct tally tl[NSIZES];
    struct int_coding ic = {0};
    printf("chunk_city_series %zu\n", city->n);
    printf("chunk_city_samples %llu\n", (unsigned long long)city->samples);
    measure("city", city, tl, &ic);
    print_sizes("city", tl);
    printf("chunk_city_int_coding_decimal %.3f (per-chunk buckets, as stored)\n",
           per(ic.adaptive, ic.samples));
    printf("chunk_city_int_coding_varint %.3f\n", per(ic.varint, ic.samples));
    printf("chunk_city_int_coding_simple8b %.3f\n", per(ic.simple8b, ic.samples));
    printf("chunk_city_int_coding_fixed_buckets %.3f\n", per(ic.fixed, ic.samples));
    double pall, pchunks;
    if (!prom)
        printf("chunk_city_promtool_bytes_per_sample skipped (--no-promtool)\n");
    else if (promtool_bytes(city, &pall, &pchunks) == 0)
        printf("chunk_city_promtool_bytes_per_sample %.3f (every file of its blocks; chunks files "
               "alone %.3f)\n",
               pall, pchunks);
    else
        printf("chunk_city_promtool_bytes_per_sample not run (promtool missing or failed: "
               "apt-get install prometheus)\n");

    double sfile, sraw;
    if (store_bytes(city, STORAGE_SCHEMA_VERSION, &sfile, &sraw) == 0)
        printf("chunk_city_store_bytes_per_sample %.3f (the whole file, rollups included; "
               "chunks and head alone %.3f)\n",
               sfile, sraw);
    else
        printf("chunk_city_store_bytes_per_sample not run (the store failed)\n");
    if (store_bytes(city, 6, &sfile, &sraw) == 0)
        printf("chunk_city_store_v6_bytes_per_sample %.3f (one row per sample, schema 6; the "
               "samples table alone %.3f)\n",
               sfile, sraw);
    else
        printf("chunk_city_store_v6_bytes_per_sample not run (the store failed)\n");

    static const struct { const char *name; enum cb_chunk_codec codec; } speeds[] = {
        {"raw", CB_CHUNK_RAW},
        {"gorilla", CB_CHUNK_GORILLA},
        {"decimal", CB_CHUNK_DECIMAL},
        {"best", CB_CHUNK_AUTO},
    };
    for (size_t k = 0; k < sizeof speeds / sizeof speeds[0]; k++) {
        double e, dns;
        speed(city, speeds[k].codec, &e, &dns);
        printf("chunk_encode_ns_per_sample_%s %.1f\n", speeds[k].name, e);
        printf("chunk_decode_ns_per_sample_%s %.1f\n", speeds[k].name, dns);
    }
    dataset_free(city);

    struct dataset *gen = load_generated(hours);
    printf("chunk_gen_samples %llu\n", (unsigned long long)gen->samples);
    measure("gen", gen, tl, NULL);
    print_sizes("gen", tl);
    dataset_free(gen);
    return 0;
}
