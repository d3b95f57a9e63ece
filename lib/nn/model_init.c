/* model_init.c: initial parameters as the reference gets them (fine-reference B 4.1, A6):
 * PyTorch defaults for Conv3d, ConvTranspose3d and Linear (weight and bias uniform in
 * +-1/sqrt(fan_in)), LayerNorm weight 1 and bias 0, relative position tables and pe
 * N(0, 0.02^2) truncated at +-2, memory and volume tokens N(0, 1); from fine_rng. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/fine_model.h"
#include "rng.h"

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The module a parameter belongs to: name without its last component. */
static void module_of(const char *name, char *out, size_t cap)
{
    const char *dot = strrchr(name, '.');
    size_t n = dot ? (size_t)(dot - name) : strlen(name);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, name, n);
    out[n] = 0;
}

static int is_norm(const char *module)
{
    const char *last = strrchr(module, '.');
    last = last ? last + 1 : module;
    return strncmp(last, "norm", 4) == 0;
}

void fine_model_init(fine_model *m, uint64_t seed)
{
    fine_rng r;
    fine_rng_seed(&r, seed);
    for (int i = 0; i < m->nparams; i++) {
        const fine_param *p = &m->params[i];
        float *v = m->w + p->offset;
        char mod[FINE_NAME_LEN];
        module_of(p->name, mod, sizeof mod);
        if (ends_with(p->name, "relative_position_bias_table") || ends_with(p->name, ".pe")) {
            for (size_t k = 0; k < p->numel; k++) {
                double x;
                do
                    x = 0.02 * fine_rng_normal(&r);
                while (x < -2 || x > 2);
                v[k] = (float)x;
            }
        } else if (ends_with(p->name, "global_token") || ends_with(p->name, "volume_token")) {
            for (size_t k = 0; k < p->numel; k++)
                v[k] = (float)fine_rng_normal(&r);
        } else if (is_norm(mod)) {
            float f = ends_with(p->name, ".weight") ? 1.0f : 0.0f;
            for (size_t k = 0; k < p->numel; k++)
                v[k] = f;
        } else {
            /* weights and biases of Conv3d / ConvTranspose3d / Linear: the bound comes from
             * the weight's fan_in (PyTorch takes weight.size(1) * kernel volume, which for a
             * ConvTranspose3d is the output channel count) */
            char wname[FINE_NAME_LEN + 8];
            snprintf(wname, sizeof wname, "%s.weight", mod);
            const fine_param *w = fine_model_param(m, wname);
            double fan_in = 1;
            if (w) {
                fan_in = (double)w->shape[1];
                for (int d = 2; d < w->ndim; d++)
                    fan_in *= (double)w->shape[d];
            }
            double bound = 1.0 / sqrt(fan_in);
            for (size_t k = 0; k < p->numel; k++)
                v[k] = (float)fine_rng_range(&r, -bound, bound);
        }
    }
    memset(m->vt_check, 0, (size_t)m->nV * sizeof(float));
}
