/* MQTT failures in words (ingest/mqtt_words.c): every code Paho hands a
 * failed connect, OpenSSL's texts and the TCP probe's results give the
 * problem and the configuration key to set. The probe itself runs against
 * loopback sockets. */
#include <CUnit/CUnit.h>
#include <MQTTAsync.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ingest/ingest_int.h"

void cb_test_suite_mqtt_words(void);

#define V311 4
#define NONE INGEST_PROBE_NONE

static const struct words_case {
    const char *url;
    int version, code;
    const char *message, *tls, *ca_file;
    int probe;
    const char *want[3]; /* each must be in the words */
} cases[] = {
    /* MQTT 3.1.1 CONNACK return codes */
    {"tcp://b:1883", V311, 1, "CONNACK return code", NULL, NULL, NONE,
     {"unacceptable protocol version", "mqtt.version"}},
    {"tcp://b:1883", V311, 2, "CONNACK return code", NULL, NULL, NONE,
     {"client id rejected", "mqtt.client_id"}},
    {"tcp://b:1883", V311, 3, "CONNACK return code", NULL, NULL, NONE, {"server unavailable"}},
    {"tcp://b:1883", V311, 4, "CONNACK return code", NULL, NULL, NONE,
     {"bad user name or password", "mqtt.username", "CITYBRAIN_MQTT_PASSWORD"}},
    {"tcp://b:1883", V311, 5, "CONNACK return code", NULL, NULL, NONE,
     {"not authorised", "wrong user name or password", "mqtt.password"}},
    /* MQTT 5 reason codes */
    {"tcp://b:1883", 5, 0x84, "CONNACK return code", NULL, NULL, NONE, {"mqtt.version"}},
    {"tcp://b:1883", 5, 0x85, "CONNACK return code", NULL, NULL, NONE, {"mqtt.client_id"}},
    {"tcp://b:1883", 5, 0x86, "CONNACK return code", NULL, NULL, NONE,
     {"bad user name or password", "mqtt.username"}},
    {"tcp://b:1883", 5, 0x87, "CONNACK return code", NULL, NULL, NONE, {"not authorised"}},
    {"tcp://b:1883", 5, 0x8A, "CONNACK return code", NULL, NULL, NONE, {"banned"}},
    {"tcp://b:1883", 5, 0x9F, "CONNACK return code", NULL, NULL, NONE,
     {"connection rate exceeded"}},
    {"tcp://b:1883", 5, 0x80, "CONNACK return code", NULL, NULL, NONE, {"refused"}},
    /* Paho's own codes */
    {"foo://b:1883", V311, MQTTASYNC_BAD_PROTOCOL, NULL, NULL, NULL, NONE,
     {"tcp://", "ssl://", "mqtt.broker"}},
    {"ssl://b:8883", V311, MQTTASYNC_SSL_NOT_SUPPORTED, NULL, NULL, NULL, NONE, {"no TLS"}},
    /* TLS, from OpenSSL's texts */
    {"ssl://b:8883", V311, -1, "TCP/TLS connect failure",
     "error:0A000086:SSL routines::certificate verify failed:ssl/statem/statem_clnt.c:1889:",
     "/etc/city/ca.pem", NONE, {"certificate not trusted", "mqtt.ca_file", "/etc/city/ca.pem"}},
    {"ssl://b:8883", V311, -1, "TCP/TLS connect failure",
     "error:0A000086:SSL routines::certificate verify failed:x.c:1:", NULL, NONE,
     {"certificate not trusted", "mqtt.ca_file is not set"}},
    {"ssl://b:8883", V311, -1, "TCP/TLS connect failure",
     "error:0A00010B:SSL routines::wrong version number:x.c:1:", NULL, NONE,
     {"does not speak TLS", "tcp://"}},
    {"ssl://b:8883", V311, -1, "TCP/TLS connect failure",
     "error:0A000410:SSL routines::sslv3 alert handshake failure:x.c:1:", NULL, NONE,
     {"client certificate", "mqtt.cert_file", "mqtt.key_file"}},
    {"ssl://b:8883", V311, -1, "TCP/TLS connect failure",
     "error:0A000999:SSL routines::a new complaint:x.c:1:", NULL, NONE,
     {"TLS failed: a new complaint"}},
    /* the network, from the probe */
    {"tcp://127.0.0.1:1883", V311, -1, "TCP/TLS connect failure", NULL, NULL, ECONNREFUSED,
     {"connection refused", "127.0.0.1:1883", "mqtt.broker"}},
    {"tcp://[::1]:1884", V311, -1, "TCP/TLS connect failure", NULL, NULL, ECONNREFUSED,
     {"connection refused", "[::1]:1884"}},
    {"ssl://broker.example", V311, -1, "TCP/TLS connect failure", NULL, NULL, ECONNREFUSED,
     {"broker.example:8883"}},
    {"tcp://10.9.9.9:1883", V311, -1, "TCP/TLS connect failure", NULL, NULL, EHOSTUNREACH,
     {"host unreachable", "10.9.9.9"}},
    {"tcp://nowhere.invalid:1883", V311, -1, "Failure", NULL, NULL, INGEST_PROBE_NO_HOST,
     {"host name not found", "nowhere.invalid", "mqtt.broker"}},
    {"tcp://10.9.9.9:1883", V311, -1, "TCP/TLS connect failure", NULL, NULL, ETIMEDOUT,
     {"no answer from 10.9.9.9:1883"}},
    {"tcp://b:1883", V311, -1, "TCP connect timeout", NULL, NULL, NONE, {"no answer from b:1883"}},
    {"ssl://b:8883", V311, -1, "TCP/TLS connect failure", NULL, NULL, 0,
     {"certificate does not match the host", "'b'", "mqtt.tls_verify"}},
    {"ssl://b:1883", V311, -1, "socket error", NULL, NULL, INGEST_PROBE_NOT_TLS,
     {"does not speak TLS", "1883"}},
    {"tcp://b:8883", V311, -1, "TCP connect completion failure", NULL, NULL, 0,
     {"closed the connection before answering", "ssl://"}},
};

