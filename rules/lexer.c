/* The lexer of the rule language. Tokens point into the source (offset,
 * length, line, column); nothing is copied. Errors come back as TK_ERROR
 * tokens carrying a message and a stable code; the parser records them. */
#include "rules/rules_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void rules__lex_init(struct rules__lexer *lx, const char *src, size_t start, size_t end, int line,
                     int col)
{
    lx->src = src;
    lx->pos = start;
    lx->end = end;
    lx->line = line;
    lx->line_start = start;
    lx->col_base = col - 1;
    lx->bol = 1;
}

static int is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int col_of(const struct rules__lexer *lx, size_t off)
{
    return (int)(off - lx->line_start) + 1 + lx->col_base;
}

const char *rules__tok_name(enum rules__tok_kind k)
{
    static const char *const names[TK__COUNT] = {
        [TK_EOF] = "end of file", [TK_ERROR] = "error",     [TK_IDENT] = "name",
        [TK_NUMBER] = "number",   [TK_DURATION] = "duration", [TK_STRING] = "string",
        [TK_LBRACE] = "'{'",      [TK_RBRACE] = "'}'",      [TK_LPAREN] = "'('",
        [TK_RPAREN] = "')'",      [TK_COMMA] = "','",       [TK_COLON] = "':'",
        [TK_DOTDOT] = "'..'",     [TK_PLUS] = "'+'",        [TK_MINUS] = "'-'",
        [TK_STAR] = "'*'",        [TK_SLASH] = "'/'",       [TK_GT] = "'>'",
        [TK_GE] = "'>='",         [TK_LT] = "'<'",          [TK_LE] = "'<='",
        [TK_EQ] = "'=='",         [TK_NE] = "'!='",         [TK_AND] = "'and'",
        [TK_OR] = "'or'",         [TK_NOT] = "'not'",
    };
    return k < TK__COUNT && names[k] ? names[k] : "token";
}

/* Unit suffix of a duration at s (n bytes left): its length and ms factor. */
static size_t unit_of(const char *s, size_t n, int64_t *factor)
{
    if (n >= 2 && s[0] == 'm' && s[1] == 's') {
        *factor = 1;
        return 2;
    }
    if (n >= 1) {
        switch (s[0]) {
        case 's': *factor = 1000; return 1;
        case 'm': *factor = 60000; return 1;
        case 'h': *factor = 3600000; return 1;
        case 'd': *factor = 86400000; return 1;
        }
    }
    return 0;
}

int rules__parse_duration(const char *s, size_t n, int64_t *ms)
{
    size_t i = 0;
    int64_t total = 0;
    if (n == 0)
        return -1;
    while (i < n) {
        if (!is_digit(s[i]))
            return -1;
        int64_t v = 0;
        while (i < n && is_digit(s[i])) {
            if (v > (INT64_MAX / 10) / 86400000)
                return -1;
            v = v * 10 + (s[i++] - '0');
        }
        int64_t f;
        size_t ul = unit_of(s + i, n - i, &f);
        if (!ul)
            return -1;
        i += ul;
        total += v * f;
        if (total > INT64_MAX / 4)
            return -1;
    }
    *ms = total;
    return 0;
}

static struct rules__tok make(struct rules__lexer *lx, enum rules__tok_kind k, size_t start,
                              int line, size_t line_start, int bol)
{
    struct rules__tok t;
    memset(&t, 0, sizeof t);
    t.kind = k;
    t.off = (uint32_t)start;
    t.len = (uint32_t)(lx->pos - start);
    t.line = line;
    t.col = (int)(start - line_start) + 1;
    t.bol = bol;
    return t;
}

