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
 * in host byte order (the journal never leaves the machine), written with one
 * write(2). A crash can leave the last record torn; the CRC and the lengths
 * detect it, and open() cuts it off (that message was never acknowledged, so
 * the broker still has it).
 *
 * Durability trade-off (docs/storage.md, "Crash safety"). With
 * storage.journal_fsync = none (the default) a record is in the kernel's page
 * cache when the MQTT callback returns: it survives a crash or kill -9 of
 * citybrain, but NOT a power loss or kernel panic, which can lose the last
 * seconds of acknowledged messages (the broker has already dropped them).
 * `always` adds an fdatasync per record: power-loss safe, at the cost of one
 * disk flush per message (hundreds per second on an SSD instead of hundreds
 * of thousands). SQLite's own synchronous = NORMAL has the same shape: the
 * last commits may be lost on power loss, never corrupted.
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

struct cb_journal {
    pthread_mutex_t mu;
    char *dir;
    int64_t segment_bytes;
    int fsync_each;
    int fd;              /* the active (last) segment, O_APPEND */
    int64_t active_size;
    uint64_t *segs;      /* first position of each segment, ascending */
    size_t nsegs, capsegs;
    uint64_t next_pos;
    unsigned char *buf;  /* record being assembled */
    size_t bufcap;
    int torn_tail;       /* a failed record could not be cut off the active segment */
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

/* Makes a new empty segment starting at j->next_pos the active one. */
static int start_segment(struct cb_journal *j)
{
    char *p = seg_path(j, j->next_pos);
    if (!p)
        return -1;
    int fd = open(p, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, STORAGE_FILE_MODE);
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
    if (j->fd >= 0)
        close(j->fd);
    j->fd = fd;
    j->active_size = 0;
    return 0;
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
    if (map)
        munmap(map, len);
    if (off < len) {
        /* A torn last record (crash mid-write): that message was never
         * acknowledged, the broker redelivers it. Cut it off so appends follow
         * the last whole record. */
        j->stats.torn_records++;
        if (truncate(path, (off_t)off) < 0) {
            storage__set_err(err, errlen, "journal %s: cannot cut the torn tail: %s", path,
                             strerror(errno));
            free(path);
            return -1;
        }
    }
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) {
        storage__set_err(err, errlen, "journal %s: cannot open for appending: %s", path,
                         strerror(errno));
        free(path);
        return -1;
    }
    free(path);
    j->fd = fd;
    j->active_size = (int64_t)off;
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

/* Takes a failed record's bytes back off the active segment, so the next
 * record starts clean: the caller retries the same message, and recovery
 * (recover_last) would otherwise cut the torn bytes off together with every
 * whole record behind them. When the file cannot be cut, later records go to
 * a new segment instead (replay skips a damaged segment's tail); until one
 * of the two works, appends fail. Returns 0 or -1. */
static int take_back(struct cb_journal *j)
{
    if (ftruncate(j->fd, (off_t)j->active_size) == 0) {
        j->torn_tail = 0;
        return 0;
    }
    j->torn_tail = 1;
    /* the torn record may hold j->next_pos: never reuse it */
    j->next_pos++;
    if (start_segment(j) == 0) {
        j->torn_tail = 0;
        return 0;
    }
    return -1;
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
    if (j->fd < 0)
        goto out;
    if (j->torn_tail && take_back(j) < 0) {
        err = errno;
        goto out;
    }
    if (total > j->bufcap) {
        size_t cap = total < 4096 ? 4096 : total;
        unsigned char *b = realloc(j->buf, cap);
        if (!b) {
            err = ENOMEM;
            goto out;
        }
        j->buf = b;
        j->bufcap = cap;
    }
    if (j->active_size > 0 && j->active_size + (int64_t)total > j->segment_bytes &&
        start_segment(j) < 0) {
        err = errno;
        goto out;
    }
    uint64_t p = j->next_pos;
    uint32_t magic = JOURNAL_MAGIC, tl = (uint32_t)topic_len, pl = (uint32_t)len;
    unsigned char *b = j->buf;
    memcpy(b, &magic, 4);
    memcpy(b + 8, &p, 8);
    memcpy(b + 16, &arrival_ms, 8);
    memcpy(b + 24, &tl, 4);
    memcpy(b + 28, &pl, 4);
    memcpy(b + JOURNAL_HDR, topic, topic_len);
    if (len)
        memcpy(b + JOURNAL_HDR + topic_len, payload, len);
    uint32_t crc = crc32_buf(b + 8, total - 8);
    memcpy(b + 4, &crc, 4);
    ssize_t w;
    do
        w = write(j->fd, b, total);
    while (w < 0 && errno == EINTR);
    if (w != (ssize_t)total) {
        /* Disk full or I/O error (a short write: the file system filled up
         * part-way): take back what went in; the caller keeps the message
         * unacknowledged and tries again later. */
        err = w < 0 ? errno : ENOSPC;
        if (w > 0)
            take_back(j);
        goto out;
    }
    if (j->fsync_each && fdatasync(j->fd) < 0) {
        err = errno;
        take_back(j);
        goto out;
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
        while (off < len && rc == 0) {
            uint64_t pos;
            int64_t arrival;
            uint32_t tl, pl;
            size_t n = record_check(map + off, len - off, &pos, &arrival, &tl, &pl);
            if (!n) {
                /* Damage inside a closed segment (the tail of the active one
                 * was cut at open): skip the rest of this segment. */
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
            munmap(map, len);
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
    if (j->fd >= 0)
        close(j->fd);
    pthread_mutex_destroy(&j->mu);
    free(j->buf);
    free(j->segs);
    free(j->dir);
    free(j);
}
