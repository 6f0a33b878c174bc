/* Configuration: the option table, the file parser, env overrides, the
 * whole-config checks, and etc/citybrain.conf kept identical to the table. */
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "base/log.h"
#include "base/strbuf.h"

/* Writes text to a fresh temp file; returns its path (static buffer). */
static const char *conf_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/cbconf-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return NULL;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    close(fd);
    return w == (ssize_t)n ? path : NULL;
}

/* Loads text over the defaults; returns the load result, err filled. */
static int load(struct cb_config *cfg, const char *text, struct cb_config_error *err,
                char *path_out, size_t path_len)
{
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(cfg), 0);
    const char *path = conf_file(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(path);
    if (path_out)
        snprintf(path_out, path_len, "%s", path);
    memset(err, 0, sizeof *err);
    int rc = cb_config_load_file(cfg, path, err);
    unlink(path);
    return rc;
}

static void test_defaults(void)
{
    struct cb_config c;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_STRING_EQUAL(c.mqtt_broker, "tcp://127.0.0.1:1883");
    CU_ASSERT_EQUAL(c.mqtt_topics.n, 1);
    CU_ASSERT_STRING_EQUAL(c.mqtt_topics.items[0], "city/#");
    CU_ASSERT_EQUAL(c.mqtt_qos, 1);
    CU_ASSERT_EQUAL(c.mqtt_clean_session, 0);
    CU_ASSERT_EQUAL(c.mqtt_version, 4);
    CU_ASSERT_EQUAL(c.mqtt_keepalive_ms, 30000);
    CU_ASSERT_EQUAL(c.mqtt_session_expiry_ms, 86400000);
    CU_ASSERT_EQUAL(c.ingest_queue_max_bytes, 256LL << 20);
    CU_ASSERT_EQUAL(c.ingest_max_payload, 64 * 1024);
    CU_ASSERT_EQUAL(c.ingest_max_json_depth, 8);
    CU_ASSERT_EQUAL(c.rules_paths.n, 0);
    /* log is built in (cb_channels_from_config), not a line of the list */
    CU_ASSERT_EQUAL_FATAL(c.alerts_channels.n, 2);
    CU_ASSERT_STRING_EQUAL(c.alerts_channels.items[0], "ops type=log");
    CU_ASSERT_STRING_EQUAL(c.alerts_channels.items[1], "cap type=mqtt format=cap prefix=citybrain/cap");
    CU_ASSERT_EQUAL(c.rules_allow_none, 0);
    CU_ASSERT_EQUAL(c.alerts_default_notify.n, 1);
    CU_ASSERT_EQUAL(c.log_level, CB_LOG_INFO);
    struct cb_config_error err;
    CU_ASSERT_EQUAL(cb_config_validate(&c, &err), 0);
    cb_config_free(&c);
}

