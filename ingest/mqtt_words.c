/* MQTT failures in words. Paho reports a refused connection as a bare
 * number ("CONNACK return code (code 5)") and every network or TLS problem
 * as "TCP/TLS connect failure (code -1)"; the operator needs to know what
 * to fix. The words here name the problem and the configuration key to set;
 * the caller keeps the raw code in the same log line.
 *
 * Sources: MQTT 3.1.1 section 3.2.2.3 (CONNACK return codes 1-5), MQTT 5
 * section 2.4 (reason codes, Paho's MQTTReasonCodes.h), Paho's MQTTAsync.h
 * (MQTTASYNC_* return codes) and what Paho 1.3.12 passes to a connect's
 * onFailure (src/MQTTAsyncUtils.c nextOrClose: the CONNACK code itself, or
 * MQTTASYNC_FAILURE with "TCP/TLS connect failure", "TCP connect completion
 * failure", "TCP connect timeout"). OpenSSL's error texts come from the
 * ssl_error_cb of the TLS options; a refused port, an unreachable host and
 * an unknown name are told apart by a TCP probe made after the failure
 * (Paho keeps the errno to itself). mosquitto 2.0 answers a wrong password
 * with "not authorised" (3.1.1 code 5, MQTT 5 0x87), not with code 4. */
#include "ingest/ingest_int.h"

#include <MQTTAsync.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define CHECK_LOGIN "; check mqtt.username and the password (CITYBRAIN_MQTT_PASSWORD or mqtt.password)"

/* One row of the code table: the code in MQTT 3.1.1 (0: none), in MQTT 5
 * (0: none), and the words. */
static const struct reason {
    int v311, v5;
    const char *words;
} reasons[] = {
    {1, 0x84, "unacceptable protocol version: the broker does not speak this MQTT version "
              "(mqtt.version)"},
    {2, 0x85, "client id rejected: the broker does not accept this client id (mqtt.client_id)"},
    {3, 0x88, "server unavailable: the broker does not take connections now"},
    {4, 0x86, "bad user name or password" CHECK_LOGIN},
    {5, 0x87, "not authorised: the broker refused this client: a wrong user name or password "
              "(mosquitto answers both with this code) or a user without the right to "
              "connect" CHECK_LOGIN},
    {0x80, 0x80, "refused by the broker (unspecified error; for a subscription: not allowed "
                 "to subscribe to this filter, see the broker's access control)"},
    {0, 0x81, "malformed packet: the broker could not read what was sent"},
    {0, 0x82, "protocol error: the broker refused what was sent"},
    {0, 0x83, "refused by the broker (implementation specific error)"},
    {0, 0x89, "server busy: try again later"},
    {0, 0x8A, "banned: the broker refuses this client"},
    {0, 0x8B, "the broker is shutting down"},
    {0, 0x8C, "bad authentication method"},
    {0, 0x8D, "keep alive timeout: the broker heard nothing within the keep alive "
              "(mqtt.keepalive)"},
    {0, 0x8E, "session taken over: another client connected with the same client id "
              "(mqtt.client_id must be unique)"},
    {0, 0x8F, "topic filter invalid (mqtt.topic)"},
    {0, 0x90, "topic name invalid"},
    {0, 0x93, "receive maximum exceeded"},
    {0, 0x95, "packet too large for the broker"},
    {0, 0x96, "message rate too high"},
    {0, 0x97, "quota exceeded"},
    {0, 0x98, "disconnected by an administrator"},
    {0, 0x99, "payload format invalid"},
    {0, 0x9A, "retain not supported by the broker"},
    {0, 0x9B, "QoS not supported by the broker (mqtt.qos)"},
    {0, 0x9C, "use another server: the broker sends clients elsewhere (mqtt.broker)"},
    {0, 0x9D, "server moved: the broker has moved (mqtt.broker)"},
    {0, 0x9E, "shared subscriptions not supported by the broker (mqtt.topic)"},
    {0, 0x9F, "connection rate exceeded: too many connection attempts (mqtt.reconnect_min)"},
    {0, 0xA0, "maximum connect time reached"},
    {0, 0xA1, "subscription identifiers not supported by the broker"},
    {0, 0xA2, "wildcard subscriptions not supported by the broker (mqtt.topic)"},
};

const char *ingest__reason_words(int version, int code)
{
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
        if (code == (version == 5 ? reasons[i].v5 : reasons[i].v311) && code != 0)
            return reasons[i].words;
    return NULL;
}

