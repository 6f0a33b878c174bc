/* Parser, checker and compiler of the rule language.
 *
 * A rule block is parsed clause by clause into a small AST (nodes in an
 * arena); errors are recorded and the parser resynchronises at the next line
 * (the next clause) or the next `rule`, so one run reports every error of a
 * file. When the block is complete, the checker resolves names against the
 * whole rule (labels of its match patterns, `per`) and compiles each
 * expression into a postfix run of rules__op for the evaluator.
 *
 * Binary operator precedence lives in one table, binpri[] (Lua's priority[]):
 * not > comparison > and > or, with arithmetic above comparison. */
#include "rules/rules_int.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- the AST ------------------------------------------------------------------ */

enum node_kind { N_NUM, N_IDENT, N_CALL, N_UNARY, N_BINARY };

struct node {
    enum node_kind kind;
    uint8_t op;            /* enum rules__opcode of unary/binary nodes */
    struct rules__tok tok; /* name, number or operator */
    double num;
    struct node *a, *b;
    struct node **args;
    int nargs;
    int sensors;           /* call written `f(sensors: EXPR)` */
    int span;              /* columns the node covers on its line (for carets), >= 1 */
};

struct arena {
    struct chunk {
        struct chunk *next;
        size_t used, cap;
        max_align_t data[];
    } *head;
};

static void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    if (!a->head || a->head->used + n > a->head->cap) {
        size_t cap = n > 8192 ? n : 8192;
        struct chunk *c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    memset(p, 0, n);
    return p;
}

static void arena_free(struct arena *a)
{
    while (a->head) {
        struct chunk *c = a->head;
        a->head = c->next;
        free(c);
    }
}

/* ---- the rule being parsed --------------------------------------------------------- */

struct esc_ast {
    enum cb_severity level;
    int after;
    int64_t after_ms;
    struct node *cond;
};

struct valid_ast {
    struct rules__tok metric;
    double lo, hi;
};

struct rule_ast {
    struct rules__tok kw, name, lbrace;
    struct node *when, *clear;
    struct rules__tok when_kw;
    int has_when, has_clear, has_for, has_clear_for, has_severity, has_cooldown, has_per,
        has_notify;
    int ntitle[CB_LANGS], nmessage[CB_LANGS], tagged;
    int64_t for_ms, clear_for_ms, cooldown_ms;
    enum cb_severity severity;
    struct rules__tok title[CB_LANGS], message[CB_LANGS];
    struct rules__tok match[256];
    int nmatch;
    struct rules__tok per[16];
    int nper;
    struct rules__tok notify[32];
    int nnotify;
    struct valid_ast valid[32];
    int nvalid;
    struct esc_ast esc[16];
    int nesc;
    /* source spans of the clauses that make the rule's identity (match, per,
     * when, for, clear): rules__rule.key */
    struct {
        uint32_t start, end;
    } ident[256 + 4];
    int nident;
};

struct parser {
    struct rules__lexer lx;
    struct rules__tok cur;
    const struct rules__src *src;
    struct cb_diags *diags;
    struct cb_ruleset *rs;
    struct arena arena;
    int depth;       /* expression recursion */
    int paren;       /* open parentheses: newlines do not end an expression inside them */
    int oom;
    /* compiling */
    struct rules__rule *r;
    size_t cap_ops, cap_wins, cap_series;
    int group, in_sensors, sp, maxsp;
    size_t used_series, used_wins; /* series and windows compiled before the message */
    int tpl_lang;                  /* the language of the template being compiled */
    const struct rule_ast *ast;
};

#define TOKTEXT(p, t) ((int)(t).len), ((p)->src->text + (t).off)

