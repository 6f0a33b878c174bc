/* Payload decoding: JSON objects, SenML packs and bare numbers into samples
 * (rules.md, "Sensors, metrics and samples"). Runs on the loop thread; one
 * decoder per thread.
 *
 * Decisions (each one is tested in tests/test_decode.c):
 *
 * Order of checks. Topic length (topic_too_long), then payload size
 * (payload_too_large), then a single cheap pre-scan of the bytes before any
 * parser sees them: NUL bytes and invalid UTF-8 are malformed (metric and
 * device names come from the payload and end up in SQLite and in JSON
 * output), and the nesting of '{' / '[' outside strings is counted, so a
 * payload deeper than max_json_depth is refused (too_deep) before cJSON's
 * recursive parser could recurse on it. Depth 1 is a flat object; a SenML
 * pack of records is depth 2.
 *
 * What the payload is. After trimming white space: '{' is a JSON object, '['
 * a SenML pack; anything else is first tried as a bare number (the whole text
 * must be one number: metric "value"); then as a JSON scalar: a string is
 * string_value, true/false are 1/0 under metric "value", null carries nothing
 * (no_samples). "NaN", "Infinity", "inf" (any case, signed) are not_finite,
 * wherever they appear: cJSON refuses them, and we look at where it stopped.
 * A number whose magnitude overflows a double (1e999) is overflow; one that
 * underflows (1e-999) is accepted as the nearest double (0 or a subnormal).
 *
 * JSON objects. Every number is a sample; true/false are 1/0; nested objects
 * flatten with '.' ({"air":{"pm25":4}} gives air.pm25). Strings are not
 * metrics (ids, states, firmware versions travel beside numbers) and are
 * skipped; but when an object carries no number at all and did carry
 * strings, the payload is string_value ({"temp":"21.5"}), otherwise
 * no_samples. Arrays inside objects are skipped (a list has no name per
 * element; send SenML for series). null is skipped. A member with an empty
 * key is skipped. A flattened name longer than 255 bytes makes the payload
 * malformed. Duplicate keys yield one sample each, in document order.
 * Only the top-level "ts" is the event time (and is not a metric); a nested
 * "ts" is an ordinary metric (gps.ts).
 *
 * ts. A number >= 1e11 is milliseconds since the epoch (fractions rounded to
 * the nearest ms), a smaller one is seconds (fractions allowed); a string is
 * RFC 3339. Anything else (bool, null, object, a bad string, a negative time,
 * past 9999-12-31) is bad_ts. Without ts the event time is arrival_ms, or,
 * when arrival_ms is CB_DECODE_NO_ARRIVAL (replay), missing_ts.
 *
 * SenML (RFC 8428). The payload is an array of records (objects); anything
 * else in it is senml. Base fields bn, bt, bu, bv, bs, bver carry over to the
 * following records until a record sets them again. The metric is n (bn is
 * the device, kept in cb_decoded.device; a record without n is metric
 * "value"). One pack describes one device: a second, different bn is refused
 * (senml) because a decode result has one device. Value: bv + v; vb is 1/0;
 * vs and vd are valid but not numeric and are skipped; s (sum, plus bs) is a
 * second sample named "<metric>.sum". A record with two of v/vs/vb/vd is
 * senml; a record with no value and no sum (a base-only record) yields
 * nothing. Time: bt + t in seconds; a total below 2^28 is relative to now
 * (arrival_ms; in replay: missing_ts), otherwise absolute. ut (update time)
 * and u/bu (units) are checked for type and otherwise ignored. bver above 10
 * is refused. Any label ending in '_' is a must-understand extension we do
 * not implement: the whole pack is refused (senml). Other unknown labels are
 * ignored (RFC 8428 section 4.4). Wrong types: v as a string is string_value,
 * t/bt not numbers are bad_ts, every other wrongly typed label is senml.
 *
 * Limits. More samples than max_fields: too_many_fields. Rejection is all or
 * nothing: a refused payload yields no sample.
 *
 * Memory. The sample array, the name arena and the device name live in the
 * decoder and grow to the largest message seen, so steady-state decoding does
 * not allocate per sample in citybrain's code. cJSON itself allocates its
 * tree per parse (its hooks are process-wide, so we leave them alone); bare
 * numbers do not touch cJSON. */
