/* The ingest journal: every MQTT message, raw, appended before it is
 * acknowledged, so a message the broker has let go of survives a crash of
 * citybrain until its rows are committed to SQLite.
 *
 * Files: DIR/<first position, 20 digits>.seg, positions counted per record
 * from 1 and never reused; a record's position is its segment's first
 * position plus its index in the segment. Two formats (docs/storage.md,
 * "The record format"); the journal writes format 2 and replays both.
 *
 * Format 2 (this release): the segment starts with an 8-byte header,
 *
 *   u32 "CBJF" | u32 format (2)
 *
 * then records of
 *
 *   uvarint n | u32 crc | n bytes of body
 *   body: u8 flags | zig-zag varint arrival_ms - the previous record's
 *         (0 before the first) | uvarint topic id | (flags & 1: uvarint
 *         topic_len | topic bytes) | payload bytes (the rest of the body)
 *
 * The crc is the CRC-32 of the record's position (u64 little endian) and
 * its body: a torn record, a damaged byte or a record read at a position it
 * was not written for all fail it. Topics are a dictionary per segment: the
 * first record of a topic in a segment has flag 1, carries the text and
 * defines the next id (0, 1, 2...); later records give only the id. A record
 * of a 19-byte topic already seen and a 5-byte payload takes 13 or 14 bytes
 * (the format 1 record took 56). A record's first byte (its length) is never
 * zero, so zeros after the last record are room, not a record.
 *
 * Format 1 (releases up to 74dafe1): no header; records of
 *
 *   u32 magic "CBJ1" | u32 crc32 of the rest | u64 pos | i64 arrival_ms |
 *   u32 topic_len | u32 payload_len | topic bytes | payload bytes
 *
 * A format 1 segment is replayed as it is and never appended to: when the
 * last segment at open is one, the next append starts a new (format 2)
 * segment. Both in host byte order (the journal never leaves the machine).
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
 * journal (and the topic dictionary, at most DICT_MAX_TEXT bytes of text
 * before the segment rotates). The tail of the file beyond the last record
 * is zeros (the room grown ahead); open() recognises it as room (not a torn
 * record), and a segment is cut to its records when it is closed or rotated.
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

#define JOURNAL_MAGIC 0x314a4243u /* format 1 record: "CBJ1" little-endian */
#define JOURNAL_HDR 32                /* format 1 record header */
#define SEG_MAGIC 0x464a4243u     /* format 2 segment: "CBJF" little-endian */
#define SEG_FORMAT 2u
#define SEG_HDR 8
#define REC_NEW_TOPIC 0x01u /* the record defines the next topic id */
#define JOURNAL_MAX_FIELD (1u << 30)
#define JOURNAL_MAX_POS ((uint64_t)INT64_MAX / 2) /* no segment starts beyond */
/* Room reserved ahead of the records, per growth. Small, so that a full disk
 * stops the journal within a few hundred messages of filling up (the room
 * already reserved is used first), and so a crash leaves little zero tail. */
#define JOURNAL_GROW ((int64_t)16 << 10)
/* Bytes of the active segment mapped at a time (the resident journal). */
#define JOURNAL_WINDOW ((size_t)1 << 20)
/* A segment rotates before its topic dictionary passes either bound, so the
 * writer's dictionary stays small whatever the topics. */
#define DICT_MAX_TOPICS ((uint32_t)1 << 20)
#define DICT_MAX_TEXT ((size_t)4 << 20)

/* A segment's topics: id -> text, and (for the writer) text -> id in an
 * open-addressing table of id + 1 (0 empty). */
struct topic_dict {
    struct dict_entry {
        uint32_t off, len, hash;
    } *ent;
    uint32_t n, cap;
    uint32_t *slots;
    uint32_t nslots; /* a power of two, at least twice n */
    char *text;
    size_t text_len, text_cap;
};

