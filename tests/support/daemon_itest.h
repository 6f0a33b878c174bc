/* Helpers for the daemon-level integration suites (itest_crash,
 * itest_alerts_restart, itest_reload, itest_daemon): set up a broker and a
 * daemon's arguments, start `citybrain run` and wait until it is subscribed,
 * talk HTTP to its API, read one Prometheus series, count alert transitions
 * of a given state among the messages a harness subscriber got.
 *
 * Built on tests/support/harness.h; everything returned (strings, processes)
 * is harness-owned and released by cb_h_teardown(). Test thread only. */
#ifndef CB_TESTS_SUPPORT_DAEMON_ITEST_H
#define CB_TESTS_SUPPORT_DAEMON_ITEST_H

#include "tests/support/harness.h"

/* A generous bound for anything a loaded 2-core machine must do (start-up
 * under ASan, a restart, a notification): the happy path takes far less. */
#define CBD_TIMEOUT_MS 20000

/* Spawns citybrain with args (after the program name, NULL-terminated) and
 * env (may be NULL), then waits until its stderr shows that the MQTT
 * subscription was granted ("subscribed to"), and, when http_port > 0, that
 * the API accepts connections. Returns the process, or NULL when it exited or
 * did not get there within CBD_TIMEOUT_MS (its stderr is printed then). */
struct cb_h_proc *cbd_start(const char *const *args, const char *const *env, int http_port);

/* Runs citybrain with args (after the program name, NULL-terminated) and env
 * (may be NULL) to completion; returns its exit status (-1 on timeout), with
 * its stderr in *err (harness-owned). A sanitizer report fails the test. */
int cbd_run_to_exit(const char *const *args, const char *const *env, const char **err);

/* Runs citybrain with args (as cbd_run_to_exit, no env) and checks that it
 * exits non-zero with `want` in its stderr (printed when it is not). */
void cbd_refused(const char *const *args, const char *want);

/* Writes text to the file `name` in the test's directory; returns its path
 * (harness-owned). Fails the test when it cannot. */
const char *cbd_write_text(const char *name, const char *text);

/* Waits until p's stderr contains needle. 1 when it does, 0 on timeout. */
int cbd_wait_log(struct cb_h_proc *p, const char *needle, int timeout_ms);

/* Waits until p's stderr holds needle at least n times. 1, or 0 on timeout. */
int cbd_wait_log_n(struct cb_h_proc *p, const char *needle, size_t n, int timeout_ms);

/* Occurrences of needle in p's stderr so far. */
size_t cbd_log_count(struct cb_h_proc *p, const char *needle);

/* One HTTP request to 127.0.0.1:port with libcurl. token and body may be NULL.
 * Returns the status code (0 when no answer came), with the body in *resp
 * (harness-owned, "" when empty) if resp is not NULL. */
long cbd_http(int port, const char *method, const char *path, const char *token,
              const char *body, const char **resp);

/* cbd_http with the body's Content-Type given (a form, as Grafana posts). */
long cbd_http_type(int port, const char *method, const char *path, const char *token,
                   const char *ctype, const char *body, const char **resp);

/* The value of one series of GET /metrics, written exactly as in the
 * exposition (`name` or `name{labels}`). Returns 0 with *out, -1 when the
 * request failed or the series is absent. */
int cbd_metric(int port, const char *series, double *out);

/* Waits until the /metrics series (as for cbd_metric) is at least want.
 * 1 when it is, 0 on timeout. */
int cbd_wait_metric(int port, const char *series, double want, int timeout_ms);

/* Waits until the samples table of db holds at least want rows. 1, or 0 on
 * timeout. */
int cbd_wait_rows(const char *db, int64_t want, int timeout_ms);

/* Messages received by s whose JSON "state" is state (and, when rule is not
 * NULL, whose "rule" is rule). */
size_t cbd_count_state(struct cb_h_sub *s, const char *state, const char *rule);

/* Waits until cbd_count_state(s, state, rule) >= n. 1, or 0 on timeout. */
int cbd_wait_state(struct cb_h_sub *s, const char *state, const char *rule, size_t n,
                   int timeout_ms);

/* s percent-encoded for a URL path segment (harness-owned). */
const char *cbd_escape(const char *s);

/* The "id" of the first message received by s whose "state" is state; NULL
 * when none (harness-owned). */
const char *cbd_first_id(struct cb_h_sub *s, const char *state);

/* The set-up of the suites that restart the daemon: a broker, a subscriber to
 * citybrain/alerts/# that lives across the restarts, and the arguments of
 * `citybrain run` against them (client id, the API on a free port with a
 * read-write token, no storm window). */
struct cbd_rig {
    struct cb_h_broker *b;
    struct cb_h_sub *alerts;
    int port;
    const char *args[32];
    const char *env[2];
};

/* Fills r (failing the test when the broker or subscriber cannot start);
 * extra: more `run` arguments, NULL-terminated (at most 16: --db, --rules...). */
void cbd_rig_init(struct cbd_rig *r, const char *client_id, const char *token,
                  const char *const *extra);

/* cbd_start with the rig's arguments. */
struct cb_h_proc *cbd_rig_start(struct cbd_rig *r);

/* Runs a command of citybrain to its end (args after the program name,
 * NULL-terminated; env may be NULL): an operator at the terminal. Returns its
 * exit status (-1 when it did not end within CBD_TIMEOUT_MS), with its
 * stdout in *out and its stderr in *err when those are not NULL
 * (harness-owned). */
int cbd_cli(const char *const *args, const char *const *env, const char **out,
            const char **err);

/* A TCP connection to 127.0.0.1:port: the fd, or -1. */
int cbd_raw_connect(int port);
/* Sends the whole string s. 0, or -1. */
int cbd_raw_send(int fd, const char *s);
/* Reads until `until` is in the text read so far (NULL: until the peer
 * closes) or timeout_ms passes. Returns 1 when found / closed, 0 on timeout.
 * buf (NUL-terminated, appended to) holds at most cap-1 bytes (the rest is
 * read and dropped). */
int cbd_raw_read(int fd, char *buf, size_t cap, const char *until, int timeout_ms);

/* Sends SIGTERM and waits for the exit. Returns the exit status, -1 on timeout. */
int cbd_stop(struct cb_h_proc *p);

#endif