#include "ingest/ingest.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/strbuf.h"

#define MAX_NAME 255
/* 9999-12-31T23:59:59.999Z */
#define MAX_TS_MS 253402300799999LL
#define SENML_REL_LIMIT 268435456.0 /* 2^28 seconds */
#define SENML_VERSION 10

struct cb_decoder {
    struct cb_decode_limits lim;
    struct cb_sample *samples;
    size_t *name_off; /* offset of each sample's metric in names */
    size_t ns, scap;
    struct cb_strbuf names; /* NUL-terminated names, back to back */
    char *text;       /* NUL-terminated copy for strtod */
    size_t tcap;
    char path[MAX_NAME + 2];
    size_t device_off;
    bool has_device;
    bool saw_string;
};

void cb_decode_limits_from_config(struct cb_decode_limits *l, const struct cb_config *cfg)
{
    l->max_payload = (size_t)cfg->ingest_max_payload;
    l->max_topic_length = (size_t)cfg->ingest_max_topic_length;
    l->max_json_depth = (int)cfg->ingest_max_json_depth;
    l->max_fields = (size_t)cfg->ingest_max_fields;
}

struct cb_decoder *cb_decoder_new(const struct cb_decode_limits *limits)
{
    struct cb_decoder *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->lim = *limits;
    return d;
}

void cb_decoder_free(struct cb_decoder *d)
{
    if (!d)
        return;
    free(d->samples);
    free(d->name_off);
    cb_strbuf_free(&d->names);
    free(d->text);
    free(d);
}

/* ---- small helpers ------------------------------------------------------------ */

/* Adds one sample whose metric is name[0..len). Returns CB_REJECT_NONE,
 * too_many_fields, or malformed on OOM (the payload cannot be kept whole). */
static enum cb_reject add_sample(struct cb_decoder *d, const char *name, size_t len, int64_t ts,
                                 double v)
{
    if (d->ns >= d->lim.max_fields)
        return CB_REJECT_TOO_MANY_FIELDS;
    if (d->ns == d->scap) {
        size_t nc = d->scap ? d->scap * 2 : 16;
        struct cb_sample *ns = realloc(d->samples, nc * sizeof *ns);
        if (!ns)
            return CB_REJECT_MALFORMED;
        d->samples = ns;
        size_t *no = realloc(d->name_off, nc * sizeof *no);
        if (!no)
            return CB_REJECT_MALFORMED;
        d->name_off = no;
        d->scap = nc;
    }
    size_t off = cb_strbuf_add_string(&d->names, name, len);
    if (off == SIZE_MAX)
        return CB_REJECT_MALFORMED;
    d->name_off[d->ns] = off;
    d->samples[d->ns].metric = NULL; /* fixed up at the end: the arena may move */
    d->samples[d->ns].ts_ms = ts;
    d->samples[d->ns].value = v;
    d->ns++;
    return CB_REJECT_NONE;
}

static bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* One pass over the payload: NUL bytes and invalid UTF-8 are malformed;
 * nesting deeper than max_depth (counted outside strings) is too_deep. */
