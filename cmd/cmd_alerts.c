/* The alert commands of the operator's terminal (cli.h says which talk to
 * the daemon and which read the database):
 *   citybrain ack ID --by NAME        through the running daemon's HTTP API, so
 *                                     the engine's state machine and the audit
 *                                     log record it;
 *   citybrain close ID --by --note    likewise: a stale alert closed by hand;
 *   citybrain alerts                  stored instances, the shift handover;
 *   citybrain history                 the transition log, newest first;
 *   citybrain audit                   the audit log of operator actions. */
#include "alerts/alerts.h"
#include "cmd/cli.h"
#include "cmd/commands.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/strbuf.h"
#include "storage/alert_store.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The two operator actions on one alert, through the running daemon. */
struct alert_action {
    const char *cmd;   /* "ack", "close": the command and the path's last segment */
    const char *usage; /* its help text */
    const char *who;   /* what --by names, for the error without it */
    int need_note;     /* 1: --note is required too */
};

static const struct alert_action ack_action = {
    "ack",
    "usage: citybrain ack ID --by NAME [--note TEXT] [--api URL]\n\n"
    "Acknowledges a firing alert through the running daemon's HTTP API\n"
    "(POST /api/alerts/ID/ack); the audit log records it. Idempotent.\n\n"
    "  --by NAME     who acknowledges (required)\n"
    "  --note TEXT   a note kept with the acknowledgement\n"
    "  --api URL     the daemon's API (default " CMD_DEFAULT_API ")\n\n"
    "environment: CITYBRAIN_API_TOKEN (read-write bearer token, required)\n",
    "who acknowledges",
    0,
};

static const struct alert_action close_action = {
    "close",
    "usage: citybrain close ID --by NAME --note TEXT [--api URL]\n\n"
    "Closes a stale firing alert by hand through the running daemon's HTTP API\n"
    "(POST /api/alerts/ID/close): one with no evidence either way, whose\n"
    "sensors are silent or whose condition is unknown (docs/rules.md,\n"
    "\"Missing data\"). It resolves with the reason \"closed by hand\", and the\n"
    "audit log records who and why. An alert that is not stale is refused\n"
    "(409): it resolves on evidence.\n\n"
    "  --by NAME     who closes it (required)\n"
    "  --note TEXT   why (required)\n"
    "  --api URL     the daemon's API (default " CMD_DEFAULT_API ")\n\n"
    "environment: CITYBRAIN_API_TOKEN (read-write bearer token, required)\n",
    "who closes it",
    1,
};

static int blank(const char *s)
{
    return !s || !s[strspn(s, " \t")];
}

/* `citybrain ack|close ID --by NAME [--note TEXT] [--api URL]`: posts
 * {"by","note"} to /api/alerts/ID/<cmd>. Returns the exit code (2 usage). */
static int run_alert_action(const struct alert_action *x, int argc, char **argv)
{
    const char *id = NULL, *by = NULL, *note = NULL, *api = CMD_DEFAULT_API;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(x->usage, stdout);
            return 0;
        } else if ((!strcmp(a, "--by") || !strcmp(a, "--note") || !strcmp(a, "--api")) &&
                   i + 1 < argc) {
            const char **dst = a[2] == 'b' ? &by : a[2] == 'n' ? &note : &api;
            *dst = argv[++i];
        } else if (a[0] == '-' || id) {
            fprintf(stderr, "citybrain %s: unexpected '%s'\n", x->cmd, a);
            fputs(x->usage, stderr);
            return 2;
        } else {
            id = a;
        }
    }
    if (!id || blank(by) || (x->need_note && blank(note))) {
        fprintf(stderr, "citybrain %s: %s\n", x->cmd,
                !id         ? "which alert? give its ID"
                : blank(by) ? "--by NAME is required"
                            : "--note TEXT is required: why");
        if (id && blank(by))
            fprintf(stderr, "  (%s)\n", x->who);
        fputs(x->usage, stderr);
        return 2;
    }
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "by", by);
    if (note)
        cJSON_AddStringToObject(body, "note", note);
    char *text = cJSON_PrintUnformatted(body);
    char *esc = curl_easy_escape(NULL, id, 0);
    struct cb_strbuf path;
    cb_strbuf_init(&path);
    cb_strbuf_printf(&path, "/api/alerts/%s/%s", esc ? esc : "", x->cmd);
    int rc = 1;
    if (text && esc && !path.oom)
        rc = cmd__api_call(x->cmd, api, "POST", path.data, text);
    else
        fprintf(stderr, "citybrain %s: out of memory\n", x->cmd);
    cb_strbuf_free(&path);
    curl_free(esc);
    free(text);
    cJSON_Delete(body);
    return rc;
}

