/* The integration-test harness: a private mosquitto, the real citybrain
 * binary, MQTT publishers and collecting subscribers (Paho's synchronous
 * MQTTClient), polling waits and read-only SQLite queries.
 *
 * Ownership: everything the harness hands out (brokers, processes,
 * subscribers, publishers, strings from cb_h_pathf / cb_h_proc_stderr) is
 * owned by the harness and released by cb_h_teardown(), which also kills every
 * process still running and removes the per-test temp dir. So a test that
 * fails half-way (CU_ASSERT_FATAL) leaks nothing and leaves no process behind:
 * register suites with cb_h_add_suite(), which installs cb_h_setup /
 * cb_h_teardown around every test. An atexit handler runs the teardown too.
 *
 * Not thread-safe itself (tests drive it from one thread); the subscriber's
 * message list is filled on Paho's thread under a mutex.
 *
 * Environment: CB_BIN (default build/asan/citybrain), CB_KEEP_TMP=1 keeps the
 * temp dirs for a post-mortem, CB_H_VERBOSE=1 prints what the harness does. */
#ifndef CB_TESTS_SUPPORT_HARNESS_H
#define CB_TESTS_SUPPORT_HARNESS_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- per test ------------------------------------------------------------ */

/* Creates the per-test temp dir (CUnit set-up function). */
void cb_h_setup(void);
/* Kills every process, disconnects every client, frees everything handed out
 * and removes the temp dir (CUnit tear-down function). Idempotent. */
void cb_h_teardown(void);
/* CU_add_suite with cb_h_setup / cb_h_teardown around every test. */
CU_pSuite cb_h_add_suite(const char *name);

/* The per-test temp dir (creates it if cb_h_setup was not run). */
const char *cb_h_dir(void);
/* "<tmpdir>/<formatted name>"; owned by the harness until teardown. */
const char *cb_h_pathf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* printf into a harness-owned string (until teardown). */
const char *cb_h_strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Mounts a tmpfs of `size` ("8m", as mount(8) takes it) at path (created if
 * need be), a disk the test can fill; teardown unmounts it before removing the
 * temp dir. Needs root (CAP_SYS_ADMIN): returns -1 with errno otherwise. */
int cb_h_tmpfs(const char *path, const char *size);
/* Writes a file (creates or truncates). Returns 0 or -1. */
int cb_h_write_file(const char *path, const void *data, size_t len);
/* Reads a whole file into a harness-owned NUL-terminated string; NULL if absent. */
const char *cb_h_read_file(const char *path, size_t *len);

/* A free TCP port on 127.0.0.1 (bind port 0, read it back, close). */
int cb_h_free_port(void);
/* Polls until 127.0.0.1:port accepts a connection. Returns 0, or -1 on timeout. */
int cb_h_wait_port(int port, int timeout_ms);

/* Polls pred(ctx) every 10 ms until it returns non-zero or timeout_ms passes.
 * Returns 1 when the predicate held, 0 on timeout. For waiting on external
 * processes only, never on a rule window (time is injected for those). */
int cb_h_wait_until(int (*pred)(void *ctx), void *ctx, int timeout_ms);

/* Wall-clock milliseconds. */
int64_t cb_h_now_ms(void);

/* Runs a shell command (sh -c) and waits; returns its exit status, or -1.
 * For test fixtures only (openssl, mosquitto_passwd). Output goes to
 * <tmpdir>/sh.log. */
int cb_h_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Makes throwaway TLS files in the temp dir with openssl: a CA (ca.crt,
 * ca.key), a server certificate for 127.0.0.1 signed by it (srv.crt,
 * srv.key) and a second, unrelated CA (other.crt, other.key). 0 or -1. */
int cb_h_make_test_certs(void);
/* mosquitto configuration lines for a TLS listener on 127.0.0.1:port with
 * the files of cb_h_make_test_certs (harness-owned). */
const char *cb_h_tls_listener_conf(int port);

/* ---- processes ------------------------------------------------------------ */

struct cb_h_proc;

/* Spawns `path` with argv (argv[0] included, NULL-terminated) and the current
 * environment plus env ("KEY=VALUE" entries overriding, NULL-terminated, may
 * be NULL). stdout and stderr go to <tmpdir>/<name>.stdout / .stderr.
 * Returns NULL on failure. */
struct cb_h_proc *cb_h_spawn(const char *name, const char *path, const char *const *argv,
                             const char *const *env);
/* Spawns citybrain ($CB_BIN) with args after the program name (NULL-terminated). */
struct cb_h_proc *cb_h_citybrain(const char *const *args, const char *const *env);
pid_t cb_h_proc_pid(const struct cb_h_proc *p);
int cb_h_proc_signal(struct cb_h_proc *p, int sig);
/* Waits for exit. Returns the exit code (0..255), 128+N when killed by signal
 * N, or -1 on timeout (the process keeps running). */
