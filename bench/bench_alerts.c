/* Benchmark of the alert notification path: transitions through
 * cb_alerts_on_transition (persistence queued to the alert store's writer,
 * event JSON, channel) into a real mosquitto over Paho MQTTAsync at QoS 1, and
 * a count-only subscriber measuring the latency from the transition call to
 * the PUBLISH received.
 *
 *   phase 1 (burst): N transitions as fast as the loop takes them
 *   phase 2 (paced): 1000 transitions/s for 3 s, latency percentiles
 *
 * Prints `key value` lines. Usage: bench_alerts [N] (default 20000).
 * Needs `mosquitto` on PATH; starts it on a free loopback port. */
#include <MQTTAsync.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alerts/alerts.h"
#include "base/clock.h"
#include "base/config.h"
#include "storage/storage.h"
#include "base/log.h"
#include "tests/support/store_fixture.h"

#define MAXN 200000

static int64_t *sent_us;  /* per sequence number: when the transition was made */
static int64_t *lat_us;   /* per sequence number: latency, 0 until received */
static volatile long received;
static volatile int sub_ready, pub_ready;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &l))
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static pid_t start_broker(int port, const char *dir)
{
    char conf[256];
    snprintf(conf, sizeof conf, "%s/mosquitto.conf", dir);
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    fprintf(f, "listener %d 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
               "max_inflight_messages 0\n", port);
    fclose(f);
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        execlp("mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) { /* wait until it listens, at most 5 s */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return pid;
        usleep(50000);
    }
    kill(pid, SIGTERM);
    return -1;
}

static int on_arrived(void *ctx, char *topic, int tlen, MQTTAsync_message *m)
{
    (void)ctx;
    (void)tlen;
    const char *p = memmem(m->payload, (size_t)m->payloadlen, "\"id\":\"bench/n=", 14);
    if (p) {
        long n = strtol(p + 14, NULL, 10);
        if (n >= 0 && n < MAXN && !lat_us[n])
            lat_us[n] = cb_mono_us() - sent_us[n];
    }
    __atomic_fetch_add(&received, 1, __ATOMIC_RELAXED);
    MQTTAsync_freeMessage(&m);
    MQTTAsync_free(topic);
    return 1;
}

static void on_subscribed(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    sub_ready = 1;
}

static void on_sub_connected(void *ctx, MQTTAsync_successData *r)
{
    (void)r;
    MQTTAsync c = ctx;
    MQTTAsync_responseOptions o = MQTTAsync_responseOptions_initializer;
    o.onSuccess = on_subscribed;
    o.context = c;
    MQTTAsync_subscribe(c, "bench/alerts/#", 1, &o);
}

static void on_pub_connected(void *ctx, MQTTAsync_successData *r)
{
    (void)ctx;
    (void)r;
    pub_ready = 1;
}

static MQTTAsync client(const char *url, const char *id, int sub)
{
    MQTTAsync c;
    MQTTAsync_createOptions co = MQTTAsync_createOptions_initializer;
    co.sendWhileDisconnected = 0;
    co.maxBufferedMessages = MAXN;
    if (MQTTAsync_createWithOptions(&c, url, id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &co) !=
        MQTTASYNC_SUCCESS)
        return NULL;
    if (sub)
        MQTTAsync_setCallbacks(c, c, NULL, on_arrived, NULL);
    MQTTAsync_connectOptions o = MQTTAsync_connectOptions_initializer;
    o.cleansession = 1;
    o.keepAliveInterval = 30;
    o.maxInflight = 65535;
    o.onSuccess = sub ? on_sub_connected : on_pub_connected;
    o.context = c;
    if (MQTTAsync_connect(c, &o) != MQTTASYNC_SUCCESS)
        return NULL;
    return c;
}

/* The alerts module's publish hook: what the daemon does with cb_mqtt_publish. */
static int publish(void *ctx, const char *topic, const void *payload, size_t len, int qos)
{
    MQTTAsync c = ctx;
    MQTTAsync_message m = MQTTAsync_message_initializer;
    m.payload = (void *)payload;
    m.payloadlen = (int)len;
    m.qos = qos;
    m.retained = 0;
    for (int tries = 0; tries < 1000; tries++) {
        int rc = MQTTAsync_sendMessage(c, topic, &m, NULL);
        if (rc == MQTTASYNC_SUCCESS)
            return 0;
        usleep(1000); /* Paho's buffer is full: let it drain */
    }
    return -1;
}

