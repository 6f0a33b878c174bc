/* The daemon's memory. A soak of an hour (BENCHMARKS.md "Soak") showed the
 * resident size climbing while the heap in use stayed flat: memory freed but
 * kept by malloc, in holes between live blocks. Three settings keep it flat:
 *
 * - SQLite's page caches take their pages from one slab of their own, mapped
 *   once. A page cache is thrown away whole whenever another connection has
 *   written (in WAL mode a reader's cache, and the writer's after the alert
 *   store commits), then rebuilt a 4 KB page at a time among everything
 *   else the heap holds; from a slab the same pages come and go without
 *   leaving holes in the heap. Pages that do not fit (the slab full) come
 *   from malloc as before, and /metrics counts them.
 * - A fixed mmap threshold. glibc raises its threshold up to 32 MB each time
 *   a large mapped block is freed, after which blocks that size come from
 *   the heap and leave holes when freed; fixed, every block of 128 KB or more
 *   is mapped and unmapped whole.
 * - Once a minute, malloc_trim gives whole free pages anywhere in the heap
 *   back to the system (madvise). It held the loop 0.2 ms on average in a
 *   one-hour soak, 1.15 ms at most. */
#include "cmd/memory.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/metrics.h"

#include <errno.h>
#include <malloc.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define MOD "memory"

#define HEAP_TRIM_INTERVAL_MS 60000
#define MMAP_THRESHOLD_BYTES (128 * 1024)
/* citybrain's databases use SQLite's default page size. A page cache line is
 * the page, then SQLite's header for it (SQLITE_CONFIG_PCACHE_HDRSZ). */
#define SLAB_PAGE_BYTES 4096

/* One slab per process, set up when the program is loaded: SQLite takes its
 * configuration only before it is initialized, and storage's constructor
 * (samples_vtab.c) initializes it when it registers the `samples` table.
 * Priority 101 runs this one first. Every command of the citybrain binary
 * gets the slab, resident from the start (`citybrain --version`: 25 MB of
 * maximum RSS, 0.02 s). */
static struct {
    int slots; /* pages it holds; 0: no slab */
    char err[160];
} g_slab;

__attribute__((constructor(101))) static void page_slab_setup(void)
{
    static const char refused[] =
        "SQLite was initialized before the page slab: its page caches use malloc";
    int hdr = 0;
    if (sqlite3_config(SQLITE_CONFIG_PCACHE_HDRSZ, &hdr) != SQLITE_OK) {
        snprintf(g_slab.err, sizeof g_slab.err, "%s", refused);
        return;
    }
    size_t slot = ((size_t)SLAB_PAGE_BYTES + (size_t)hdr + 7) & ~(size_t)7;
    int slots = (int)(CMD_PAGE_SLAB_BYTES / slot);
    size_t bytes = slot * (size_t)slots;
    void *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        snprintf(g_slab.err, sizeof g_slab.err, "page slab of %zu bytes: %s", bytes,
                 strerror(errno));
        return;
    }
    if (sqlite3_config(SQLITE_CONFIG_PAGECACHE, mem, (int)slot, slots) != SQLITE_OK) {
        munmap(mem, bytes);
        snprintf(g_slab.err, sizeof g_slab.err, "%s", refused);
        return;
    }
    g_slab.slots = slots;
}

int cmd__memory_setup(struct cmd_memory *m, char *err, size_t errlen)
{
#if defined(__GLIBC__)
    /* Setting it also turns glibc's dynamic threshold off. (A sanitizer's
     * allocator answers 0 and has no such threshold.) */
    if (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) != 1)
        cb_debug(MOD, "malloc: the mmap threshold is not glibc's to fix");
#endif
    memset(m, 0, sizeof *m);
    m->last_trim_ms = cb_mono_ms();
    if (g_slab.slots > 0)
        return 0;
    snprintf(err, errlen, "%s", g_slab.err);
    return -1;
}

void cmd__memory_tick(struct cmd_memory *m)
{
#if defined(__GLIBC__)
    int64_t now = cb_mono_ms();
    if (now - m->last_trim_ms < HEAP_TRIM_INTERVAL_MS)
        return;
    m->last_trim_ms = now;
    int64_t t0 = cb_mono_us();
    malloc_trim(0);
    m->trim_seconds = (double)(cb_mono_us() - t0) / 1e6;
#else
    (void)m;
#endif
}

/* ---- gauges ------------------------------------------------------------------------ */

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
/* mallinfo2 walks every arena's free lists under their locks: one reading
 * serves both gauges of a scrape (they are rendered one after the other). */
static struct mallinfo2 heap_reading(void)
{
    static struct mallinfo2 mi;
    static int64_t read_at;
    static int have;
    int64_t now = cb_mono_ms();
    if (!have || now - read_at > 1000) {
        mi = mallinfo2();
        read_at = now;
        have = 1;
    }
    return mi;
}

static double g_heap_in_use(void *ctx)
{
    (void)ctx;
    struct mallinfo2 mi = heap_reading();
    return (double)(mi.uordblks + mi.hblkhd);
}

static double g_heap_free(void *ctx)
{
    (void)ctx;
    return (double)heap_reading().fordblks;
}
#endif

static double g_trim_seconds(void *ctx) { return ((struct cmd_memory *)ctx)->trim_seconds; }

static double sqlite_status(int op)
{
    sqlite3_int64 cur = 0, high = 0;
    if (sqlite3_status64(op, &cur, &high, 0) != SQLITE_OK)
        return 0;
    return (double)cur;
}

static double g_slab_used(void *ctx)
{
    (void)ctx;
    return sqlite_status(SQLITE_STATUS_PAGECACHE_USED);
}

static double g_slab_overflow(void *ctx)
{
    (void)ctx;
    return sqlite_status(SQLITE_STATUS_PAGECACHE_OVERFLOW);
}

static double g_slab_slots(void *ctx)
{
    (void)ctx;
    return g_slab.slots;
}

void cmd__memory_register_metrics(struct cmd_memory *m)
{
    static const struct {
        const char *name, *help;
        double (*fn)(void *);
    } fns[] = {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
        {"citybrain_heap_in_use_bytes", "bytes allocated and not freed (malloc, all arenas)",
         g_heap_in_use},
        {"citybrain_heap_free_bytes", "bytes freed but kept by the allocator (all arenas)",
         g_heap_free},
#endif
        {"citybrain_heap_trim_seconds",
         "how long the last return of free heap pages to the system took (once a minute)",
         g_trim_seconds},
        {"citybrain_sqlite_page_slab_pages", "pages the SQLite page slab holds (0: no slab)",
         g_slab_slots},
        {"citybrain_sqlite_page_slab_used_pages",
         "pages of SQLite's page caches taken from the slab", g_slab_used},
        {"citybrain_sqlite_page_overflow_bytes",
         "bytes of SQLite's page caches taken from malloc because the slab was full",
         g_slab_overflow},
    };
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        cb_metrics_gauge_fn(fns[i].name, "", fns[i].help, fns[i].fn, m);
}
