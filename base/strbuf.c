#include "base/strbuf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cb_strbuf_init(struct cb_strbuf *b) { memset(b, 0, sizeof *b); }

void cb_strbuf_free(struct cb_strbuf *b)
{
    free(b->data);
    cb_strbuf_init(b);
}

void cb_strbuf_reset(struct cb_strbuf *b)
{
    b->len = 0;
    b->oom = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* Makes room for n more bytes plus the terminating NUL. Returns 0 or -1. */
static int reserve(struct cb_strbuf *b, size_t n)
{
    if (b->oom)
        return -1;
    if (b->len + n + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void cb_strbuf_append(struct cb_strbuf *b, const char *s, size_t n)
{
    if (reserve(b, n))
        return;
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

size_t cb_strbuf_add_string(struct cb_strbuf *b, const char *s, size_t n)
{
    size_t off = b->len;
    if (reserve(b, n + 1))
        return SIZE_MAX;
    memcpy(b->data + off, s, n);
    b->data[off + n] = '\0';
    b->len += n + 1;
    b->data[b->len] = '\0';
    return off;
}

void cb_strbuf_truncate(struct cb_strbuf *b, size_t len)
{
    b->oom = 0;
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

void cb_strbuf_puts(struct cb_strbuf *b, const char *s) { cb_strbuf_append(b, s, strlen(s)); }

void cb_strbuf_putc(struct cb_strbuf *b, char c) { cb_strbuf_append(b, &c, 1); }

void cb_strbuf_fill(struct cb_strbuf *b, char c, size_t n)
{
    if (reserve(b, n))
        return;
    memset(b->data + b->len, c, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void cb_strbuf_printf(struct cb_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        cb_strbuf_append(b, small, (size_t)n);
        return;
    }
    if (reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) { len = 2; min = 0x80; c &= 0x1F; }
    else if ((c & 0xF0) == 0xE0) { len = 3; min = 0x800; c &= 0x0F; }
    else if ((c & 0xF8) == 0xF0) { len = 4; min = 0x10000; c &= 0x07; }
    else return 0;
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    return len;
}

void cb_strbuf_json_string(struct cb_strbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    cb_strbuf_putc(b, '"');
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            cb_strbuf_append(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            cb_strbuf_append(b, e, 2);
            i++;
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            switch (c) {
            case '\n': cb_strbuf_append(b, "\\n", 2); break;
            case '\r': cb_strbuf_append(b, "\\r", 2); break;
            case '\t': cb_strbuf_append(b, "\\t", 2); break;
            default: cb_strbuf_append(b, e, 6); break;
            }
            i++;
        } else {
            size_t l = utf8_len(p + i, n - i);
            if (l == 0) {
                cb_strbuf_append(b, "\xEF\xBF\xBD", 3);
                i++;
            } else {
                cb_strbuf_append(b, s + i, l);
                i += l;
            }
        }
    }
    cb_strbuf_putc(b, '"');
}

void cb_strbuf_json_string_or_null(struct cb_strbuf *b, const char *s)
{
    if (s)
        cb_strbuf_json_string(b, s, strlen(s));
    else
        cb_strbuf_puts(b, "null");
}

void cb_strbuf_json_number(struct cb_strbuf *b, double v)
{
    if (!isfinite(v)) {
        cb_strbuf_puts(b, "null");
        return;
    }
    if (v == (double)(long long)v && fabs(v) < 1e15) {
        cb_strbuf_printf(b, "%lld", (long long)v);
        return;
    }
    /* The shortest of %.15g..%.17g that reads back to the same double. */
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    cb_strbuf_puts(b, tmp);
}

void cb_strbuf_xml_text(struct cb_strbuf *b, const char *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        default: break;
        }
        if (rep) {
            cb_strbuf_append(b, s + start, i - start);
            cb_strbuf_puts(b, rep);
            start = i + 1;
        }
    }
    cb_strbuf_append(b, s + start, n - start);
}

char *cb_strbuf_steal(struct cb_strbuf *b, size_t *len)
{
    if (!b->data)
        cb_strbuf_append(b, "", 0);
    char *d = b->data;
    if (len)
        *len = b->len;
    cb_strbuf_init(b);
    return d;
}
