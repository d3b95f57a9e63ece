/* checkpoint.c: models in and out of streams (formats/CHECKPOINT.md). */
#include "nn/checkpoint.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The configuration fields, in the order they are written. */
enum kind { K_INT, K_DOUBLE };
typedef struct field {
    const char *name;
    enum kind kind;
    int count;
    size_t offset;
    int one_for_all; /* one value may stand for all count (window: older checkpoints, --set window=4) */
} field;

#define F(name, kind, count) {#name, kind, count, offsetof(fine_config, name), 0}
#define F_ALL(name, kind, count) {#name, kind, count, offsetof(fine_config, name), 1}
static const field fields[] = {
    F(in_chans, K_INT, 1),   F(num_classes, K_INT, 1), F(crop, K_INT, 3),
    F(patch, K_INT, 3),      F(embed_dim, K_INT, 1),   F(depths, K_INT, FINE_STAGES),
    F(heads, K_INT, FINE_STAGES), F(dec_depths, K_INT, FINE_STAGES - 1),
    F(dec_heads, K_INT, FINE_STAGES - 1), F_ALL(window, K_INT, FINE_STAGES), F(mlp_ratio, K_DOUBLE, 1),
    F(drop_path, K_DOUBLE, 1), F(gt_num, K_INT, 1), F(vt_map, K_INT, 3), F(max_imsize, K_INT, 3),
    F(vt_overflow, K_INT, 1), F(ds_weights, K_DOUBLE, 2),
};
#undef F
#undef F_ALL
#define NFIELDS (int)(sizeof fields / sizeof fields[0])

static int *ints(fine_config *c, const field *f)
{
    return (int *)((char *)c + f->offset);
}

static double *dbls(fine_config *c, const field *f)
{
    return (double *)((char *)c + f->offset);
}

void fine_config_to_map(const fine_config *c, fine_map *m)
{
    fine_config tmp = *c;
    for (int i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        if (f->kind == K_INT) {
            int64_t v[8];
            for (int k = 0; k < f->count; k++)
                v[k] = ints(&tmp, f)[k];
            if (f->count == 1)
                fine_map_i64(m, f->name, v[0]);
            else
                fine_map_i64s(m, f->name, v, f->count);
        } else if (f->count == 1) {
            fine_map_f64(m, f->name, dbls(&tmp, f)[0]);
        } else {
            fine_map_f64s(m, f->name, dbls(&tmp, f), f->count);
        }
    }
}

int fine_config_from_record(const fine_record *r, const char *path, fine_config *c, fine_err *e)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        char key[128];
        snprintf(key, sizeof key, "%s.%s", path, f->name);
        if (f->kind == K_INT) {
            int64_t v[8];
            int rc = f->count == 1 ? fine_record_i64(r, key, v, e) : fine_record_i64s(r, key, v, f->count, e);
            if (rc < 0 && f->one_for_all && fine_record_i64(r, key, v, NULL) == 0) {
                for (int k = 1; k < f->count; k++)
                    v[k] = v[0];
                rc = 0;
            }
            if (rc < 0)
                return -1;
            for (int k = 0; k < f->count; k++)
                ints(c, f)[k] = (int)v[k];
        } else {
            int rc = f->count == 1 ? fine_record_f64(r, key, dbls(c, f), e)
                                   : fine_record_f64s(r, key, dbls(c, f), f->count, e);
            if (rc < 0)
                return -1;
        }
    }
    return 0;
}

