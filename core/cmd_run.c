/* PLACEHOLDER: replaced by the module that owns this command. */
#include "core/commands.h"
#include <stdio.h>
int cb_cmd_run(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain run: not built yet\n"); return 1; }
