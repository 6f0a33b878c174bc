/* Logging to stderr; see log.h. */
#include "base/log.h"
#include "base/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum cb_log_level cb_log_threshold = CB_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int cb_log_parse_level(const char *name, enum cb_log_level *out)
{
    for (int i = 0; i <= CB_LOG_DEBUG; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum cb_log_level)i;
            return 0;
        }
    }
    if (strcmp(name, "warning") == 0) {
        *out = CB_LOG_WARN;
        return 0;
    }
    return -1;
}

const char *cb_log_level_name(enum cb_log_level level)
{
    return level <= CB_LOG_DEBUG ? level_names[level] : "?";
}

/* Formats "2026-11-23T20:00:00.123Z warn  ingest: text" and writes it at once,
 * so lines from the Paho thread and the loop never interleave mid-line. */
static void vlog(enum cb_log_level level, const char *module, const char *prefix,
                 const char *fmt, va_list ap)
{
    char line[2048];
    int64_t now = cb_wall_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s %s: %s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(now % 1000), cb_log_level_name(level), module,
                     prefix ? prefix : "");
    if (n < 0)
        return;
    if ((size_t)n < sizeof line) {
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof line - 1)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void cb_log_write(enum cb_log_level level, const char *module, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, module, NULL, fmt, ap);
    va_end(ap);
}

void cb_log_limited(struct cb_ratelimit *rl, enum cb_log_level level, const char *module,
                    const char *fmt, ...)
{
    if (level > cb_log_threshold)
        return;
    int64_t now = cb_mono_ms();
    uint64_t held = 0;
    int pass = 0;
    while (__atomic_exchange_n(&rl->lock, 1, __ATOMIC_ACQUIRE))
        ;
    if (rl->window_start == 0 || now - rl->window_start >= rl->interval_ms) {
        rl->window_start = now;
        rl->used = 0;
    }
    if (rl->used < rl->burst) {
        rl->used++;
        pass = 1;
        held = rl->suppressed;
        rl->suppressed = 0;
    } else {
        rl->suppressed++;
    }
    __atomic_store_n(&rl->lock, 0, __ATOMIC_RELEASE);
    if (!pass)
        return;
    char prefix[64] = "";
    if (held)
        snprintf(prefix, sizeof prefix, "(%llu similar suppressed) ", (unsigned long long)held);
    va_list ap;
    va_start(ap, fmt);
    vlog(level, module, prefix, fmt, ap);
    va_end(ap);
}
