/* Unit tests: a department's scope (api/scope.c), built from http.department
 * lines as the configuration gives them. */
#include "api/api_int.h"
#include "base/config.h"

#include <CUnit/CUnit.h>
#include <string.h>

/* The scopes of the given http.department lines (NULL-terminated), with the
 * default sensors.label_pattern city/{district}/{kind}/{sensor}. Returns the
 * count, or -1 with err. */
static int scopes(struct cb_config *cfg, const char *const *lines, struct api_scope **v,
                  char *err, size_t errlen)
{
    CU_ASSERT_EQUAL_FATAL(cb_config_defaults(cfg), 0);
    for (; *lines; lines++)
        CU_ASSERT_EQUAL_FATAL(cb_config_set(cfg, "http.department", *lines, 0, "test", NULL), 0);
    size_t n;
    if (api__scopes_parse(cfg, v, &n, err, errlen))
        return -1;
    return (int)n;
}

static void test_topic_filters(void)
{
    struct cb_config cfg;
    struct api_scope *v;
    char err[300];
    const char *lines[] = {"water token=w topic=city/+/river/# topic=city/+/rain/#", NULL};
    CU_ASSERT_EQUAL_FATAL(scopes(&cfg, lines, &v, err, sizeof err), 1);
    const struct api_scope *w = &v[0];
    CU_ASSERT(api__scope_allows_topic(w, "city/d07/river/s1"));
    CU_ASSERT(api__scope_allows_topic(w, "city/d01/rain/g2/extra"));
    CU_ASSERT(api__scope_allows_topic(w, "city/d01/rain")); /* '#' takes the parent level too */
    CU_ASSERT(!api__scope_allows_topic(w, "city/d07/traffic/s1"));
    CU_ASSERT(!api__scope_allows_topic(w, "town/d07/river/s1"));
    CU_ASSERT(!api__scope_allows_topic(w, "city/d07/river+/s1"));
    /* a topic is never read as a pattern */
    CU_ASSERT(!api__scope_allows_topic(w, "city/+/river/s1"));
    CU_ASSERT(api__scope_allows_topic(NULL, "city/d07/traffic/s1"));
    api__scopes_free(v, 1);
    cb_config_free(&cfg);
}

static void test_patterns(void)
{
    struct cb_config cfg;
    struct api_scope *v;
    char err[300];
    const char *lines[] = {"water token=w topic=city/+/river/#", "east token=e label=district=d07,d08",
                           NULL};
    CU_ASSERT_EQUAL_FATAL(scopes(&cfg, lines, &v, err, sizeof err), 2);
    const struct api_scope *water = &v[0], *east = &v[1];
    /* every topic the pattern can match must be in scope */
    CU_ASSERT(api__scope_allows_pattern(water, "city/{district}/river/{sensor}"));
    CU_ASSERT(api__scope_allows_pattern(water, "city/d07/river/#"));
    CU_ASSERT(!api__scope_allows_pattern(water, "city/{district}/{kind}/{sensor}"));
    CU_ASSERT(!api__scope_allows_pattern(water, "city/#"));
    CU_ASSERT(api__scope_allows_pattern(east, "city/d07/river/{sensor}"));
    CU_ASSERT(api__scope_allows_pattern(east, "city/d08/+/{sensor}"));
    CU_ASSERT(!api__scope_allows_pattern(east, "city/{district}/river/{sensor}"));
    CU_ASSERT(!api__scope_allows_pattern(east, "city/d09/river/{sensor}"));
    CU_ASSERT(!api__scope_allows_pattern(east, "city/d07/river")); /* not the label pattern */
    CU_ASSERT(!api__scope_allows_pattern(east, "city/d07/#"));
    /* some topic of the pattern in scope: a rule is listed */
    CU_ASSERT(api__scope_meets_pattern(water, "city/{district}/{kind}/{sensor}"));
    CU_ASSERT(!api__scope_meets_pattern(water, "city/{district}/traffic/{sensor}"));
    CU_ASSERT(api__scope_meets_pattern(east, "city/{district}/traffic/{sensor}"));
    CU_ASSERT(!api__scope_meets_pattern(east, "city/d09/traffic/{sensor}"));
    CU_ASSERT(api__scope_meets_pattern(east, "#"));
    /* labels alone: only for a scope without topic filters */
    const char *names[] = {"district", "sensor"}, *d07[] = {"d07", "s1"}, *d09[] = {"d09", "s1"};
    CU_ASSERT(api__scope_allows_labels(east, names, d07, 2));
    CU_ASSERT(!api__scope_allows_labels(east, names, d09, 2));
    CU_ASSERT(!api__scope_allows_labels(east, names + 1, d07 + 1, 1));
    CU_ASSERT(!api__scope_allows_labels(water, names, d07, 2));
    api__scopes_free(v, 2);
    cb_config_free(&cfg);
}