static void error_at(struct parser *p, const struct rules__tok *t, const char *code,
                     const char *hint, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Records an error at token t, unless t is a lexer error (already recorded). */
static void error_at(struct parser *p, const struct rules__tok *t, const char *code,
                     const char *hint, const char *fmt, ...)
{
    if (t->kind == TK_ERROR)
        return;
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    int span = t->kind == TK_EOF ? 1 : (int)t->len;
    rules__diag(p->diags, p->src, CB_DIAG_ERROR, code, t->line, t->col, span, hint, "%s", buf);
}

static void advance(struct parser *p)
{
    p->cur = rules__lex_next(&p->lx);
    if (p->cur.kind == TK_ERROR)
        rules__diag(p->diags, p->src, CB_DIAG_ERROR, p->cur.err_code, p->cur.line, p->cur.col,
                    (int)p->cur.len, NULL, "%s", p->cur.err);
}

static int tok_is(const struct parser *p, const struct rules__tok *t, const char *word)
{
    size_t n = strlen(word);
    return t->kind == TK_IDENT && t->len == n && memcmp(p->src->text + t->off, word, n) == 0;
}

/* The token after cur, without consuming anything. */
static struct rules__tok peek(struct parser *p)
{
    struct rules__lexer save = p->lx;
    struct rules__tok t = rules__lex_next(&save);
    return t;
}

/* Skips to the first token of the next line (the next clause), a '}' or EOF. */
static void sync_line(struct parser *p)
{
    do
        advance(p);
    while (p->cur.kind != TK_EOF && !p->cur.bol && p->cur.kind != TK_RBRACE);
}

/* The best "did you mean" among candidates (NULL-terminated), or NULL. */
static const char *closest(const char *word, size_t n, const char *const *cands, size_t ncands)
{
    const char *best = NULL;
    int bestd = n <= 3 ? 1 : n <= 6 ? 2 : 3;
    for (size_t i = 0; i < ncands && cands[i]; i++) {
        int d = rules__edit_distance(word, n, cands[i], strlen(cands[i]), bestd);
        if (d <= bestd && (!best || d < bestd)) {
            best = cands[i];
            bestd = d;
        }
    }
    return best;
}

static void hint_for(char *buf, size_t len, const char *word, size_t n, const char *const *cands,
                     size_t ncands, const char **out)
{
    const char *c = closest(word, n, cands, ncands);
    if (c) {
        snprintf(buf, len, "did you mean '%s'?", c);
        *out = buf;
    } else {
        *out = NULL;
    }
}

/* ---- expressions -------------------------------------------------------------- */

/* Binary operators: left and right priority (equal: left associative) and op. */
static const struct {
    uint8_t left, right, op;
} binpri[TK__COUNT] = {
    [TK_OR] = {1, 1, OP_OR},    [TK_AND] = {2, 2, OP_AND},  [TK_GT] = {3, 3, OP_GT},
    [TK_GE] = {3, 3, OP_GE},    [TK_LT] = {3, 3, OP_LT},    [TK_LE] = {3, 3, OP_LE},
    [TK_EQ] = {3, 3, OP_EQ},    [TK_NE] = {3, 3, OP_NE},    [TK_PLUS] = {4, 4, OP_ADD},
    [TK_MINUS] = {4, 4, OP_SUB}, [TK_STAR] = {5, 5, OP_MUL}, [TK_SLASH] = {5, 5, OP_DIV},
};
#define UNARY_PRI 6 /* `not` and unary minus bind tighter than every binary operator */
#define MAX_DEPTH 100

static struct node *new_node(struct parser *p, enum node_kind k, const struct rules__tok *t)
{
    struct node *n = arena_alloc(&p->arena, sizeof *n);
    if (!n) {
        p->oom = 1;
        return NULL;
    }
    n->kind = k;
    n->tok = *t;
    n->span = (int)t->len;
    return n;
}

static struct node *subexpr(struct parser *p, int limit);

static struct node *parse_call(struct parser *p, struct rules__tok name)
{
    struct node *n = new_node(p, N_CALL, &name);
    struct node *args[8];
    int nargs = 0;
    if (!n)
        return NULL;
    advance(p); /* ( */
    p->paren++;
    if (tok_is(p, &p->cur, "sensors") && peek(p).kind == TK_COLON) {
        n->sensors = 1;
        advance(p);
        advance(p);
    }
    if (p->cur.kind != TK_RPAREN) {
        for (;;) {
            struct node *a = subexpr(p, 0);
            if (!a)
                goto fail;
            if (nargs < 8)
                args[nargs] = a;
            nargs++;
            if (p->cur.kind != TK_COMMA)
                break;
            advance(p);
        }
    }
    if (p->cur.kind != TK_RPAREN) {
        error_at(p, &p->cur, "E004", NULL, "expected ',' or ')' in the arguments of '%.*s', found %s",
                 TOKTEXT(p, name), rules__tok_name(p->cur.kind));
        goto fail;
    }
    n->span = (int)(p->cur.off + p->cur.len - name.off);
    if (p->cur.line != name.line)
        n->span = (int)name.len;
    advance(p);
    p->paren--;
    if (nargs > 8) {
        error_at(p, &name, "E007", NULL, "too many arguments to '%.*s'", TOKTEXT(p, name));
        return NULL;
    }
    n->nargs = nargs;
    if (nargs) {
        n->args = arena_alloc(&p->arena, (size_t)nargs * sizeof *n->args);
        if (!n->args) {
            p->oom = 1;
            return NULL;
        }
        memcpy(n->args, args, (size_t)nargs * sizeof *args);
    }
    return n;
fail:
    p->paren--;
    return NULL;
}

static struct node *primary(struct parser *p)
{
    struct rules__tok t = p->cur;
    struct node *n;
    switch (t.kind) {
    case TK_NUMBER:
    case TK_DURATION:
        n = new_node(p, N_NUM, &t);
        if (n)
            n->num = t.kind == TK_DURATION ? t.num / 1000.0 : t.num;
        advance(p);
        return n;
    case TK_IDENT:
        advance(p);
        if (p->cur.kind == TK_LPAREN && !p->cur.bol)
            return parse_call(p, t);
        return new_node(p, N_IDENT, &t);
    case TK_LPAREN:
        advance(p);
        p->paren++;
        n = subexpr(p, 0);
        p->paren--;
        if (!n)
            return NULL;
        if (p->cur.kind != TK_RPAREN) {
            error_at(p, &p->cur, "E004", NULL, "expected ')', found %s", rules__tok_name(p->cur.kind));
            return NULL;
        }
        advance(p);
        return n;
    default:
        error_at(p, &t, "E004", NULL, "expected an expression, found %s", rules__tok_name(t.kind));
        return NULL;
    }
}

/* Parses an expression whose binary operators all bind tighter than `limit`
 * (Lua's subexpr). Returns NULL after recording an error. */
static struct node *subexpr(struct parser *p, int limit)
{
    struct node *left;
    if (++p->depth > MAX_DEPTH) {
        error_at(p, &p->cur, "E021", NULL, "expression nested too deeply");
        p->depth--;
        return NULL;
    }
    if (p->cur.kind == TK_NOT || p->cur.kind == TK_MINUS) {
        struct rules__tok op = p->cur;
        advance(p);
        struct node *a = subexpr(p, UNARY_PRI);
        if (!a)
            goto fail;
        left = new_node(p, N_UNARY, &op);
        if (!left)
            goto fail;
        left->op = op.kind == TK_NOT ? OP_NOT : OP_NEG;
        left->a = a;
        if (op.kind == TK_NOT && binpri[p->cur.kind].left == 3 && !(p->cur.bol && !p->paren))
            rules__diag(p->diags, p->src, CB_DIAG_WARNING, "W002", op.line, op.col, (int)op.len,
                        "write 'not (A > B)'",
                        "'not' binds tighter than the comparison after it");
    } else {
        left = primary(p);
        if (!left)
            goto fail;
    }
    for (;;) {
        enum rules__tok_kind k = p->cur.kind;
        if (!binpri[k].left || binpri[k].left <= limit)
            break;
        if (p->cur.bol && !p->paren) /* a new line starts the next clause */
            break;
        struct rules__tok op = p->cur;
        advance(p);
        struct node *right = subexpr(p, binpri[k].right);
        if (!right)
            goto fail;
        struct node *b = new_node(p, N_BINARY, &op);
        if (!b)
            goto fail;
        b->op = binpri[k].op;
        b->a = left;
        b->b = right;
        left = b;
    }
    p->depth--;
    return left;
fail:
    p->depth--;
    return NULL;
}

/* ---- the checker and compiler ----------------------------------------------------- */

enum { F_WINDOW = 1, F_SENSORS = 2, F_PCT = 4, F_AGE = 8 };

static const struct {
    const char *name;
    uint8_t agg;
    uint8_t flags;
} functions[] = {
    {"avg", AGG_AVG, F_WINDOW | F_SENSORS},
    {"min", AGG_MIN, F_WINDOW | F_SENSORS},
    {"max", AGG_MAX, F_WINDOW | F_SENSORS},
    {"sum", AGG_SUM, F_WINDOW | F_SENSORS},
    {"count", AGG_COUNT, F_WINDOW | F_SENSORS},
    {"first", AGG_FIRST, F_WINDOW},
    {"last", AGG_LAST, F_WINDOW},
    {"stddev", AGG_STDDEV, F_WINDOW},
    {"delta", AGG_DELTA, F_WINDOW},
    {"rate", AGG_RATE, F_WINDOW},
    {"percentile", AGG_PERCENTILE, F_PCT},
    {"age", 0, F_AGE},
    {"share", AGG_SHARE, F_SENSORS},
    {"any", AGG_ANY, F_SENSORS},
    {"all", AGG_ALL, F_SENSORS},
};
#define NFUNCS (sizeof functions / sizeof functions[0])

static int emit(struct parser *p, uint8_t op, uint8_t agg, uint16_t slot, double k)
{
    struct rules__rule *r = p->r;
    if (rules__grow(&r->ops, &p->cap_ops, r->nops + 1, sizeof *r->ops) < 0) {
        p->oom = 1;
        return -1;
    }
    r->ops[r->nops++] = (struct rules__op){op, agg, slot, 0, k};
    if (op == OP_CONST || op == OP_LATEST || op == OP_AGE || op == OP_AGE_M || op == OP_WIN ||
        op == OP_SENSORS)
        p->sp++;
    else if (op != OP_NEG && op != OP_NOT)
        p->sp--;
    if (p->sp > p->maxsp)
        p->maxsp = p->sp;
    return 0;
}

static int series_slot(struct parser *p, const char *m, size_t n)
{
    struct rules__rule *r = p->r;
    for (size_t i = 0; i < r->nseries; i++)
        if (strlen(r->series[i]) == n && memcmp(r->series[i], m, n) == 0)
            return (int)i;
    if (r->nseries >= 65535 ||
        rules__grow(&r->series, &p->cap_series, r->nseries + 1, sizeof *r->series) < 0)
        goto oom;
    if (!(r->series[r->nseries] = rules__strndup(m, n)))
        goto oom;
    return (int)r->nseries++;
oom:
    p->oom = 1;
    return -1;
}

static int window_slot(struct parser *p, const char *m, size_t n, int64_t width, unsigned flags)
{
    struct rules__rule *r = p->r;
    for (size_t i = 0; i < r->nwins; i++)
        if (r->wins[i].width_ms == width && strlen(r->wins[i].metric) == n &&
            memcmp(r->wins[i].metric, m, n) == 0) {
            r->wins[i].flags |= flags;
            return (int)i;
        }
    if (r->nwins >= 65535 || rules__grow(&r->wins, &p->cap_wins, r->nwins + 1, sizeof *r->wins) < 0)
        goto oom;
    char *copy = rules__strndup(m, n);
    if (!copy)
        goto oom;
    r->wins[r->nwins] = (struct rules__winref){copy, width, flags};
    if (width > r->max_width_ms)
        r->max_width_ms = width;
    return (int)r->nwins++;
oom:
    p->oom = 1;
    return -1;
}

static const char *const label_words[] = {"rule", "severity", "title", "id"};

/* Does any match pattern of the rule bind this label? */
static int bound(const struct rules__rule *r, const char *name, size_t n)
{
    char buf[128];
    if (n >= sizeof buf)
        return 0;
    memcpy(buf, name, n);
    buf[n] = 0;
    for (size_t i = 0; i < r->npats; i++)
        if (cb_topic_pattern_binds(r->pats[i], buf))
            return 1;
    return 0;
}

static size_t rule_labels(const struct rules__rule *r, const char **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < r->npats; i++)
        for (size_t j = 0; j < cb_topic_pattern_label_count(r->pats[i]) && n < max; j++)
            out[n++] = cb_topic_pattern_label(r->pats[i], j);
    return n;
}

static int compile_expr(struct parser *p, const struct node *n);

/* A metric argument: a plain name. Returns 0, or -1 after an error. */
static int metric_arg(struct parser *p, const struct node *call, const struct node *a)
{
    if (a->kind != N_IDENT) {
        error_at(p, &a->tok, "E026", NULL, "the first argument of '%.*s' must be a metric name",
                 TOKTEXT(p, call->tok));
        return -1;
    }
    return 0;
}

static int duration_arg(struct parser *p, const struct node *call, const struct node *a,
                        int64_t *ms)
{
    if (a->kind != N_NUM || a->tok.kind != TK_DURATION || a->num <= 0) {
        error_at(p, &a->tok, "E027", "write a duration such as 5m",
                 "the window of '%.*s' must be a positive duration", TOKTEXT(p, call->tok));
        return -1;
    }
    *ms = (int64_t)llround(a->num * 1000.0);
    return 0;
}

