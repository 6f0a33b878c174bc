/* See store_fixture.h. */
#include "tests/support/store_fixture.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config.h"
#include "storage/storage.h"

int cb_t_create_schema(const char *db)
{
    struct cb_config c;
    char e[256] = "";
    if (cb_config_defaults(&c))
        return -1;
    free(c.storage_db);
    c.storage_db = strdup(db);
    struct cb_store *s = cb_store_open(&c, NULL, e, sizeof e);
    if (!s)
        fprintf(stderr, "cb_store_open: %s\n", e);
    else
        cb_store_close(s);
    cb_config_free(&c);
    return s ? 0 : -1;
}

void cb_t_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

int64_t cb_t_sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}
