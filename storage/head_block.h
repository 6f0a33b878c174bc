/* The open head's blocks (docs/storage.md, "The head in blocks"): the
 * samples one commit writes for one group of STORAGE_HEAD_GROUP series,
 * encoded into one blob that is a row of `head_blocks` (schema step 10).
 *
 * A block holds its samples sorted by (series, ts). Layout, every integer an
 * unsigned LEB128 varint, signed ones zig-zag coded:
 *
 *   u8 version (1)
 *   uvarint n                                   samples in the block, >= 1
 *   per series of the block, in ascending order:
 *     uvarint (off - prev_off - 1) << 1 | many   off: series - group base;
 *                                                prev_off -1 at the start
 *     uvarint n - 2                              only when many (n >= 2)
 *     per sample, n of them:
 *       varint ts - prev_ts                      prev_ts: the block's previous
 *                                                sample (0 at the start)
 *       uvarint zz(m) << 3 | d, d in 0..6        the value is m / 10^d, read
 *                                                back bit for bit
 *       uvarint 7, then 8 bytes little-endian    any other value: its bits
 *
 * A sensor reporting once a second with a few decimals costs about 5 bytes
 * a sample; every double, NaN payloads, infinities and -0.0 included, reads
 * back bit for bit. No SQLite, no allocation: the caller owns the buffers. */
#ifndef CB_STORAGE_HEAD_BLOCK_H
#define CB_STORAGE_HEAD_BLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Series per block: series_id / STORAGE_HEAD_GROUP is the block's group,
 * series_id % STORAGE_HEAD_GROUP its offset. Measured in docs/storage.md. */
#define STORAGE_HEAD_GROUP 64

/* A sample of the head. */
struct storage_hsample {
    int64_t series;
    int64_t ts;
    double value;
};

/* The most bytes a block of n samples takes. */
size_t storage__hblock_bound(size_t n);

/* Encodes p[0, n) (n >= 1, all of group `grp`, sorted by (series, ts) with
 * no (series, ts) twice) into out[0, cap). Returns the blob's length, or -1
 * when the samples are not so (a bug in the caller) or cap is too small. */
long storage__hblock_encode(const struct storage_hsample *p, size_t n, int64_t grp, uint8_t *out,
                            size_t cap);

/* Reading a block: init, then next until it returns 0 (the end) or -1 (the
 * blob is damaged: truncated, a bad version, a count that does not match,
 * a series outside the group, a run that does not ascend). The iterator points into the caller's blob. */
struct storage_hblock_iter {
    const uint8_t *p, *end;
    int64_t base;     /* the group's first series id */
    int64_t off;      /* the current series' offset, -1 before the first */
    int64_t ts;       /* the previous sample's ts */
    uint64_t left;    /* samples of the current series still to read */
    uint64_t total;   /* samples of the block still to read */
    int fresh;        /* the next sample is its series' first */
};

int storage__hblock_iter_init(struct storage_hblock_iter *it, const uint8_t *blob, size_t len,
                              int64_t grp);

/* The next sample into *out: 1, or 0 at the end, -1 on a damaged blob. */
int storage__hblock_next(struct storage_hblock_iter *it, struct storage_hsample *out);

#endif
