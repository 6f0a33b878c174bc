/* Unit tests: parser, checker and diagnostics: every error kind with its
 * position, several errors per file, and the rendered formats. */
#include "rules/rules.h"

#include <CUnit/CUnit.h>
#include <stdio.h>
#include <string.h>

#define HEAD "rule r {\n  match \"city/{district}/river/{sensor}\"\n"

/* Compiles src and checks that a diagnostic with `code` is at line:col. */
static void expect_error(const char *src, const char *code, int line, int col)
{
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    CU_ASSERT_PTR_NULL(rs);
    cb_ruleset_release(rs);
    int found = 0;
    for (size_t i = 0; i < d.n; i++)
        if (!strcmp(d.items[i].code, code) && d.items[i].line == line && d.items[i].col == col)
            found = 1;
    if (!found) {
        struct cb_strbuf b;
        cb_strbuf_init(&b);
        cb_diags_render_text(&d, &b);
        fprintf(stderr, "\nwanted %s at %d:%d in:\n%s\ngot:\n%s", code, line, col, src, b.data ? b.data : "");
        cb_strbuf_free(&b);
    }
    CU_ASSERT(found);
    cb_diags_free(&d);
}

static void test_clean_rule(void)
{
    const char *src =
        "rule river_flood {\n"
        "  title    \"River flood risk\"\n"
        "  match    \"city/{district}/river/{sensor}\"\n"
        "  per      district\n"
        "  valid    level in -1 .. 15\n"
        "  when     count(sensors: avg(level, 5m) > 3.2) >= 2\n"
        "  for      2m\n"
        "  clear    count(sensors: avg(level, 5m) > 2.9) == 0 for 10m\n"
        "  severity major\n"
        "  escalate critical when max(sensors: rate(level, 30m)) * 3600 > 0.3\n"
        "  escalate critical after 20m unacked\n"
        "  cooldown 30m\n"
        "  message  \"{district}: {count(sensors: avg(level, 5m) > 3.2)} gauges above 3.2 m\"\n"
        "  notify   ops, cap\n"
        "}\n";
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    CU_ASSERT_PTR_NOT_NULL(rs);
    CU_ASSERT_EQUAL(d.errors, 0);
    CU_ASSERT_EQUAL(cb_ruleset_count(rs), 1);
    cb_ruleset_release(rs);
    cb_diags_free(&d);
}

