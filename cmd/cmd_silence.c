/* `citybrain silence add|list|expire` (docs/alerts.md "Silences").
 *
 * add and expire change the running daemon's silences, so they go through
 * its HTTP API (POST /api/silences, POST /api/silences/ID/expire): the
 * daemon holds the silences it applies and records the action in the audit
 * log. list reads the database read-only, safe while `run` writes. */
#include "alerts/alerts.h"
#include "base/clock.h"
#include "base/config.h"
#include "base/strbuf.h"
#include "cmd/cli.h"
#include "cmd/commands.h"
#include "storage/alert_store.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: citybrain silence add MATCHER... --by NAME --comment TEXT\n"
            "                             (--ends T | --duration D) [--starts T] [--api URL]\n"
            "       citybrain silence list [--db PATH] [--all] [--json]\n"
            "       citybrain silence expire ID --by NAME [--comment TEXT] [--api URL]\n\n"
            "A silence holds the notifications (channels) of the alerts its matchers select\n"
            "from its start to its end; the alerts' state, history and feed go on.\n\n"
            "add       creates one through the running daemon (POST /api/silences).\n"
            "          MATCHER is NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX (quote\n"
            "          it for the shell); REGEX is a POSIX extended regular expression that\n"
            "          must match the whole value; the name rule is the rule's name. Every\n"
            "          matcher must hold.\n"
            "  --by NAME       who creates it (required)\n"
            "  --comment TEXT  why (required)\n"
            "  --starts T      when it starts (default now; a later T schedules it)\n"
            "  --ends T        when it ends, or --duration D: D after its start\n"
            "list      prints the active and scheduled silences from the database\n"
            "          (read-only; safe while `run` writes)\n"
            "  --db PATH       database (default ./citybrain.db)\n"
            "  --all           also every expired silence the database keeps\n"
            "  --json          {\"silences\":[...]}, each as GET /api/silences gives it\n"
            "expire    ends silence ID now through the running daemon\n"
            "          (POST /api/silences/ID/expire); it stays listed as expired\n"
            "  --by NAME       who ends it (required)\n"
            "  --comment TEXT  why\n\n"
            "T is milliseconds since the epoch, or +D / -D from now (+30m, +2h).\n"
            "  --api URL       the daemon's API (default " CMD_DEFAULT_API ")\n"
            "environment: CITYBRAIN_API_TOKEN (read-write bearer token) for add and expire\n");
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "citybrain silence: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    usage(stderr);
    return 2;
}

/* Splits "name<op>value" into a matcher object. Returns it, or NULL. */
static cJSON *parse_matcher(const char *s)
{
    static const char *const ops[] = {"=~", "!~", "!=", "="};
    size_t n = strcspn(s, "=!~");
    if (n == 0 || !s[n])
        return NULL;
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        size_t ol = strlen(ops[i]);
        if (strncmp(s + n, ops[i], ol))
            continue;
        cJSON *m = cJSON_CreateObject();
        char *name = strndup(s, n);
        if (!m || !name || !cJSON_AddStringToObject(m, "name", name) ||
            !cJSON_AddStringToObject(m, "op", ops[i]) ||
            !cJSON_AddStringToObject(m, "value", s + n + ol)) {
            cJSON_Delete(m);
            m = NULL;
        }
        free(name);
        return m;
    }
    return NULL;
}

/* The options of add and expire. */
struct write_opts {
    const char *by, *comment, *api, *starts, *ends, *duration;
};

/* Takes argv[*i] (and its value) into o when it is an option of add or
 * expire. Returns 1 when taken, 0 when not an option of theirs, -1 when its
 * value is missing. */
static int write_option(int argc, char **argv, int *i, struct write_opts *o, int add)
{
    static const struct {
        const char *flag;
        size_t off;
        int add_only;
    } opts[] = {
        {"--by", offsetof(struct write_opts, by), 0},
        {"--comment", offsetof(struct write_opts, comment), 0},
        {"--api", offsetof(struct write_opts, api), 0},
        {"--starts", offsetof(struct write_opts, starts), 1},
        {"--ends", offsetof(struct write_opts, ends), 1},
        {"--duration", offsetof(struct write_opts, duration), 1},
    };
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        if (strcmp(argv[*i], opts[k].flag) || (opts[k].add_only && !add))
            continue;
        if (*i + 1 >= argc)
            return -1;
        *(const char **)((char *)o + opts[k].off) = argv[++*i];
        return 1;
    }
    return 0;
}

