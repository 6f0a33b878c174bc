#include "base/sample.h"

static const char *const names[CB_REJECT__COUNT] = {
    [CB_REJECT_NONE] = "none",
    [CB_REJECT_PAYLOAD_TOO_LARGE] = "payload_too_large",
    [CB_REJECT_TOPIC_TOO_LONG] = "topic_too_long",
    [CB_REJECT_MALFORMED] = "malformed",
    [CB_REJECT_TOO_DEEP] = "too_deep",
    [CB_REJECT_TOO_MANY_FIELDS] = "too_many_fields",
    [CB_REJECT_NOT_FINITE] = "not_finite",
    [CB_REJECT_OVERFLOW] = "overflow",
    [CB_REJECT_STRING_VALUE] = "string_value",
    [CB_REJECT_BAD_TS] = "bad_ts",
    [CB_REJECT_SENML] = "senml",
    [CB_REJECT_NO_SAMPLES] = "no_samples",
    [CB_REJECT_MISSING_TS] = "missing_ts",
    [CB_REJECT_FUTURE] = "future",
    [CB_REJECT_INVALID_RANGE] = "invalid_range",
};

const char *cb_reject_name(enum cb_reject reason)
{
    return (unsigned)reason < CB_REJECT__COUNT && names[reason] ? names[reason] : "unknown";
}
