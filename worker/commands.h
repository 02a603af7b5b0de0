/* The subcommands of the `perq` program; each returns the process exit status. */
#ifndef PERQ_COMMANDS_H
#define PERQ_COMMANDS_H

int perq_cmd_eval(int argc, char **argv);
int perq_cmd_tokenize(int argc, char **argv);
int perq_cmd_quantize(int argc, char **argv);
int perq_cmd_report(int argc, char **argv);
int perq_cmd_synth(int argc, char **argv);
int perq_cmd_worker(int argc, char **argv);

#endif
