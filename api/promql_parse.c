/* The PromQL subset's lexer and parser (promql.h). Tokens point into the
 * query text; the parser is recursive descent with one precedence table for
 * the binary operators. Errors name the column and, for what Prometheus has
 * and citybrain does not, say "unsupported" with the construct's name. */
#include "api/promql.h"
#include "base/regex.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the arena ---- */

struct promql_block {
    struct promql_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

void *promql_alloc(struct promql_arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        struct promql_block *b = malloc(sizeof *b + cap);
        if (!b) {
            a->oom = 1;
            return NULL;
        }
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

char *promql_strndup(struct promql_arena *a, const char *s, size_t n)
{
    char *p = promql_alloc(a, n + 1);
    if (p)
        memcpy(p, s, n);
    return p;
}

void promql_arena_free(struct promql_arena *a)
{
    while (a->head) {
        struct promql_block *b = a->head;
        a->head = b->next;
        free(b);
    }
    a->oom = 0;
}

/* ---- labels ---- */

const char *promql_label_get(const struct promql_labels *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].name, name) == 0)
            return l->v[i].value;
    return "";
}

static int label_cmp(const void *x, const void *y)
{
    return strcmp(((const struct promql_label *)x)->name, ((const struct promql_label *)y)->name);
}

int promql_labels_cmp(const struct promql_labels *a, const struct promql_labels *b)
{
    for (size_t i = 0; i < a->n && i < b->n; i++) {
        int c = strcmp(a->v[i].name, b->v[i].name);
        if (!c)
            c = strcmp(a->v[i].value, b->v[i].value);
        if (c)
            return c;
    }
    return (a->n > b->n) - (a->n < b->n);
}

void promql_labels_sort(struct promql_label *l, size_t n)
{
    if (n > 1)
        qsort(l, n, sizeof *l, label_cmp);
}

char *promql_sanitize_name(const char *s, size_t n, int colon, char *out, size_t outlen)
{
    size_t o = 0;
    if (outlen == 0)
        return out;
    if (n == 0 || isdigit((unsigned char)s[0]))
        out[o++] = '_';
    for (size_t i = 0; i < n && o + 1 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        int ok = isalnum(c) || c == '_' || (colon && c == ':');
        out[o++] = ok && c < 128 ? (char)c : '_';
    }
    out[o < outlen ? o : outlen - 1] = '\0';
    return out;
}

/* ---- the lexer ---- */

enum tok {
    T_EOF, T_IDENT, T_NUM, T_STR, T_DUR, T_LBRACE, T_RBRACE, T_LPAREN, T_RPAREN, T_LBRACK,
    T_RBRACK, T_COMMA, T_ASSIGN, T_NEQ, T_REQ, T_NRE, T_ADD, T_SUB, T_MUL, T_DIV, T_MOD,
    T_POW, T_EQL, T_GTR, T_LSS, T_GTE, T_LTE, T_COLON, T_AT, T_BAD
};

struct token {
    enum tok t;
    const char *s; /* points into the query */
    size_t len;
    size_t pos;
};

struct parser {
    const char *src;
    size_t len, at;
    struct token cur;
    struct promql_query *q;
    char *err;
    size_t errlen;
    int failed;
};

static int is_ident_start(int c) { return isalpha(c) || c == '_' || c == ':'; }
static int is_ident(int c) { return isalnum(c) || c == '_' || c == ':'; }

/* Reads the token at p->at into p->cur. A number followed by a unit letter
 * is a duration ("5m", "1h30m"). */
