/* The ingest journal: append, replay, torn records, rotation, release. */
#include <CUnit/CUnit.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/storage.h"
#include "tests/support/store_fixture.h"

void cb_test_suite_journal(void);

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/cbjournal.XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
}

static void remove_dir(void)
{
    cb_t_remove_dir(dir);
}

static size_t count_segments(void)
{
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += strstr(e->d_name, ".seg") != NULL;
    if (d)
        closedir(d);
    return n;
}

struct seen {
    uint64_t pos[4096];
    char topic[4096][32];
    char payload[4096][64];
    int64_t arrival[4096];
    size_t n;
};

static int collect(void *ctx, uint64_t pos, const char *topic, const void *payload, size_t len,
                   int64_t arrival_ms)
{
    struct seen *s = ctx;
    if (s->n >= 4096)
        return 1;
    s->pos[s->n] = pos;
    snprintf(s->topic[s->n], 32, "%s", topic);
    snprintf(s->payload[s->n], 64, "%.*s", (int)len, (const char *)payload);
    s->arrival[s->n] = arrival_ms;
    s->n++;
    return 0;
}

static int append_n(struct cb_journal *j, int first, int n)
{
    for (int i = first; i < first + n; i++) {
        char t[32], p[64];
        int tl = snprintf(t, sizeof t, "city/d%02d/river/s%d", i % 7, i);
        int pl = snprintf(p, sizeof p, "{\"level\":%d.5}", i);
        uint64_t pos = 0;
        if (cb_journal_append(j, t, (size_t)tl, p, (size_t)pl, 1000 + i, &pos) < 0)
            return -1;
        if (pos != (uint64_t)i)
            return -1;
    }
    return 0;
}

/* Closes j, opens the journal of dir again and replays every record after
 * `after` into a new struct seen (the caller frees it); *reopened is the
 * journal, open. */
static struct seen *reopen_replay(struct cb_journal *j, uint64_t after,
                                  struct cb_journal **reopened)
{
    char err[256];
    cb_journal_close(j);
    j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, after, collect, s), 0);
    *reopened = j;
    return s;
}

static void test_append_replay(void)
{
    make_dir();
    char err[256];
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 100), 0);
    struct seen *s = reopen_replay(j, 0, &j);
    CU_ASSERT_EQUAL(s->n, 100);
    CU_ASSERT_EQUAL(s->pos[0], 1);
    CU_ASSERT_STRING_EQUAL(s->topic[41], "city/d00/river/s42");
    CU_ASSERT_STRING_EQUAL(s->payload[41], "{\"level\":42.5}");
    CU_ASSERT_EQUAL(s->arrival[41], 1042);
    memset(s, 0, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 60, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 40);
    CU_ASSERT_EQUAL(s->pos[0], 61);
    /* appends continue after the last position */
    CU_ASSERT_EQUAL(append_n(j, 101, 1), 0);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

static void test_torn_record(void)
{
    make_dir();
    char err[256], path[512];
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 10), 0);
    cb_journal_close(j);
    /* a crash in the middle of the 10th record's write */
    snprintf(path, sizeof path, "%s/%020d.seg", dir, 1);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL_FATAL(truncate(path, st.st_size - 5), 0);
    j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 0, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 9);
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    CU_ASSERT_EQUAL(js.torn_records, 1);
    CU_ASSERT_EQUAL(js.next_pos, 10);
    /* the next record takes the torn one's place and reads back whole */
    CU_ASSERT_EQUAL(append_n(j, 10, 1), 0);
    memset(s, 0, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 8, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 2);
    CU_ASSERT_STRING_EQUAL(s->payload[1], "{\"level\":10.5}");
    cb_journal_close(j);
    /* a flipped byte inside the last record is caught by the CRC too */
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    FILE *f = fopen(path, "r+b");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, st.st_size - 3, SEEK_SET);
    fputc('X', f);
    fclose(f);
    j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    memset(s, 0, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 0, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 9);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

