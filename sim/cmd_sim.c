/* PLACEHOLDER: replaced by the module that owns this command. */
#include "core/commands.h"
#include <stdio.h>
int cb_cmd_sim(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain sim: not built yet\n"); return 1; }
