/* The chunk codec: a run of samples of one series (ts in ms, double value)
 * encoded into a self-describing blob, and decoded back exactly.
 *
 * Not wired into the store yet (docs/storage.md, "Chunk codec"): this header
 * is storage's own, included by the store once raw samples live in chunks,
 * and by the tests, the fuzz target and bench/bench_chunk.c today. It needs
 * no SQLite and allocates nothing: the caller owns every buffer.
 *
 * A blob is one byte naming its codec, the number of samples (unsigned
 * LEB128 varint), then the codec's own layout (storage/chunk.c has the bit
 * layouts):
 *
 *   CB_CHUNK_RAW      16 bytes a sample: ts and the value's IEEE-754 bits;
 *   CB_CHUNK_GORILLA  Facebook's Gorilla (VLDB 2015) as Prometheus stores it:
 *                     delta-of-delta timestamps in fixed buckets, values
 *                     XORed with the previous one, leading/trailing zeros;
 *   CB_CHUNK_DECIMAL  values scaled by the smallest power of ten 10^d (d in
 *                     0..CB_CHUNK_MAX_DECIMALS) that makes every one an
 *                     integer and reads back bit for bit; timestamps as
 *                     deltas of deltas, the integers against a base, as
 *                     deltas or as deltas of deltas (whichever is
 *                     smallest), zig-zag coded into four variable-width
 *                     buckets whose widths each chunk chooses for its data.
 *
 * Every finite double round-trips exactly through every codec that accepts
 * it (DECIMAL refuses a chunk it cannot scale: -0.0, subnormals, 1e300, more
 * than CB_CHUNK_MAX_DECIMALS decimals; CB_CHUNK_AUTO then takes GORILLA, or
 * RAW when GORILLA's blob would be longer). */
#ifndef CB_STORAGE_CHUNK_H
#define CB_STORAGE_CHUNK_H

#include <stddef.h>
#include <stdint.h>

/* The codec byte at the start of a blob. 0 is never a codec (a zeroed blob
 * is refused); CB_CHUNK_AUTO only asks the encoder to choose. */
enum cb_chunk_codec {
    CB_CHUNK_AUTO = 0,
    CB_CHUNK_RAW = 1,
    CB_CHUNK_GORILLA = 2,
    CB_CHUNK_DECIMAL = 3,
};

/* Results: 0 (or a count) on success, one of these (negative) otherwise. */
enum cb_chunk_error {
    CB_CHUNK_EORDER = -1,   /* encode: a ts not greater than the one before it */
    CB_CHUNK_EVALUE = -2,   /* encode: NaN or an infinity (samples are finite) */
    CB_CHUNK_ECODEC = -3,   /* encode: no such codec */
    CB_CHUNK_EUNFIT = -4,   /* encode: DECIMAL asked for values it cannot scale */
    CB_CHUNK_ESPACE = -5,   /* the output buffer is too small */
    CB_CHUNK_ETOOMANY = -6, /* more than CB_CHUNK_MAX_SAMPLES samples */
    CB_CHUNK_ECORRUPT = -7, /* decode: not a blob this encoder writes */
};

/* The most samples a chunk holds (the store closes chunks of ~120). */
#define CB_CHUNK_MAX_SAMPLES 65535
/* The largest d of DECIMAL's scale 10^d. */
#define CB_CHUNK_MAX_DECIMALS 9

/* One sample of a series. */
struct cb_chunk_point {
    int64_t ts_ms;
    double value;
};

/* A text for a result code ("timestamps not strictly increasing", ...). */
const char *cb_chunk_strerror(int err);

/* Bytes enough for a blob of n samples in any codec (n <= the maximum). */
size_t cb_chunk_bound(size_t n);

/* The smallest d in 0..CB_CHUNK_MAX_DECIMALS such that every value v of
 * pts[0..n) reads back bit for bit as (double)llround(v * 10^d) / 10^d with
 * |v * 10^d| <= 2^53 (so -0.0, subnormals and huge values never scale), or
 * -1 when there is none. 0 for n == 0. */
int cb_chunk_decimal_scale(const struct cb_chunk_point *pts, size_t n);

/* Encodes pts[0..n) into out (cap bytes; cb_chunk_bound(n) always suffices)
 * with `codec`, or with CB_CHUNK_AUTO one codec chosen from a scan of the
 * values, encoded once: DECIMAL when every value scales, else GORILLA, and
 * RAW when that blob would be longer than RAW's (so a blob never exceeds 16
 * bytes a sample plus its header). Timestamps must be strictly increasing: two samples with
 * the same ts are refused (CB_CHUNK_EORDER), not merged, because the store
 * keeps one sample per (series, ts) and the caller decides which one. Values
 * must be finite. Returns the blob's length (> 0), or a negative
 * cb_chunk_error with nothing meaningful in out. Never allocates. */
long cb_chunk_encode(const struct cb_chunk_point *pts, size_t n, enum cb_chunk_codec codec,
                     uint8_t *out, size_t cap);

/* Reads a blob sample by sample, so a range read can stop early. A plain
 * struct so it lives on the caller's stack; its fields are private. The blob
 * must stay unchanged while the iterator is used. */
struct cb_chunk_iter {
    const uint8_t *p, *end; /* bytes not yet in acc */
    uint64_t acc;           /* bit reader: `nbits` unread bits, low-aligned */
    unsigned nbits;
    int bad;                /* the blob ran out or broke a rule */
    uint8_t codec;
    uint8_t order;          /* DECIMAL: 0 against a base, 1 deltas, 2 deltas of deltas */
    uint8_t lead, sig;      /* GORILLA: the current XOR window */
    uint8_t tw[4], vw[4];   /* DECIMAL: bucket widths of ts and values */
    uint32_t n, i;          /* samples in the blob, samples returned */
    int64_t ts;
    uint64_t tdelta;
    uint64_t v;             /* GORILLA: value bits; DECIMAL: scaled integer */
    uint64_t vdelta;
    uint64_t base;          /* DECIMAL order 0 */
    double scale;           /* DECIMAL: 10^d */
};

/* Reads the blob's header. Returns 0, or CB_CHUNK_ECORRUPT (an unknown
 * codec, a count beyond the maximum, a header cut short). */
int cb_chunk_iter_init(struct cb_chunk_iter *it, const uint8_t *blob, size_t len);
/* The codec and the number of samples of an initialised iterator's blob. */
enum cb_chunk_codec cb_chunk_iter_codec(const struct cb_chunk_iter *it);
size_t cb_chunk_iter_count(const struct cb_chunk_iter *it);
/* The next sample into *out: returns 1, 0 after the last one (when the
 * blob has been consumed to its last byte), or CB_CHUNK_ECORRUPT (the bits
 * run out, a ts not greater than the one before, a non-finite value, bytes
 * left over after the last sample); after an error every call returns it. */
int cb_chunk_iter_next(struct cb_chunk_iter *it, struct cb_chunk_point *out);

/* Decodes the samples with from <= ts < to into out (cap points), stopping
 * at the first ts >= to without decoding the rest. Returns the number
 * written, CB_CHUNK_ESPACE when they do not fit, or CB_CHUNK_ECORRUPT. A
 * blob is only checked to its end when the range reaches it. */
long cb_chunk_decode_range(const uint8_t *blob, size_t len, int64_t from, int64_t to,
                           struct cb_chunk_point *out, size_t cap);
/* Every sample: cb_chunk_decode_range over the whole time line (and so the
 * blob checked to its last byte). */
long cb_chunk_decode(const uint8_t *blob, size_t len, struct cb_chunk_point *out, size_t cap);

#endif