struct rules__tok rules__lex_next(struct rules__lexer *lx)
{
    const char *s = lx->src;
    /* skip blanks, newlines and comments */
    for (;;) {
        if (lx->pos >= lx->end)
            break;
        char c = s[lx->pos];
        if (c == ' ' || c == '\t' || c == '\r') {
            lx->pos++;
        } else if (c == '\n') {
            lx->pos++;
            lx->line++;
            lx->line_start = lx->pos;
            lx->col_base = 0;
            lx->bol = 1;
        } else if (c == '#') {
            while (lx->pos < lx->end && s[lx->pos] != '\n')
                lx->pos++;
        } else {
            break;
        }
    }
    size_t start = lx->pos;
    int bol = lx->bol;
    lx->bol = 0;
    struct rules__tok t;
    if (start >= lx->end) {
        lx->pos = lx->end;
        t = make(lx, TK_EOF, start, lx->line, lx->line_start, 1);
        t.col = col_of(lx, start);
        return t;
    }
    char c = s[lx->pos++];
    enum rules__tok_kind k = TK_ERROR;
    const char *err = NULL, *code = NULL;
    double num = 0;
    if (is_alpha(c)) {
        /* identifiers, dotted where payloads were flattened: air.pm25 */
        for (;;) {
            while (lx->pos < lx->end && (is_alpha(s[lx->pos]) || is_digit(s[lx->pos])))
                lx->pos++;
            if (lx->pos + 1 < lx->end && s[lx->pos] == '.' && is_alpha(s[lx->pos + 1]))
                lx->pos++;
            else
                break;
        }
        size_t n = lx->pos - start;
        k = TK_IDENT;
        if (n == 3 && memcmp(s + start, "and", 3) == 0)
            k = TK_AND;
        else if (n == 2 && memcmp(s + start, "or", 2) == 0)
            k = TK_OR;
        else if (n == 3 && memcmp(s + start, "not", 3) == 0)
            k = TK_NOT;
    } else if (is_digit(c)) {
        while (lx->pos < lx->end && is_digit(s[lx->pos]))
            lx->pos++;
        int integral = 1;
        if (lx->pos + 1 < lx->end && s[lx->pos] == '.' && is_digit(s[lx->pos + 1])) {
            integral = 0;
            lx->pos++;
            while (lx->pos < lx->end && is_digit(s[lx->pos]))
                lx->pos++;
        }
        if (lx->pos < lx->end && (s[lx->pos] == 'e' || s[lx->pos] == 'E')) {
            size_t p = lx->pos + 1;
            if (p < lx->end && (s[p] == '+' || s[p] == '-'))
                p++;
            if (p < lx->end && is_digit(s[p])) {
                integral = 0;
                while (p < lx->end && is_digit(s[p]))
                    p++;
                lx->pos = p;
            }
        }
        /* letters right after the number make a duration: 90s 5m 1h30m */
        if (lx->pos < lx->end && is_alpha(s[lx->pos])) {
            while (lx->pos < lx->end && (is_alpha(s[lx->pos]) || is_digit(s[lx->pos])))
                lx->pos++;
            int64_t ms;
            if (!integral) {
                k = TK_ERROR;
                err = "bad duration: write an integer with a unit (90s, not 1.5m)";
                code = "E014";
            } else if (rules__parse_duration(s + start, lx->pos - start, &ms) < 0) {
                k = TK_ERROR;
                err = "bad duration: use an integer with ms, s, m, h or d (90s, 5m, 1h30m)";
                code = "E014";
            } else {
                k = TK_DURATION;
                num = (double)ms;
            }
        } else {
            k = TK_NUMBER;
            char buf[64];
            size_t n = lx->pos - start;
            if (n >= sizeof buf) {
                k = TK_ERROR;
                err = "number too long";
                code = "E023";
            } else {
                memcpy(buf, s + start, n);
                buf[n] = 0;
                num = strtod(buf, NULL);
                if (!isfinite(num)) {
                    k = TK_ERROR;
                    err = "number out of range";
                    code = "E023";
                }
            }
        }
    } else {
        switch (c) {
        case '"':
            /* strings end on the same line; \" and \\ are escapes */
            while (lx->pos < lx->end && s[lx->pos] != '"' && s[lx->pos] != '\n') {
                if (s[lx->pos] == '\\' && lx->pos + 1 < lx->end && s[lx->pos + 1] != '\n')
                    lx->pos++;
                lx->pos++;
            }
            if (lx->pos < lx->end && s[lx->pos] == '"') {
                lx->pos++;
                k = TK_STRING;
            } else {
                err = "unterminated string";
                code = "E001";
                t = make(lx, TK_ERROR, start, lx->line, lx->line_start, bol);
                t.col = col_of(lx, start);
                t.len = 1;
                t.err = err;
                t.err_code = code;
                return t;
            }
            break;
        case '{': k = TK_LBRACE; break;
        case '}': k = TK_RBRACE; break;
        case '(': k = TK_LPAREN; break;
        case ')': k = TK_RPAREN; break;
        case ',': k = TK_COMMA; break;
        case ':': k = TK_COLON; break;
        case '+': k = TK_PLUS; break;
        case '-': k = TK_MINUS; break;
        case '*': k = TK_STAR; break;
        case '/': k = TK_SLASH; break;
        case '.':
            if (lx->pos < lx->end && s[lx->pos] == '.') {
                lx->pos++;
                k = TK_DOTDOT;
            } else {
                err = "unexpected '.'";
                code = "E003";
            }
            break;
        case '>':
            k = TK_GT;
            if (lx->pos < lx->end && s[lx->pos] == '=')
                lx->pos++, k = TK_GE;
            break;
        case '<':
            k = TK_LT;
            if (lx->pos < lx->end && s[lx->pos] == '=')
                lx->pos++, k = TK_LE;
            break;
        case '=':
            if (lx->pos < lx->end && s[lx->pos] == '=') {
                lx->pos++;
                k = TK_EQ;
            } else {
                err = "unexpected '=' (comparison is '==')";
                code = "E003";
            }
            break;
        case '!':
            if (lx->pos < lx->end && s[lx->pos] == '=') {
                lx->pos++;
                k = TK_NE;
            } else {
                err = "unexpected '!' (negation is 'not')";
                code = "E003";
            }
            break;
        default:
            /* skip the rest of a multi-byte UTF-8 character */
            while (lx->pos < lx->end && ((unsigned char)s[lx->pos] & 0xC0) == 0x80)
                lx->pos++;
            err = "unexpected character";
            code = "E003";
            break;
        }
    }
    t = make(lx, k, start, lx->line, lx->line_start, bol);
    t.col = col_of(lx, start);
    t.num = num;
    t.err = err;
    t.err_code = code;
    return t;
}
