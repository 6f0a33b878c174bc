/* `citybrain run`: parse the command line into a struct cb_config and hand it
 * to the daemon (cmd/daemon.c). Precedence: defaults < --config FILE <
 * command-line options < environment (tokens, MQTT password). */
#include "cmd/commands.h"
#include "api/api.h"
#include "base/config.h"
#include "cmd/daemon.h"
#include "base/log.h"
#include "base/strbuf.h"

#include <stdio.h>
#include <string.h>

/* Command-line flags and the config keys they override. A repeated list flag
 * appends; its first use replaces the list from the file. */
static const struct {
    const char *flag;
    const char *key;
    const char *help;
} overrides[] = {
    {"--broker", "mqtt.broker",
     "URL[,URL...]  broker, tcp://host:port or ssl://host:port; several for a cluster"},
    {"--topic", "mqtt.topic", "FILTER  topic filter (repeatable; default city/#)"},
    {"--qos", "mqtt.qos", "0|1  subscription QoS (default 1)"},
    {"--client-id", "mqtt.client_id", "ID  stable MQTT client id"},
    {"--db", "storage.db", "PATH  SQLite database (default ./citybrain.db)"},
    {"--rules", "rules.path", "PATH  rule file or directory (repeatable)"},
    {"--http", "http.listen", "ADDR:PORT  HTTP API address, or off"},
    {"--log-level", "log.level", "LEVEL  error, warn, info or debug"},
};
#define NOVERRIDES (sizeof overrides / sizeof overrides[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: citybrain run [--config FILE] [options] [--check-config]\n\n"
                 "Runs the engine: MQTT in, SQLite, rules, alerts, HTTP API, until SIGINT or\n"
                 "SIGTERM (clean shutdown); SIGHUP reloads the rules.\n\noptions:\n"
                 "  --config FILE               configuration file (see etc/citybrain.conf)\n");
    for (size_t i = 0; i < NOVERRIDES; i++) {
        const char *sp = strchr(overrides[i].help, ' ');
        fprintf(out, "  %-12s %-14.*s %s\n", overrides[i].flag, (int)(sp - overrides[i].help),
                overrides[i].help, sp + 2);
    }
    fprintf(out, "  --set KEY=VALUE             any configuration option but a secret (repeatable)\n"
                 "  --check-config              validate exactly what run validates (configuration,\n"
                 "                              alert channels, rules and their notify names), then\n"
                 "                              exit: 0 OK, 1 errors, 2 no rule at all\n"
                 "\nNo rules (no --rules, empty rules.path, or no rule in them) is refused with\n"
                 "exit 2 unless rules.allow_none = true (--set rules.allow_none=true).\n"
                 "\nenvironment (secrets come from here or the configuration file, never from\n"
                 "--set): CITYBRAIN_API_TOKEN, CITYBRAIN_API_READ_TOKEN, CITYBRAIN_MQTT_PASSWORD\n"
                 "\nconfiguration options:\n");
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_config_write_help(&b);
    if (b.data)
        fputs(b.data, out);
    cb_strbuf_free(&b);
}

int cb_cmd_run(int argc, char **argv)
{
    struct cb_config cfg;
    struct cb_config_error err;
    const char *config_path = NULL;
    int check_only = 0;
    int rc = 2;

    /* The config file is read first, wherever --config stands. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "citybrain run: --config needs a FILE\n");
                return 2;
            }
            config_path = argv[++i];
        }
    }
    if (cb_config_defaults(&cfg)) {
        fprintf(stderr, "citybrain run: out of memory\n");
        return 1;
    }
    /* A bad configuration is an error (1), not a usage error (2): scripts
     * running --check-config tell a broken file from a wrong invocation. */
    if (config_path && cb_config_load_file(&cfg, config_path, &err)) {
        fprintf(stderr, "citybrain run: %s\n", err.text);
        rc = 1;
        goto out;
    }
    unsigned char replaced[NOVERRIDES] = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strcmp(a, "--check-config")) {
            check_only = 1;
            continue;
        }
        if (!strcmp(a, "--set")) {
            if (cb_config_set_arg(&cfg, i + 1 < argc ? argv[i + 1] : "", &err)) {
                fprintf(stderr, "citybrain run: %s\n", err.text);
                goto out;
            }
            i++;
            continue;
        }
        size_t k = 0;
        while (k < NOVERRIDES && strcmp(a, overrides[k].flag) != 0)
            k++;
        if (k == NOVERRIDES) {
            fprintf(stderr, "citybrain run: unknown option '%s' (see citybrain run --help)\n", a);
            goto out;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "citybrain run: %s needs a value\n", a);
            goto out;
        }
        if (cb_config_set(&cfg, overrides[k].key, argv[++i], !replaced[k], a, &err)) {
            fprintf(stderr, "citybrain run: %s\n", err.text);
            goto out;
        }
        replaced[k] = 1;
    }
    if (cb_config_apply_env(&cfg) || cb_config_validate(&cfg, &err)) {
        fprintf(stderr, "citybrain run: %s\n", err.text);
        rc = 1;
        goto out;
    }
    if (cb_api_enabled(&cfg) && (cb_api_check_departments(&cfg, err.text, sizeof err.text) ||
                                 cb_api_check_tls(&cfg, err.text, sizeof err.text))) {
        fprintf(stderr, "citybrain run: %s\n", err.text);
        rc = 1;
        goto out;
    }
    rc = check_only ? cb_daemon_check(&cfg) : cb_daemon_run(&cfg);
out:
    cb_config_free(&cfg);
    return rc;
}
