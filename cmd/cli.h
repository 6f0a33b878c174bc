/* What the operator's terminal commands share (ack, alerts, history, audit,
 * silence, sensors): one request to the running daemon's HTTP API, times
 * given as milliseconds or relative to now, times shown in UTC.
 *
 * The rule they follow: a command that changes something (ack, silence add,
 * silence expire) asks the running daemon, so its state stays the truth and
 * the change goes through the engine and the audit log; a command that only
 * reads (alerts, history, audit, silence list, sensors) reads the database
 * file on its own read-only connection, safe while `citybrain run` writes. */
#ifndef CB_CMD_CLI_H
#define CB_CMD_CLI_H

#include <stdint.h>

/* The daemon's API when --api is not given. */
#define CMD_DEFAULT_API "http://127.0.0.1:8080"

/* Sends `method` to api + path (path starts with '/', already escaped) with
 * a JSON body (NULL: none), the bearer token from CITYBRAIN_API_TOKEN. On a
 * 2xx answer prints its body on stdout. Otherwise prints on stderr, after
 * "citybrain <cmd>: ", the API's error message (or why no answer came).
 * Returns the exit code: 0 (2xx), 1 (an error answer, no answer), 2 (no
 * token in the environment). */
int cmd__api_call(const char *cmd, const char *api, const char *method, const char *path,
                  const char *body);

/* Reads a time: milliseconds since the epoch, or +D / -D (a duration such
 * as 30m or 2h) from `now`. Returns 0, or -1. */
int cmd__parse_time(const char *s, int64_t now, int64_t *out);

/* "2024-11-24 01:35:20" (UTC) for ms since the epoch; "-" for 0. */
void cmd__utc(int64_t ms, char out[32]);

#endif