static void next(struct parser *p)
{
    const char *s = p->src;
    while (p->at < p->len && isspace((unsigned char)s[p->at]))
        p->at++;
    struct token *t = &p->cur;
    t->pos = p->at;
    t->s = s + p->at;
    t->len = 1;
    if (p->at >= p->len) {
        t->t = T_EOF;
        t->len = 0;
        return;
    }
    int c = (unsigned char)s[p->at];
    int c2 = p->at + 1 < p->len ? (unsigned char)s[p->at + 1] : 0;
    size_t i = p->at;
    if (isdigit(c) || (c == '.' && isdigit(c2))) {
        if (c == '0' && (c2 == 'x' || c2 == 'X')) {
            i += 2;
            while (i < p->len && isxdigit((unsigned char)s[i]))
                i++;
            t->t = T_NUM;
        } else {
            while (i < p->len && (isdigit((unsigned char)s[i]) || s[i] == '.'))
                i++;
            if (i < p->len && strchr("smhdwy", s[i]) && s[i]) {
                /* a duration: digits and units, repeated */
                while (i < p->len && (isdigit((unsigned char)s[i]) || (s[i] && strchr("smhdwy", s[i]))))
                    i++;
                t->t = T_DUR;
            } else {
                if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
                    size_t j = i + 1;
                    if (j < p->len && (s[j] == '+' || s[j] == '-'))
                        j++;
                    if (j < p->len && isdigit((unsigned char)s[j])) {
                        i = j;
                        while (i < p->len && isdigit((unsigned char)s[i]))
                            i++;
                    }
                }
                t->t = T_NUM;
            }
        }
        t->len = i - p->at;
        p->at = i;
        return;
    }
    if (is_ident_start(c)) {
        while (i < p->len && is_ident((unsigned char)s[i]))
            i++;
        t->t = T_IDENT;
        t->len = i - p->at;
        p->at = i;
        return;
    }
    if (c == '"' || c == '\'' || c == '`') {
        i++;
        while (i < p->len && s[i] != c) {
            if (s[i] == '\\' && c != '`')
                i++;
            i++;
        }
        if (i >= p->len) {
            t->t = T_BAD;
            t->len = p->len - p->at;
            p->at = p->len;
            return;
        }
        t->t = T_STR;
        t->len = i + 1 - p->at;
        p->at = i + 1;
        return;
    }
    static const struct {
        const char *text;
        enum tok t;
    } ops[] = {
        {"!=", T_NEQ}, {"=~", T_REQ}, {"!~", T_NRE}, {"==", T_EQL}, {">=", T_GTE}, {"<=", T_LTE},
        {"{", T_LBRACE}, {"}", T_RBRACE}, {"(", T_LPAREN}, {")", T_RPAREN}, {"[", T_LBRACK},
        {"]", T_RBRACK}, {",", T_COMMA}, {"=", T_ASSIGN}, {"+", T_ADD}, {"-", T_SUB},
        {"*", T_MUL}, {"/", T_DIV}, {"%", T_MOD}, {"^", T_POW}, {">", T_GTR}, {"<", T_LSS},
        {":", T_COLON}, {"@", T_AT},
    };
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        size_t n = strlen(ops[k].text);
        if (p->len - p->at >= n && memcmp(s + p->at, ops[k].text, n) == 0) {
            t->t = ops[k].t;
            t->len = n;
            p->at += n;
            return;
        }
    }
    t->t = T_BAD;
    p->at++;
}

