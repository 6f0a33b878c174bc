/* One validation for check, run, run --check-config and reload; see
 * validate.h. The channels come from alerts/ (cb_channels_from_config, which
 * cb_alerts_new uses too), the rules from rules/ compiled against the
 * channels' names, so a `notify` typo is found where the rule is written, not
 * at the first alert that should have reached the duty team. */
#include "cmd/validate.h"
#include "alerts/alerts.h"
#include "base/strbuf.h"

#include <stdio.h>
#include <stdlib.h>

/* Appends the channel names of the E029 message: where they come from, the
 * names, and without a configuration file the advice to give one. */
static void channels_note(const struct cb_config *cfg, const char *const *names, size_t n,
                          struct cb_strbuf *out)
{
    if (cfg->config_file)
        cb_strbuf_printf(out, "channels of %s:", cfg->config_file);
    else
        cb_strbuf_puts(out, "channels without --config (the built-in defaults):");
    for (size_t i = 0; i < n; i++)
        cb_strbuf_printf(out, "%s %s", i ? "," : "", names[i]);
    if (!cfg->config_file)
        cb_strbuf_puts(out, "; give --config FILE to check against your configuration");
}

/* E030: the words name every way out (--rules, rules.path, rules.allow_none). */
static void no_rules(const char *const *paths, size_t npaths, struct cb_diags *diags)
{
    struct cb_strbuf where;
    cb_strbuf_init(&where);
    for (size_t i = 0; i < npaths; i++)
        cb_strbuf_printf(&where, "%s%s", i ? ", " : "", paths[i]);
    const char *hint = "to run without rules on purpose, set rules.allow_none = true";
    if (npaths)
        cb_diags_add(diags, CB_DIAG_ERROR, "E030", where.oom ? "rules.path" : where.data, hint,
                     "no rules to run: no rule in %s (a directory needs *.rules files); give "
                     "--rules PATH or set rules.path to where the rules are",
                     npaths == 1 ? "this path" : "these paths");
    else
        cb_diags_add(diags, CB_DIAG_ERROR, "E030", "rules.path", hint,
                     "no rules to run: give --rules PATH or set rules.path in the configuration");
    cb_strbuf_free(&where);
}

enum cmd_verdict cmd__validate(const struct cb_config *cfg, const char *const *paths,
                               size_t npaths, int require_rules, struct cb_diags *diags,
                               struct cb_ruleset **rs)
{
    struct cb_channel *ch = NULL;
    size_t nch = 0;
    const char **names = NULL;
    struct cb_strbuf note;
    char err[600];
    enum cmd_verdict v = CMD_INVALID;
    *rs = NULL;
    cb_strbuf_init(&note);
    if (cb_channels_from_config(cfg, &ch, &nch, err, sizeof err)) {
        cb_diags_add(diags, CB_DIAG_ERROR, "E031",
                     cfg->config_file ? cfg->config_file : "configuration", NULL, "%s", err);
        goto out;
    }
    names = calloc(nch, sizeof *names);
    if (!names) {
        cb_diags_add(diags, CB_DIAG_ERROR, "E099", "configuration", NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nch; i++)
        names[i] = ch[i].name;
    channels_note(cfg, names, nch, &note);
    struct cb_rules_opts opts = {.check_notify = 1, .channels = names, .nchannels = nch,
                                 .channels_note = note.oom ? NULL : note.data};
    *rs = cb_ruleset_compile_opts(paths, npaths, &opts, diags);
    if (!*rs)
        goto out;
    if (require_rules && !cfg->rules_allow_none && cb_ruleset_count(*rs) == 0) {
        no_rules(paths, npaths, diags);
        cb_ruleset_release(*rs);
        *rs = NULL;
        v = CMD_NO_RULES;
        goto out;
    }
    v = CMD_VALID;
out:
    cb_strbuf_free(&note);
    free(names);
    cb_channels_free(ch, nch);
    return v;
}

enum cmd_verdict cmd__validate_run(const struct cb_config *cfg, struct cb_diags *diags,
                                   struct cb_ruleset **rs)
{
    return cmd__validate(cfg, (const char *const *)cfg->rules_paths.items, cfg->rules_paths.n, 1,
                         diags, rs);
}

void cmd__print_diags(const struct cb_diags *d, int json)
{
    struct cb_strbuf b;
    cb_strbuf_init(&b);
    if (json) {
        cb_diags_render_json(d, &b);
        cb_strbuf_putc(&b, '\n');
    } else {
        cb_diags_render_text(d, &b);
    }
    if (b.len)
        fwrite(b.data, 1, b.len, stderr);
    cb_strbuf_free(&b);
}
