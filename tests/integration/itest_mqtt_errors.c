/* MQTT errors in words (issue 14, item 12): `citybrain run` against a
 * mosquitto that wants a password, with a wrong one, logs what is wrong and
 * what to set, the raw code in the same line, and GET /api/health says it
 * too; so do an untrusted TLS certificate (a throwaway CA made with openssl
 * here) and a port where nothing listens. */
#include <stdio.h>
#include <string.h>

#include "tests/support/daemon_itest.h"

void cb_test_suite_mqtt_errors(void);

/* Starts citybrain on url with the extra arguments (NULL-terminated, at
 * most 8) and the environment env, the API on a free port (*port). */
static struct cb_h_proc *start(const char *url, const char *const *extra, const char *const *env,
                               int *port)
{
    *port = cb_h_free_port();
    const char *args[24] = {"run", "--broker", url, "--db", cb_h_pathf("e.db"), "--http",
                            cb_h_strf("127.0.0.1:%d", *port), "--set",
                            "mqtt.reconnect_min=200ms", "--set", "mqtt.reconnect_max=1s",
                            "--set", "rules.allow_none=true"};
    size_t n = 13;
    for (size_t i = 0; extra && extra[i] && n < 23; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    struct cb_h_proc *p = cb_h_citybrain(args, env);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL_FATAL(cb_h_wait_port(*port, CBD_TIMEOUT_MS), 0);
    return p;
}

/* Waits for the log line naming the failure and checks its parts. */
static void assert_logged(struct cb_h_proc *p, const char *words, const char *also,
                          const char *code)
{
    int seen = cbd_wait_log(p, words, CBD_TIMEOUT_MS);
    CU_ASSERT_TRUE(seen);
    const char *err = cb_h_proc_stderr(p);
    const char *line = strstr(err, words);
    if (!seen || !line) {
        fprintf(stderr, "\ncitybrain stderr:\n%s\n", err);
        return;
    }
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    const char *l = cb_h_strf("%.*s", (int)len, line);
    CU_ASSERT_PTR_NOT_NULL(strstr(l, also));
    CU_ASSERT_PTR_NOT_NULL(strstr(l, code)); /* the raw code stays in the line */
}

/* GET /api/health carries mqtt_error with words. */
static void assert_health_says(int port, const char *words)
{
    const char *body = NULL;
    CU_ASSERT_EQUAL(cbd_http(port, "GET", "/api/health", NULL, NULL, &body), 200);
    const char *e = strstr(body, "\"mqtt_error\":");
    CU_ASSERT_PTR_NOT_NULL(e);
    CU_ASSERT_PTR_NOT_NULL(e ? strstr(e, words) : NULL);
}

static void test_wrong_password_in_words(void)
{
    const char *pw = cb_h_pathf("passwd");
    CU_ASSERT_EQUAL_FATAL(cb_h_sh("mosquitto_passwd -c -b '%s' sensor s3cret", pw), 0);
    struct cb_h_broker *b = cb_h_broker_start_opts(cb_h_strf("password_file %s\n", pw), 0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    const char *extra[] = {"--set", "mqtt.username=sensor", NULL};
    const char *env[] = {"CITYBRAIN_MQTT_PASSWORD=wrong", NULL};
    int port;
    struct cb_h_proc *p = start(cb_h_broker_url(b), extra, env, &port);
    /* mosquitto 2.0 answers a wrong password with 5, not authorised */
    assert_logged(p, "not authorised", "check mqtt.username and the password", "code 5)");
    assert_health_says(port, "not authorised");
    CU_ASSERT_EQUAL(cbd_stop(p), 0);
    /* MQTT 5: reason code 0x87 */
    const char *extra5[] = {"--set", "mqtt.username=sensor", "--set", "mqtt.version=5", NULL};
    p = start(cb_h_broker_url(b), extra5, env, &port);
    assert_logged(p, "not authorised", "CITYBRAIN_MQTT_PASSWORD", "code 135)");
    CU_ASSERT_EQUAL(cbd_stop(p), 0);
    /* the right password: connected, and health has no error */
    const char *good[] = {"CITYBRAIN_MQTT_PASSWORD=s3cret", NULL};
    p = start(cb_h_broker_url(b), extra, good, &port);
    CU_ASSERT_TRUE(cbd_wait_log(p, "subscribed to", CBD_TIMEOUT_MS));
    const char *body = NULL;
    CU_ASSERT_EQUAL(cbd_http(port, "GET", "/api/health", NULL, NULL, &body), 200);
    CU_ASSERT_PTR_NULL(strstr(body, "mqtt_error"));
    CU_ASSERT_EQUAL(cbd_stop(p), 0);
}

static void test_untrusted_certificate_in_words(void)
{
    CU_ASSERT_EQUAL_FATAL(cb_h_make_test_certs(), 0);
    int tls_port = cb_h_free_port();
    struct cb_h_broker *b = cb_h_broker_start(cb_h_tls_listener_conf(tls_port));
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL_FATAL(cb_h_wait_port(tls_port, 5000), 0);
    const char *other = cb_h_pathf("other.crt");
    const char *extra[] = {"--set", cb_h_strf("mqtt.ca_file=%s", other), NULL};
    int port;
    struct cb_h_proc *p = start(cb_h_strf("ssl://127.0.0.1:%d", tls_port), extra, NULL, &port);
    assert_logged(p, "certificate not trusted", other, "code -1)");
    assert_health_says(port, "mqtt.ca_file");
    CU_ASSERT_EQUAL(cbd_stop(p), 0);
}

static void test_refused_port_in_words(void)
{
    int dead = cb_h_free_port(); /* nothing listens there */
    int port;
    struct cb_h_proc *p = start(cb_h_strf("tcp://127.0.0.1:%d", dead), NULL, NULL, &port);
    assert_logged(p, "connection refused", cb_h_strf("127.0.0.1:%d", dead), "code -1)");
    assert_health_says(port, "connection refused");
    CU_ASSERT_EQUAL(cbd_stop(p), 0);
}

void cb_test_suite_mqtt_errors(void)
{
    CU_pSuite s = cb_h_add_suite("mqtt_errors");
    CU_add_test(s, "mqtt errors: a wrong password is logged as not authorised with the keys to "
                   "check and code 5 (135 in MQTT 5), and shown in /api/health",
                test_wrong_password_in_words);
    CU_add_test(s, "mqtt errors: a certificate of another CA is logged as not trusted, naming "
                   "mqtt.ca_file",
                test_untrusted_certificate_in_words);
    CU_add_test(s, "mqtt errors: a port where nothing listens is logged as connection refused",
                test_refused_port_in_words);
}