static void test_each_error_kind(void)
{
    expect_error(HEAD "  when level > 1\n  whne x\n}\n", "E005", 4, 3);           /* unknown clause */
    expect_error(HEAD "  when avgg(level, 5m) > 1\n}\n", "E006", 3, 8);            /* unknown function */
    expect_error(HEAD "  when avg(level) > 1\n}\n", "E007", 3, 8);                 /* argument count */
    expect_error(HEAD "  when percentile(level, 5m) > 1\n}\n", "E007", 3, 8);
    expect_error(HEAD "  per distrct\n  when count(sensors: level > 1) > 0\n}\n", "E008", 3, 7);
    expect_error(HEAD "  when level > 1\n  message \"{sensr} high\"\n}\n", "E009", 4, 13);
    expect_error(HEAD "  per district\n  when count(sensors: level > 1) > 0\n  message \"{sensor}\"\n}\n",
                 "E009", 5, 13); /* a group alert has only its per labels */
    expect_error(HEAD "  when count(sensors: level > 1) > 0\n}\n", "E010", 3, 8);  /* sensors: outside group */
    expect_error(HEAD "  when level > 1\n}\nrule r {\n  match \"a\"\n  when x > 1\n}\n", "E011", 5, 6);
    expect_error("rule r {\n  match \"a/b\"\n  when \"x > 1\n}\n", "E001", 3, 8); /* unterminated string */
    expect_error(HEAD "  when level > 1\n", "E002", 1, 8);                          /* unterminated block */
    expect_error(HEAD "  when level > 1\nrule s {\n  match \"a\"\n  when x > 1\n}\n", "E002", 1, 8);
    expect_error("rule r {\n  when x > 1\n}\n", "E012", 1, 6);                      /* missing match */
    expect_error(HEAD "  for 2m\n}\n", "E013", 1, 6);                               /* missing when */
    expect_error(HEAD "  when level > 1\n  for 5\n}\n", "E014", 4, 7);              /* bad duration */
    expect_error(HEAD "  when level > 1\n  for 5min\n}\n", "E014", 4, 7);
    expect_error(HEAD "  when level > 1\n  severity huge\n}\n", "E015", 4, 12);     /* bad severity */
    expect_error(HEAD "  when level > 1\n  escalate urgent after 5m unacked\n}\n", "E015", 4, 12);
    expect_error("rule r {\n  match \"a/#/b\"\n  when x > 1\n}\n", "E016", 2, 12);   /* bad pattern */
    expect_error(HEAD "  when level > 1\n  when level > 2\n}\n", "E017", 4, 3);     /* duplicate clause */
    expect_error(HEAD "  per district\n  when level > 1\n}\n", "E018", 4, 8);       /* metric in group rule */
    expect_error(HEAD "  valid level in 5 .. 1\n  when level > 1\n}\n", "E019", 3, 18);
    expect_error(HEAD "  per district\n  when count(sensors: count(sensors: level > 1) > 0) > 0\n}\n", "E020", 4, 23);
    expect_error(HEAD "  when level > 1\n  message \"{level \"\n}\n", "E022", 4, 12);
    expect_error(HEAD "  when level > 1\n  message \"{avg(level, 5m):.2q}\"\n}\n", "E028", 4, 28);
    expect_error(HEAD "  when any(level) > 1\n}\n", "E025", 3, 8);
    expect_error(HEAD "  when avg(3, 5m) > 1\n}\n", "E026", 3, 12);
    expect_error(HEAD "  when avg(level, 5) > 1\n}\n", "E027", 3, 19);
    expect_error(HEAD "  when level > > 1\n}\n", "E004", 3, 16);
    expect_error(HEAD "  when level = 1\n}\n", "E003", 3, 14);
}

static void test_many_errors_in_one_file(void)
{
    const char *src = HEAD
        "  per distrct\n"                      /* 3 */
        "  when avgg(level, 5m) > 3.2\n"       /* 4 */
        "  whne x\n"                           /* 5 */
        "  severity huge\n"                    /* 6 */
        "}\n"
        "rule r {\n"                           /* 8: duplicate */
        "  match \"a/{x}\"\n"
        "  when count(sensors: x > 1) > 0\n"   /* 10 */
        "}\n";
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    CU_ASSERT_PTR_NULL(rs);
    CU_ASSERT_EQUAL(d.errors, 6);
    int lines[] = {3, 4, 5, 6, 8, 10};
    for (size_t i = 0; i < d.n && i < 6; i++)
        CU_ASSERT_EQUAL(d.items[i].line, lines[i]); /* in source order */
    cb_diags_free(&d);
}

/* The caret line keeps the source line's tabs, so the caret stays under its
 * column whatever the terminal's tab width. */
static void test_render_text_tabs(void)
{
    const char *src = HEAD "\twhen avgg(level, 5m) > 3.2\n}\n";
    struct cb_diags d = {0};
    cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_diags_render_text(&d, &b);
    CU_ASSERT_STRING_EQUAL(b.data, "t.rules:3:7: error: unknown aggregate 'avgg' (did you mean 'avg'?)\n"
                                   "    3 | \twhen avgg(level, 5m) > 3.2\n"
                                   "      | \t     ^~~~\n");
    cb_strbuf_free(&b);
    cb_diags_free(&d);
}

static void test_render_text(void)
{
    const char *src = HEAD "  when avgg(level, 5m) > 3.2\n}\n";
    struct cb_diags d = {0};
    cb_ruleset_compile_source("etc/rules/flood.rules", src, strlen(src), &d);
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_diags_render_text(&d, &b);
    CU_ASSERT_STRING_EQUAL(b.data,
                           "etc/rules/flood.rules:3:8: error: unknown aggregate 'avgg' (did you mean 'avg'?)\n"
                           "    3 |   when avgg(level, 5m) > 3.2\n"
                           "      |        ^~~~\n");
    cb_strbuf_reset(&b);
    cb_diags_render_json(&d, &b);
    CU_ASSERT_STRING_EQUAL(b.data,
                           "[{\"file\":\"etc/rules/flood.rules\",\"line\":3,\"col\":8,\"span\":4,"
                           "\"severity\":\"error\",\"code\":\"E006\",\"message\":\"unknown aggregate 'avgg'\","
                           "\"hint\":\"did you mean 'avg'?\"}]");
    cb_strbuf_free(&b);
    cb_diags_free(&d);
}

