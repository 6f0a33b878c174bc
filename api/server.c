/* The HTTP server: h2o's libuv binding on the daemon's loop.
 *
 * One uv_tcp_t listener; each accepted connection becomes an h2o socket
 * handed to h2o_accept, which speaks HTTP/1.1, or with http.tls_cert TLS
 * (OpenSSL) and then HTTP/2 or HTTP/1.1 as ALPN settles; the certificate is
 * read again on SIGHUP (cb_api_tls_reload). One h2o
 * handler at "/" routes everything (routes.c). Limits: h2o's request timeout
 * is the header timeout (it runs from the moment the server waits for a
 * request until the request is read whole, and is not reset by each byte, so
 * a client dribbling headers is closed); the body limit is h2o's
 * max_request_entity_size; connections beyond http.max_connections are
 * closed at accept.
 *
 * Every error is JSON, h2o's own included (see "h2o's own errors"): a
 * filter rewrites the plain-text errors h2o makes through its error helper
 * (413, 400 for a broken body, 417), and the fixed 400 h2o writes straight to
 * the socket for a request head it cannot parse is swapped at the write. */
#include "api/api_int.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"

#include <dlfcn.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <limits.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct api_handler {
    h2o_handler_t super;
    struct cb_api *api;
};

/* ---- responses ------------------------------------------------------------- */

void api__count(struct cb_api *api, int status)
{
    int cls = status / 100;
    if (cls >= 1 && cls <= 5)
        cb_counter_add(api->m_req[cls], 1);
}

void api__cors(struct cb_api *api, h2o_req_t *req)
{
    const char *origin = api->cfg->http_cors_origin;
    if (origin && *origin)
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
                       origin, strlen(origin));
}

void api__send(struct cb_api *api, h2o_req_t *req, int status, const char *ctype,
               const char *body, size_t len)
{
    static const char *const reasons[] = {
        [200] = "OK", [201] = "Created", [204] = "No Content", [400] = "Bad Request",
        [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found",
        [405] = "Method Not Allowed", [409] = "Conflict", [413] = "Payload Too Large",
        [422] = "Unprocessable Entity", [431] = "Request Header Fields Too Large",
        [500] = "Internal Server Error", [501] = "Not Implemented", [503] = "Service Unavailable",
    };
    req->res.status = status;
    req->res.reason = status > 0 && status < (int)(sizeof reasons / sizeof reasons[0]) &&
                              reasons[status]
                          ? reasons[status]
                          : "Unknown";
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, ctype,
                   strlen(ctype));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
                   H2O_STRLIT("no-store"));
    api__cors(api, req);
    api__count(api, status);
    h2o_send_inline(req, body, len);
}

void api__error(struct cb_api *api, h2o_req_t *req, int status, const char *msg)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_strbuf_puts(&b, "{\"error\":");
    cb_strbuf_json_string(&b, msg, strlen(msg));
    cb_strbuf_puts(&b, "}\n");
    if (b.oom)
        api__send(api, req, 500, "application/json", H2O_STRLIT("{\"error\":\"out of memory\"}\n"));
    else
        api__send(api, req, status, "application/json", b.data, b.len);
    cb_strbuf_free(&b);
}

void api__answer(struct cb_api *api, h2o_req_t *req, int status, struct cb_strbuf *out)
{
    if (out->oom) {
        api__error(api, req, 500, "out of memory");
        return;
    }
    if (status >= 400) {
        api__error(api, req, status, out->len ? out->data : "error");
        return;
    }
    if (out->len == 0 || out->data[out->len - 1] != '\n')
        cb_strbuf_putc(out, '\n');
    api__send(api, req, status, "application/json", out->data ? out->data : "", out->len);
}

