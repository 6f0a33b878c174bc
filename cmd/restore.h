/* Rebuilding the engine's state on start (cmd/restore.c). */
#ifndef CB_CMD_RESTORE_H
#define CB_CMD_RESTORE_H

#include <stddef.h>
#include <stdint.h>

#include "alerts/alerts.h"
#include "rules/rules.h"
#include "storage/storage.h"

/* Feeds every stored instance (pending, firing, cooling down) to
 * cb_engine_restore, before any sample; logs those whose rule is gone or
 * changed (the engine ends them at its first tick). Returns the number of
 * stored instances read, or -1 on a read error. */
int cmd__restore_instances(struct cb_engine *e, struct cb_alerts *alerts);

/* Rebuilds what the verdicts read from the store at db_path, so a restart
 * changes none of them (rules.md, "Time and evaluation"): the rule windows
 * from the samples with ts >= now - longest window - lateness (avg(level, 5m)
 * right after a restart equals what it was before), then the latest value
 * and time of every series of every sensor the store knows, however old
 * (`level`, `age()`, and the members of group instances: a silent sensor is
 * still a member, unknown, not forgotten). Returns 0, or -1 with err. */
int cmd__prime_engine(struct cb_engine *e, const char *db_path, int64_t now, int64_t lateness_ms,
                      char *err, size_t errlen);

#endif