static void test_rotation_release(void)
{
    make_dir();
    char err[256];
    /* about 45-byte records: a few per 256-byte segment */
    struct cb_journal *j = cb_journal_open(dir, 256, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 100), 0);
    size_t segs = count_segments();
    CU_ASSERT(segs >= 15);
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    CU_ASSERT_EQUAL(js.segments, segs);
    CU_ASSERT_EQUAL(cb_journal_release(j, 50), 0);
    size_t after = count_segments();
    CU_ASSERT(after < segs);
    CU_ASSERT(after > 1);
    /* everything after the committed position is still there */
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 50, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 50);
    CU_ASSERT_EQUAL(s->pos[0], 51);
    /* releasing everything keeps the active segment (the position counter) */
    CU_ASSERT_EQUAL(cb_journal_release(j, 100), 0);
    CU_ASSERT_EQUAL(count_segments(), 1);
    cb_journal_close(j);
    j = cb_journal_open(dir, 256, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 101, 1), 0);
    memset(s, 0, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 100, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 1);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

static void test_floor(void)
{
    make_dir();
    char err[256];
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 1, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 3), 0);
    /* the database has committed up to 500 (the journal was replaced) */
    CU_ASSERT_EQUAL(cb_journal_set_floor(j, 500), 0);
    uint64_t pos = 0;
    CU_ASSERT_EQUAL(cb_journal_append(j, "t", 1, "1", 1, 5, &pos), 0);
    CU_ASSERT_EQUAL(pos, 501);
    /* a floor below the end changes nothing */
    CU_ASSERT_EQUAL(cb_journal_set_floor(j, 10), 0);
    CU_ASSERT_EQUAL(cb_journal_append(j, "t", 1, "2", 1, 6, &pos), 0);
    CU_ASSERT_EQUAL(pos, 502);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 500, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 2);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

static void *appender(void *arg)
{
    struct cb_journal *j = arg;
    for (int i = 0; i < 500; i++) {
        uint64_t pos;
        if (cb_journal_append(j, "city/x", 6, "42", 2, i, &pos) < 0)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void)
{
    make_dir();
    char err[256];
    struct cb_journal *j = cb_journal_open(dir, 4096, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    pthread_t a, b;
    pthread_create(&a, NULL, appender, j);
    pthread_create(&b, NULL, appender, j);
    void *ra, *rb;
    pthread_join(a, &ra);
    pthread_join(b, &rb);
    CU_ASSERT_PTR_NULL(ra);
    CU_ASSERT_PTR_NULL(rb);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 0, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 1000);
    int ordered = 1;
    for (size_t i = 0; i < s->n; i++)
        ordered &= s->pos[i] == i + 1;
    CU_ASSERT(ordered);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

/* Found by tests/fuzz_journal.c: a file named as a segment at 2^64 - 1 (or
 * past 2^64, clamped by strtoull, or with a sign) made the position counter
 * wrap to 0, and replay skipped every record appended after it. */
static void test_foreign_segment_names(void)
{
    static const char *const names[] = {"18446744073709551615.seg", "99999999999999999999.seg",
                                        "-0000000000000000001.seg", "09223372036854775807.seg"};
    make_dir();
    char err[256], path[512];
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 3), 0);
    cb_journal_close(j);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "w");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        fputs("not a journal record", f);
        fclose(f);
    }
    j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    uint64_t pos = 0;
    CU_ASSERT_EQUAL(cb_journal_append(j, "t", 1, "4", 1, 4, &pos), 0);
    CU_ASSERT_EQUAL(pos, 4);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 0, collect, s), 0);
    CU_ASSERT_EQUAL(s->n, 4);
    CU_ASSERT_EQUAL(s->pos[3], 4);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

static void test_unusable_dir(void)
{
    char err[256] = "";
    struct cb_journal *j = cb_journal_open("/proc/citybrain-no/journal", 4096, 0, err, sizeof err);
    CU_ASSERT_PTR_NULL(j);
    CU_ASSERT(strstr(err, "cannot create the directory") != NULL);
}