/* ---- h2o's own errors ------------------------------------------------------------ *
 *
 * h2o 2.2 answers some requests before our handler sees them, in plain text:
 * h2o_send_error_generic (lib/core/request.c) for a body over
 * max_request_entity_size (413), a broken chunked body or Content-Length
 * (400) and an unknown Expect (417), bound to the "/" path or, before routing,
 * to the host's fallback path; and send_bad_request (lib/http1.c), a fixed
 * buffer written straight to the socket, for a request head it cannot parse:
 * malformed, more than H2O_MAX_HEADERS header fields, or longer than
 * H2O_MAX_REQLEN. */

/* The JSON wrapper around h2o's error text: {"error":"<text>"} and a newline. */
static const char json_open[] = "{\"error\":\"";
static const char json_close[] = "\"}\n";

struct json_error_ostream {
    h2o_ostream_t super;
    int opened; /* json_open went out */
};

/* Passes h2o's error text on inside the JSON wrapper. Every byte that would
 * need escaping (quote, backslash, control) becomes a space, so the length
 * announced in json_errors_setup holds. */
static void json_error_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *inbufs,
                            size_t inbufcnt, h2o_send_state_t state)
{
    struct json_error_ostream *o = (struct json_error_ostream *)self;
    int final = !h2o_send_state_is_in_progress(state);
    h2o_iovec_t *bufs = h2o_mem_alloc_pool(&req->pool, sizeof *bufs * (inbufcnt + 2));
    size_t n = 0;
    if (!o->opened) {
        bufs[n++] = h2o_iovec_init(json_open, sizeof json_open - 1);
        o->opened = 1;
    }
    for (size_t i = 0; i < inbufcnt; i++) {
        char *copy = h2o_mem_alloc_pool(&req->pool, inbufs[i].len + 1);
        for (size_t k = 0; k < inbufs[i].len; k++) {
            unsigned char c = (unsigned char)inbufs[i].base[k];
            copy[k] = c < 0x20 || c == '"' || c == '\\' || c == 0x7f ? ' ' : (char)c;
        }
        bufs[n++] = h2o_iovec_init(copy, inbufs[i].len);
    }
    if (final)
        bufs[n++] = h2o_iovec_init(json_close, sizeof json_close - 1);
    h2o_ostream_send_next(self, req, bufs, n, state);
}

static int is_json(const h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
    if (i < 0)
        return 0;
    const h2o_iovec_t *v = &req->res.headers.entries[i].value;
    return v->len >= 16 && strncmp(v->base, "application/json", 16) == 0;
}

/* The filter's hook (every response of the paths it is registered on): an
 * error that is not JSON gets the JSON content type, its length grows by the
 * wrapper, and json_error_send goes in front of the next stream. HEAD
 * answers carry no body and keep theirs. */
static void json_errors_setup(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    (void)self;
    if (req->res.status >= 400 && !is_json(req)) {
        ssize_t i = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
        h2o_iovec_t json = h2o_iovec_init(H2O_STRLIT("application/json"));
        if (i >= 0)
            req->res.headers.entries[i].value = json;
        else
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
                           json.base, json.len);
        if (req->res.content_length != SIZE_MAX)
            req->res.content_length += sizeof json_open - 1 + sizeof json_close - 1;
        if (!h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD"))) {
            struct json_error_ostream *o =
                (struct json_error_ostream *)h2o_add_ostream(req, sizeof *o, slot);
            o->super.do_send = json_error_send;
            o->opened = 0;
            slot = &o->super.next;
        }
    }
    h2o_setup_next_ostream(req, slot);
}

/* h2o's fixed answer to an unparsable request head (lib/http1.c,
 * send_bad_request), byte for byte, and ours in its place. */
static const char h2o_bad_request[] = "HTTP/1.1 400 Bad Request\r\n"
                                      "Content-Type: text/plain; charset=utf-8\r\n"
                                      "Connection: close\r\n"
                                      "Content-Length: 11\r\n"
                                      "\r\n"
                                      "Bad Request";