static void test_codes_and_failures_in_words(void)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct words_case *c = &cases[i];
        struct ingest_failure f = {c->url, c->version, c->code, c->message, c->tls,
                                   c->ca_file, c->probe};
        char words[400];
        ingest__explain(&f, words, sizeof words);
        for (int k = 0; k < 3 && c->want[k]; k++) {
            int ok = strstr(words, c->want[k]) != NULL;
            CU_ASSERT(ok);
            if (!ok)
                fprintf(stderr, "\ncase %zu: '%s' not in \"%s\"", i, c->want[k], words);
        }
    }
}

static void test_probe_only_when_paho_cannot_tell(void)
{
    struct ingest_failure f = {"tcp://b:1883", V311, -1, "TCP/TLS connect failure", "", NULL,
                               NONE};
    CU_ASSERT_TRUE(ingest__failure_needs_probe(&f));
    f.tls_errors = "error:0A000086:SSL routines::certificate verify failed:x.c:1:";
    CU_ASSERT_FALSE(ingest__failure_needs_probe(&f)); /* OpenSSL said why */
    f.tls_errors = NULL;
    f.message = "TCP connect timeout";
    CU_ASSERT_FALSE(ingest__failure_needs_probe(&f));
    f.code = 5;
    f.message = "CONNACK return code";
    CU_ASSERT_FALSE(ingest__failure_needs_probe(&f)); /* the broker said why */
}