static void test_file_values_and_comments(void)
{
    struct cb_config c;
    struct cb_config_error err;
    int rc = load(&c,
                  "# a comment\n"
                  "\n"
                  "   mqtt.broker   =   tcp://10.0.0.1:1884   # trailing comment\n"
                  "mqtt.qos=0\n"
                  "mqtt.version = 5\n"
                  "mqtt.clean_session = yes\n"
                  "mqtt.keepalive = 2m\n"
                  "ingest.max_payload = 1M\n"
                  "storage.synchronous = full\n"
                  "log.level = debug\n"
                  "alerts.cap_sender = \"ops # city hall\"\n"
                  "mqtt.password = \"  spaced  \"\n"
                  "mqtt.ca_file = \"\" # no CA: \"the system store\"\n"
                  "mqtt.username = a#b\n",
                  &err, NULL, 0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_STRING_EQUAL(c.mqtt_broker, "tcp://10.0.0.1:1884");
    CU_ASSERT_EQUAL(c.mqtt_qos, 0);
    CU_ASSERT_EQUAL(c.mqtt_version, 5);
    CU_ASSERT_EQUAL(c.mqtt_clean_session, 1);
    CU_ASSERT_EQUAL(c.mqtt_keepalive_ms, 120000);
    CU_ASSERT_EQUAL(c.ingest_max_payload, 1 << 20);
    CU_ASSERT_EQUAL(c.storage_synchronous, CB_SYNC_FULL);
    CU_ASSERT_EQUAL(c.log_level, CB_LOG_DEBUG);
    CU_ASSERT_STRING_EQUAL(c.alerts_cap_sender, "ops # city hall");
    CU_ASSERT_STRING_EQUAL(c.mqtt_password, "  spaced  ");
    /* A quoted value ends at its closing quote, even when the comment quotes. */
    CU_ASSERT_STRING_EQUAL(c.mqtt_ca_file, "");
    /* '#' starts a comment only after white space. */
    CU_ASSERT_STRING_EQUAL(c.mqtt_username, "a#b");
    cb_config_free(&c);
}

static void test_unknown_key_has_position_and_suggestion(void)
{
    struct cb_config c;
    struct cb_config_error err;
    char path[64];
    int rc = load(&c, "mqtt.qos = 1\n\nmqtt.brokr = tcp://x:1\n", &err, path, sizeof path);
    CU_ASSERT_EQUAL(rc, -1);
    char want[160];
    snprintf(want, sizeof want, "%s:3: unknown option 'mqtt.brokr' (did you mean 'mqtt.broker'?)",
             path);
    CU_ASSERT_STRING_EQUAL(err.text, want);
    cb_config_free(&c);

    /* Nothing close: no suggestion. */
    rc = load(&c, "completely.unrelated.thing = 1\n", &err, path, sizeof path);
    CU_ASSERT_EQUAL(rc, -1);
    snprintf(want, sizeof want, "%s:1: unknown option 'completely.unrelated.thing'", path);
    CU_ASSERT_STRING_EQUAL(err.text, want);
    cb_config_free(&c);
}

static void test_bad_values_are_errors_with_line(void)
{
    static const struct {
        const char *text;
        const char *msg;
    } cases[] = {
        {"mqtt.qos = 2\n", ":1: mqtt.qos: '2' is out of range"},
        {"mqtt.qos = one\n", ":1: mqtt.qos: expected an integer, got 'one'"},
        {"mqtt.qos = 1x\n", ":1: mqtt.qos: expected an integer, got '1x'"},
        {"\nmqtt.keepalive = 30\n",
         ":2: mqtt.keepalive: expected a duration such as 500ms, 30s, 5m, 2h or 7d, got '30'"},
        {"mqtt.keepalive = 10ms\n", ":1: mqtt.keepalive: '10ms' is out of range"},
        {"ingest.max_payload = 12T\n",
         ":1: ingest.max_payload: expected a size such as 512, 64k, 16M or 1G, got '12T'"},
        {"mqtt.clean_session = maybe\n",
         ":1: mqtt.clean_session: expected true or false, got 'maybe'"},
        {"mqtt.version = 4\n", ":1: mqtt.version: expected one of 3.1.1, 5, got '4'"},
        {"log.level = loud\n",
         ":1: log.level: expected one of error, warn, info, debug, got 'loud'"},
        {"just some words\n", ":1: expected 'key = value'"},
        {" = value\n", ":1: missing key before '='"},
        {"mqtt.username = \"open\n", ":1: unterminated quoted value"},
        {"mqtt.username = \"a\" b\n", ":1: unexpected text after the quoted value"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cb_config c;
        struct cb_config_error err;
        char path[64];
        int rc = load(&c, cases[i].text, &err, path, sizeof path);
        CU_ASSERT_EQUAL(rc, -1);
        char want[256];
        snprintf(want, sizeof want, "%s%s", path, cases[i].msg);
        if (strcmp(err.text, want) != 0)
            fprintf(stderr, "\n  case %zu: got '%s'\n  want '%s'\n", i, err.text, want);
        CU_ASSERT_STRING_EQUAL(err.text, want);
        cb_config_free(&c);
    }
}

static void test_missing_file(void)
{
    struct cb_config c;
    struct cb_config_error err;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL(cb_config_load_file(&c, "/nonexistent/citybrain.conf", &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text,
                           "/nonexistent/citybrain.conf: cannot open: No such file or directory");
    cb_config_free(&c);
}

static void test_durations_and_sizes(void)
{
    int64_t v;
    CU_ASSERT_EQUAL(cb_parse_duration_ms("250ms", &v), 0);
    CU_ASSERT_EQUAL(v, 250);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("90s", &v), 0);
    CU_ASSERT_EQUAL(v, 90000);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("5m", &v), 0);
    CU_ASSERT_EQUAL(v, 300000);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("2h", &v), 0);
    CU_ASSERT_EQUAL(v, 7200000);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("7d", &v), 0);
    CU_ASSERT_EQUAL(v, 7LL * 86400000);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("0", &v), 0);
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("5", &v), -1);   /* a unit is required */
    CU_ASSERT_EQUAL(cb_parse_duration_ms("-5s", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("5 s", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("s", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("1.5s", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("5w", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_duration_ms("9223372036854775807d", &v), -1); /* overflow */
    CU_ASSERT_EQUAL(cb_parse_duration_ms("", &v), -1);

    CU_ASSERT_EQUAL(cb_parse_size("512", &v), 0);
    CU_ASSERT_EQUAL(v, 512);
    CU_ASSERT_EQUAL(cb_parse_size("64k", &v), 0);
    CU_ASSERT_EQUAL(v, 65536);
    CU_ASSERT_EQUAL(cb_parse_size("64K", &v), 0);
    CU_ASSERT_EQUAL(v, 65536);
    CU_ASSERT_EQUAL(cb_parse_size("16M", &v), 0);
    CU_ASSERT_EQUAL(v, 16LL << 20);
    CU_ASSERT_EQUAL(cb_parse_size("1G", &v), 0);
    CU_ASSERT_EQUAL(v, 1LL << 30);
    CU_ASSERT_EQUAL(cb_parse_size("16MB", &v), 0);
    CU_ASSERT_EQUAL(v, 16LL << 20);
    CU_ASSERT_EQUAL(cb_parse_size("16m", &v), -1);  /* m is not a size unit */
    CU_ASSERT_EQUAL(cb_parse_size("-1", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_size("1T", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_size("", &v), -1);
    CU_ASSERT_EQUAL(cb_parse_size("9223372036854775807G", &v), -1);
}

static void test_lists_replace_defaults_then_append(void)
{
    struct cb_config c;
    struct cb_config_error err;
    int rc = load(&c,
                  "mqtt.topic = a/#\n"
                  "mqtt.topic = $share/grp/b/+\n"
                  "rules.path = /etc/citybrain/rules\n",
                  &err, NULL, 0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    /* The file's first mention replaces the default city/#; later lines append. */
    CU_ASSERT_EQUAL_FATAL(c.mqtt_topics.n, 2);
    CU_ASSERT_STRING_EQUAL(c.mqtt_topics.items[0], "a/#");
    CU_ASSERT_STRING_EQUAL(c.mqtt_topics.items[1], "$share/grp/b/+");
    CU_ASSERT_EQUAL(c.rules_paths.n, 1);

    /* Command line: replace_list clears the file's list, then repeats append. */
    CU_ASSERT_EQUAL(cb_config_set(&c, "mqtt.topic", "x/#", 1, "--topic", &err), 0);
    CU_ASSERT_EQUAL(cb_config_set(&c, "mqtt.topic", "y/#", 0, "--topic", &err), 0);
    CU_ASSERT_EQUAL_FATAL(c.mqtt_topics.n, 2);
    CU_ASSERT_STRING_EQUAL(c.mqtt_topics.items[0], "x/#");
    CU_ASSERT_STRING_EQUAL(c.mqtt_topics.items[1], "y/#");

    /* An empty value in the file clears a list (no item is added). */
    cb_config_free(&c);
    rc = load(&c, "alerts.channel =\n", &err, NULL, 0);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(c.alerts_channels.n, 0);
    cb_config_free(&c);
}

static void test_set_error_names_where(void)
{
    struct cb_config c;
    struct cb_config_error err;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL(cb_config_set(&c, "mqtt.qos", "7", 0, "--qos", &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "--qos: mqtt.qos: '7' is out of range");
    CU_ASSERT_EQUAL(cb_config_set(&c, "mqtt.qoss", "1", 0, "--set", &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "--set: unknown option 'mqtt.qoss' (did you mean 'mqtt.qos'?)");
    /* Retention durations accept 0 ("forever") below their minimum. */
    CU_ASSERT_EQUAL(cb_config_set(&c, "storage.retention.raw", "0", 0, "x", &err), 0);
    CU_ASSERT_EQUAL(c.storage_retention_raw_ms, 0);
    cb_config_free(&c);
}

static void test_set_arg(void)
{
    struct cb_config c;
    struct cb_config_error err;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    /* the key ends at the first '='; the value keeps the others */
    CU_ASSERT_EQUAL(cb_config_set_arg(&c, "sensors.label_pattern=a=b=", &err), 0);
    CU_ASSERT_STRING_EQUAL(c.sensors_label_pattern, "a=b=");
    CU_ASSERT_EQUAL(cb_config_set_arg(&c, "sensors.label_pattern=", &err), 0);
    CU_ASSERT_STRING_EQUAL(c.sensors_label_pattern, "");
    /* a secret is refused, naming its environment variable */
    CU_ASSERT_EQUAL(cb_config_set_arg(&c, "http.token=a=b=", &err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.text, "CITYBRAIN_API_TOKEN"));
    /* a list appends, as repeated flags do */
    size_t topics = c.mqtt_topics.n;
    CU_ASSERT_EQUAL(cb_config_set_arg(&c, "mqtt.topic=plant/#", &err), 0);
    CU_ASSERT_EQUAL(c.mqtt_topics.n, topics + 1);
    CU_ASSERT_EQUAL(cb_config_set_arg(&c, "mqtt.qos", &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "--set needs KEY=VALUE");
    CU_ASSERT_EQUAL(cb_config_set_arg(&c, "=1", &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "--set: unknown option ''");
    CU_ASSERT_EQUAL(cb_config_set_arg(&c, "mqtt.qos=2", &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "--set: mqtt.qos: '2' is out of range");
    cb_config_free(&c);
}

static void test_env_overrides(void)
{
    struct cb_config c;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL(cb_config_set(&c, "mqtt.password", "from-file", 0, "f", NULL), 0);
    setenv("CITYBRAIN_MQTT_PASSWORD", "from-env", 1);
    setenv("CITYBRAIN_API_TOKEN", "tok-rw", 1);
    setenv("CITYBRAIN_API_READ_TOKEN", "", 1); /* empty: ignored */
    CU_ASSERT_EQUAL(cb_config_apply_env(&c), 0);
    CU_ASSERT_STRING_EQUAL(c.mqtt_password, "from-env");
    CU_ASSERT_STRING_EQUAL(c.http_token, "tok-rw");
    CU_ASSERT_STRING_EQUAL(c.http_read_token, "");
    unsetenv("CITYBRAIN_MQTT_PASSWORD");
    unsetenv("CITYBRAIN_API_TOKEN");
    unsetenv("CITYBRAIN_API_READ_TOKEN");
    cb_config_free(&c);
}

/* Secrets come from the environment or the file: each names its variable for
 * the command line's refusal; no other option is a secret. */
static int secret_of(const char *key, const char *env)
{
    const char *e = cb_config_secret_env(key);
    return e && !strcmp(e, env);
}

static void test_secrets_name_their_variable(void)
{
    CU_ASSERT_TRUE(secret_of("http.token", "CITYBRAIN_API_TOKEN"));
    CU_ASSERT_TRUE(secret_of("http.read_token", "CITYBRAIN_API_READ_TOKEN"));
    CU_ASSERT_TRUE(secret_of("mqtt.password", "CITYBRAIN_MQTT_PASSWORD"));
    CU_ASSERT_PTR_NULL(cb_config_secret_env("mqtt.username"));
    CU_ASSERT_PTR_NULL(cb_config_secret_env("http.listen"));
    CU_ASSERT_PTR_NULL(cb_config_secret_env("no.such.key"));
    /* and a file may still hold them */
    struct cb_config c;
    struct cb_config_error err;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL(cb_config_set(&c, "http.token", "from-file", 0, "f:1", &err), 0);
    CU_ASSERT_STRING_EQUAL(c.http_token, "from-file");
    cb_config_free(&c);
}

/* Sets key=value on a default config and runs the whole-config check. */
static int validate_with(const char *key, const char *value, const char *key2, const char *value2,
                         struct cb_config_error *err)
{
    struct cb_config c;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL(cb_config_set(&c, key, value, 1, "t", err), 0);
    if (key2)
        CU_ASSERT_EQUAL(cb_config_set(&c, key2, value2, 1, "t", err), 0);
    memset(err, 0, sizeof *err);
    int rc = cb_config_validate(&c, err);
    cb_config_free(&c);
    return rc;
}

static void test_broker_list(void)
{
    struct cb_strlist l;
    CU_ASSERT_EQUAL_FATAL(cb_config_brokers(" tcp://a:1883 ,tcp://b:1884,, ssl://c:8883 ", &l), 0);
    CU_ASSERT_EQUAL_FATAL(l.n, 3);
    CU_ASSERT_STRING_EQUAL(l.items[0], "tcp://a:1883");
    CU_ASSERT_STRING_EQUAL(l.items[1], "tcp://b:1884");
    CU_ASSERT_STRING_EQUAL(l.items[2], "ssl://c:8883");
    for (size_t i = 0; i < l.n; i++)
        free(l.items[i]);
    free(l.items);
    struct cb_config_error err;
    CU_ASSERT_EQUAL(validate_with("mqtt.broker", "tcp://a:1883, tcp://b:1883", NULL, NULL, &err),
                    0);
    CU_ASSERT_EQUAL(validate_with("mqtt.broker", "tcp://a:1883, b:1883", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "mqtt.broker: 'b:1883' is not a broker URL (tcp://host:port "
                                     "or ssl://host:port; several separated by commas)");
    CU_ASSERT_EQUAL(validate_with("mqtt.broker", " , ", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text,
                           "mqtt.broker: no broker URL (tcp://host:port or ssl://host:port)");
    CU_ASSERT_EQUAL(validate_with("mqtt.broker_start", "rotate", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("federation.export_topic", "citybrain/export/sz", NULL, NULL,
                                  &err),
                    0);
    CU_ASSERT_EQUAL(validate_with("federation.export_topic", "citybrain/#", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "federation.export_topic: 'citybrain/#' is not a topic name "
                                     "(no + or #, no trailing /)");
    CU_ASSERT_EQUAL(validate_with("federation.engine", "d07/a", NULL, NULL, &err), -1);
}

static void test_whole_config_validation(void)
{
    struct cb_config_error err;
    CU_ASSERT_EQUAL(validate_with("mqtt.broker", "http://x:1", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "mqtt.broker: 'http://x:1' is not a broker URL (tcp://host:port or ssl://host:port; several separated by commas)");
    CU_ASSERT_EQUAL(validate_with("mqtt.broker", "ssl://x:8883", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("mqtt.topic", "", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "mqtt.topic: at least one topic filter is needed");
    CU_ASSERT_EQUAL(validate_with("mqtt.reconnect_min", "2m", "mqtt.reconnect_max", "1m", &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "mqtt.reconnect_min: is longer than mqtt.reconnect_max");
    CU_ASSERT_EQUAL(validate_with("mqtt.key_file", "/etc/hostname", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "mqtt.key_file: is set without mqtt.cert_file");
    CU_ASSERT_EQUAL(validate_with("mqtt.ca_file", "/nonexistent/ca.pem", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "mqtt.ca_file: cannot read '/nonexistent/ca.pem': No such file or directory");
    CU_ASSERT_EQUAL(validate_with("alerts.webhook_retry_min", "10m", NULL, NULL, &err), -1);
    CU_ASSERT_EQUAL(validate_with("storage.db", "", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "storage.db: must not be empty");
    CU_ASSERT_EQUAL(validate_with("http.listen", "off", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("http.listen", "127.0.0.1:0", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("http.listen", "[::1]:8080", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("http.listen", "8080", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "http.listen: '8080' is not ADDRESS:PORT or off");
    CU_ASSERT_EQUAL(validate_with("http.listen", "127.0.0.1:70000", NULL, NULL, &err), -1);
    CU_ASSERT_EQUAL(validate_with("http.listen", "127.0.0.1:http", NULL, NULL, &err), -1);
}

/* The console's options: a time zone name the browser knows too, a city map
 * file that can be read (or off). */
static void test_console_options(void)
{
    struct cb_config_error err;
    CU_ASSERT_EQUAL(validate_with("http.time_zone", "Europe/Berlin", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("http.time_zone", "UTC", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("http.time_zone", "Asia/Shang hai", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "http.time_zone: 'Asia/Shang hai' is not a time zone name "
                                     "such as Asia/Shanghai or UTC");
    CU_ASSERT_EQUAL(validate_with("http.time_zone", "../../etc/passwd", NULL, NULL, &err), -1);
    CU_ASSERT_EQUAL(validate_with("http.city_map", "off", NULL, NULL, &err), 0);
    CU_ASSERT_EQUAL(validate_with("http.city_map", "/nonexistent/city.geojson", NULL, NULL, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "http.city_map: cannot read '/nonexistent/city.geojson': No "
                                     "such file or directory");
    CU_ASSERT_EQUAL(validate_with("http.city_map", CB_SOURCE_DIR "/etc/city.geojson", NULL, NULL, &err), 0);
}

/* A twin's configuration: cfg with the lines given, one "key=value" each. */
static int twin_config(struct cb_config *c, const char *const *lines, struct cb_config_error *err)
{
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(c), 0);
    for (size_t i = 0; lines[i]; i++)
        CU_ASSERT_EQUAL(cb_config_set_arg(c, lines[i], err), 0);
    return cb_config_validate(c, err);
}

static void test_cluster_validation(void)
{
    static const char *const base[] = {
        "cluster.district=north d01 city/d01/#", "cluster.district=south d03 city/d03/#",
        "cluster.lease=amqp://guest:guest@127.0.0.1:5672", NULL};
    struct cb_config c;
    struct cb_config_error err;
    /* districts and lease URLs alone change nothing: no partition, no cluster */
    CU_ASSERT_EQUAL(twin_config(&c, base, &err), 0);
    cb_config_free(&c);
    static const struct {
        const char *extra[4];
        const char *error;
    } cases[] = {
        {{"cluster.partition=north", NULL},
         "cluster.twin: a twin name (letters, digits, _ -) is needed with cluster.partition"},
        {{"cluster.partition=west", "cluster.twin=a", NULL},
         "cluster.district: partition 'west' has no district"},
        {{"cluster.partition=no rth", "cluster.twin=a", NULL},
         "cluster.partition: 'no rth' is not a name (letters, digits, _ -)"},
        {{"cluster.partition=north", "cluster.twin=a", "cluster.district=north d01", NULL},
         "cluster.district: 'north d01' is not PARTITION DISTRICT FILTER"},
        {{"cluster.partition=north", "cluster.twin=a", "cluster.district=x d01 city/x/#", NULL},
         "cluster.district: district 'd01' is listed twice"},
        {{"cluster.partition=north", "cluster.twin=a", "cluster.lease=tcp://127.0.0.1:5672", NULL},
         "cluster.lease: 'tcp://127.0.0.1:5672' is not an AMQP URL (amqp://host:port)"},
        {{"cluster.partition=north", "cluster.twin=a", "mqtt.clean_session=true", NULL},
         "mqtt.clean_session: must be false in a cluster: each twin's session keeps what "
         "arrives while it is away"},
        {{"cluster.partition=north", "cluster.twin=a", NULL}, NULL},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const char *lines[8];
        size_t n = 0;
        for (size_t i = 0; base[i]; i++)
            lines[n++] = base[i];
        for (size_t i = 0; cases[k].extra[i]; i++)
            lines[n++] = cases[k].extra[i];
        lines[n] = NULL;
        int rc = twin_config(&c, lines, &err);
        if (cases[k].error) {
            CU_ASSERT_EQUAL(rc, -1);
            CU_ASSERT_STRING_EQUAL(err.text, cases[k].error);
        } else {
            CU_ASSERT_EQUAL(rc, 0);
        }
        cb_config_free(&c);
    }
    /* a partition needs a lease URL */
    static const char *const nolease[] = {"cluster.district=north d01 city/d01/#",
                                          "cluster.partition=north", "cluster.twin=a", NULL};
    CU_ASSERT_EQUAL(twin_config(&c, nolease, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.text, "cluster.lease: at least one AMQP URL is needed with "
                                     "cluster.partition");
    cb_config_free(&c);
}

static void test_twin_subscriptions_and_client_id(void)
{
    static const char *const lines[] = {
        "cluster.district=north d01 city/d01/#", "cluster.district=south d03 city/d03/#",
        "cluster.district=north d02 city/d02/#", "cluster.lease=amqp://127.0.0.1:5672",
        "cluster.partition=north", "cluster.twin=b", "alerts.mqtt_prefix=ops/alerts", NULL};
    struct cb_config c;
    struct cb_config_error err;
    CU_ASSERT_EQUAL_FATAL(twin_config(&c, lines, &err), 0);
    struct cb_strlist subs;
    CU_ASSERT_EQUAL_FATAL(cb_config_subscriptions(&c, &subs), 0);
    CU_ASSERT_EQUAL_FATAL(subs.n, 3);
    CU_ASSERT_STRING_EQUAL(subs.items[0], "city/d01/#");
    CU_ASSERT_STRING_EQUAL(subs.items[1], "city/d02/#");
    CU_ASSERT_STRING_EQUAL(subs.items[2], "ops/alerts/#");
    cb_strlist_free(&subs);
    char *id = cb_config_client_id(&c);
    CU_ASSERT_STRING_EQUAL(id, "citybrain-north-b");
    free(id);
    char *q = cb_config_lease_queue(&c);
    CU_ASSERT_STRING_EQUAL(q, "citybrain.lease.north");
    free(q);
    cb_config_free(&c);
    /* no partition: mqtt.topic as it is */
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL_FATAL(cb_config_subscriptions(&c, &subs), 0);
    CU_ASSERT_EQUAL(subs.n, 1);
    CU_ASSERT_STRING_EQUAL(subs.items[0], "city/#");
    cb_strlist_free(&subs);
    cb_config_free(&c);
}

static void test_derived_paths(void)
{
    struct cb_config c;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL(cb_config_set(&c, "storage.db", "/var/lib/cb/city.db", 0, "t", NULL), 0);
    char *j = cb_config_journal_path(&c);
    CU_ASSERT_STRING_EQUAL(j, "/var/lib/cb/city.db.journal");
    free(j);
    CU_ASSERT_EQUAL(cb_config_set(&c, "storage.journal", "/j", 0, "t", NULL), 0);
    j = cb_config_journal_path(&c);
    CU_ASSERT_STRING_EQUAL(j, "/j");
    free(j);
    char *id = cb_config_client_id(&c);
    CU_ASSERT_EQUAL(strncmp(id, "citybrain-", 10), 0);
    CU_ASSERT_TRUE(strlen(id) > 10);
    free(id);
    CU_ASSERT_EQUAL(cb_config_set(&c, "mqtt.client_id", "cb-1", 0, "t", NULL), 0);
    id = cb_config_client_id(&c);
    CU_ASSERT_STRING_EQUAL(id, "cb-1");
    free(id);
    cb_config_free(&c);
}

static void test_example_file_matches_table(void)
{
    struct cb_strbuf sb;
    cb_strbuf_init(&sb);
    cb_config_write_example(&sb);
    FILE *f = fopen(CB_SOURCE_DIR "/etc/citybrain.conf", "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char *buf = malloc(sb.len + 2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    size_t n = fread(buf, 1, sb.len + 1, f);
    fclose(f);
    if (n != sb.len || memcmp(buf, sb.data, sb.len) != 0)
        fprintf(stderr, "\n  etc/citybrain.conf differs from `citybrain config-example`: "
                        "regenerate it with ./build/citybrain config-example > etc/citybrain.conf\n");
    CU_ASSERT_EQUAL(n, sb.len);
    CU_ASSERT_EQUAL(memcmp(buf, sb.data, n < sb.len ? n : sb.len), 0);
    free(buf);

    /* And the example parses back to the defaults, and validates. */
    struct cb_config c, d;
    struct cb_config_error err;
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&c), 0);
    CU_ASSERT_EQUAL(cb_config_load_file(&c, CB_SOURCE_DIR "/etc/citybrain.conf", &err), 0);
    CU_ASSERT_EQUAL(cb_config_validate(&c, &err), 0);
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(&d), 0);
    CU_ASSERT_STRING_EQUAL(c.mqtt_broker, d.mqtt_broker);
    CU_ASSERT_EQUAL(c.mqtt_topics.n, d.mqtt_topics.n);
    CU_ASSERT_EQUAL(c.alerts_channels.n, d.alerts_channels.n);
    CU_ASSERT_EQUAL(c.alerts_default_notify.n, d.alerts_default_notify.n);
    CU_ASSERT_EQUAL(c.storage_retention_alerts_ms, d.storage_retention_alerts_ms);
    CU_ASSERT_EQUAL(c.ingest_queue_max_bytes, d.ingest_queue_max_bytes);
    CU_ASSERT_STRING_EQUAL(c.mqtt_client_id, d.mqtt_client_id);
    cb_config_free(&c);
    cb_config_free(&d);
    cb_strbuf_free(&sb);
}

void cb_test_suite_config(void);
void cb_test_suite_config(void)
{
    CU_pSuite s = CU_add_suite("config", NULL, NULL);
    CU_add_test(s, "config: http.time_zone must be a zone name, http.city_map a readable file or off",
                test_console_options);
    CU_add_test(s, "config: defaults are set and valid", test_defaults);
    CU_add_test(s, "config: file values, comments, quotes and white space", test_file_values_and_comments);
    CU_add_test(s, "config: an unknown key is an error at file:line with did-you-mean",
                test_unknown_key_has_position_and_suggestion);
    CU_add_test(s, "config: bad values and bad lines are errors at file:line",
                test_bad_values_are_errors_with_line);
    CU_add_test(s, "config: a missing file is an error naming it", test_missing_file);
    CU_add_test(s, "config: durations and sizes parse with units and refuse the rest",
                test_durations_and_sizes);
    CU_add_test(s, "config: list options replace their default, then append",
                test_lists_replace_defaults_then_append);
    CU_add_test(s, "config: set errors name where the value came from", test_set_error_names_where);
    CU_add_test(s, "config: --set KEY=VALUE splits at the first '=' and needs one", test_set_arg);
    CU_add_test(s, "config: environment variables override secrets", test_env_overrides);
    CU_add_test(s, "config: each secret names its environment variable; nothing else is a secret",
                test_secrets_name_their_variable);
    CU_add_test(s, "config: whole-config validation", test_whole_config_validation);
    CU_add_test(s, "config: cluster.partition needs a twin name, a district of its own, AMQP lease "
                   "URLs and persistent sessions; each error names its option",
                test_cluster_validation);
    CU_add_test(s, "config: a twin subscribes to its partition's districts and the alert feed, as "
                   "citybrain-<partition>-<twin>, its lease queue citybrain.lease.<partition>",
                test_twin_subscriptions_and_client_id);
    CU_add_test(s, "config: journal path and client id are derived", test_derived_paths);
    CU_add_test(s, "config: mqtt.broker takes a comma-separated list and checks every URL of it; "
                   "federation topics are topic names",
                test_broker_list);
    CU_add_test(s, "config: etc/citybrain.conf is the table's example, byte for byte",
                test_example_file_matches_table);
}