static enum cb_reject prescan(const unsigned char *p, size_t n, int max_depth)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c == 0)
            return CB_REJECT_MALFORMED;
        if (c >= 0x80) {
            /* UTF-8: reject overlongs, surrogates and code points past U+10FFFF. */
            size_t k;
            unsigned cp;
            if (c >= 0xC2 && c <= 0xDF)
                k = 1, cp = c & 0x1F;
            else if (c >= 0xE0 && c <= 0xEF)
                k = 2, cp = c & 0x0F;
            else if (c >= 0xF0 && c <= 0xF4)
                k = 3, cp = c & 0x07;
            else
                return CB_REJECT_MALFORMED;
            if (i + k >= n)
                return CB_REJECT_MALFORMED;
            for (size_t j = 1; j <= k; j++) {
                if ((p[i + j] & 0xC0) != 0x80)
                    return CB_REJECT_MALFORMED;
                cp = (cp << 6) | (p[i + j] & 0x3F);
            }
            if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
                (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
                return CB_REJECT_MALFORMED;
            i += k;
            esc = false;
            continue;
        }
        if (in_str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return CB_REJECT_TOO_DEEP;
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return CB_REJECT_NONE;
}

/* Is the text at p (n bytes) a NaN or infinity spelling? */
static bool is_nonfinite_word(const char *p, size_t n)
{
    if (n && (*p == '-' || *p == '+'))
        p++, n--;
    static const char *const words[] = {"nan", "infinity", "inf"};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t wl = strlen(words[i]);
        if (n >= wl && strncasecmp(p, words[i], wl) == 0) {
            char next = n > wl ? p[wl] : '\0';
            bool alnum = (next >= '0' && next <= '9') || (next >= 'a' && next <= 'z') ||
                         (next >= 'A' && next <= 'Z') || next == '_';
            if (!alnum)
                return true;
        }
    }
    return false;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, size_t len, size_t at, size_t n, int *out)
{
    if (at + n > len)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[at + i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

int cb_parse_rfc3339(const char *s, size_t len, int64_t *out_ms)
{
    int y, mo, d, h, mi, sec;
    if (digits(s, len, 0, 4, &y) || len < 5 || s[4] != '-' || digits(s, len, 5, 2, &mo) ||
        len < 8 || s[7] != '-' || digits(s, len, 8, 2, &d) || len < 11 ||
        (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || digits(s, len, 11, 2, &h) ||
        len < 14 || s[13] != ':' || digits(s, len, 14, 2, &mi) || len < 17 || s[16] != ':' ||
        digits(s, len, 17, 2, &sec))
        return -1;
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || sec > 60)
        return -1;
    if (sec == 60) /* a leap second: the last millisecond of its minute */
        sec = 59;
    size_t i = 19;
    int64_t ms = 0;
    if (i < len && s[i] == '.') {
        i++;
        size_t start = i;
        int scale = 100;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            ms += (s[i] - '0') * scale;
            scale /= 10;
            i++;
        }
        if (i == start)
            return -1;
    }
    if (i >= len)
        return -1;
    int64_t offset_min = 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        int oh, om;
        if (digits(s, len, i + 1, 2, &oh) || i + 3 >= len || s[i + 3] != ':' ||
            digits(s, len, i + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = (s[i] == '+' ? 1 : -1) * (oh * 60 + om);
        i += 6;
    } else {
        return -1;
    }
    if (i != len)
        return -1;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    int64_t t = secs * 1000 + ms;
    if (t < 0 || t > MAX_TS_MS)
        return -1;
    *out_ms = t;
    return 0;
}

/* A ts number to ms: >= 1e11 is ms, else seconds. */
static enum cb_reject ts_from_number(double v, int64_t *out)
{
    if (!isfinite(v) || v < 0)
        return CB_REJECT_BAD_TS;
    double ms = v >= 1e11 ? v : v * 1000.0;
    if (ms > (double)MAX_TS_MS)
        return CB_REJECT_BAD_TS;
    *out = llround(ms);
    return CB_REJECT_NONE;
}

static enum cb_reject ts_from_json(const cJSON *ts, int64_t *out)
{
    if (cJSON_IsNumber(ts))
        return ts_from_number(ts->valuedouble, out);
    if (cJSON_IsString(ts) && ts->valuestring &&
        cb_parse_rfc3339(ts->valuestring, strlen(ts->valuestring), out) == 0)
        return CB_REJECT_NONE;
    return CB_REJECT_BAD_TS;
}

/* ---- JSON objects -------------------------------------------------------------- */

/* Walks obj, adding a sample per number/bool; path[0..plen) is the prefix.
 * Depth is bounded by the pre-scan. */
static enum cb_reject walk_object(struct cb_decoder *d, const cJSON *obj, size_t plen, int64_t ts,
                                  bool top)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        if (!c->string || !*c->string)
            continue;
        if (top && strcmp(c->string, "ts") == 0)
            continue;
        size_t kl = strlen(c->string);
        size_t nl = plen + (plen ? 1 : 0) + kl;
        bool named = cJSON_IsNumber(c) || cJSON_IsBool(c) || cJSON_IsObject(c);
        if (!named) {
            if (cJSON_IsString(c))
                d->saw_string = true;
            continue; /* strings, arrays, null */
        }
        if (nl > MAX_NAME)
            return CB_REJECT_MALFORMED;
        if (plen)
            d->path[plen] = '.';
        memcpy(d->path + plen + (plen ? 1 : 0), c->string, kl);
        d->path[nl] = '\0';
        enum cb_reject r = CB_REJECT_NONE;
        if (cJSON_IsNumber(c)) {
            if (!isfinite(c->valuedouble))
                return CB_REJECT_OVERFLOW; /* JSON has no inf: strtod overflowed */
            r = add_sample(d, d->path, nl, ts, c->valuedouble);
        } else if (cJSON_IsBool(c)) {
            r = add_sample(d, d->path, nl, ts, cJSON_IsTrue(c) ? 1.0 : 0.0);
        } else {
            r = walk_object(d, c, nl, ts, false);
        }
        if (r != CB_REJECT_NONE)
            return r;
    }
    return CB_REJECT_NONE;
}

