/* The daemon: wires ingest → (storage, rules) → alerts → (notifiers, API) on
 * one libuv loop and runs until SIGINT/SIGTERM. */
#ifndef CB_CMD_DAEMON_H
#define CB_CMD_DAEMON_H

#include "base/config.h"

/* Runs the engine with a validated configuration. Returns the exit code:
 * 0 after a clean shutdown, 1 when start-up failed. */
int cb_daemon_run(const struct cb_config *cfg);
/* --check-config: compiles the rules as well; prints "configuration OK".
 * Returns 0 or 1. */
int cb_daemon_check(const struct cb_config *cfg);

#endif
