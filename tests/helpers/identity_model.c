/* identity_model: a stand-in for a network in the fine-patch | model | fine-stitch pipe, for
 * tests. Every `patch` record that carries a `label` tile becomes a `pred` record (same case,
 * origin, pos, volume_size, index) whose probabilities are the one-hot encoding of the label:
 * stitching them must give the label volume back exactly. Every other record passes through.
 *
 *   identity_model [--classes K] [--f16] [--logits] [--drop N] [IN [OUT]]
 *
 *   --classes K  K output channels (default 14); a label value outside 0..K-1 is an error
 *   --f16        f16 probabilities (default f32)
 *   --logits     name the records "logits" and write 8 * one-hot (softmax keeps the argmax)
 *   --drop N     leave out the prediction of the N-th patch (0-based) of the stream */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "tensor.h"

static int fail(const char *msg)
{
    fprintf(stderr, "identity_model: %s\n", msg);
    return 1;
}

int main(int argc, char **argv)
{
    int64_t K = 14, drop = -1;
    int f16 = 0, logits = 0, a = 1;
    for (; a < argc && argv[a][0] == '-' && argv[a][1]; a++) {
        if (strcmp(argv[a], "--classes") == 0 && a + 1 < argc)
            K = atoll(argv[++a]);
        else if (strcmp(argv[a], "--drop") == 0 && a + 1 < argc)
            drop = atoll(argv[++a]);
        else if (strcmp(argv[a], "--f16") == 0)
            f16 = 1;
        else if (strcmp(argv[a], "--logits") == 0)
            logits = 1;
        else
            return fail("usage: identity_model [--classes K] [--f16] [--logits] [--drop N] [IN [OUT]]");
    }
    const char *in = a < argc ? argv[a] : "-", *out = a + 1 < argc ? argv[a + 1] : "-";
    fine_err e = {0};
    fine_reader *r = fine_reader_open(in, &e);
    if (!r)
        return fail(e.msg);
    fine_writer *w = fine_writer_open(out, 1, &e);
    if (!w || fine_writer_header(w, fine_reader_provenance(r), "identity_model", argc, argv, &e) < 0)
        return fail(e.msg);
    fine_record rec;
    int rc;
    int64_t npatch = 0;
    while ((rc = fine_reader_next(r, &rec, &e)) == 1) {
        if (strcmp(rec.type, "patch") != 0 || !fine_record_get(&rec, "label")) {
            if (fine_writer_put_record(w, &rec, &e) < 0)
                return fail(e.msg);
            continue;
        }
        if (npatch++ == drop)
            continue;
        fine_tensor lab, pred;
        char cid[256];
        int64_t origin[3], pos[3], vs[3], idx = -1;
        if (fine_record_tensor(&rec, "label", &lab, &e) < 0 || fine_record_str(&rec, "case", cid, sizeof cid, &e) < 0 ||
            fine_record_i64s(&rec, "origin", origin, 3, &e) < 0 || fine_record_i64s(&rec, "pos", pos, 3, &e) < 0 ||
            fine_record_i64s(&rec, "volume_size", vs, 3, &e) < 0)
            return fail(e.msg);
        if (fine_record_get(&rec, "index") && fine_record_i64(&rec, "index", &idx, &e) < 0)
            return fail(e.msg);
        int64_t shape[4] = {K, lab.shape[0], lab.shape[1], lab.shape[2]};
        if (fine_tensor_alloc(&pred, f16 ? FINE_F16 : FINE_F32, 4, shape, &e) < 0)
            return fail(e.msg);
        int64_t n = fine_tensor_numel(&lab);
        for (int64_t i = 0; i < n; i++) {
            double v = fine_tensor_get(&lab, i);
            if (v < 0 || v >= (double)K)
                return fail("label value outside 0..K-1");
            fine_tensor_set(&pred, (int64_t)v * n + i, logits ? 8.0 : 1.0);
        }
        fine_map *m = fine_map_new("pred");
        fine_map_str(m, "case", cid);
        fine_map_str(m, "name", logits ? "logits" : "prob");
        fine_map_tensor_fields(m, &pred);
        fine_map_i64s(m, "origin", origin, 3);
        fine_map_i64s(m, "pos", pos, 3);
        fine_map_i64s(m, "volume_size", vs, 3);
        if (idx >= 0)
            fine_map_i64(m, "index", idx);
        if (fine_writer_put(w, m, &e) < 0)
            return fail(e.msg);
        fine_map_free(m);
        fine_tensor_free(&pred);
        fine_tensor_free(&lab);
    }
    if (rc < 0)
        return fail(e.msg);
    fine_reader_close(r);
    if (fine_writer_close(w, &e) < 0)
        return fail(e.msg);
    return 0;
}