#define BAD_REQUEST_JSON                                                                       \
    "{\"error\":\"bad request: the request line or headers are malformed, longer than "         \
    "417792 bytes or more than 100 fields\"}\n"
static const char json_bad_request[] = "HTTP/1.1 400 Bad Request\r\n"
                                       "Content-Type: application/json\r\n"
                                       "Cache-Control: no-store\r\n"
                                       "Connection: close\r\n"
                                       "Content-Length: %zu\r\n"
                                       "\r\n"
                                       "%s";
static char bad_request_answer[512];
static size_t bad_request_len;

typedef void (*socket_write_fn)(h2o_socket_t *, h2o_iovec_t *, size_t, h2o_socket_cb);
static socket_write_fn real_socket_write;

/* Finds libh2o's h2o_socket_write behind ours and formats the JSON 400 (at
 * start, on the loop thread, before any connection). Returns 0 or -1. */
static int json_bad_request_init(void)
{
    if (real_socket_write)
        return 0;
    bad_request_len = (size_t)snprintf(bad_request_answer, sizeof bad_request_answer,
                                       json_bad_request, sizeof BAD_REQUEST_JSON - 1,
                                       BAD_REQUEST_JSON);
    real_socket_write = (socket_write_fn)dlsym(RTLD_NEXT, "h2o_socket_write");
    return real_socket_write ? 0 : -1;
}

/* This definition takes the place of libh2o's h2o_socket_write: the
 * executable's symbol comes first in the dynamic linker's search, for
 * libh2o's own calls too (they go through its PLT). Every write goes to the
 * library's function unchanged, except h2o's fixed plain-text 400, which
 * becomes the JSON one. The buffers must stay valid until cb: both are
 * static. */
void h2o_socket_write(h2o_socket_t *sock, h2o_iovec_t *bufs, size_t bufcnt, h2o_socket_cb cb)
{
    static h2o_iovec_t json;
    if (bufcnt == 1 && bufs[0].len == sizeof h2o_bad_request - 1 &&
        memcmp(bufs[0].base, h2o_bad_request, bufs[0].len) == 0) {
        json = h2o_iovec_init(bad_request_answer, bad_request_len);
        bufs = &json;
    }
    if (!real_socket_write && json_bad_request_init())
        abort(); /* libh2o without h2o_socket_write: cannot be */
    real_socket_write(sock, bufs, bufcnt, cb);
}

/* ---- connections -------------------------------------------------------------- */

/* h2o disposed of the socket: the connection is over (the handle itself is
 * still closing; free_conn frees it). */
static void on_conn_close(void *data)
{
    struct api_conn *c = data;
    struct cb_api *api = c->api;
    if (c->prev)
        c->prev->next = c->next;
    else
        api->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    api->nconns--;
    cb_gauge_set(api->m_conns, (int64_t)api->nconns);
}

static void free_conn(uv_handle_t *h) { free(h); /* the handle is the struct's first member */ }

/* A new connection: refused (closed at once) beyond http.max_connections or
 * while closing, else handed to h2o. */
static void on_accept(uv_stream_t *listener, int status)
{
    struct cb_api *api = listener->data;
    if (status != 0)
        return;
    struct api_conn *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->api = api;
    uv_tcp_init(listener->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, free_conn);
        return;
    }
    if (api->closing || api->nconns >= (size_t)api->cfg->http_max_connections) {
        cb_counter_add(api->m_conn_refused, 1);
        uv_close((uv_handle_t *)&c->tcp, free_conn);
        return;
    }
    h2o_socket_t *sock = h2o_uv_socket_create((uv_stream_t *)&c->tcp, free_conn);
    if (!sock) {
        uv_close((uv_handle_t *)&c->tcp, free_conn);
        return;
    }
    c->next = api->conns;
    if (api->conns)
        api->conns->prev = c;
    api->conns = c;
    api->nconns++;
    cb_gauge_set(api->m_conns, (int64_t)api->nconns);
    sock->on_close.cb = on_conn_close;
    sock->on_close.data = c;
    h2o_accept(&api->accept_ctx, sock);
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
    struct api_handler *h = (struct api_handler *)self;
    return api__on_req(h->api, req);
}

