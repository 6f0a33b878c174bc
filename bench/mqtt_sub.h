/* The connect-subscribe-wait part of the benchmark's subscribers (count_sub,
 * alert_sub): one Paho MQTTAsync client per process. */
#ifndef CB_BENCH_MQTT_SUB_H
#define CB_BENCH_MQTT_SUB_H

#include <MQTTAsync.h>
#include <stdint.h>
#include <time.h>

/* Nanoseconds of clock c (CLOCK_MONOTONIC, CLOCK_REALTIME). */
int64_t bench_clock_ns(clockid_t c);

/* Creates a client named "NAME-PID" on broker, connects (clean session,
 * max_inflight in flight when > 0, TCP_NODELAY when nodelay), subscribes to
 * filter at qos and waits at most 10 s for the grant; then touches the file
 * ready (when not NULL) so the driver knows it may publish. on_lost may be
 * NULL. Returns 0, or -1 with a message on stderr (then *c is destroyed). */
int bench_sub_open(MQTTAsync *c, const char *name, const char *broker, const char *filter,
                   const char *ready, int qos, int max_inflight, int nodelay, MQTTAsync_messageArrived *on_message,
                   MQTTAsync_connectionLost *on_lost);

/* Waits until *got reaches count, *lost is set (may be NULL), timeout s have
 * passed, or idle s have passed since *last_ns (CLOCK_MONOTONIC, updated by
 * the message callback) once the first message came. */
void bench_sub_wait(const uint64_t *got, const int64_t *last_ns, const int *lost,
                    uint64_t count, double timeout, double idle);

/* Disconnects (1 s at most) and destroys the client. */
void bench_sub_close(MQTTAsync *c);

#endif
