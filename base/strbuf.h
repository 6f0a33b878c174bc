/* A growable byte buffer, NUL-terminated at all times, and a JSON string
 * escaper. Used wherever text is built: JSON answers, Prometheus text, CAP XML;
 * and as an arena of strings addressed by offset (the decoder's names, the
 * store's pending batches).
 * Allocation failure is sticky until a reset or truncate: `oom` is set, later
 * appends do nothing, and the caller checks once at the end. */
#ifndef CB_BASE_STRBUF_H
#define CB_BASE_STRBUF_H

#include <stdarg.h>
#include <stddef.h>

struct cb_strbuf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
};

void cb_strbuf_init(struct cb_strbuf *b);
void cb_strbuf_free(struct cb_strbuf *b);
void cb_strbuf_reset(struct cb_strbuf *b); /* len = 0 and oom cleared, keeps memory */
void cb_strbuf_append(struct cb_strbuf *b, const char *s, size_t n);
void cb_strbuf_puts(struct cb_strbuf *b, const char *s);
void cb_strbuf_putc(struct cb_strbuf *b, char c);
/* n copies of c: one reservation, not n (a caret line under a long source line). */
void cb_strbuf_fill(struct cb_strbuf *b, char c, size_t n);
void cb_strbuf_printf(struct cb_strbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes) as a quoted JSON string, escaping quotes, backslashes and
 * control characters, and replacing invalid UTF-8 with U+FFFD. */
void cb_strbuf_json_string(struct cb_strbuf *b, const char *s, size_t n);
/* Appends the NUL-terminated s as a JSON string, or `null` when s is NULL. */
void cb_strbuf_json_string_or_null(struct cb_strbuf *b, const char *s);
/* Appends a finite double the shortest way that reads back exactly (%.17g
 * trimmed), or `null` when not finite: JSON has no NaN. */
void cb_strbuf_json_number(struct cb_strbuf *b, double v);
/* Appends s with the five XML entities escaped (&, <, >, ", '). */
void cb_strbuf_xml_text(struct cb_strbuf *b, const char *s, size_t n);
/* For strings kept back to back in one buffer (an arena, addressed by
 * offset): appends s (n bytes) and a NUL of its own. Returns the offset of
 * its first byte, or SIZE_MAX when memory ran out. */
size_t cb_strbuf_add_string(struct cb_strbuf *b, const char *s, size_t n);
/* Cuts b back to its first len bytes (len <= b->len) and clears oom: what
 * failed since is undone. */
void cb_strbuf_truncate(struct cb_strbuf *b, size_t len);
/* Hands the buffer to the caller (who frees it) and re-initialises b. */
char *cb_strbuf_steal(struct cb_strbuf *b, size_t *len);

#endif