/* Records the first error (the parser stops at it: a query is one expression). */
static void fail(struct parser *p, size_t pos, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct parser *p, size_t pos, const char *what, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = 1;
    int n = snprintf(p->err, p->errlen, "1:%zu: %s: ", pos + 1, what);
    if (n < 0 || (size_t)n >= p->errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static void unexpected(struct parser *p, const char *in)
{
    if (p->cur.t == T_EOF)
        fail(p, p->cur.pos, "parse error", "unexpected end of input%s%s", in ? " in " : "",
             in ? in : "");
    else
        fail(p, p->cur.pos, "parse error", "unexpected \"%.*s\"%s%s", (int)p->cur.len, p->cur.s,
             in ? " in " : "", in ? in : "");
}

static int is_word(const struct token *t, const char *w)
{
    return t->t == T_IDENT && t->len == strlen(w) && strncasecmp(t->s, w, t->len) == 0;
}

static struct promql_node *node(struct parser *p, enum promql_kind k, size_t pos)
{
    struct promql_node *n = promql_alloc(&p->q->arena, sizeof *n);
    if (!n) {
        fail(p, pos, "error", "out of memory");
        return NULL;
    }
    n->kind = k;
    n->pos = pos;
    return n;
}

/* "5m", "1h30m", "90s": milliseconds, -1 when malformed. */
static int64_t duration_ms(const char *s, size_t n)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1},           {"s", 1000},          {"m", 60000},
                 {"h", 3600000},      {"d", 86400000},      {"w", 604800000},
                 {"y", 31536000000LL}};
    int64_t total = 0;
    size_t i = 0;
    if (n == 0)
        return -1;
    while (i < n) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        int64_t v = 0;
        while (i < n && isdigit((unsigned char)s[i])) {
            if (v > INT64_MAX / 10 - 10)
                return -1;
            v = v * 10 + (s[i++] - '0');
        }
        size_t k, best = SIZE_MAX, blen = 0;
        for (k = 0; k < sizeof units / sizeof units[0]; k++) {
            size_t ul = strlen(units[k].unit);
            if (n - i >= ul && memcmp(s + i, units[k].unit, ul) == 0 && ul > blen) {
                best = k;
                blen = ul;
            }
        }
        if (best == SIZE_MAX)
            return -1;
        i += blen;
        if (v > INT64_MAX / units[best].ms || total > INT64_MAX - v * units[best].ms)
            return -1;
        total += v * units[best].ms;
    }
    return total;
}

/* Unquotes a string token into the arena (Go escapes: \n \t \\ \" \' \xHH, octal not). */
static const char *unquote(struct parser *p, const struct token *t)
{
    char *out = promql_alloc(&p->q->arena, t->len);
    if (!out) {
        fail(p, t->pos, "error", "out of memory");
        return NULL;
    }
    size_t o = 0;
    char qc = t->s[0];
    for (size_t i = 1; i + 1 < t->len; i++) {
        char c = t->s[i];
        if (c == '\\' && qc != '`' && i + 2 < t->len) {
            char e = t->s[++i];
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case '\\': case '"': case '\'': c = e; break;
            case 'x':
                if (i + 2 < t->len - 1 && isxdigit((unsigned char)t->s[i + 1]) &&
                    isxdigit((unsigned char)t->s[i + 2])) {
                    char hex[3] = {t->s[i + 1], t->s[i + 2], 0};
                    c = (char)strtol(hex, NULL, 16);
                    i += 2;
                    break;
                }
                /* fall through */
            default:
                fail(p, t->pos + i, "parse error", "unknown escape sequence '\\%c'", e);
                return NULL;
            }
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

struct promql_regex {
    regex_t re;
    struct promql_regex *next;
};

static int add_matcher(struct parser *p, struct promql_matcher **v, size_t *n, size_t *cap,
                       const char *name, enum promql_match_op op, const char *value, size_t pos)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        struct promql_matcher *nv = promql_alloc(&p->q->arena, nc * sizeof *nv);
        if (!nv) {
            fail(p, pos, "error", "out of memory");
            return -1;
        }
        if (*n)
            memcpy(nv, *v, *n * sizeof *nv);
        *v = nv;
        *cap = nc;
    }
    struct promql_matcher *m = &(*v)[(*n)++];
    m->name = name;
    m->op = op;
    m->value = value;
    m->re = NULL;
    if (op == PQ_RE || op == PQ_NRE) {
        struct promql_regex *r = calloc(1, sizeof *r);
        size_t vl = strlen(value);
        char *anchored = malloc(vl + 5);
        if (!r || !anchored) {
            free(r);
            free(anchored);
            fail(p, pos, "error", "out of memory");
            return -1;
        }
        char why[160];
        if (cb_regex_check(value, why, sizeof why)) { /* before regcomp: base/regex.h */
            free(r);
            free(anchored);
            fail(p, pos, "parse error", "invalid regular expression \"%s\": %s", value, why);
            return -1;
        }
        snprintf(anchored, vl + 5, "^(%s)$", value);
        int rc = regcomp(&r->re, anchored, REG_EXTENDED | REG_NOSUB);
        free(anchored);
        if (rc != 0) {
            char msg[160];
            regerror(rc, &r->re, msg, sizeof msg);
            free(r);
            fail(p, pos, "parse error", "invalid regular expression \"%s\": %s", value, msg);
            return -1;
        }
        r->next = p->q->regexes;
        p->q->regexes = r;
        m->re = &r->re;
    }
    return 0;
}

