/* A PromQL subset: lexer and parser (promql_parse.c), evaluator
 * (promql_eval.c). Pure functions: the evaluator reads series through a
 * struct promql_source the caller fills, so tests give it samples in memory
 * and the HTTP API (prom_api.c) gives it the store.
 *
 * Supported (docs/api.md "Prometheus query API"): number literals; vector
 * selectors with =, !=, =~, !~ (POSIX extended regular expressions, anchored
 * at both ends, where Prometheus uses RE2); range selectors [DURATION];
 * offset DURATION; rate, increase, delta (Prometheus 2.x extrapolation),
 * avg|min|max|sum|count|last_over_time, quantile_over_time; sum, avg, min,
 * max, count with by|without (...), topk, bottomk; + - * / % ^ and
 * == != > < >= <= (with bool) between scalars, vectors and scalars, and
 * vectors matched one-to-one on all labels but the name. Anything else is a
 * parse error naming the unsupported part.
 *
 * Semantics follow Prometheus 2.42: a selector looks back 5 minutes, range
 * selectors take the samples with t - range <= ts <= t (both ends in). */
#ifndef CB_API_PROMQL_H
#define CB_API_PROMQL_H

#include <stddef.h>
#include <stdint.h>

#include "storage/storage.h"

/* ---- memory: every allocation of a query lives in an arena ---- */

struct promql_block;
struct promql_arena {
    struct promql_block *head;
    int oom; /* an allocation failed: the answer is "out of memory" */
};
/* Zeroed memory from the arena, NULL (and a->oom set) when out of memory. */
void *promql_alloc(struct promql_arena *a, size_t n);
/* A NUL-terminated copy of s[0..n) in the arena, or NULL. */
char *promql_strndup(struct promql_arena *a, const char *s, size_t n);
/* Frees every block; the arena can be used again afterwards. */
void promql_arena_free(struct promql_arena *a);

/* ---- labels ---- */

struct promql_label {
    const char *name, *value;
};
/* A label set, sorted by name, names unique. "__name__" is the metric name. */
struct promql_labels {
    const struct promql_label *v;
    size_t n;
};
/* The value of `name`, or "" when the set has no such label. */
const char *promql_label_get(const struct promql_labels *l, const char *name);
/* Orders label sets as Prometheus lists series: pair by pair (name, then
 * value), a shorter set first when one is a prefix of the other. */
int promql_labels_cmp(const struct promql_labels *a, const struct promql_labels *b);
/* Sorts l[0..n) by name in place (callers build sets unsorted). */
void promql_labels_sort(struct promql_label *l, size_t n);

/* Maps any text to a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*): every
 * other byte becomes '_' (so "pm2.5" is "pm2_5"), and a leading digit gets a
 * '_' before it. `colon` 0 maps ':' too (label names allow no colon).
 * Writes into out (size outlen, at least n + 2 to keep everything); returns
 * out. An empty input gives "_". */
char *promql_sanitize_name(const char *s, size_t n, int colon, char *out, size_t outlen);

/* ---- the parsed query ---- */

enum promql_kind { PQ_NUM, PQ_STR, PQ_SEL, PQ_CALL, PQ_AGG, PQ_BIN };
enum promql_match_op { PQ_EQ, PQ_NE, PQ_RE, PQ_NRE };
enum promql_func {
    PQ_F_RATE, PQ_F_INCREASE, PQ_F_DELTA, PQ_F_AVG_OT, PQ_F_MIN_OT, PQ_F_MAX_OT, PQ_F_SUM_OT,
    PQ_F_COUNT_OT, PQ_F_LAST_OT, PQ_F_QUANTILE_OT, PQ_F__COUNT
};
enum promql_agg { PQ_A_SUM, PQ_A_AVG, PQ_A_MIN, PQ_A_MAX, PQ_A_COUNT, PQ_A_TOPK, PQ_A_BOTTOMK };
/* Binary operators; precedence lives in promql_parse.c's one table. */
enum promql_binop {
    PQ_ADD, PQ_SUB, PQ_MUL, PQ_DIV, PQ_MOD, PQ_POW,
    PQ_CEQ, PQ_CNE, PQ_CGT, PQ_CLT, PQ_CGE, PQ_CLE
};

struct promql_matcher {
    const char *name, *value;
    enum promql_match_op op;
    void *re; /* regex_t for =~ and !~, freed by promql_query_free */
};

struct promql_node {
    enum promql_kind kind;
    size_t pos; /* byte offset in the query text */
    double num; /* PQ_NUM */
    /* PQ_SEL */
    struct promql_matcher *m;
    size_t nm;
    int64_t range_ms;  /* 0: an instant selector */
    int64_t offset_ms;
    int tier;          /* read from src->rows: every window is whole rows (exact) */
    int rows_ok;       /* rows may answer where raw samples are gone; -1: quantile_over_time,
                          whose rows only tell that they are */
    /* PQ_CALL (fn), PQ_AGG (agg), PQ_BIN (op) */
    enum promql_func fn;
    enum promql_agg agg;
    enum promql_binop op;
    int bool_mod;       /* comparison with `bool` */
    const char **grp;   /* by / without labels */
    size_t ngrp;
    int without;
    struct promql_node *a, *b; /* call: range vector, parameter (quantile) in b;
                                  agg: expression, parameter (topk) in b; bin: lhs, rhs */
    void *data;         /* the evaluator's per-node state */
};