static void test_warnings_do_not_fail(void)
{
    const char *src = HEAD "  when not level > 3\n}\n";
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    CU_ASSERT_PTR_NOT_NULL(rs);
    CU_ASSERT_EQUAL(d.errors, 0);
    CU_ASSERT_EQUAL_FATAL(d.n, 1);
    CU_ASSERT_STRING_EQUAL(d.items[0].code, "W002");
    cb_ruleset_release(rs);
    cb_diags_free(&d);
}

static void test_multiline_expression(void)
{
    const char *src = HEAD "  when (level > 3 and\n        level < 9) or\n    level == 42\n  for 1m\n}\n";
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    CU_ASSERT_PTR_NOT_NULL(rs);
    CU_ASSERT_EQUAL(d.n, 0);
    cb_ruleset_release(rs);
    cb_diags_free(&d);
}

static void test_deep_nesting_is_refused(void)
{
    char src[4096];
    int n = snprintf(src, sizeof src, HEAD "  when ");
    for (int i = 0; i < 300; i++)
        src[n++] = '(';
    src[n] = 0;
    strcat(src, "x\n}\n");
    struct cb_diags d = {0};
    struct cb_ruleset *rs = cb_ruleset_compile_source("t.rules", src, strlen(src), &d);
    CU_ASSERT_PTR_NULL(rs);
    int found = 0;
    for (size_t i = 0; i < d.n; i++)
        found |= !strcmp(d.items[i].code, "E021");
    CU_ASSERT(found);
    cb_diags_free(&d);
}

/* Compiles src (with opts) and returns the first diagnostic with code, or
 * NULL; *rs_ok tells whether a ruleset was built. diags are the caller's. */
static const struct cb_diag *first_diag(const char *src, const struct cb_rules_opts *opts,
                                        const char *code, struct cb_diags *d, int *rs_ok)
{
    struct cb_ruleset *rs = cb_ruleset_compile_source_opts("t.rules", src, strlen(src), opts, d);
    *rs_ok = rs != NULL;
    cb_ruleset_release(rs);
    for (size_t i = 0; i < d->n; i++)
        if (!strcmp(d->items[i].code, code))
            return &d->items[i];
    return NULL;
}

/* Compiles src and checks it is clean. */
static void expect_clean(const char *src)
{
    struct cb_diags d = {0};
    int ok;
    first_diag(src, NULL, "-", &d, &ok);
    if (!ok || d.n) {
        struct cb_strbuf b;
        cb_strbuf_init(&b);
        cb_diags_render_text(&d, &b);
        fprintf(stderr, "\nwanted clean:\n%s\ngot:\n%s", src, b.data ? b.data : "");
        cb_strbuf_free(&b);
    }
    CU_ASSERT(ok && d.n == 0);
    cb_diags_free(&d);
}