static struct promql_node *parse_expr(struct parser *p, int min_prec);

/* `{` matchers `}` after an optional metric name; p->cur is at '{' or past the name. */
static struct promql_node *parse_selector(struct parser *p, const struct token *name)
{
    size_t pos = name ? name->pos : p->cur.pos;
    struct promql_node *n = node(p, PQ_SEL, pos);
    size_t cap = 0;
    if (!n)
        return NULL;
    if (name) {
        const char *nm = promql_strndup(&p->q->arena, name->s, name->len);
        if (!nm || add_matcher(p, &n->m, &n->nm, &cap, "__name__", PQ_EQ, nm, pos))
            return NULL;
    }
    if (p->cur.t == T_LBRACE) {
        next(p);
        while (p->cur.t != T_RBRACE) {
            if (p->cur.t != T_IDENT) {
                unexpected(p, "label matching");
                return NULL;
            }
            struct token lname = p->cur;
            next(p);
            enum promql_match_op op;
            switch (p->cur.t) {
            case T_ASSIGN: op = PQ_EQ; break;
            case T_NEQ: op = PQ_NE; break;
            case T_REQ: op = PQ_RE; break;
            case T_NRE: op = PQ_NRE; break;
            default:
                unexpected(p, "label matching, expected one of \"=\", \"!=\", \"=~\", \"!~\"");
                return NULL;
            }
            next(p);
            if (p->cur.t != T_STR) {
                unexpected(p, "label matching, expected a string");
                return NULL;
            }
            struct token vt = p->cur;
            const char *ln = promql_strndup(&p->q->arena, lname.s, lname.len);
            const char *v = unquote(p, &vt);
            if (!ln || !v || add_matcher(p, &n->m, &n->nm, &cap, ln, op, v, lname.pos))
                return NULL;
            next(p);
            if (p->cur.t == T_COMMA)
                next(p);
            else if (p->cur.t != T_RBRACE) {
                unexpected(p, "label matching, expected \",\" or \"}\"");
                return NULL;
            }
        }
        next(p);
    }
    /* Prometheus: at least one matcher that does not match the empty string */
    int nonempty = 0;
    for (size_t i = 0; i < n->nm; i++) {
        struct promql_label one = {n->m[i].name, ""};
        struct promql_node probe = {.kind = PQ_SEL, .m = &n->m[i], .nm = 1};
        struct promql_labels l = {&one, 0};
        if (!promql_selector_matches(&probe, &l))
            nonempty = 1;
    }
    if (!nonempty) {
        fail(p, pos, "parse error", "vector selector must contain at least one non-empty matcher");
        return NULL;
    }
    return n;
}

