/* The ingest journal: every MQTT message, raw, appended before it is
 * acknowledged, so a message the broker has let go of survives a crash of
 * citybrain until its rows are committed to SQLite.
 *
 * Files: DIR/<first position, 20 digits>.seg, positions counted per record
 * from 1 and never reused. A record is
 *
 *   u32 magic "CBJ1" | u32 crc32 of the rest | u64 pos | i64 arrival_ms |
 *   u32 topic_len | u32 payload_len | topic bytes | payload bytes
 *
 * in host byte order (the journal never leaves the machine).
 *
 * Write path. The active segment is mapped shared (MAP_SHARED) and a record
 * is copied into the map: no system call per message, where a write(2) per
 * message cost the Paho thread a syscall, the file lock and an mtime update
 * each time. The file is made longer ahead of the records in steps of
 * JOURNAL_GROW bytes with posix_fallocate, so the blocks under the map are
 * reserved before a byte is copied: a full disk or a file-size limit is an
 * error of the growth (append returns -1, nothing of the record is written),
 * never a SIGBUS on a store into a hole. The map is a window of
 * JOURNAL_WINDOW bytes (wider for a larger record) that moves along the
 * segment, so the process's resident set holds at most that much of the
 * journal. The tail of the file beyond the last record is zeros (the room
 * grown ahead); open() recognises it as room (not a torn record), and a
 * segment is cut to its records when it is closed or rotated.
 *
 * Durability trade-off (docs/storage.md, "Crash safety"). With
 * storage.journal_fsync = none (the default) a record is in the kernel's page
 * cache when the MQTT callback returns (a store into a shared file mapping
 * is a store into the page cache itself): it survives a crash or kill -9 of
 * citybrain, exactly as a completed write(2) did, but NOT a power loss or
 * kernel panic, which can lose the last seconds of acknowledged messages
 * (the broker has already dropped them); the kernel writes the dirty pages
 * back on its own schedule (vm.dirty_expire_centisecs, 30 s by default).
 * `always` adds an msync(MS_SYNC) of the record's pages per record:
 * power-loss safe, at the cost of one disk flush per message (hundreds per
 * second on an SSD instead of hundreds of thousands). SQLite's own
 * synchronous = NORMAL has the same shape: the last commits may be lost on
 * power loss, never corrupted. A crash can leave the last record torn; the
 * CRC and the lengths detect it, and open() cuts it off (that message was
 * never acknowledged, so the broker still has it).
 *
 * The rows a record produced are committed to SQLite together with its
 * position (ingest_state); on start the daemon replays every record after the
 * committed position, and cb_journal_release deletes segments whose records
 * are all committed. */
#include "storage/storage_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define JOURNAL_MAGIC 0x314a4243u /* "CBJ1" little-endian */
#define JOURNAL_HDR 32
#define JOURNAL_MAX_FIELD (1u << 30)
#define JOURNAL_MAX_POS ((uint64_t)INT64_MAX / 2) /* no segment starts beyond */
/* Room reserved ahead of the records, per growth. Small, so that a full disk
 * stops the journal within a few hundred messages of filling up (the room
 * already reserved is used first), and so a crash leaves little zero tail. */
#define JOURNAL_GROW ((int64_t)16 << 10)
/* Bytes of the active segment mapped at a time (the resident journal). */
#define JOURNAL_WINDOW ((size_t)1 << 20)

struct cb_journal {
    pthread_mutex_t mu;
    char *dir;
    int64_t segment_bytes;
    int fsync_each;
    int fd;              /* the active (last) segment, read-write */
    int64_t active_size; /* bytes of whole records in it */
    int64_t file_size;   /* its length: records, then zeroed room */
    unsigned char *map;  /* a window of it, MAP_SHARED, or NULL */
    int64_t map_off;     /* file offset of map[0], a multiple of the page size */
    size_t map_len;
    uint64_t *segs;      /* first position of each segment, ascending */
    size_t nsegs, capsegs;
    uint64_t next_pos;
    struct cb_journal_stats stats;
};