static int blank(const char *s) { return !s || !s[strspn(s, " \t")]; }

/* silence add: builds the documented body from the matchers and options
 * and posts it to the daemon. Returns the exit code (0, 1 refused or no
 * answer, 2 usage or no token). */
static int silence_add(int argc, char **argv)
{
    struct write_opts o = {.api = CMD_DEFAULT_API};
    int64_t now = cb_wall_ms(), starts = 0, ends = 0, dur = 0;
    int rc = 2;
    cJSON *body = cJSON_CreateObject();
    cJSON *ms = cJSON_AddArrayToObject(body, "matchers");
    char *text = NULL;
    if (!ms) {
        rc = 1;
        goto out;
    }
    for (int i = 2; i < argc; i++) {
        int took = write_option(argc, argv, &i, &o, 1);
        if (took < 0) {
            rc = usage_error("%s needs a value", argv[i]);
            goto out;
        }
        if (took)
            continue;
        cJSON *m = argv[i][0] == '-' ? NULL : parse_matcher(argv[i]);
        if (!m) {
            rc = usage_error("'%s' is not a matcher (NAME=VALUE, NAME!=VALUE, NAME=~REGEX, "
                             "NAME!~REGEX) nor an option of add",
                             argv[i]);
            goto out;
        }
        cJSON_AddItemToArray(ms, m);
    }
    if (!cJSON_GetArraySize(ms)) {
        rc = usage_error("%s", "add needs at least one MATCHER");
        goto out;
    }
    if (blank(o.by) || blank(o.comment)) {
        rc = usage_error("%s", blank(o.by) ? "--by NAME is required: who creates the silence"
                                           : "--comment TEXT is required: why it is needed");
        goto out;
    }
    if (o.starts && cmd__parse_time(o.starts, now, &starts)) {
        rc = usage_error("--starts '%s': not milliseconds nor +D/-D", o.starts);
        goto out;
    }
    if (!o.ends == !o.duration) {
        rc = usage_error("%s", "give one of --ends T and --duration D");
        goto out;
    }
    if (o.ends && cmd__parse_time(o.ends, now, &ends)) {
        rc = usage_error("--ends '%s': not milliseconds nor +D/-D", o.ends);
        goto out;
    }
    if (o.duration && (cb_parse_duration_ms(o.duration, &dur) || dur <= 0)) {
        rc = usage_error("--duration '%s': not a duration (90m, 2h)", o.duration);
        goto out;
    }
    if (o.duration)
        ends = (o.starts && starts > now ? starts : now) + dur;
    if (o.starts)
        cJSON_AddNumberToObject(body, "starts", (double)starts);
    cJSON_AddNumberToObject(body, "ends", (double)ends);
    cJSON_AddStringToObject(body, "comment", o.comment);
    cJSON_AddStringToObject(body, "created_by", o.by);
    text = cJSON_PrintUnformatted(body);
    rc = text ? cmd__api_call("silence add", o.api, "POST", "/api/silences", text) : 1;
out:
    free(text);
    cJSON_Delete(body);
    return rc;
}

/* silence expire ID: posts {"by","comment"} to /api/silences/ID/expire.
 * Returns the exit code, as silence_add. */
static int silence_expire(int argc, char **argv)
{
    struct write_opts o = {.api = CMD_DEFAULT_API};
    const char *id = NULL;
    for (int i = 2; i < argc; i++) {
        int took = write_option(argc, argv, &i, &o, 0);
        if (took < 0)
            return usage_error("%s needs a value", argv[i]);
        if (took)
            continue;
        if (id || !argv[i][0] || strspn(argv[i], "0123456789") != strlen(argv[i]))
            return usage_error("unexpected '%s' (expire takes one silence ID, a number)",
                               argv[i]);
        id = argv[i];
    }
    if (!id)
        return usage_error("%s", "which silence? give its ID (citybrain silence list)");
    if (blank(o.by))
        return usage_error("%s", "--by NAME is required: who ends the silence");
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "by", o.by);
    if (o.comment)
        cJSON_AddStringToObject(body, "comment", o.comment);
    char *text = cJSON_PrintUnformatted(body);
    struct cb_strbuf path;
    cb_strbuf_init(&path);
    cb_strbuf_printf(&path, "/api/silences/%s/expire", id);
    int rc = text && !path.oom
                 ? cmd__api_call("silence expire", o.api, "POST", path.data, text)
                 : 1;
    cb_strbuf_free(&path);
    free(text);
    cJSON_Delete(body);
    return rc;
}

