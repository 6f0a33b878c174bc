/* Topic patterns of `match` clauses and an index over many of them.
 *
 * The index is a trie over topic levels: node 0 is the root; each node has
 * literal children (one hash table for the whole trie, keyed by parent node and
 * level text), at most one `+` child (also used by `{name}` levels, which
 * match the same topics), and the tags of patterns that end there or end with
 * `#` there. Matching walks the literal and the `+` branch of each level, so
 * the cost follows the topic's depth and the patterns that can match it. */
#include "rules/rules_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum lvl_kind { LV_LIT, LV_CAPTURE, LV_PLUS, LV_HASH };

struct level {
    enum lvl_kind kind;
    const char *text; /* LV_LIT: the literal (in p->buf), LV_CAPTURE: the label */
    size_t len;
};

struct cb_topic_pattern {
    char *src;          /* the pattern text */
    char *buf;          /* NUL-separated literals and label names */
    struct level *lv;
    size_t nlv;
    const char **labels;
    size_t nlabels;
};

static int ident_char(char c, int first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           (!first && c >= '0' && c <= '9');
}

void cb_topic_pattern_free(struct cb_topic_pattern *p)
{
    if (!p)
        return;
    free(p->src);
    free(p->buf);
    free(p->lv);
    free(p->labels);
    free(p);
}

struct cb_topic_pattern *cb_topic_pattern_compile(const char *text, size_t len, char *err,
                                                  size_t errlen, size_t *err_off)
{
    struct cb_topic_pattern *p = calloc(1, sizeof *p);
    size_t nlv = 1;
    if (err_off)
        *err_off = 0;
    if (!p)
        goto oom;
    for (size_t i = 0; i < len; i++)
        nlv += text[i] == '/';
    if (len == 0) {
        snprintf(err, errlen, "empty topic pattern");
        goto fail;
    }
    if (nlv > CB_TOPIC_MAX_LEVELS) {
        snprintf(err, errlen, "topic pattern has more than %d levels", CB_TOPIC_MAX_LEVELS);
        goto fail;
    }
    p->src = rules__strndup(text, len);
    p->buf = malloc(len + 1);
    p->lv = calloc(nlv, sizeof *p->lv);
    p->labels = calloc(nlv, sizeof *p->labels);
    if (!p->src || !p->buf || !p->lv || !p->labels)
        goto oom;
    memcpy(p->buf, text, len);
    p->buf[len] = 0;
    size_t start = 0;
    for (size_t l = 0; l < nlv; l++) {
        size_t end = start;
        while (end < len && text[end] != '/')
            end++;
        const char *s = text + start;
        size_t n = end - start;
        struct level *v = &p->lv[l];
        p->buf[end] = 0; /* levels become NUL-terminated strings inside buf */
        if (n == 1 && s[0] == '+') {
            v->kind = LV_PLUS;
        } else if (n == 1 && s[0] == '#') {
            if (l != nlv - 1) {
                snprintf(err, errlen, "'#' must be the last level of a topic pattern");
                if (err_off)
                    *err_off = start;
                goto fail;
            }
            v->kind = LV_HASH;
        } else if (n >= 2 && s[0] == '{' && s[n - 1] == '}') {
            if (n == 2 || !ident_char(s[1], 1)) {
                snprintf(err, errlen, "a label name must start with a letter or '_'");
                if (err_off)
                    *err_off = start;
                goto fail;
            }
            for (size_t i = 2; i + 1 < n; i++)
                if (!ident_char(s[i], 0)) {
                    snprintf(err, errlen, "bad character '%c' in label name", s[i]);
                    if (err_off)
                        *err_off = start + i;
                    goto fail;
                }
            p->buf[end - 1] = 0;
            v->kind = LV_CAPTURE;
            v->text = p->buf + start + 1;
            v->len = n - 2;
            for (size_t k = 0; k < p->nlabels; k++)
                if (strcmp(p->labels[k], v->text) == 0) {
                    snprintf(err, errlen, "label '%s' is bound twice", v->text);
                    if (err_off)
                        *err_off = start;
                    goto fail;
                }
            p->labels[p->nlabels++] = v->text;
        } else {
            for (size_t i = 0; i < n; i++)
                if (s[i] == '+' || s[i] == '#' || s[i] == '{' || s[i] == '}') {
                    snprintf(err, errlen,
                             "'%c' must stand alone in its level ('+', '#' or '{name}')", s[i]);
                    if (err_off)
                        *err_off = start + i;
                    goto fail;
                }
            v->kind = LV_LIT;
            v->text = p->buf + start;
            v->len = n;
        }
        start = end + 1;
    }
    p->nlv = nlv;
    return p;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    cb_topic_pattern_free(p);
    return NULL;
}

