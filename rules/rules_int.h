/* Internal types shared by the files of rules/: lexer, parser/compiler,
 * diagnostics, windows, engine. Nothing here is seen outside rules/. */
#ifndef CB_RULES_RULES_INT_H
#define CB_RULES_RULES_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "rules/rules.h"

/* ---- small utilities (util.c) --------------------------------------------- */

/* A string -> pointer hash map (open addressing, linear probing). Keys are
 * borrowed: they must outlive their entry (they usually live in the value). */
struct rules__map {
    const char **keys;
    void **vals;
    size_t cap, n;
};
uint64_t rules__hash(const char *s, size_t n);
void *rules__map_get(const struct rules__map *m, const char *key);
/* Returns 0, or -1 on OOM. Replaces the value of an existing key. */
int rules__map_put(struct rules__map *m, const char *key, void *val);
void rules__map_del(struct rules__map *m, const char *key);
void rules__map_free(struct rules__map *m);

char *rules__strndup(const char *s, size_t n);
char *rules__strdup(const char *s);
/* Grows *arr (element size `size`) so it holds at least `need` elements.
 * Returns 0, or -1 on OOM (the array is unchanged). */
int rules__grow(void *arr, size_t *cap, size_t need, size_t size);
/* Levenshtein distance, bounded: returns > max when larger. */
int rules__edit_distance(const char *a, size_t alen, const char *b, size_t blen, int max);

/* ---- diagnostics (diag.c) ------------------------------------------------- */

/* A source being compiled: its name and text (borrowed). */
struct rules__src {
    const char *name;
    const char *text;
    size_t len;
};

/* Records a diagnostic at (line, col) with a caret of `span` columns; the
 * source line is copied from src. hint may be NULL. Never fails loudly: on
 * OOM the diagnostic is counted but its strings may be missing. */
void rules__diag(struct cb_diags *d, const struct rules__src *src, enum cb_diag_severity sev,
                 const char *code, int line, int col, int span, const char *hint,
                 const char *fmt, ...) __attribute__((format(printf, 9, 10)));

/* ---- lexer (lexer.c) ------------------------------------------------------ */

enum rules__tok_kind {
    TK_EOF = 0,
    TK_ERROR,
    TK_IDENT,
    TK_NUMBER,
    TK_DURATION,
    TK_STRING,
    TK_LBRACE,
    TK_RBRACE,
    TK_LPAREN,
    TK_RPAREN,
    TK_COMMA,
    TK_COLON,
    TK_DOTDOT,
    TK_PLUS,
    TK_MINUS,
    TK_STAR,
    TK_SLASH,
    TK_GT,
    TK_GE,
    TK_LT,
    TK_LE,
    TK_EQ,
    TK_NE,
    TK_AND,
    TK_OR,
    TK_NOT,
    TK__COUNT
};

/* A token points into the source; nothing is copied. */
struct rules__tok {
    enum rules__tok_kind kind;
    uint32_t off, len;  /* bytes in the source */
    int line, col;      /* 1-based */
    int bol;            /* first token of its line */
    double num;         /* TK_NUMBER: the value; TK_DURATION: milliseconds */
    const char *err;    /* TK_ERROR: message; err_code: its code */
    const char *err_code;
};

struct rules__lexer {
    const char *src;
    size_t pos, end;
    int line;
    size_t line_start; /* offset of the current line's first byte */
    int col_base;      /* added to columns on the first line (template sub-lexers) */
    int bol;
};

/* A lexer over src[start, end); line/col give the position of src[start]. */
void rules__lex_init(struct rules__lexer *lx, const char *src, size_t start, size_t end, int line,
                     int col);
struct rules__tok rules__lex_next(struct rules__lexer *lx);
const char *rules__tok_name(enum rules__tok_kind k);
/* Parses a duration "90s", "5m", "1h30m" (s[0..n)). Returns 0 and *ms, or -1. */
int rules__parse_duration(const char *s, size_t n, int64_t *ms);

/* ---- compiled form --------------------------------------------------------- */

