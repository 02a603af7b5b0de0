/* Channel permutations: MassDiff, zigzag, random, identity, and applying them
 * (see perq/permute.h). */
#include "perq/permute.h"
#include "splitmix64.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Below this many floats a permutation of columns runs on one thread. */
#define PARALLEL_MIN_FLOATS (1 << 16)

typedef struct {
    float mass;
    int channel;
} ranked;

/* Heaviest first, ties by lower channel index. */
static int heaviest_first(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->mass != b->mass)
        return a->mass > b->mass ? -1 : 1;
    return (a->channel > b->channel) - (a->channel < b->channel);
}

/* Checks the arguments shared by MassDiff and zigzag and returns the channels
 * ranked heaviest first (the caller frees), or NULL with err set. */
static ranked *rank_channels(const float *mass, int d, int block, const char *what, perq_err *err)
{
    if (d < 1 || block < 1 || d % block != 0) {
        perq_fail(err, PERQ_E_INVALID, "%s: %d channels cannot be cut into blocks of %d", what, d, block);
        return NULL;
    }
    for (int i = 0; i < d; i++)
        if (!isfinite(mass[i]) || mass[i] < 0) {
            perq_fail(err, PERQ_E_INVALID, "%s: channel %d has mass %g (must be finite and >= 0)", what, i,
                      (double)mass[i]);
            return NULL;
        }
    ranked *order = malloc((size_t)d * sizeof *order);
    if (!order) {
        perq_fail(err, PERQ_E_NOMEM, "%s of %d channels", what, d);
        return NULL;
    }
    for (int i = 0; i < d; i++)
        order[i] = (ranked){mass[i], i};
    qsort(order, (size_t)d, sizeof *order, heaviest_first);
    return order;
}

/* ---- MassDiff ------------------------------------------------------------ */

/* A min-heap of the blocks that are not full, by (mass, block index). */
typedef struct {
    int *block;          /* heap of block indices */
    int size;
    const double *mass;  /* current mass of each block */
} block_heap;

static int lighter(const block_heap *h, int a, int b)
{
    if (h->mass[a] != h->mass[b])
        return h->mass[a] < h->mass[b];
    return a < b;
}

static void sift_down(block_heap *h, int at)
{
    for (;;) {
        int smallest = at, left = 2 * at + 1, right = left + 1;
        if (left < h->size && lighter(h, h->block[left], h->block[smallest]))
            smallest = left;
        if (right < h->size && lighter(h, h->block[right], h->block[smallest]))
            smallest = right;
        if (smallest == at)
            return;
        int t = h->block[at];
        h->block[at] = h->block[smallest];
        h->block[smallest] = t;
        at = smallest;
    }
}

int perq_permute_massdiff(const float *mass, int d, int block, int *perm, perq_err *err)
{
    ranked *order = rank_channels(mass, d, block, "MassDiff", err);
    if (!order)
        return -1;
    int n = d / block;
    double *block_mass = malloc((size_t)n * sizeof *block_mass);
    int *filled = malloc((size_t)n * sizeof *filled);
    int *heap_store = malloc((size_t)n * sizeof *heap_store);
    if (!block_mass || !filled || !heap_store) {
        free(order), free(block_mass), free(filled), free(heap_store);
        return perq_fail(err, PERQ_E_NOMEM, "MassDiff of %d channels", d);
    }
    /* Seeds: block j gets the j-th heaviest. */
    for (int j = 0; j < n; j++) {
        block_mass[j] = order[j].mass;
        filled[j] = 1;
        perm[j * block] = order[j].channel;
        heap_store[j] = j;
    }
    block_heap heap = {heap_store, block > 1 ? n : 0, block_mass};
    for (int at = heap.size / 2 - 1; at >= 0; at--)
        sift_down(&heap, at);
    for (int k = n; k < d; k++) {
        int j = heap.block[0];
        perm[j * block + filled[j]++] = order[k].channel;
        block_mass[j] += order[k].mass;
        if (filled[j] == block)
            heap.block[0] = heap.block[--heap.size];
        sift_down(&heap, 0);
    }
    free(order), free(block_mass), free(filled), free(heap_store);
    return 0;
}

/* ---- the baselines ------------------------------------------------------- */

int perq_permute_zigzag(const float *absmax, int d, int block, int *perm, perq_err *err)
{
    ranked *order = rank_channels(absmax, d, block, "zigzag", err);
    if (!order)
        return -1;
    int n = d / block;
    for (int r = 0; r < d; r++) {
        int round = r / n, pos = r % n;
        int j = (round % 2 == 0) ? pos : n - 1 - pos;
        perm[j * block + round] = order[r].channel;
    }
    free(order);
    return 0;
}