/* ---- TLS ------------------------------------------------------------------------- */

/* Appends OpenSSL's queued errors (the last one, which names the cause) to
 * err after its text, and clears the queue. */
static void ssl_reason(char *err, size_t errlen)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    size_t n = strlen(err);
    if (last && n + 3 < errlen) {
        snprintf(err + n, errlen - n, ": ");
        ERR_error_string_n(last, err + n + 2, errlen - n - 2);
    }
}

/* A server TLS context of http.tls_cert and http.tls_key: TLS 1.2 or later,
 * ALPN offering h2 then http/1.1. Returns it, or NULL with err ("http.tls_cert
 * 'PATH': <OpenSSL's reason>"). The caller owns it (SSL_CTX_free). */
static SSL_CTX *tls_context(const struct cb_config *cfg, char *err, size_t errlen)
{
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->http_tls_cert) != 1) {
        snprintf(err, errlen, "http.tls_cert '%s'", cfg->http_tls_cert);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->http_tls_key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "http.tls_key '%s'", cfg->http_tls_key);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "http.tls_key '%s' is not the key of http.tls_cert '%s'",
                 cfg->http_tls_key, cfg->http_tls_cert);
        goto fail;
    }
    h2o_ssl_register_alpn_protocols(ctx, h2o_http2_alpn_protocols);
    return ctx;

fail:
    ssl_reason(err, errlen);
    SSL_CTX_free(ctx);
    return NULL;
}

int cb_api_check_tls(const struct cb_config *cfg, char *err, size_t errlen)
{
    if (!*cfg->http_tls_cert)
        return 0;
    SSL_CTX *ctx = tls_context(cfg, err, errlen);
    SSL_CTX_free(ctx);
    return ctx ? 0 : -1;
}

int cb_api_tls_reload(struct cb_api *api, char *err, size_t errlen)
{
    if (!api || !api->accept_ctx.ssl_ctx)
        return 0;
    SSL_CTX *ctx = tls_context(api->cfg, err, errlen);
    if (!ctx)
        return -1;
    /* A connection's SSL holds a reference to the context it began with:
     * those finish on the old certificate, new ones get this one. */
    SSL_CTX_free(api->accept_ctx.ssl_ctx);
    api->accept_ctx.ssl_ctx = ctx;
    return 1;
}

/* ---- start and close ----------------------------------------------------------- */

int cb_api_enabled(const struct cb_config *cfg)
{
    return cfg->http_listen && *cfg->http_listen && strcmp(cfg->http_listen, "off") != 0;
}

int cb_api_port(const struct cb_api *api) { return api->port; }

/* Splits "ADDR:PORT" ("[::1]:8080" for IPv6) into a sockaddr. */
static int parse_listen(const char *s, struct sockaddr_storage *ss)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -1;
    char host[256];
    size_t hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
        s++;
        hl -= 2;
    }
    if (hl >= sizeof host)
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535 || end == colon + 1)
        return -1;
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -1;
}

static void register_metrics(struct cb_api *api)
{
    static const char *const cls[6] = {NULL, "code=\"1xx\"", "code=\"2xx\"", "code=\"3xx\"",
                                       "code=\"4xx\"", "code=\"5xx\""};
    for (int i = 1; i < 6; i++)
        api->m_req[i] = cb_metrics_counter("citybrain_http_requests_total", cls[i],
                                           "HTTP responses, by status class");
    api->m_conn_refused = cb_metrics_counter("citybrain_http_connections_refused_total", "",
                                             "connections closed at accept (over the cap)");
    api->m_conns = cb_metrics_gauge("citybrain_http_connections", "", "open HTTP connections");
    api->m_sse = cb_metrics_gauge("citybrain_http_event_clients", "",
                                  "clients connected to /api/events");
}