/* Operations of the stack machine; an expression is a postfix run of ops. */
enum rules__opcode {
    OP_CONST = 0, /* push k */
    OP_LATEST,    /* push latest value of series slot */
    OP_AGE,       /* push seconds since the sensor's last sample */
    OP_AGE_M,     /* push seconds since the last sample of series slot */
    OP_WIN,       /* push aggregate `agg` of window slot (k: percentile P) */
    OP_SENSORS,   /* aggregate `agg` over the instance's sensors of the next `len` ops */
    OP_NEG,
    OP_NOT,
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_GT,
    OP_GE,
    OP_LT,
    OP_LE,
    OP_EQ,
    OP_NE,
    OP_AND,
    OP_OR,
};

enum rules__agg {
    AGG_AVG = 0,
    AGG_MIN,
    AGG_MAX,
    AGG_SUM,
    AGG_COUNT,
    AGG_FIRST,
    AGG_LAST,
    AGG_STDDEV,
    AGG_DELTA,
    AGG_RATE,
    AGG_PERCENTILE,
    /* sensors: only */
    AGG_SHARE,
    AGG_ANY,
    AGG_ALL,
    AGG__COUNT
};

struct rules__op {
    uint8_t op;   /* enum rules__opcode */
    uint8_t agg;  /* enum rules__agg */
    uint16_t slot;
    uint32_t len; /* OP_SENSORS: number of ops of the inner expression that follow */
    double k;
};

/* A range of a rule's op array. */
struct rules__code {
    uint32_t start, len;
};

/* Flags of what a window must maintain. */
enum {
    WF_MINMAX = 1u << 0, /* monotonic deques */
    WF_MOMENTS = 1u << 1 /* sum, sum of squares */
};

struct rules__winref {
    char *metric;
    int64_t width_ms;
    unsigned flags;
};

struct rules__escalation {
    enum cb_severity level;
    int after;         /* 1: `after D unacked`, 0: `when COND` */
    int64_t after_ms;
    struct rules__code cond;
};

enum rules__tpl_kind { TPL_TEXT, TPL_LABEL, TPL_EXPR, TPL_RULE, TPL_SEVERITY, TPL_TITLE, TPL_ID };

struct rules__tpl_part {
    enum rules__tpl_kind kind;
    char *text;          /* TPL_TEXT: literal; TPL_LABEL: label name */
    struct rules__code code;
    char fmt;            /* TPL_EXPR: 0 (default), 'f', 'e', 'g' or 'd' */
    int prec;
};

struct rules__valid {
    char *metric;
    double lo, hi;
};

/* A rule's text in one language: its title and its message template. */
struct rules__text {
    char *title;
    struct rules__tpl_part *msg;
    size_t nmsg;
    int has_msg;
};

struct rules__rule {
    char *name, *file;
    const char *title;        /* the first language's title that is given, or NULL
                                 (borrowed from lang[]) */
    int msg_lang;             /* the first language with a message, -1: none */
    int tagged;               /* texts in languages: a tagged title or message clause */
    int line, col;
    char *text;               /* the rule's source text, canonical (tokens, single spaces) */
    char *key;                /* its identity: name + match, per, when, for, clear (sorted,
                                 canonical); an unchanged key keeps instances and their state
                                 across a reload or restart */
    struct cb_topic_pattern **pats;
    size_t npats;
    char **per;
    size_t nper;              /* 0: one instance per sensor */
    struct rules__valid *valid;
    size_t nvalid;
    struct rules__code when, clear;
    int has_clear;
    int64_t for_ms, clear_for_ms, cooldown_ms;
    enum cb_severity severity;
    struct rules__escalation *esc;
    size_t nesc;
    struct rules__text lang[CB_LANGS]; /* [CB_LANG_EN]: the plain clauses */
    char **notify;
    size_t nnotify;
    struct rules__winref *wins;
    size_t nwins;
    char **series;            /* metrics read by latest value or age(M) */
    size_t nseries;
    struct rules__op *ops;
    size_t nops;
    int64_t max_width_ms;
};

