/* PLACEHOLDER: replaced by the module that owns this command. */
#include "core/commands.h"
#include <stdio.h>
int cb_cmd_check(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain check: not built yet\n"); return 1; }
int cb_cmd_replay(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain replay: not built yet\n"); return 1; }
int cb_cmd_test(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain test: not built yet\n"); return 1; }
