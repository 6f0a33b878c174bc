/* PLACEHOLDER: replaced by the module that owns this command. */
#include "core/commands.h"
#include <stdio.h>
int cb_cmd_ack(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain ack: not built yet\n"); return 1; }
int cb_cmd_alerts(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "citybrain alerts: not built yet\n"); return 1; }