/* ---- list ---- */

struct list_ctx {
    struct cb_strbuf *out;
    int64_t now;
    int n;
};

static int list_row(void *arg, const struct cb_silence_row *r)
{
    struct list_ctx *c = arg;
    if (c->n++)
        cb_strbuf_putc(c->out, ',');
    cb_alerts_silence_row_json(r, c->now, c->out);
    return 0;
}

/* One table line: the silence as the API shows it. */
static void print_silence(const cJSON *s)
{
    const cJSON *m, *v;
    char starts[32], ends[32];
    cmd__utc((int64_t)cJSON_GetObjectItemCaseSensitive(s, "starts")->valuedouble, starts);
    cmd__utc((int64_t)cJSON_GetObjectItemCaseSensitive(s, "ends")->valuedouble, ends);
    printf("%-5lld %-9s %-19s  %-19s  %-16s ",
           (long long)cJSON_GetObjectItemCaseSensitive(s, "id")->valuedouble,
           cJSON_GetObjectItemCaseSensitive(s, "state")->valuestring, starts, ends,
           cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "created_by")));
    int first = 1;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(s, "matchers"))
    {
        printf("%s%s%s%s", first ? "" : ",", cJSON_GetStringValue(cJSON_GetObjectItem(m, "name")),
               cJSON_GetStringValue(cJSON_GetObjectItem(m, "op")),
               cJSON_GetStringValue(cJSON_GetObjectItem(m, "value")));
        first = 0;
    }
    printf("  %s", cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "comment")));
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(s, "expired_by"))) {
        cmd__utc((int64_t)cJSON_GetObjectItemCaseSensitive(s, "expired_at")->valuedouble, ends);
        printf("  (ended by %s at %s)", v->valuestring, ends);
    }
    printf("\n");
}

/* silence list: the stored silences not yet ended (--all: every one), each
 * as the API renders it, as a table or --json. Returns 0, 1 (unreadable
 * database) or 2 (usage). */
static int silence_list(int argc, char **argv)
{
    const char *db = "./citybrain.db";
    int all = 0, json = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--all"))
            all = 1;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--db") && i + 1 < argc)
            db = argv[++i];
        else
            return usage_error("list: unexpected '%s'", argv[i]);
    }
    char err[256];
    struct cb_alert_reader *r = cb_alert_reader_open(db, err, sizeof err);
    if (!r) {
        fprintf(stderr, "citybrain silence: %s\n", err);
        return 1;
    }
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    struct list_ctx c = {&b, cb_wall_ms(), 0};
    cb_strbuf_puts(&b, "{\"silences\":[");
    int rc = cb_alert_reader_silences(r, all ? INT64_MIN : c.now, list_row, &c);
    cb_strbuf_puts(&b, "]}");
    if (rc || b.oom) {
        fprintf(stderr, "citybrain silence: %s: %s\n", db, cb_alert_reader_error(r));
    } else if (json) {
        printf("%s\n", b.data);
    } else {
        cJSON *doc = cJSON_Parse(b.data);
        const cJSON *s;
        printf("%-5s %-9s %-19s  %-19s  %-16s %s\n", "ID", "STATE", "STARTS (UTC)", "ENDS (UTC)",
               "CREATED BY", "MATCHERS  COMMENT");
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(doc, "silences")) print_silence(s);
        printf("%d silence%s%s\n", c.n, c.n == 1 ? "" : "s", all ? "" : " active or scheduled");
        cJSON_Delete(doc);
    }
    cb_strbuf_free(&b);
    cb_alert_reader_close(r);
    return rc || b.oom ? 1 : 0;
}

int cb_cmd_silence(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
        usage(stdout);
        return 0;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    if (!strcmp(sub, "add"))
        return silence_add(argc, argv);
    if (!strcmp(sub, "list"))
        return silence_list(argc, argv);
    if (!strcmp(sub, "expire"))
        return silence_expire(argc, argv);
    return usage_error("'%s': give add, list or expire", sub);
}
