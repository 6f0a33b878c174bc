/* The CUnit runner shared by the unit and the integration test binaries.
 *
 * Usage: test_unit [NAME...]   runs every registered suite, or only those whose
 * registry name (the NAME in tests/test_NAME.c) is given. Prints CUnit's
 * summary and exits 1 when any assertion, test or suite set-up failed, 0 when
 * all passed, 2 when CUnit itself could not start. */
#include <CUnit/Basic.h>
#include <stdio.h>
#include <string.h>

struct cb_test_entry { const char *name; void (*add)(void); };
extern const struct cb_test_entry cb_test_registry[];

static int wanted(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "test: cannot initialise CUnit: %s\n", CU_get_error_msg());
        return 2;
    }
    for (const struct cb_test_entry *e = cb_test_registry; e->name; e++)
        if (wanted(e->name, argc, argv))
            e->add();
    if (CU_get_error() != CUE_SUCCESS) {
        fprintf(stderr, "test: registering suites failed: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed() +
                      CU_get_number_of_suites_failed();
    CU_pFailureRecord f = CU_get_failure_list();
    if (f) {
        fprintf(stderr, "\nFailures:\n");
        for (; f; f = f->pNext)
            fprintf(stderr, "  %s: %s:%u: %s\n", f->pTest ? f->pTest->pName : "(suite)",
                    f->strFileName ? f->strFileName : "?", f->uiLineNumber,
                    f->strCondition ? f->strCondition : "");
    }
    CU_cleanup_registry();
    return failed ? 1 : 0;
}