/* ---- CRC-32 (IEEE 802.3, reflected) -------------------------------------- */

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static uint32_t crc32_buf(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- segments ---------------------------------------------------------------- */

static char *seg_path(const struct cb_journal *j, uint64_t first)
{
    size_t n = strlen(j->dir) + 32;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%020llu.seg", j->dir, (unsigned long long)first);
    return p;
}

static int segs_push(struct cb_journal *j, uint64_t first)
{
    if (j->nsegs == j->capsegs) {
        size_t cap = j->capsegs ? j->capsegs * 2 : 16;
        uint64_t *s = realloc(j->segs, cap * sizeof *s);
        if (!s)
            return -1;
        j->segs = s;
        j->capsegs = cap;
    }
    j->segs[j->nsegs++] = first;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void sync_dir(const struct cb_journal *j)
{
    int dfd = open(j->dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
}

/* Unmaps the active segment, cuts its zeroed room off (a closed segment
 * holds whole records only) and closes it. */
static void finish_segment(struct cb_journal *j)
{
    if (j->map)
        munmap(j->map, j->map_len);
    j->map = NULL;
    j->map_len = 0;
    if (j->fd >= 0) {
        if (j->file_size > j->active_size)
            (void)ftruncate(j->fd, (off_t)j->active_size); /* else left as room: harmless */
        close(j->fd);
    }
    j->fd = -1;
}

/* Makes a new empty segment starting at j->next_pos the active one. No file
 * of that name can hold records (positions are never reused), so it is
 * created empty. */
static int start_segment(struct cb_journal *j)
{
    char *p = seg_path(j, j->next_pos);
    if (!p)
        return -1;
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, STORAGE_FILE_MODE);
    free(p);
    if (fd < 0)
        return -1;
    if (j->fsync_each)
        sync_dir(j);
    if (j->nsegs && j->segs[j->nsegs - 1] == j->next_pos) {
        /* reopening the same (empty) segment */
    } else if (segs_push(j, j->next_pos) < 0) {
        close(fd);
        return -1;
    }
    finish_segment(j);
    j->fd = fd;
    j->active_size = 0;
    j->file_size = 0;
    return 0;
}

/* Makes room for `total` more bytes after the records of the active
 * segment: grows the file (reserving its blocks) and moves the window so it
 * covers them. Returns 0, or -1 with errno set (ENOSPC, EFBIG, ENOMEM...)
 * with nothing written. */
static int make_room(struct cb_journal *j, size_t total)
{
    int64_t end = j->active_size + (int64_t)total;
    if (end > j->file_size) {
        int64_t want = (end + JOURNAL_GROW - 1) / JOURNAL_GROW * JOURNAL_GROW;
        int r = posix_fallocate(j->fd, (off_t)j->file_size, (off_t)(want - j->file_size));
        if (r != 0) {
            errno = r;
            return -1;
        }
        j->file_size = want;
    }
    if (j->map && j->active_size >= j->map_off && end <= j->map_off + (int64_t)j->map_len)
        return 0;
    if (j->map)
        munmap(j->map, j->map_len);
    j->map = NULL;
    int64_t page = sysconf(_SC_PAGESIZE);
    int64_t off = j->active_size / page * page;
    size_t len = (size_t)(end - off);
    len = len < JOURNAL_WINDOW ? JOURNAL_WINDOW : (len + (size_t)page - 1) / (size_t)page * (size_t)page;
    /* The window may reach past the end of the file: only bytes below
     * file_size are ever touched. */
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, j->fd, (off_t)off);
    if (m == MAP_FAILED)
        return -1;
    j->map = m;
    j->map_off = off;
    j->map_len = len;
    return 0;
}

/* Whether the n bytes at p are all zero: room grown ahead of the records
 * (see the top), not a torn or damaged record. */
static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

/* Validates the record at p (avail bytes left). Returns its total size, or 0
 * when it is torn or corrupt. */
static size_t record_check(const unsigned char *p, size_t avail, uint64_t *pos,
                           int64_t *arrival, uint32_t *tlen, uint32_t *plen)
{
    if (avail < JOURNAL_HDR)
        return 0;
    uint32_t magic, crc;
    memcpy(&magic, p, 4);
    memcpy(&crc, p + 4, 4);
    memcpy(pos, p + 8, 8);
    memcpy(arrival, p + 16, 8);
    memcpy(tlen, p + 24, 4);
    memcpy(plen, p + 28, 4);
    if (magic != JOURNAL_MAGIC || *tlen > JOURNAL_MAX_FIELD || *plen > JOURNAL_MAX_FIELD)
        return 0;
    size_t total = JOURNAL_HDR + (size_t)*tlen + (size_t)*plen;
    if (total > avail)
        return 0;
    if (crc32_buf(p + 8, total - 8) != crc)
        return 0;
    return total;
}

/* Maps a segment read-only. *len 0 and NULL for an empty file. Returns 0/-1. */
static int map_segment(const char *path, unsigned char **map, size_t *len)
{
    *map = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -1;
    }
    if (st.st_size > 0) {
        void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return -1;
        }
        *map = m;
        *len = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

/* Scans the last segment: finds the next position and cuts a torn tail. */
static int recover_last(struct cb_journal *j, char *err, size_t errlen)
{
    uint64_t first = j->segs[j->nsegs - 1];
    char *path = seg_path(j, first);
    unsigned char *map = NULL;
    size_t len = 0, off = 0;
    uint64_t expect = first;
    if (!path || map_segment(path, &map, &len) < 0) {
        storage__set_err(err, errlen, "journal %s: cannot read: %s", path ? path : j->dir,
                         strerror(errno));
        free(path);
        return -1;
    }
    while (off < len) {
        uint64_t pos;
        int64_t arrival;
        uint32_t tl, pl;
        size_t n = record_check(map + off, len - off, &pos, &arrival, &tl, &pl);
        if (!n || pos != expect)
            break;
        off += n;
        expect++;
    }
    if (off < len) {
        /* A torn last record (crash mid-write): that message was never
         * acknowledged, the broker redelivers it. Or, after a crash, the
         * zeroed room grown ahead of the records, which is no record at all.
         * Either way cut it off so appends follow the last whole record. */
        if (!all_zero(map + off, len - off))
            j->stats.torn_records++;
        if (truncate(path, (off_t)off) < 0) {
            storage__set_err(err, errlen, "journal %s: cannot cut the torn tail: %s", path,
                             strerror(errno));
            if (map)
                munmap(map, len);
            free(path);
            return -1;
        }
    }
    if (map)
        munmap(map, len);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        storage__set_err(err, errlen, "journal %s: cannot open for appending: %s", path,
                         strerror(errno));
        free(path);
        return -1;
    }
    free(path);
    j->fd = fd;
    j->active_size = (int64_t)off;
    j->file_size = (int64_t)off;
    j->next_pos = expect;
    return 0;
}

