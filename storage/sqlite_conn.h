/* Extra SQLite connections on the citybrain database, for modules that keep
 * their own tables in it (alerts/alert_store.c). Separate from storage.h so
 * that only those files see sqlite3.h. */
#ifndef CB_STORAGE_SQLITE_CONN_H
#define CB_STORAGE_SQLITE_CONN_H

#include <sqlite3.h>
#include <stddef.h>

/* Opens a read-write connection to the database at `path` with the pragmas the
 * writer uses (WAL, the synchronous mode the writer recorded in the database,
 * a busy timeout, foreign-file and schema-version checks). The schema must
 * already exist: cb_store_open creates and migrates it first. Returns the
 * connection (the caller closes it with sqlite3_close, on one thread at a
 * time), or NULL with err filled. */
sqlite3 *cb_store_open_connection(const char *path, char *err, size_t errlen);

#endif