int cb_cmd_ack(int argc, char **argv)
{
    return run_alert_action(&ack_action, argc, argv);
}

int cb_cmd_close(int argc, char **argv)
{
    return run_alert_action(&close_action, argc, argv);
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

/* ---- history and audit: reads of the two logs ---- */

/* The options both take. */
struct log_opts {
    const char *db;
    int64_t from, to;
    int64_t limit;
    const char *filter; /* --rule (history) or --action (audit) */
    int json;
};

/* Parses argv into o; `flag` is the filter's option. Returns -1 to go on,
 * or the exit code (0 after --help, 2 on a usage error). */
static int log_opts_parse(const char *cmd, const char *flag, void (*usage)(FILE *), int argc,
                          char **argv, struct log_opts *o)
{
    int64_t now = cb_wall_ms();
    *o = (struct log_opts){.db = "./citybrain.db", .from = -1, .to = now + 1, .limit = 1000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!v) {
            bad = 1;
        } else if (!strcmp(a, "--db")) {
            o->db = argv[++i];
        } else if (!strcmp(a, flag)) {
            o->filter = argv[++i];
        } else if (!strcmp(a, "--from") || !strcmp(a, "--to")) {
            bad = cmd__parse_time(v, now, a[2] == 'f' ? &o->from : &o->to);
            i++;
        } else if (!strcmp(a, "--limit")) {
            char *end;
            o->limit = strtoll(v, &end, 10);
            bad = *end || o->limit < 1 || o->limit > 100000;
            i++;
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "citybrain %s: unexpected or bad '%s%s%s'\n", cmd, a, v ? " " : "",
                    v ? v : "");
            usage(stderr);
            return 2;
        }
    }
    if (o->from < 0)
        o->from = o->to - 24 * 3600000LL > 0 ? o->to - 24 * 3600000LL : 0;
    if (o->from >= o->to) {
        fprintf(stderr, "citybrain %s: --from must be before --to\n", cmd);
        return 2;
    }
    return -1;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int64_t jms(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

/* What a log read prints: the document's list member, the words for one
 * and many items, the table's head and one line per item. */
struct log_view {
    const char *key, *one, *many, *head;
    void (*line)(const cJSON *item);
};

/* Prints the {"KEY":[...]} document `doc` as JSON, or as v's table.
 * Returns 0, or 1 when doc does not parse. */
static int print_list(const char *doc, int json, const struct log_view *v)
{
    if (json) {
        printf("%s\n", doc);
        return 0;
    }
    cJSON *root = cJSON_Parse(doc);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(root, v->key), *it;
    if (!cJSON_IsArray(items)) {
        cJSON_Delete(root);
        return 1;
    }
    printf("%s\n", v->head);
    cJSON_ArrayForEach(it, items) v->line(it);
    int n = cJSON_GetArraySize(items);
    printf("%d %s (newest first)\n", n, n == 1 ? v->one : v->many);
    cJSON_Delete(root);
    return 0;
}

/* Runs one read of a log: opens the database read-only, fills the document
 * with read(), prints it. */
static int read_log(const char *cmd, const struct log_opts *o, const struct log_view *v,
                    int (*read)(struct cb_alert_reader *r, const struct log_opts *o,
                                struct cb_strbuf *out))
{
    char err[256];
    struct cb_alert_reader *r = cb_alert_reader_open(o->db, err, sizeof err);
    if (!r) {
        fprintf(stderr, "citybrain %s: %s\n", cmd, err);
        return 1;
    }
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    int rc = read(r, o, &b) || b.oom;
    if (rc)
        fprintf(stderr, "citybrain %s: %s: %s\n", cmd, o->db, cb_alert_reader_error(r));
    else
        rc = print_list(b.data, o->json, v);
    cb_strbuf_free(&b);
    cb_alert_reader_close(r);
    return rc;
}

static void history_usage(FILE *out)
{
    fprintf(out, "usage: citybrain history [--db PATH] [--from T] [--to T] [--rule R] [--limit N]\n"
                 "                         [--json]\n\n"
                 "Lists the alert transitions (firing, escalated, acknowledged, resolved),\n"
                 "newest first, from the database (read-only; safe while `run` writes).\n"
                 "  --db PATH     database (default ./citybrain.db)\n"
                 "  --from T      from T on (inclusive; default 24 hours before --to)\n"
                 "  --to T        up to T (exclusive; default now)\n"
                 "  --rule R      only rule R\n"
                 "  --limit N     at most N, the newest (default 1000)\n"
                 "  --json        the document of GET /api/alerts/history\n"
                 "T is milliseconds since the epoch, or -D / +D from now (-2h, -30m).\n");
}

static int history_read(struct cb_alert_reader *r, const struct log_opts *o,
                        struct cb_strbuf *out)
{
    return cb_alerts_reader_history_json(r, o->from, o->to, o->filter, (size_t)o->limit, out);
}

static void history_line(const cJSON *t)
{
    char at[32];
    cmd__utc(jms(t, "at"), at);
    const char *by = jstr(t, "by"), *msg = jstr(t, "message");
    int64_t sil = jms(t, "silenced");
    printf("%-19s  %-12s %-9s %s%s%s%s%s", at, jstr(t, "state"), jstr(t, "severity"),
           jstr(t, "id"), *msg ? "  " : "", msg, *by ? "  by " : "", by);
    if (sil)
        printf("  (silenced by %lld)", (long long)sil);
    printf("\n");
}

int cb_cmd_history(int argc, char **argv)
{
    struct log_opts o;
    int rc = log_opts_parse("history", "--rule", history_usage, argc, argv, &o);
    if (rc >= 0)
        return rc;
    static const struct log_view v = {"transitions", "transition", "transitions",
                                      "AT (UTC)             STATE        SEVERITY  ID / MESSAGE",
                                      history_line};
    return read_log("history", &o, &v, history_read);
}

static void audit_usage(FILE *out)
{
    struct cb_strbuf actions;
    cb_strbuf_init(&actions);
    cb_alerts_audit_actions_text(&actions);
    fprintf(out, "usage: citybrain audit [--db PATH] [--from T] [--to T] [--action A] [--limit N]\n"
                 "                       [--json]\n\n"
                 "Lists the audit log, newest first: who did what, when, to which alert,\n"
                 "silence or rule set. Read-only; safe while `run` writes.\n"
                 "  --db PATH     database (default ./citybrain.db)\n"
                 "  --from T      from T on (inclusive; default 24 hours before --to)\n"
                 "  --to T        up to T (exclusive; default now)\n"
                 "  --action A    only A: %s\n"
                 "  --limit N     at most N, the newest (default 1000)\n"
                 "  --json        the document of GET /api/audit\n"
                 "T is milliseconds since the epoch, or -D / +D from now (-2h, -7d).\n",
            actions.data ? actions.data : "");
    cb_strbuf_free(&actions);
}

static int audit_read(struct cb_alert_reader *r, const struct log_opts *o, struct cb_strbuf *out)
{
    return cb_alerts_reader_audit_json(r, o->from, o->to, o->filter, (size_t)o->limit, out);
}

static void audit_line(const cJSON *e)
{
    char at[32];
    cmd__utc(jms(e, "at"), at);
    const char *note = jstr(e, "note");
    char *details = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(e, "details"));
    printf("%-19s  %-15s %-16s %s%s%s  %s\n", at, jstr(e, "action"), jstr(e, "who"),
           *jstr(e, "target") ? jstr(e, "target") : "-", *note ? "  " : "", note,
           details ? details : "");
    free(details);
}

int cb_cmd_audit(int argc, char **argv)
{
    struct log_opts o;
    int rc = log_opts_parse("audit", "--action", audit_usage, argc, argv, &o);
    if (rc >= 0)
        return rc;
    if (o.filter && !cb_alerts_audit_action_known(o.filter)) {
        fprintf(stderr, "citybrain audit: unknown action '%s'\n", o.filter);
        audit_usage(stderr);
        return 2;
    }
    static const struct log_view v = {"entries", "entry", "entries",
                                      "AT (UTC)             ACTION          WHO              "
                                      "TARGET / NOTE / DETAILS",
                                      audit_line};
    return read_log("audit", &o, &v, audit_read);
}