static void fire(struct cb_alerts *a, long n)
{
    char id[48], sensor[24];
    snprintf(id, sizeof id, "bench/n=%ld", n);
    snprintf(sensor, sizeof sensor, "s%ld", n);
    struct cb_label l[] = {{"district", "d07"}, {"sensor", sensor}};
    int64_t now = cb_wall_ms();
    struct cb_transition t = {.id = id, .rule = "bench", .state = CB_ALERT_FIRING,
                              .severity = CB_SEV_MAJOR, .labels = l, .nlabels = 2, .at = now,
                              .since = now, .message = "bench: level above 3.2 m"};
    sent_us[n] = cb_mono_us();
    cb_alerts_on_transition(a, &t);
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int wait_received(long want, int64_t max_ms)
{
    int64_t end = cb_mono_ms() + max_ms;
    while (__atomic_load_n(&received, __ATOMIC_RELAXED) < want && cb_mono_ms() < end)
        usleep(1000);
    return __atomic_load_n(&received, __ATOMIC_RELAXED) >= want;
}

static void on_closed(void *ctx) { *(int *)ctx = 1; }

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    const long paced = 3000;
    if (n < 1 || n + paced > MAXN) {
        fprintf(stderr, "usage: bench_alerts [N <= %d]\n", MAXN - 3000);
        return 2;
    }
    cb_log_threshold = CB_LOG_ERROR;
    sent_us = calloc(MAXN, sizeof *sent_us);
    lat_us = calloc(MAXN, sizeof *lat_us);
    char dir[] = "/tmp/cb_bench_alerts_XXXXXX", db[80], url[64], err[256];
    if (!sent_us || !lat_us || !mkdtemp(dir))
        return 1;
    snprintf(db, sizeof db, "%s/a.db", dir);
    if (cb_t_create_schema(db))
        return 1;
    int port = free_port();
    pid_t broker = start_broker(port, dir);
    if (broker < 0) {
        fprintf(stderr, "bench_alerts: cannot start mosquitto\n");
        return 1;
    }
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    MQTTAsync sub = client(url, "bench-sub", 1), pub = client(url, "bench-pub", 0);
    int64_t until = cb_mono_ms() + 5000;
    while ((!sub_ready || !pub_ready) && cb_mono_ms() < until)
        usleep(1000);
    if (!sub || !pub || !sub_ready || !pub_ready) {
        fprintf(stderr, "bench_alerts: MQTT clients did not connect\n");
        kill(broker, SIGTERM);
        return 1;
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    struct cb_config cfg;
    struct cb_config_error e;
    cb_config_defaults(&cfg);
    cfg.alerts_storm_window_ms = 0; /* every transition is its own notification */
    cb_config_set(&cfg, "alerts.channel", "mq type=mqtt prefix=bench/alerts", 1, "b", &e);
    cb_config_set(&cfg, "alerts.default_notify", "mq", 1, "b", &e);
    struct cb_alerts_hooks h = {.ctx = pub, .publish = publish};
    struct cb_alerts *a = cb_alerts_new(&loop, &cfg, db, &h, err, sizeof err);
    if (!a) {
        fprintf(stderr, "bench_alerts: %s\n", err);
        kill(broker, SIGTERM);
        return 1;
    }

    /* phase 1: burst */
    int64_t t0 = cb_mono_us();
    for (long i = 0; i < n; i++)
        fire(a, i);
    int64_t t1 = cb_mono_us();
    int all = wait_received(n, 60000);
    int64_t t2 = cb_mono_us();
    cb_alerts_sync(a);
    int64_t t3 = cb_mono_us();

    /* phase 2: paced at 1000/s */
    long base = n;
    for (long i = 0; i < paced; i++) {
        int64_t due = t3 + 2000 + i * 1000;
        while (cb_mono_us() < due) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        fire(a, base + i);
    }
    int all2 = wait_received(n + paced, 30000);
    int64_t *l = malloc((size_t)paced * sizeof *l);
    long nl = 0;
    for (long i = 0; i < paced; i++)
        if (lat_us[base + i])
            l[nl++] = lat_us[base + i];
    qsort(l, (size_t)nl, sizeof *l, cmp64);
    int64_t *lb = malloc((size_t)n * sizeof *lb);
    long nb = 0;
    for (long i = 0; i < n; i++)
        if (lat_us[i])
            lb[nb++] = lat_us[i];
    qsort(lb, (size_t)nb, sizeof *lb, cmp64);

    printf("alerts_transitions %ld\n", n);
    printf("alerts_transitions_per_s %.0f\n", n / ((t1 - t0) / 1e6));
    printf("alerts_end_to_end_per_s %.0f\n", all ? n / ((t2 - t0) / 1e6) : 0.0);
    printf("alerts_burst_received %ld\n", nb);
    if (nb)
        printf("alerts_burst_p99_ms %.3f\n", lb[(nb * 99) / 100 - (nb >= 100)] / 1000.0);
    printf("alerts_store_drain_ms %.1f\n", (t3 - t2) / 1000.0);
    printf("alerts_paced_rate_per_s 1000\n");
    printf("alerts_paced_received %ld\n", nl);
    if (nl) {
        printf("alerts_publish_p50_ms %.3f\n", l[nl / 2] / 1000.0);
        printf("alerts_publish_p99_ms %.3f\n", l[(nl * 99) / 100 - (nl >= 100)] / 1000.0);
        printf("alerts_publish_max_ms %.3f\n", l[nl - 1] / 1000.0);
    }
    int closed = 0;
    cb_alerts_close(a, on_closed, &closed);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    MQTTAsync_disconnect(sub, &d);
    MQTTAsync_disconnect(pub, &d);
    usleep(100000);
    MQTTAsync_destroy(&sub);
    MQTTAsync_destroy(&pub);
    kill(broker, SIGTERM);
    waitpid(broker, NULL, 0);
    cb_config_free(&cfg);
    free(l);
    free(lb);
    free(sent_us);
    free(lat_us);
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) {
    }
    return all && all2 ? 0 : 1;
}