static void test_reason_words_for_subscriptions_and_disconnects(void)
{
    CU_ASSERT_PTR_NOT_NULL(strstr(ingest__reason_words(5, 0x8E), "same client id"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ingest__reason_words(V311, 0x80), "not allowed to subscribe"));
    CU_ASSERT_PTR_NOT_NULL(strstr(ingest__reason_words(5, 0xA2), "wildcard"));
    CU_ASSERT_PTR_NULL(ingest__reason_words(V311, 0x8E)); /* no such code in 3.1.1 */
    CU_ASSERT_PTR_NULL(ingest__reason_words(5, 0));
}

/* A loopback TCP port with a listening socket (not accepting), or a closed
 * one when listening is 0. Returns the port; *fd the socket or -1. */
static int loopback_port(int listening, int *fd)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    CU_ASSERT_FATAL(s >= 0);
    CU_ASSERT_EQUAL_FATAL(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    CU_ASSERT_EQUAL_FATAL(getsockname(s, (struct sockaddr *)&a, &al), 0);
    if (listening) {
        CU_ASSERT_EQUAL_FATAL(listen(s, 4), 0);
        *fd = s;
    } else {
        close(s);
        *fd = -1;
    }
    return ntohs(a.sin_port);
}

static void test_probe_tells_refused_open_and_not_tls(void)
{
    int fd;
    char url[64];
    int port = loopback_port(0, &fd);
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    CU_ASSERT_EQUAL(ingest__probe(url, 1000), ECONNREFUSED);
    port = loopback_port(1, &fd);
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    CU_ASSERT_EQUAL(ingest__probe(url, 1000), 0);
    /* listening, but nobody answers a TLS handshake there */
    snprintf(url, sizeof url, "ssl://127.0.0.1:%d", port);
    CU_ASSERT_EQUAL(ingest__probe(url, 200), INGEST_PROBE_NOT_TLS);
    close(fd);
    CU_ASSERT_EQUAL(ingest__probe("tcp://", 200), INGEST_PROBE_BAD_URL);
    CU_ASSERT_EQUAL(ingest__probe("tcp://nowhere.invalid:1883", 200), INGEST_PROBE_NO_HOST);
}

/* Where the walk of a broker list starts (mqtt.broker_start). */
static void test_broker_start_rotates_by_client_id(void)
{
    CU_ASSERT_EQUAL(ingest__broker_first("engine-a", 3, 0), 0); /* first */
    CU_ASSERT_EQUAL(ingest__broker_first("engine-a", 1, 1), 0); /* one broker */
    int first = ingest__broker_first("engine-a", 3, 1);
    CU_ASSERT(first >= 0 && first < 3);
    CU_ASSERT_EQUAL(ingest__broker_first("engine-a", 3, 1), first); /* stable */
    /* twelve engines of a city spread over three brokers: each starts somewhere */
    int seen[3] = {0};
    for (int i = 0; i < 12; i++) {
        char id[32];
        snprintf(id, sizeof id, "citybrain-d%02d-a", i);
        seen[ingest__broker_first(id, 3, 1)]++;
    }
    CU_ASSERT(seen[0] > 0 && seen[1] > 0 && seen[2] > 0);
}

void cb_test_suite_mqtt_words(void)
{
    CU_pSuite s = CU_add_suite("mqtt_words", NULL, NULL);
    CU_add_test(s, "mqtt words: CONNACK, MQTT 5 reason, Paho, TLS and network failures name the "
                   "problem and the key to set",
                test_codes_and_failures_in_words);
    CU_add_test(s, "mqtt words: the network is probed only when neither broker nor OpenSSL said "
                   "why",
                test_probe_only_when_paho_cannot_tell);
    CU_add_test(s, "mqtt words: subscription and DISCONNECT reason codes have words",
                test_reason_words_for_subscriptions_and_disconnects);
    CU_add_test(s, "mqtt words: the probe tells a refused port, an open one and one without TLS",
                test_probe_tells_refused_open_and_not_tls);
    CU_add_test(s, "mqtt words: broker_start rotate starts each client id at a stable place, "
                   "spread over the list",
                test_broker_start_rotates_by_client_id);
}