static size_t uvarint_bytes(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Bytes of the records append_n writes for positions [first, first + n)
 * into one new segment (docs/storage.md, "The record format"): the segment
 * header, then per record its length, crc and body; every topic is new. */
static long record_bytes(int first, int n)
{
    long total = 8;
    int64_t last = 0;
    for (int i = first; i < first + n; i++) {
        char t[32], p[64];
        int tl = snprintf(t, sizeof t, "city/d%02d/river/s%d", i % 7, i);
        int pl = snprintf(p, sizeof p, "{\"level\":%d.5}", i);
        int64_t d = 1000 + i - last;
        last = 1000 + i;
        size_t body = 1 + uvarint_bytes((uint64_t)(d < 0 ? -2 * d - 1 : 2 * d)) +
                      uvarint_bytes((uint64_t)(i - first)) + uvarint_bytes((uint64_t)tl) +
                      (size_t)tl + (size_t)pl;
        total += (long)(uvarint_bytes(body) + 4 + body);
    }
    return total;
}

/* A file-size limit stands for a full disk: the kernel refuses to make the
 * segment longer (EFBIG; a full file system says ENOSPC). Records go into
 * room reserved ahead of them, so appends go on until that room is used up,
 * then fail with nothing written, each retry alike; once there is room again
 * the same message goes in at the same position, so recovery reads every
 * record in order, and the closed segment holds exactly its records. */
static void test_failed_append_leaves_nothing(void)
{
    make_dir();
    char err[256], path[512];
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 10), 0);
    snprintf(path, sizeof path, "%s/%020d.seg", dir, 1);
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
    off_t room = st.st_size; /* the records and the room grown ahead of them */
    CU_ASSERT(room >= record_bytes(1, 10));
    struct rlimit old, lim;
    CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &old), 0);
    void (*was)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old;
    lim.rlim_cur = (rlim_t)room; /* no byte more */
    CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int next = 11, e1 = 0;
    errno = 0;
    while (next < 4000 && append_n(j, next, 1) == 0)
        next++;
    e1 = errno;
    char t[32], p[64];
    int tl = snprintf(t, sizeof t, "city/d%02d/river/s%d", next % 7, next);
    int pl = snprintf(p, sizeof p, "{\"level\":%d.5}", next);
    uint64_t pos = 0;
    errno = 0;
    int rc2 = cb_journal_append(j, t, (size_t)tl, p, (size_t)pl, 1000 + next, &pos);
    int e2 = errno;
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(setrlimit(RLIMIT_FSIZE, &old), 0);
    signal(SIGXFSZ, was);
    CU_ASSERT(next < 4000); /* the room ran out */
    CU_ASSERT(e1 == ENOSPC || e1 == EFBIG);
    CU_ASSERT_EQUAL(rc2, -1);
    CU_ASSERT_EQUAL(e2, e1); /* the retry meets the same limit */
    CU_ASSERT_EQUAL(st.st_size, room); /* nothing grew */
    CU_ASSERT_EQUAL(append_n(j, next, 5), 0); /* room again: positions go on from next */
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    CU_ASSERT_EQUAL(js.append_failed, 2);
    struct seen *s = reopen_replay(j, 0, &j);
    int last = next + 4;
    CU_ASSERT_EQUAL(s->n, (size_t)last);
    if (s->n == (size_t)last) {
        CU_ASSERT_EQUAL(s->pos[last - 1], (uint64_t)last);
        char want[64];
        snprintf(want, sizeof want, "{\"level\":%d.5}", last);
        CU_ASSERT_STRING_EQUAL(s->payload[last - 1], want);
    }
    cb_journal_get_stats(j, &js);
    CU_ASSERT_EQUAL(js.torn_records, 0);
    cb_journal_close(j);
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, record_bytes(1, last)); /* closed: its records, no room */
    free(s);
    remove_dir();
}

/* Replays every record of j into s (emptied first); returns the damaged
 * records replay counted so far. */
static uint64_t replay_all(struct cb_journal *j, struct seen *s)
{
    memset(s, 0, sizeof *s);
    CU_ASSERT_EQUAL(cb_journal_replay(j, 0, collect, s), 0);
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    return js.corrupt_records;
}

