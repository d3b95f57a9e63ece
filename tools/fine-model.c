/* fine-model: describe, create and run FINE models (the engine's front door). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "nn/checkpoint.h"
#include "nn/fine_model.h"
#include "nn/fine_net.h"
#include "nn/ops.h"
#include "stream.h"

static const char *TOOL = "fine-model";

static void usage(void)
{
    printf("Usage: fine-model describe (--preset NAME | --config FILE | --model CKPT) [--set K=V ...] [--batch B]\n"
           "       fine-model init (--preset NAME | --config FILE) [--set K=V ...] [--seed S] [--force] -o CKPT\n"
           "       fine-model run --model CKPT [--grad] [--batch B] [--threads N] IN OUT\n\n"
           "describe  print the configuration (as key=value lines), live and reference parameter\n"
           "          counts, activation memory and FLOPs per forward and forward+backward\n"
           "init      write a freshly initialised checkpoint (fine-reference B 4.1)\n"
           "run       read patch records (image [C,z,y,x] f32 and pos) and write, per patch, a\n"
           "          `logits` record with the raw logits of both heads (evaluation mode); with\n"
           "          --grad also a `grad` record per live parameter and for the input: the\n"
           "          gradient of the sum of all logits of the patches of the run\n\n"
           "Presets: bcv (the reference SYNAPSE model), small (1/8 width, the parity fixture's),\n"
           "tiny (32x64x64 crops, window 2: trains on a CPU in minutes).\n\n"
           "Options:\n"
           "  --preset NAME    start from a preset\n"
           "  --config FILE    start from key=value lines (as describe prints them)\n"
           "  --set K=V        override one configuration key (repeatable)\n"
           "  --model CKPT     a checkpoint\n"
           "  --batch B        batch size (describe: for memory and FLOPs; run: patches per pass)\n"
           "  --seed S         initialisation seed (default 0)\n"
           "  -o FILE          output checkpoint (init)\n"
           "  --threads N      threads (default: OMP_NUM_THREADS, else all cores)\n"
           "  -f, --force      overwrite outputs\n"
           "  -h, --help, --version\n\n"
           "Examples:\n"
           "  fine-model describe --preset bcv --batch 2\n"
           "  fine-model init --preset tiny --seed 1 -o tiny.fst\n"
           "  fine-patch --grid case.fst | fine-model run --model tiny.fst - logits.fst\n");
}

static void describe(const fine_model *m, int B)
{
    const fine_config *c = &m->cfg;
    fine_config_print(c, stdout);
    size_t live = fine_model_live_params(m), ref = fine_model_reference_params(c);
    printf("# parameters: %zu live, %zu in the reference model (%zu never reach an output)\n", live, ref,
           ref - live);
    printf("# parameter buffer: %.1f MB (gradients and each optimizer buffer the same)\n",
           (double)m->nfloats * 4 / 1e6);
    for (int i = 0; i < FINE_STAGES; i++)
        printf("# encoder stage %d: %lldx%lldx%lld tokens, %lld channels, %d heads, window %d, %lld windows\n", i,
               (long long)m->enc[i].res[0], (long long)m->enc[i].res[1], (long long)m->enc[i].res[2],
               (long long)m->enc[i].C, m->enc[i].heads, m->enc[i].ws, (long long)m->enc[i].nW);
    double f = fine_net_forward_flops(m, B);
    printf("# batch %d: activations %.2f GB; forward %.1f GFLOP, forward+backward ~%.1f GFLOP\n", B,
           (double)fine_net_plan_bytes(m, B) / 1e9, f / 1e9, 3 * f / 1e9);
}

/* run: batches of patch records -> logits records (and gradients) */
static int run(fine_model *m, const char *in_path, const char *out_path, int B, int grad, int force, int argc,
               char **argv)
{
    fine_err e = {0};
    fine_reader *r = fine_reader_open(in_path, &e);
    if (!r)
        return fine_cli_fail(TOOL, &e);
    fine_writer *w = fine_writer_open(out_path, force, &e);
    if (!w) {
        fine_reader_close(r);
        return fine_cli_fail(TOOL, &e);
    }
    int rc = fine_writer_header(w, fine_reader_provenance(r), TOOL, argc, argv, &e);
    const fine_config *c = &m->cfg;
    int64_t vox = (int64_t)c->crop[0] * c->crop[1] * c->crop[2] * c->in_chans;
    fine_net *net = rc == 0 ? fine_net_plan(m, B, &e) : NULL;
    float *x = net ? aligned_alloc(64, (size_t)(vox * B) * sizeof(float)) : NULL;
    int64_t *pos = calloc((size_t)B * 3, sizeof(int64_t));
    float *g = grad && net ? calloc(m->nfloats, sizeof(float)) : NULL;
    float *dx = grad && net ? calloc((size_t)(vox * B), sizeof(float)) : NULL;
    float *d0 = NULL, *d1 = NULL;
    if (net && (!x || !pos || (grad && (!g || !dx)))) {
        rc = fine_err_set(&e, "out of memory");
    } else if (!net) {
        rc = -1;
    }
    if (grad && rc == 0) {
        int64_t n0 = fine_net_logits_numel(net, 0), n1 = fine_net_logits_numel(net, 1);
        d0 = malloc((size_t)n0 * 4);
        d1 = malloc((size_t)n1 * 4);
        for (int64_t i = 0; d0 && i < n0; i++)
            d0[i] = 1;
        for (int64_t i = 0; d1 && i < n1; i++)
            d1[i] = 1;
    }
    fine_record rec;
    int nb = 0, more = 1;
    char cases[64][128];
    while (rc == 0 && more) {
        more = 0;
        int got;
        while (nb < B && (got = fine_reader_next(r, &rec, &e)) == 1) {
            if (strcmp(rec.type, "patch") != 0) {
                if (fine_writer_put_record(w, &rec, &e) < 0) {
                    rc = -1;
                    break;
                }
                continue;
            }
            fine_tensor t;
            if (fine_record_tensor_view(&rec, NULL, &t, &e) < 0 || fine_record_i64s(&rec, "pos", pos + nb * 3, 3, &e) < 0) {
                fine_err_prefix(&e, fine_reader_name(r));
                rc = -1;
                break;
            }
            int ok = t.dtype == FINE_F32 && t.ndim == 4 && t.shape[0] == c->in_chans && t.shape[1] == c->crop[0] &&
                     t.shape[2] == c->crop[1] && t.shape[3] == c->crop[2];
            if (!ok) {
                fine_tensor_free(&t);
                rc = fine_err_set(&e, "%s: patch is not f32 [%d, %d, %d, %d] as the model's crop", fine_reader_name(r),
                                  c->in_chans, c->crop[0], c->crop[1], c->crop[2]);
                break;
            }
            memcpy(x + nb * vox, t.data, (size_t)vox * sizeof(float));
            fine_tensor_free(&t);
            if (fine_record_str(&rec, "case", cases[nb], sizeof cases[nb], &e) < 0)
                snprintf(cases[nb], sizeof cases[nb], "?");
            nb++;
        }
        if (rc < 0)
            break;
        if (nb == 0) {
            if (got < 0)
                rc = -1;
            break;
        }
        more = got == 1;
        /* a short last batch: pad with copies of its first patch, write only the real ones */
        for (int b = nb; b < B; b++) {
            memcpy(x + b * vox, x, (size_t)vox * sizeof(float));
            memcpy(pos + b * 3, pos, 3 * sizeof(int64_t));
        }
        fine_net_forward(net, m, x, pos, 0, 0);
        if (grad)
            fine_net_backward(net, m, g, d0, d1, dx);
        for (int b = 0; b < nb && rc == 0; b++) {
            fine_map *o = fine_map_new("logits");
            fine_map_str(o, "case", cases[b]);
            fine_map_i64s(o, "pos", pos + b * 3, 3);
            for (int h = 0; h < 2; h++) {
                int64_t s[5];
                fine_net_logits_shape(net, h, s);
                int64_t per = s[1] * s[2] * s[3] * s[4];
                fine_tensor t = {.dtype = FINE_F32, .ndim = 4, .shape = {s[1], s[2], s[3], s[4]},
                                 .data = fine_net_logits(net, h) + b * per};
                fine_map_tensor(o, h == 0 ? "head0" : "head1", &t);
            }
            rc = fine_writer_put(w, o, &e);
            fine_map_free(o);
        }
        nb = 0;
    }
    if (rc == 0 && grad) {
        for (int i = 0; i < m->nparams && rc == 0; i++) {
            const fine_param *p = &m->params[i];
            fine_tensor t = {.dtype = FINE_F32, .ndim = p->ndim, .data = g + p->offset};
            memcpy(t.shape, p->shape, sizeof p->shape);
            fine_map *o = fine_map_new("grad");
            fine_map_str(o, "name", p->name);
            fine_map_tensor_fields(o, &t);
            rc = fine_writer_put(w, o, &e);
            fine_map_free(o);
        }
        fine_tensor t = {.dtype = FINE_F32, .ndim = 2, .shape = {B, vox}, .data = dx};
        fine_map *o = fine_map_new("grad");
        fine_map_str(o, "name", "input");
        fine_map_tensor_fields(o, &t);
        if (rc == 0)
            rc = fine_writer_put(w, o, &e);
        fine_map_free(o);
    }
    fine_net_free(net);
    free(x);
    free(pos);
    free(g);
    free(dx);
    free(d0);
    free(d1);
    fine_reader_close(r);
    if (rc < 0) {
        fine_writer_abort(w);
        return fine_cli_fail(TOOL, &e);
    }
    if (fine_writer_close(w, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    return 0;
}

int main(int argc, char **argv)
{
    fine_cli_omp_passive(argv);
    fine_cli_init();
    if (argc < 2)
        return fine_cli_usage(TOOL, "expected a command: describe, init or run");
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage();
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        fine_cli_version(TOOL);
        return 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "describe") && strcmp(cmd, "init") && strcmp(cmd, "run"))
        return fine_cli_usage(TOOL, "unknown command '%s'", cmd);
    const char *preset = NULL, *config = NULL, *model = NULL, *out = NULL;
    char *sets[64];
    int nsets = 0, B = 1, grad = 0, force = 0, threads = 0;
    int64_t seed = 0;
    static const struct option opts[] = {
        {"preset", required_argument, 0, 'p'}, {"config", required_argument, 0, 'c'},
        {"model", required_argument, 0, 'm'},  {"set", required_argument, 0, 's'},
        {"batch", required_argument, 0, 'b'},  {"seed", required_argument, 0, 'S'},
        {"grad", no_argument, 0, 'g'},         {"threads", required_argument, 0, 't'},
        {"force", no_argument, 0, 'f'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "o:fh", opts, NULL)) != -1) {
        int64_t v;
        switch (ch) {
        case 'p': preset = optarg; break;
        case 'c': config = optarg; break;
        case 'm': model = optarg; break;
        case 's':
            if (nsets == 64)
                return fine_cli_usage(TOOL, "too many --set");
            sets[nsets++] = optarg;
            break;
        case 'b':
            if (fine_parse_i64(optarg, &v) < 0 || v < 1 || v > 64)
                return fine_cli_usage(TOOL, "--batch must be 1..64");
            B = (int)v;
            break;
        case 'S':
            if (fine_parse_i64(optarg, &seed) < 0)
                return fine_cli_usage(TOOL, "--seed must be a non-negative integer");
            break;
        case 't':
            if (fine_parse_i64(optarg, &v) < 0 || v > 1024)
                return fine_cli_usage(TOOL, "--threads must be 0..1024");
            threads = (int)v;
            break;
        case 'g': grad = 1; break;
        case 'f': force = 1; break;
        case 'o': out = optarg; break;
        case 'h': usage(); return 0;
        default: return fine_cli_usage(TOOL, "unknown option");
        }
    }
    fine_nn_set_threads(threads);
    fine_err e = {0};
    fine_model m;
    fine_config c;
    if (model) {
        if (preset || config)
            return fine_cli_usage(TOOL, "--model excludes --preset and --config");
        if (fine_checkpoint_load(model, &m, NULL, NULL, &e) < 0)
            return fine_cli_fail(TOOL, &e);
        if (nsets)
            return fine_cli_usage(TOOL, "--set applies to presets and config files, not to checkpoints");
        c = m.cfg;
    } else {
        if (strcmp(cmd, "run") == 0)
            return fine_cli_usage(TOOL, "run needs --model CKPT");
        if (!!preset + !!config != 1)
            return fine_cli_usage(TOOL, "give one of --preset, --config or --model");
        if (preset && fine_config_preset(&c, preset) < 0)
            return fine_cli_usage(TOOL, "unknown preset '%s' (bcv, small, tiny)", preset);
        if (config && fine_config_read(config, &c, &e) < 0)
            return fine_cli_fail(TOOL, &e);
        for (int i = 0; i < nsets; i++)
            if (fine_config_set(&c, sets[i], &e) < 0)
                return fine_cli_usage(TOOL, "%s", e.msg);
        if (fine_model_build(&m, &c, &e) < 0)
            return fine_cli_fail(TOOL, &e);
    }
    int rc = 0;
    if (strcmp(cmd, "describe") == 0) {
        if (optind != argc)
            rc = fine_cli_usage(TOOL, "describe takes no file arguments");
        else
            describe(&m, B);
    } else if (strcmp(cmd, "init") == 0) {
        if (!out || optind != argc)
            rc = fine_cli_usage(TOOL, "init needs -o CKPT and no other arguments");
        else {
            fine_model_init(&m, (uint64_t)seed);
            if (fine_checkpoint_save(out, &m, TOOL, argc, argv, force, &e) < 0)
                rc = fine_cli_fail(TOOL, &e);
        }
    } else {
        if (optind != argc - 2)
            rc = fine_cli_usage(TOOL, "run needs IN and OUT (streams, - for stdin/stdout)");
        else
            rc = run(&m, argv[optind], argv[optind + 1], B, grad, force, argc, argv);
    }
    fine_model_free(&m);
    return rc;
}
