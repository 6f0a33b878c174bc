/* The guard before regcomp (base/regex.h): patterns whose expansion by
 * glibc's regcomp would be exponential are refused with a reason, as RE2
 * refuses them; ordinary patterns compile and match as before. */
#include "base/regex.h"

#include <CUnit/CUnit.h>
#include <string.h>

static int refused(const char *pattern, const char *why)
{
    char err[200] = "";
    int rc = cb_regex_check(pattern, err, sizeof err);
    if (rc == 0)
        return 0;
    return strstr(err, why) != NULL;
}

static int matches(const char *pattern, const char *text)
{
    regex_t re;
    char err[200];
    if (cb_regex_compile(&re, pattern, REG_EXTENDED | REG_NOSUB, err, sizeof err))
        return -1;
    int m = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return m;
}

/* The selector the PromQL fuzzer found: 2 GB in regcomp before the guard. */
static void test_stacked_repetitions_refused(void)
{
    char p[200] = "l-vel";
    for (int i = 0; i < 70; i++)
        strcat(p, "+");
    strcat(p, "|intensity");
    CU_ASSERT(refused(p, "invalid nested repetition operator"));
    CU_ASSERT(refused("a**", "invalid nested repetition operator"));
    CU_ASSERT(refused("a+*", "invalid nested repetition operator"));
    CU_ASSERT(refused("a{2}+", "invalid nested repetition operator"));
    CU_ASSERT(refused("a+??", "invalid nested repetition operator"));
    char err[200];
    regex_t re;
    CU_ASSERT_EQUAL(cb_regex_compile(&re, p, REG_EXTENDED, err, sizeof err), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "offset 5"));
}

static void test_nested_copies_bounded(void)
{
    CU_ASSERT(refused("((((((((((a+)+)+)+)+)+)+)+)+)+)+", "nested too deep")); /* 2^10 */
    CU_ASSERT(refused("(a{100}){20}", "nested too deep"));
    CU_ASSERT(refused("a{1001}", "invalid repeat count 1001"));
    CU_ASSERT(refused("a{2,5000}", "invalid repeat count 5000"));
    CU_ASSERT_EQUAL(cb_regex_check("((((((((a+)+)+)+)+)+)+)+)+", NULL, 0), 0); /* 2^9 */
}

static void test_ordinary_patterns_compile_and_match(void)
{
    CU_ASSERT_EQUAL(matches("^city/d0[1-3]/river/.*$", "city/d02/river/s1"), 1);
    CU_ASSERT_EQUAL(matches("^(d07|d08)$", "d08"), 1);
    CU_ASSERT_EQUAL(matches("^(foo|bar)+$", "foobarfoo"), 1);
    CU_ASSERT_EQUAL(matches("^a+?b$", "aab"), 1); /* one lazy ? after a repetition, as RE2 */
    CU_ASSERT_EQUAL(matches("^x{3,5}$", "xxxx"), 1);
    CU_ASSERT_EQUAL(matches("^[+*]+$", "+*+"), 1);      /* in brackets: members */
    CU_ASSERT_EQUAL(matches("^[]a+]+$", "]a+"), 1);     /* ']' first is a member */
    CU_ASSERT_EQUAL(matches("^[[:digit:]+]+$", "1+2"), 1);
    CU_ASSERT_EQUAL(matches("^\\+\\+$", "++"), 1);      /* escaped: literals */
    CU_ASSERT_EQUAL(matches("^(a+){2}$", "aaa"), 1);
    CU_ASSERT_EQUAL(cb_regex_check("a{", NULL, 0), 0);  /* no interval: regcomp judges it */
    CU_ASSERT_EQUAL(matches("(", "x"), -1);             /* regcomp's own refusal */
}

void cb_test_suite_regex(void);
void cb_test_suite_regex(void)
{
    CU_pSuite s = CU_add_suite("regex", NULL, NULL);
    CU_add_test(s, "regex: stacked repetitions are refused before regcomp (the promql fuzzer's 2 GB selector)",
                test_stacked_repetitions_refused);
    CU_add_test(s, "regex: counts above 1000 and nested repetitions copying a part more than 1000 times are refused",
                test_nested_copies_bounded);
    CU_add_test(s, "regex: ordinary patterns (brackets, escapes, alternation, a lazy ?) compile and match",
                test_ordinary_patterns_compile_and_match);
}