/* [range] and offset after a selector or a parenthesised expression. */
static struct promql_node *parse_postfix(struct parser *p, struct promql_node *n)
{
    while (n && !p->failed) {
        if (p->cur.t == T_LBRACK) {
            size_t pos = p->cur.pos;
            if (n->kind != PQ_SEL || n->range_ms || n->offset_ms) {
                fail(p, pos, "unsupported", "subqueries (a range of an expression)");
                return NULL;
            }
            next(p);
            if (p->cur.t != T_DUR) {
                unexpected(p, "range selector, expected a duration such as 5m");
                return NULL;
            }
            n->range_ms = duration_ms(p->cur.s, p->cur.len);
            if (n->range_ms <= 0) {
                fail(p, p->cur.pos, "parse error", "bad duration \"%.*s\"", (int)p->cur.len,
                     p->cur.s);
                return NULL;
            }
            next(p);
            if (p->cur.t == T_COLON || (p->cur.t == T_IDENT && p->cur.s[0] == ':')) {
                fail(p, p->cur.pos, "unsupported", "subqueries ([range:step])");
                return NULL;
            }
            if (p->cur.t != T_RBRACK) {
                unexpected(p, "range selector, expected \"]\"");
                return NULL;
            }
            next(p);
        } else if (is_word(&p->cur, "offset")) {
            if (n->kind != PQ_SEL) {
                fail(p, p->cur.pos, "unsupported", "offset on anything but a selector");
                return NULL;
            }
            next(p);
            int neg = 0;
            if (p->cur.t == T_SUB) {
                neg = 1;
                next(p);
            }
            if (p->cur.t != T_DUR) {
                unexpected(p, "offset, expected a duration such as 1h");
                return NULL;
            }
            int64_t d = duration_ms(p->cur.s, p->cur.len);
            if (d < 0) {
                fail(p, p->cur.pos, "parse error", "bad duration \"%.*s\"", (int)p->cur.len,
                     p->cur.s);
                return NULL;
            }
            n->offset_ms = neg ? -d : d;
            next(p);
        } else if (p->cur.t == T_AT) {
            fail(p, p->cur.pos, "unsupported", "the @ modifier");
            return NULL;
        } else {
            break;
        }
    }
    return n;
}

static const struct {
    const char *name;
    enum promql_func fn;
    int has_param; /* quantile_over_time(q, v[range]) */
} functions[] = {
    {"rate", PQ_F_RATE, 0},
    {"increase", PQ_F_INCREASE, 0},
    {"delta", PQ_F_DELTA, 0},
    {"avg_over_time", PQ_F_AVG_OT, 0},
    {"min_over_time", PQ_F_MIN_OT, 0},
    {"max_over_time", PQ_F_MAX_OT, 0},
    {"sum_over_time", PQ_F_SUM_OT, 0},
    {"count_over_time", PQ_F_COUNT_OT, 0},
    {"last_over_time", PQ_F_LAST_OT, 0},
    {"quantile_over_time", PQ_F_QUANTILE_OT, 1},
};

static const struct {
    const char *name;
    enum promql_agg agg;
    int has_param;
} aggregations[] = {
    {"sum", PQ_A_SUM, 0},   {"avg", PQ_A_AVG, 0},   {"min", PQ_A_MIN, 0},
    {"max", PQ_A_MAX, 0},   {"count", PQ_A_COUNT, 0}, {"topk", PQ_A_TOPK, 1},
    {"bottomk", PQ_A_BOTTOMK, 1},
};

/* Prometheus's other aggregations and functions, named in the error. */
static const char *const other_aggs[] = {"stddev", "stdvar", "group", "count_values",
                                         "quantile", NULL};

/* `by (a, b)` / `without (a)`: p->cur is at by or without. */
static int parse_grouping(struct parser *p, struct promql_node *n)
{
    n->without = is_word(&p->cur, "without");
    next(p);
    if (p->cur.t != T_LPAREN) {
        unexpected(p, "grouping, expected \"(\"");
        return -1;
    }
    next(p);
    size_t cap = 0;
    while (p->cur.t != T_RPAREN) {
        if (p->cur.t != T_IDENT) {
            unexpected(p, "grouping, expected a label name");
            return -1;
        }
        if (n->ngrp == cap) {
            size_t nc = cap ? cap * 2 : 4;
            const char **v = promql_alloc(&p->q->arena, nc * sizeof *v);
            if (!v)
                return -1;
            if (n->ngrp)
                memcpy(v, n->grp, n->ngrp * sizeof *v);
            n->grp = v;
            cap = nc;
        }
        if (!(n->grp[n->ngrp++] = promql_strndup(&p->q->arena, p->cur.s, p->cur.len)))
            return -1;
        next(p);
        if (p->cur.t == T_COMMA)
            next(p);
        else if (p->cur.t != T_RPAREN) {
            unexpected(p, "grouping, expected \",\" or \")\"");
            return -1;
        }
    }
    next(p);
    return 0;
}

