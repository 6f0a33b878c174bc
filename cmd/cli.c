/* The operator commands' shared pieces (cli.h). */
#include "cmd/cli.h"
#include "base/config.h"
#include "base/strbuf.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static size_t collect(char *p, size_t size, size_t n, void *ctx)
{
    cb_strbuf_append(ctx, p, size * n);
    return size * n;
}

int cmd__api_call(const char *cmd, const char *api, const char *method, const char *path,
                  const char *body)
{
    const char *token = getenv("CITYBRAIN_API_TOKEN");
    if (!token || !*token) {
        fprintf(stderr, "citybrain %s: set CITYBRAIN_API_TOKEN to the daemon's read-write "
                        "token\n",
                cmd);
        return 2;
    }
    int rc = 1;
    struct cb_strbuf url, auth, answer;
    cb_strbuf_init(&url);
    cb_strbuf_init(&auth);
    cb_strbuf_init(&answer);
    struct curl_slist *hs = NULL;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    size_t alen = strlen(api);
    cb_strbuf_printf(&url, "%.*s%s", (int)(alen && api[alen - 1] == '/' ? alen - 1 : alen), api,
                     path); /* no double slash */
    cb_strbuf_printf(&auth, "Authorization: Bearer %s", token);
    hs = curl_slist_append(hs, auth.data ? auth.data : "");
    if (hs && body)
        hs = curl_slist_append(hs, "Content-Type: application/json");
    if (!c || !hs || url.oom || auth.oom) {
        fprintf(stderr, "citybrain %s: out of memory\n", cmd);
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url.data);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
    CURLcode res = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (res != CURLE_OK) {
        fprintf(stderr, "citybrain %s: %s: %s (is `citybrain run` up, with its API there?)\n",
                cmd, url.data, curl_easy_strerror(res));
    } else if (status < 200 || status >= 300) {
        cJSON *j = cJSON_Parse(answer.data ? answer.data : "");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
        fprintf(stderr, "citybrain %s: HTTP %ld: %s\n", cmd, status,
                cJSON_IsString(e) ? e->valuestring : answer.data ? answer.data : "");
        cJSON_Delete(j);
    } else {
        printf("%s\n", answer.data ? answer.data : "{}");
        rc = 0;
    }
out:
    curl_slist_free_all(hs);
    if (c)
        curl_easy_cleanup(c);
    curl_global_cleanup();
    cb_strbuf_free(&url);
    cb_strbuf_free(&auth);
    cb_strbuf_free(&answer);
    return rc;
}

int cmd__parse_time(const char *s, int64_t now, int64_t *out)
{
    if (*s == '+' || *s == '-') {
        int64_t d;
        if (cb_parse_duration_ms(s + 1, &d))
            return -1;
        *out = *s == '+' ? now + d : now - d;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

void cmd__utc(int64_t ms, char out[32])
{
    if (!ms) {
        snprintf(out, 32, "-");
        return;
    }
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
}
