/* shards.h: data parallelism on the CPU. A small model's operations are too small to divide
 * between threads (the tiny preset on 2 cores trains no faster on 2 threads than on 1), whole
 * samples are not: with T threads and a batch that T divides, T nets of B / T samples each
 * (fine_net_set_shard) run side by side, one per thread, and every operation inside a shard
 * runs on its thread alone. The trainer (train.h) and the predictor (infer.h) use it. */
#ifndef FINE_NN_SHARDS_H
#define FINE_NN_SHARDS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FINE_MAX_SHARDS 64

typedef struct fine_backend fine_backend;

/* Shards for a batch of B on backend be: the thread count (omp_get_max_threads) when it is
 * above 1 and divides B, else 1 (also on device backends). */
int fine_shard_count(const fine_backend *be, int B);

/* Runs fn(args + i * size) for i in [0, n), n <= FINE_MAX_SHARDS, each on a thread started and
 * joined here whose OpenMP loops and sgemm calls stay on it; a thread that cannot be started
 * has its call made here. Not an OpenMP team: a shard's operations open OpenMP regions of
 * their own, and nested inside a team's first thread they cost that shard about a third more
 * time than the others (measured, tiny on 2 cores). */
void fine_run_shards(int n, void (*fn)(void *arg), void *args, size_t size);

#ifdef __cplusplus
}
#endif

#endif
