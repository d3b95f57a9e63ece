/* shards.c: threads for the data-parallel shards of a batch (shards.h). */
#include "nn/shards.h"

#include <omp.h>
#include <pthread.h>

#include "nn/backend.h"

int fine_shard_count(const fine_backend *be, int B)
{
    int T = omp_get_max_threads();
    if (be->is_device || T <= 1 || T > FINE_MAX_SHARDS || B % T != 0)
        return 1;
    return T;
}

typedef struct shard_call {
    void (*fn)(void *arg);
    void *arg;
} shard_call;

static void *shard_thread(void *p)
{
    const shard_call *c = p;
    omp_set_num_threads(1); /* this thread's ICV only: its OpenMP loops and sgemm stay on it */
    c->fn(c->arg);
    return NULL;
}

void fine_run_shards(int n, void (*fn)(void *arg), void *args, size_t size)
{
    shard_call call[FINE_MAX_SHARDS];
    pthread_t th[FINE_MAX_SHARDS];
    int started[FINE_MAX_SHARDS];
    for (int i = 0; i < n; i++) {
        call[i] = (shard_call){fn, (char *)args + (size_t)i * size};
        started[i] = pthread_create(&th[i], NULL, shard_thread, &call[i]) == 0;
    }
    for (int i = 0; i < n; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        else
            fn(call[i].arg);
    }
}
