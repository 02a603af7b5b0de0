/* The OpenBLAS kernel choice: ranking of kernel families and the CPU's best. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perq/blas.h"

static void test_core_ranks(void **state)
{
    (void)state;
    /* Same sgemm code: same rank. */
    assert_int_equal(perq_blas_core_rank("SkylakeX"), perq_blas_core_rank("Cooperlake"));
    assert_int_equal(perq_blas_core_rank("Haswell"), perq_blas_core_rank("Zen"));
    assert_true(perq_blas_core_rank("SkylakeX") > perq_blas_core_rank("Haswell"));
    assert_true(perq_blas_core_rank("Haswell") > perq_blas_core_rank("Sandybridge"));
    assert_true(perq_blas_core_rank("Sandybridge") > perq_blas_core_rank("Core2"));
    assert_int_equal(perq_blas_core_rank("skylakex"), perq_blas_core_rank("SkylakeX"));
    /* Unknown names (perhaps newer kernels) are left alone. */
    assert_int_equal(perq_blas_core_rank("NeoverseV2"), -1);
    assert_int_equal(perq_blas_core_rank(NULL), -1);
}

static void test_best_core_follows_cpu_features(void **state)
{
    (void)state;
    __builtin_cpu_init();
    const char *best = perq_blas_best_core();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (avx512 && __builtin_cpu_supports("avx512bf16"))
        assert_string_equal(best, "Cooperlake");
    else if (avx512)
        assert_string_equal(best, "SkylakeX");
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        assert_string_equal(best, "Haswell");
    if (best)
        assert_true(perq_blas_core_rank(best) >= 1);
}

static void test_core_in_use_is_named(void **state)
{
    (void)state;
    const char *core = perq_blas_core();
    assert_non_null(core);
    assert_true(strlen(core) > 0);
    assert_true(perq_blas_threads() >= 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_core_ranks),
        cmocka_unit_test(test_best_core_follows_cpu_features),
        cmocka_unit_test(test_core_in_use_is_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
