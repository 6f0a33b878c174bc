/* Federation (docs/federation.md): what one engine shares with the others
 * through the broker. The city tier's export: every alert instance's state
 * as numeric samples a city engine ingests like any sensor's. */
#ifndef CB_CMD_FEDERATION_H
#define CB_CMD_FEDERATION_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"
#include "rules/rules.h"

/* The export topic of instance t: TOPIC/<rule>/<engine>/<label value>/...
 * (labels in the instance's order; '/', '+' and '#' in a value become '_',
 * an empty value is "_"). Written into out (reset first). */
void cmd__export_topic(struct cb_strbuf *out, const char *topic, const char *engine,
                       const struct cb_transition *t);

/* The export payload of instance t as a SenML pack (RFC 8428), time in
 * seconds: [{"bn":"<engine>:<id>","bt":S,"n":"active","v":0|1},
 * {"n":"severity","v":0..4}]: active 1 while firing (escalated,
 * acknowledged), 0 once resolved; severity info 1, warning 2, major 3,
 * critical 4, 0 when not active. at_ms is the samples' time. Returns 0, or
 * -1 when t's state exports nothing (pending, inactive, progress). */
int cmd__export_payload(struct cb_strbuf *out, const char *engine,
                        const struct cb_transition *t, int64_t at_ms);

#endif
