/* Small utilities of the rules module: a string-keyed hash map, string copies,
 * array growth and a bounded edit distance for "did you mean" hints. */
#include "rules/rules_int.h"

#include <stdlib.h>
#include <string.h>

/* FNV-1a, 64 bit. */
uint64_t rules__hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static size_t slot_of(const struct rules__map *m, const char *key)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)rules__hash(key, strlen(key)) & mask;
    while (m->keys[i] && strcmp(m->keys[i], key) != 0)
        i = (i + 1) & mask;
    return i;
}

void *rules__map_get(const struct rules__map *m, const char *key)
{
    if (!m->cap)
        return NULL;
    size_t i = slot_of(m, key);
    return m->keys[i] ? m->vals[i] : NULL;
}

static int rehash(struct rules__map *m, size_t cap)
{
    const char **keys = calloc(cap, sizeof *keys);
    void **vals = calloc(cap, sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    struct rules__map nm = {keys, vals, cap, 0};
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i]) {
            size_t j = slot_of(&nm, m->keys[i]);
            nm.keys[j] = m->keys[i];
            nm.vals[j] = m->vals[i];
            nm.n++;
        }
    free(m->keys);
    free(m->vals);
    *m = nm;
    return 0;
}

int rules__map_put(struct rules__map *m, const char *key, void *val)
{
    if ((m->n + 1) * 2 > m->cap && rehash(m, m->cap ? m->cap * 2 : 16) < 0)
        return -1;
    size_t i = slot_of(m, key);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return 0;
}

/* Deletes with backward-shift so probe chains stay intact. */
void rules__map_del(struct rules__map *m, const char *key)
{
    if (!m->cap)
        return;
    size_t mask = m->cap - 1, i = slot_of(m, key);
    if (!m->keys[i])
        return;
    m->keys[i] = NULL;
    m->n--;
    for (size_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
        const char *k = m->keys[j];
        void *v = m->vals[j];
        m->keys[j] = NULL;
        size_t s = slot_of(m, k);
        m->keys[s] = k;
        m->vals[s] = v;
    }
}

void rules__map_free(struct rules__map *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

char *rules__strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *rules__strdup(const char *s)
{
    return s ? rules__strndup(s, strlen(s)) : NULL;
}

int rules__grow(void *arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 4;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*(void **)arr, nc * size);
    if (!p)
        return -1;
    *(void **)arr = p;
    *cap = nc;
    return 0;
}

int rules__edit_distance(const char *a, size_t alen, const char *b, size_t blen, int max)
{
    if (alen > 64 || blen > 64)
        return max + 1;
    int row[65];
    for (size_t j = 0; j <= blen; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= alen; i++) {
        int diag = row[0], best;
        row[0] = (int)i;
        best = row[0];
        for (size_t j = 1; j <= blen; j++) {
            int up = row[j];
            int cost = a[i - 1] == b[j - 1] ? 0 : 1;
            int v = diag + cost;
            if (row[j - 1] + 1 < v)
                v = row[j - 1] + 1;
            if (up + 1 < v)
                v = up + 1;
            row[j] = v;
            diag = up;
            if (v < best)
                best = v;
        }
        if (best > max)
            return max + 1;
    }
    return row[blen];
}