/* Checks that src has an error `code` at line:col whose hint holds `hint`. */
static void expect_hint(const char *src, const struct cb_rules_opts *opts, const char *code,
                        int line, int col, const char *hint)
{
    struct cb_diags d = {0};
    int ok;
    const struct cb_diag *g = first_diag(src, opts, code, &d, &ok);
    CU_ASSERT_FALSE(ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(g->line, line);
    CU_ASSERT_EQUAL(g->col, col);
    if (!g->hint || !strstr(g->hint, hint))
        fprintf(stderr, "\nwanted hint '%s', got '%s'\n", hint, g->hint ? g->hint : "(none)");
    CU_ASSERT_TRUE(g->hint && strstr(g->hint, hint));
    cb_diags_free(&d);
}

/* rules.md: {NAME} is a label a match binds, else the latest value of a
 * metric the rule uses (in valid, when, clear or escalate ... when, alone, in
 * a window or in age(M)), else an error with a did-you-mean over both. */
static void test_template_bare_names(void)
{
    expect_clean(HEAD "  when level > 3\n  message \"{sensor} at {level} m\"\n}\n");
    expect_clean(HEAD "  when avg(level, 5m) > 3\n  message \"{level}\"\n}\n");
    expect_clean(HEAD "  valid flow in 0 .. 9\n  when level > 3\n  message \"{flow}\"\n}\n");
    expect_clean(HEAD "  when level > 3\n  clear flow < 1\n  message \"{flow}\"\n}\n");
    expect_clean(HEAD "  when level > 3\n  escalate critical when rate(flow, 5m) > 1\n"
                 "  message \"{flow}\"\n}\n");
    expect_clean(HEAD "  when age(flow) > 60\n  message \"{flow}\"\n}\n");
    expect_clean(HEAD "  when air.pm25 > 3\n  message \"{ air.pm25 }\"\n}\n");
    /* a label wins over a metric of the same name */
    expect_clean(HEAD "  when sensor > 3\n  message \"{sensor}\"\n}\n");
    /* typos: a did-you-mean over the labels and the metrics */
    expect_hint(HEAD "  when level > 3\n  message \"{sensr} at {level}\"\n}\n", NULL, "E009", 4,
                13, "did you mean 'sensor'?");
    expect_hint(HEAD "  when level > 3\n  message \"{sensor} at {lvel}\"\n}\n", NULL, "E009", 4,
                25, "did you mean 'level'?");
    /* a metric only the message names is not one the rule uses */
    expect_hint(HEAD "  when level > 3\n  message \"{flow}\"\n}\n", NULL, "E009", 4, 13,
                "labels: district, sensor; metrics of the rule: level");
    /* nor is it once another part of the message names it */
    expect_hint(HEAD "  when level > 3\n  message \"{flow:.1f} {flow}\"\n}\n", NULL, "E009", 4,
                24, "metrics of the rule: level");
    /* a label is text: no number format */
    expect_hint(HEAD "  when level > 3\n  message \"{sensor:.2f}\"\n}\n", NULL, "E009", 4, 13,
                "write {sensor}");
}

/* A group alert has no single sensor: a bare metric is refused with the
 * aggregate to write instead; its per labels are fine. */
static void test_template_group_rule(void)
{
    const char *grp = HEAD "  per district\n  when count(sensors: level > 3) > 0\n";
    char src[512];
    snprintf(src, sizeof src, "%s  message \"{district}: {level}\"\n}\n", grp);
    expect_hint(src, NULL, "E018", 5, 25, "write {max(sensors: level)}");
    snprintf(src, sizeof src, "%s  message \"{district}: {max(sensors: level):.1f}\"\n}\n", grp);
    expect_clean(src);
    snprintf(src, sizeof src, "%s  message \"{sensor}\"\n}\n", grp);
    expect_hint(src, NULL, "E009", 5, 13, "only its 'per' labels");
}

/* check, run and reload compile with the configuration's channels: a notify
 * name that is none of them is E029 where it is written. */
static void test_notify_channels(void)
{
    const char *const chans[] = {"log", "ops", "cap"};
    struct cb_rules_opts o = {1, chans, 3, "channels of c.conf: log, ops, cap"};
    const char *src = HEAD "  when level > 3\n  notify ops, opz, \"cap\"\n}\n";
    expect_hint(src, &o, "E029", 4, 15, "did you mean 'ops'?");
    struct cb_diags d = {0};
    int ok;
    const struct cb_diag *g = first_diag(src, &o, "E029", &d, &ok);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    CU_ASSERT_EQUAL(g->span, 3);
    CU_ASSERT_STRING_EQUAL(g->message, "unknown channel 'opz' in notify; channels of c.conf: log, "
                                       "ops, cap");
    CU_ASSERT_EQUAL(d.errors, 1); /* ops and the quoted "cap" are channels */
    cb_diags_free(&d);
    /* without the check (replay, test) any name compiles */
    expect_clean(src);
    /* a quoted name is checked too */
    expect_hint(HEAD "  when level > 3\n  notify \"caps\"\n}\n", &o, "E029", 4, 10,
                "did you mean 'cap'?");
}

/* rules.md "Languages": a tagged clause gives a title or message in one more
 * language; the plain clause is English. */
static void test_languages_compile(void)
{
    const char *src =
        "rule flood {\n"
        "  title    \"River flood risk\"\n"
        "  title zh \"河道洪水风险\"\n"
        "  match    \"city/{district}/river/{sensor}\"\n"
        "  per      district\n"
        "  when     max(sensors: level) > 3.2\n"
        "  message  \"{district}: {max(sensors: level):.2f} m\"\n"
        "  message zh-CN \"{district}：最高水位 {max(sensors: level):.2f} 米\"\n"
        "}\n"        "rule only_chinese {\n"
        "  title zh-CN \"水位\"\n"
        "  match    \"city/{district}/river/{sensor}\"\n"
        "  when     level > 3\n"
        "  message zh \"{sensor} 水位 {level:.1f} 米\"\n"
        "}\n";
    expect_clean(src);
    CU_ASSERT_STRING_EQUAL(cb_lang_tag(CB_LANG_ZH), "zh-CN");
    CU_ASSERT_STRING_EQUAL(cb_lang_tag(CB_LANG_EN), "en-US");
}

static void test_language_errors(void)
{
    expect_error(HEAD "  when level > 1\n  title fr \"x\"\n}\n", "E032", 4, 9);
    expect_error(HEAD "  when level > 1\n  title zh-TW \"x\"\n}\n", "E032", 4, 9);
    expect_error(HEAD "  when level > 1\n  title zh \"甲\"\n  title zh-CN \"乙\"\n}\n", "E017", 5, 3);
    expect_error(HEAD "  when level > 1\n  message \"a\"\n  message en \"b\"\n}\n", "E017", 5, 3);
    /* a translated template is checked like the plain one, at its own position */
    expect_error(HEAD "  when level > 1\n  message zh \"{distrct} 水位\"\n}\n", "E009", 4, 16);
    expect_error(HEAD "  when level > 1\n  message zh \"水位 {level:.2x}\"\n}\n", "E028", 4, 29);
    expect_error(HEAD "  when level > 1\n  message zh \"水位 {level\"\n}\n", "E022", 4, 22);
}

void cb_test_suite_parser(void);
void cb_test_suite_parser(void)
{
    CU_pSuite s = CU_add_suite("parser", NULL, NULL);
    CU_add_test(s, "parser: the river_flood example of rules.md compiles clean", test_clean_rule);
    CU_add_test(s, "parser: a title and message per language compile; the plain clause is English",
                test_languages_compile);
    CU_add_test(s, "parser: an unknown language, a duplicate per language and template errors in a "
                   "translated message are reported at their positions",
                test_language_errors);
    CU_add_test(s, "parser: every error kind is reported with its code, line and column", test_each_error_kind);
    CU_add_test(s, "parser: one file reports all its errors, in source order", test_many_errors_in_one_file);
    CU_add_test(s, "parser: text and JSON renderings match the rules.md format", test_render_text);
    CU_add_test(s, "parser: the caret line keeps the source line's tabs", test_render_text_tabs);
    CU_add_test(s, "parser: warnings are reported but the rules load", test_warnings_do_not_fail);
    CU_add_test(s, "parser: an expression continues on the next line after an operator or inside ()", test_multiline_expression);
    CU_add_test(s, "parser: absurdly deep nesting is an error, not a crash", test_deep_nesting_is_refused);
    CU_add_test(s, "parser: a bare {NAME} in a message is a label, else a metric the rule uses, "
                   "else E009 with a did-you-mean over both", test_template_bare_names);
    CU_add_test(s, "parser: in a group rule a bare metric in the message is E018, pointing to a "
                   "sensors: aggregate", test_template_group_rule);
    CU_add_test(s, "parser: a notify name that is no configured channel is E029 at its position, "
                   "with a did-you-mean", test_notify_channels);
}
