/* Fixtures shared by the unit and integration suites that work on a real
 * citybrain database in a temporary directory (storage, journal, alerts, CAP,
 * webhook): create the schema as the daemon does, remove the directory.
 * Test thread only. */
#ifndef CB_TESTS_SUPPORT_STORE_FIXTURE_H
#define CB_TESTS_SUPPORT_STORE_FIXTURE_H

#include <sqlite3.h>
#include <stdint.h>

/* Creates the database at `db` with its whole schema (alert tables included)
 * as the daemon does: cb_store_open creates and migrates, cb_store_close
 * commits and closes. Returns 0, or -1 with the reason on stderr. */
int cb_t_create_schema(const char *db);

/* Removes `dir` and the files directly in it (a test's flat temp dir: the
 * database, its -wal and -shm, journal segments). Missing dir: no-op. */
void cb_t_remove_dir(const char *dir);

/* The first column of the first row of `sql` on db as an integer, -1 when
 * the statement fails or gives no row (tests read counts and pragmas). */
int64_t cb_t_sql_int(sqlite3 *db, const char *sql);

#endif
