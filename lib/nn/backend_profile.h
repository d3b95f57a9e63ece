/* backend_profile.h: a backend that runs another one and times each of its calls, to see where a
 * training step or an inference pass spends its time (fine-train, fine-infer and bench/gpu
 * --profile).
 *
 * Every layer and memory call is passed to the inner backend, then the inner backend's sync()
 * is waited for, so a device call is timed to its completion, not to its queueing; that costs
 * the overlap of launches with work, so a profiled run is slower than a plain one, most where
 * calls are small. Results are the inner backend's, bit for bit. Calls from several threads
 * (the CPU shards) are counted together: their seconds add up over threads. Planning calls
 * (the *_scratch queries), alloc and free are passed through untimed. */
#ifndef FINE_NN_BACKEND_PROFILE_H
#define FINE_NN_BACKEND_PROFILE_H

#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "nn/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A profiling backend over inner, which it then owns: fine_backend_close on it closes inner
 * too. NULL with e set when out of memory (inner is then still the caller's). */
fine_backend *fine_backend_profile_open(fine_backend *inner, fine_err *e);
/* 1 when be was made by fine_backend_profile_open. */
int fine_backend_is_profile(const fine_backend *be);
/* on 0: calls pass through untimed and unbooked (no wait), on 1 (the default): timed again.
 * Call it while no other thread is calling the backend. */
void fine_profile_enable(fine_backend *be, int on);
/* Forgets what was counted (after a warm-up, say). */
void fine_profile_reset(fine_backend *be);
/* The calls counted for one slot of the table (its field name in backend.h, e.g.
 * "linear_forward"), and their seconds and FLOPs (the products of the convolutions, linear
 * layers and attention; 0 for the others); -1 when no slot has that name. */
int64_t fine_profile_calls(const fine_backend *be, const char *slot, double *seconds, double *flops);
/* Writes the table to f: one line per slot that was called, most time first, with calls,
 * seconds, share, milliseconds per call and GFLOP/s where the slot counts FLOPs; `title` heads
 * it. Lines start with '#' or a slot name. */
void fine_profile_print(const fine_backend *be, FILE *f, const char *title);

#ifdef __cplusplus
}
#endif

#endif
