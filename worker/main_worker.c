/* perq-worker: the process perqd spawns for one job (see proto/protocol.md). */
#include "commands.h"
#include "perq/blas.h"

int main(int argc, char **argv)
{
    perq_blas_choose_kernel(argc, argv);
    return perq_cmd_worker(argc, argv);
}
