/* The daemon: wires ingest → (storage, rules) → alerts → (notifiers, API) on
 * one libuv loop and runs until SIGINT/SIGTERM. */
#ifndef CB_CMD_DAEMON_H
#define CB_CMD_DAEMON_H

#include "base/config.h"

/* Runs the engine with a configuration that passed cb_config_validate; first
 * validates what --check-config does (cmd__validate_run: channels, rules,
 * notify names, no rules at all) and starts nothing when that fails. Returns
 * the exit code: 0 after a clean shutdown, 1 when validation or start-up
 * failed, 2 when there is no rule to run (rules.allow_none unset). */
int cb_daemon_run(const struct cb_config *cfg);
/* --check-config: exactly the validation cb_daemon_run does before it starts;
 * prints the diagnostics on stderr and "configuration OK" on stdout. Returns
 * 0, 1 or 2, as cb_daemon_run would exit. */
int cb_daemon_check(const struct cb_config *cfg);

#endif