static enum cb_reject decode_object(struct cb_decoder *d, const cJSON *root, int64_t arrival)
{
    int64_t ts = arrival;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "ts");
    if (t) {
        enum cb_reject r = ts_from_json(t, &ts);
        if (r != CB_REJECT_NONE)
            return r;
    } else if (arrival == CB_DECODE_NO_ARRIVAL) {
        return CB_REJECT_MISSING_TS;
    }
    enum cb_reject r = walk_object(d, root, 0, ts, true);
    if (r != CB_REJECT_NONE)
        return r;
    if (d->ns == 0)
        return d->saw_string ? CB_REJECT_STRING_VALUE : CB_REJECT_NO_SAMPLES;
    return CB_REJECT_NONE;
}

/* ---- SenML ------------------------------------------------------------------------ */

struct senml_base {
    const char *bn;
    double bt, bv, bs;
};

static bool ends_with_underscore(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '_';
}

static enum cb_reject senml_number(const cJSON *f, double *out)
{
    if (cJSON_IsString(f))
        return CB_REJECT_STRING_VALUE;
    if (!cJSON_IsNumber(f))
        return CB_REJECT_SENML;
    if (!isfinite(f->valuedouble))
        return CB_REJECT_OVERFLOW;
    *out = f->valuedouble;
    return CB_REJECT_NONE;
}

/* The event time of a record: bt + t seconds, relative to arrival below 2^28. */
static enum cb_reject senml_time(double total, int64_t arrival, int64_t *out)
{
    if (!isfinite(total))
        return CB_REJECT_BAD_TS;
    if (fabs(total) < SENML_REL_LIMIT) {
        if (arrival == CB_DECODE_NO_ARRIVAL)
            return CB_REJECT_MISSING_TS;
        double ms = (double)arrival + total * 1000.0;
        if (ms < 0 || ms > (double)MAX_TS_MS)
            return CB_REJECT_BAD_TS;
        *out = llround(ms);
        return CB_REJECT_NONE;
    }
    if (total < 0 || total * 1000.0 > (double)MAX_TS_MS)
        return CB_REJECT_BAD_TS;
    *out = llround(total * 1000.0);
    return CB_REJECT_NONE;
}