void perq_permute_identity(int *perm, int d)
{
    for (int i = 0; i < d; i++)
        perm[i] = i;
}

/* Uniform in [0, range) from the high 32 bits of each draw (Lemire 2019). */
static uint32_t uniform_below(uint64_t *state, uint32_t range)
{
    uint64_t product = (splitmix64(state) >> 32) * (uint64_t)range;
    uint32_t low = (uint32_t)product;
    if (low < range) {
        uint32_t threshold = (uint32_t)(-range) % range;
        while (low < threshold) {
            product = (splitmix64(state) >> 32) * (uint64_t)range;
            low = (uint32_t)product;
        }
    }
    return (uint32_t)(product >> 32);
}

void perq_permute_random(int *perm, int d, uint64_t seed)
{
    uint64_t state = seed;
    perq_permute_identity(perm, d);
    for (int i = d - 1; i > 0; i--) {
        int j = (int)uniform_below(&state, (uint32_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* ---- checks and statistics ----------------------------------------------- */

int perq_permute_is_bijection(const int *perm, int d)
{
    if (d < 1)
        return 0;
    char *seen = calloc((size_t)d, 1);
    if (!seen)
        return 0;
    int ok = 1;
    for (int k = 0; k < d && ok; k++) {
        ok = perm[k] >= 0 && perm[k] < d && !seen[perm[k]];
        if (ok)
            seen[perm[k]] = 1;
    }
    free(seen);
    return ok;
}

void perq_permute_inverse(const int *perm, int d, int *inv)
{
    for (int k = 0; k < d; k++)
        inv[perm[k]] = k;
}

void perq_permute_block_masses(const float *mass, const int *perm, int d, int block, double *out)
{
    for (int j = 0; j < d / block; j++) {
        double sum = 0;
        for (int k = j * block; k < (j + 1) * block; k++)
            sum += mass[perm[k]];
        out[j] = sum;
    }
}

double perq_permute_mass_ratio(const float *mass, const int *perm, int d, int block)
{
    int n = d / block;
    double total = 0, largest = 0;
    for (int j = 0; j < n; j++) {
        double sum = 0;
        for (int k = j * block; k < (j + 1) * block; k++)
            sum += mass[perm[k]];
        total += sum;
        if (sum > largest)
            largest = sum;
    }
    return total > 0 ? largest / (total / n) : 1.0;
}

/* ---- applying ------------------------------------------------------------ */

int perq_permute_columns(float *x, size_t rows, int cols, const int *perm, perq_err *err)
{
    if (!perq_permute_is_bijection(perm, cols))
        return perq_fail(err, PERQ_E_INVALID, "not a permutation of %d columns", cols);
    int threads = (rows * (size_t)cols >= PARALLEL_MIN_FLOATS && rows > 1) ? omp_get_max_threads() : 1;
    float *scratch = malloc((size_t)threads * (size_t)cols * sizeof *scratch);
    if (!scratch)
        return perq_fail(err, PERQ_E_NOMEM, "permuting %d columns", cols);
    long n_rows = (long)rows;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < n_rows; r++) {
        float *row = x + (size_t)r * (size_t)cols;
        float *copy = scratch + (size_t)omp_get_thread_num() * (size_t)cols;
        memcpy(copy, row, (size_t)cols * sizeof *copy);
        for (int k = 0; k < cols; k++)
            row[k] = copy[perm[k]];
    }
    free(scratch);
    return 0;
}

int perq_permute_rows(float *x, int rows, size_t cols, const int *perm, perq_err *err)
{
    if (!perq_permute_is_bijection(perm, rows))
        return perq_fail(err, PERQ_E_INVALID, "not a permutation of %d rows", rows);
    char *done = calloc((size_t)rows, 1);
    float *held = malloc(cols * sizeof *held);
    if (!done || !held) {
        free(done), free(held);
        return perq_fail(err, PERQ_E_NOMEM, "permuting %d rows", rows);
    }
    size_t bytes = cols * sizeof *held;
    /* Row k takes row perm[k]: along a cycle s -> perm[s] -> ..., each row is
     * overwritten by the next one, and the last by the first, held aside. */
    for (int s = 0; s < rows; s++) {
        if (done[s])
            continue;
        done[s] = 1;
        if (perm[s] == s)
            continue;
        memcpy(held, x + (size_t)s * cols, bytes);
        int k = s;
        while (perm[k] != s) {
            memcpy(x + (size_t)k * cols, x + (size_t)perm[k] * cols, bytes);
            k = perm[k];
            done[k] = 1;
        }
        memcpy(x + (size_t)k * cols, held, bytes);
    }
    free(done), free(held);
    return 0;
}
