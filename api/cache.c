/* Rendered answers of GET /api/alerts, kept per query string while the
 * provider's alerts_version stays the same.
 *
 * A dashboard wall and a few dozen laptops poll the same few URLs; between
 * two alert transitions every one of them gets the same bytes. So each entry
 * holds the body, its gzip (made once, sent to clients that accept gzip) and
 * a weak ETag built from the API's start time and the version, which lets a
 * client that already has the body get a 304. An entry is only used when the
 * version it was rendered at is the current one: the version changes with
 * every transition, acknowledgement and rule reload, so an answer is never
 * older than the last change. Loop thread only. */
#include "api/api_int.h"
#include "base/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define NENTRIES 16
#define MAX_QUERY 512
#define MIN_GZIP 256 /* smaller bodies are sent as they are */

struct entry {
    char *query; /* NULL: free slot */
    size_t qlen;
    uint64_t version;
    uint64_t used; /* for least-recently-used replacement */
    char *body, *gz;
    size_t len, gzlen;
    char etag[48];
};

struct api_cache {
    struct entry e[NENTRIES];
    uint64_t clock;
    uint64_t boot; /* distinguishes ETags across restarts (versions restart at 0) */
    uint64_t *m_hit, *m_miss, *m_304;
};

struct api_cache *api__cache_new(uint64_t boot)
{
    struct api_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->boot = boot;
    c->m_hit = cb_metrics_counter("citybrain_http_alerts_cache_total", "result=\"hit\"",
                                  "GET /api/alerts answers, by cache result");
    c->m_miss = cb_metrics_counter("citybrain_http_alerts_cache_total", "result=\"miss\"",
                                   "GET /api/alerts answers, by cache result");
    c->m_304 = cb_metrics_counter("citybrain_http_alerts_cache_total", "result=\"not_modified\"",
                                  "GET /api/alerts answers, by cache result");
    return c;
}

static void entry_clear(struct entry *e)
{
    free(e->query);
    free(e->body);
    free(e->gz);
    memset(e, 0, sizeof *e);
}

void api__cache_free(struct api_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < NENTRIES; i++)
        entry_clear(&c->e[i]);
    free(c);
}

/* gzip of src (RFC 1952 framing). Returns a malloc'ed buffer with *outlen,
 * or NULL (then the body is sent uncompressed). */
static char *gzip(const char *src, size_t len, size_t *outlen)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    uLong cap = deflateBound(&z, (uLong)len) + 32;
    char *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)out;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *outlen = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

/* 1 when the Accept-Encoding header lists gzip without q=0. */
static int accepts_gzip(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT_ENCODING, -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    for (size_t k = 0; k + 4 <= v.len; k++) {
        if (strncasecmp(v.base + k, "gzip", 4) != 0)
            continue;
        size_t j = k + 4;
        while (j < v.len && v.base[j] == ' ')
            j++;
        if (j < v.len && v.base[j] == ';') { /* a q value: refused only when zero */
            const char *q = memchr(v.base + j, '=', v.len - j);
            if (q && q + 1 < v.base + v.len && q[1] == '0') {
                int nonzero = 0;
                for (const char *p = q + 2; p < v.base + v.len && *p != ','; p++)
                    nonzero |= *p >= '1' && *p <= '9';
                if (!nonzero)
                    return 0;
            }
        }
        return 1;
    }
    return 0;
}

/* 1 when If-None-Match names etag (weak comparison, lists, or "*"). */
static int not_modified(h2o_req_t *req, const char *etag)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_IF_NONE_MATCH, -1);
    if (i < 0)
        return 0;
    h2o_iovec_t v = req->headers.entries[i].value;
    const char *opaque = etag + 2; /* without W/ */
    size_t olen = strlen(opaque);
    for (size_t k = 0; k < v.len;) {
        while (k < v.len && (v.base[k] == ' ' || v.base[k] == ','))
            k++;
        size_t s = k;
        while (k < v.len && v.base[k] != ',')
            k++;
        size_t e = k;
        while (e > s && v.base[e - 1] == ' ')
            e--;
        const char *t = v.base + s;
        size_t tl = e - s;
        if (tl == 1 && t[0] == '*')
            return 1;
        if (tl >= 2 && t[0] == 'W' && t[1] == '/') {
            t += 2;
            tl -= 2;
        }
        if (tl == olen && memcmp(t, opaque, olen) == 0)
            return 1;
    }
    return 0;
}

