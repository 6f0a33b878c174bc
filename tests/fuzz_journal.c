/* libFuzzer target: journal recovery (storage/journal.c) from damaged
 * segment files. Whatever a crash, a full disk or a bad sector left in the
 * journal directory, opening and replaying it must never crash, leak or read
 * past a file, and the journal must go on working: records appended after
 * the recovery come back, whole and at their positions, after a reopen.
 *
 * Input: one byte A (replay after position A, and the floor set at A), then
 * segments, each as u64 first position | u32 length | that many bytes (little
 * endian; the last one takes what is left when the length runs past the end).
 * They are written as DIR/<first>.seg in a private directory (on /dev/shm
 * when there is one), and the journal is opened on it with 256-byte segments
 * so appends roll over to new ones.
 *
 * Seeds are real segments written by the journal's own code: run the binary
 * with CB_FUZZ_JOURNAL_SEEDS=DIR to write them (format2-segments-*.bin in
 * tests/fuzz/corpus/journal). The format 1 seeds (format1-*.bin) were
 * written by the release before the compact records (74dafe1) and are kept:
 * old segments must stay readable, so their reader is fuzzed too, and so is a
 * journal holding both formats (a format 1 segment is never appended to; the
 * appends below go to a new format 2 one). */
#include "storage/storage.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEGMENT_BYTES 256
#define NAPPEND 3

static char dir[64];

static void empty_dir(void)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[320];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    closedir(d);
}

static void remove_dir(void)
{
    empty_dir();
    rmdir(dir);
}

static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Writes seeds into out: the segments the journal writes for a few messages
 * (one segment, several, with a torn tail), each in the input format. */
static int write_seeds(const char *out)
{
    static const char *const payloads[] = {
        "{\"level\":1.62,\"flow\":140.5}", "{\"pm25\":16.2,\"pm10\":28.0}",
        "[{\"bn\":\"urn:dev:gas:g1:\",\"n\":\"ch4\",\"v\":0.8}]", "2.5", "{\"ts\":1732406400,\"v\":1}"};
    static const char *const topics[] = {"city/d01/river/s01", "city/d01/air/s02",
                                         "city/d02/gas/s01", "city/d03/rain/s03",
                                         "city/d04/bridge/s01"};
    static const int counts[] = {1, 3, 12};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        empty_dir();
        char err[256];
        struct cb_journal *j = cb_journal_open(dir, SEGMENT_BYTES, 0, err, sizeof err);
        if (!j)
            return fprintf(stderr, "journal: %s\n", err), -1;
        for (int i = 0; i < counts[c]; i++) {
            uint64_t pos;
            const char *t = topics[i % 5], *p = payloads[i % 5];
            if (cb_journal_append(j, t, strlen(t), p, strlen(p), 1732406400000 + i * 1000, &pos))
                return -1;
        }
        cb_journal_close(j);
        /* The input: A = 0, then every segment in name order. */
        struct dirent **names;
        int n = scandir(dir, &names, NULL, alphasort);
        if (n < 0)
            return -1;
        char path[320];
        snprintf(path, sizeof path, "%s/format2-segments-%d.bin", out, counts[c]);
        FILE *f = fopen(path, "wb");
        if (!f)
            return -1;
        fputc(0, f);
        for (int k = 0; k < n; k++) {
            if (names[k]->d_name[0] != '.') {
                char seg[320];
                snprintf(seg, sizeof seg, "%s/%s", dir, names[k]->d_name);
                FILE *s = fopen(seg, "rb");
                uint8_t buf[4096], hdr[12];
                size_t len = s ? fread(buf, 1, sizeof buf, s) : 0;
                if (s)
                    fclose(s);
                /* the last segment of the largest seed is written torn */
                if (counts[c] == 12 && k == n - 1 && len > 5)
                    len -= 5;
                put_u64(hdr, strtoull(names[k]->d_name, NULL, 10));
                put_u32(hdr + 8, (uint32_t)len);
                fwrite(hdr, 1, sizeof hdr, f);
                fwrite(buf, 1, len, f);
            }
            free(names[k]);
        }
        free(names);
        fclose(f);
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "%s/cb-fuzz-journal.XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    if (!mkdtemp(dir))
        abort();
    atexit(remove_dir);
    const char *seeds = getenv("CB_FUZZ_JOURNAL_SEEDS");
    if (seeds)
        exit(write_seeds(seeds) ? 1 : 0);
    return 0;
}

