/* The daemon's memory: how the allocator and SQLite are set up so that a
 * city running for months keeps a flat resident size (cmd/memory.c). */
#ifndef CB_CMD_MEMORY_H
#define CB_CMD_MEMORY_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of the SQLite page slab, set up when the program is loaded: every
 * connection's page cache (the writer's, the readers', the alert store's,
 * in-memory temporary tables) takes its pages from it first. */
#define CMD_PAGE_SLAB_BYTES (16u << 20)

/* The heap's trim; the slab itself is the process's, one for all. */
struct cmd_memory {
    int64_t last_trim_ms; /* monotonic clock of the last trim */
    double trim_seconds;  /* how long it took */
};

/* At the daemon's start: fixes malloc's mmap threshold and tells how the
 * page slab (set up when the program was loaded) went. Returns 0, or -1 with
 * err when there is no slab (the page caches then use malloc; nothing else
 * changes). */
int cmd__memory_setup(struct cmd_memory *m, char *err, size_t errlen);

/* From the loop's one-second tick: gives free heap pages back to the system
 * once a minute. */
void cmd__memory_tick(struct cmd_memory *m);

/* The gauges of /metrics: heap in use and free, the last trim's time, the
 * slab's pages in use and the page cache bytes that did not fit in it. */
void cmd__memory_register_metrics(struct cmd_memory *m);

#endif