static void send_entry(struct cb_api *api, struct api_cache *c, h2o_req_t *req,
                       const struct entry *e)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ETAG, NULL, e->etag,
                   strlen(e->etag));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL,
                   H2O_STRLIT("Accept-Encoding"));
    /* Clients may keep the body, but must ask (with the ETag) each time. */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-cache"));
    api__cors(api, req);
    if (not_modified(req, e->etag)) {
        cb_counter_add(c->m_304, 1);
        api__count(api, 304);
        req->res.status = 304;
        req->res.reason = "Not Modified";
        h2o_send_inline(req, NULL, 0);
        return;
    }
    req->res.status = 200;
    req->res.reason = "OK";
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                   H2O_STRLIT("application/json"));
    api__count(api, 200);
    if (e->gz && accepts_gzip(req)) {
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_ENCODING, NULL,
                       H2O_STRLIT("gzip"));
        req->res.content_length = e->gzlen;
        /* h2o_send_inline copies: a later store may replace the entry */
        h2o_send_inline(req, e->gz, e->gzlen);
    } else {
        req->res.content_length = e->len;
        h2o_send_inline(req, e->body, e->len);
    }
}

/* Serves the cached answer for `query` at `version`, or returns 0. */
int api__cache_serve(struct cb_api *api, struct api_cache *c, h2o_req_t *req, const char *query,
                     size_t qlen, uint64_t version)
{
    for (int i = 0; i < NENTRIES; i++) {
        struct entry *e = &c->e[i];
        if (e->query && e->version == version && e->qlen == qlen &&
            memcmp(e->query, query, qlen) == 0) {
            e->used = ++c->clock;
            cb_counter_add(c->m_hit, 1);
            send_entry(api, c, req, e);
            return 1;
        }
    }
    return 0;
}

/* Stores a rendered 200 answer (body of len bytes, newline-terminated) for
 * `query` at `version`, replacing the same query's older entry or the least
 * recently used one, then sends it. When it cannot be stored it is sent as
 * it is. */
void api__cache_store_send(struct cb_api *api, struct api_cache *c, h2o_req_t *req,
                           const char *query, size_t qlen, uint64_t version, const char *body,
                           size_t len)
{
    cb_counter_add(c->m_miss, 1);
    struct entry *slot = NULL;
    if (qlen <= MAX_QUERY) {
        for (int i = 0; i < NENTRIES && !slot; i++)
            if (c->e[i].query && c->e[i].qlen == qlen && memcmp(c->e[i].query, query, qlen) == 0)
                slot = &c->e[i];
        for (int i = 0; i < NENTRIES && !slot; i++)
            if (!c->e[i].query)
                slot = &c->e[i];
        if (!slot) {
            slot = &c->e[0];
            for (int i = 1; i < NENTRIES; i++)
                if (c->e[i].used < slot->used)
                    slot = &c->e[i];
        }
    }
    struct entry n;
    memset(&n, 0, sizeof n);
    if (slot) {
        n.query = malloc(qlen + 1);
        n.body = malloc(len ? len : 1);
    }
    if (!n.query || !n.body) {
        free(n.query);
        free(n.body);
        api__send(api, req, 200, "application/json", body, len);
        return;
    }
    memcpy(n.query, query, qlen);
    n.query[qlen] = '\0';
    n.qlen = qlen;
    memcpy(n.body, body, len);
    n.len = len;
    n.version = version;
    n.used = ++c->clock;
    if (len >= MIN_GZIP)
        n.gz = gzip(body, len, &n.gzlen);
    snprintf(n.etag, sizeof n.etag, "W/\"%llx-%llx\"", (unsigned long long)c->boot,
             (unsigned long long)version);
    entry_clear(slot);
    *slot = n;
    send_entry(api, c, req, slot);
}
