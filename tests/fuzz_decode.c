/* libFuzzer target: the payload decoder (JSON objects, SenML packs, bare
 * numbers; ingest/decode.c) must never crash, leak or read out of bounds on
 * any bytes a sensor can send, and what it accepts must keep its promises.
 *
 * Input: "TOPIC\nPAYLOAD" (the first line is the topic; without a newline the
 * whole input is the payload of a fixed topic). Each payload is decoded four
 * times: with the default limits (etc/citybrain.conf) and with tight ones
 * (so the limit paths run on short inputs), each live (arrival time given)
 * and as replay (no arrival time). The decoders are reused across inputs as
 * the daemon reuses its own. */
#include "base/config.h"
#include "ingest/ingest.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cb_decoder *decoders[2];
static struct cb_decode_limits limits[2];

static void init(void)
{
    struct cb_config cfg;
    if (cb_config_defaults(&cfg))
        abort();
    cb_decode_limits_from_config(&limits[0], &cfg);
    cb_config_free(&cfg);
    limits[1] = (struct cb_decode_limits){
        .max_payload = 512, .max_topic_length = 32, .max_json_depth = 3, .max_fields = 4};
    for (int i = 0; i < 2; i++)
        if (!(decoders[i] = cb_decoder_new(&limits[i])))
            abort();
}

/* What an accepted payload promises (ingest.h, base/sample.h): at least one
 * and at most max_fields samples, each with a metric name of 1..255 bytes and
 * a finite value; the device (SenML bn) comes from the payload. */
static void check(const struct cb_decode_limits *l, size_t len, const struct cb_decoded *out)
{
    if (out->n == 0 || out->n > l->max_fields)
        abort();
    for (size_t i = 0; i < out->n; i++) {
        const struct cb_sample *s = &out->samples[i];
        size_t mlen = strlen(s->metric);
        if (mlen == 0 || mlen > 255 || !isfinite(s->value))
            abort();
    }
    if (out->device && strlen(out->device) > len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!decoders[0])
        init();
    char topic[512] = "city/d01/river/s01";
    const uint8_t *payload = data;
    size_t len = size;
    const uint8_t *nl = memchr(data, '\n', size < sizeof topic ? size : sizeof topic);
    if (nl) {
        size_t tl = (size_t)(nl - data);
        memcpy(topic, data, tl);
        topic[tl] = '\0'; /* a NUL inside the topic just shortens it, as in C strings */
        payload = nl + 1;
        len = size - tl - 1;
    }
    /* An exact-size copy, so reading one byte past the payload is caught. */
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return 0;
    memcpy(copy, payload, len);
    const int64_t arrivals[2] = {1732406400000, CB_DECODE_NO_ARRIVAL};
    for (int i = 0; i < 2; i++)
        for (int a = 0; a < 2; a++) {
            struct cb_decoded out;
            if (cb_decode(decoders[i], topic, copy, len, arrivals[a], &out) == CB_REJECT_NONE)
                check(&limits[i], len, &out);
        }
    free(copy);
    return 0;
}
