/* Daemon-level integration helpers; see daemon_itest.h. */
#include "tests/support/daemon_itest.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/strbuf.h"

struct log_wait {
    struct cb_h_proc *p;
    const char *needle;
};

static int log_has(void *ctx)
{
    struct log_wait *w = ctx;
    return strstr(cb_h_proc_stderr(w->p), w->needle) != NULL;
}

int cbd_wait_log(struct cb_h_proc *p, const char *needle, int timeout_ms)
{
    struct log_wait w = {p, needle};
    return cb_h_wait_until(log_has, &w, timeout_ms);
}

size_t cbd_log_count(struct cb_h_proc *p, const char *needle)
{
    size_t n = 0, len = strlen(needle);
    for (const char *s = strstr(cb_h_proc_stderr(p), needle); s; s = strstr(s + len, needle))
        n++;
    return n;
}

struct count_wait {
    struct cb_h_proc *p;
    const char *needle;
    size_t n;
};

static int log_count_reached(void *ctx)
{
    struct count_wait *w = ctx;
    return cbd_log_count(w->p, w->needle) >= w->n;
}

int cbd_wait_log_n(struct cb_h_proc *p, const char *needle, size_t n, int timeout_ms)
{
    struct count_wait w = {p, needle, n};
    return cb_h_wait_until(log_count_reached, &w, timeout_ms);
}

struct ready_wait {
    struct cb_h_proc *p;
};

/* Ready, or gone (then waiting longer is pointless). */
static int subscribed_or_dead(void *ctx)
{
    struct ready_wait *w = ctx;
    return strstr(cb_h_proc_stderr(w->p), "subscribed to") != NULL || !cb_h_proc_running(w->p);
}

struct cb_h_proc *cbd_start(const char *const *args, const char *const *env, int http_port)
{
    struct cb_h_proc *p = cb_h_citybrain(args, env);
    if (!p)
        return NULL;
    struct ready_wait w = {p};
    cb_h_wait_until(subscribed_or_dead, &w, CBD_TIMEOUT_MS);
    if (!cb_h_proc_running(p) || !strstr(cb_h_proc_stderr(p), "subscribed to")) {
        fprintf(stderr, "\ncitybrain did not come up; its stderr:\n%s\n", cb_h_proc_stderr(p));
        return NULL;
    }
    if (http_port > 0 && cb_h_wait_port(http_port, CBD_TIMEOUT_MS) != 0) {
        fprintf(stderr, "\ncitybrain's API is not on port %d; its stderr:\n%s\n", http_port,
                cb_h_proc_stderr(p));
        return NULL;
    }
    return p;
}

int cbd_run_to_exit(const char *const *args, const char *const *env, const char **err)
{
    struct cb_h_proc *p = cb_h_citybrain(args, env);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int rc = cb_h_proc_wait(p, CBD_TIMEOUT_MS);
    *err = cb_h_proc_stderr(p);
    if (strstr(*err, "Sanitizer") || strstr(*err, "runtime error:")) {
        fprintf(stderr, "\nsanitizer report:\n%s\n", *err);
        CU_FAIL("sanitizer report");
    }
    return rc;
}

const char *cbd_write_text(const char *name, const char *text)
{
    const char *path = cb_h_pathf("%s", name);
    CU_ASSERT_EQUAL_FATAL(cb_h_write_file(path, text, strlen(text)), 0);
    return path;
}

static size_t on_body(char *ptr, size_t size, size_t n, void *ud)
{
    cb_strbuf_append(ud, ptr, size * n);
    return size * n;
}

long cbd_http(int port, const char *method, const char *path, const char *token,
              const char *body, const char **resp)
{
    return cbd_http_type(port, method, path, token, "application/json", body, resp);
}

long cbd_http_type(int port, const char *method, const char *path, const char *token,
                   const char *ctype, const char *body, const char **resp)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    long status = 0;
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (!c)
        goto out;
    const char *url = cb_h_strf("http://127.0.0.1:%d%s", port, path);
    if (token)
        h = curl_slist_append(h, cb_h_strf("Authorization: Bearer %s", token));
    if (body)
        h = curl_slist_append(h, cb_h_strf("Content-Type: %s", ctype));
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)CBD_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
out:
    if (resp)
        *resp = cb_h_strf("%s", b.data ? b.data : "");
    curl_slist_free_all(h);
    if (c)
        curl_easy_cleanup(c);
    cb_strbuf_free(&b);
    return status;
}

int cbd_metric(int port, const char *series, double *out)
{
    const char *text;
    if (cbd_http(port, "GET", "/metrics", NULL, NULL, &text) != 200)
        return -1;
    size_t n = strlen(series);
    for (const char *line = text; *line;) {
        if (!strncmp(line, series, n) && line[n] == ' ') {
            *out = strtod(line + n + 1, NULL);
            return 0;
        }
        const char *nl = strchr(line, '\n');
        if (!nl)
            break;
        line = nl + 1;
    }
    return -1;
}

struct metric_wait {
    int port;
    const char *series;
    double want;
};

static int metric_reached(void *ctx)
{
    struct metric_wait *w = ctx;
    double v = 0;
    return cbd_metric(w->port, w->series, &v) == 0 && v >= w->want;
}

int cbd_wait_metric(int port, const char *series, double want, int timeout_ms)
{
    struct metric_wait w = {port, series, want};
    return cb_h_wait_until(metric_reached, &w, timeout_ms);
}