static int compile_call(struct parser *p, const struct node *n)
{
    const char *name = p->src->text + n->tok.off;
    size_t len = n->tok.len;
    size_t f;
    for (f = 0; f < NFUNCS; f++)
        if (strlen(functions[f].name) == len && memcmp(functions[f].name, name, len) == 0)
            break;
    if (f == NFUNCS) {
        const char *cands[NFUNCS];
        for (size_t i = 0; i < NFUNCS; i++)
            cands[i] = functions[i].name;
        char hb[96];
        const char *hint;
        hint_for(hb, sizeof hb, name, len, cands, NFUNCS, &hint);
        error_at(p, &n->tok, "E006", hint, "unknown aggregate '%.*s'", (int)len, name);
        return -1;
    }
    unsigned fl = functions[f].flags;
    uint8_t agg = functions[f].agg;
    if (n->sensors) {
        if (!(fl & F_SENSORS)) {
            error_at(p, &n->tok, "E025", "sensors: works with count, share, any, all, min, max, avg, sum",
                     "'%s' cannot aggregate over sensors", functions[f].name);
            return -1;
        }
        if (!p->group) {
            error_at(p, &n->tok, "E010", "add 'per LABEL' to make a group rule",
                     "'%s(sensors: ...)' outside a group rule", functions[f].name);
            return -1;
        }
        if (p->in_sensors) {
            error_at(p, &n->tok, "E020", NULL, "sensors: aggregates cannot be nested");
            return -1;
        }
        if (n->nargs != 1) {
            error_at(p, &n->tok, "E007", NULL, "'%s(sensors: ...)' takes 1 expression, got %d",
                     functions[f].name, n->nargs);
            return -1;
        }
        size_t at = p->r->nops;
        if (emit(p, OP_SENSORS, agg, 0, 0) < 0)
            return -1;
        int sp = p->sp;
        p->sp = 0;
        p->in_sensors = 1;
        int rc = compile_expr(p, n->args[0]);
        p->in_sensors = 0;
        p->sp = sp;
        if (rc < 0)
            return -1;
        p->r->ops[at].len = (uint32_t)(p->r->nops - at - 1);
        return 0;
    }
    if (fl == F_SENSORS) {
        error_at(p, &n->tok, "E025", "it takes 'sensors: COND' in a group rule",
                 "'%s' aggregates over sensors: write '%s(sensors: ...)'", functions[f].name,
                 functions[f].name);
        return -1;
    }
    if (p->group && !p->in_sensors) {
        error_at(p, &n->tok, "E018", "in a group rule, per-sensor values go inside a sensors: aggregate",
                 "'%s' needs one sensor, but this is a group rule", functions[f].name);
        return -1;
    }
    if (fl & F_AGE) {
        if (n->nargs > 1) {
            error_at(p, &n->tok, "E007", NULL, "'age' takes 0 or 1 arguments, got %d", n->nargs);
            return -1;
        }
        if (n->nargs == 0)
            return emit(p, OP_AGE, 0, 0, 0);
        if (metric_arg(p, n, n->args[0]) < 0)
            return -1;
        int s = series_slot(p, p->src->text + n->args[0]->tok.off, n->args[0]->tok.len);
        return s < 0 ? -1 : emit(p, OP_AGE_M, 0, (uint16_t)s, 0);
    }
    int want = (fl & F_PCT) ? 3 : 2;
    if (n->nargs != want) {
        error_at(p, &n->tok, "E007", want == 3 ? "percentile(METRIC, WINDOW, P)" : NULL,
                 "'%s' takes %d arguments (%s), got %d", functions[f].name, want,
                 want == 3 ? "metric, window, percentile" : "metric, window", n->nargs);
        return -1;
    }
    int64_t ms;
    if (metric_arg(p, n, n->args[0]) < 0 || duration_arg(p, n, n->args[1], &ms) < 0)
        return -1;
    double k = 0;
    if (want == 3) {
        const struct node *a = n->args[2];
        if (a->kind != N_NUM || a->tok.kind != TK_NUMBER || a->num < 0 || a->num > 100) {
            error_at(p, &a->tok, "E027", NULL, "the percentile must be a number from 0 to 100");
            return -1;
        }
        k = a->num;
    }
    int s = window_slot(p, p->src->text + n->args[0]->tok.off, n->args[0]->tok.len, ms,
                        rules__aggs[agg].flags);
    return s < 0 ? -1 : emit(p, OP_WIN, agg, (uint16_t)s, k);
}

/* Checks and compiles one expression (postfix). Returns 0, or -1 after
 * recording an error (errors of both operands are reported). */
static int compile_expr(struct parser *p, const struct node *n)
{
    int rc;
    switch (n->kind) {
    case N_NUM:
        return emit(p, OP_CONST, 0, 0, n->num);
    case N_IDENT: {
        if (p->group && !p->in_sensors) {
            error_at(p, &n->tok, "E018", "in a group rule, per-sensor values go inside a sensors: aggregate",
                     "metric '%.*s' needs one sensor, but this is a group rule", TOKTEXT(p, n->tok));
            return -1;
        }
        int s = series_slot(p, p->src->text + n->tok.off, n->tok.len);
        return s < 0 ? -1 : emit(p, OP_LATEST, 0, (uint16_t)s, 0);
    }
    case N_CALL:
        return compile_call(p, n);
    case N_UNARY:
        if (compile_expr(p, n->a) < 0)
            return -1;
        return emit(p, n->op, 0, 0, 0);
    case N_BINARY:
        rc = compile_expr(p, n->a);
        if (compile_expr(p, n->b) < 0 || rc < 0)
            return -1;
        return emit(p, n->op, 0, 0, 0);
    }
    return -1;
}

/* Compiles a top-level expression into *code. 0 or -1. */
static int compile_code(struct parser *p, const struct node *n, struct rules__code *code)
{
    if (!n)
        return -1;
    code->start = (uint32_t)p->r->nops;
    p->sp = p->maxsp = 0;
    int rc = compile_expr(p, n);
    code->len = (uint32_t)(p->r->nops - code->start);
    if (rc == 0 && p->maxsp > RULES_STACK_MAX) {
        error_at(p, &n->tok, "E021", NULL, "expression too complex (stack deeper than %d)",
                 RULES_STACK_MAX);
        return -1;
    }
    return rc;
}

/* ---- message templates ---------------------------------------------------------------- */

static int tpl_add(struct parser *p, size_t *cap, struct rules__tpl_part part)
{
    struct rules__text *x = &p->r->lang[p->tpl_lang];
    if (rules__grow(&x->msg, cap, x->nmsg + 1, sizeof *x->msg) < 0) {
        free(part.text);
        p->oom = 1;
        return -1;
    }
    x->msg[x->nmsg++] = part;
    return 0;
}

/* Parses a format spec ".2f", "d", ".3g", ".1e", "f". 0 or -1. */
static int parse_fmt(const char *s, size_t n, char *fmt, int *prec)
{
    while (n && (*s == ' '))
        s++, n--;
    while (n && s[n - 1] == ' ')
        n--;
    *prec = -1;
    if (n == 0)
        return -1;
    size_t i = 0;
    if (s[0] == '.') {
        i = 1;
        int v = 0, digits = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 3)
            v = v * 10 + (s[i++] - '0'), digits++;
        if (!digits || v > 17)
            return -1;
        *prec = v;
    }
    if (i + 1 != n || !strchr("fegd", s[i]))
        return -1;
    *fmt = s[i];
    return 0;
}

static int name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

/* Is s[0..n) one name, as the lexer reads one (dotted where payloads were
 * flattened: air.pm25)? */
static int is_name_text(const char *s, size_t n)
{
    if (!n || !name_start(s[0]))
        return 0;
    for (size_t k = 1; k < n; k++)
        if (!(name_start(s[k]) || (s[k] >= '0' && s[k] <= '9') ||
              (s[k] == '.' && k + 1 < n && name_start(s[k + 1]))))
            return 0;
    return 1;
}

/* The metrics the rule uses, for a bare name in its message: the metrics its
 * `valid`, `when`, `clear` and `escalate ... when` clauses name (alone, in a
 * window aggregate or in age(M), inside sensors: or not), that is its series
 * and windows compiled before the message, and its valid metrics. Writes at
 * most max distinct names (borrowed from the rule) to out; returns how many. */
static size_t rule_metrics(const struct parser *p, const char **out, size_t max)
{
    const struct rules__rule *r = p->r;
    size_t n = 0, total = r->nvalid + p->used_series + p->used_wins;
    for (size_t i = 0; i < total && n < max; i++) {
        const char *m = i < r->nvalid ? r->valid[i].metric
                        : i < r->nvalid + p->used_series ? r->series[i - r->nvalid]
                                                         : r->wins[i - r->nvalid - p->used_series].metric;
        size_t k = 0;
        while (k < n && strcmp(out[k], m))
            k++;
        if (k == n)
            out[n++] = m;
    }
    return n;
}

