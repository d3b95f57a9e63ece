/* fine_model.h: the FINE network (fine-reference Part B 1-4, decisions A1-A6): configuration,
 * parameters as named views into one flat buffer, forward and backward on the CPU.
 *
 * Parameters keep the reference's state_dict names and PyTorch layouts. Only live parameters
 * are allocated (A1): a block's gt_attn only where a later block consumes its memory tokens,
 * its vt_attn only where a later block's gt_attn reads the volume tokens (so none with depth
 * <= 2), no PatchMerging after the last encoder stage, no 32^3 head (final.2). The
 * relative_position_index buffers are computed, not stored. */
#ifndef FINE_MODEL_H
#define FINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FINE_STAGES 4
#define FINE_MAX_WINDOW 16 /* fine_config_check's bound on the window edge */
#define FINE_MAX_DEPTH 8   /* ... on the blocks of a stage */
#define FINE_MAX_GT 4      /* ... on the memory tokens per window (pe grows with its cube) */
#define FINE_NAME_LEN 96

enum { FINE_VT_REFERENCE = 0, FINE_VT_CLAMP = 1 };

typedef struct fine_config {
    int in_chans, num_classes;
    int crop[3];          /* (z, y, x) input crop */
    int patch[3];         /* patch embedding stride; (2, 4, 4) */
    int embed_dim;
    int depths[FINE_STAGES], heads[FINE_STAGES];         /* encoder stages */
    int dec_depths[FINE_STAGES - 1], dec_heads[FINE_STAGES - 1]; /* decoder, deepest first */
    int window[FINE_STAGES]; /* window edge ws per encoder stage; a decoder stage uses its encoder
                              * stage's (the reference's window_size[::-1][1:]) */
    double mlp_ratio;
    double drop_path;     /* drop-path rate (linearly increasing per block) */
    int gt_num;           /* memory tokens per window G (1) */
    int vt_map[3];        /* volume-token grid (z, y, x); only y, x are used */
    int max_imsize[3];
    int vt_overflow;      /* FINE_VT_REFERENCE or FINE_VT_CLAMP (A3) */
    double ds_weights[2]; /* deep-supervision weights of the full and the 64^3 head (A5) */
} fine_config;

/* Fills c with a preset: "bcv" (the reference SYNAPSE configuration), "small" (the parity
 * fixture's 1/8 width), "tiny" (trains on a CPU in minutes). Returns 0, -1 for an unknown name. */
int fine_config_preset(fine_config *c, const char *name);
/* Checks a configuration; -1 with e naming the first bad field. */
int fine_config_check(const fine_config *c, fine_err *e);

/* The strides of the patch embedding's two strided convolutions (B 1.2 rows 2 and 5): (2,2,2),
 * then patch / 2 per axis, so that they multiply to the patch. This is the reference's
 * PatchEmbed for the two patch sizes it runs, 2,4,4 (BCV: then (1,2,2)) and 4,4,4 (then (2,2,2));
 * fine_config_check accepts those two. */
void fine_embed_strides(const fine_config *c, int s1[3], int s2[3]);

/* The kernel (= stride) of head h's ConvTranspose3d: the patch for head 0 (final.0), 4,4,4 for
 * head 1 (final.1, whatever the patch, as the reference builds it). */
void fine_head_kernel(const fine_config *c, int h, int k[3]);

typedef struct fine_param {
    char name[FINE_NAME_LEN];
    int ndim;
    int64_t shape[5];
    size_t offset;  /* in floats, into the flat buffer */
    size_t numel;
} fine_param;

/* Per-stage geometry derived from the configuration. */
typedef struct fine_stage_dims {
    int64_t res[3]; /* token grid (D, H, W) */
    int64_t C;      /* channels */
    int heads;
    int ws;         /* window edge used (min(ws, res) as the reference does at the bottleneck) */
    int shift;      /* shift of odd blocks (0 when the grid is one window) */
    int64_t nW;     /* windows per sample */
    int G;          /* memory tokens per window */
    int64_t pe_rows, pe_first; /* the pe table's rows (nW * G^3, the reference's (res/ws * G)^3)
                                * and the first of the nW * G it uses (its centred crop, B 2.4) */
} fine_stage_dims;

typedef struct fine_model {
    fine_config cfg;
    fine_stage_dims enc[FINE_STAGES], dec[FINE_STAGES - 1]; /* dec[k]: encoder.layers.k */
    int nV;              /* volume tokens = vt_map[1] * vt_map[2] */
    fine_param *params;
    int nparams;
    size_t nfloats;
    float *w;            /* parameters */
    float *vt_check;     /* (nV) visitation counters (B 2.7), not trained */
    /* relative position index (ws^3 x ws^3) for each window edge ws some stage uses, NULL for the
     * others: a stage whose grid is smaller than the window uses its grid's edge (the reference's
     * rule), and the index depends on the edge */
    int64_t *relpos[FINE_MAX_WINDOW + 1];
} fine_model;

/* Builds the parameter table and allocates zeroed parameters. Returns 0 or -1. */
int fine_model_build(fine_model *m, const fine_config *c, fine_err *e);
void fine_model_free(fine_model *m);

/* Initial values as the reference (B 4.1, A6), drawn from a generator seeded with seed;
 * vt_check zeroed. */
void fine_model_init(fine_model *m, uint64_t seed);

/* The parameter of that name, or NULL. */
const fine_param *fine_model_param(const fine_model *m, const char *name);
/* Pointer to a parameter's data in buffer base (m->w or a gradient buffer of the same layout);
 * aborts the program on an unknown name, which is a bug in the model code, not bad input. */
float *fine_model_view(const fine_model *m, float *base, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parameter counts: live (allocated here) and the reference's full count (B 4.3, every
 * parameter of the official state_dict incl. vt_check, excluding the index buffers). */
size_t fine_model_live_params(const fine_model *m);
size_t fine_model_reference_params(const fine_config *c);

/* Which of a stage's blocks compute the memory-token attention (gt_attn: a later block reads
 * its memory tokens) and the volume-token write-back and attention (vt_attn: a later block's
 * gt_attn reads the bank), for block j of depth (A1). */
int fine_block_has_gt(int depth, int j);
int fine_block_has_vt(int depth, int j);

/* pos2vtpos (B 3.4 with A3): the 4 volume-token indices for a crop position pos (z, y, x). */
void fine_pos_to_vt(const fine_config *c, const int64_t pos[3], int out[4]);

#ifdef __cplusplus
}
#endif

#endif