static enum cb_reject decode_senml(struct cb_decoder *d, const cJSON *root, int64_t arrival)
{
    struct senml_base base = {NULL, 0, 0, 0};
    if (!root->child)
        return CB_REJECT_NO_SAMPLES;
    for (const cJSON *rec = root->child; rec; rec = rec->next) {
        if (!cJSON_IsObject(rec))
            return CB_REJECT_SENML;
        const cJSON *n = NULL, *v = NULL, *vs = NULL, *vb = NULL, *vd = NULL, *s = NULL,
                    *t = NULL;
        enum cb_reject r;
        for (const cJSON *f = rec->child; f; f = f->next) {
            const char *k = f->string;
            if (!k || ends_with_underscore(k))
                return CB_REJECT_SENML; /* must-understand extension */
            if (!strcmp(k, "bn")) {
                if (!cJSON_IsString(f))
                    return CB_REJECT_SENML;
                if (base.bn && strcmp(base.bn, f->valuestring) != 0)
                    return CB_REJECT_SENML; /* one device per pack */
                base.bn = f->valuestring;
            } else if (!strcmp(k, "bt")) {
                if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble))
                    return CB_REJECT_BAD_TS;
                base.bt = f->valuedouble;
            } else if (!strcmp(k, "bv")) {
                if ((r = senml_number(f, &base.bv)) != CB_REJECT_NONE)
                    return r;
            } else if (!strcmp(k, "bs")) {
                if ((r = senml_number(f, &base.bs)) != CB_REJECT_NONE)
                    return r;
            } else if (!strcmp(k, "bver")) {
                if (!cJSON_IsNumber(f) || f->valuedouble < 1 || f->valuedouble > SENML_VERSION)
                    return CB_REJECT_SENML;
            } else if (!strcmp(k, "bu") || !strcmp(k, "u")) {
                if (!cJSON_IsString(f))
                    return CB_REJECT_SENML;
            } else if (!strcmp(k, "n")) {
                if (!cJSON_IsString(f))
                    return CB_REJECT_SENML;
                n = f;
            } else if (!strcmp(k, "v")) {
                v = f;
            } else if (!strcmp(k, "vs")) {
                if (!cJSON_IsString(f))
                    return CB_REJECT_SENML;
                vs = f;
            } else if (!strcmp(k, "vb")) {
                if (!cJSON_IsBool(f))
                    return CB_REJECT_SENML;
                vb = f;
            } else if (!strcmp(k, "vd")) {
                if (!cJSON_IsString(f))
                    return CB_REJECT_SENML;
                vd = f;
            } else if (!strcmp(k, "s")) {
                s = f;
            } else if (!strcmp(k, "t")) {
                if (!cJSON_IsNumber(f) || !isfinite(f->valuedouble))
                    return CB_REJECT_BAD_TS;
                t = f;
            } else if (!strcmp(k, "ut")) {
                if (!cJSON_IsNumber(f))
                    return CB_REJECT_SENML;
            }
            /* other labels: ignored (RFC 8428 4.4) */
        }
        if ((v != NULL) + (vs != NULL) + (vb != NULL) + (vd != NULL) > 1)
            return CB_REJECT_SENML;
        if (!v && !vb && !s)
            continue; /* base-only record, or a string/data value */
        int64_t ts;
        if ((r = senml_time(base.bt + (t ? t->valuedouble : 0.0), arrival, &ts)) !=
            CB_REJECT_NONE)
            return r;
        const char *name = n && *n->valuestring ? n->valuestring : "value";
        size_t nl = strlen(name);
        if (nl > MAX_NAME - 4)
            return CB_REJECT_MALFORMED;
        if (v || vb) {
            double val;
            if (vb) {
                val = cJSON_IsTrue(vb) ? 1.0 : 0.0;
            } else {
                if ((r = senml_number(v, &val)) != CB_REJECT_NONE)
                    return r;
                val += base.bv;
                if (!isfinite(val))
                    return CB_REJECT_OVERFLOW;
            }
            if ((r = add_sample(d, name, nl, ts, val)) != CB_REJECT_NONE)
                return r;
        }
        if (s) {
            double sum;
            if ((r = senml_number(s, &sum)) != CB_REJECT_NONE)
                return r;
            sum += base.bs;
            if (!isfinite(sum))
                return CB_REJECT_OVERFLOW;
            memcpy(d->path, name, nl);
            memcpy(d->path + nl, ".sum", 5);
            if ((r = add_sample(d, d->path, nl + 4, ts, sum)) != CB_REJECT_NONE)
                return r;
        }
    }
    if (base.bn) {
        size_t off = cb_strbuf_add_string(&d->names, base.bn, strlen(base.bn));
        if (off == SIZE_MAX)
            return CB_REJECT_MALFORMED;
        d->device_off = off;
        d->has_device = true;
    }
    return d->ns ? CB_REJECT_NONE : CB_REJECT_NO_SAMPLES;
}

/* ---- entry point ------------------------------------------------------------------- */

/* Tries the trimmed text as one bare number (strtod must consume it all).
 * Returns 1 when it was a number (*r set), 0 when it is not one. */