/* Appends "a, b, c" (or "none") to b. */
static void put_names(struct cb_strbuf *b, const char *const *names, size_t n)
{
    if (!n)
        cb_strbuf_puts(b, "none");
    for (size_t i = 0; i < n; i++)
        cb_strbuf_printf(b, "%s%s", i ? ", " : "", names[i]);
}

/* A bare {NAME} of the message at s[ns..ns+n) (rules.md): a label a match
 * pattern binds (in a group rule, one of its `per` labels); else the latest
 * value of a metric the rule uses (rule_metrics), which a group rule has not
 * for one sensor (E018, pointing to a sensors: aggregate); else E009 with a
 * did-you-mean over the labels and the metrics. Appends the part or records
 * the error. */
static void template_name(struct parser *p, size_t *cap, const struct rules__tok *t, size_t ns,
                          size_t n)
{
    const char *name = p->src->text + ns;
    int scol = t->col + (int)(ns - t->off);
    struct rules__tpl_part tp = {TPL_LABEL, NULL, {0, 0}, 0, -1};
    if (bound(p->r, name, n)) {
        int in_per = 0;
        for (size_t k = 0; k < p->r->nper; k++)
            if (strlen(p->r->per[k]) == n && memcmp(p->r->per[k], name, n) == 0)
                in_per = 1;
        if (p->group && !in_per) {
            rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E009", t->line, scol, (int)n,
                        "a group alert has only its 'per' labels",
                        "label '%.*s' in the message is not a 'per' label of this group rule",
                        (int)n, name);
            return;
        }
        if (!(tp.text = rules__strndup(name, n)))
            p->oom = 1;
        else
            tpl_add(p, cap, tp);
        return;
    }
    const char *cands[128];
    size_t nl = rule_labels(p->r, cands, 64);
    size_t nm = rule_metrics(p, cands + nl, 64);
    for (size_t k = nl; k < nl + nm; k++) {
        if (strlen(cands[k]) != n || memcmp(cands[k], name, n))
            continue;
        if (p->group) {
            char hb[200];
            snprintf(hb, sizeof hb, "write {max(sensors: %.*s)}, or min, avg or sum", (int)n, name);
            rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E018", t->line, scol, (int)n, hb,
                        "metric '%.*s' in the message has no single value in a group rule",
                        (int)n, name);
            return;
        }
        struct rules__tok it = {.kind = TK_IDENT, .off = (uint32_t)ns, .len = (uint32_t)n,
                                .line = t->line, .col = scol};
        struct node *e = new_node(p, N_IDENT, &it);
        tp.kind = TPL_EXPR;
        if (e && compile_code(p, e, &tp.code) == 0)
            tpl_add(p, cap, tp);
        return;
    }
    char hb[96];
    const char *hint;
    hint_for(hb, sizeof hb, name, n, cands, nl + nm, &hint);
    struct cb_strbuf list;
    cb_strbuf_init(&list);
    if (!hint) {
        cb_strbuf_puts(&list, "labels: ");
        put_names(&list, cands, nl);
        cb_strbuf_puts(&list, "; metrics of the rule: ");
        put_names(&list, cands + nl, nm);
        hint = list.data;
    }
    rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E009", t->line, scol, (int)n, hint,
                "'%.*s' in the message is neither a label of a match pattern nor a metric the "
                "rule uses", (int)n, name);
    cb_strbuf_free(&list);
}

/* Compiles the message template of string token t in language lang (every
 * language's template is checked alike). Every error is reported. */
static void compile_template(struct parser *p, const struct rules__tok *t, int lang)
{
    const char *s = p->src->text;
    size_t a = t->off + 1, end = t->off + t->len - 1, cap = 0;
    struct cb_strbuf lit;
    cb_strbuf_init(&lit);
    p->tpl_lang = lang;
    p->r->lang[lang].has_msg = 1;
    for (size_t i = a; i < end;) {
        char c = s[i];
        if (c == '\\' && i + 1 < end) {
            char e = s[i + 1];
            cb_strbuf_putc(&lit, e == 'n' ? '\n' : e == 't' ? '\t' : e);
            i += 2;
            continue;
        }
        if ((c == '{' || c == '}') && i + 1 < end && s[i + 1] == c) {
            cb_strbuf_putc(&lit, c);
            i += 2;
            continue;
        }
        if (c == '}') {
            rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E022", t->line, t->col + (int)(i - t->off),
                        1, "write '}}' for a literal brace", "unmatched '}' in message template");
            i++;
            continue;
        }
        if (c != '{') {
            cb_strbuf_putc(&lit, c);
            i++;
            continue;
        }
        /* {…}: find the closing brace */
        size_t j = i + 1;
        int depth = 0;
        while (j < end && s[j] != '}' && s[j] != '{') {
            if (s[j] == '(')
                depth++;
            else if (s[j] == ')')
                depth--;
            j++;
        }
        int col = t->col + (int)(i - t->off);
        if (j >= end || s[j] != '}') {
            rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E022", t->line, col, 1,
                        "write '{{' for a literal brace", "unterminated '{' in message template");
            break;
        }
        if (lit.len) {
            struct rules__tpl_part tp = {TPL_TEXT, cb_strbuf_steal(&lit, NULL), {0, 0}, 0, -1};
            if (!tp.text || tpl_add(p, &cap, tp) < 0) {
                p->oom = 1;
                break;
            }
        }
        size_t cs = i + 1, ce = j;
        /* a format after the last ':' outside parentheses: {expr:.2f} */
        size_t colon = 0;
        depth = 0;
        for (size_t k = cs; k < ce; k++) {
            if (s[k] == '(')
                depth++;
            else if (s[k] == ')')
                depth--;
            else if (s[k] == ':' && depth == 0)
                colon = k;
        }
        struct rules__tpl_part tp = {TPL_EXPR, NULL, {0, 0}, 0, -1};
        if (colon) {
            if (parse_fmt(s + colon + 1, ce - colon - 1, &tp.fmt, &tp.prec) < 0) {
                rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E028", t->line,
                            t->col + (int)(colon + 1 - t->off), (int)(ce - colon - 1),
                            "use .2f, .1e, .3g or d", "bad number format in message template");
                i = j + 1;
                continue;
            }
            ce = colon;
        }
        /* a single name: a label, or one of rule/severity/title/id */
        size_t ns = cs, ne = ce;
        while (ns < ne && s[ns] == ' ')
            ns++;
        while (ne > ns && s[ne - 1] == ' ')
            ne--;
        int is_name = is_name_text(s + ns, ne - ns);
        if (is_name && !colon) {
            size_t n = ne - ns;
            int word = -1;
            for (int w = 0; w < 4; w++)
                if (strlen(label_words[w]) == n && memcmp(label_words[w], s + ns, n) == 0)
                    word = w;
            if (word >= 0) {
                static const enum rules__tpl_kind wk[] = {TPL_RULE, TPL_SEVERITY, TPL_TITLE, TPL_ID};
                tp.kind = wk[word];
            } else {
                template_name(p, &cap, t, ns, n);
                i = j + 1;
                continue;
            }
            tpl_add(p, &cap, tp);
            i = j + 1;
            continue;
        }
        /* an expression: lex it in place, so positions are those of the file */
        struct rules__lexer save = p->lx;
        struct rules__tok savecur = p->cur;
        rules__lex_init(&p->lx, s, cs, ce, t->line, t->col + (int)(cs - t->off));
        p->lx.line_start = cs;
        advance(p);
        int paren = p->paren;
        p->paren = 1; /* the whole template is one line */
        struct node *e = subexpr(p, 0);
        if (e && p->cur.kind != TK_EOF) {
            error_at(p, &p->cur, "E004", NULL, "unexpected %s in message expression",
                     rules__tok_name(p->cur.kind));
            e = NULL;
        }
        p->paren = paren;
        p->lx = save;
        p->cur = savecur;
        if (e && e->kind == N_IDENT && bound(p->r, s + e->tok.off, e->tok.len)) {
            char hb[160];
            snprintf(hb, sizeof hb, "write {%.*s}", TOKTEXT(p, e->tok));
            error_at(p, &e->tok, "E009", hb, "label '%.*s' is text: it takes no number format",
                     TOKTEXT(p, e->tok));
            e = NULL;
        }
        if (e && compile_code(p, e, &tp.code) == 0)
            tpl_add(p, &cap, tp);
        i = j + 1;
    }
    if (lit.len) {
        struct rules__tpl_part tp = {TPL_TEXT, cb_strbuf_steal(&lit, NULL), {0, 0}, 0, -1};
        if (!tp.text)
            p->oom = 1;
        else
            tpl_add(p, &cap, tp);
    }
    cb_strbuf_free(&lit);
}