int cb_h_proc_wait(struct cb_h_proc *p, int timeout_ms);
/* 1 while the process has not exited. */
int cb_h_proc_running(struct cb_h_proc *p);
/* SIGKILL and reap. */
void cb_h_proc_kill(struct cb_h_proc *p);
/* The stderr file's current content (harness-owned), "" when empty. */
const char *cb_h_proc_stderr(struct cb_h_proc *p);
const char *cb_h_proc_stderr_path(const struct cb_h_proc *p);
/* The stdout file's current content (harness-owned), "" when empty. */
const char *cb_h_proc_stdout(struct cb_h_proc *p);

/* ---- broker ----------------------------------------------------------------- */

struct cb_h_broker;

/* Starts /usr/sbin/mosquitto on a free loopback port with a config generated
 * in the temp dir: anonymous access, persistence in the temp dir (a restart
 * keeps sessions and queued QoS 1 messages), logs to <tmpdir>/mosquitto-N.log.
 * extra_conf (may be NULL) is appended verbatim (another listener, a password
 * file...). Waits until the port accepts. NULL on failure. */
struct cb_h_broker *cb_h_broker_start(const char *extra_conf);
/* Same, with listener settings under our control: when anonymous is 0, the
 * first listener requires a password (extra_conf names the password_file). */
struct cb_h_broker *cb_h_broker_start_opts(const char *extra_conf, int anonymous);
int cb_h_broker_port(const struct cb_h_broker *b);
/* "tcp://127.0.0.1:PORT" (harness-owned). */
const char *cb_h_broker_url(const struct cb_h_broker *b);
/* SIGTERM and wait (mosquitto saves its persistence file). Returns 0 or -1. */
int cb_h_broker_stop(struct cb_h_broker *b);
/* Sends sig to the broker's process (SIGSTOP freezes it with its sockets
 * open; SIGKILL kills it without saving, and reaps it). 0 or -1. */
int cb_h_broker_signal(struct cb_h_broker *b, int sig);
/* Starts again on the same port with the same config and waits. 0 or -1. */
int cb_h_broker_restart(struct cb_h_broker *b);
/* Additional port to wait for (e.g. a TLS listener in extra_conf) after a
 * (re)start. */
void cb_h_broker_also_wait(struct cb_h_broker *b, int port);

/* ---- MQTT clients (Paho MQTTClient) ----------------------------------------- */

struct cb_h_mqtt_opts {
    const char *client_id;  /* NULL = generated */
    const char *username;
    const char *password;
    const char *ca_file;    /* for ssl:// */
    int persistent;         /* 1 = clean session off (keeps subscriptions) */
    int keepalive_s;        /* 0 = 10 s */
    int mqtt_version;       /* 0 = default (3.1.1), 5 = MQTT 5 */
};

struct cb_h_pub;

/* Connects a publisher (clean session). opts may be NULL. NULL on failure. */
struct cb_h_pub *cb_h_pub_connect(const char *url, const struct cb_h_mqtt_opts *opts);
/* Publishes and, for QoS 1, waits for the PUBACK. Returns 0 or a Paho code. */
int cb_h_pub_send(struct cb_h_pub *p, const char *topic, const void *payload, size_t len,
                  int qos, int retained);
/* cb_h_pub_send with a NUL-terminated payload. */
int cb_h_pub_str(struct cb_h_pub *p, const char *topic, const char *payload, int qos);
void cb_h_pub_disconnect(struct cb_h_pub *p);
/* One-shot: connect, publish, disconnect. Returns 0 or a Paho code. */
int cb_h_publish(const char *url, const char *topic, const void *payload, size_t len, int qos);

struct cb_h_msg {
    const char *topic;   /* NUL-terminated */
    const char *payload; /* NUL-terminated copy (len bytes before the NUL) */
    size_t len;
    int qos;
    int retained;
};

struct cb_h_sub;

/* Connects and subscribes to filter at qos; messages are collected (in
 * arrival order) on Paho's thread. opts may be NULL. NULL on failure. */
struct cb_h_sub *cb_h_sub_start(const char *url, const char *filter, int qos,
                                const struct cb_h_mqtt_opts *opts);
size_t cb_h_sub_count(struct cb_h_sub *s);
/* Copies message i into *out; pointers stay valid until teardown. 0 or -1. */
int cb_h_sub_get(struct cb_h_sub *s, size_t i, struct cb_h_msg *out);
/* Waits until at least n messages arrived. Returns 1, or 0 on timeout. */
int cb_h_sub_wait_count(struct cb_h_sub *s, size_t n, int timeout_ms);
void cb_h_sub_stop(struct cb_h_sub *s);

/* ---- SQLite (read-only) --------------------------------------------------------- */

/* Runs a query returning one integer (first column of the first row) on a
 * read-only connection. Returns 0 with *out, or -1 (no file, SQL error, no row). */
int cb_h_sql_int(const char *db_path, int64_t *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same for a double. */
int cb_h_sql_double(const char *db_path, double *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* SELECT count(*) FROM table [WHERE where]; -1 on error. */
int64_t cb_h_sql_count(const char *db_path, const char *table, const char *where);

#endif
