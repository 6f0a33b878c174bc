/* Unit tests: the lexer of the rule language. */
#include "rules/rules_int.h"

#include <CUnit/CUnit.h>
#include <string.h>

static void lex_all(const char *src, struct rules__tok *out, int max, int *n)
{
    struct rules__lexer lx;
    rules__lex_init(&lx, src, 0, strlen(src), 1, 1);
    *n = 0;
    for (;;) {
        struct rules__tok t = rules__lex_next(&lx);
        if (*n < max)
            out[(*n)++] = t;
        if (t.kind == TK_EOF)
            break;
    }
}

static void test_tokens_point_into_source(void)
{
    const char *src = "when avg(air.pm25, 5m) >= 3.25 and not x\n  for 90s # comment\n";
    struct rules__tok t[32];
    int n;
    lex_all(src, t, 32, &n);
    enum rules__tok_kind want[] = {TK_IDENT, TK_IDENT, TK_LPAREN, TK_IDENT, TK_COMMA, TK_DURATION,
                                   TK_RPAREN, TK_GE, TK_NUMBER, TK_AND, TK_NOT, TK_IDENT,
                                   TK_IDENT, TK_DURATION, TK_EOF};
    CU_ASSERT_EQUAL_FATAL(n, (int)(sizeof want / sizeof want[0]));
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(t[i].kind, want[i]);
    CU_ASSERT_EQUAL(t[3].len, 8); /* air.pm25 */
    CU_ASSERT_EQUAL(memcmp(src + t[3].off, "air.pm25", 8), 0);
    CU_ASSERT_EQUAL(t[5].num, 300000);
    CU_ASSERT_DOUBLE_EQUAL(t[8].num, 3.25, 1e-12);
    CU_ASSERT_EQUAL(t[12].line, 2);
    CU_ASSERT_EQUAL(t[12].col, 3);
    CU_ASSERT(t[12].bol);
    CU_ASSERT(!t[13].bol);
    CU_ASSERT_EQUAL(t[13].num, 90000);
}

static void test_durations(void)
{
    int64_t ms;
    CU_ASSERT_EQUAL(rules__parse_duration("250ms", 5, &ms), 0);
    CU_ASSERT_EQUAL(ms, 250);
    CU_ASSERT_EQUAL(rules__parse_duration("1h30m", 5, &ms), 0);
    CU_ASSERT_EQUAL(ms, 5400000);
    CU_ASSERT_EQUAL(rules__parse_duration("1d", 2, &ms), 0);
    CU_ASSERT_EQUAL(ms, 86400000);
    CU_ASSERT_EQUAL(rules__parse_duration("5x", 2, &ms), -1);
    CU_ASSERT_EQUAL(rules__parse_duration("m", 1, &ms), -1);
    struct rules__tok t[4];
    int n;
    lex_all("5min", t, 4, &n);
    CU_ASSERT_EQUAL(t[0].kind, TK_ERROR);
    CU_ASSERT_STRING_EQUAL(t[0].err_code, "E014");
    lex_all("1.5m", t, 4, &n);
    CU_ASSERT_EQUAL(t[0].kind, TK_ERROR);
}

static void test_range_and_operators(void)
{
    struct rules__tok t[16];
    int n;
    lex_all("-1 .. 15 1..2 == != <= < > ", t, 16, &n);
    enum rules__tok_kind want[] = {TK_MINUS, TK_NUMBER, TK_DOTDOT, TK_NUMBER, TK_NUMBER, TK_DOTDOT,
                                   TK_NUMBER, TK_EQ, TK_NE, TK_LE, TK_LT, TK_GT, TK_EOF};
    CU_ASSERT_EQUAL_FATAL(n, 13);
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(t[i].kind, want[i]);
}

static void test_unterminated_string(void)
{
    struct rules__tok t[4];
    int n;
    lex_all("  title \"abc\n next", t, 4, &n);
    CU_ASSERT_EQUAL(t[1].kind, TK_ERROR);
    CU_ASSERT_STRING_EQUAL(t[1].err_code, "E001");
    CU_ASSERT_EQUAL(t[1].col, 9);
    CU_ASSERT_EQUAL(t[2].kind, TK_IDENT); /* lexing goes on at the next line */
    CU_ASSERT_EQUAL(t[2].line, 2);
    lex_all("\"a \\\" b\" x", t, 4, &n);
    CU_ASSERT_EQUAL(t[0].kind, TK_STRING);
    CU_ASSERT_EQUAL(t[0].len, 8);
}

static void test_bad_characters(void)
{
    struct rules__tok t[8];
    int n;
    lex_all("a = b ! c $ \xc3\xa9", t, 8, &n);
    CU_ASSERT_EQUAL(t[1].kind, TK_ERROR);
    CU_ASSERT_EQUAL(t[3].kind, TK_ERROR);
    CU_ASSERT_EQUAL(t[5].kind, TK_ERROR);
    CU_ASSERT_EQUAL(t[6].kind, TK_ERROR);
    CU_ASSERT_EQUAL(t[6].len, 2); /* a whole UTF-8 character */
}

void cb_test_suite_lexer(void);
void cb_test_suite_lexer(void)
{
    CU_pSuite s = CU_add_suite("lexer", NULL, NULL);
    CU_add_test(s, "lexer: tokens carry offset, length, line, column and start-of-line", test_tokens_point_into_source);
    CU_add_test(s, "lexer: durations take ms/s/m/h/d and compound forms; others are errors", test_durations);
    CU_add_test(s, "lexer: '..' ranges and comparison operators", test_range_and_operators);
    CU_add_test(s, "lexer: an unterminated string is an error at its quote, lexing goes on", test_unterminated_string);
    CU_add_test(s, "lexer: stray characters are errors, one per UTF-8 character", test_bad_characters);
}