/* ---- clauses ----------------------------------------------------------------------- */

static const char *const clause_names[] = {"title", "match",    "per",     "valid",   "when",
                                           "for",   "clear",    "severity", "escalate", "cooldown",
                                           "message", "notify", NULL};

static const char *const severity_names[] = {"info", "warning", "major", "critical", NULL};

static int expect_duration(struct parser *p, int64_t *ms, const char *what)
{
    if (p->cur.kind == TK_DURATION) {
        *ms = (int64_t)p->cur.num;
        advance(p);
        return 0;
    }
    if (p->cur.kind == TK_NUMBER)
        error_at(p, &p->cur, "E014", "a duration needs a unit: 90s, 5m, 2h",
                 "bad duration '%.*s' for %s", TOKTEXT(p, p->cur), what);
    else
        error_at(p, &p->cur, "E014", NULL, "expected a duration for %s, found %s", what,
                 rules__tok_name(p->cur.kind));
    return -1;
}

static int parse_severity(struct parser *p, enum cb_severity *out)
{
    if (p->cur.kind == TK_IDENT) {
        for (int i = 0; severity_names[i]; i++)
            if (tok_is(p, &p->cur, severity_names[i])) {
                *out = (enum cb_severity)i;
                advance(p);
                return 0;
            }
        char hb[96];
        const char *hint;
        hint_for(hb, sizeof hb, p->src->text + p->cur.off, p->cur.len, severity_names, 4, &hint);
        error_at(p, &p->cur, "E015", hint ? hint : "info, warning, major or critical",
                 "unknown severity '%.*s'", TOKTEXT(p, p->cur));
        return -1;
    }
    error_at(p, &p->cur, "E015", "info, warning, major or critical", "expected a severity, found %s",
             rules__tok_name(p->cur.kind));
    return -1;
}

static int parse_number(struct parser *p, double *out)
{
    int neg = 0;
    if (p->cur.kind == TK_MINUS) {
        neg = 1;
        advance(p);
    }
    if (p->cur.kind != TK_NUMBER) {
        error_at(p, &p->cur, "E004", NULL, "expected a number, found %s", rules__tok_name(p->cur.kind));
        return -1;
    }
    *out = neg ? -p->cur.num : p->cur.num;
    advance(p);
    return 0;
}

/* The language tags of a title or message clause: the short and the full
 * form of each language (enum cb_lang order). */
static const char *const lang_short[CB_LANGS] = {"en", "zh"};

/* Parses the language tag at p->cur (an identifier on the clause's line):
 * `zh` or `zh-CN`, `en` or `en-US` (the hyphenated form lexes as three
 * adjacent tokens). Returns the language, or -1 after recording E032 for an
 * unknown tag (with a did-you-mean). The plain clause is English, so `en`
 * names what a plain clause names. */
static int parse_lang(struct parser *p)
{
    struct rules__tok first = p->cur;
    uint32_t end = first.off + first.len;
    advance(p);
    if (p->cur.kind == TK_MINUS && p->cur.off == end) {
        struct rules__tok minus = p->cur;
        advance(p);
        if (p->cur.kind != TK_IDENT || p->cur.off != minus.off + 1) {
            error_at(p, &minus, "E032", "zh, zh-CN, en or en-US", "bad language tag");
            return -1;
        }
        end = p->cur.off + p->cur.len;
        advance(p);
    }
    const char *text = p->src->text + first.off;
    size_t n = end - first.off;
    for (int l = 0; l < CB_LANGS; l++) {
        const char *tag = cb_lang_tag((enum cb_lang)l);
        if ((strlen(lang_short[l]) == n && !memcmp(text, lang_short[l], n)) ||
            (strlen(tag) == n && !memcmp(text, tag, n))) {
            return l;
        }
    }
    static const char *const all[] = {"en", "zh", "en-US", "zh-CN"};
    char hb[96];
    const char *hint;
    hint_for(hb, sizeof hb, text, n, all, 4, &hint);
    rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E032", first.line, first.col, (int)n,
                hint ? hint : "languages: zh (zh-CN), en (en-US); a plain clause is English",
                "unknown language '%.*s'", (int)n, text);
    return -1;
}

static void dup_clause(struct parser *p, const struct rules__tok *kw)
{
    error_at(p, kw, "E017", NULL, "duplicate '%.*s' clause", TOKTEXT(p, *kw));
}

/* Parses one clause starting at p->cur (its keyword). Returns 0, or -1 after
 * an error (the caller resynchronises). */
static int parse_clause(struct parser *p, struct rule_ast *ra)
{
    struct rules__tok kw = p->cur;
    if (kw.kind != TK_IDENT) {
        error_at(p, &kw, "E005", NULL, "expected a clause, found %s", rules__tok_name(kw.kind));
        return -1;
    }
    if (tok_is(p, &kw, "title") || tok_is(p, &kw, "message")) {
        int title = tok_is(p, &kw, "title");
        advance(p);
        int lang = CB_LANG_EN;
        if (p->cur.kind == TK_IDENT && !p->cur.bol && (lang = parse_lang(p)) < 0)
            return -1;
        if (p->cur.kind != TK_STRING) {
            error_at(p, &p->cur, "E004", NULL, "expected a string after '%.*s'", TOKTEXT(p, kw));
            return -1;
        }
        if (title ? ra->ntitle[lang]++ : ra->nmessage[lang]++) {
            if (lang == CB_LANG_EN)
                dup_clause(p, &kw);
            else
                error_at(p, &kw, "E017", NULL, "duplicate '%.*s' clause for %s", TOKTEXT(p, kw),
                         cb_lang_tag((enum cb_lang)lang));
        }
        if (title)
            ra->title[lang] = p->cur;
        else
            ra->message[lang] = p->cur;
        advance(p);
        return 0;
    }
    if (tok_is(p, &kw, "match")) {
        advance(p);
        if (p->cur.kind != TK_STRING) {
            error_at(p, &p->cur, "E004", NULL, "expected a topic pattern string after 'match'");
            return -1;
        }
        if (ra->nmatch >= 255) {
            error_at(p, &kw, "E004", NULL, "too many match clauses (at most 255)");
            return -1;
        }
        ra->match[ra->nmatch++] = p->cur;
        advance(p);
        return 0;
    }
    if (tok_is(p, &kw, "per") || tok_is(p, &kw, "notify")) {
        int per = tok_is(p, &kw, "per");
        if (per ? ra->has_per++ : ra->has_notify++)
            dup_clause(p, &kw);
        advance(p);
        for (;;) {
            if (p->cur.kind != TK_IDENT && (per || p->cur.kind != TK_STRING)) {
                error_at(p, &p->cur, "E004", NULL, "expected a %s name, found %s",
                         per ? "label" : "channel", rules__tok_name(p->cur.kind));
                return -1;
            }
            if (per && ra->nper < 16)
                ra->per[ra->nper++] = p->cur;
            else if (!per && ra->nnotify < 32)
                ra->notify[ra->nnotify++] = p->cur;
            else {
                error_at(p, &p->cur, "E004", NULL, "too many names in '%.*s'", TOKTEXT(p, kw));
                return -1;
            }
            advance(p);
            if (p->cur.kind != TK_COMMA)
                return 0;
            advance(p);
        }
    }
    if (tok_is(p, &kw, "valid")) {
        advance(p);
        struct valid_ast v;
        if (p->cur.kind != TK_IDENT) {
            error_at(p, &p->cur, "E004", NULL, "expected a metric name after 'valid'");
            return -1;
        }
        v.metric = p->cur;
        advance(p);
        if (!tok_is(p, &p->cur, "in")) {
            error_at(p, &p->cur, "E004", "valid METRIC in LO .. HI", "expected 'in' after the metric");
            return -1;
        }
        advance(p);
        struct rules__tok lo_tok = p->cur;
        if (parse_number(p, &v.lo) < 0)
            return -1;
        if (p->cur.kind != TK_DOTDOT) {
            error_at(p, &p->cur, "E004", "valid METRIC in LO .. HI", "expected '..' in the range");
            return -1;
        }
        advance(p);
        if (parse_number(p, &v.hi) < 0)
            return -1;
        if (v.lo > v.hi) {
            error_at(p, &lo_tok, "E019", NULL, "empty range: %g is above %g", v.lo, v.hi);
            return -1;
        }
        if (ra->nvalid >= 32) {
            error_at(p, &kw, "E004", NULL, "too many valid clauses (at most 32)");
            return -1;
        }
        ra->valid[ra->nvalid++] = v;
        return 0;
    }
    if (tok_is(p, &kw, "when")) {
        if (ra->has_when++)
            dup_clause(p, &kw);
        ra->when_kw = kw;
        advance(p);
        ra->when = subexpr(p, 0);
        return ra->when ? 0 : -1;
    }
    if (tok_is(p, &kw, "for")) {
        if (ra->has_for++)
            dup_clause(p, &kw);
        advance(p);
        return expect_duration(p, &ra->for_ms, "'for'");
    }
    if (tok_is(p, &kw, "cooldown")) {
        if (ra->has_cooldown++)
            dup_clause(p, &kw);
        advance(p);
        return expect_duration(p, &ra->cooldown_ms, "'cooldown'");
    }
    if (tok_is(p, &kw, "clear")) {
        if (ra->has_clear++)
            dup_clause(p, &kw);
        advance(p);
        ra->clear = subexpr(p, 0);
        if (!ra->clear)
            return -1;
        if (tok_is(p, &p->cur, "for") && !p->cur.bol) {
            advance(p);
            ra->has_clear_for = 1;
            return expect_duration(p, &ra->clear_for_ms, "'clear … for'");
        }
        return 0;
    }
    if (tok_is(p, &kw, "severity")) {
        if (ra->has_severity++)
            dup_clause(p, &kw);
        advance(p);
        return parse_severity(p, &ra->severity);
    }
    if (tok_is(p, &kw, "escalate")) {
        advance(p);
        struct esc_ast e;
        memset(&e, 0, sizeof e);
        if (parse_severity(p, &e.level) < 0)
            return -1;
        if (tok_is(p, &p->cur, "when")) {
            advance(p);
            e.cond = subexpr(p, 0);
            if (!e.cond)
                return -1;
        } else if (tok_is(p, &p->cur, "after")) {
            advance(p);
            e.after = 1;
            if (expect_duration(p, &e.after_ms, "'escalate … after'") < 0)
                return -1;
            if (!tok_is(p, &p->cur, "unacked")) {
                error_at(p, &p->cur, "E004", "escalate LEVEL after DURATION unacked",
                         "expected 'unacked' after the duration");
                return -1;
            }
            advance(p);
        } else {
            error_at(p, &p->cur, "E004", "escalate LEVEL when COND, or escalate LEVEL after D unacked",
                     "expected 'when' or 'after' in 'escalate'");
            return -1;
        }
        if (ra->nesc >= 16) {
            error_at(p, &kw, "E004", NULL, "too many escalate clauses (at most 16)");
            return -1;
        }
        ra->esc[ra->nesc++] = e;
        return 0;
    }
    char hb[96];
    const char *hint;
    hint_for(hb, sizeof hb, p->src->text + kw.off, kw.len, clause_names, 12, &hint);
    error_at(p, &kw, "E005", hint, "unknown clause '%.*s'", TOKTEXT(p, kw));
    return -1;
}

