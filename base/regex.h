/* Regular expressions that users write (silence matchers, PromQL's =~ and
 * !~), compiled by POSIX regcomp after a guard.
 *
 * glibc's regcomp expands a repetition by copying its operand: `a+` becomes
 * `aa*`, `a{3}` three copies. Stacked repetitions ("x+++…") or nested ones
 * ("((x+)+)+…", "(x{1000}){1000}") therefore take memory exponential in the
 * pattern: the PromQL fuzzer found a 160-byte selector that took 2 GB. The
 * guard refuses them before regcomp sees them, as Prometheus's RE2 does:
 * a repetition right after another ("invalid nested repetition operator";
 * one lazy `?` after a repetition is allowed, as in RE2), a count above
 * 1000, and repetitions whose copies, multiplied along their nesting, would
 * exceed 1000. */
#ifndef CB_BASE_REGEX_H
#define CB_BASE_REGEX_H

#include <regex.h>
#include <stddef.h>

#define CB_REGEX_MAX_COPIES 1000

/* 0 when the pattern is safe to compile, else -1 with the reason in err
 * ("invalid nested repetition operator '++' at offset 5"). */
int cb_regex_check(const char *pattern, char *err, size_t errlen);

/* cb_regex_check, then regcomp(re, pattern, cflags). 0, or -1 with the
 * reason (the guard's or regerror's) in err; re needs no regfree then. */
int cb_regex_compile(regex_t *re, const char *pattern, int cflags, char *err, size_t errlen);

#endif
