/* `citybrain ack` (through the running daemon's HTTP API, so the engine's
 * state machine records it) and `citybrain alerts` (a read-only listing of
 * the database, for the shift handover). */
#include "alerts/alerts.h"
#include "cmd/commands.h"
#include "base/config.h"
#include "base/strbuf.h"
#include "storage/alert_store.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ack_usage(FILE *out)
{
    fprintf(out, "usage: citybrain ack ID --by NAME [--note TEXT] [--api URL]\n\n"
                 "Acknowledges a firing alert through the running daemon's HTTP API\n"
                 "(POST /api/alerts/ID/ack). Idempotent.\n\n"
                 "  --by NAME     who acknowledges (required)\n"
                 "  --note TEXT   a note kept with the acknowledgement\n"
                 "  --api URL     the daemon's API (default http://127.0.0.1:8080)\n\n"
                 "environment: CITYBRAIN_API_TOKEN (read-write bearer token, required)\n");
}

static size_t collect(char *p, size_t size, size_t n, void *ctx)
{
    cb_strbuf_append(ctx, p, size * n);
    return size * n;
}

int cb_cmd_ack(int argc, char **argv)
{
    const char *id = NULL, *by = NULL, *note = NULL, *api = "http://127.0.0.1:8080";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ack_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "--by") || !strcmp(a, "--note") || !strcmp(a, "--api")) &&
                   i + 1 < argc) {
            const char **dst = a[2] == 'b' ? &by : a[2] == 'n' ? &note : &api;
            *dst = argv[++i];
        } else if (a[0] == '-' || id) {
            fprintf(stderr, "citybrain ack: unexpected '%s'\n", a);
            ack_usage(stderr);
            return 2;
        } else {
            id = a;
        }
    }
    if (!id || !by || !*by) {
        ack_usage(stderr);
        return 2;
    }
    const char *token = getenv("CITYBRAIN_API_TOKEN");
    if (!token || !*token) {
        fprintf(stderr, "citybrain ack: set CITYBRAIN_API_TOKEN to the daemon's read-write "
                        "token\n");
        return 2;
    }
    int rc = 1;
    struct cb_strbuf url, body, auth, answer;
    cb_strbuf_init(&url);
    cb_strbuf_init(&body);
    cb_strbuf_init(&auth);
    cb_strbuf_init(&answer);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    struct curl_slist *hs = NULL;
    if (!c)
        goto out;
    char *esc = curl_easy_escape(c, id, 0);
    if (!esc)
        goto out;
    cb_strbuf_printf(&url, "%s%s/api/alerts/%s/ack", api,
                     api[strlen(api) - 1] == '/' ? "" : "", esc);
    if (api[strlen(api) - 1] == '/') { /* no double slash */
        cb_strbuf_reset(&url);
        cb_strbuf_printf(&url, "%.*sapi/alerts/%s/ack", (int)strlen(api), api, esc);
    }
    curl_free(esc);
    cb_strbuf_puts(&body, "{\"by\":");
    cb_strbuf_json_string(&body, by, strlen(by));
    if (note) {
        cb_strbuf_puts(&body, ",\"note\":");
        cb_strbuf_json_string(&body, note, strlen(note));
    }
    cb_strbuf_putc(&body, '}');
    cb_strbuf_printf(&auth, "Authorization: Bearer %s", token);
    hs = curl_slist_append(hs, auth.data);
    hs = hs ? curl_slist_append(hs, "Content-Type: application/json") : NULL;
    if (!hs || url.oom || body.oom)
        goto out;
    curl_easy_setopt(c, CURLOPT_URL, url.data);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
    CURLcode res = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (res != CURLE_OK) {
        fprintf(stderr, "citybrain ack: %s: %s (is `citybrain run` up?)\n", url.data,
                curl_easy_strerror(res));
    } else if (status < 200 || status >= 300) {
        fprintf(stderr, "citybrain ack: %s: HTTP %ld %s\n", id, status,
                answer.data ? answer.data : "");
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
    cb_strbuf_free(&body);
    cb_strbuf_free(&auth);
    cb_strbuf_free(&answer);
    return rc;
}

static void alerts_usage(FILE *out)
{
    fprintf(out, "usage: citybrain alerts [--db PATH] [--state S] [--severity S] [--rule R]\n"
                 "                        [--unacked-older-than D] [--json]\n\n"
                 "Lists stored alert instances (read-only; safe while `run` writes).\n"
                 "  --db PATH                 database (default ./citybrain.db)\n"
                 "  --state S                 pending, firing, resolved or inactive\n"
                 "  --unacked-older-than D    shift handover: firing, unacknowledged,\n"
                 "                            firing for at least D (30m, 2h)\n"
                 "  --json                    one JSON array instead of a table\n");
}

/* One table line per instance: the shift log reads it. */
static int print_row(void *ctx, const struct cb_alert_row *r)
{
    char since[32] = "-";
    if (r->since) {
        cb_cap_datetime(r->since, since);
        since[19] = '\0'; /* drop the +00:00 */
    }
    enum cb_severity sev = CB_SEV_MAJOR;
    cb_alerts_severity_from_name(r->severity, &sev);
    printf("%-20s %-9s %-9s %-6s %-16s %s%s%s\n", since, r->state, r->severity,
           cb_alerts_severity_map(sev)->grade, r->acked_by ? r->acked_by : "-", r->id,
           r->message ? "  " : "", r->message ? r->message : "");
    (*(int *)ctx)++;
    return 0;
}

int cb_cmd_alerts(int argc, char **argv)
{
    const char *db = "./citybrain.db";
    struct cb_alert_filter f = {0};
    int json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            alerts_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--db") && v) {
            db = argv[++i];
        } else if (!strcmp(a, "--state") && v) {
            f.state = argv[++i];
        } else if (!strcmp(a, "--severity") && v) {
            f.severity = argv[++i];
        } else if (!strcmp(a, "--rule") && v) {
            f.rule = argv[++i];
        } else if (!strcmp(a, "--unacked-older-than") && v) {
            int64_t d;
            if (cb_parse_duration_ms(argv[++i], &d)) {
                fprintf(stderr, "citybrain alerts: '%s' is not a duration (30m, 2h)\n", argv[i]);
                return 2;
            }
            f.state = "firing";
            f.unacked_only = 1;
            f.since_before = cb_wall_ms() - d;
            if (f.since_before <= 0)
                f.since_before = 1;
        } else {
            fprintf(stderr, "citybrain alerts: unexpected '%s'\n", a);
            alerts_usage(stderr);
            return 2;
        }
    }
    char err[256];
    struct cb_alert_reader *r = cb_alert_reader_open(db, err, sizeof err);
    if (!r) {
        fprintf(stderr, "citybrain alerts: %s\n", err);
        return 1;
    }
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    int rc;
    if (json) {
        rc = cb_alerts_reader_list_json(r, &f, &b);
        if (!rc)
            printf("%s\n", b.data);
    } else {
        int n = 0;
        printf("%-20s %-9s %-9s %-6s %-16s %s\n", "SINCE (UTC)", "STATE", "SEVERITY", "GRADE",
               "ACKED BY", "ID / MESSAGE");
        rc = cb_alert_reader_instances(r, &f, print_row, &n);
        if (!rc)
            printf("%d alert%s\n", n, n == 1 ? "" : "s");
    }
    if (rc)
        fprintf(stderr, "citybrain alerts: %s: %s\n", db, cb_alert_reader_error(r));
    cb_strbuf_free(&b);
    cb_alert_reader_close(r);
    return rc ? 1 : 0;
}