/* Copies src to dst byte for byte; returns the bytes copied, -1 on error. */
static long copy_file(const char *src, const char *dst)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    long total = -1;
    if (in && out) {
        char buf[8192];
        size_t k;
        total = 0;
        while ((k = fread(buf, 1, sizeof buf, in)) > 0) {
            if (fwrite(buf, 1, k, out) != k) {
                total = -1;
                break;
            }
            total += (long)k;
        }
    }
    if (in)
        fclose(in);
    if (out && fclose(out) != 0)
        total = -1;
    return total;
}

/* A kill -9 of citybrain leaves the open segment as the page cache holds
 * it: every record appended so far (stores into the shared map), then the
 * zeroed room grown ahead of them. A copy of the file taken while the
 * journal is open is that state: opened, it replays every record, counts no
 * torn one and goes on at the next position. */
static void test_open_segment_is_crash_state(void)
{
    make_dir();
    char err[256], src[512], cdir[128], dst[256];
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 100), 0);
    /* replay of the open segment stops at its last record, not in the room */
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(replay_all(j, s), 0);
    CU_ASSERT_EQUAL(s->n, 100);
    /* the file as a crash would leave it */
    snprintf(src, sizeof src, "%s/%020d.seg", dir, 1);
    snprintf(cdir, sizeof cdir, "%s/crash", dir);
    snprintf(dst, sizeof dst, "%s/%020d.seg", cdir, 1);
    CU_ASSERT_EQUAL_FATAL(mkdir(cdir, 0700), 0);
    long n = copy_file(src, dst);
    CU_ASSERT(n > record_bytes(1, 100)); /* the records, then the room */
    struct cb_journal *c = cb_journal_open(cdir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(replay_all(c, s), 0);
    CU_ASSERT_EQUAL(s->n, 100);
    CU_ASSERT_STRING_EQUAL(s->payload[99], "{\"level\":100.5}");
    struct cb_journal_stats js;
    cb_journal_get_stats(c, &js);
    CU_ASSERT_EQUAL(js.torn_records, 0);
    CU_ASSERT_EQUAL(js.next_pos, 101);
    CU_ASSERT_EQUAL(append_n(c, 101, 1), 0);
    cb_journal_close(c);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

/* A crash between a rotation and the trim of the segment it closed leaves
 * that segment with its zeroed room: replay reads its records and counts no
 * damage; a flipped byte in the room still counts. */
static void test_closed_segment_with_room(void)
{
    make_dir();
    char err[256], path[512];
    struct cb_journal *j = cb_journal_open(dir, 256, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 10), 0); /* several segments of about 3 records */
    cb_journal_close(j);
    snprintf(path, sizeof path, "%s/%020d.seg", dir, 1);
    CU_ASSERT_EQUAL_FATAL(truncate(path, 16384), 0); /* the room, as a crash left it */
    j = cb_journal_open(dir, 256, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(replay_all(j, s), 0);
    CU_ASSERT_EQUAL(s->n, 10);
    cb_journal_close(j);
    FILE *f = fopen(path, "r+b");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 9000, SEEK_SET);
    fputc('X', f);
    fclose(f);
    j = cb_journal_open(dir, 256, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(replay_all(j, s), 1);
    CU_ASSERT_EQUAL(s->n, 10);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

static int count_in_order(void *ctx, uint64_t pos, const char *topic, const void *payload,
                          size_t len, int64_t arrival_ms)
{
    (void)topic;
    (void)payload;
    (void)len;
    uint64_t *n = ctx;
    if (pos != *n + 1 || arrival_ms != 1000 + (int64_t)pos)
        return 1;
    (*n)++;
    return 0;
}

/* The map is a window that moves along the segment and the file grows in
 * small steps: 60,000 records (about 4 MB) in 8 MB segments cross many
 * windows and growths, and a record larger than a window fits too. */
static void test_records_across_windows(void)
{
    make_dir();
    char err[256];
    struct cb_journal *j = cb_journal_open(dir, 8 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(append_n(j, 1, 60000), 0);
    size_t big = (3u << 20) / 2;
    char *payload = malloc(big);
    CU_ASSERT_PTR_NOT_NULL_FATAL(payload);
    memset(payload, '7', big);
    uint64_t pos = 0;
    CU_ASSERT_EQUAL(cb_journal_append(j, "city/big", 8, payload, big, 1000 + 60001, &pos), 0);
    CU_ASSERT_EQUAL(pos, 60001);
    CU_ASSERT_EQUAL(append_n(j, 60002, 10), 0);
    free(payload);
    cb_journal_close(j);
    j = cb_journal_open(dir, 8 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    uint64_t n = 0;
    CU_ASSERT_EQUAL(cb_journal_replay(j, 0, count_in_order, &n), 0);
    CU_ASSERT_EQUAL(n, 60011);
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    CU_ASSERT_EQUAL(js.torn_records, 0);
    CU_ASSERT_EQUAL(js.corrupt_records, 0);
    cb_journal_close(j);
    remove_dir();
}

/* Raw telemetry is the owner's: segments 0600, the directory 0750, whatever
 * the umask lets through. */
static void test_modes(void)
{
    make_dir();
    char jdir[128], seg[192];
    snprintf(jdir, sizeof jdir, "%s/j", dir);
    mode_t old = umask(0);
    char err[256] = "";
    struct cb_journal *j = cb_journal_open(jdir, 4096, 0, err, sizeof err);
    umask(old);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    uint64_t pos = 0;
    CU_ASSERT_EQUAL(cb_journal_append(j, "t", 1, "1", 1, 1, &pos), 0);
    cb_journal_close(j);
    struct stat st;
    CU_ASSERT_EQUAL(stat(jdir, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0750);
    snprintf(seg, sizeof seg, "%s/%020d.seg", jdir, 1);
    CU_ASSERT_EQUAL(stat(seg, &st), 0);
    CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
    cb_t_remove_dir(jdir);
    remove_dir();
}

/* Reads the whole file at path into a malloc'd buffer; *len its size. */
static unsigned char *slurp(const char *path, long *len)
{
    FILE *f = fopen(path, "rb");
    unsigned char *b = NULL;
    *len = -1;
    if (f && fseek(f, 0, SEEK_END) == 0 && (*len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = malloc((size_t)*len + 1)) && fread(b, 1, (size_t)*len, f) != (size_t)*len) {
        free(b);
        b = NULL;
    }
    if (f)
        fclose(f);
    return b;
}

/* The record format byte by byte (docs/storage.md, "The record format"):
 * the segment header, a first record defining topic 0 with its text, and a
 * second record of the same topic carrying only its id: 13 bytes for a
 * 5-byte payload. */
static void test_record_layout(void)
{
    make_dir();
    char err[256], path[512];
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    const char *t = "city/d01/river/s001";
    uint64_t pos = 0;
    CU_ASSERT_EQUAL(cb_journal_append(j, t, 19, "1.625", 5, 1733356800000, &pos), 0);
    CU_ASSERT_EQUAL(cb_journal_append(j, t, 19, "1.630", 5, 1733356800007, &pos), 0);
    CU_ASSERT_EQUAL(cb_journal_append(j, t, 19, "1.620", 5, 1733356799999, &pos), 0);
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    cb_journal_close(j);
    snprintf(path, sizeof path, "%s/%020d.seg", dir, 1);
    long len;
    unsigned char *b = slurp(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    /* header, first record (1 + 4 + 1 + 6 + 1 + 1 + 19 + 5), two of 13 */
    CU_ASSERT_EQUAL(len, 8 + 38 + 13 + 13);
    CU_ASSERT_EQUAL(js.bytes, (uint64_t)len);
    CU_ASSERT_EQUAL_FATAL(len, 72);
    CU_ASSERT(!memcmp(b, "CBJF\2\0\0\0", 8));
    const unsigned char *r = b + 8;
    CU_ASSERT_EQUAL(r[0], 33);   /* body length */
    CU_ASSERT_EQUAL(r[5], 0x01); /* flags: defines a topic */
    /* zig-zag arrival against 0: 2 x 1733356800000 in 6 varint bytes */
    uint64_t zz = 0;
    for (int i = 0; i < 6; i++)
        zz |= (uint64_t)(r[6 + i] & 0x7F) << (7 * i);
    CU_ASSERT_EQUAL(zz, 2 * 1733356800000ull);
    CU_ASSERT_EQUAL(r[12], 0);  /* id 0 */
    CU_ASSERT_EQUAL(r[13], 19); /* its text */
    CU_ASSERT(!memcmp(r + 14, t, 19));
    CU_ASSERT(!memcmp(r + 33, "1.625", 5));
    r += 38;
    static const unsigned char second[] = {8, 0x00, 14, 0, '1', '.', '6', '3', '0'};
    CU_ASSERT_EQUAL(r[0], second[0]);
    CU_ASSERT(!memcmp(r + 5, second + 1, 8)); /* flags 0, +7 ms, id 0, payload */
    r += 13;
    CU_ASSERT_EQUAL(r[6], 15); /* -8 ms, zig-zag */
    free(b);
    remove_dir();
}

/* Copies the files of the directory src into dir (the test's). */
static void copy_dir(const char *src)
{
    DIR *d = opendir(src);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char from[512], to[512];
        snprintf(from, sizeof from, "%s/%s", src, e->d_name);
        snprintf(to, sizeof to, "%s/%s", dir, e->d_name);
        CU_ASSERT(copy_file(from, to) >= 0);
    }
    closedir(d);
}

/* tests/journal/format1 is a journal written by the release before the
 * compact records (74dafe1's journal.c: 30 of append_n's records in 1024-byte
 * segments, the open one copied as a kill -9 leaves it, with its zeroed
 * room). After the upgrade every record replays with its topic, payload and
 * arrival; appends go on at position 31 in a new format 2 segment, and the
 * old segments are released once committed. */
static void test_format1_segments_replay(void)
{
    make_dir();
    copy_dir(CB_SOURCE_DIR "/tests/journal/format1");
    char err[256], path[512];
    struct cb_journal *j = cb_journal_open(dir, 1024, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    CU_ASSERT_EQUAL(replay_all(j, s), 0);
    CU_ASSERT_EQUAL_FATAL(s->n, 30);
    int same = 1;
    for (int i = 1; i <= 30; i++) {
        char t[32], p[64];
        snprintf(t, sizeof t, "city/d%02d/river/s%d", i % 7, i);
        snprintf(p, sizeof p, "{\"level\":%d.5}", i);
        same &= s->pos[i - 1] == (uint64_t)i && !strcmp(s->topic[i - 1], t) &&
                !strcmp(s->payload[i - 1], p) && s->arrival[i - 1] == 1000 + i;
    }
    CU_ASSERT(same);
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    CU_ASSERT_EQUAL(js.torn_records, 0);
    CU_ASSERT_EQUAL(js.next_pos, 31);
    CU_ASSERT_EQUAL(append_n(j, 31, 2), 0);
    snprintf(path, sizeof path, "%s/%020d.seg", dir, 31);
    long len;
    unsigned char *b = slurp(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT(len >= 8 && !memcmp(b, "CBJF\2\0\0\0", 8));
    free(b);
    free(s);
    s = reopen_replay(j, 0, &j);
    CU_ASSERT_EQUAL(s->n, 32);
    CU_ASSERT_STRING_EQUAL(s->topic[16], "city/d03/river/s17");
    CU_ASSERT_STRING_EQUAL(s->payload[31], "{\"level\":32.5}");
    CU_ASSERT_EQUAL(cb_journal_release(j, 30), 0);
    CU_ASSERT_EQUAL(count_segments(), 1);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

/* Writes a file of the n bytes at b (a segment as something left it). */
static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A segment whose header names a format this release does not know (a
 * newer one's) is not cut as if torn: open refuses with the reason. */
static void test_newer_format_refused(void)
{
    make_dir();
    char err[256] = "", path[512];
    snprintf(path, sizeof path, "%s/%020d.seg", dir, 1);
    write_bytes(path, "CBJF\3\0\0\0\x05\x01\x02\x03", 12);
    struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
    CU_ASSERT_PTR_NULL(j);
    CU_ASSERT(strstr(err, "segment format 3") != NULL);
    struct stat st;
    CU_ASSERT_EQUAL(stat(path, &st), 0);
    CU_ASSERT_EQUAL(st.st_size, 12);
    cb_journal_close(j);
    remove_dir();
}

/* A kill while the first record of a segment was being stored can leave its
 * header cut short: the format stored, not yet the magic (stored last), or
 * even the magic with no format (damage). Either reads as a torn record:
 * cut at open, the journal goes on at that position; never refused as a
 * segment of an unknown format. */
static void test_cut_header_is_torn(void)
{
    static const unsigned char heads[][12] = {
        {0, 0, 0, 0, 2, 0, 0, 0, 0x21, 0x7a, 0, 0},
        {'C', 'B', 'J', 'F', 0, 0, 0, 0, 0, 0, 0, 0},
    };
    for (size_t k = 0; k < 2; k++) {
        make_dir();
        char err[256] = "", path[512];
        snprintf(path, sizeof path, "%s/%020d.seg", dir, 1);
        write_bytes(path, heads[k], sizeof heads[k]);
        struct cb_journal *j = cb_journal_open(dir, 1 << 20, 0, err, sizeof err);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        struct cb_journal_stats js;
        cb_journal_get_stats(j, &js);
        CU_ASSERT_EQUAL(js.torn_records, 1);
        CU_ASSERT_EQUAL(js.next_pos, 1);
        CU_ASSERT_EQUAL(append_n(j, 1, 2), 0);
        struct seen *s = reopen_replay(j, 0, &j);
        CU_ASSERT_EQUAL(s->n, 2);
        cb_journal_close(j);
        free(s);
        remove_dir();
    }
}

/* A topic's id means something only in its segment: records of five topics
 * across many small segments, a crash copy of the open one reopened (its
 * dictionary rebuilt from the records) and appended to, all replay with the
 * right topics; a record of a known topic costs no topic text. */
static void test_topic_ids_per_segment(void)
{
    make_dir();
    char err[256], src[512], cdir[128], dst[512];
    struct cb_journal *j = cb_journal_open(dir, 512, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    uint64_t pos = 0;
    int ok = 1;
    for (int i = 0; i < 200; i++) {
        char t[32], p[16];
        int tl = snprintf(t, sizeof t, "city/d0%d/air/s%03d", i % 5, i % 5);
        int pl = snprintf(p, sizeof p, "%d", i);
        ok &= cb_journal_append(j, t, (size_t)tl, p, (size_t)pl, 5000 + i * 100, &pos) == 0;
    }
    CU_ASSERT(ok);
    struct cb_journal_stats js;
    cb_journal_get_stats(j, &js);
    CU_ASSERT(js.segments > 5);
    /* 200 records: each segment defines its topics once, the rest are ids */
    CU_ASSERT(js.bytes < 200 * 14 + js.segments * (8 + 5 * 19));
    /* the open segment as a kill -9 leaves it */
    DIR *d = opendir(dir);
    struct dirent *e;
    char last[256] = "";
    while (d && (e = readdir(d)))
        if (strstr(e->d_name, ".seg") && strcmp(e->d_name, last) > 0)
            snprintf(last, sizeof last, "%s", e->d_name);
    if (d)
        closedir(d);
    snprintf(src, sizeof src, "%s/%s", dir, last);
    snprintf(cdir, sizeof cdir, "%s/crash", dir);
    snprintf(dst, sizeof dst, "%s/%s", cdir, last);
    CU_ASSERT_EQUAL_FATAL(mkdir(cdir, 0700), 0);
    CU_ASSERT(copy_file(src, dst) > 0);
    cb_journal_close(j);
    struct cb_journal *c = cb_journal_open(cdir, 512, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    struct cb_journal_stats before, after;
    cb_journal_get_stats(c, &before);
    CU_ASSERT_EQUAL(before.next_pos, 201);
    CU_ASSERT_EQUAL(cb_journal_append(c, "city/d04/air/s004", 17, "200", 3, 25000, &pos), 0);
    CU_ASSERT_EQUAL(pos, 201);
    cb_journal_get_stats(c, &after);
    /* the topic is in the rebuilt dictionary (or the segment rotated) */
    CU_ASSERT(after.bytes - before.bytes <= 14 || after.segments > before.segments);
    struct seen *s = calloc(1, sizeof *s);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    cb_journal_close(c);
    c = cb_journal_open(cdir, 512, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c);
    CU_ASSERT_EQUAL(replay_all(c, s), 0);
    CU_ASSERT(s->n >= 2);
    CU_ASSERT_EQUAL(s->pos[s->n - 1], 201);
    CU_ASSERT_STRING_EQUAL(s->topic[s->n - 1], "city/d04/air/s004");
    CU_ASSERT_EQUAL(s->arrival[s->n - 1], 25000);
    cb_journal_close(c);
    /* the whole journal: every record with its own topic and arrival */
    j = cb_journal_open(dir, 512, 0, err, sizeof err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_EQUAL(replay_all(j, s), 0);
    CU_ASSERT_EQUAL_FATAL(s->n, 200);
    int same = 1;
    for (int i = 0; i < 200; i++) {
        char t[32], p[16];
        snprintf(t, sizeof t, "city/d0%d/air/s%03d", i % 5, i % 5);
        snprintf(p, sizeof p, "%d", i);
        same &= !strcmp(s->topic[i], t) && !strcmp(s->payload[i], p) &&
                s->arrival[i] == 5000 + i * 100;
    }
    CU_ASSERT(same);
    cb_journal_close(j);
    free(s);
    remove_dir();
}

void cb_test_suite_journal(void)
{
    CU_pSuite s = CU_add_suite("journal", NULL, NULL);
    CU_add_test(s, "journal: appended records replay in order after reopening", test_append_replay);
    CU_add_test(s, "journal: a torn or damaged last record is cut off and ignored",
                test_torn_record);
    CU_add_test(s, "journal: segments rotate; release deletes only committed ones",
                test_rotation_release);
    CU_add_test(s, "journal: a floor keeps new positions above the committed one", test_floor);
    CU_add_test(s, "journal: appends from two threads get unique ordered positions",
                test_threads);
    CU_add_test(s, "journal: files named beyond the positions it can write are not its segments",
                test_foreign_segment_names);
    CU_add_test(s, "journal: an unusable directory is a clear error", test_unusable_dir);
    CU_add_test(s, "journal: segments are created 0600 in a 0750 directory", test_modes);
    CU_add_test(s, "journal: a copy of the open segment (a kill -9) replays every record and "
                   "counts no torn one",
                test_open_segment_is_crash_state);
    CU_add_test(s, "journal: a closed segment a crash left with its zeroed room replays without "
                   "counting damage",
                test_closed_segment_with_room);
    CU_add_test(s, "journal: records across many map windows and file growths, and one larger "
                   "than a window, replay whole",
                test_records_across_windows);
    CU_add_test(s, "journal: a failed append (disk full) leaves nothing behind; the next one "
                   "takes the same position",
                test_failed_append_leaves_nothing);
    CU_add_test(s, "journal: a record is a varint length, a crc, flags, the arrival as a delta "
                   "and the topic's id: 13 bytes for a 5-byte payload of a topic seen before",
                test_record_layout);
    CU_add_test(s, "journal: segments of the previous release (format 1) replay after an "
                   "upgrade and appends go on in a new segment",
                test_format1_segments_replay);
    CU_add_test(s, "journal: a segment of a newer format is refused, not cut",
                test_newer_format_refused);
    CU_add_test(s, "journal: a segment header cut short by a kill reads as a torn record, not "
                   "as an unknown format",
                test_cut_header_is_torn);
    CU_add_test(s, "journal: topic ids hold per segment, across rotations and a crash copy "
                   "of the open segment",
                test_topic_ids_per_segment);
}