/* Replay callbacks. */
static volatile size_t sink;

struct seen {
    uint64_t pos[NAPPEND];
    int found[NAPPEND];
    uint64_t records;
};

static int count_record(void *ctx, uint64_t pos, const char *topic, const void *payload,
                        size_t len, int64_t arrival_ms)
{
    struct seen *s = ctx;
    (void)pos;
    (void)arrival_ms;
    /* Touch every byte: a record must lie inside its mapping. */
    size_t sum = strlen(topic);
    for (size_t i = 0; i < len; i++)
        sum += ((const uint8_t *)payload)[i];
    sink += sum;
    s->records++;
    return 0;
}

static int find_appended(void *ctx, uint64_t pos, const char *topic, const void *payload,
                         size_t len, int64_t arrival_ms)
{
    struct seen *s = ctx;
    char want[32];
    for (int i = 0; i < NAPPEND; i++) {
        int n = snprintf(want, sizeof want, "after-recovery-%d", i);
        if (pos == s->pos[i] && !strcmp(topic, "fuzz/append") && len == (size_t)n &&
            !memcmp(payload, want, len) && arrival_ms == 1000 + i)
            s->found[i] = 1;
    }
    return count_record(ctx, pos, topic, payload, len, arrival_ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint64_t after = data[0];
    empty_dir();
    for (size_t off = 1; off + 12 <= size;) {
        uint64_t first;
        uint32_t len;
        memcpy(&first, data + off, 8);
        memcpy(&len, data + off + 8, 4);
        off += 12;
        if (len > size - off)
            len = (uint32_t)(size - off);
        char path[320];
        snprintf(path, sizeof path, "%s/%020llu.seg", dir, (unsigned long long)first);
        FILE *f = fopen(path, "ab");
        if (!f)
            abort();
        if (len && fwrite(data + off, 1, len, f) != len)
            abort();
        fclose(f);
        off += len;
    }

    char err[256];
    struct cb_journal *j = cb_journal_open(dir, SEGMENT_BYTES, 0, err, sizeof err);
    if (!j)
        return 0; /* refused with a reason: fine */
    struct seen s = {{0}, {0}, 0};
    cb_journal_replay(j, after, count_record, &s);
    if (cb_journal_set_floor(j, after))
        abort();
    for (int i = 0; i < NAPPEND; i++) {
        char p[32];
        int n = snprintf(p, sizeof p, "after-recovery-%d", i);
        if (cb_journal_append(j, "fuzz/append", 11, p, (size_t)n, 1000 + i, &s.pos[i]))
            abort();
        if (s.pos[i] <= after || (i && s.pos[i] != s.pos[i - 1] + 1))
            abort();
    }
    struct cb_journal_stats st;
    cb_journal_get_stats(j, &st);
    if (st.next_pos != s.pos[NAPPEND - 1] + 1)
        abort();
    cb_journal_release(j, after);
    cb_journal_close(j);

    /* Reopen: what was appended after the recovery is all there. */
    j = cb_journal_open(dir, SEGMENT_BYTES, 0, err, sizeof err);
    if (!j)
        abort();
    if (cb_journal_replay(j, after, find_appended, &s))
        abort();
    for (int i = 0; i < NAPPEND; i++)
        if (!s.found[i])
            abort();
    cb_journal_close(j);
    return 0;
}
