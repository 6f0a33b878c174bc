/* Logging: levels, timestamps and the module that speaks, one line per event on
 * stderr (journald keeps stderr lines as they are). Safe from any thread: each
 * line is formatted into a local buffer and written with one write(2).
 *
 * The level is checked before the arguments are formatted (cb_log is a macro),
 * so a disabled debug line costs one comparison. Per-message events are never
 * logged at info; floods of bad input go through cb_log_limited. */
#ifndef CB_BASE_LOG_H
#define CB_BASE_LOG_H

#include <stdint.h>

enum cb_log_level { CB_LOG_ERROR = 0, CB_LOG_WARN, CB_LOG_INFO, CB_LOG_DEBUG };

extern enum cb_log_level cb_log_threshold;

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 when unknown. */
int cb_log_parse_level(const char *name, enum cb_log_level *out);
const char *cb_log_level_name(enum cb_log_level level);

void cb_log_write(enum cb_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define cb_log(level, module, ...)                                                    \
    do {                                                                              \
        if ((level) <= cb_log_threshold)                                              \
            cb_log_write((level), (module), __VA_ARGS__);                             \
    } while (0)
#define cb_error(module, ...) cb_log(CB_LOG_ERROR, module, __VA_ARGS__)
#define cb_warn(module, ...)  cb_log(CB_LOG_WARN, module, __VA_ARGS__)
#define cb_info(module, ...)  cb_log(CB_LOG_INFO, module, __VA_ARGS__)
#define cb_debug(module, ...) cb_log(CB_LOG_DEBUG, module, __VA_ARGS__)

/* A rate limit for one kind of warning: at most `burst` lines per `interval_ms`;
 * what was held back is counted and reported in the next line that passes.
 * Zero-initialise, then set burst and interval_ms. Thread-safe. */
struct cb_ratelimit {
    unsigned burst;
    int64_t interval_ms;
    /* private */
    int64_t window_start;
    unsigned used;
    uint64_t suppressed;
    int lock; /* spin flag */
};

void cb_log_limited(struct cb_ratelimit *rl, enum cb_log_level level, const char *module,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