static void test_tokens(void)
{
    /* printf %s east-secret | sha256sum */
    const char *sha = "sha256:47b53d325f10be18e5eec321afc52693b2f886070e22d47d327576ff07c46a8a";
    CU_ASSERT(api__token_matches("east-secret", 11, sha));
    CU_ASSERT(!api__token_matches("east-secreT", 11, sha));
    CU_ASSERT(!api__token_matches("east-secret", 10, sha));
    CU_ASSERT(api__token_matches("plain", 5, "plain"));
    CU_ASSERT(!api__token_matches("plai", 4, "plain"));
    CU_ASSERT(!api__token_matches("plainplain", 10, "plain"));
    CU_ASSERT(!api__token_matches("", 0, ""));
    CU_ASSERT(!api__token_matches("x", 1, NULL));
}

static void test_bad_lines(void)
{
    static const char *const bad[][2] = {
        {"water topic=#", "has no token="},
        {"water token=w", "has no topic= nor label="},
        {"Water token=w topic=#", "the department's name comes first"},
        {"water token=w topic=a/#/b", "has # before the last level"},
        {"water token=w topic=city/{district}/#", "not {label}"},
        {"water token=w label=kind", "is not label=NAME=VALUE"},
        {"water token=w label=floor=3", "is not a {label} of sensors.label_pattern"},
        {"water token=w label=kind=a/b", "has an empty value or one with '/'"},
        {"water token=w topic=# colour=blue", "is not token=, topic= or label="},
        {"water token=sha256:12 topic=#", "needs 64 hex digits"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cb_config cfg;
        struct api_scope *v = NULL;
        char err[300] = "";
        const char *lines[] = {bad[i][0], NULL};
        CU_ASSERT_EQUAL(scopes(&cfg, lines, &v, err, sizeof err), -1);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i][1]));
        CU_ASSERT_PTR_NULL(v);
        cb_config_free(&cfg);
    }
    struct cb_config cfg;
    struct api_scope *v = NULL;
    char err[300] = "";
    const char *twice[] = {"water token=a topic=#", "water token=b topic=#", NULL};
    CU_ASSERT_EQUAL(scopes(&cfg, twice, &v, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "names a department twice"));
    cb_config_free(&cfg);
    const char *shared[] = {"water token=a topic=#", "roads token=a topic=#", NULL};
    CU_ASSERT_EQUAL(scopes(&cfg, shared, &v, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "has the token of another department"));
    cb_config_free(&cfg);
}

void cb_test_suite_scope(void);
void cb_test_suite_scope(void)
{
    CU_pSuite s = CU_add_suite("scope", NULL, NULL);
    CU_add_test(s, "scope: a topic is in a department's scope when one of its MQTT filters matches it",
                test_topic_filters);
    CU_add_test(s, "scope: an alert's pattern is in scope only when every topic it can match is; a "
                   "rule is listed when one can be",
                test_patterns);
    CU_add_test(s, "scope: tokens match exactly, plain or as sha256:HEX", test_tokens);
    CU_add_test(s, "scope: a wrong http.department line is refused with the reason", test_bad_lines);
}
