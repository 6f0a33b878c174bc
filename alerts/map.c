/* The small hash map, transition copies and JSON list framing of alerts/
 * (alerts_int.h). */
#include "alerts/alerts_int.h"

#include <stdlib.h>
#include <string.h>

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

void *alerts__map_get(const struct alerts__map *m, const char *key)
{
    if (!m->nb)
        return NULL;
    for (struct alerts__map_entry *e = m->b[hash(key) % m->nb]; e; e = e->next)
        if (!strcmp(e->key, key))
            return e->value;
    return NULL;
}

static int grow(struct alerts__map *m)
{
    size_t nb = m->nb ? m->nb * 2 : 64;
    struct alerts__map_entry **b = calloc(nb, sizeof *b);
    if (!b)
        return -1;
    for (size_t i = 0; i < m->nb; i++) {
        for (struct alerts__map_entry *e = m->b[i], *next; e; e = next) {
            next = e->next;
            size_t h = hash(e->key) % nb;
            e->next = b[h];
            b[h] = e;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return 0;
}

int alerts__map_put(struct alerts__map *m, const char *key, void *value)
{
    if (m->nb) {
        for (struct alerts__map_entry *e = m->b[hash(key) % m->nb]; e; e = e->next) {
            if (!strcmp(e->key, key)) {
                e->value = value;
                return 0;
            }
        }
    }
    if (m->n + 1 > m->nb && grow(m))
        return -1;
    struct alerts__map_entry *e = malloc(sizeof *e);
    char *k = strdup(key);
    if (!e || !k) {
        free(e);
        free(k);
        return -1;
    }
    size_t h = hash(key) % m->nb;
    e->key = k;
    e->value = value;
    e->next = m->b[h];
    m->b[h] = e;
    m->n++;
    return 0;
}

void *alerts__map_del(struct alerts__map *m, const char *key)
{
    if (!m->nb)
        return NULL;
    for (struct alerts__map_entry **p = &m->b[hash(key) % m->nb]; *p; p = &(*p)->next) {
        if (!strcmp((*p)->key, key)) {
            struct alerts__map_entry *e = *p;
            void *v = e->value;
            *p = e->next;
            free(e->key);
            free(e);
            m->n--;
            return v;
        }
    }
    return NULL;
}

void alerts__map_sweep(struct alerts__map *m, int (*fn)(void *ctx, void *value), void *ctx)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (struct alerts__map_entry **p = &m->b[i]; *p;) {
            struct alerts__map_entry *e = *p;
            if (fn(ctx, e->value)) {
                *p = e->next;
                free(e->key);
                free(e);
                m->n--;
            } else {
                p = &e->next;
            }
        }
    }
}

void alerts__map_clear(struct alerts__map *m, void (*fn)(void *value))
{
    for (size_t i = 0; i < m->nb; i++) {
        for (struct alerts__map_entry *e = m->b[i], *next; e; e = next) {
            next = e->next;
            if (fn)
                fn(e->value);
            free(e->key);
            free(e);
        }
    }
    free(m->b);
    memset(m, 0, sizeof *m);
}

static char *dup0(const char *s, int *bad)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *bad = 1;
    return d;
}

struct alerts__tcopy *alerts__tcopy_new(const struct cb_transition *t, int64_t seq,
                                        const char *json)
{
    struct alerts__tcopy *c = calloc(1, sizeof *c);
    int bad = 0;
    if (!c)
        return NULL;
    c->t = *t;
    c->seq = seq;
    /* not copied, so not kept: they would dangle once t is gone */
    c->t.reason = c->t.closed_by = c->t.close_note = c->t.rule_key = NULL;
    c->t.id = dup0(t->id, &bad);
    c->t.rule = dup0(t->rule, &bad);
    c->t.message = dup0(t->message, &bad);
    c->t.title = dup0(t->title, &bad);
    c->t.acked_by = dup0(t->acked_by, &bad);
    c->t.ack_note = dup0(t->ack_note, &bad);
    for (int l = 0; l < CB_LANGS; l++) {
        c->t.titles[l] = dup0(t->titles[l], &bad);
        c->t.messages[l] = dup0(t->messages[l], &bad);
    }
    c->json = dup0(json, &bad);
    c->labels = calloc(t->nlabels ? t->nlabels : 1, sizeof *c->labels);
    c->notify = calloc(t->nnotify ? t->nnotify : 1, sizeof *c->notify);
    c->t.nlabels = 0;
    c->t.nnotify = 0;
    c->t.labels = c->labels;
    c->t.notify = (const char *const *)c->notify;
    if (!c->labels || !c->notify)
        goto fail;
    for (size_t i = 0; i < t->nlabels; i++, c->t.nlabels++) {
        c->labels[i].name = dup0(t->labels[i].name, &bad);
        c->labels[i].value = dup0(t->labels[i].value, &bad);
    }
    for (size_t i = 0; i < t->nnotify; i++, c->t.nnotify++)
        c->notify[i] = dup0(t->notify[i], &bad);
    if (bad)
        goto fail;
    return c;
fail:
    alerts__tcopy_free(c);
    return NULL;
}

void alerts__tcopy_free(struct alerts__tcopy *c)
{
    if (!c)
        return;
    free((char *)c->t.id);
    free((char *)c->t.rule);
    free((char *)c->t.message);
    free((char *)c->t.title);
    free((char *)c->t.acked_by);
    free((char *)c->t.ack_note);
    for (int l = 0; l < CB_LANGS; l++) {
        free((char *)c->t.titles[l]);
        free((char *)c->t.messages[l]);
    }
    free(c->json);
    for (size_t i = 0; c->labels && i < c->t.nlabels; i++) {
        free((char *)c->labels[i].name);
        free((char *)c->labels[i].value);
    }
    free(c->labels);
    for (size_t i = 0; c->notify && i < c->t.nnotify; i++)
        free(c->notify[i]);
    free(c->notify);
    free(c);
}

size_t alerts__list_begin(struct cb_strbuf *out, const char *key)
{
    size_t mark = out->len;
    cb_strbuf_printf(out, "{\"%s\":[", key);
    return mark;
}

int alerts__list_end(struct cb_strbuf *out, size_t mark, const char *key, int rc)
{
    if (rc) {
        cb_strbuf_truncate(out, mark);
        cb_strbuf_printf(out, "{\"%s\":[", key);
    }
    cb_strbuf_puts(out, "]}");
    return rc;
}