static char *resolve_dashboard(const struct cb_config *cfg)
{
    char buf[PATH_MAX];
    const char *dir = cfg->http_dashboard_dir;
    if (!dir || !*dir) {
        snprintf(buf, sizeof buf, "%s/api/dashboard", CB_SOURCE_DIR);
        dir = buf;
    }
    char *real = realpath(dir, NULL);
    if (!real)
        cb_warn(API_MOD, "dashboard folder '%s' not found: / answers 404", dir);
    return real;
}

/* http.city_map: "off" is none; "" is the simulator's city shipped in etc/
 * (none, quietly, when it is not there); else the file given. */
static char *resolve_city_map(const struct cb_config *cfg)
{
    char buf[PATH_MAX];
    const char *path = cfg->http_city_map;
    if (path && !strcmp(path, "off"))
        return NULL;
    if (!path || !*path) {
        snprintf(buf, sizeof buf, "%s/etc/city.geojson", CB_SOURCE_DIR);
        if (access(buf, R_OK) != 0)
            return NULL;
        path = buf;
    }
    char *real = realpath(path, NULL);
    if (!real)
        cb_warn(API_MOD, "city map '%s' not found: /api/city answers 404", path);
    return real;
}

struct cb_api *cb_api_start(uv_loop_t *loop, const struct cb_config *cfg,
                            const struct cb_api_provider *provider, char *err, size_t errlen)
{
    struct sockaddr_storage addr;
    struct cb_api *api = NULL;
    int rc;

    if (parse_listen(cfg->http_listen, &addr)) {
        snprintf(err, errlen, "http.listen '%s' is not ADDRESS:PORT", cfg->http_listen);
        return NULL;
    }
    if (json_bad_request_init()) {
        snprintf(err, errlen, "cannot find h2o_socket_write in libh2o: %s", dlerror());
        return NULL;
    }
    api = calloc(1, sizeof *api);
    if (!api) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (api__scopes_parse(cfg, &api->scopes, &api->nscopes, err, errlen)) {
        free(api);
        return NULL;
    }
    /* Before any handle: failing here frees all there is. */
    if (*cfg->http_tls_cert && !(api->accept_ctx.ssl_ctx = tls_context(cfg, err, errlen))) {
        api__scopes_free(api->scopes, api->nscopes);
        free(api);
        return NULL;
    }
    api->loop = loop;
    api->cfg = cfg;
    api->prov = *provider;
    uv_mutex_init(&api->readers_lock);
    register_metrics(api);
    api->dashboard_dir = resolve_dashboard(cfg);
    api->city_map = resolve_city_map(cfg);

    h2o_config_init(&api->h2o_config);
    api->h2o_config.server_name = h2o_iovec_init(H2O_STRLIT("citybrain"));
    api->h2o_config.max_request_entity_size = (size_t)cfg->http_max_body;
    /* h2o 2.2 has one timer for "waiting for a request": the header timeout
     * bounds slow clients and keep-alive idleness alike (the shorter wins). */
    int64_t to = cfg->http_header_timeout_ms < cfg->http_idle_timeout_ms
                     ? cfg->http_header_timeout_ms
                     : cfg->http_idle_timeout_ms;
    api->h2o_config.http1.req_timeout = (uint64_t)to;
    api->h2o_config.http1.upgrade_to_http2 = 0;
    h2o_hostconf_t *host =
        h2o_config_register_host(&api->h2o_config, h2o_iovec_init(H2O_STRLIT("default")), 65535);
    h2o_pathconf_t *path = h2o_config_register_path(host, "/", 0);
    struct api_handler *h = (struct api_handler *)h2o_create_handler(path, sizeof *h);
    h->super.on_req = on_req;
    h->api = api;
    /* Before routing (a body over the limit) h2o answers on the fallback path. */
    h2o_create_filter(path, sizeof(h2o_filter_t))->on_setup_ostream = json_errors_setup;
    h2o_create_filter(&host->fallback_path, sizeof(h2o_filter_t))->on_setup_ostream =
        json_errors_setup;
    h2o_context_init(&api->h2o_ctx, loop, &api->h2o_config);
    api->accept_ctx.ctx = &api->h2o_ctx;
    api->accept_ctx.hosts = api->h2o_config.hosts;


    uv_timer_init(loop, &api->heartbeat);
    api->heartbeat.data = api;
    uv_tcp_init(loop, &api->listener);
    api->listener.data = api;
    api->listening = 1;
    if ((rc = uv_tcp_bind(&api->listener, (struct sockaddr *)&addr, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&api->listener, 128, on_accept)) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", cfg->http_listen, uv_strerror(rc));
        goto fail;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if (uv_tcp_getsockname(&api->listener, (struct sockaddr *)&bound, &blen) == 0)
        api->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                      : ((struct sockaddr_in *)&bound)->sin_port);
    if (api->prov.alerts_version && api->prov.alerts)
        api->alerts_cache = api__cache_new((uint64_t)cb_wall_ms());
    api__events_init(api);
    cb_info(API_MOD, "listening on %s (port %d, %s)%s; %s", cfg->http_listen, api->port,
            api->accept_ctx.ssl_ctx ? "HTTPS: HTTP/2 and HTTP/1.1" : "plain HTTP",
            cfg->http_token && *cfg->http_token ? "" : "; no http.token: writes are refused",
            api->nscopes ? "departments configured: reads need a token"
            : cfg->http_open_reads ? "reads are open" : "reads need a token");
    return api;

fail:
    /* Nothing was accepted yet: close what was opened; the struct is freed
     * by the loop (the caller runs it, as it would after a normal close). */
    cb_api_close(api, NULL, NULL);
    return NULL;
}

