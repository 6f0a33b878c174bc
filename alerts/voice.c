/* One voice: what a silent twin keeps so that the twin which gains the lease
 * announces what the other did not (docs/cluster.md "Takeover"). Pure
 * bookkeeping on the loop thread: no store, no network, no clock of its own
 * (times are given). */
#include "alerts/alerts_int.h"

#include <stdlib.h>
#include <string.h>

void alerts__voice_key(const char *id, const char *state, const char *severity,
                       struct cb_strbuf *out)
{
    cb_strbuf_printf(out, "%s\x1f%s\x1f%s", id, state, severity);
}

static int64_t distance(int64_t a, int64_t b) { return a > b ? a - b : b - a; }

static void unlink_deferred(struct alerts__voice *v, struct alerts__deferred *d)
{
    if (d->prev)
        d->prev->next = d->next;
    else
        v->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    else
        v->tail = d->prev;
    d->prev = d->next = NULL;
    v->ndeferred--;
}

void alerts__voice_deferred_free(struct alerts__deferred *d)
{
    if (!d)
        return;
    free(d->key);
    free(d->feed);
    alerts__tcopy_free(d->c);
    free(d);
}

int alerts__voice_heard(struct alerts__voice *v, const char *key, int64_t since, int64_t now)
{
    v->heard_total++;
    struct alerts__heard *h = alerts__map_get(&v->heard, key);
    if (!h) {
        if (!(h = calloc(1, sizeof *h)))
            return -1;
        if (alerts__map_put(&v->heard, key, h)) {
            free(h);
            return -1;
        }
    }
    struct alerts__deferred *d = v->head;
    while (d && (strcmp(d->key, key) || distance(d->since, since) > v->tolerance_ms))
        d = d->next;
    unsigned i = h->n++ % ALERTS__HEARD_RING;
    h->e[i].since = since;
    h->e[i].at = now;
    h->e[i].used = d != NULL;
    if (!d)
        return 0;
    unlink_deferred(v, d);
    alerts__voice_deferred_free(d);
    return 1;
}

int alerts__voice_defer(struct alerts__voice *v, const char *key, int64_t since, int64_t now,
                        char *feed, struct alerts__tcopy *c)
{
    struct alerts__heard *h = alerts__map_get(&v->heard, key);
    unsigned n = h ? (h->n < ALERTS__HEARD_RING ? h->n : ALERTS__HEARD_RING) : 0;
    for (unsigned i = 0; i < n; i++) {
        if (!h->e[i].used && distance(h->e[i].since, since) <= v->tolerance_ms) {
            h->e[i].used = 1;
            free(feed);
            alerts__tcopy_free(c);
            return 0;
        }
    }
    struct alerts__deferred *d = calloc(1, sizeof *d);
    if (!d || !(d->key = strdup(key))) {
        free(d);
        free(feed);
        alerts__tcopy_free(c);
        return -1;
    }
    d->since = since;
    d->kept_at = now;
    d->feed = feed;
    d->c = c;
    d->prev = v->tail;
    if (v->tail)
        v->tail->next = d;
    else
        v->head = d;
    v->tail = d;
    v->ndeferred++;
    if (v->max_deferred && v->ndeferred > v->max_deferred) {
        v->dropped++;
        alerts__voice_deferred_free(alerts__voice_pop(v));
    }
    return 1;
}

/* "key 0x1f since": an announcement exactly as it will come back. */
static void said_key(const char *key, int64_t since, struct cb_strbuf *out)
{
    cb_strbuf_printf(out, "%s\x1f%lld", key, (long long)since);
}

int alerts__voice_said(struct alerts__voice *v, const char *key, int64_t since, int64_t now)
{
    struct cb_strbuf k;
    cb_strbuf_init(&k);
    said_key(key, since, &k);
    int64_t *at = k.oom ? NULL : alerts__map_get(&v->said, k.data);
    int rc = -1;
    if (at || (!k.oom && (at = malloc(sizeof *at)) && alerts__map_put(&v->said, k.data, at) == 0)) {
        *at = now;
        rc = 0;
    } else if (at) {
        free(at);
    }
    cb_strbuf_free(&k);
    return rc;
}

int alerts__voice_echo(struct alerts__voice *v, const char *key, int64_t since)
{
    struct cb_strbuf k;
    cb_strbuf_init(&k);
    said_key(key, since, &k);
    int64_t *at = k.oom ? NULL : alerts__map_del(&v->said, k.data);
    cb_strbuf_free(&k);
    free(at);
    return at != NULL;
}

struct alerts__deferred *alerts__voice_pop(struct alerts__voice *v)
{
    struct alerts__deferred *d = v->head;
    if (d)
        unlink_deferred(v, d);
    return d;
}

static int said_before(void *ctx, void *value)
{
    int64_t *at = value;
    if (*at >= *(const int64_t *)ctx)
        return 0;
    free(at);
    return 1;
}

static int heard_before(void *ctx, void *value)
{
    const struct alerts__heard *h = value;
    unsigned n = h->n < ALERTS__HEARD_RING ? h->n : ALERTS__HEARD_RING;
    for (unsigned i = 0; i < n; i++)
        if (h->e[i].at >= *(const int64_t *)ctx)
            return 0;
    free(value);
    return 1;
}

void alerts__voice_forget(struct alerts__voice *v, int64_t before)
{
    alerts__map_sweep(&v->heard, heard_before, &before);
    alerts__map_sweep(&v->said, said_before, &before);
    while (v->head && v->head->kept_at < before) {
        v->dropped++;
        alerts__voice_deferred_free(alerts__voice_pop(v));
    }
}

void alerts__voice_free(struct alerts__voice *v)
{
    struct alerts__deferred *d;
    while ((d = alerts__voice_pop(v)))
        alerts__voice_deferred_free(d);
    alerts__map_clear(&v->heard, free);
    alerts__map_clear(&v->said, free);
}
