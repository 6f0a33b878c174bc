/* libFuzzer target: the rule compiler must never crash, leak or misbehave on
 * any input; when it accepts a file, an engine over it must run a few
 * samples and ticks and render its diagnostics and rules without fault. */
#include "rules/rules.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void sink(void *ctx, const struct cb_transition *t)
{
    struct cb_strbuf *b = ctx;
    cb_strbuf_reset(b);
    cb_transition_to_json(t, b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cb_diags d = {0};
    struct cb_strbuf out;
    cb_strbuf_init(&out);
    struct cb_ruleset *rs = cb_ruleset_compile_source("fuzz.rules", (const char *)data, size, &d);
    cb_diags_render_text(&d, &out);
    cb_strbuf_reset(&out);
    cb_diags_render_json(&d, &out);
    if (rs) {
        int64_t now = 1700000000000;
        struct cb_clock clock = {cb_clock_manual_now, &now};
        struct cb_engine *e = cb_engine_new(rs, &clock, NULL, sink, &out);
        if (e) {
            const char *topics[] = {"city/d1/river/s1", "city/d1/air/a1", "a/b", "city/d2/gas/g1/x"};
            const char *metrics[] = {"level", "pm25", "v", "value", "x"};
            for (int i = 0; i < 40; i++) {
                struct cb_sample s = {metrics[i % 5], now - (i % 3) * 1000, (double)((i * 7) % 11)};
                cb_engine_offer(e, topics[i % 4], NULL, &s, 1, NULL, NULL);
                now += 15000;
                cb_engine_tick(e);
            }
            cb_strbuf_reset(&out);
            cb_engine_rules_json(e, &out);
            cb_engine_free(e);
        }
        cb_ruleset_release(rs);
    }
    cb_strbuf_free(&out);
    cb_diags_free(&d);
    return 0;
}