size_t cb_api_event_clients(const struct cb_api *api) { return api ? api->nsse : 0; }

/* ---- shutdown --------------------------------------------------------------------
 *
 * h2o 2.2 has no way to end HTTP/1 connections at shutdown: it only stops
 * keep-alive on those that finish a response. So cb_api_close
 *   1. stops listening and ends every event stream (each gets its final
 *      chunk, then h2o closes the connection: streams are not persistent);
 *   2. every 10 ms runs the request timeout list with a timeout of zero,
 *      which closes the connections that wait for a request (idle keep-alive,
 *      slow headers);
 *   3. gives the connections still writing an answer DRAIN_MS, then calls
 *      shutdown(2) on them: their pending write fails and h2o closes them
 *      through its own error path (never behind its back);
 *   4. when no connection and no pool call is left, disposes of h2o and
 *      closes its own handles; the struct is freed in the last close
 *      callback and `done` is called.
 * h2o's context is never disposed while a connection lives: the connection
 * would keep entries in the context's timeout lists (h2o asserts they are
 * empty) and point at freed memory. */

#define DRAIN_MS 1000

static void free_api(uv_handle_t *h)
{
    struct cb_api *api = h->data;
    void (*done)(void *) = api->done;
    void *done_ctx = api->done_ctx;
    uv_mutex_destroy(&api->readers_lock);
    api__cache_free(api->alerts_cache);
    api__scopes_free(api->scopes, api->nscopes);
    SSL_CTX_free(api->accept_ctx.ssl_ctx);
    free(api->dashboard_dir);
    free(api->city_map);
    free(api);
    if (done)
        done(done_ctx);
}

/* The poll timer is closed: h2o's handles were closed in the same pass (see
 * finish_close), so closing the heartbeat now puts its callback, which frees
 * the struct they live in, in a later pass of the loop, after all of them. */