struct cb_journal {
    pthread_mutex_t mu;
    char *dir;
    int64_t segment_bytes;
    int fsync_each;
    int fd;              /* the active (last) segment, read-write; -1 when the
                            last segment is format 1 (the next append starts one) */
    int64_t active_size; /* bytes of its header and whole records */
    int64_t file_size;   /* its length: records, then zeroed room */
    unsigned char *map;  /* a window of it, MAP_SHARED, or NULL */
    int64_t map_off;     /* file offset of map[0], a multiple of the page size */
    size_t map_len;
    struct topic_dict dict; /* the active segment's topics */
    int64_t last_arrival;   /* its last record's arrival_ms (0 before the first) */
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

/* CRC-32 of n bytes at p continued from c (0xFFFFFFFF to begin; the final
 * value is c ^ 0xFFFFFFFF). */
static uint32_t crc32_more(uint32_t c, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c;
}

static uint32_t crc32_buf(const unsigned char *p, size_t n)
{
    return crc32_more(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

/* The format 2 record's crc: its position, then its body. */
static uint32_t record_crc(uint64_t pos, const unsigned char *body, size_t n)
{
    unsigned char p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(pos >> (8 * i));
    return crc32_more(crc32_more(0xFFFFFFFFu, p, 8), body, n) ^ 0xFFFFFFFFu;
}

/* ---- the topic dictionary ------------------------------------------------- */

static uint32_t topic_hash(const char *t, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)t[i]) * 16777619u;
    return h;
}

/* The id of topic t (n bytes, hash h), or -1 when the segment has none. */
static int64_t dict_find(const struct topic_dict *d, const char *t, size_t n, uint32_t h)
{
    if (!d->nslots)
        return -1;
    for (uint32_t i = h & (d->nslots - 1);; i = (i + 1) & (d->nslots - 1)) {
        uint32_t s = d->slots[i];
        if (!s)
            return -1;
        const struct dict_entry *e = &d->ent[s - 1];
        if (e->hash == h && e->len == n && !memcmp(d->text + e->off, t, n))
            return (int64_t)(s - 1);
    }
}

/* Makes room for one more topic of n bytes, so that dict_add cannot fail.
 * Returns 0, or -1 (out of memory) with the dictionary unchanged. */
static int dict_reserve(struct topic_dict *d, size_t n)
{
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 256;
        struct dict_entry *e = realloc(d->ent, cap * sizeof *e);
        if (!e)
            return -1;
        d->ent = e;
        d->cap = cap;
    }
    if (d->text_len + n > d->text_cap) {
        size_t cap = d->text_cap ? d->text_cap : 4096;
        while (cap < d->text_len + n)
            cap *= 2;
        char *t = realloc(d->text, cap);
        if (!t)
            return -1;
        d->text = t;
        d->text_cap = cap;
    }
    if ((size_t)(d->n + 1) * 2 > d->nslots) {
        uint32_t ns = d->nslots ? d->nslots * 2 : 512;
        uint32_t *s = calloc(ns, sizeof *s);
        if (!s)
            return -1;
        for (uint32_t k = 0; k < d->n; k++) {
            uint32_t i = d->ent[k].hash & (ns - 1);
            while (s[i])
                i = (i + 1) & (ns - 1);
            s[i] = k + 1;
        }
        free(d->slots);
        d->slots = s;
        d->nslots = ns;
    }
    return 0;
}

/* Gives topic t (n bytes, hash h, not in d) the next id; dict_reserve(d, n)
 * must have succeeded since the last add. */
static void dict_add(struct topic_dict *d, const char *t, size_t n, uint32_t h)
{
    uint32_t i = h & (d->nslots - 1);
    while (d->slots[i])
        i = (i + 1) & (d->nslots - 1);
    d->slots[i] = d->n + 1;
    d->ent[d->n] = (struct dict_entry){(uint32_t)d->text_len, (uint32_t)n, h};
    memcpy(d->text + d->text_len, t, n);
    d->text_len += n;
    d->n++;
}

/* Whether a topic of n more bytes would take d past its bounds. */
static int dict_full(const struct topic_dict *d, size_t n)
{
    return d->n >= DICT_MAX_TOPICS || d->text_len + n > DICT_MAX_TEXT;
}

static void dict_clear(struct topic_dict *d)
{
    if (d->slots)
        memset(d->slots, 0, d->nslots * sizeof *d->slots);
    d->n = 0;
    d->text_len = 0;
}

