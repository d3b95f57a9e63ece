/* backend.c: choosing a backend by name (--device). The CUDA backend exists only in builds with
 * FINE_HAVE_CUDA (make finds nvcc and cuDNN); elsewhere "cuda" is a clear error. It lives in its
 * own shared object, libfine-cuda.so, loaded when a tool first opens "cuda": the CUDA runtime,
 * cuBLAS and cuDNN take about half a second to load, which every tool start would otherwise
 * pay (and a CPU-only run would need them installed). */
#include "nn/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FINE_HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <unistd.h>

typedef fine_backend *(*cuda_open_fn)(int device, fine_err *e);

/* Where libfine-cuda.so is, first found: $FINE_CUDA_LIB (the file); next to the executable's
 * folder, in ../lib/fine/ (make install's layout); the build tree it was built in. */
static void *load_cuda(const char *name, fine_err *e)
{
    const char *env = getenv("FINE_CUDA_LIB"), *so = FINE_CUDA_SO;
    char path[PATH_MAX + 32];
    if (env && *env) {
        so = env;
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        char *slash = NULL;
        if (n > 0) {
            exe[n] = 0;
            slash = strrchr(exe, '/');
        }
        if (slash) {
            *slash = 0;
            snprintf(path, sizeof path, "%s/../lib/fine/libfine-cuda.so", exe);
            if (access(path, R_OK) == 0)
                so = path;
        }
    }
    void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        fine_err_set(e, "%s: cannot load the CUDA backend%s: %s", name, so == env ? " from FINE_CUDA_LIB" : "",
                     dlerror());
    return h;
}

/* The backend from libfine-cuda.so. The library stays loaded for the life of the process (the
 * CUDA runtime does not support being unloaded); each call takes one more reference. */
static fine_backend *cuda_open(const char *name, int device, fine_err *e)
{
    void *h = load_cuda(name, e);
    if (!h)
        return NULL;
    cuda_open_fn open = (cuda_open_fn)dlsym(h, "fine_cuda_backend_open");
    if (!open) {
        fine_err_set(e, "%s: cannot load the CUDA backend: %s", name, dlerror());
        return NULL;
    }
    return open(device, e);
}
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
    return cuda_open(name, dev, e);
#else
    fine_err_set(e, "device '%s': this build has no CUDA backend (rebuild where nvcc and cuDNN are installed)",
                 name);
    return NULL;
#endif
}

void fine_backend_close(fine_backend *be)
{
    if (!be || be == fine_backend_cpu() || !be->close)
        return;
    be->close(be);
}