static void on_poll_closed(uv_handle_t *h)
{
    struct cb_api *api = h->data;
    uv_close((uv_handle_t *)&api->heartbeat, free_api);
}

/* h2o 2.2's h2o_context_dispose closes its timer handles and then calls
 * uv_run(loop, UV_RUN_NOWAIT) to finish them. We are in a callback of that
 * loop and uv_run is not reentrant: the nested run would fire other modules'
 * callbacks, and close callbacks (the daemon's `done` among them), in the
 * middle of this one. uv_run returns without running anything while the
 * loop's stop flag is set (and clears it); the outer run finishes the
 * handles in its next close pass. */
static void dispose_h2o(struct cb_api *api)
{
    unsigned int was_stopped = api->loop->stop_flag;
    /* request_shutdown arms HTTP/2's graceful-shutdown entry in the one-second
     * list even with no HTTP/2 connection; the lists must be empty. */
    if (h2o_timeout_is_linked(&api->h2o_ctx.http2._graceful_shutdown_timeout))
        h2o_timeout_unlink(&api->h2o_ctx.http2._graceful_shutdown_timeout);
    uv_stop(api->loop);
    h2o_context_dispose(&api->h2o_ctx);
    api->loop->stop_flag = was_stopped;
    h2o_config_dispose(&api->h2o_config);
}

static void finish_close(struct cb_api *api)
{
    uv_timer_stop(&api->close_poll);
    struct api_reader *r = api->readers;
    while (r) {
        struct api_reader *next = r->next;
        if (api->prov.reader_close)
            api->prov.reader_close(api->prov.ctx, r->reader);
        free(r);
        r = next;
    }
    api->readers = NULL;
    dispose_h2o(api);
    uv_close((uv_handle_t *)&api->close_poll, on_poll_closed);
}

/* shutdown(2) on every connection still open: a pending write fails with
 * EPIPE and a read sees the end, so h2o closes each through its error path. */
static void shut_conns(struct cb_api *api)
{
    for (struct api_conn *c = api->conns; c; c = c->next) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
            shutdown(fd, SHUT_RDWR);
    }
}

static void on_close_poll(uv_timer_t *t)
{
    struct cb_api *api = t->data;
    /* Connections waiting for a request sit in the request timeout list:
     * with the timeout at zero, running the list closes them now. */
    api->h2o_ctx.http1.req_timeout.timeout = 0;
    h2o_timeout_run(api->loop, &api->h2o_ctx.http1.req_timeout, h2o_now(api->loop));
    if (api->pending_work > 0)
        return; /* the work's after-callback touches the API: always wait */
    if (api->nconns > 0) {
        int64_t now = cb_mono_ms();
        if (now >= api->close_deadline) {
            if (api->conns_shut++ == 0)
                cb_warn(API_MOD, "%zu connection(s) still busy at shutdown: closing them",
                        api->nconns);
            else
                cb_warn(API_MOD, "%zu connection(s) still open after shutdown(2)", api->nconns);
            shut_conns(api);
            api->close_deadline = now + DRAIN_MS;
        }
        return;
    }
    finish_close(api);
}

void cb_api_close(struct cb_api *api, void (*done)(void *ctx), void *done_ctx)
{
    if (!api || api->closing)
        return;
    api->closing = 1;
    api->done = done;
    api->done_ctx = done_ctx;
    if (api->listening) {
        uv_close((uv_handle_t *)&api->listener, NULL);
        api->listening = 0;
    }
    uv_timer_stop(&api->heartbeat);
    api__events_close_all(api);
    /* Busy keep-alive connections close after their answer. */
    h2o_context_request_shutdown(&api->h2o_ctx);
    api->close_deadline = cb_mono_ms() + DRAIN_MS;
    uv_timer_init(api->loop, &api->close_poll);
    api->close_poll.data = api;
    uv_timer_start(&api->close_poll, on_close_poll, 0, 10);
}
