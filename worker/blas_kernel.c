/* Picks the fastest OpenBLAS kernel set the CPU supports (see perq/blas.h). */
#include "perq/blas.h"

#include <cblas.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define REEXEC_GUARD "PERQ_BLAS_REEXEC"

/* Kernel sets by sgemm speed. Cooperlake and SapphireRapids add bf16 kernels
 * but run the SkylakeX sgemm, so switching among them gains nothing. */
static const struct {
    const char *name;
    int rank;
} core_ranks[] = {
    {"SapphireRapids", 3}, {"Cooperlake", 3}, {"SkylakeX", 3},
    {"Haswell", 2}, {"Zen", 2},
    {"Sandybridge", 1}, {"Excavator", 1}, {"Steamroller", 1}, {"Piledriver", 1}, {"Bulldozer", 1},
    {"Nehalem", 0}, {"Penryn", 0}, {"Dunnington", 0}, {"Core2", 0}, {"Prescott", 0},
    {"Barcelona", 0}, {"Opteron", 0}, {"Atom", 0}, {"Nano", 0}, {"Bobcat", 0},
};

int perq_blas_core_rank(const char *core)
{
    if (!core)
        return -1;
    for (size_t i = 0; i < sizeof core_ranks / sizeof core_ranks[0]; i++)
        if (!strcasecmp(core, core_ranks[i].name))
            return core_ranks[i].rank;
    return -1;
}

const char *perq_blas_best_core(void)
{
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (avx512 && __builtin_cpu_supports("avx512bf16"))
        return "Cooperlake";
    if (avx512)
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
    if (__builtin_cpu_supports("avx"))
        return "Sandybridge";
    return NULL;
}

const char *perq_blas_core(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

int perq_blas_threads(void)
{
    return openblas_get_num_threads();
}

static int usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void choose_threads(void)
{
    if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS"))
        return;
    openblas_set_num_threads(usable_cpus());
}

/* OpenMP threads (attention, norms) and OpenBLAS threads (sgemm) take turns on
 * the same cores. libgomp's default is to spin for a long while after each
 * parallel region, stealing the core from the OpenBLAS thread that runs next;
 * a passive wait gives it back at once. libgomp reads the policy only at
 * start-up, like OpenBLAS its kernel. */
static int want_passive_omp(void)
{
    return !getenv("OMP_WAIT_POLICY") && !getenv("GOMP_SPINCOUNT");
}

/* This process's arguments from /proc/self/cmdline, for callers that no longer
 * have main's argv; NULL when unreadable. Free with free_argv. */
static char **own_argv(void)
{
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t got = 0;
    while (buf && (got = read(fd, buf + len, cap - len)) > 0) {
        len += (size_t)got;
        if (len == cap) {
            char *bigger = realloc(buf, 2 * cap + 1);
            if (!bigger)
                free(buf);
            buf = bigger;
            cap *= 2;
        }
    }
    close(fd);
    if (!buf || got < 0 || len == 0) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += buf[i] == '\0';
    char **argv = calloc(n + 2, sizeof *argv);
    if (!argv) {
        free(buf);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; i += strlen(buf + i) + 1)
        argv[k++] = buf + i;
    return argv;
}

static void free_argv(char **argv)
{
    if (argv)
        free(argv[0]);
    free(argv);
}

void perq_blas_choose_kernel(int argc, char **argv)
{
    const char *best = perq_blas_best_core();
    const char *current = perq_blas_core();
    /* An unknown name may be a kernel newer than this table: leave it alone. */
    int current_rank = perq_blas_core_rank(current);
    int better_kernel = !getenv("OPENBLAS_CORETYPE") && best && current_rank >= 0 &&
                        perq_blas_core_rank(best) > current_rank;
    int passive = want_passive_omp();
    if (!getenv(REEXEC_GUARD) && (better_kernel || passive)) {
        char **read_argv = argc <= 0 || !argv ? own_argv() : NULL;
        if (read_argv)
            argv = read_argv;
        if (argv) {
            if (better_kernel)
                setenv("OPENBLAS_CORETYPE", best, 1);
            if (passive)
                setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
            setenv(REEXEC_GUARD, current, 1);
            execv("/proc/self/exe", argv);
            /* Still here: carry on as we are. */
            if (better_kernel)
                unsetenv("OPENBLAS_CORETYPE");
            if (passive)
                unsetenv("OMP_WAIT_POLICY");
            unsetenv(REEXEC_GUARD);
        }
        free_argv(read_argv);
    }
    choose_threads();
}
