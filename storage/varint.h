/* LEB128 varints and zig-zag words: the one copy behind every byte format of
 * storage/ (the journal's records, the chunk codec's headers, the head's
 * blocks). Each format's decoder is fuzzed (tests/fuzz_journal.c,
 * fuzz_chunk.c, fuzz_head_block.c), so a change here is a change to all three.
 * Header-only: the codecs stay free of SQLite and of each other. */
#ifndef CB_STORAGE_VARINT_H
#define CB_STORAGE_VARINT_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of v as an unsigned LEB128 varint (1 to 10). */
static inline size_t storage__uvarint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes v at out (room for storage__uvarint_len(v) bytes); returns the bytes
 * written. */
static inline size_t storage__put_uvarint(uint8_t *out, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Reads one varint from [*p, end) into *v and moves *p past it: 0, or -1
 * (with *p and *v unspecified) when it runs past end or does not fit 64 bits,
 * which damaged bytes must never be taken for. */
static inline int storage__get_uvarint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        if (shift == 63 && b > 1)
            return -1; /* a tenth byte holds bit 63 only */
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Zig-zag: a small difference of either sign as a small unsigned word
 * (0, -1, 1, -2 ... as 0, 1, 2, 3 ...). On the two's complement bits, so that
 * a difference taken in wrapping uint64_t arithmetic maps without overflow. */
static inline uint64_t storage__zigzag(uint64_t v)
{
    return (v << 1) ^ (0 - (v >> 63));
}

static inline uint64_t storage__unzigzag(uint64_t z)
{
    return (z >> 1) ^ (0 - (z & 1));
}

#endif