/* ---- building the compiled rule ---------------------------------------------------------- */

static char *tok_string(struct parser *p, const struct rules__tok *t)
{
    /* the text between the quotes, with \" \\ \n \t unescaped */
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    const char *s = p->src->text + t->off + 1;
    size_t n = t->len - 2;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            i++;
            cb_strbuf_putc(&b, s[i] == 'n' ? '\n' : s[i] == 't' ? '\t' : s[i]);
        } else {
            cb_strbuf_putc(&b, s[i]);
        }
    }
    char *r = b.oom ? NULL : cb_strbuf_steal(&b, NULL);
    cb_strbuf_free(&b);
    if (!r)
        p->oom = 1;
    return r;
}

/* The rule's tokens joined by single spaces: comments and layout do not count
 * as a change of the rule on reload. */
static char *canonical_text(struct parser *p, size_t start, size_t end)
{
    struct rules__lexer lx;
    struct cb_strbuf b;
    rules__lex_init(&lx, p->src->text, start, end, 1, 1);
    cb_strbuf_init(&b);
    for (;;) {
        struct rules__tok t = rules__lex_next(&lx);
        if (t.kind == TK_EOF)
            break;
        if (b.len)
            cb_strbuf_putc(&b, ' ');
        cb_strbuf_append(&b, p->src->text + t.off, t.len);
    }
    char *r = b.oom ? NULL : cb_strbuf_steal(&b, NULL);
    cb_strbuf_free(&b);
    if (!r)
        p->oom = 1;
    return r;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The rule's identity: its name and its identity clauses, each as canonical
 * text, sorted so the order of clauses, comments and layout do not count.
 * Title, message, severity, escalate, cooldown, valid and notify are not in
 * it: changing them keeps every instance and its state. NULL on OOM. */
static char *identity_key(struct parser *p, const struct rule_ast *ra, const char *name)
{
    char *parts[sizeof ra->ident / sizeof ra->ident[0]];
    int n = 0;
    char *key = NULL;
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    for (; n < ra->nident; n++)
        if (!(parts[n] = canonical_text(p, ra->ident[n].start, ra->ident[n].end)))
            goto out;
    qsort(parts, (size_t)n, sizeof *parts, cmp_str);
    cb_strbuf_puts(&b, name);
    for (int i = 0; i < n; i++) {
        cb_strbuf_putc(&b, '\n');
        cb_strbuf_puts(&b, parts[i]);
    }
    key = b.oom ? NULL : cb_strbuf_steal(&b, NULL);
out:
    while (n-- > 0)
        free(parts[n]);
    cb_strbuf_free(&b);
    if (!key)
        p->oom = 1;
    return key;
}

void rules__rule_free(struct rules__rule *r)
{
    free(r->name);
    free(r->file);
    free(r->text);
    free(r->key);
    for (size_t i = 0; i < r->npats; i++)
        cb_topic_pattern_free(r->pats[i]);
    free(r->pats);
    for (size_t i = 0; i < r->nper; i++)
        free(r->per[i]);
    free(r->per);
    for (size_t i = 0; i < r->nvalid; i++)
        free(r->valid[i].metric);
    free(r->valid);
    free(r->esc);
    for (int l = 0; l < CB_LANGS; l++) {
        free(r->lang[l].title);
        for (size_t i = 0; i < r->lang[l].nmsg; i++)
            free(r->lang[l].msg[i].text);
        free(r->lang[l].msg);
    }
    for (size_t i = 0; i < r->nnotify; i++)
        free(r->notify[i]);
    free(r->notify);
    for (size_t i = 0; i < r->nwins; i++)
        free(r->wins[i].metric);
    free(r->wins);
    for (size_t i = 0; i < r->nseries; i++)
        free(r->series[i]);
    free(r->series);
    free(r->ops);
    memset(r, 0, sizeof *r);
}

/* With cb_rules_opts.check_notify, a `notify` name (token t, text name) must
 * be one of the channels given: otherwise E029 at t, with a did-you-mean. */
static void check_channel(struct parser *p, const struct rules__tok *t, const char *name)
{
    const struct cb_rules_opts *o = p->rs->opts;
    if (!o || !o->check_notify)
        return;
    for (size_t i = 0; i < o->nchannels; i++)
        if (!strcmp(o->channels[i], name))
            return;
    char hb[96];
    const char *hint;
    hint_for(hb, sizeof hb, name, strlen(name), o->channels, o->nchannels, &hint);
    error_at(p, t, "E029", hint, "unknown channel '%s' in notify; %s", name,
             o->channels_note ? o->channels_note : "no channel has that name");
}

/* Checks and compiles a parsed rule into p->r. Errors are recorded. */
static void build_rule(struct parser *p, const struct rule_ast *ra, size_t end_off)
{
    struct rules__rule *r = p->r;
    p->cap_ops = p->cap_wins = p->cap_series = 0;
    p->in_sensors = 0;
    r->name = rules__strndup(p->src->text + ra->name.off, ra->name.len);
    r->file = rules__strdup(p->src->name);
    r->line = ra->name.line;
    r->col = ra->name.col;
    r->text = canonical_text(p, ra->kw.off, end_off);
    r->key = r->name ? identity_key(p, ra, r->name) : NULL;
    r->severity = ra->has_severity ? ra->severity : CB_SEV_MAJOR;
    r->for_ms = ra->for_ms;
    r->cooldown_ms = ra->cooldown_ms;
    r->clear_for_ms = ra->clear_for_ms;
    if (!r->name || !r->file || !r->text || !r->key)
        goto oom;
    r->msg_lang = -1;
    for (int l = CB_LANGS - 1; l >= 0; l--) {
        if (ra->ntitle[l] && !(r->lang[l].title = tok_string(p, &ra->title[l])))
            goto oom;
        if (r->lang[l].title)
            r->title = r->lang[l].title;
        if (ra->nmessage[l])
            r->msg_lang = l;
        if (l != CB_LANG_EN && (ra->ntitle[l] || ra->nmessage[l]))
            r->tagged = 1;
    }
    if (!ra->nmatch)
        error_at(p, &ra->name, "E012", "add match \"city/{district}/KIND/{sensor}\"",
                 "rule '%s' has no 'match' clause", r->name);
    if (!ra->has_when)
        error_at(p, &ra->name, "E013", NULL, "rule '%s' has no 'when' clause", r->name);
    /* match patterns */
    r->pats = calloc(ra->nmatch ? (size_t)ra->nmatch : 1, sizeof *r->pats);
    if (!r->pats)
        goto oom;
    for (int i = 0; i < ra->nmatch; i++) {
        char *text = tok_string(p, &ra->match[i]);
        char err[160];
        size_t off = 0;
        if (!text)
            goto oom;
        struct cb_topic_pattern *tp = cb_topic_pattern_compile(text, strlen(text), err, sizeof err, &off);
        if (!tp) {
            rules__diag(p->diags, p->src, CB_DIAG_ERROR, "E016", ra->match[i].line,
                        ra->match[i].col + 1 + (int)off, 1, NULL, "bad topic pattern: %s", err);
        } else {
            r->pats[r->npats++] = tp;
        }
        free(text);
    }
    /* per labels */
    if (ra->nper) {
        r->per = calloc((size_t)ra->nper, sizeof *r->per);
        if (!r->per)
            goto oom;
        for (int i = 0; i < ra->nper; i++) {
            const struct rules__tok *t = &ra->per[i];
            if (!(r->per[r->nper++] = rules__strndup(p->src->text + t->off, t->len)))
                goto oom;
            if (!r->npats)
                continue;
            size_t nb = 0;
            for (size_t k = 0; k < r->npats; k++)
                nb += cb_topic_pattern_binds(r->pats[k], r->per[i]);
            if (nb == 0) {
                const char *labels[64];
                size_t nl = rule_labels(r, labels, 64);
                char hb[96];
                const char *hint;
                hint_for(hb, sizeof hb, p->src->text + t->off, t->len, labels, nl, &hint);
                error_at(p, t, "E008", hint, "label '%s' in 'per' is not bound by any match pattern",
                         r->per[i]);
            } else if (nb < r->npats) {
                rules__diag(p->diags, p->src, CB_DIAG_WARNING, "W001", t->line, t->col, (int)t->len,
                            "sensors of the other patterns get an empty value",
                            "label '%s' is not bound by every match pattern", r->per[i]);
            }
        }
    }
    p->group = r->nper > 0;
    /* valid ranges */
    if (ra->nvalid) {
        r->valid = calloc((size_t)ra->nvalid, sizeof *r->valid);
        if (!r->valid)
            goto oom;
        for (int i = 0; i < ra->nvalid; i++) {
            const struct valid_ast *v = &ra->valid[i];
            r->valid[i].lo = v->lo;
            r->valid[i].hi = v->hi;
            if (!(r->valid[i].metric = rules__strndup(p->src->text + v->metric.off, v->metric.len)))
                goto oom;
            r->nvalid++;
        }
    }
    /* expressions */
    if (ra->when)
        compile_code(p, ra->when, &r->when);
    if (ra->clear) {
        r->has_clear = 1;
        compile_code(p, ra->clear, &r->clear);
    }
    if (ra->nesc) {
        r->esc = calloc((size_t)ra->nesc, sizeof *r->esc);
        if (!r->esc)
            goto oom;
        for (int i = 0; i < ra->nesc; i++) {
            const struct esc_ast *e = &ra->esc[i];
            struct rules__escalation *x = &r->esc[r->nesc++];
            x->level = e->level;
            x->after = e->after;
            x->after_ms = e->after_ms;
            if (!e->after)
                compile_code(p, e->cond, &x->cond);
        }
    }
    p->used_series = r->nseries;
    p->used_wins = r->nwins;
    for (int l = 0; l < CB_LANGS; l++)
        if (ra->nmessage[l])
            compile_template(p, &ra->message[l], l);
    if (ra->nnotify) {
        r->notify = calloc((size_t)ra->nnotify, sizeof *r->notify);
        if (!r->notify)
            goto oom;
        for (int i = 0; i < ra->nnotify; i++) {
            const struct rules__tok *t = &ra->notify[i];
            char *n = t->kind == TK_STRING ? tok_string(p, t)
                                           : rules__strndup(p->src->text + t->off, t->len);
            if (!n)
                goto oom;
            r->notify[r->nnotify++] = n;
            check_channel(p, t, n);
        }
    }
    return;
oom:
    p->oom = 1;
}

/* 1 when the clause starting at keyword t is part of the rule's identity:
 * what its verdicts mean (rules.md: name, match, per, when, for, clear). */
static int is_identity_clause(struct parser *p, const struct rules__tok *t)
{
    return tok_is(p, t, "match") || tok_is(p, t, "per") || tok_is(p, t, "when") ||
           tok_is(p, t, "for") || tok_is(p, t, "clear");
}

/* Parses `rule NAME { clauses }` at p->cur, compiles it and appends it to the
 * ruleset when the file has no error so far (or to check it for more errors). */
static void parse_rule(struct parser *p)
{
    struct rule_ast *ra = calloc(1, sizeof *ra);
    if (!ra) {
        p->oom = 1;
        return;
    }
    ra->kw = p->cur;
    advance(p);
    if (p->cur.kind != TK_IDENT) {
        error_at(p, &p->cur, "E004", NULL, "expected a rule name after 'rule', found %s",
                 rules__tok_name(p->cur.kind));
        goto skip;
    }
    ra->name = p->cur;
    advance(p);
    if (p->cur.kind != TK_LBRACE) {
        error_at(p, &p->cur, "E004", NULL, "expected '{' after the rule name, found %s",
                 rules__tok_name(p->cur.kind));
        goto skip;
    }
    ra->lbrace = p->cur;
    advance(p);
    int closed = 0;
    while (p->cur.kind != TK_EOF && !p->oom) {
        if (p->cur.kind == TK_RBRACE) {
            closed = 1;
            break;
        }
        if (tok_is(p, &p->cur, "rule") && p->cur.bol) /* the next rule: this block never closed */
            break;
        if (!p->cur.bol) {
            error_at(p, &p->cur, "E004", "one clause per line", "unexpected %s after the clause",
                     rules__tok_name(p->cur.kind));
            sync_line(p);
            continue;
        }
        p->depth = p->paren = 0;
        uint32_t before = p->cur.off;
        int ident = is_identity_clause(p, &p->cur);
        if (parse_clause(p, ra) < 0) {
            if (p->cur.off != before &&
                (p->cur.bol || p->cur.kind == TK_RBRACE || p->cur.kind == TK_EOF))
                continue; /* the error was at the start of the next line */
            sync_line(p);
            continue;
        }
        if (ident && ra->nident < (int)(sizeof ra->ident / sizeof ra->ident[0])) {
            ra->ident[ra->nident].start = before;
            ra->ident[ra->nident++].end = p->cur.off;
        }
    }
    if (!closed) {
        error_at(p, &ra->lbrace, "E002", "add '}' at the end of the rule",
                 "unterminated block: rule '%.*s' has no closing '}'", TOKTEXT(p, ra->name));
    }
    size_t end = closed ? p->cur.off + 1 : p->cur.off;
    /* compile it (even after errors: more of them may be found) */
    if (rules__grow(&p->rs->rules, &p->rs->cap_rules, p->rs->nrules + 1, sizeof *p->rs->rules) < 0) {
        p->oom = 1;
        goto out;
    }
    p->r = &p->rs->rules[p->rs->nrules];
    memset(p->r, 0, sizeof *p->r);
    p->rs->nrules++;
    build_rule(p, ra, end);
    if (p->r->name) {
        uintptr_t prev = (uintptr_t)rules__map_get(&p->rs->names, p->r->name);
        if (prev) {
            const struct rules__rule *o = &p->rs->rules[prev - 1];
            char hb[300];
            snprintf(hb, sizeof hb, "first defined at %s:%d", o->file ? o->file : "?", o->line);
            error_at(p, &ra->name, "E011", hb, "duplicate rule name '%s'", p->r->name);
        } else if (rules__map_put(&p->rs->names, p->r->name, (void *)(uintptr_t)p->rs->nrules) < 0) {
            p->oom = 1;
        }
    }
    if (closed)
        advance(p);
out:
    free(ra);
    return;
skip:
    /* skip to the next `rule` at the start of a line */
    do
        advance(p);
    while (p->cur.kind != TK_EOF && !(p->cur.bol && tok_is(p, &p->cur, "rule")));
    free(ra);
}

/* Insertion sort by position: stable, and a file has few diagnostics. */
static void sort_diags(struct cb_diag *d, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        struct cb_diag t = d[i];
        size_t j = i;
        while (j > 0 && (d[j - 1].line > t.line || (d[j - 1].line == t.line && d[j - 1].col > t.col))) {
            d[j] = d[j - 1];
            j--;
        }
        d[j] = t;
    }
}

