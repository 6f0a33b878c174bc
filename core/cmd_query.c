/* PLACEHOLDER: replaced by the module that owns this command. */
#include "core/commands.h"
#include <stdio.h>
int cb_cmd_query(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain query: not built yet\n"); return 1; }