int fine_config_set(fine_config *c, const char *assignment, fine_err *e)
{
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return fine_err_set(e, "'%s': expected key=value", assignment);
    size_t kl = (size_t)(eq - assignment);
    for (int i = 0; i < NFIELDS; i++) {
        const field *f = &fields[i];
        if (strlen(f->name) != kl || strncmp(f->name, assignment, kl) != 0)
            continue;
        const char *val = eq + 1;
        if (strcmp(f->name, "vt_overflow") == 0 && (strcmp(val, "reference") == 0 || strcmp(val, "clamp") == 0)) {
            ints(c, f)[0] = strcmp(val, "clamp") == 0 ? FINE_VT_CLAMP : FINE_VT_REFERENCE;
            return 0;
        }
        if (f->kind == K_INT) {
            int64_t v[8];
            if (fine_parse_i64s(val, v, f->count, f->one_for_all) < 0)
                return fine_err_set(e, "config %s: expected %s%d integer%s, got '%s'", f->name,
                                    f->one_for_all ? "1 or " : "", f->count, f->count > 1 ? "s" : "", val);
            for (int k = 0; k < f->count; k++)
                ints(c, f)[k] = (int)v[k];
        } else if (fine_parse_f64s(val, dbls(c, f), f->count, 0) < 0) {
            return fine_err_set(e, "config %s: expected %d number%s, got '%s'", f->name, f->count,
                                f->count > 1 ? "s" : "", val);
        }
        return 0;
    }
    return fine_err_set(e, "unknown configuration key '%.*s'", (int)kl, assignment);
}

static void field_text(const fine_config *c, const field *f, char *out, size_t cap)
{
    fine_config tmp = *c;
    size_t n = 0;
    out[0] = 0;
    for (int k = 0; k < f->count && n < cap; k++) {
        if (f->kind == K_INT)
            n += (size_t)snprintf(out + n, cap - n, "%s%d", k ? "," : "", ints(&tmp, f)[k]);
        else
            n += (size_t)snprintf(out + n, cap - n, "%s%.17g", k ? "," : "", dbls(&tmp, f)[k]);
    }
}

void fine_config_print(const fine_config *c, FILE *f)
{
    for (int i = 0; i < NFIELDS; i++) {
        char v[256];
        field_text(c, &fields[i], v, sizeof v);
        fprintf(f, "%s=%s\n", fields[i].name, v);
    }
}

int fine_config_diff(const fine_config *a, const fine_config *b, char *out, size_t cap)
{
    for (int i = 0; i < NFIELDS; i++) {
        char va[256], vb[256];
        field_text(a, &fields[i], va, sizeof va);
        field_text(b, &fields[i], vb, sizeof vb);
        if (strcmp(va, vb) != 0) {
            snprintf(out, cap, "%s: %s vs %s", fields[i].name, va, vb);
            return 1;
        }
    }
    return 0;
}

int fine_checkpoint_write(fine_writer *w, const fine_model *m, fine_err *e)
{
    fine_map *rec = fine_map_new("model");
    fine_map_str(rec, "architecture", "fine");
    fine_config_to_map(&m->cfg, fine_map_map(rec, "config"));
    fine_map_i64(rec, "live_params", (int64_t)fine_model_live_params(m));
    fine_map_i64(rec, "reference_params", (int64_t)fine_model_reference_params(&m->cfg));
    fine_tensor vt = {.dtype = FINE_F32, .ndim = 2, .shape = {m->nV, 1}, .data = m->vt_check};
    fine_map_tensor(rec, "vt_check", &vt);
    int rc = fine_writer_put(w, rec, e);
    fine_map_free(rec);
    for (int i = 0; rc == 0 && i < m->nparams; i++) {
        const fine_param *p = &m->params[i];
        fine_tensor t = {.dtype = FINE_F32, .ndim = p->ndim, .data = m->w + p->offset};
        memcpy(t.shape, p->shape, sizeof p->shape);
        fine_map *pr = fine_map_new("param");
        fine_map_str(pr, "name", p->name);
        fine_map_tensor_fields(pr, &t);
        rc = fine_writer_put(w, pr, e);
        fine_map_free(pr);
    }
    return rc;
}

int fine_checkpoint_save(const char *path, const fine_model *m, const char *tool, int argc, char **argv,
                         int force, fine_err *e)
{
    fine_writer *w = fine_writer_open(path, force, e);
    if (!w)
        return -1;
    if (fine_writer_header(w, NULL, tool, argc, argv, e) < 0 || fine_checkpoint_write(w, m, e) < 0) {
        fine_writer_abort(w);
        return -1;
    }
    return fine_writer_close(w, e);
}

