/* The city simulator: a deterministic generator of sensor telemetry for a
 * synthetic city (districts x sensors x kinds), with daily patterns, noise and
 * scripted incidents read from a scenario file (docs/sim.md).
 *
 * The generator knows nothing of MQTT or files: it is given a slot number and
 * an event time and fills a message (topic + payload). `citybrain sim` paces
 * the slots and publishes them, or writes them as replay JSON Lines. The same
 * (configuration, scenario, seed) gives the same stream, byte for byte. */
#ifndef CB_SIM_SIM_H
#define CB_SIM_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "base/strbuf.h"

/* The sensor kinds, in the order the stream visits them. */
enum cb_sim_kind {
    CB_SIM_RIVER = 0, /* level m, flow m3/s */
    CB_SIM_RAIN,      /* mm_h */
    CB_SIM_AIR,       /* pm25, pm10 (ug/m3) */
    CB_SIM_GAS,       /* ch4 (%LEL) */
    CB_SIM_BRIDGE,    /* accel (m/s2) */
    CB_SIM_TRAFFIC,   /* speed (km/h) */
    CB_SIM_MANHOLE,   /* tilt (degrees) */
    CB_SIM_UNDERPASS, /* water_depth (cm) */
    CB_SIM_NOISE,     /* db */
    CB_SIM_KIND__COUNT
};

/* "river", "rain", ...; NULL out of range. */
const char *cb_sim_kind_name(enum cb_sim_kind k);
/* The kind named s, or -1. */
int cb_sim_kind_parse(const char *s);

enum cb_sim_format {
    CB_SIM_JSON = 0, /* {"ts":...,"level":...} for every kind */
    CB_SIM_SENML,    /* SenML packs (RFC 8428) for every kind */
    CB_SIM_MIXED,    /* air as SenML, noise as a bare number, the rest JSON */
};

/* ---- scenarios -------------------------------------------------------------- */

/* What an incident does to the sensors it targets. */
enum cb_sim_effect {
    CB_SIM_EFFECT_RAMP = 0, /* metric values move towards `peak` */
    CB_SIM_EFFECT_SILENT,   /* the sensors publish nothing */
};

#define CB_SIM_MAX_METRICS 2

/* One scripted incident: from `at_ms` (offset from the start of the run) the
 * targeted metrics ramp linearly from their normal value to `peak` over
 * `ramp_ms`, hold until at_ms + for_ms, then return to normal over ramp_ms.
 * A silent incident suppresses the targeted sensors over [at, at + for). */
struct cb_sim_incident {
    char name[32];          /* the incident word as written: river_rise, ... */
    enum cb_sim_effect effect;
    int kind;               /* enum cb_sim_kind, or -1: every kind (silent) */
    int district;           /* 1-based */
    int sensor;             /* 1-based, 0: every sensor of the kind */
    int nmetrics;
    int metric[CB_SIM_MAX_METRICS]; /* indexes into the kind's metrics */
    double peak[CB_SIM_MAX_METRICS];
    int64_t at_ms;
    int64_t for_ms;
    int64_t ramp_ms;
    int line;               /* in the scenario file */
};

struct cb_sim_scenario {
    struct cb_sim_incident *items;
    size_t n;
};

/* Parses scenario text (see docs/sim.md). On error returns -1 and writes
 * "LINE: message" into err (errlen bytes); the scenario is then empty. On
 * success returns 0; free with cb_sim_scenario_free. */
int cb_sim_scenario_parse(struct cb_sim_scenario *scn, const char *text, size_t len, char *err,
                          size_t errlen);
/* Reads and parses a file; errors are "PATH:LINE: message". */
int cb_sim_scenario_load(struct cb_sim_scenario *scn, const char *path, char *err, size_t errlen);
void cb_sim_scenario_free(struct cb_sim_scenario *scn);

/* "90s", "5m", "1h", "500ms", "2d" -> milliseconds. Returns 0, or -1. */
int cb_sim_parse_duration(const char *s, int64_t *out);

/* ---- the generator ------------------------------------------------------------- */

struct cb_sim_options {
    int districts;           /* >= 1, ids d01, d02, ... */
    int sensors;             /* per district and kind, >= 1, ids s01, s02, ... */
    enum cb_sim_format format;
    uint64_t seed;
    int64_t start_ms;        /* event time of slot 0 */
    double rate;             /* slots per second (> 0) */
};

struct cb_sim;

/* Creates a generator. The scenario is copied (the caller keeps its own).
 * Returns NULL on OOM or invalid options (err says which). */
struct cb_sim *cb_sim_new(const struct cb_sim_options *opt, const struct cb_sim_scenario *scn,
                          char *err, size_t errlen);
void cb_sim_free(struct cb_sim *sim);

/* The number of sensors the stream cycles through (districts*sensors*kinds). */
size_t cb_sim_sensor_count(const struct cb_sim *sim);

/* Event time of slot i: start_ms + i * 1000 / rate, rounded down. */
int64_t cb_sim_slot_ts(const struct cb_sim *sim, uint64_t slot);

/* One generated message. Pointers are into the generator's buffers and are
 * valid until the next cb_sim_next call. */
struct cb_sim_msg {
    const char *topic;
    size_t topic_len;
    const char *payload;
    size_t payload_len;
    int payload_is_json;  /* 0: a bare number (noise in mixed format) */
    int64_t ts_ms;        /* the event time of the slot */
};

/* Generates slot `slot`. Slots must be asked for in increasing order (the
 * noise is a sequential stream). Returns 1 with *out filled, 0 when the slot's
 * sensor is silenced by an incident (nothing to publish), -1 on OOM. */
int cb_sim_next(struct cb_sim *sim, uint64_t slot, struct cb_sim_msg *out);

/* Appends the replay JSON Lines form of m (no newline):
 * {"topic":"...","payload":{...},"ts":MS} or "payload":"63.5" for bare numbers. */
void cb_sim_replay_line(struct cb_strbuf *b, const struct cb_sim_msg *m);


#endif