static struct promql_node *parse_aggregation(struct parser *p, enum promql_agg agg, int has_param,
                                             size_t pos)
{
    struct promql_node *n = node(p, PQ_AGG, pos);
    if (!n)
        return NULL;
    n->agg = agg;
    int grouped = 0;
    if (is_word(&p->cur, "by") || is_word(&p->cur, "without")) {
        if (parse_grouping(p, n))
            return NULL;
        grouped = 1;
    }
    if (p->cur.t != T_LPAREN) {
        unexpected(p, "aggregation, expected \"(\"");
        return NULL;
    }
    next(p);
    if (has_param) {
        if (!(n->b = parse_expr(p, 0)))
            return NULL;
        if (p->cur.t != T_COMMA) {
            unexpected(p, "aggregation, expected \",\"");
            return NULL;
        }
        next(p);
    }
    if (!(n->a = parse_expr(p, 0)))
        return NULL;
    if (p->cur.t == T_COMMA) {
        fail(p, p->cur.pos, "parse error", "too many arguments in aggregation");
        return NULL;
    }
    if (p->cur.t != T_RPAREN) {
        unexpected(p, "aggregation, expected \")\"");
        return NULL;
    }
    next(p);
    if (!grouped && (is_word(&p->cur, "by") || is_word(&p->cur, "without")))
        if (parse_grouping(p, n))
            return NULL;
    return n;
}

static struct promql_node *parse_call(struct parser *p, enum promql_func fn, int has_param,
                                      const struct token *name)
{
    struct promql_node *n = node(p, PQ_CALL, name->pos);
    if (!n)
        return NULL;
    n->fn = fn;
    next(p); /* '(' */
    if (has_param) {
        if (!(n->b = parse_expr(p, 0)))
            return NULL;
        if (p->cur.t != T_COMMA) {
            unexpected(p, "function call, expected \",\"");
            return NULL;
        }
        next(p);
    }
    size_t argpos = p->cur.pos;
    if (!(n->a = parse_expr(p, 0)))
        return NULL;
    if (p->cur.t != T_RPAREN) {
        if (p->cur.t == T_COMMA)
            fail(p, p->cur.pos, "parse error", "too many arguments to %.*s", (int)name->len,
                 name->s);
        else
            unexpected(p, "function call, expected \")\"");
        return NULL;
    }
    next(p);
    if (n->a->kind != PQ_SEL || n->a->range_ms == 0) {
        fail(p, argpos, "parse error",
             "expected type range vector in call to function \"%.*s\"", (int)name->len, name->s);
        return NULL;
    }
    return n;
}

