/* rng.h: the project's one random number generator, xoshiro256** (Blackman and Vigna),
 * seeded through splitmix64. Every random choice in fine (sampling, augmentation,
 * initialisation) draws from a fine_rng passed explicitly; there is no global generator.
 *
 * The state is 32 bytes and can be saved and restored exactly (a checkpoint stores it), so
 * a restored generator continues the very same sequence. fine_rng_seed_stream derives
 * independent generators from (seed, stream number), which is how a tool makes its output
 * independent of its thread count: batch b always draws from stream b. */
#ifndef FINE_RNG_H
#define FINE_RNG_H

#include <stdint.h>

#include "error.h"

typedef struct fine_rng {
    uint64_t s[4];
} fine_rng;

#define FINE_RNG_STATE_BYTES 32

/* Seeds r from one 64-bit number (any value, 0 included). */
void fine_rng_seed(fine_rng *r, uint64_t seed);
/* Seeds r for stream `stream` of seed `seed`: generators of different (seed, stream) pairs
 * start at unrelated points (both are hashed with splitmix64). */
void fine_rng_seed_stream(fine_rng *r, uint64_t seed, uint64_t stream);

/* The next 64 random bits. */
uint64_t fine_rng_u64(fine_rng *r);
/* Uniform double in [0, 1), 53 random bits. */
double fine_rng_uniform(fine_rng *r);
/* Uniform double in [lo, hi) (lo when lo == hi). */
double fine_rng_range(fine_rng *r, double lo, double hi);
/* Uniform integer in [0, n), unbiased (Lemire's method); 0 when n == 0. */
uint64_t fine_rng_below(fine_rng *r, uint64_t n);
/* Uniform integer in [lo, hi], both included; lo when hi <= lo. */
int64_t fine_rng_int(fine_rng *r, int64_t lo, int64_t hi);
/* Standard normal (Marsaglia's polar method; the pair's second value is dropped, so the
 * state stays the 32 bytes above). */
double fine_rng_normal(fine_rng *r);
/* x[i] += mean + std * N(0,1) for i in [0, n), using both values of each polar pair. */
void fine_rng_add_normal_f32(fine_rng *r, float *x, int64_t n, double mean, double std);

/* The state as 32 bytes (four little-endian 64-bit words), and back. Restoring fails (-1, e
 * set) on the all-zero state, which xoshiro cannot leave and no seed produces. */
void fine_rng_save(const fine_rng *r, uint8_t out[FINE_RNG_STATE_BYTES]);
int fine_rng_restore(fine_rng *r, const uint8_t in[FINE_RNG_STATE_BYTES], fine_err *e);

#endif