static int bare_number(struct cb_decoder *d, const char *p, size_t n, int64_t arrival,
                       enum cb_reject *r)
{
    if (n + 1 > d->tcap) {
        size_t nc = d->tcap ? d->tcap : 64;
        while (nc < n + 1)
            nc *= 2;
        char *nt = realloc(d->text, nc);
        if (!nt) {
            *r = CB_REJECT_MALFORMED;
            return 1;
        }
        d->text = nt;
        d->tcap = nc;
    }
    memcpy(d->text, p, n);
    d->text[n] = '\0';
    char c = d->text[0];
    if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.'))
        return 0;
    /* Hex floats and the like are not numbers here. */
    for (size_t i = 0; i < n; i++) {
        char x = d->text[i];
        if (!((x >= '0' && x <= '9') || x == '-' || x == '+' || x == '.' || x == 'e' ||
              x == 'E'))
            return 0;
    }
    errno = 0;
    char *end;
    double v = strtod(d->text, &end);
    if (end != d->text + n)
        return 0;
    if (errno == ERANGE && fabs(v) > 1.0) {
        *r = CB_REJECT_OVERFLOW;
        return 1;
    }
    if (arrival == CB_DECODE_NO_ARRIVAL) {
        *r = CB_REJECT_MISSING_TS;
        return 1;
    }
    *r = add_sample(d, "value", 5, arrival, v);
    return 1;
}

enum cb_reject cb_decode(struct cb_decoder *d, const char *topic, const void *payload,
                         size_t len, int64_t arrival_ms, struct cb_decoded *out)
{
    d->ns = 0;
    cb_strbuf_reset(&d->names);
    d->has_device = false;
    d->saw_string = false;
    out->samples = NULL;
    out->n = 0;
    out->device = NULL;

    enum cb_reject r = CB_REJECT_NONE;
    cJSON *root = NULL;
    if (topic && strlen(topic) > d->lim.max_topic_length)
        return CB_REJECT_TOPIC_TOO_LONG;
    if (len > d->lim.max_payload)
        return CB_REJECT_PAYLOAD_TOO_LARGE;
    const char *p = payload;
    size_t n = len;
    if (!p)
        n = 0;
    while (n && is_space((unsigned char)*p))
        p++, n--;
    while (n && is_space((unsigned char)p[n - 1]))
        n--;
    if (n == 0)
        return CB_REJECT_MALFORMED;
    if ((r = prescan((const unsigned char *)p, n, d->lim.max_json_depth)) != CB_REJECT_NONE)
        return r;

    if (*p != '{' && *p != '[' && bare_number(d, p, n, arrival_ms, &r))
        goto done;

    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(p, n, &end, false);
    if (!root || (end && end != p + n)) {
        /* Where cJSON stopped tells NaN/Infinity apart from junk. */
        if (end && end >= p && end < p + n && is_nonfinite_word(end, (size_t)(p + n - end)))
            r = CB_REJECT_NOT_FINITE;
        else if (!root && is_nonfinite_word(p, n))
            r = CB_REJECT_NOT_FINITE;
        else
            r = CB_REJECT_MALFORMED;
        goto done;
    }
    if (cJSON_IsObject(root)) {
        r = decode_object(d, root, arrival_ms);
    } else if (cJSON_IsArray(root)) {
        r = decode_senml(d, root, arrival_ms);
    } else if (cJSON_IsString(root)) {
        r = CB_REJECT_STRING_VALUE;
    } else if (cJSON_IsBool(root)) {
        if (arrival_ms == CB_DECODE_NO_ARRIVAL)
            r = CB_REJECT_MISSING_TS;
        else
            r = add_sample(d, "value", 5, arrival_ms, cJSON_IsTrue(root) ? 1.0 : 0.0);
    } else if (cJSON_IsNumber(root)) {
        /* Reached only for numbers bare_number did not take (none today). */
        r = !isfinite(root->valuedouble) ? CB_REJECT_OVERFLOW : CB_REJECT_MALFORMED;
    } else {
        r = CB_REJECT_NO_SAMPLES; /* null */
    }

done:
    cJSON_Delete(root);
    if (r != CB_REJECT_NONE) {
        d->ns = 0;
        return r;
    }
    for (size_t i = 0; i < d->ns; i++)
        d->samples[i].metric = d->names.data + d->name_off[i];
    out->samples = d->samples;
    out->n = d->ns;
    out->device = d->has_device ? d->names.data + d->device_off : NULL;
    return CB_REJECT_NONE;
}
