/* perq-worker: the process perqd spawns for one job (see proto/protocol.md). */
#include "commands.h"

int main(int argc, char **argv)
{
    return perq_cmd_worker(argc, argv);
}
