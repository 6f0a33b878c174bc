/* One validation for `check`, `run`, `run --check-config` and rule reloads
 * (cmd/validate.c): what `run` refuses, each of them refuses, in the same
 * words, so --check-config never approves what run would not start with. */
#ifndef CB_CMD_VALIDATE_H
#define CB_CMD_VALIDATE_H

#include <stddef.h>

#include "base/config.h"
#include "rules/rules.h"

/* Verdicts; each is also the exit code of check, run and --check-config. */
enum cmd_verdict { CMD_VALID = 0, CMD_INVALID = 1, CMD_NO_RULES = 2 };

/* Validates what run needs beyond the whole-config checks of
 * cb_config_validate (which the callers run first, on the same cfg):
 *   - the alert channels of cfg, with the built-in log, and
 *     alerts.default_notify (cb_channels_from_config); a problem is error
 *     E031 without a position, its file the configuration file (or
 *     "configuration" without one);
 *   - the rule files paths[0..npaths) compiled against those channels: a
 *     `notify` name no channel has is error E029 at its file:line:col, with a
 *     did-you-mean and the channels' names (and, without a configuration
 *     file, the advice to give --config FILE);
 *   - with require_rules, unless cfg->rules_allow_none: no rule at all is
 *     error E030 naming --rules, rules.path and rules.allow_none.
 * Every problem is appended to diags. Returns CMD_VALID with *rs (the caller
 * releases it), else CMD_INVALID or CMD_NO_RULES with *rs NULL. */
enum cmd_verdict cmd__validate(const struct cb_config *cfg, const char *const *paths,
                               size_t npaths, int require_rules, struct cb_diags *diags,
                               struct cb_ruleset **rs);

/* cmd__validate of the rules run loads (rules.path, that is --rules), with
 * require_rules: what run, run --check-config and every reload validate. */
enum cmd_verdict cmd__validate_run(const struct cb_config *cfg, struct cb_diags *diags,
                                   struct cb_ruleset **rs);

/* Writes the diagnostics to stderr as text (gcc style), or as one JSON array
 * when json is set. */
void cmd__print_diags(const struct cb_diags *d, int json);

#endif