struct cb_journal *cb_journal_open(const char *dir, int64_t segment_bytes, int fsync_each,
                                   char *err, size_t errlen)
{
    pthread_once(&crc_once, crc_init);
    struct cb_journal *j = calloc(1, sizeof *j);
    DIR *d = NULL;
    if (!j) {
        storage__set_err(err, errlen, "journal: out of memory");
        return NULL;
    }
    j->fd = -1;
    j->segment_bytes = segment_bytes > JOURNAL_HDR ? segment_bytes : JOURNAL_HDR;
    j->fsync_each = fsync_each;
    pthread_mutex_init(&j->mu, NULL);
    j->dir = strdup(dir);
    if (!j->dir) {
        storage__set_err(err, errlen, "journal: out of memory");
        goto fail;
    }
    if (mkdir(dir, STORAGE_DIR_MODE) < 0 && errno != EEXIST) {
        storage__set_err(err, errlen, "journal %s: cannot create the directory: %s", dir,
                         strerror(errno));
        goto fail;
    }
    d = opendir(dir);
    if (!d) {
        storage__set_err(err, errlen, "journal %s: cannot read the directory: %s", dir,
                         strerror(errno));
        goto fail;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end = NULL;
        if (strlen(e->d_name) != 24 || strcmp(e->d_name + 20, ".seg") != 0 ||
            e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        errno = 0;
        unsigned long long first = strtoull(e->d_name, &end, 10);
        /* Positions are stored in SQLite as signed 64-bit integers and are
         * never near 2^63: a name beyond that (or past 2^64, which strtoull
         * would clamp) is no segment of ours. Taking it would make the
         * position counter wrap to 0 and replay skip the new records. */
        if (end != e->d_name + 20 || errno == ERANGE || first == 0 || first > JOURNAL_MAX_POS)
            continue;
        if (segs_push(j, first) < 0) {
            storage__set_err(err, errlen, "journal: out of memory");
            goto fail;
        }
    }
    closedir(d);
    d = NULL;
    if (j->nsegs)
        qsort(j->segs, j->nsegs, sizeof *j->segs, cmp_u64);
    if (j->nsegs == 0) {
        j->next_pos = 1;
        if (start_segment(j) < 0) {
            storage__set_err(err, errlen, "journal %s: cannot create a segment: %s", dir,
                             strerror(errno));
            goto fail;
        }
    } else if (recover_last(j, err, errlen) < 0) {
        goto fail;
    }
    return j;

fail:
    if (d)
        closedir(d);
    cb_journal_close(j);
    return NULL;
}

int cb_journal_append(struct cb_journal *j, const char *topic, size_t topic_len,
                      const void *payload, size_t len, int64_t arrival_ms, uint64_t *pos)
{
    if (topic_len > JOURNAL_MAX_FIELD || len > JOURNAL_MAX_FIELD) {
        errno = EFBIG;
        return -1;
    }
    size_t total = JOURNAL_HDR + topic_len + len;
    int rc = -1, err = EIO;
    pthread_mutex_lock(&j->mu);
    if (j->fd < 0 && start_segment(j) < 0) {
        err = errno; /* a rotation that failed earlier: try again */
        goto out;
    }
    if (j->active_size > 0 && j->active_size + (int64_t)total > j->segment_bytes &&
        start_segment(j) < 0) {
        err = errno;
        goto out;
    }
    if (make_room(j, total) < 0) {
        /* Disk full, a file-size limit, no address space: nothing was
         * written; the caller keeps the message unacknowledged and tries
         * again later. */
        err = errno;
        goto out;
    }
    uint64_t p = j->next_pos;
    uint32_t magic = JOURNAL_MAGIC, tl = (uint32_t)topic_len, pl = (uint32_t)len;
    unsigned char *b = j->map + (j->active_size - j->map_off);
    memcpy(b + 8, &p, 8);
    memcpy(b + 16, &arrival_ms, 8);
    memcpy(b + 24, &tl, 4);
    memcpy(b + 28, &pl, 4);
    memcpy(b + JOURNAL_HDR, topic, topic_len);
    if (len)
        memcpy(b + JOURNAL_HDR + topic_len, payload, len);
    uint32_t crc = crc32_buf(b + 8, total - 8);
    memcpy(b + 4, &crc, 4);
    memcpy(b, &magic, 4); /* last: until here the record reads as room */
    if (j->fsync_each) {
        int64_t page = sysconf(_SC_PAGESIZE);
        int64_t from = (j->active_size - j->map_off) / page * page;
        if (msync(j->map + from, (size_t)(j->active_size - j->map_off + (int64_t)total - from),
                  MS_SYNC) < 0) {
            /* Not known to be on disk: take it back (zeros read as room). */
            err = errno;
            memset(b, 0, total);
            goto out;
        }
    }
    j->active_size += (int64_t)total;
    j->next_pos = p + 1;
    j->stats.appended++;
    j->stats.bytes += total;
    *pos = p;
    rc = 0;
out:
    if (rc < 0)
        j->stats.append_failed++;
    pthread_mutex_unlock(&j->mu);
    if (rc < 0)
        errno = err;
    return rc;
}

int cb_journal_replay(struct cb_journal *j, uint64_t after_pos, cb_journal_record_fn fn,
                      void *ctx)
{
    int rc = 0;
    char *topic = NULL;
    size_t topiccap = 0;
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < j->nsegs && rc == 0; i++) {
        if (i + 1 < j->nsegs && j->segs[i + 1] - 1 <= after_pos)
            continue; /* every record of this segment is committed */
        char *path = seg_path(j, j->segs[i]);
        unsigned char *map = NULL;
        size_t len = 0, off = 0;
        if (!path || map_segment(path, &map, &len) < 0) {
            free(path);
            rc = -1;
            break;
        }
        free(path);
        size_t mapped = len;
        if (i + 1 == j->nsegs && j->fd >= 0 && len > (size_t)j->active_size)
            len = (size_t)j->active_size; /* the open segment: its room is no record */
        while (off < len && rc == 0) {
            uint64_t pos;
            int64_t arrival;
            uint32_t tl, pl;
            size_t n = record_check(map + off, len - off, &pos, &arrival, &tl, &pl);
            if (!n) {
                /* Damage inside a closed segment (the tail of the active one
                 * was cut at open): skip the rest of this segment. Zeros to
                 * the end are the room of a segment a crash caught between
                 * its rotation and its trim: no damage. */
                if (!all_zero(map + off, len - off))
                    j->stats.corrupt_records++;
                break;
            }
            if (pos > after_pos) {
                if (tl + 1 > topiccap) {
                    char *t = realloc(topic, tl + 1);
                    if (!t) {
                        rc = -1;
                        break;
                    }
                    topic = t;
                    topiccap = tl + 1;
                }
                memcpy(topic, map + off + JOURNAL_HDR, tl);
                topic[tl] = '\0';
                rc = fn(ctx, pos, topic, map + off + JOURNAL_HDR + tl, pl, arrival);
                j->stats.replayed++;
            }
            off += n;
        }
        if (map)
            munmap(map, mapped);
    }
    pthread_mutex_unlock(&j->mu);
    free(topic);
    return rc;
}