int rules__compile_into(struct cb_ruleset *rs, const struct rules__src *src, struct cb_diags *diags)
{
    size_t first = diags->n;
    struct parser p;
    memset(&p, 0, sizeof p);
    p.src = src;
    p.diags = diags;
    p.rs = rs;
    rules__lex_init(&p.lx, src->text, 0, src->len, 1, 1);
    advance(&p);
    while (p.cur.kind != TK_EOF && !p.oom) {
        if (tok_is(&p, &p.cur, "rule")) {
            parse_rule(&p);
            continue;
        }
        const char *hint = NULL;
        char hb[64];
        if (p.cur.kind == TK_IDENT &&
            rules__edit_distance(src->text + p.cur.off, p.cur.len, "rule", 4, 2) <= 2) {
            snprintf(hb, sizeof hb, "did you mean 'rule'?");
            hint = hb;
        }
        error_at(&p, &p.cur, "E004", hint, "expected 'rule', found %s", rules__tok_name(p.cur.kind));
        do
            advance(&p);
        while (p.cur.kind != TK_EOF && !(p.cur.bol && tok_is(&p, &p.cur, "rule")));
    }
    arena_free(&p.arena);
    if (diags->items && diags->n - first <= 2000)
        sort_diags(diags->items + first, diags->n - first);
    return p.oom ? -1 : 0;
}

