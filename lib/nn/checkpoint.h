/* checkpoint.h: a model as a stream file (formats/CHECKPOINT.md): a `model` record with the
 * configuration and the visitation counters, then one `param` record per live parameter under
 * its reference state_dict name, in PyTorch layout. Training state records follow when a
 * trainer saves one. Written atomically by the stream writer. */
#ifndef FINE_CHECKPOINT_H
#define FINE_CHECKPOINT_H

#include "error.h"
#include "nn/fine_model.h"
#include "stream.h"

/* Configuration <-> the `config` map of a model record. Reading fills c from a preset-free
 * zero state and requires every field. */
void fine_config_to_map(const fine_config *c, fine_map *m);
int fine_config_from_record(const fine_record *r, const char *path, fine_config *c, fine_err *e);

/* Sets one configuration field from "key=value" (the names of the config map; lists as
 * comma-separated numbers). Returns 0 or -1 with e naming the key. */
int fine_config_set(fine_config *c, const char *assignment, fine_err *e);
/* Reads "key=value" lines (as fine_config_print writes them; '#' comments, blank lines) over
 * the bcv preset. Returns 0 or -1 with e naming the file and line. */
int fine_config_read(const char *path, fine_config *c, fine_err *e);
/* Prints the configuration as the "key=value" lines fine_config_set reads. */
void fine_config_print(const fine_config *c, FILE *f);

/* The first field where a and b differ, as "embed_dim: 24 vs 192"; 0 when equal. */
int fine_config_diff(const fine_config *a, const fine_config *b, char *out, size_t cap);

/* Writes the model record and every parameter to w (after its header). */
int fine_checkpoint_write(fine_writer *w, const fine_model *m, fine_err *e);
/* Saves m to path as a complete checkpoint stream (tool name for the provenance). */
int fine_checkpoint_save(const char *path, const fine_model *m, const char *tool, int argc, char **argv,
                         int force, fine_err *e);

/* Loads a checkpoint: builds m from its configuration and fills every live parameter; fails
 * when a parameter is missing, has another shape, or is unknown (naming it). Records of other
 * types (training state) are handed to `other` if not NULL, else skipped. */
int fine_checkpoint_load(const char *path, fine_model *m,
                         int (*other)(const fine_record *r, void *ctx, fine_err *e), void *ctx,
                         fine_err *e);

#endif