int cb_journal_release(struct cb_journal *j, uint64_t committed_pos)
{
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    size_t drop = 0;
    /* Never the active (last) segment: it holds the position counter. */
    while (drop + 1 < j->nsegs && j->segs[drop + 1] - 1 <= committed_pos) {
        char *path = seg_path(j, j->segs[drop]);
        if (!path || (unlink(path) < 0 && errno != ENOENT)) {
            free(path);
            rc = -1;
            break;
        }
        free(path);
        drop++;
    }
    if (drop) {
        memmove(j->segs, j->segs + drop, (j->nsegs - drop) * sizeof *j->segs);
        j->nsegs -= drop;
        j->stats.segments_released += drop;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

int cb_journal_set_floor(struct cb_journal *j, uint64_t pos)
{
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    if (j->next_pos <= pos) {
        /* The journal is behind the database (its files were removed): new
         * records must come after what the database already holds, or replay
         * would skip them. */
        j->next_pos = pos + 1;
        if (j->active_size == 0 && j->nsegs) {
            char *old = seg_path(j, j->segs[j->nsegs - 1]);
            if (old)
                unlink(old);
            free(old);
            j->nsegs--;
        }
        rc = start_segment(j);
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void cb_journal_get_stats(struct cb_journal *j, struct cb_journal_stats *out)
{
    pthread_mutex_lock(&j->mu);
    *out = j->stats;
    out->next_pos = j->next_pos;
    out->segments = j->nsegs;
    pthread_mutex_unlock(&j->mu);
}

void cb_journal_close(struct cb_journal *j)
{
    if (!j)
        return;
    finish_segment(j);
    pthread_mutex_destroy(&j->mu);
    free(j->segs);
    free(j->dir);
    free(j);
}
