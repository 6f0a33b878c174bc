#include "base/regex.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_DEPTH 64

/* Skips a bracket expression starting at p (at '['): returns the index
 * after its ']', or the end of the string when it has none (regcomp
 * reports that). A ']' first (after an optional '^') is a member, and
 * "[:alpha:]", "[.x.]", "[=e=]" are read whole. */
static size_t skip_bracket(const char *p, size_t i)
{
    size_t n = strlen(p);
    i++;
    if (i < n && p[i] == '^')
        i++;
    if (i < n && p[i] == ']')
        i++;
    while (i < n && p[i] != ']') {
        if (p[i] == '[' && i + 1 < n && strchr(":.=", p[i + 1])) {
            char close = p[i + 1];
            const char *end = strstr(p + i + 2, (char[]){close, ']', '\0'});
            i = end ? (size_t)(end - p) + 2 : n;
        } else {
            i++;
        }
    }
    return i < n ? i + 1 : n;
}

/* Reads "{n}", "{n,}" or "{n,m}" at p[i] (at '{'): *copies the copies the
 * repetition makes (the larger bound, n + 1 for "{n,}"), the index after
 * '}' returned; 0 when it is no interval (a literal brace). */
static size_t read_interval(const char *p, size_t i, uint64_t *copies)
{
    uint64_t lo = 0, hi = 0;
    size_t j = i + 1;
    if (p[j] < '0' || p[j] > '9')
        return 0;
    while (p[j] >= '0' && p[j] <= '9' && lo <= 100000)
        lo = lo * 10 + (uint64_t)(p[j++] - '0');
    hi = lo;
    if (p[j] == ',') {
        j++;
        if (p[j] >= '0' && p[j] <= '9') {
            hi = 0;
            while (p[j] >= '0' && p[j] <= '9' && hi <= 100000)
                hi = hi * 10 + (uint64_t)(p[j++] - '0');
        } else {
            hi = lo + 1;
        }
    }
    if (p[j] != '}')
        return 0;
    *copies = hi > lo ? hi : lo;
    if (*copies == 0)
        *copies = 1;
    return j + 1;
}

int cb_regex_check(const char *p, char *err, size_t errlen)
{
    /* inner[d]: the most copies any repetition inside the open group at
     * depth d makes, nesting multiplied (1: none). */
    uint64_t inner[MAX_DEPTH + 1];
    size_t depth = 0;
    inner[0] = 1;
    uint64_t atom = 1;  /* copies the last atom already carries (a group's inner) */
    int after = 0;      /* 0 after an atom, 1 after a repetition, 2 after its lazy '?' */
    int have_atom = 0;  /* something a repetition could apply to */
    size_t n = strlen(p);
    for (size_t i = 0; i < n;) {
        char c = p[i];
        uint64_t copies = 0;
        size_t next = i + 1;
        if (c == '{') {
            next = read_interval(p, i, &copies);
            if (!next) { /* a literal brace */
                copies = 0;
                next = i + 1;
            }
        } else if (c == '+') {
            copies = 2; /* a+ is aa* */
        } else if (c == '*') {
            copies = 1;
        } else if (c == '?') {
            copies = 1;
        }
        if (copies) { /* a repetition */
            if (c == '?' && after == 1) { /* RE2's lazy marker: one, no copies */
                after = 2;
                i = next;
                continue;
            }
            if (after) {
                snprintf(err, errlen, "invalid nested repetition operator '%.*s' at offset %zu",
                         (int)(next - i + 1 < 8 ? next - i + 1 : 8), p + i - 1, i - 1);
                return -1;
            }
            if (!have_atom) { /* regcomp judges a leading repetition */
                i = next;
                continue;
            }
            if (c == '{' && copies > CB_REGEX_MAX_COPIES) {
                snprintf(err, errlen, "invalid repeat count %llu at offset %zu (at most %d)",
                         (unsigned long long)copies, i, CB_REGEX_MAX_COPIES);
                return -1;
            }
            uint64_t total = atom * copies;
            if (total > CB_REGEX_MAX_COPIES) {
                snprintf(err, errlen,
                         "repetitions nested too deep at offset %zu: the expression would make "
                         "more than %d copies of a part",
                         i, CB_REGEX_MAX_COPIES);
                return -1;
            }
            if (total > inner[depth])
                inner[depth] = total;
            after = 1;
            i = next;
            continue;
        }
        after = 0;
        have_atom = 1;
        atom = 1;
        if (c == '\\') {
            i += i + 1 < n ? 2 : 1;
        } else if (c == '[') {
            i = skip_bracket(p, i);
        } else if (c == '(') {
            if (depth == MAX_DEPTH) {
                snprintf(err, errlen, "groups nested deeper than %d at offset %zu", MAX_DEPTH, i);
                return -1;
            }
            inner[++depth] = 1;
            have_atom = 0;
            i++;
        } else if (c == ')' && depth > 0) {
            atom = inner[depth--]; /* the group is the atom a repetition may follow */
            if (atom > inner[depth])
                inner[depth] = atom;
            i++;
        } else if (c == '|') {
            have_atom = 0;
            i++;
        } else {
            i++;
        }
    }
    return 0;
}

int cb_regex_compile(regex_t *re, const char *pattern, int cflags, char *err, size_t errlen)
{
    if (cb_regex_check(pattern, err, errlen))
        return -1;
    int rc = regcomp(re, pattern, cflags);
    if (rc) {
        regerror(rc, re, err, errlen);
        return -1;
    }
    return 0;
}