static void dict_free(struct topic_dict *d)
{
    free(d->ent);
    free(d->slots);
    free(d->text);
    memset(d, 0, sizeof *d);
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
    dict_clear(&j->dict);
    j->last_arrival = 0;
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

/* Validates the format 1 record at p (avail bytes left). Returns its total
 * size, or 0 when it is torn or corrupt. */
static size_t record_check_v1(const unsigned char *p, size_t avail, uint64_t *pos,
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

/* A walk over the records of one segment, either format. */
struct seg_walk {
    const unsigned char *map;
    size_t len, off;       /* off: the first byte not yet read */
    int format;            /* 1 or 2 */
    uint64_t pos;          /* the next record's position */
    int64_t arrival;       /* format 2: the last record's arrival_ms */
    struct topic_dict *dict; /* format 2: the segment's topics so far */
    /* the record walk_next returned */
    const char *topic;     /* not NUL-terminated */
    size_t topic_len;
    const unsigned char *payload;
    size_t payload_len;
    int64_t rec_arrival;
};

enum { WALK_END = 0, WALK_RECORD = 1, WALK_DAMAGED = -1, WALK_NOMEM = -2 };

/* Starts a walk over the len bytes at map, a segment whose first position is
 * first; dict (emptied here) collects its topics. Returns 0, or the segment's
 * format number when its header names one this release does not read (from
 * a newer one; 0 is no format but a header never written whole). An empty file is an empty format 2 segment; bytes that are no header
 * and no format 1 record leave off at 0, where walk_next says damaged. */
static uint32_t walk_begin(struct seg_walk *w, const unsigned char *map, size_t len,
                           uint64_t first, struct topic_dict *dict)
{
    memset(w, 0, sizeof *w);
    w->map = map;
    w->len = len;
    w->pos = first;
    w->dict = dict;
    w->format = 2;
    dict_clear(dict);
    uint32_t magic = 0, format = 0;
    if (len >= 4)
        memcpy(&magic, map, 4);
    if (magic == JOURNAL_MAGIC) {
        w->format = 1;
    } else if (magic == SEG_MAGIC && len >= SEG_HDR) {
        memcpy(&format, map + 4, 4);
        if (format == SEG_FORMAT)
            w->off = SEG_HDR;
        else if (format != 0)
            return format; /* a newer release's */
        /* format 0: no header was written whole (the magic is stored
         * last, so this is damage): off stays 0, damaged */
    }
    return 0;
}

/* Reads the next record of w. Returns WALK_RECORD with w->topic, payload and
 * rec_arrival set (pointing into the map or the dictionary, valid until the
 * next call), WALK_END at the end of the bytes, WALK_DAMAGED when the bytes
 * at w->off are not a whole record of this position (torn, damaged, zeros of
 * room), WALK_NOMEM when the dictionary cannot grow. */
static int walk_next(struct seg_walk *w)
{
    if (w->off >= w->len)
        return WALK_END;
    const unsigned char *p = w->map + w->off;
    size_t avail = w->len - w->off;
    if (w->format == 1) {
        uint64_t pos;
        int64_t arrival;
        uint32_t tl, pl;
        size_t n = record_check_v1(p, avail, &pos, &arrival, &tl, &pl);
        if (!n || pos != w->pos)
            return WALK_DAMAGED;
        w->topic = (const char *)p + JOURNAL_HDR;
        w->topic_len = tl;
        w->payload = p + JOURNAL_HDR + tl;
        w->payload_len = pl;
        w->rec_arrival = arrival;
        w->off += n;
        w->pos++;
        return WALK_RECORD;
    }
    uint64_t n, zz, id, tl = 0;
    const unsigned char *r = p;
    if (storage__get_uvarint(&r, p + avail, &n) < 0)
        return WALK_DAMAGED;
    size_t k = (size_t)(r - p);
    if (n == 0 || n > 2 * (uint64_t)JOURNAL_MAX_FIELD + 32 || n > avail - k ||
        avail - k - n < 4)
        return WALK_DAMAGED;
    const unsigned char *body = p + k + 4, *end = body + n;
    uint32_t crc;
    memcpy(&crc, p + k, 4);
    if (record_crc(w->pos, body, n) != crc)
        return WALK_DAMAGED;
    unsigned flags = body[0];
    const unsigned char *q = body + 1;
    if (flags & ~REC_NEW_TOPIC)
        return WALK_DAMAGED;
    if (storage__get_uvarint(&q, end, &zz) < 0 || storage__get_uvarint(&q, end, &id) < 0)
        return WALK_DAMAGED;
    struct topic_dict *d = w->dict;
    if (flags & REC_NEW_TOPIC) {
        if (id != d->n || storage__get_uvarint(&q, end, &tl) < 0)
            return WALK_DAMAGED;
        if (tl > (uint64_t)(end - q) || tl > JOURNAL_MAX_FIELD || d->text_len + tl > UINT32_MAX)
            return WALK_DAMAGED;
        if (dict_reserve(d, (size_t)tl) < 0)
            return WALK_NOMEM;
        dict_add(d, (const char *)q, (size_t)tl, topic_hash((const char *)q, (size_t)tl));
        q += tl;
    } else if (id >= d->n) {
        return WALK_DAMAGED;
    }
    if ((size_t)(end - q) > JOURNAL_MAX_FIELD)
        return WALK_DAMAGED;
    const struct dict_entry *e = &d->ent[id];
    /* unsigned: a damaged delta wraps instead of overflowing */
    w->arrival = (int64_t)((uint64_t)w->arrival + storage__unzigzag(zz));
    w->topic = d->text + e->off;
    w->topic_len = e->len;
    w->payload = q;
    w->payload_len = (size_t)(end - q);
    w->rec_arrival = w->arrival;
    w->off += (size_t)(end - p);
    w->pos++;
    return WALK_RECORD;
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

/* Scans the last segment: finds the next position, cuts a torn tail and
 * makes it the active segment with its topics, or, when it is a format 1
 * segment with records, leaves it closed (j->fd -1: the next append starts a
 * format 2 segment). A segment of a format newer than this release is an
 * error: its records are not ours to cut. */
static int recover_last(struct cb_journal *j, char *err, size_t errlen)
{
    uint64_t first = j->segs[j->nsegs - 1];
    char *path = seg_path(j, first);
    unsigned char *map = NULL;
    size_t len = 0;
    struct seg_walk w;
    int r, rc = -1, fd;
    if (!path || map_segment(path, &map, &len) < 0) {
        storage__set_err(err, errlen, "journal %s: cannot read: %s", path ? path : j->dir,
                         strerror(errno));
        goto out;
    }
    uint32_t newer = walk_begin(&w, map, len, first, &j->dict);
    if (newer) {
        storage__set_err(err, errlen,
                         "journal %s: segment format %u is not one this release reads (1 or 2): "
                         "written by a newer release?",
                         path, (unsigned)newer);
        goto out;
    }
    while ((r = walk_next(&w)) == WALK_RECORD)
        ;
    if (r == WALK_NOMEM) {
        storage__set_err(err, errlen, "journal %s: out of memory", path);
        goto out;
    }
    if (w.off < len) {
        /* A torn last record (crash mid-write): that message was never
         * acknowledged, the broker redelivers it. Or, after a crash, the
         * zeroed room grown ahead of the records, which is no record at all.
         * Either way cut it off so appends follow the last whole record. */
        if (!all_zero(map + w.off, len - w.off))
            j->stats.torn_records++;
        if (truncate(path, (off_t)w.off) < 0) {
            storage__set_err(err, errlen, "journal %s: cannot cut the torn tail: %s", path,
                             strerror(errno));
            goto out;
        }
    }
    j->next_pos = w.pos;
    if (w.format == 1 && w.off > 0) {
        dict_clear(&j->dict); /* replayed as it is; appends go to a new segment */
        rc = 0;
        goto out;
    }
    /* Here a format 2 segment, or one with nothing whole in it (cut to 0
     * above), which the next append starts as a format 2 segment. */
    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        storage__set_err(err, errlen, "journal %s: cannot open for appending: %s", path,
                         strerror(errno));
        goto out;
    }
    j->fd = fd;
    j->active_size = (int64_t)w.off;
    j->file_size = (int64_t)w.off;
    j->last_arrival = w.arrival;
    rc = 0;
out:
    if (map)
        munmap(map, len);
    free(path);
    return rc;
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

/* Writes the record (and, at the start of a segment, the segment header)
 * into b: the body and crc first, its length last (see the top). */
static void put_record(unsigned char *b, int header, uint64_t pos, unsigned flags,
                       uint64_t zz, uint64_t id, const char *topic, size_t topic_len,
                       const void *payload, size_t len, size_t body_len)
{
    if (header) {
        /* the format first, the magic last: a header cut short by a kill
         * has no magic, so it reads as a torn record (cut at open), never
         * as a segment of an unknown format (refused) */
        uint32_t magic = SEG_MAGIC, format = SEG_FORMAT;
        memcpy(b + 4, &format, 4);
        memcpy(b, &magic, 4);
        b += SEG_HDR;
    }
    size_t k = storage__uvarint_len(body_len);
    unsigned char *body = b + k + 4, *q = body;
    *q++ = (unsigned char)flags;
    q += storage__put_uvarint(q, zz);
    q += storage__put_uvarint(q, id);
    if (flags & REC_NEW_TOPIC) {
        q += storage__put_uvarint(q, topic_len);
        memcpy(q, topic, topic_len);
        q += topic_len;
    }
    if (len)
        memcpy(q, payload, len);
    uint32_t crc = record_crc(pos, body, body_len);
    memcpy(b + k, &crc, 4);
    storage__put_uvarint(b, body_len);
}

int cb_journal_append(struct cb_journal *j, const char *topic, size_t topic_len,
                      const void *payload, size_t len, int64_t arrival_ms, uint64_t *pos)
{
    if (topic_len > JOURNAL_MAX_FIELD || len > JOURNAL_MAX_FIELD) {
        errno = EFBIG;
        return -1;
    }
    uint32_t h = topic_hash(topic, topic_len);
    int rc = -1, err = EIO, rotated = 0;
    size_t total, body_len;
    int64_t id;
    unsigned flags;
    uint64_t zz;
    int header;
    pthread_mutex_lock(&j->mu);
    if (j->fd < 0 && start_segment(j) < 0) {
        err = errno; /* a rotation that failed earlier, or a format 1 last segment */
        goto out;
    }
again:
    id = dict_find(&j->dict, topic, topic_len, h);
    flags = 0;
    if (id < 0) {
        flags = REC_NEW_TOPIC;
        id = j->dict.n;
    }
    zz = storage__zigzag((uint64_t)arrival_ms - (uint64_t)j->last_arrival);
    body_len = 1 + storage__uvarint_len(zz) + storage__uvarint_len((uint64_t)id) + len;
    if (flags)
        body_len += storage__uvarint_len(topic_len) + topic_len;
    header = j->active_size == 0;
    total = (header ? SEG_HDR : 0) + storage__uvarint_len(body_len) + 4 + body_len;
    if (!rotated && j->active_size > 0 &&
        (j->active_size + (int64_t)total > j->segment_bytes ||
         (flags && dict_full(&j->dict, topic_len)))) {
        if (start_segment(j) < 0) {
            err = errno;
            goto out;
        }
        rotated = 1;
        goto again; /* an empty dictionary, the header, another delta */
    }
    if (flags && dict_reserve(&j->dict, topic_len) < 0) {
        err = ENOMEM;
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
    unsigned char *b = j->map + (j->active_size - j->map_off);
    put_record(b, header, p, flags, zz, (uint64_t)id, topic, topic_len, payload, len, body_len);
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
    if (flags)
        dict_add(&j->dict, topic, topic_len, h);
    j->last_arrival = arrival_ms;
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
    struct topic_dict dict = {0};
    pthread_mutex_lock(&j->mu);
    for (size_t i = 0; i < j->nsegs && rc == 0; i++) {
        if (i + 1 < j->nsegs && j->segs[i + 1] - 1 <= after_pos)
            continue; /* every record of this segment is committed */
        char *path = seg_path(j, j->segs[i]);
        unsigned char *map = NULL;
        size_t len = 0;
        if (!path || map_segment(path, &map, &len) < 0) {
            free(path);
            rc = -1;
            break;
        }
        free(path);
        size_t mapped = len;
        if (i + 1 == j->nsegs && j->fd >= 0 && len > (size_t)j->active_size)
            len = (size_t)j->active_size; /* the open segment: its room is no record */
        struct seg_walk w;
        int r;
        if (walk_begin(&w, map, len, j->segs[i], &dict)) {
            j->stats.corrupt_records++; /* a closed segment of an unknown format */
            r = WALK_END;
        } else {
            while (rc == 0 && (r = walk_next(&w)) == WALK_RECORD) {
                if (w.pos - 1 <= after_pos)
                    continue;
                if (w.topic_len + 1 > topiccap) {
                    char *t = realloc(topic, w.topic_len + 1);
                    if (!t) {
                        rc = -1;
                        break;
                    }
                    topic = t;
                    topiccap = w.topic_len + 1;
                }
                memcpy(topic, w.topic, w.topic_len);
                topic[w.topic_len] = '\0';
                rc = fn(ctx, w.pos - 1, topic, w.payload, w.payload_len, w.rec_arrival);
                j->stats.replayed++;
            }
        }
        if (r == WALK_NOMEM) {
            rc = -1;
        } else if (r == WALK_DAMAGED && !all_zero(map + w.off, len - w.off)) {
            /* Damage inside a closed segment (the tail of the active one
             * was cut at open): skip the rest of this segment. Zeros to
             * the end are the room of a segment a crash caught between
             * its rotation and its trim: no damage. */
            j->stats.corrupt_records++;
        }
        if (map)
            munmap(map, mapped);
    }
    pthread_mutex_unlock(&j->mu);
    dict_free(&dict);
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
        if (j->active_size == 0 && j->fd >= 0 && j->nsegs) {
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
    dict_free(&j->dict);
    pthread_mutex_destroy(&j->mu);
    free(j->segs);
    free(j->dir);
    free(j);
}
