/* citybrain: one binary, subcommands. */
#include "base/version.h"
#include "cmd/commands.h"
#include "base/config.h"
#include "base/strbuf.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"run", cb_cmd_run, "the daemon: MQTT in, SQLite, rules, alerts, HTTP API"},
    {"check", cb_cmd_check, "compile rule files and report every error"},
    {"replay", cb_cmd_replay, "run rules over recorded telemetry (JSON Lines), print transitions"},
    {"test", cb_cmd_test, "run rule test files: given telemetry, expected transitions"},
    {"query", cb_cmd_query, "read stored samples or buckets as JSON lines"},
    {"ack", cb_cmd_ack, "acknowledge an alert: ack ID --by NAME [--note TEXT]"},
    {"close", cb_cmd_close, "close a stale alert by hand: close ID --by NAME --note TEXT"},
    {"alerts", cb_cmd_alerts, "list alerts; --unacked-older-than D for shift handover"},
    {"history", cb_cmd_history, "list alert transitions (firing, resolved...), newest first"},
    {"silence", cb_cmd_silence, "silence add|list|expire: hold the notifications of alerts"},
    {"audit", cb_cmd_audit, "list the audit log: who acknowledged, silenced, reloaded, when"},
    {"sensors", cb_cmd_sensors, "list sensors: last sample, age, stale or fresh"},
    {"sim", cb_cmd_sim, "publish synthetic city telemetry (or write it as replay input)"},
    {"config-example", cb_cmd_config_example, "print the commented configuration with defaults"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: citybrain COMMAND [options]   (citybrain COMMAND --help for more)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-15s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nversion %s\n", cb_version);
}

int cb_cmd_config_example(int argc, char **argv)
{
    (void)argv;
    if (argc > 1) {
        fprintf(stderr, "usage: citybrain config-example > citybrain.conf\n");
        return 2;
    }
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_config_write_example(&b);
    int rc = b.oom ? 1 : (fwrite(b.data, 1, b.len, stdout) == b.len ? 0 : 1);
    cb_strbuf_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("citybrain %s\n", cb_version);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "citybrain: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
