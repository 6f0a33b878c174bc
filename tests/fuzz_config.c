/* libFuzzer target: the configuration parser (base/config.c) must never
 * crash, leak or overflow on any file or `--set` argument, and its errors
 * must be positioned ("FILE:LINE: ..." or "--set: ...").
 *
 * Input: the file's bytes, then NUL-separated `--set KEY=VALUE` arguments
 * ("mqtt.qos = 1\n\0http.listen=off"). The file is read by the real
 * cb_config_load_file from an in-memory file (memfd), the arguments go
 * through cb_config_set_arg as `citybrain run` does, then the whole-config
 * check and the derived paths run, as at start-up. */
#include "base/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An error must say where: "PATH:LINE: ", "--set..." or an option name. */
static void check_error(const struct cb_config_error *err, const char *path)
{
    size_t n = strlen(err->text);
    if (n == 0 || n >= sizeof err->text)
        abort();
    if (strncmp(err->text, path, strlen(path)) != 0 && strncmp(err->text, "--set", 5) != 0 &&
        strchr(err->text, ':') == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t flen = nul ? (size_t)(nul - data) : size;
    int fd = memfd_create("fuzz.conf", MFD_CLOEXEC);
    if (fd < 0)
        abort();
    if (flen && write(fd, data, flen) != (ssize_t)flen)
        abort();
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);

    struct cb_config cfg;
    struct cb_config_error err = {{0}};
    if (cb_config_defaults(&cfg))
        abort();
    int bad = cb_config_load_file(&cfg, path, &err);
    if (bad)
        check_error(&err, path);
    /* The --set arguments: each NUL-terminated piece after the file. */
    for (size_t off = flen + 1; !bad && off < size;) {
        const uint8_t *end = memchr(data + off, '\0', size - off);
        size_t alen = end ? (size_t)(end - (data + off)) : size - off;
        char *arg = strndup((const char *)data + off, alen);
        if (!arg)
            abort();
        err.text[0] = '\0';
        bad = cb_config_set_arg(&cfg, arg, &err);
        if (bad)
            check_error(&err, path);
        free(arg);
        off += alen + 1;
    }
    if (!bad) {
        err.text[0] = '\0';
        if (cb_config_validate(&cfg, &err))
            check_error(&err, path);
        free(cb_config_journal_path(&cfg));
        free(cb_config_client_id(&cfg));
    }
    cb_config_free(&cfg);
    close(fd);
    return 0;
}
