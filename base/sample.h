/* The sample: the one value type that flows through the house.
 * ingest decodes payloads into samples; storage keeps them; rules evaluate them. */
#ifndef CB_BASE_SAMPLE_H
#define CB_BASE_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

/* One decoded value. `metric` is NUL-terminated and borrowed: it lives as long
 * as the decoder (or message) that produced it, until the next decode call. */
struct cb_sample {
    const char *metric;
    int64_t ts_ms;  /* event time, milliseconds since the epoch */
    double value;   /* always finite */
};

/* Why a payload (or a sample of it) was refused. Each reason has a counter in
 * /metrics (citybrain_ingest_rejected_total{reason="..."}), named by
 * cb_reject_name(). Keep cb_reject_name in base/sample.c in step. */
enum cb_reject {
    CB_REJECT_NONE = 0,
    CB_REJECT_PAYLOAD_TOO_LARGE,
    CB_REJECT_TOPIC_TOO_LONG,
    CB_REJECT_MALFORMED,        /* not JSON, not a number: unparseable bytes */
    CB_REJECT_TOO_DEEP,         /* JSON nesting deeper than ingest.max_json_depth */
    CB_REJECT_TOO_MANY_FIELDS,  /* more samples than ingest.max_fields */
    CB_REJECT_NOT_FINITE,       /* NaN or an infinity */
    CB_REJECT_OVERFLOW,         /* a number outside the double range (1e999) */
    CB_REJECT_STRING_VALUE,     /* a string where a number belongs */
    CB_REJECT_BAD_TS,           /* ts of the wrong type, unparseable or out of range */
    CB_REJECT_SENML,            /* SenML pack violating RFC 8428 (unknown label ending in _, ...) */
    CB_REJECT_NO_SAMPLES,       /* valid JSON that carries no numeric value */
    CB_REJECT_MISSING_TS,       /* replay: no event time anywhere */
    CB_REJECT_FUTURE,           /* more than max_skew ahead of now */
    CB_REJECT_INVALID_RANGE,    /* outside a rule's `valid` range: quarantined */
    CB_REJECT__COUNT
};

/* The stable snake_case name of a reason ("payload_too_large", ...). */
const char *cb_reject_name(enum cb_reject reason);

#endif
