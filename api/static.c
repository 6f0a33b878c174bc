/* The dashboard's files, served only from the dashboard folder.
 *
 * Three fences: the decoded path may not hold a segment that starts with a
 * dot (so no "..", whether sent plain, as %2e%2e or %2E%2e), nor a backslash
 * or a NUL; and the realpath of the file must lie inside the realpath of the
 * folder, so a symlink pointing outside is refused too. Files are small and
 * local: they are read whole with one read on the loop. */
#include "api/api_int.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_FILE (8u << 20)

static const struct {
    const char *ext, *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".map", "application/json"},
    {".txt", "text/plain; charset=utf-8"},
};

static const char *content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (!strcmp(dot, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

/* 1 when every segment of the decoded path is a plain name. */
static int safe_path(const char *p)
{
    if (*p != '/')
        return 0;
    if (strchr(p, '\\'))
        return 0;
    for (const char *s = p; s && *s;) {
        s++; /* past '/' */
        if (*s == '.')
            return 0;
        if (*s == '/')
            return 0; /* empty segment */
        s = strchr(s, '/');
    }
    return 1;
}

/* Reads the regular file at path (at most MAX_FILE bytes) into the request's
 * pool; extra_flags are added to open's. Returns the bytes (NUL-terminated,
 * *len of them), or NULL when the file cannot be opened or read whole. */
static char *read_whole(h2o_req_t *req, const char *path, int extra_flags, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | extra_flags);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)MAX_FILE) {
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    char *buf = h2o_mem_alloc_pool(&req->pool, (size_t)st.st_size + 1);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != (size_t)st.st_size)
        return NULL;
    buf[got] = '\0';
    *len = got;
    return buf;
}

void api__city(struct cb_api *api, h2o_req_t *req, const struct api_scope *scope)
{
    size_t len;
    char *buf = api->city_map ? read_whole(req, api->city_map, 0, &len) : NULL;
    if (!api->city_map) {
        api__error(api, req, 404, "no city map is configured (http.city_map)");
        return;
    }
    if (!buf) {
        api__error(api, req, 503, "cannot read the city map (http.city_map)");
        return;
    }
    if (scope) {
        /* A department's map: its sensors' points only (and every outline). */
        struct cb_strbuf out;
        cb_strbuf_init(&out);
        cb_strbuf_append(&out, buf, len);
        if (api__scope_filter(api, scope, API_LIST_FEATURES, &out))
            api__error(api, req, 500, "cannot filter the city map for the department");
        else
            api__send(api, req, 200, "application/geo+json", out.data, out.len);
        cb_strbuf_free(&out);
        return;
    }
    api__send(api, req, 200, "application/geo+json", buf, len);
}

void api__static(struct cb_api *api, h2o_req_t *req, const char *raw, size_t rawlen)
{
    char *path = api__decode(&req->pool, raw, rawlen, 0);
    if (!path || !safe_path(path)) {
        api__error(api, req, 400, "bad path");
        return;
    }
    if (!api->dashboard_dir) {
        api__error(api, req, 404, "not found");
        return;
    }
    if (!strcmp(path, "/"))
        path = "/index.html";
    char full[PATH_MAX];
    int n = snprintf(full, sizeof full, "%s%s", api->dashboard_dir, path);
    if (n < 0 || (size_t)n >= sizeof full) {
        api__error(api, req, 404, "not found");
        return;
    }
    char *real = realpath(full, NULL);
    size_t dlen = strlen(api->dashboard_dir);
    if (!real || strncmp(real, api->dashboard_dir, dlen) != 0 || real[dlen] != '/') {
        free(real);
        api__error(api, req, 404, "not found");
        return;
    }
    size_t got;
    char *buf = read_whole(req, real, O_NOFOLLOW, &got);
    free(real);
    if (!buf) {
        api__error(api, req, 404, "not found");
        return;
    }
    const char *type = content_type(path);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-content-type-options"), 0,
                          NULL, H2O_STRLIT("nosniff"));
    if (!strncmp(type, "text/html", 9)) {
        /* Offline by construction: the page may load nothing from elsewhere. */
        h2o_add_header_by_str(&req->pool, &req->res.headers,
                              H2O_STRLIT("content-security-policy"), 0, NULL,
                              H2O_STRLIT("default-src 'self'; img-src 'self' data:; "
                                         "style-src 'self' 'unsafe-inline'; "
                                         "frame-ancestors 'none'"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("referrer-policy"), 0,
                              NULL, H2O_STRLIT("no-referrer"));
    }
    api__send(api, req, 200, type, buf, got);
}