/* ---- rulesets -------------------------------------------------------------------------- */

int rules__ruleset_finish(struct cb_ruleset *rs)
{
    rules__map_free(&rs->names);
    rs->index = cb_topic_index_new();
    if (!rs->index)
        return -1;
    rs->max_width_ms = 0;
    for (size_t i = 0; i < rs->nrules; i++) {
        const struct rules__rule *r = &rs->rules[i];
        for (size_t j = 0; j < r->npats; j++)
            if (cb_topic_index_add(rs->index, r->pats[j], (uint32_t)(i << 8 | j)) < 0)
                return -1;
        if (r->max_width_ms > rs->max_width_ms)
            rs->max_width_ms = r->max_width_ms;
    }
    return 0;
}

static struct cb_ruleset *ruleset_new(void)
{
    struct cb_ruleset *rs = calloc(1, sizeof *rs);
    if (rs)
        rs->refs = 1;
    return rs;
}

void cb_ruleset_release(struct cb_ruleset *rs)
{
    if (!rs || --rs->refs > 0)
        return;
    for (size_t i = 0; i < rs->nrules; i++)
        rules__rule_free(&rs->rules[i]);
    free(rs->rules);
    for (size_t i = 0; i < rs->nfiles; i++)
        free(rs->files[i]);
    free(rs->files);
    cb_topic_index_free(rs->index);
    rules__map_free(&rs->names);
    free(rs);
}

size_t cb_ruleset_count(const struct cb_ruleset *rs)
{
    return rs ? rs->nrules : 0;
}
size_t cb_ruleset_file_count(const struct cb_ruleset *rs)
{
    return rs ? rs->nfiles : 0;
}
const char *cb_ruleset_file(const struct cb_ruleset *rs, size_t i)
{
    return rs && i < rs->nfiles ? rs->files[i] : NULL;
}

static void oom_diag(struct cb_diags *diags, const char *name)
{
    struct rules__src s = {name, NULL, 0};
    rules__diag(diags, &s, CB_DIAG_ERROR, "E099", 0, 0, 1, NULL, "out of memory");
}

/* Finishes a ruleset: NULL (and frees it) when any error was recorded. */
static struct cb_ruleset *finish(struct cb_ruleset *rs, struct cb_diags *diags, size_t errors0,
                                 int oom)
{
    rs->opts = NULL; /* borrowed for the compilation only */
    if (!oom && diags->errors == errors0 && rules__ruleset_finish(rs) == 0)
        return rs;
    if (oom || diags->errors == errors0)
        oom_diag(diags, "<rules>");
    cb_ruleset_release(rs);
    return NULL;
}

struct cb_ruleset *cb_ruleset_compile_source_opts(const char *name, const char *src, size_t len,
                                                  const struct cb_rules_opts *opts,
                                                  struct cb_diags *diags)
{
    size_t errors0 = diags->errors;
    struct cb_ruleset *rs = ruleset_new();
    if (!rs) {
        oom_diag(diags, name);
        return NULL;
    }
    rs->opts = opts;
    struct rules__src s = {name, src, len};
    int oom = rules__compile_into(rs, &s, diags) < 0;
    return finish(rs, diags, errors0, oom);
}

/* Reads a whole file. Returns 0, or -1 with errno. */
static int read_file(const char *path, char **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (!f)
        return -1;
    for (;;) {
        if (rules__grow(&buf, &cap, n + 65536, 1) < 0) {
            errno = ENOMEM;
            goto fail;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n > (64u << 20)) {
            errno = EFBIG;
            goto fail;
        }
    }
    if (ferror(f))
        goto fail;
    fclose(f);
    *out = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return -1;
}

/* Appends path (a file, or every *.rules of a directory in name order) to
 * files. Errors (unreadable paths) go to diags. Returns 0 or -1 (OOM). */
static int expand_path(const char *path, char ***files, size_t *n, size_t *cap,
                       struct cb_diags *diags)
{
    struct stat st;
    struct rules__src s = {path, NULL, 0};
    if (stat(path, &st) < 0) {
        rules__diag(diags, &s, CB_DIAG_ERROR, "E024", 0, 0, 1, NULL, "cannot read: %s", strerror(errno));
        return 0;
    }
    if (!S_ISDIR(st.st_mode)) {
        if (rules__grow(files, cap, *n + 1, sizeof **files) < 0 || !((*files)[*n] = rules__strdup(path)))
            return -1;
        (*n)++;
        return 0;
    }
    DIR *d = opendir(path);
    if (!d) {
        rules__diag(diags, &s, CB_DIAG_ERROR, "E024", 0, 0, 1, NULL, "cannot read: %s", strerror(errno));
        return 0;
    }
    size_t first = *n;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 7 || strcmp(de->d_name + l - 6, ".rules") != 0 || de->d_name[0] == '.')
            continue;
        size_t pl = strlen(path);
        char *full = malloc(pl + l + 2);
        if (!full || rules__grow(files, cap, *n + 1, sizeof **files) < 0) {
            free(full);
            rc = -1;
            break;
        }
        snprintf(full, pl + l + 2, "%s%s%s", path, pl && path[pl - 1] == '/' ? "" : "/", de->d_name);
        (*files)[(*n)++] = full;
    }
    closedir(d);
    if (*n > first) /* an empty directory leaves *files NULL: qsort wants an array */
        qsort(*files + first, *n - first, sizeof **files, cmp_str);
    return rc;
}

struct cb_ruleset *cb_ruleset_compile_source(const char *name, const char *src, size_t len,
                                             struct cb_diags *diags)
{
    return cb_ruleset_compile_source_opts(name, src, len, NULL, diags);
}

struct cb_ruleset *cb_ruleset_compile_opts(const char *const *paths, size_t npaths,
                                           const struct cb_rules_opts *opts,
                                           struct cb_diags *diags)
{
    size_t errors0 = diags->errors;
    struct cb_ruleset *rs = ruleset_new();
    int oom = 0;
    if (!rs) {
        oom_diag(diags, "<rules>");
        return NULL;
    }
    rs->opts = opts;
    for (size_t i = 0; i < npaths && !oom; i++)
        if (expand_path(paths[i], &rs->files, &rs->nfiles, &rs->cap_files, diags) < 0)
            oom = 1;
    for (size_t i = 0; i < rs->nfiles && !oom; i++) {
        char *text = NULL;
        size_t len = 0;
        struct rules__src s = {rs->files[i], NULL, 0};
        if (read_file(rs->files[i], &text, &len) < 0) {
            if (errno == ENOMEM)
                oom = 1;
            else
                rules__diag(diags, &s, CB_DIAG_ERROR, "E024", 0, 0, 1, NULL, "cannot read: %s",
                            strerror(errno));
            continue;
        }
        s.text = text;
        s.len = len;
        if (rules__compile_into(rs, &s, diags) < 0)
            oom = 1;
        free(text);
    }
    return finish(rs, diags, errors0, oom);
}

struct cb_ruleset *cb_ruleset_compile(const char *const *paths, size_t npaths,
                                      struct cb_diags *diags)
{
    return cb_ruleset_compile_opts(paths, npaths, NULL, diags);
}