const char *cb_topic_pattern_text(const struct cb_topic_pattern *p)
{
    return p->src;
}

size_t cb_topic_pattern_label_count(const struct cb_topic_pattern *p)
{
    return p->nlabels;
}

const char *cb_topic_pattern_label(const struct cb_topic_pattern *p, size_t i)
{
    return i < p->nlabels ? p->labels[i] : NULL;
}

int cb_topic_pattern_binds(const struct cb_topic_pattern *p, const char *label)
{
    for (size_t i = 0; i < p->nlabels; i++)
        if (strcmp(p->labels[i], label) == 0)
            return 1;
    return 0;
}

int cb_topic_pattern_match(const struct cb_topic_pattern *p, const char *topic,
                           struct cb_topic_capture *caps, size_t maxcaps)
{
    const char *s = topic;
    size_t nc = 0;
    for (size_t l = 0; l < p->nlv; l++) {
        const struct level *v = &p->lv[l];
        if (v->kind == LV_HASH)
            return (int)nc;
        if (!s)
            return -1; /* the topic has fewer levels */
        const char *e = strchr(s, '/');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        if (v->kind == LV_LIT) {
            if (n != v->len || memcmp(s, v->text, n) != 0)
                return -1;
        } else if (v->kind == LV_CAPTURE && nc < maxcaps) {
            caps[nc].name = v->text;
            caps[nc].value = s;
            caps[nc].len = n;
            nc++;
        }
        s = e ? e + 1 : NULL;
    }
    return s ? -1 : (int)nc; /* more levels in the topic than in the pattern */
}

/* ---- the index ---------------------------------------------------------------- */

struct tags {
    uint32_t *v;
    size_t n, cap;
};

struct node {
    uint32_t plus;  /* child for `+` / `{name}`, 0 = none (the root is never a child) */
    struct tags end, hash;
};

struct edge {
    uint32_t parent, child; /* child 0: empty slot */
    const char *lit;        /* borrowed from the pattern */
    size_t len;
    uint64_t h;
};

struct cb_topic_index {
    struct node *nodes;
    size_t nnodes, capnodes;
    struct edge *edges;
    size_t nedges, capedges; /* capedges: power of two */
};

struct cb_topic_index *cb_topic_index_new(void)
{
    struct cb_topic_index *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    if (rules__grow(&x->nodes, &x->capnodes, 1, sizeof *x->nodes) < 0) {
        free(x);
        return NULL;
    }
    memset(&x->nodes[0], 0, sizeof x->nodes[0]);
    x->nnodes = 1;
    return x;
}

void cb_topic_index_free(struct cb_topic_index *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->nnodes; i++) {
        free(x->nodes[i].end.v);
        free(x->nodes[i].hash.v);
    }
    free(x->nodes);
    free(x->edges);
    free(x);
}

static uint64_t edge_hash(uint32_t parent, const char *s, size_t n)
{
    return rules__hash(s, n) ^ ((uint64_t)parent * 0x9E3779B97F4A7C15ull);
}

static uint32_t edge_find(const struct cb_topic_index *x, uint32_t parent, const char *s, size_t n,
                          uint64_t h)
{
    if (!x->capedges)
        return 0;
    size_t mask = x->capedges - 1;
    for (size_t i = (size_t)h & mask; x->edges[i].child; i = (i + 1) & mask) {
        const struct edge *e = &x->edges[i];
        if (e->h == h && e->parent == parent && e->len == n && memcmp(e->lit, s, n) == 0)
            return e->child;
    }
    return 0;
}