/* A primary: number, string, (expr), -expr, selector, call, aggregation. */
static struct promql_node *parse_unary(struct parser *p)
{
    struct token t = p->cur;
    struct promql_node *n = NULL;
    switch (t.t) {
    case T_NUM: {
        n = node(p, PQ_NUM, t.pos);
        if (!n)
            return NULL;
        char buf[64];
        snprintf(buf, sizeof buf, "%.*s", (int)(t.len < 63 ? t.len : 63), t.s);
        char *end;
        errno = 0;
        n->num = strtod(buf, &end);
        if (*end) {
            fail(p, t.pos, "parse error", "bad number \"%s\"", buf);
            return NULL;
        }
        next(p);
        return parse_postfix(p, n);
    }
    case T_DUR:
        fail(p, t.pos, "parse error", "unexpected duration \"%.*s\"", (int)t.len, t.s);
        return NULL;
    case T_STR:
        n = node(p, PQ_STR, t.pos);
        if (n)
            next(p);
        return n;
    case T_LPAREN:
        next(p);
        n = parse_expr(p, 0);
        if (!n)
            return NULL;
        if (p->cur.t != T_RPAREN) {
            unexpected(p, "parenthesised expression, expected \")\"");
            return NULL;
        }
        next(p);
        return parse_postfix(p, n);
    case T_ADD:
    case T_SUB: {
        next(p);
        struct promql_node *e = parse_expr(p, 5); /* binds tighter than * /, looser than ^ */
        if (!e || t.t == T_ADD)
            return e;
        if (e->kind == PQ_NUM) {
            e->num = -e->num;
            return e;
        }
        n = node(p, PQ_BIN, t.pos);
        struct promql_node *zero = node(p, PQ_NUM, t.pos);
        if (!n || !zero)
            return NULL;
        n->op = PQ_SUB;
        n->a = zero;
        n->b = e;
        return n;
    }
    case T_LBRACE:
        return parse_postfix(p, parse_selector(p, NULL));
    case T_IDENT:
        break;
    default:
        unexpected(p, NULL);
        return NULL;
    }
    if (is_word(&t, "inf") || is_word(&t, "nan")) {
        n = node(p, PQ_NUM, t.pos);
        if (!n)
            return NULL;
        n->num = is_word(&t, "nan") ? NAN : INFINITY;
        next(p);
        return n;
    }
    next(p);
    for (size_t i = 0; i < sizeof aggregations / sizeof aggregations[0]; i++)
        if (is_word(&t, aggregations[i].name) &&
            (p->cur.t == T_LPAREN || is_word(&p->cur, "by") || is_word(&p->cur, "without")))
            return parse_aggregation(p, aggregations[i].agg, aggregations[i].has_param, t.pos);
    for (size_t i = 0; other_aggs[i]; i++)
        if (is_word(&t, other_aggs[i]) && p->cur.t == T_LPAREN) {
            fail(p, t.pos, "unsupported", "aggregation \"%s\"", other_aggs[i]);
            return NULL;
        }
    if (p->cur.t == T_LPAREN) {
        for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++)
            if (t.len == strlen(functions[i].name) && memcmp(t.s, functions[i].name, t.len) == 0)
                return parse_postfix(p, parse_call(p, functions[i].fn, functions[i].has_param, &t));
        fail(p, t.pos, "unsupported", "function \"%.*s\"", (int)t.len, t.s);
        return NULL;
    }
    static const char *const keywords[] = {"and", "or", "unless", "by", "without", "offset",
                                           "bool", "on", "ignoring", "group_left",
                                           "group_right", NULL};
    for (size_t i = 0; keywords[i]; i++)
        if (is_word(&t, keywords[i])) {
            fail(p, t.pos, "parse error", "unexpected \"%s\"", keywords[i]);
            return NULL;
        }
    return parse_postfix(p, parse_selector(p, &t));
}

/* The one precedence table of the binary operators (higher binds tighter),
 * as Prometheus: ^ (right-associative) > * / % > + - > comparisons. */
static const struct {
    enum tok t;
    enum promql_binop op;
    int prec;
    int right;
} binops[] = {
    {T_POW, PQ_POW, 6, 1},
    {T_MUL, PQ_MUL, 4, 0}, {T_DIV, PQ_DIV, 4, 0}, {T_MOD, PQ_MOD, 4, 0},
    {T_ADD, PQ_ADD, 3, 0}, {T_SUB, PQ_SUB, 3, 0},
    {T_EQL, PQ_CEQ, 2, 0}, {T_NEQ, PQ_CNE, 2, 0}, {T_GTR, PQ_CGT, 2, 0},
    {T_LSS, PQ_CLT, 2, 0}, {T_GTE, PQ_CGE, 2, 0}, {T_LTE, PQ_CLE, 2, 0},
};

static int is_comparison(enum promql_binop op) { return op >= PQ_CEQ; }

static int vector_typed(const struct promql_node *n)
{
    switch (n->kind) {
    case PQ_NUM:
    case PQ_STR:
        return 0;
    case PQ_BIN:
        return vector_typed(n->a) || vector_typed(n->b);
    default:
        return 1;
    }
}

