/* Diagnostics: recording them with their position and source line, and
 * rendering them as gcc/rustc-style text or as JSON. */
#include "rules/rules_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Copies the text of line `line` (1-based) of src, without its newline. */
static char *line_text(const struct rules__src *src, int line)
{
    if (!src || !src->text || line < 1)
        return NULL;
    const char *p = src->text, *end = src->text + src->len;
    for (int l = 1; l < line && p < end; l++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return NULL;
        p = nl + 1;
    }
    const char *e = memchr(p, '\n', (size_t)(end - p));
    if (!e)
        e = end;
    if (e > p && e[-1] == '\r')
        e--;
    return rules__strndup(p, (size_t)(e - p));
}

void rules__diag(struct cb_diags *d, const struct rules__src *src, enum cb_diag_severity sev,
                 const char *code, int line, int col, int span, const char *hint,
                 const char *fmt, ...)
{
    if (sev == CB_DIAG_ERROR)
        d->errors++;
    if (d->n >= 10000) /* a pathological file: enough is enough */
        return;
    if (rules__grow(&d->items, &d->cap, d->n + 1, sizeof *d->items) < 0)
        return;
    struct cb_diag *g = &d->items[d->n++];
    memset(g, 0, sizeof *g);
    g->severity = sev;
    g->code = code;
    g->file = rules__strdup(src && src->name ? src->name : "<input>");
    g->line = line;
    g->col = col;
    g->span = span < 1 ? 1 : span;
    g->hint = hint ? rules__strdup(hint) : NULL;
    g->source_line = line_text(src, line);
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g->message = rules__strdup(buf);
}

void cb_diags_add(struct cb_diags *d, enum cb_diag_severity sev, const char *code,
                  const char *file, const char *hint, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    struct rules__src src = {file, NULL, 0};
    rules__diag(d, &src, sev, code, 0, 0, 1, hint, "%s", buf);
}

void cb_diags_free(struct cb_diags *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++) {
        free(d->items[i].file);
        free(d->items[i].message);
        free(d->items[i].hint);
        free(d->items[i].source_line);
    }
    free(d->items);
    memset(d, 0, sizeof *d);
}

static const char *sev_name(enum cb_diag_severity s)
{
    return s == CB_DIAG_ERROR ? "error" : s == CB_DIAG_WARNING ? "warning" : "note";
}

/* file:line:col: error: message (hint)
 *    12 |   when avgg(level, 5m) > 3.2
 *       |        ^~~~
 * Tabs in the source line are repeated under it so the caret lines up. */
void cb_diags_render_text(const struct cb_diags *d, struct cb_strbuf *out)
{
    for (size_t i = 0; i < d->n; i++) {
        const struct cb_diag *g = &d->items[i];
        if (g->line > 0)
            cb_strbuf_printf(out, "%s:%d:%d: ", g->file, g->line, g->col);
        else
            cb_strbuf_printf(out, "%s: ", g->file);
        cb_strbuf_printf(out, "%s: %s", sev_name(g->severity), g->message ? g->message : "");
        if (g->hint)
            cb_strbuf_printf(out, " (%s)", g->hint);
        cb_strbuf_putc(out, '\n');
        if (!g->source_line)
            continue;
        cb_strbuf_printf(out, "%5d | %s\n", g->line, g->source_line);
        cb_strbuf_puts(out, "      | ");
        /* The caret sits under the column: a tab of the source line stays a tab, so
         * the caret lines up whatever the terminal's tab width. Runs, not characters:
         * a column far into a long line costs one copy per run of tabs or spaces. */
        size_t sl = strlen(g->source_line);
        size_t before = g->col > 1 ? (size_t)(g->col - 1) : 0;
        for (size_t c = 0; c < before;) {
            char pad = c < sl && g->source_line[c] == '\t' ? '\t' : ' ';
            size_t run = c;
            while (run < before && (run < sl && g->source_line[run] == '\t' ? '\t' : ' ') == pad)
                run++;
            cb_strbuf_fill(out, pad, run - c);
            c = run;
        }
        cb_strbuf_putc(out, '^');
        if (g->span > 1)
            cb_strbuf_fill(out, '~', (size_t)(g->span - 1));
        cb_strbuf_putc(out, '\n');
    }
}

void cb_diags_render_json(const struct cb_diags *d, struct cb_strbuf *out)
{
    cb_strbuf_putc(out, '[');
    for (size_t i = 0; i < d->n; i++) {
        const struct cb_diag *g = &d->items[i];
        if (i)
            cb_strbuf_putc(out, ',');
        cb_strbuf_puts(out, "{\"file\":");
        cb_strbuf_json_string(out, g->file, strlen(g->file));
        cb_strbuf_printf(out, ",\"line\":%d,\"col\":%d,\"span\":%d,\"severity\":\"%s\",\"code\":",
                         g->line, g->col, g->span, sev_name(g->severity));
        cb_strbuf_json_string(out, g->code, strlen(g->code));
        cb_strbuf_puts(out, ",\"message\":");
        const char *m = g->message ? g->message : "";
        cb_strbuf_json_string(out, m, strlen(m));
        cb_strbuf_puts(out, ",\"hint\":");
        if (g->hint)
            cb_strbuf_json_string(out, g->hint, strlen(g->hint));
        else
            cb_strbuf_puts(out, "null");
        cb_strbuf_putc(out, '}');
    }
    cb_strbuf_putc(out, ']');
}