struct cb_ruleset {
    int refs;
    struct rules__rule *rules;
    size_t nrules;
    char **files;
    size_t nfiles;
    struct cb_topic_index *index; /* tags: rule index << 8 | pattern index */
    int64_t max_width_ms;
    size_t cap_rules, cap_files;
    struct rules__map names;      /* rule name -> rule index + 1, while compiling */
    const struct cb_rules_opts *opts; /* while compiling; NULL: none */
};

/* Maximum stack depth of an expression; deeper ones are refused at compile time. */
#define RULES_STACK_MAX 64

/* Compiles one source into the rules array of rs (appends). Errors go to
 * diags. Returns 0, or -1 on OOM. (parser.c) */
int rules__compile_into(struct cb_ruleset *rs, const struct rules__src *src, struct cb_diags *diags);
void rules__rule_free(struct rules__rule *r);
/* Builds rs->index after all sources compiled. Returns 0 or -1. */
int rules__ruleset_finish(struct cb_ruleset *rs);

/* ---- windows (window.c) ----------------------------------------------------- */

struct rules__wpt {
    int64_t ts;
    double v;
};

/* A sliding event-time window of one series: samples in (now - width, now],
 * in time order in a ring buffer, with O(1) aggregates maintained by add and
 * remove, and min/max by monotonic deques of sample sequence numbers. */
struct rules__window {
    int64_t width_ms;
    unsigned flags;
    int refs;
    struct rules__wpt *buf;
    uint32_t cap, head, n;
    uint64_t seq0;           /* sequence number of buf[head] */
    uint32_t *dmin, *dmax;   /* monotonic deques of sample sequence numbers, dcap entries */
    uint32_t dcap, dmin_head, dmin_n, dmax_head, dmax_n;
    uint32_t removed;        /* removals since the moments were last recomputed */
    double shift, sum, sumsq; /* moments of (v - shift) */
};

/* The vtable of one running accumulator of a window (moments, min deque, max
 * deque): add and remove keep it current in O(1) (amortised) as samples enter
 * at the tail and leave at the head; rebuild recomputes it after an
 * out-of-order insertion. */
struct rules__accvt {
    unsigned flag;
    void (*add)(struct rules__window *w, uint32_t seq, double v);
    void (*remove)(struct rules__window *w, uint32_t seq, double v);
    void (*rebuild)(struct rules__window *w);
};

/* The vtable of one aggregate: what the window must keep for it, and how its
 * value is read (NaN: no value, e.g. an empty window). scratch (nscratch >=
 * w->n) is working memory for percentile. */
struct rules__aggvt {
    const char *name;
    unsigned flags;
    double (*value)(const struct rules__window *w, double param, double *scratch);
};
extern const struct rules__aggvt rules__aggs[AGG__COUNT];

struct rules__window *rules__window_new(int64_t width_ms, unsigned flags);
void rules__window_free(struct rules__window *w);
/* Adds flags (rebuilding the deques when min/max becomes needed). 0 or -1. */
int rules__window_add_flags(struct rules__window *w, unsigned flags);
/* Inserts a sample in time order. Returns 0, or -1 on OOM. */
int rules__window_insert(struct rules__window *w, int64_t ts, double v, int64_t now);
/* Drops samples with ts <= now - width. */
void rules__window_expire(struct rules__window *w, int64_t now);
/* Bytes of memory this window holds (for the benchmark). */
size_t rules__window_bytes(const struct rules__window *w);

/* ---- engine internals for the tests (engine.c) ------------------------------ */

/* 0 turns the group rules' member caches off: every `sensors:` aggregate then
 * evaluates its inner expression for every member (the reference). */
void rules__engine_set_group_cache(struct cb_engine *e, int on);
/* Evaluates every cached `sensors:` aggregate of every group instance at the
 * clock's now, from the cache and by a full recompute; returns how many
 * differ (their intervals compared bit for bit), *compared how many there
 * were (may be NULL). */
size_t rules__engine_check_groups(struct cb_engine *e, size_t *compared);

#endif
