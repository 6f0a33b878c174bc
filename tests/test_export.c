/* The city tier's export (cmd/federation.c): the topic and the SenML pack
 * a district engine publishes for each alert instance, and that the
 * decoder reads them back as the samples a city rule counts. */
#include <CUnit/CUnit.h>
#include <math.h>
#include <string.h>

#include "cmd/federation.h"
#include "ingest/ingest.h"

void cb_test_suite_export(void);

static const struct cb_label labels[] = {{"district", "d07"}, {"sensor", "g/7+#"}};

static struct cb_transition instance(enum cb_alert_state state)
{
    return (struct cb_transition){.id = "gas_leak/city/d07/gas/g7", .rule = "gas_leak",
                                  .state = state, .severity = CB_SEV_CRITICAL,
                                  .labels = labels, .nlabels = 2, .at = 1732400120000,
                                  .value = NAN};
}

static void test_topic_names_rule_engine_and_label_values(void)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    struct cb_transition t = instance(CB_ALERT_FIRING);
    cmd__export_topic(&b, "citybrain/export/sz", "d07", &t);
    CU_ASSERT_STRING_EQUAL(b.data, "citybrain/export/sz/gas_leak/d07/d07/g_7__");
    struct cb_label empty[] = {{"district", ""}};
    t.labels = empty;
    t.nlabels = 1;
    cmd__export_topic(&b, "x", "e", &t);
    CU_ASSERT_STRING_EQUAL(b.data, "x/gas_leak/e/_");
    cb_strbuf_free(&b);
}

/* Decodes the pack as the city engine does; returns the samples. */
static const struct cb_sample *decode(struct cb_decoder *dec, const struct cb_strbuf *b,
                                      size_t *n)
{
    struct cb_decoded out;
    CU_ASSERT_EQUAL_FATAL(cb_decode(dec, "citybrain/export/sz/gas_leak/d07/d07/g7", b->data,
                                    b->len, 1732400121000, &out),
                          CB_REJECT_NONE);
    *n = out.n;
    return out.samples;
}

/* A decoder with the city engine's default limits. */
static struct cb_decoder *new_decoder(void)
{
    struct cb_decode_limits lim = {.max_payload = 65536, .max_topic_length = 256,
                                   .max_json_depth = 8, .max_fields = 256};
    struct cb_decoder *dec = cb_decoder_new(&lim);
    CU_ASSERT_PTR_NOT_NULL_FATAL(dec);
    return dec;
}

static void test_payload_is_senml_active_and_severity(void)
{
    struct cb_decoder *dec = new_decoder();
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    struct cb_transition t = instance(CB_ALERT_ESCALATED);
    CU_ASSERT_EQUAL(cmd__export_payload(&b, "d07", &t, t.at), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "[{\"bn\":\"d07:gas_leak/city/d07/gas/g7\",\"bt\":1732400120,"
                                   "\"n\":\"active\",\"v\":1},{\"n\":\"severity\",\"v\":4}]");
    size_t n;
    const struct cb_sample *s = decode(dec, &b, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(s[0].ts_ms, 1732400120000);
    CU_ASSERT_DOUBLE_EQUAL(s[0].value, 1, 0);
    CU_ASSERT_DOUBLE_EQUAL(s[1].value, 4, 0);

    t.state = CB_ALERT_RESOLVED;
    CU_ASSERT_EQUAL(cmd__export_payload(&b, "d07", &t, t.at + 1500), 0);
    s = decode(dec, &b, &n);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    CU_ASSERT_EQUAL(s[0].ts_ms, 1732400121500);
    CU_ASSERT_DOUBLE_EQUAL(s[0].value, 0, 0);
    CU_ASSERT_DOUBLE_EQUAL(s[1].value, 0, 0);

    t.state = CB_ALERT_PENDING; /* not exported */
    CU_ASSERT_EQUAL(cmd__export_payload(&b, "d07", &t, t.at), -1);
    cb_strbuf_free(&b);
    cb_decoder_free(dec);
}

static void test_payload_carries_the_when_value_when_known(void)
{
    struct cb_decoder *dec = new_decoder();
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    struct cb_transition t = instance(CB_ALERT_FIRING);
    t.value = 2.5;
    CU_ASSERT_EQUAL(cmd__export_payload(&b, "d07", &t, t.at), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "[{\"bn\":\"d07:gas_leak/city/d07/gas/g7\",\"bt\":1732400120,"
                                   "\"n\":\"active\",\"v\":1},{\"n\":\"severity\",\"v\":4},"
                                   "{\"n\":\"value\",\"v\":2.5}]");
    size_t n;
    const struct cb_sample *s = decode(dec, &b, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_DOUBLE_EQUAL(s[2].value, 2.5, 0);
    CU_ASSERT_EQUAL(s[2].ts_ms, 1732400120000);

    t.state = CB_ALERT_RESOLVED; /* the value at resolution is sent too */
    t.value = 0;
    CU_ASSERT_EQUAL(cmd__export_payload(&b, "d07", &t, t.at), 0);
    s = decode(dec, &b, &n);
    CU_ASSERT_EQUAL_FATAL(n, 3);
    CU_ASSERT_DOUBLE_EQUAL(s[2].value, 0, 0);

    t.value = NAN; /* unknown: the record is left out, not sent as 0 */
    CU_ASSERT_EQUAL(cmd__export_payload(&b, "d07", &t, t.at), 0);
    CU_ASSERT_PTR_NULL(strstr(b.data, "value"));
    cb_strbuf_free(&b);
    cb_decoder_free(dec);
}

static void test_stamp_is_the_evidence_after_the_last_sweep(void)
{
    struct cb_transition t = instance(CB_ALERT_RESOLVED);
    t.last_sample = t.at - 60000; /* a backlog's sample, processed a minute late */
    CU_ASSERT_EQUAL(cmd__export_stamp(&t, 0), t.at - 60000);
    CU_ASSERT_EQUAL(cmd__export_stamp(&t, t.at - 90000), t.at - 60000);
    CU_ASSERT_EQUAL(cmd__export_stamp(&t, t.at - 1000), t.at - 999); /* after the sweep */
    t.last_sample = 0; /* no evidence: the transition's own time */
    CU_ASSERT_EQUAL(cmd__export_stamp(&t, 0), t.at);
}

void cb_test_suite_export(void)
{
    CU_pSuite s = CU_add_suite("export", NULL, NULL);
    CU_add_test(s, "export: the topic names the rule, the engine and the label values, with "
                   "/ + # written _",
                test_topic_names_rule_engine_and_label_values);
    CU_add_test(s, "export: the payload is SenML the decoder reads as active and severity at "
                   "the transition's time; pending exports nothing",
                test_payload_is_senml_active_and_severity);
    CU_add_test(s, "export: the payload adds the when value as the record value when it is "
                   "known and leaves it out when it is unknown",
                test_payload_carries_the_when_value_when_known);
    CU_add_test(s, "export: a transition is stamped with its newest sample's time, or just after "
                   "the last periodic export when that is later",
                test_stamp_is_the_evidence_after_the_last_sweep);
}