struct rows_wait {
    const char *db;
    int64_t want;
};

static int rows_reached(void *ctx)
{
    struct rows_wait *w = ctx;
    return cb_h_sql_count(w->db, "samples", NULL) >= w->want;
}

int cbd_wait_rows(const char *db, int64_t want, int timeout_ms)
{
    struct rows_wait w = {db, want};
    return cb_h_wait_until(rows_reached, &w, timeout_ms);
}

size_t cbd_count_state(struct cb_h_sub *s, const char *state, const char *rule)
{
    size_t n = 0, total = cb_h_sub_count(s);
    for (size_t i = 0; i < total; i++) {
        struct cb_h_msg m;
        if (cb_h_sub_get(s, i, &m))
            continue;
        cJSON *j = cJSON_Parse(m.payload);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "state");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "rule");
        if (cJSON_IsString(st) && !strcmp(st->valuestring, state) &&
            (!rule || (cJSON_IsString(r) && !strcmp(r->valuestring, rule))))
            n++;
        cJSON_Delete(j);
    }
    return n;
}

struct state_wait {
    struct cb_h_sub *s;
    const char *state, *rule;
    size_t n;
};

static int state_reached(void *ctx)
{
    struct state_wait *w = ctx;
    return cbd_count_state(w->s, w->state, w->rule) >= w->n;
}

int cbd_wait_state(struct cb_h_sub *s, const char *state, const char *rule, size_t n,
                   int timeout_ms)
{
    struct state_wait w = {s, state, rule, n};
    return cb_h_wait_until(state_reached, &w, timeout_ms);
}

int cbd_cli(const char *const *args, const char *const *env, const char **out,
            const char **err)
{
    struct cb_h_proc *p = cb_h_citybrain(args, env);
    int rc = p ? cb_h_proc_wait(p, CBD_TIMEOUT_MS) : -1;
    if (out)
        *out = p ? cb_h_proc_stdout(p) : "";
    if (err)
        *err = p ? cb_h_proc_stderr(p) : "";
    return rc;
}

int cbd_stop(struct cb_h_proc *p)
{
    if (cb_h_proc_signal(p, SIGTERM) != 0)
        return -1;
    return cb_h_proc_wait(p, CBD_TIMEOUT_MS);
}

const char *cbd_escape(const char *s)
{
    char *e = curl_easy_escape(NULL, s, 0);
    const char *out = cb_h_strf("%s", e ? e : "");
    curl_free(e);
    return out;
}

const char *cbd_first_id(struct cb_h_sub *s, const char *state)
{
    const char *out = NULL;
    size_t total = cb_h_sub_count(s);
    for (size_t i = 0; i < total && !out; i++) {
        struct cb_h_msg m;
        if (cb_h_sub_get(s, i, &m))
            continue;
        cJSON *j = cJSON_Parse(m.payload);
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "state");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
        if (cJSON_IsString(st) && !strcmp(st->valuestring, state) && cJSON_IsString(id))
            out = cb_h_strf("%s", id->valuestring);
        cJSON_Delete(j);
    }
    return out;
}

void cbd_rig_init(struct cbd_rig *r, const char *client_id, const char *token,
                  const char *const *extra)
{
    memset(r, 0, sizeof *r);
    r->b = cb_h_broker_start(NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->b);
    r->port = cb_h_free_port();
    const char *base[] = {"run", "--broker", cb_h_broker_url(r->b), "--client-id", client_id,
                          "--http", cb_h_strf("127.0.0.1:%d", r->port), "--set",
                          "alerts.storm_window=0"};
    size_t n = 0;
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++)
        r->args[n++] = base[i];
    for (; extra && *extra && n + 1 < sizeof r->args / sizeof r->args[0]; extra++)
        r->args[n++] = *extra;
    CU_ASSERT_FATAL(!extra || !*extra); /* all of them fitted */
    r->env[0] = cb_h_strf("CITYBRAIN_API_TOKEN=%s", token);
    r->alerts = cb_h_sub_start(cb_h_broker_url(r->b), "citybrain/alerts/#", 1, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(r->alerts);
}

struct cb_h_proc *cbd_rig_start(struct cbd_rig *r) { return cbd_start(r->args, r->env, r->port); }

int cbd_raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int cbd_raw_send(int fd, const char *s)
{
    size_t n = strlen(s);
    return send(fd, s, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

int cbd_raw_read(int fd, char *buf, size_t cap, const char *until, int timeout_ms)
{
    size_t len = strlen(buf);
    int64_t deadline = cb_h_now_ms() + timeout_ms;
    for (;;) {
        if (until && strstr(buf, until))
            return 1;
        int64_t left = deadline - cb_h_now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        char tmp[4096];
        ssize_t n = recv(fd, tmp, sizeof tmp, 0);
        if (n <= 0)
            return until ? strstr(buf, until) != NULL : 1;
        size_t k = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;
        memcpy(buf + len, tmp, k);
        len += k;
        buf[len] = '\0';
    }
}

void cbd_refused(const char *const *args, const char *want)
{
    const char *err = "";
    CU_ASSERT_NOT_EQUAL(cbd_run_to_exit(args, NULL, &err), 0);
    if (!strstr(err, want))
        fprintf(stderr, "\nwanted '%s' in:\n%s\n", want, err);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
}
