/* The head's block codec (storage/head_block.h has the layout). */
#include "storage/head_block.h"
#include "storage/varint.h"

#include <math.h>
#include <string.h>

#define VERSION 1
#define MAX_DECIMALS 6
#define RAW_TAG 7

static const double pow10_tab[MAX_DECIMALS + 1] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6};

/* The value's tag word: zz(m) << 3 | d when m / 10^d gives v back bit for
 * bit (|m| < 2^53, so m is exact as a double), else RAW_TAG. */
static uint64_t value_word(double v)
{
    for (int d = 0; d <= MAX_DECIMALS; d++) {
        double x = v * pow10_tab[d];
        if (!(fabs(x) < 9007199254740992.0)) /* 2^53; also NaN */
            return RAW_TAG;
        double r = nearbyint(x);
        int64_t m = (int64_t)r;
        double back = (double)m / pow10_tab[d];
        if (memcmp(&back, &v, sizeof v) == 0)
            return storage__zigzag((uint64_t)m) << 3 | (uint64_t)d;
    }
    return RAW_TAG;
}

size_t storage__hblock_bound(size_t n)
{
    /* version, count (10); per sample at most a series word (10), a count (10), a ts
     * (10) and a value (1 + 8) */
    return 11 + n * 39;
}

long storage__hblock_encode(const struct storage_hsample *p, size_t n, int64_t grp, uint8_t *out,
                            size_t cap)
{
    if (n == 0 || cap < storage__hblock_bound(n))
        return -1;
    int64_t base = grp * STORAGE_HEAD_GROUP, prev_off = -1, prev_ts = 0;
    size_t k = 0;
    out[k++] = VERSION;
    k += storage__put_uvarint(out + k, n);
    for (size_t a = 0; a < n;) {
        int64_t off = p[a].series - base;
        if (off <= prev_off || off >= STORAGE_HEAD_GROUP)
            return -1;
        size_t b = a + 1;
        while (b < n && p[b].series == p[a].series) {
            if (p[b].ts <= p[b - 1].ts)
                return -1;
            b++;
        }
        uint64_t many = b - a > 1;
        k += storage__put_uvarint(out + k, (uint64_t)(off - prev_off - 1) << 1 | many);
        if (many)
            k += storage__put_uvarint(out + k, b - a - 2);
        for (size_t i = a; i < b; i++) {
            uint64_t step = (uint64_t)p[i].ts - (uint64_t)prev_ts;
            k += storage__put_uvarint(out + k, storage__zigzag(step));
            prev_ts = p[i].ts;
            uint64_t w = value_word(p[i].value);
            k += storage__put_uvarint(out + k, w);
            if (w == RAW_TAG) {
                uint64_t bits;
                memcpy(&bits, &p[i].value, sizeof bits);
                for (int j = 0; j < 8; j++)
                    out[k++] = (uint8_t)(bits >> (8 * j));
            }
        }
        prev_off = off;
        a = b;
    }
    return (long)k;
}

int storage__hblock_iter_init(struct storage_hblock_iter *it, const uint8_t *blob, size_t len,
                              int64_t grp)
{
    memset(it, 0, sizeof *it);
    if (!blob || len < 1 || blob[0] != VERSION)
        return -1;
    it->p = blob + 1;
    it->end = blob + len;
    it->base = grp * STORAGE_HEAD_GROUP;
    it->off = -1;
    /* the count: at least one sample, each taking two bytes or more */
    if (storage__get_uvarint(&it->p, it->end, &it->total) < 0 || it->total == 0 ||
        it->total > (uint64_t)(it->end - it->p) / 2)
        return -1;
    return 0;
}

int storage__hblock_next(struct storage_hblock_iter *it, struct storage_hsample *out)
{
    uint64_t w;
    if (it->total == 0)
        return it->p == it->end ? 0 : -1;
    if (it->left == 0) {
        if (storage__get_uvarint(&it->p, it->end, &w) < 0 || (w >> 1) >= STORAGE_HEAD_GROUP)
            return -1;
        it->off += (int64_t)(w >> 1) + 1;
        if (it->off >= STORAGE_HEAD_GROUP)
            return -1;
        it->left = 1;
        if (w & 1) {
            uint64_t more;
            if (storage__get_uvarint(&it->p, it->end, &more) < 0 ||
                more > (uint64_t)(it->end - it->p))
                return -1; /* (a sample takes 2 bytes at least) */
            it->left = more + 2;
        }
        it->fresh = 1;
    }
    uint64_t z;
    if (storage__get_uvarint(&it->p, it->end, &z) < 0 ||
        storage__get_uvarint(&it->p, it->end, &w) < 0)
        return -1;
    out->ts = (int64_t)((uint64_t)it->ts + storage__unzigzag(z));
    if (!it->fresh && out->ts <= it->ts)
        return -1; /* a series' samples ascend */
    it->fresh = 0;
    out->series = it->base + it->off;
    if (w == RAW_TAG) {
        if (it->end - it->p < 8)
            return -1;
        uint64_t bits = 0;
        for (int j = 0; j < 8; j++)
            bits |= (uint64_t)it->p[j] << (8 * j);
        it->p += 8;
        memcpy(&out->value, &bits, sizeof bits);
    } else {
        unsigned d = (unsigned)(w & 7);
        if (d > MAX_DECIMALS)
            return -1;
        out->value = (double)(int64_t)storage__unzigzag(w >> 3) / pow10_tab[d];
    }
    it->left--;
    it->total--;
    if (it->left > it->total)
        return -1; /* the run is longer than the block */
    it->ts = out->ts;
    return 1;
}