static int edges_grow(struct cb_topic_index *x)
{
    size_t cap = x->capedges ? x->capedges * 2 : 64;
    struct edge *ne = calloc(cap, sizeof *ne);
    if (!ne)
        return -1;
    for (size_t i = 0; i < x->capedges; i++)
        if (x->edges[i].child) {
            size_t j = (size_t)x->edges[i].h & (cap - 1);
            while (ne[j].child)
                j = (j + 1) & (cap - 1);
            ne[j] = x->edges[i];
        }
    free(x->edges);
    x->edges = ne;
    x->capedges = cap;
    return 0;
}

static int new_node(struct cb_topic_index *x, uint32_t *out)
{
    if (rules__grow(&x->nodes, &x->capnodes, x->nnodes + 1, sizeof *x->nodes) < 0)
        return -1;
    memset(&x->nodes[x->nnodes], 0, sizeof x->nodes[0]);
    *out = (uint32_t)x->nnodes++;
    return 0;
}

static int tags_add(struct tags *t, uint32_t tag)
{
    if (rules__grow(&t->v, &t->cap, t->n + 1, sizeof *t->v) < 0)
        return -1;
    t->v[t->n++] = tag;
    return 0;
}

int cb_topic_index_add(struct cb_topic_index *x, const struct cb_topic_pattern *p, uint32_t tag)
{
    uint32_t cur = 0;
    for (size_t l = 0; l < p->nlv; l++) {
        const struct level *v = &p->lv[l];
        if (v->kind == LV_HASH)
            return tags_add(&x->nodes[cur].hash, tag);
        uint32_t next;
        if (v->kind == LV_LIT) {
            uint64_t h = edge_hash(cur, v->text, v->len);
            next = edge_find(x, cur, v->text, v->len, h);
            if (!next) {
                if ((x->nedges + 1) * 2 > x->capedges && edges_grow(x) < 0)
                    return -1;
                if (new_node(x, &next) < 0)
                    return -1;
                size_t j = (size_t)h & (x->capedges - 1);
                while (x->edges[j].child)
                    j = (j + 1) & (x->capedges - 1);
                x->edges[j] = (struct edge){cur, next, v->text, v->len, h};
                x->nedges++;
            }
        } else {
            next = x->nodes[cur].plus;
            if (!next) {
                if (new_node(x, &next) < 0)
                    return -1;
                x->nodes[cur].plus = next;
            }
        }
        cur = next;
    }
    return tags_add(&x->nodes[cur].end, tag);
}

static size_t walk(const struct cb_topic_index *x, uint32_t node, const char *s,
                   void (*fn)(void *, uint32_t), void *ctx)
{
    const struct node *nd = &x->nodes[node];
    size_t hits = 0;
    for (size_t i = 0; i < nd->hash.n; i++, hits++)
        fn(ctx, nd->hash.v[i]);
    if (!s) { /* the topic ended at this node */
        for (size_t i = 0; i < nd->end.n; i++, hits++)
            fn(ctx, nd->end.v[i]);
        return hits;
    }
    const char *e = strchr(s, '/');
    size_t n = e ? (size_t)(e - s) : strlen(s);
    const char *rest = e ? e + 1 : NULL;
    uint32_t lit = edge_find(x, node, s, n, edge_hash(node, s, n));
    if (lit)
        hits += walk(x, lit, rest, fn, ctx);
    if (nd->plus)
        hits += walk(x, nd->plus, rest, fn, ctx);
    return hits;
}

size_t cb_topic_index_match(const struct cb_topic_index *x, const char *topic,
                            void (*fn)(void *ctx, uint32_t tag), void *ctx)
{
    /* The trie is at most CB_TOPIC_MAX_LEVELS deep, which bounds the recursion. */
    return walk(x, 0, topic, fn, ctx);
}
