/* backend.c: choosing a backend by name (--device). The CUDA backend exists only in builds with
 * FINE_HAVE_CUDA (make finds nvcc and cuDNN); elsewhere "cuda" is a clear error. */
#include "nn/backend.h"

#include <stdlib.h>
#include <string.h>

#ifdef FINE_HAVE_CUDA
fine_backend *fine_cuda_backend_open(int device, fine_err *e);
void fine_cuda_backend_close(fine_backend *be);
#endif

/* Parses "cuda" or "cuda:N" into N; -1 when name is not of that form. */
static int cuda_index(const char *name)
{
    if (strcmp(name, "cuda") == 0)
        return 0;
    if (strncmp(name, "cuda:", 5) != 0 || !name[5])
        return -1;
    char *end;
    long v = strtol(name + 5, &end, 10);
    if (*end || v < 0 || v > 1024)
        return -1;
    return (int)v;
}

fine_backend *fine_backend_open(const char *name, fine_err *e)
{
    if (strcmp(name, "cpu") == 0)
        return (fine_backend *)fine_backend_cpu();
    int dev = cuda_index(name);
    if (dev < 0) {
        fine_err_set(e, "unknown device '%s' (expected cpu, cuda or cuda:N)", name);
        return NULL;
    }
#ifdef FINE_HAVE_CUDA
    return fine_cuda_backend_open(dev, e);
#else
    fine_err_set(e, "device '%s': this build has no CUDA backend (rebuild where nvcc and cuDNN are installed)",
                 name);
    return NULL;
#endif
}

void fine_backend_close(fine_backend *be)
{
    if (!be || be == fine_backend_cpu())
        return;
#ifdef FINE_HAVE_CUDA
    fine_cuda_backend_close(be);
#endif
}
