/* `citybrain sensors`: every sensor the database knows, its last sample and
 * whether it is stale, for the operator's terminal. Reads the database
 * read-only (safe while `run` writes); --json gives GET /api/sensors's
 * document. */
#include "base/clock.h"
#include "base/config.h"
#include "base/strbuf.h"
#include "cmd/api_provider.h"
#include "cmd/cli.h"
#include "cmd/commands.h"
#include "rules/rules.h"
#include "storage/storage.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: citybrain sensors [--config FILE] [--db PATH] [--stale-after D] [--stale]\n"
            "                         [--json]\n\n"
            "Lists every sensor in the database with its last sample time, age, state\n"
            "(fresh, or stale when silent longer than sensors.stale_after) and the latest\n"
            "value of each metric. Read-only; safe while `run` writes.\n"
            "  --config FILE     the daemon's configuration: storage.db, sensors.stale_after\n"
            "                    and sensors.label_pattern come from it\n"
            "  --db PATH         database (default: storage.db, ./citybrain.db)\n"
            "  --stale-after D   silent longer than D is stale (default: sensors.stale_after,\n"
            "                    10m)\n"
            "  --stale           only the stale sensors\n"
            "  --json            the document of GET /api/sensors\n");
}

/* "45s", "12m", "5h", "3d": how long ago, roughly. */
static void age_text(int64_t ms, char out[32])
{
    int64_t s = ms / 1000;
    if (s < 120)
        snprintf(out, 32, "%llds", (long long)s);
    else if (s < 120 * 60)
        snprintf(out, 32, "%lldm", (long long)(s / 60));
    else if (s < 48 * 3600)
        snprintf(out, 32, "%lldh", (long long)(s / 3600));
    else
        snprintf(out, 32, "%lldd", (long long)(s / 86400));
}

static void print_sensor(const cJSON *s, int64_t now)
{
    const cJSON *last = cJSON_GetObjectItemCaseSensitive(s, "last_ts"), *m;
    char at[32] = "-", age[32] = "-";
    if (cJSON_IsNumber(last)) {
        cmd__utc((int64_t)last->valuedouble, at);
        age_text(now - (int64_t)last->valuedouble, age);
    }
    printf("%-40s %-19s  %-5s %-6s", cJSON_GetStringValue(cJSON_GetObjectItem(s, "topic")), at,
           age, cJSON_IsTrue(cJSON_GetObjectItem(s, "stale")) ? "stale" : "fresh");
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(s, "metrics"))
    {
        const cJSON *v = cJSON_GetObjectItem(m, "value"), *u = cJSON_GetObjectItem(m, "unit");
        printf(" %s=", m->string);
        if (cJSON_IsNumber(v))
            printf("%g%s%s", v->valuedouble, cJSON_IsString(u) ? " " : "",
                   cJSON_IsString(u) ? u->valuestring : "");
        else
            printf("-");
    }
    printf("\n");
}

int cb_cmd_sensors(int argc, char **argv)
{
    struct cb_config cfg;
    struct cb_config_error cerr;
    const char *db = NULL, *stale_after = NULL;
    int only_stale = 0, json = 0, rc = 2;
    struct cb_topic_pattern *labels = NULL;
    struct cb_store_reader *r = NULL;
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    if (cb_config_defaults(&cfg)) {
        fprintf(stderr, "citybrain sensors: out of memory\n");
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            rc = 0;
            goto out;
        } else if (!strcmp(a, "--stale")) {
            only_stale = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--config") && v) {
            if (cb_config_load_file(&cfg, argv[++i], &cerr)) {
                fprintf(stderr, "citybrain sensors: %s\n", cerr.text);
                rc = 1;
                goto out;
            }
        } else if (!strcmp(a, "--db") && v) {
            db = argv[++i];
        } else if (!strcmp(a, "--stale-after") && v) {
            stale_after = argv[++i];
        } else {
            fprintf(stderr, "citybrain sensors: unexpected '%s'\n", a);
            usage(stderr);
            goto out;
        }
    }
    if (stale_after && (cb_parse_duration_ms(stale_after, &cfg.sensors_stale_after_ms) ||
                        cfg.sensors_stale_after_ms <= 0)) {
        fprintf(stderr, "citybrain sensors: --stale-after '%s' is not a duration (10m, 1h)\n",
                stale_after);
        goto out;
    }
    rc = 1;
    char err[256];
    if (*cfg.sensors_label_pattern &&
        !(labels = cb_topic_pattern_compile(cfg.sensors_label_pattern,
                                            strlen(cfg.sensors_label_pattern), err, sizeof err,
                                            NULL))) {
        fprintf(stderr, "citybrain sensors: sensors.label_pattern: %s\n", err);
        goto out;
    }
    if (!db)
        db = cfg.storage_db;
    if (!(r = cb_store_reader_open(db, err, sizeof err))) {
        fprintf(stderr, "citybrain sensors: %s\n", err);
        goto out;
    }
    int64_t now = cb_wall_ms();
    if (cmd__sensors_json(r, labels, now, cfg.sensors_stale_after_ms, &b) || b.oom) {
        fprintf(stderr, "citybrain sensors: %s: reading the sensors failed\n", db);
        goto out;
    }
    rc = 0;
    if (json && !only_stale) {
        printf("%s\n", b.data);
        goto out;
    }
    cJSON *doc = cJSON_Parse(b.data);
    cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, "sensors");
    for (int i = cJSON_GetArraySize(list) - 1; only_stale && i >= 0; i--)
        if (!cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(list, i), "stale")))
            cJSON_DeleteItemFromArray(list, i);
    if (json) {
        char *text = cJSON_PrintUnformatted(doc);
        printf("%s\n", text ? text : "");
        free(text);
    } else {
        int n = cJSON_GetArraySize(list);
        const cJSON *s;
        printf("%-40s %-19s  %-5s %-6s %s\n", "TOPIC", "LAST SAMPLE (UTC)", "AGE", "STATE",
               "METRICS");
        cJSON_ArrayForEach(s, list) print_sensor(s, now);
        printf("%d sensor%s%s (stale after %llds)\n", n, n == 1 ? "" : "s",
               only_stale ? " stale" : "", (long long)(cfg.sensors_stale_after_ms / 1000));
    }
    cJSON_Delete(doc);
out:
    cb_strbuf_free(&b);
    if (r)
        cb_store_reader_close(r);
    if (labels)
        cb_topic_pattern_free(labels);
    cb_config_free(&cfg);
    return rc;
}
