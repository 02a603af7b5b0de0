/* splitmix64 (Steele, Lea, Flood 2014): a 64-bit counter through a mixer.
 * The one seeded generator of the worker: calibration offsets, random
 * permutations, random orthogonal factors and random signs all draw from it,
 * so a seed means the same stream everywhere. */
#ifndef PERQ_WORKER_SPLITMIX64_H
#define PERQ_WORKER_SPLITMIX64_H

#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
