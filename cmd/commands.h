/* The subcommands of the citybrain binary. Each takes the arguments after its
 * name (argv[0] is the command name) and returns the process exit code:
 * 0 success, 1 failure (errors found, mismatches, runtime failure), 2 usage. */
#ifndef CB_CMD_COMMANDS_H
#define CB_CMD_COMMANDS_H

int cb_cmd_run(int argc, char **argv);     /* cmd/cmd_run.c: the daemon */
int cb_cmd_check(int argc, char **argv);   /* cmd/cmd_rules.c */
int cb_cmd_replay(int argc, char **argv);  /* cmd/cmd_rules.c */
int cb_cmd_test(int argc, char **argv);    /* cmd/cmd_rules.c */
int cb_cmd_query(int argc, char **argv);   /* cmd/cmd_query.c */
int cb_cmd_ack(int argc, char **argv);
int cb_cmd_close(int argc, char **argv);     /* cmd/cmd_alerts.c */
int cb_cmd_alerts(int argc, char **argv);  /* cmd/cmd_alerts.c: list, handover */
int cb_cmd_history(int argc, char **argv); /* cmd/cmd_alerts.c: the transition log */
int cb_cmd_audit(int argc, char **argv);   /* cmd/cmd_alerts.c: the audit log */
int cb_cmd_silence(int argc, char **argv); /* cmd/cmd_silence.c: add, list, expire */
int cb_cmd_sensors(int argc, char **argv); /* cmd/cmd_sensors.c */
int cb_cmd_sim(int argc, char **argv);     /* cmd/cmd_sim.c */
int cb_cmd_config_example(int argc, char **argv); /* cmd/main.c */

#endif
