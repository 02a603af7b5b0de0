/* OpenBLAS kernel and thread choice.
 *
 * Debian's OpenBLAS is built with DYNAMIC_ARCH: at load time it picks one set
 * of kernels by CPU model, and a CPU it does not know (Zen 5 with 0.3.21, say)
 * gets the Haswell kernels although it runs AVX-512 code, where the SkylakeX
 * kernels are much faster in sgemm. The only switch is the environment variable
 * OPENBLAS_CORETYPE, read when the library is loaded, so a program that wants a
 * better kernel has to set it and execute itself again. */
#ifndef PERQ_BLAS_H
#define PERQ_BLAS_H

/* Call first thing in main(), before any thread exists. Re-executes
 * /proc/self/exe once with the same arguments (PERQ_BLAS_REEXEC guards against
 * loops; the pid and open file descriptors are kept) when the environment
 * should change:
 *   - OPENBLAS_CORETYPE unset and the CPU supports a better kernel family than
 *     the one OpenBLAS picked: it is set to that family;
 *   - OMP_WAIT_POLICY and GOMP_SPINCOUNT unset: OMP_WAIT_POLICY=PASSIVE, so
 *     that OpenMP threads idling between parallel regions do not spin on the
 *     cores OpenBLAS's threads need (libgomp spins for milliseconds by default).
 * argc 0 and argv NULL: the arguments are read from /proc/self/cmdline (for a
 * subcommand that no longer has main's argv; a second call after main's is
 * harmless). Returns when nothing needs to change or the re-execution failed.
 * Then sets
 * the OpenBLAS thread count to the CPUs this process may run on, unless
 * OPENBLAS_NUM_THREADS or OMP_NUM_THREADS says otherwise. */
void perq_blas_choose_kernel(int argc, char **argv);

/* The kernel set in use ("SkylakeX", "Haswell", ...), as OpenBLAS names it. */
const char *perq_blas_core(void);
/* The best kernel set the CPU's features allow ("Cooperlake", "SkylakeX",
 * "Haswell", "Sandybridge"), or NULL when none of these. */
const char *perq_blas_best_core(void);
/* Rank of a kernel set for sgemm (higher is faster; kernel sets with the same
 * sgemm code share a rank), -1 for a name not known here. Case-insensitive. */
int perq_blas_core_rank(const char *core);
int perq_blas_threads(void);

#endif