/* Paho's own return codes (MQTTAsync.h) that a connect can end with. */
static const struct {
    int code;
    const char *words;
} paho_codes[] = {
    {MQTTASYNC_BAD_UTF8_STRING, "the client id, user name or a topic is not valid UTF-8"},
    {MQTTASYNC_NULL_PARAMETER, "a required setting is missing"},
    {MQTTASYNC_BAD_STRUCTURE, "the MQTT library refused the connection options"},
    {MQTTASYNC_SSL_NOT_SUPPORTED, "this build of the MQTT library has no TLS (ssl:// in "
                                  "mqtt.broker)"},
    {MQTTASYNC_BAD_PROTOCOL, "unknown scheme in mqtt.broker: use tcp://, ssl://, ws:// or "
                             "wss://"},
    {MQTTASYNC_BAD_MQTT_OPTION, "an option does not fit this MQTT version (mqtt.version)"},
    {MQTTASYNC_WRONG_MQTT_VERSION, "an option does not fit this MQTT version (mqtt.version)"},
    {MQTTASYNC_PERSISTENCE_ERROR, "the MQTT library's persistence failed"},
    {MQTTASYNC_DISCONNECTED, "the connection was closed"},
    {MQTTASYNC_OPERATION_INCOMPLETE, "the connection was closed before it completed"},
};

/* Splits url into host and port. Returns 0, or -1 when it has no host. */
static int url_host_port(const char *url, char *host, size_t hostlen, char *port, size_t portlen)
{
    static const struct {
        const char *scheme, *port;
    } schemes[] = {{"tcp://", "1883"}, {"mqtt://", "1883"}, {"ssl://", "8883"},
                   {"mqtts://", "8883"}, {"ws://", "80"}, {"wss://", "443"}};
    const char *p = strstr(url, "://");
    const char *def = "1883";
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
        if (strncmp(url, schemes[i].scheme, strlen(schemes[i].scheme)) == 0)
            def = schemes[i].port;
    p = p ? p + 3 : url;
    size_t n;
    const char *rest;
    if (*p == '[') { /* [IPv6]:port */
        const char *close = strchr(p, ']');
        if (!close)
            return -1;
        n = (size_t)(close - p - 1);
        p++;
        rest = close + 1;
    } else {
        n = strcspn(p, ":/");
        rest = p + n;
    }
    if (n == 0 || n >= hostlen)
        return -1;
    memcpy(host, p, n);
    host[n] = '\0';
    if (*rest == ':') {
        size_t m = strcspn(rest + 1, "/");
        if (m == 0 || m >= portlen)
            return -1;
        memcpy(port, rest + 1, m);
        port[m] = '\0';
    } else {
        snprintf(port, portlen, "%s", def);
    }
    return 0;
}

int ingest__failure_needs_probe(const struct ingest_failure *f)
{
    return f->code == MQTTASYNC_FAILURE && !(f->tls_errors && *f->tls_errors) &&
           !(f->message && strstr(f->message, "timeout"));
}

static int has(const char *text, const char *needle)
{
    return text && strcasestr(text, needle) != NULL;
}

/* The words for OpenSSL's errors of a failed TLS connect. */
static void tls_words(const struct ingest_failure *f, char *buf, size_t len)
{
    const char *t = f->tls_errors;
    const char *ca = f->ca_file && *f->ca_file ? f->ca_file : NULL;
    if (has(t, "certificate verify failed"))
        snprintf(buf, len,
                 "certificate not trusted: the broker's certificate was not signed by %s%s%s, "
                 "or it has expired (set mqtt.ca_file to the CA certificate, PEM, that signed "
                 "it)",
                 ca ? "the CA in mqtt.ca_file '" : "a CA this system trusts (mqtt.ca_file is "
                                                   "not set)",
                 ca ? ca : "", ca ? "'" : "");
    else if (has(t, "wrong version number") || has(t, "packet length too long") ||
             has(t, "unknown protocol") || has(t, "record layer failure"))
        snprintf(buf, len, "the broker's port does not speak TLS (use tcp:// in mqtt.broker, "
                           "or the broker's TLS port)");
    else if (has(t, "certificate required") || has(t, "bad certificate") ||
             has(t, "handshake failure") || has(t, "unknown ca"))
        snprintf(buf, len, "the broker refused the TLS handshake: it wants a client "
                           "certificate it trusts (mqtt.cert_file and mqtt.key_file)");
    else if (has(t, "unexpected eof"))
        snprintf(buf, len, "the broker closed the connection during the TLS handshake (it may "
                           "want a client certificate: mqtt.cert_file and mqtt.key_file)");
    else if (has(t, "no such file") || has(t, "PEM") || has(t, "system lib"))
        snprintf(buf, len, "cannot load the TLS files (mqtt.ca_file, mqtt.cert_file, "
                           "mqtt.key_file)");
    else {
        /* OpenSSL's first line, from its reason on: "error:0A000086:SSL
         * routines::REASON:file:line" */
        const char *r = t;
        for (int colons = 0; *r && colons < 4; r++)
            colons += *r == ':';
        int n = (int)strcspn(r, ":\n");
        snprintf(buf, len, "TLS failed: %.*s", n, n ? r : t);
    }
}

/* The words for a TCP probe's result, connecting to url's host and port
 * (addr: both, as "host:port" or "[v6]:port"). */