struct promql_regex;
struct promql_query {
    struct promql_arena arena;
    struct promql_node *root;
    struct promql_regex *regexes; /* to free */
};

/* Parses text[0..len). Returns 0 with q filled (free with promql_query_free),
 * or -1 with a message "1:COL: parse error: ..." or "1:COL: unsupported: ..."
 * in err (q is freed then). */
int promql_parse(const char *text, size_t len, struct promql_query *q, char *err, size_t errlen);
void promql_query_free(struct promql_query *q);
/* 1 when the series' labels satisfy every matcher of the selector node. */
int promql_selector_matches(const struct promql_node *sel, const struct promql_labels *l);

/* ---- evaluation ---- */

struct promql_sample {
    int64_t t;
    double v;
};

/* Where series come from. `each_series` calls fn for every series there is
 * (labels with "__name__"; ref is the caller's handle for `samples`); fn
 * returns non-zero to stop. `samples` calls fn for the samples of one series
 * with from <= ts <= to in time order. Both return 0, or -1 with a message
 * in err (a storage error: the query fails with it). */
typedef int (*promql_series_fn)(void *fctx, const struct promql_labels *l, const void *ref);
typedef int (*promql_sample_fn)(void *fctx, int64_t ts, double v);
/* A row of a rollup tier (struct cb_tier_row, storage.h): the samples of one
 * series in [start, start + width), width 1 for a raw sample. */
typedef int (*promql_row_fn)(void *fctx, const struct cb_tier_row *row);
/* `rows` (may be NULL) calls fn for the rows of one series that hold samples
 * with from <= ts <= to, in time order, never overlapping, each from the
 * coarsest tier that holds it whole (1-hour rows where the 1-minute tier no
 * longer holds the hours, 1-minute rows where that tier is derived, raw
 * samples after); rows at the ends may reach past from and to. It sets
 * *raw_first to the series' oldest raw sample (INT64_MAX: none), so rows
 * before it hold what raw retention deleted. Returns 0, -1 with a message
 * in err, or 1 when the series has no tiers (read its samples). The
 * evaluator reads rows instead of samples where the answer is the same
 * (docs/api.md "Rollup tiers"), and beyond raw retention. */
struct promql_source {
    void *ctx;
    int (*each_series)(void *ctx, promql_series_fn fn, void *fctx, char *err, size_t errlen);
    int (*samples)(void *ctx, const void *ref, int64_t from, int64_t to, promql_sample_fn fn,
                   void *fctx, char *err, size_t errlen);
    int (*rows)(void *ctx, const void *ref, int64_t from, int64_t to, promql_row_fn fn,
                void *fctx, int64_t *raw_first, char *err, size_t errlen);
    size_t max_samples; /* raw samples (and rows) one query may read; 0: PROMQL_MAX_SAMPLES */
};

enum promql_type { PQ_T_SCALAR, PQ_T_VECTOR, PQ_T_MATRIX };

struct promql_series_out {
    struct promql_labels labels;
    struct promql_sample *pts; /* in time order */
    size_t n, cap;
};

/* The answer of an instant query (a scalar, or a vector: one point per
 * series) or a range query (a matrix; a scalar expression gives one series
 * without labels). Everything is in `arena`: free with promql_result_free. */
struct promql_result {
    enum promql_type type;
    double scalar;
    int64_t t;
    struct promql_series_out *series;
    size_t n;
    const char *warnings[3]; /* Prometheus's "warnings": the rollup tiers answered */
    size_t nwarnings;
    struct promql_arena arena;
};

/* At most this many points per series in a range query, as Prometheus. */
#define PROMQL_MAX_POINTS 11000
/* At most this many raw samples read into memory by one query (16 bytes
 * each; Prometheus's --query.max-samples defaults to 50 million). */
#define PROMQL_MAX_SAMPLES 20000000

/* Evaluates q at every start + k * step <= end (an instant query: start ==
 * end, step ignored, as_range 0). Returns 0 with res filled, or -1 with the
 * message in err: a storage error, a query that cannot be evaluated
 * (many-to-many matching, too many points), out of memory. `kind` gets
 * "bad_data", "execution" or "internal" for Prometheus's errorType. */
int promql_eval(struct promql_query *q, const struct promql_source *src, int64_t start,
                int64_t end, int64_t step, int as_range, struct promql_result *res, char *err,
                size_t errlen, const char **kind);
void promql_result_free(struct promql_result *res);

/* Appends v as Prometheus writes sample values: the shortest decimal that
 * reads back exactly, without an exponent ("0.0000001", "1e+21" stays
 * plain too), "+Inf", "-Inf", "NaN". Writes into out (at least 400 bytes). */
void promql_format_value(double v, char *out, size_t outlen);

#endif