static struct promql_node *parse_expr(struct parser *p, int min_prec)
{
    struct promql_node *lhs = parse_unary(p);
    while (lhs && !p->failed) {
        size_t k = 0, nb = sizeof binops / sizeof binops[0];
        while (k < nb && binops[k].t != p->cur.t)
            k++;
        if (k == nb) {
            static const char *const setops[] = {"and", "or", "unless", NULL};
            for (size_t i = 0; setops[i]; i++)
                if (is_word(&p->cur, setops[i])) {
                    fail(p, p->cur.pos, "unsupported", "the set operator \"%s\"", setops[i]);
                    return NULL;
                }
            break;
        }
        if (binops[k].prec < min_prec)
            break;
        size_t pos = p->cur.pos;
        next(p);
        struct promql_node *n = node(p, PQ_BIN, pos);
        if (!n)
            return NULL;
        n->op = binops[k].op;
        if (is_word(&p->cur, "bool")) {
            if (!is_comparison(n->op)) {
                fail(p, p->cur.pos, "parse error", "bool modifier can only be used on comparison operators");
                return NULL;
            }
            n->bool_mod = 1;
            next(p);
        }
        static const char *const matching[] = {"on", "ignoring", "group_left", "group_right",
                                               NULL};
        for (size_t i = 0; matching[i]; i++)
            if (is_word(&p->cur, matching[i])) {
                fail(p, p->cur.pos, "unsupported", "vector matching with \"%s\"", matching[i]);
                return NULL;
            }
        n->a = lhs;
        n->b = parse_expr(p, binops[k].right ? binops[k].prec : binops[k].prec + 1);
        if (!n->b)
            return NULL;
        if (lhs->kind == PQ_STR || n->b->kind == PQ_STR) {
            fail(p, pos, "parse error", "binary expression must contain only scalar and instant vector types");
            return NULL;
        }
        if ((lhs->kind == PQ_SEL && lhs->range_ms) || (n->b->kind == PQ_SEL && n->b->range_ms)) {
            fail(p, pos, "parse error", "binary expression must contain only scalar and instant vector types");
            return NULL;
        }
        if (is_comparison(n->op) && !n->bool_mod && !vector_typed(lhs) && !vector_typed(n->b)) {
            fail(p, pos, "parse error", "comparisons between scalars must use BOOL modifier");
            return NULL;
        }
        lhs = n;
    }
    return lhs;
}

int promql_parse(const char *text, size_t len, struct promql_query *q, char *err, size_t errlen)
{
    memset(q, 0, sizeof *q);
    struct parser p = {.src = text, .len = len, .q = q, .err = err, .errlen = errlen};
    err[0] = '\0';
    next(&p);
    if (p.cur.t == T_EOF) {
        snprintf(err, errlen, "1:1: parse error: no expression found in input");
        goto fail;
    }
    q->root = parse_expr(&p, 0);
    if (!p.failed && p.cur.t != T_EOF)
        unexpected(&p, NULL);
    if (!p.failed && q->root->kind == PQ_STR)
        fail(&p, q->root->pos, "unsupported", "string literals as a query's result");
    if (p.failed || !q->root)
        goto fail;
    return 0;
fail:
    if (!err[0])
        snprintf(err, errlen, "1:1: parse error: out of memory");
    promql_query_free(q);
    return -1;
}

void promql_query_free(struct promql_query *q)
{
    while (q->regexes) {
        struct promql_regex *r = q->regexes;
        q->regexes = r->next;
        regfree(&r->re);
        free(r);
    }
    promql_arena_free(&q->arena);
    q->root = NULL;
}

int promql_selector_matches(const struct promql_node *sel, const struct promql_labels *l)
{
    for (size_t i = 0; i < sel->nm; i++) {
        const struct promql_matcher *m = &sel->m[i];
        const char *v = promql_label_get(l, m->name);
        int ok;
        switch (m->op) {
        case PQ_EQ: ok = strcmp(v, m->value) == 0; break;
        case PQ_NE: ok = strcmp(v, m->value) != 0; break;
        case PQ_RE: ok = regexec(m->re, v, 0, NULL, 0) == 0; break;
        default: ok = regexec(m->re, v, 0, NULL, 0) != 0; break;
        }
        if (!ok)
            return 0;
    }
    return 1;
}