static void probe_words(const struct ingest_failure *f, const char *host, const char *port,
                        const char *addr, char *buf, size_t len)
{
    int tls = strncmp(f->url, "ssl://", 6) == 0 || strncmp(f->url, "mqtts://", 8) == 0 ||
              strncmp(f->url, "wss://", 6) == 0;
    switch (f->probe) {
    case INGEST_PROBE_NOT_TLS:
        snprintf(buf, len, "the broker's port %s does not speak TLS (use tcp:// in mqtt.broker, "
                           "or the broker's TLS port)",
                 port);
        return;
    case 0:
        if (tls)
            snprintf(buf, len,
                     "certificate does not match the host: the broker's certificate does not "
                     "name '%s' (use a name or address the certificate lists in mqtt.broker, "
                     "or set mqtt.tls_verify = false)",
                     host);
        else
            snprintf(buf, len,
                     "the broker at %s closed the connection before answering (a TLS port "
                     "reached with tcp://? then use ssl:// and mqtt.ca_file)",
                     addr);
        return;
    case INGEST_PROBE_BAD_URL:
        snprintf(buf, len, "no host and port in mqtt.broker '%s'", f->url);
        return;
    case INGEST_PROBE_NO_HOST:
        snprintf(buf, len, "host name not found: '%s' does not resolve (check mqtt.broker)", host);
        return;
    case ECONNREFUSED:
        snprintf(buf, len,
                 "connection refused: nothing listens on %s (is the broker running? is the "
                 "port in mqtt.broker right?)",
                 addr);
        return;
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EADDRNOTAVAIL:
        snprintf(buf, len, "host unreachable: no route to %s (check mqtt.broker and the network)",
                 host);
        return;
    case ETIMEDOUT:
        snprintf(buf, len,
                 "no answer from %s (a firewall dropping the connection, or a wrong address "
                 "in mqtt.broker)",
                 addr);
        return;
    default:
        snprintf(buf, len, "cannot reach %s: %s", addr,
                 f->probe > 0 ? strerror(f->probe) : "no probe made");
    }
}

void ingest__explain(const struct ingest_failure *f, char *buf, size_t len)
{
    if (!len)
        return;
    char host[256] = "?", port[16] = "?", addr[300];
    url_host_port(f->url, host, sizeof host, port, sizeof port);
    snprintf(addr, sizeof addr, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
    const char *words = f->code > 0 ? ingest__reason_words(f->version, f->code) : NULL;
    if (words) {
        snprintf(buf, len, "%s", words);
        return;
    }
    if (f->code > 0) {
        snprintf(buf, len, "the broker refused the connection: %s",
                 f->version == 5 ? MQTTReasonCode_toString((enum MQTTReasonCodes)f->code)
                                 : "unknown return code");
        return;
    }
    for (size_t i = 0; i < sizeof paho_codes / sizeof paho_codes[0]; i++)
        if (f->code == paho_codes[i].code) {
            snprintf(buf, len, "%s", paho_codes[i].words);
            return;
        }
    if (f->tls_errors && *f->tls_errors) {
        tls_words(f, buf, len);
        return;
    }
    if (f->message && strstr(f->message, "timeout")) {
        snprintf(buf, len,
                 "no answer from %s in time (a firewall dropping the connection, or a wrong "
                 "address in mqtt.broker)",
                 addr);
        return;
    }
    if (f->probe != INGEST_PROBE_NONE) {
        probe_words(f, host, port, addr, buf, len);
        return;
    }
    snprintf(buf, len, "cannot connect to %s", addr);
}

/* Whether a TLS handshake succeeds on the connected socket fd (without
 * verifying the certificate: only whether the port speaks TLS). */
static int tls_handshake_ok(int fd, const char *host, int timeout_ms)
{
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
        return 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    int ok = ssl && SSL_set_fd(ssl, fd) == 1 && SSL_set_tlsext_host_name(ssl, host) == 1 &&
             SSL_connect(ssl) == 1;
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error(); /* this thread's queue: nothing for Paho to see */
    return ok;
}

int ingest__probe(const char *url, int timeout_ms)
{
    char host[256], port[16];
    if (url_host_port(url, host, sizeof host, port, sizeof port) < 0)
        return INGEST_PROBE_BAD_URL;
    int tls = strncmp(url, "ssl://", 6) == 0 || strncmp(url, "mqtts://", 8) == 0 ||
              strncmp(url, "wss://", 6) == 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return INGEST_PROBE_NO_HOST;
    int err = ETIMEDOUT;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            err = 0;
        } else if (errno != EINPROGRESS) {
            err = errno;
        } else {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int r = poll(&p, 1, timeout_ms);
            socklen_t sl = sizeof err;
            if (r <= 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
                err = errno;
        }
        if (err == 0 && tls && !tls_handshake_ok(fd, host, timeout_ms))
            err = INGEST_PROBE_NOT_TLS;
        close(fd);
        if (err == 0 || err == INGEST_PROBE_NOT_TLS)
            break;
    }
    freeaddrinfo(res);
    return err;
}
