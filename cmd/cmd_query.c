/* citybrain query: reads the store as JSON lines (interfaces.md).
 *
 *   citybrain query --db PATH [--topic T] [--metric M] [--from MS] [--to MS]
 *                   [--step DURATION]
 *
 * Raw samples: {"topic","metric","ts","value"}; with --step, buckets:
 * {"topic","metric","ts","count","min","max","avg","last"}. Uses its own
 * read-only connection, so it is safe while `citybrain run` writes. */
#include "cmd/commands.h"
#include "base/config.h"
#include "base/strbuf.h"
#include "storage/storage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct out {
    struct cb_strbuf b;
    int failed;
    int64_t step; /* --step, for the span of a wider bucket */
};

static void usage(FILE *f)
{
    fprintf(f, "usage: citybrain query --db PATH [--topic T] [--metric M] [--from MS] [--to MS] "
               "[--step DURATION]\n"
               "  prints stored samples as JSON lines: {\"topic\",\"metric\",\"ts\",\"value\"},\n"
               "  or with --step (60s, 5m, 1h...) time buckets:\n"
               "  {\"topic\",\"metric\",\"ts\",\"count\",\"min\",\"max\",\"avg\",\"last\"}.\n"
               "  --from is inclusive, --to exclusive (milliseconds since the epoch).\n"
               "  Each bucket comes from the raw samples where they are all still stored,\n"
               "  else from the 1-minute rollup, else from the 1-hour one. A rollup bucket\n"
               "  is never split: with a step shorter than it, it is one bucket at its\n"
               "  start with \"span\" (ms) saying how long it is (e.g. 3600000).\n");
}

/* Writes the line in b to stdout; remembers a write error. */
static int emit(struct out *o)
{
    cb_strbuf_putc(&o->b, '\n');
    if (o->b.oom || fwrite(o->b.data, 1, o->b.len, stdout) != o->b.len) {
        o->failed = 1;
        return 1;
    }
    cb_strbuf_reset(&o->b);
    return 0;
}

static void head(struct cb_strbuf *b, const char *topic, const char *metric, int64_t ts)
{
    cb_strbuf_puts(b, "{\"topic\":");
    cb_strbuf_json_string(b, topic, strlen(topic));
    cb_strbuf_puts(b, ",\"metric\":");
    cb_strbuf_json_string(b, metric, strlen(metric));
    cb_strbuf_printf(b, ",\"ts\":%lld", (long long)ts);
}

static int on_raw(void *ctx, const char *topic, const char *metric, int64_t ts, double value)
{
    struct out *o = ctx;
    head(&o->b, topic, metric, ts);
    cb_strbuf_puts(&o->b, ",\"value\":");
    cb_strbuf_json_number(&o->b, value);
    cb_strbuf_putc(&o->b, '}');
    return emit(o);
}

static int on_bucket(void *ctx, const char *topic, const char *metric, const struct cb_bucket *bk)
{
    struct out *o = ctx;
    head(&o->b, topic, metric, bk->ts);
    cb_strbuf_printf(&o->b, ",\"count\":%llu,\"min\":", (unsigned long long)bk->count);
    cb_strbuf_json_number(&o->b, bk->min);
    cb_strbuf_puts(&o->b, ",\"max\":");
    cb_strbuf_json_number(&o->b, bk->max);
    cb_strbuf_puts(&o->b, ",\"avg\":");
    cb_strbuf_json_number(&o->b, bk->count ? bk->sum / (double)bk->count : 0.0);
    cb_strbuf_puts(&o->b, ",\"last\":");
    cb_strbuf_json_number(&o->b, bk->last);
    if (bk->span_ms > o->step) /* a whole rollup bucket, longer than the step */
        cb_strbuf_printf(&o->b, ",\"span\":%lld", (long long)bk->span_ms);
    cb_strbuf_putc(&o->b, '}');
    return emit(o);
}

static int parse_ms(const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

int cb_cmd_query(int argc, char **argv)
{
    const char *db = NULL, *topic = NULL, *metric = NULL;
    int64_t from = INT64_MIN, to = INT64_MAX, step = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "citybrain query: %s: %s\n", a,
                    strncmp(a, "--", 2) == 0 ? "needs a value" : "unexpected argument");
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--db")) {
            db = v;
        } else if (!strcmp(a, "--topic")) {
            topic = v;
        } else if (!strcmp(a, "--metric")) {
            metric = v;
        } else if (!strcmp(a, "--from") || !strcmp(a, "--to")) {
            if (parse_ms(v, !strcmp(a, "--from") ? &from : &to) < 0) {
                fprintf(stderr, "citybrain query: %s: '%s' is not milliseconds since the epoch\n",
                        a, v);
                return 2;
            }
        } else if (!strcmp(a, "--step")) {
            if (cb_parse_duration_ms(v, &step) < 0 || step <= 0) {
                fprintf(stderr, "citybrain query: --step: '%s' is not a positive duration "
                                "(60s, 5m, 1h)\n", v);
                return 2;
            }
        } else {
            fprintf(stderr, "citybrain query: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!db) {
        fprintf(stderr, "citybrain query: --db PATH is required\n");
        usage(stderr);
        return 2;
    }
    if (from >= to) {
        fprintf(stderr, "citybrain query: --from must be before --to\n");
        return 2;
    }
    char err[512];
    struct cb_store_reader *r = cb_store_reader_open(db, err, sizeof err);
    if (!r) {
        fprintf(stderr, "citybrain query: %s\n", err);
        return 1;
    }
    struct out o = {.failed = 0, .step = step};
    cb_strbuf_init(&o.b);
    int rc = step ? cb_store_query_buckets(r, topic, metric, from, to, step, on_bucket, &o)
                  : cb_store_query_raw(r, topic, metric, from, to, on_raw, &o);
    int exit_code = 0;
    if (rc < 0) {
        fprintf(stderr, "citybrain query: %s\n", cb_store_reader_error(r));
        exit_code = 1;
    } else if (o.failed || fflush(stdout) != 0) {
        fprintf(stderr, "citybrain query: cannot write the output\n");
        exit_code = 1;
    }
    cb_strbuf_free(&o.b);
    cb_store_reader_close(r);
    return exit_code;
}