int fine_checkpoint_load(const char *path, fine_model *m,
                         int (*other)(const fine_record *r, void *ctx, fine_err *e), void *ctx, fine_err *e)
{
    memset(m, 0, sizeof *m);
    fine_reader *r = fine_reader_open(path, e);
    if (!r)
        return -1;
    fine_record rec;
    int rc, have_model = 0, loaded = 0;
    unsigned char *seen = NULL;
    while ((rc = fine_reader_next(r, &rec, e)) == 1) {
        if (strcmp(rec.type, "model") == 0) {
            fine_config c;
            if (have_model) {
                rc = fine_err_set(e, "%s: two model records", path);
                break;
            }
            if (fine_config_from_record(&rec, "config", &c, e) < 0 || fine_model_build(m, &c, e) < 0) {
                fine_err_prefix(e, path);
                rc = -1;
                break;
            }
            have_model = 1;
            seen = calloc((size_t)m->nparams, 1);
            fine_tensor vt;
            if (fine_record_tensor(&rec, "vt_check", &vt, e) == 0) {
                if (fine_tensor_numel(&vt) == m->nV && vt.dtype == FINE_F32)
                    memcpy(m->vt_check, vt.data, (size_t)m->nV * sizeof(float));
                fine_tensor_free(&vt);
            }
        } else if (strcmp(rec.type, "param") == 0) {
            char name[FINE_NAME_LEN];
            if (!have_model) {
                rc = fine_err_set(e, "%s: a param record comes before the model record", path);
                break;
            }
            if (fine_record_str(&rec, "name", name, sizeof name, e) < 0) {
                fine_err_prefix(e, path);
                rc = -1;
                break;
            }
            const fine_param *p = fine_model_param(m, name);
            if (!p) {
                rc = fine_err_set(e, "%s: parameter '%s' is not part of this configuration", path, name);
                break;
            }
            fine_tensor t;
            if (fine_record_tensor_view(&rec, NULL, &t, e) < 0) {
                fine_err_prefix(e, path);
                rc = -1;
                break;
            }
            int shape_ok = t.dtype == FINE_F32 && t.ndim == p->ndim;
            for (int d = 0; shape_ok && d < p->ndim; d++)
                shape_ok = t.shape[d] == p->shape[d];
            if (!shape_ok) {
                fine_tensor_free(&t);
                rc = fine_err_set(e, "%s: parameter '%s' has dtype %s and another shape than the "
                                  "configuration gives", path, name, fine_dtype_name(t.dtype));
                break;
            }
            memcpy(m->w + p->offset, t.data, p->numel * sizeof(float));
            fine_tensor_free(&t);
            if (!seen[p - m->params])
                loaded++;
            seen[p - m->params] = 1;
        } else if (other && other(&rec, ctx, e) < 0) {
            rc = -1;
            break;
        }
    }
    fine_reader_close(r);
    if (rc == 0 && !have_model)
        rc = fine_err_set(e, "%s: not a checkpoint (no model record)", path);
    if (rc == 0 && loaded != m->nparams) {
        for (int i = 0; i < m->nparams; i++)
            if (!seen[i]) {
                rc = fine_err_set(e, "%s: parameter '%s' is missing", path, m->params[i].name);
                break;
            }
    }
    free(seen);
    if (rc < 0) {
        if (have_model)
            fine_model_free(m);
        return -1;
    }
    return 0;
}

int fine_config_read(const char *path, fine_config *c, fine_err *e)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return fine_err_set(e, "%s: cannot open", path);
    char line[512];
    int ln = 0;
    memset(c, 0, sizeof *c);
    fine_config_preset(c, "bcv"); /* unspecified keys: the bcv values */
    while (fgets(line, sizeof line, f)) {
        ln++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        p[strcspn(p, "\r\n#")] = 0;
        if (!*p)
            continue;
        char *end = p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = 0;
        if (fine_config_set(c, p, e) < 0) {
            fclose(f);
            char where[600];
            snprintf(where, sizeof where, "%s:%d", path, ln);
            fine_err_prefix(e, where);
            return -1;
        }
    }
    fclose(f);
    return 0;
}
