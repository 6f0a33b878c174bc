/* ingest/ internals shared by mqtt.c and mqtt_words.c: MQTT failures in
 * words, and the TCP probe that tells a refused port from an unreachable
 * host when Paho only says "TCP/TLS connect failure". */
#ifndef CB_INGEST_INGEST_INT_H
#define CB_INGEST_INGEST_INT_H

#include <stddef.h>

/* ingest__probe results that are not an errno. */
#define INGEST_PROBE_NONE (-1)    /* no probe was made */
#define INGEST_PROBE_NO_HOST (-2) /* the host name did not resolve */
#define INGEST_PROBE_BAD_URL (-3) /* no host and port in the URL */
#define INGEST_PROBE_NOT_TLS (-4) /* TCP connected, but no TLS handshake (ssl:// URLs) */

/* What a failed connection attempt left behind. */
struct ingest_failure {
    const char *url;        /* mqtt.broker */
    int version;            /* 4 (MQTT 3.1.1) or 5 */
    int code;               /* Paho's failure code: after a CONNACK the broker's return code
                             * (3.1.1: 1-5) or reason code (5: 0x80 and up); otherwise an
                             * MQTTASYNC_* code (0 or below) */
    const char *message;    /* Paho's text ("CONNACK return code", "TCP/TLS connect
                             * failure", ...), or NULL */
    const char *tls_errors; /* OpenSSL's errors during the attempt ("" or NULL: none) */
    const char *ca_file;    /* mqtt.ca_file ("" or NULL: the system's CAs) */
    int probe;              /* ingest__probe after the failure: 0 it connected, an errno,
                             * or INGEST_PROBE_* */
};

/* Whether explaining f needs a probe: a TCP or TLS failure that OpenSSL had
 * nothing to say about. */
int ingest__failure_needs_probe(const struct ingest_failure *f);

/* Writes into buf (len bytes, NUL-terminated, truncated if need be) what
 * failed, in words, and what to set: "bad user name or password (check
 * mqtt.username and ...)". Without the raw code: the caller prints it. */
void ingest__explain(const struct ingest_failure *f, char *buf, size_t len);

/* Words for a code a broker sent in MQTT `version` (4 or 5): a 3.1.1
 * CONNACK return code (1-5) or SUBACK failure (0x80), an MQTT 5 reason code
 * (CONNACK, SUBACK, DISCONNECT). NULL when there are none. */
const char *ingest__reason_words(int version, int code);

/* Connects to the host and port of url (tcp://, mqtt://, ssl://, mqtts://,
 * ws://, wss://; default ports 1883, 8883, 80, 443) with a plain TCP
 * socket, waiting at most timeout_ms, and for a TLS scheme tries a TLS
 * handshake without verifying the certificate; then closes. Returns 0 when
 * it connected (and shook hands), the errno of the failure (ETIMEDOUT when
 * no answer came), INGEST_PROBE_NOT_TLS, INGEST_PROBE_NO_HOST or
 * INGEST_PROBE_BAD_URL. Blocks: never on the loop or under Paho's lock. */
int ingest__probe(const char *url, int timeout_ms);

/* Where a connect starts its walk of mqtt.broker's n URLs (mqtt.c): 0 unless
 * rotate, else FNV-1a of client_id modulo n, so engines with different ids
 * spread over a broker cluster and one engine always starts at the same
 * broker. */
int ingest__broker_first(const char *client_id, int n, int rotate);

#endif
