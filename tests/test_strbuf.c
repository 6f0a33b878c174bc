/* Unit tests: the string buffer used as an arena of strings addressed by
 * offset (the decoder's names, the store's pending batches). */
#include "base/strbuf.h"

#include <CUnit/CUnit.h>
#include <stdint.h>
#include <string.h>

static void test_arena_strings(void)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    size_t a = cb_strbuf_add_string(&b, "city/d07", 8);
    size_t m = cb_strbuf_add_string(&b, "levelXX", 5); /* only n bytes are taken */
    size_t e = cb_strbuf_add_string(&b, "", 0);
    CU_ASSERT_EQUAL(a, 0);
    CU_ASSERT_EQUAL(m, 9);
    CU_ASSERT_EQUAL(e, 15);
    CU_ASSERT_STRING_EQUAL(b.data + a, "city/d07");
    CU_ASSERT_STRING_EQUAL(b.data + m, "level");
    CU_ASSERT_STRING_EQUAL(b.data + e, "");
    CU_ASSERT_EQUAL(b.len, 16);
    /* growing moves the buffer; offsets stay valid */
    char big[300];
    memset(big, 'x', sizeof big);
    size_t g = cb_strbuf_add_string(&b, big, sizeof big);
    CU_ASSERT_EQUAL(g, 16);
    CU_ASSERT_STRING_EQUAL(b.data + m, "level");
    CU_ASSERT_EQUAL(strlen(b.data + g), sizeof big);
    /* cutting back forgets what came after, keeps what came before */
    cb_strbuf_truncate(&b, g);
    CU_ASSERT_EQUAL(b.len, 16);
    CU_ASSERT_EQUAL(cb_strbuf_add_string(&b, "flow", 4), 16);
    CU_ASSERT_STRING_EQUAL(b.data + 16, "flow");
    cb_strbuf_free(&b);
}

/* A failure is sticky until the buffer is cut back or reset, which clear it:
 * an arena that met one failed allocation works again afterwards. */
static void test_oom_is_cleared_by_truncate_and_reset(void)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    CU_ASSERT_EQUAL(cb_strbuf_add_string(&b, "a", 1), 0);
    b.oom = 1; /* as after a failed realloc */
    CU_ASSERT_EQUAL(cb_strbuf_add_string(&b, "b", 1), SIZE_MAX);
    cb_strbuf_truncate(&b, 2);
    CU_ASSERT_EQUAL(b.oom, 0);
    CU_ASSERT_EQUAL(cb_strbuf_add_string(&b, "b", 1), 2);
    b.oom = 1;
    cb_strbuf_reset(&b);
    CU_ASSERT_EQUAL(b.oom, 0);
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_EQUAL(cb_strbuf_add_string(&b, "c", 1), 0);
    cb_strbuf_free(&b);
}

static void test_fill(void)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    cb_strbuf_puts(&b, "ab");
    cb_strbuf_fill(&b, '~', 5);
    cb_strbuf_fill(&b, ' ', 0);
    CU_ASSERT_STRING_EQUAL(b.data, "ab~~~~~");
    cb_strbuf_fill(&b, 'x', 1000);
    CU_ASSERT_EQUAL(b.len, 1007);
    CU_ASSERT_EQUAL(b.data[1006], 'x');
    CU_ASSERT_EQUAL(b.data[1007], '\0');
    cb_strbuf_free(&b);
}

void cb_test_suite_strbuf(void);
void cb_test_suite_strbuf(void)
{
    CU_pSuite s = CU_add_suite("strbuf", NULL, NULL);
    CU_add_test(s, "strbuf: strings back to back, addressed by offset, cut back", test_arena_strings);
    CU_add_test(s, "strbuf: a failed allocation is cleared by truncate and reset",
                test_oom_is_cleared_by_truncate_and_reset);
    CU_add_test(s, "strbuf: fill appends n copies of a character", test_fill);
}
