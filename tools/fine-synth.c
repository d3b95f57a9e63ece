/* fine-synth: a synthetic BCV-like abdominal CT data set (13 organs) as NIfTI files, in the raw
 * BCV layout or the nnU-Net raw layout. The anatomy and the orientation convention are in
 * lib/synth.h; this file parses options, plans the file names, runs cases on threads and
 * writes them. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "nifti_io.h"
#include "synth.h"

static const char *TOOL = "fine-synth";

#define MAX_SERIAL 999
#define PATH_CAP 4096

static void usage(void)
{
    printf("Usage: fine-synth [options] OUTDIR\n"
           "Make a synthetic abdominal CT data set shaped like BCV (Multi-Atlas Labeling Beyond\n"
           "the Cranial Vault): int16 images in HU and uint8 labels with the 13 BCV organ ids\n"
           "(1 spleen, 2 right kidney, 3 left kidney, 4 gallbladder, 5 esophagus, 6 liver,\n"
           "7 stomach, 8 aorta, 9 IVC, 10 portal/splenic vein, 11 pancreas, 12 right adrenal,\n"
           "13 left adrenal). Array x grows toward the patient's left, y toward posterior, z\n"
           "toward superior (affine diag(-sx, -sy, sz), axis codes L P S).\n\n"
           "Options:\n"
           "  --layout bcv|nnunet  bcv (default): OUTDIR/img/imgXXXX.nii.gz and\n"
           "                       OUTDIR/label/labelXXXX.nii.gz; nnunet:\n"
           "                       OUTDIR/imagesTr/ABD_XXX_0000.nii.gz, "
           "OUTDIR/labelsTr/ABD_XXX.nii.gz\n"
           "                       and OUTDIR/dataset.json (nnU-Net v1, Task017_BCV style)\n"
           "  --cases N            the first N serials of 1-10, 21-40, 41, 42, ... (default 30:\n"
           "                       the 30 labelled BCV serials)\n"
           "  --ids LIST           these serials instead: comma list of numbers and ranges A..B,\n"
           "                       e.g. 1,2,21..25 (serials 1 to %d)\n"
           "  --seed S             data set seed (default 0); a case depends only on the seed,\n"
           "                       its serial and the scale\n"
           "  --scale F            grid scale, 0.05 to 2 (default 1: 512x512 in-plane, 85-198\n"
           "                       slices); 0.25 gives 128x128 and 21-50 slices over the same\n"
           "                       physical extent\n"
           "  --threads N          cases made in parallel (default: the number of CPUs); the\n"
           "                       files do not depend on it\n"
           "  --force              overwrite existing files\n"
           "  --quiet              no progress line\n"
           "  --progress           a progress line even when stderr is not a terminal\n"
           "  -h, --help           this help\n"
           "  --version            print the version\n\n"
           "Examples:\n"
           "  fine-synth --scale 0.25 raw/                 30 cases in the raw BCV layout\n"
           "  fine-synth --layout nnunet --cases 4 --scale 0.25 --seed 7 nnUNet_raw/Task017_BCV\n",
           MAX_SERIAL);
}

/* ------------------------------------------------------------------------------------------ */

/* Parses "1,2,21..25" into serials (no duplicates, each 1..MAX_SERIAL). Returns the count, or
 * -1 with a message in msg. */
static int parse_ids(const char *s, int *out, int cap, char *msg, size_t msgn)
{
    char seen[MAX_SERIAL + 1] = {0};
    int n = 0;
    const char *p = s;
    if (!*p) {
        snprintf(msg, msgn, "--ids: empty list");
        return -1;
    }
    while (*p) {
        char *end;
        errno = 0;
        long a = strtol(p, &end, 10), b;
        if (end == p || errno || *p == '-' || *p == '+') {
            snprintf(msg, msgn, "--ids: '%s' is not a list of serials like 1,2,21..25", s);
            return -1;
        }
        p = end;
        b = a;
        if (p[0] == '.' && p[1] == '.') {
            p += 2;
            errno = 0;
            b = strtol(p, &end, 10);
            if (end == p || errno || *p == '-' || *p == '+') {
                snprintf(msg, msgn, "--ids: '%s' is not a list of serials like 1,2,21..25", s);
                return -1;
            }
            p = end;
        }
        if (*p == ',')
            p++;
        else if (*p) {
            snprintf(msg, msgn, "--ids: '%s' is not a list of serials like 1,2,21..25", s);
            return -1;
        }
        if (a < 1 || b > MAX_SERIAL || a > b) {
            snprintf(msg, msgn, "--ids: %ld..%ld is not a range of serials within 1..%d", a, b,
                     MAX_SERIAL);
            return -1;
        }
        for (long v = a; v <= b; v++) {
            if (seen[v]) {
                snprintf(msg, msgn, "--ids: serial %ld is listed twice", v);
                return -1;
            }
            seen[v] = 1;
            if (n == cap) {
                snprintf(msg, msgn, "--ids: too many serials");
                return -1;
            }
            out[n++] = (int)v;
        }
    }
    return n;
}

/* mkdir -p; returns 0 or -1 with e set. */
static int make_dirs(const char *path, fine_err *e)
{
    char buf[PATH_CAP];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return fine_err_set(e, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return fine_err_set(e, "%s: cannot create directory: %s", buf, strerror(errno));
            struct stat st;
            if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
                return fine_err_set(e, "%s: exists and is not a directory", buf);
            *p = c;
            if (!c)
                break;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */

typedef struct job {
    fine_synth_opts opts;
    int ncases;
    const int *serials;
    char (*img)[PATH_CAP];
    char (*lab)[PATH_CAP];
    int force;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    int next, done, exited, failed;
    int last_serial;
    fine_err err;
} job;

static void *worker(void *arg)
{
    job *J = arg;
    for (;;) {
        pthread_mutex_lock(&J->mu);
        int i = J->failed ? J->ncases : J->next++;
        pthread_mutex_unlock(&J->mu);
        if (i >= J->ncases)
            break;
        fine_err e = {0};
        fine_tensor im, lb;
        fine_geometry g;
        int rc = fine_synth_case(&J->opts, J->serials[i], &im, &lb, &g, &e);
        if (rc == 0) {
            rc = fine_nifti_write(J->img[i], &im, &g, J->force, &e);
            if (rc == 0)
                rc = fine_nifti_write(J->lab[i], &lb, &g, J->force, &e);
            fine_tensor_free(&im);
            fine_tensor_free(&lb);
        }
        pthread_mutex_lock(&J->mu);
        if (rc < 0 && !J->failed) {
            J->failed = 1;
            J->err = e;
        }
        if (rc == 0) {
            J->done++;
            J->last_serial = J->serials[i];
        }
        pthread_cond_signal(&J->cv);
        pthread_mutex_unlock(&J->mu);
    }
    pthread_mutex_lock(&J->mu);
    J->exited++;
    pthread_cond_signal(&J->cv);
    pthread_mutex_unlock(&J->mu);
    return NULL;
}

/* dataset.json of the nnU-Net v1 raw layout (Task017_BCV conversion script's fields). */
static int write_dataset_json(const char *outdir, const int *serials, int n,
                              const fine_synth_opts *o, int force, fine_err *e)
{
    char path[PATH_CAP], tmp[PATH_CAP + 32];
    snprintf(path, sizeof path, "%s/dataset.json", outdir);
    snprintf(tmp, sizeof tmp, "%s/.dataset.json.tmp%ld", outdir, (long)getpid());
    if (!force && access(path, F_OK) == 0)
        return fine_err_set(e, "%s: exists (use --force to overwrite)", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return fine_err_set(e, "%s: cannot write: %s", tmp, strerror(errno));
    fprintf(f, "{\n");
    fprintf(f, "    \"name\": \"AbdominalOrganSegmentation\",\n");
    fprintf(f,
            "    \"description\": \"Synthetic abdominal CT shaped like Multi-Atlas Labeling Beyond "
            "the Cranial Vault (fine-synth seed %llu, scale %g)\",\n",
            (unsigned long long)o->seed, o->scale);
    fprintf(f, "    \"tensorImageSize\": \"3D\",\n");
    fprintf(f,
            "    \"reference\": \"https://www.synapse.org/#!Synapse:syn3193805/wiki/217789\",\n");
    fprintf(f, "    \"licence\": \"synthetic data, no restrictions\",\n");
    fprintf(f, "    \"release\": \"0.0\",\n");
    fprintf(f, "    \"modality\": {\n        \"0\": \"CT\"\n    },\n");
    fprintf(f, "    \"labels\": {\n");
    for (int l = 0; l < FINE_SYNTH_LABELS; l++)
        fprintf(f, "        \"%d\": \"%s\"%s\n", l, fine_synth_label_name(l),
                l + 1 < FINE_SYNTH_LABELS ? "," : "");
    fprintf(f, "    },\n");
    fprintf(f, "    \"numTraining\": %d,\n", n);
    fprintf(f, "    \"numTest\": 0,\n");
    fprintf(f, "    \"training\": [\n");
    for (int i = 0; i < n; i++)
        fprintf(f,
                "        {\n            \"image\": \"./imagesTr/ABD_%03d.nii.gz\",\n"
                "            \"label\": \"./labelsTr/ABD_%03d.nii.gz\"\n        }%s\n",
                serials[i], serials[i], i + 1 < n ? "," : "");
    fprintf(f, "    ],\n");
    fprintf(f, "    \"test\": []\n");
    fprintf(f, "}\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        unlink(tmp);
        return fine_err_set(e, "%s: write failed", path);
    }
    if (rename(tmp, path) != 0) {
        int err = errno;
        unlink(tmp);
        return fine_err_set(e, "%s: %s", path, strerror(err));
    }
    return 0;
}

int main(int argc, char **argv)
{
    fine_cli_init();
    enum {
        O_LAYOUT = 256,
        O_CASES,
        O_IDS,
        O_SEED,
        O_SCALE,
        O_THREADS,
        O_FORCE,
        O_QUIET,
        O_PROGRESS,
        O_VERSION
    };
    static const struct option opts[] = {
        {"layout", required_argument, 0, O_LAYOUT}, {"cases", required_argument, 0, O_CASES},
        {"ids", required_argument, 0, O_IDS},       {"seed", required_argument, 0, O_SEED},
        {"scale", required_argument, 0, O_SCALE},   {"threads", required_argument, 0, O_THREADS},
        {"force", no_argument, 0, O_FORCE},         {"quiet", no_argument, 0, O_QUIET},
        {"progress", no_argument, 0, O_PROGRESS},   {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, O_VERSION},     {0, 0, 0, 0}};
    int nnunet = 0, force = 0, quiet = 0, progress = 0;
    int64_t ncases = 30, threads = 0, seed = 0;
    int have_cases = 0;
    const char *ids = NULL;
    fine_synth_opts so;
    fine_synth_opts_init(&so);
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_LAYOUT:
            if (strcmp(optarg, "bcv") == 0)
                nnunet = 0;
            else if (strcmp(optarg, "nnunet") == 0)
                nnunet = 1;
            else
                return fine_cli_usage(TOOL, "--layout: '%s' is neither bcv nor nnunet", optarg);
            break;
        case O_CASES:
            if (fine_parse_i64(optarg, &ncases) < 0 || ncases < 1 || ncases > MAX_SERIAL - 20)
                return fine_cli_usage(TOOL, "--cases: '%s' is not a number of cases (1 to %d)",
                                      optarg, MAX_SERIAL - 20);
            have_cases = 1;
            break;
        case O_IDS: ids = optarg; break;
        case O_SEED:
            if (fine_parse_i64(optarg, &seed) < 0)
                return fine_cli_usage(TOOL, "--seed: '%s' is not a non-negative integer", optarg);
            break;
        case O_SCALE: {
            double f;
            if (fine_parse_f64s(optarg, &f, 1, 0) < 0 || !(f >= 0.05 && f <= 2))
                return fine_cli_usage(TOOL, "--scale: '%s' is not a scale from 0.05 to 2", optarg);
            so.scale = f;
            break;
        }
        case O_THREADS:
            if (fine_parse_i64(optarg, &threads) < 0 || threads < 1 || threads > 1024)
                return fine_cli_usage(TOOL, "--threads: '%s' is not a thread count (1 to 1024)",
                                      optarg);
            break;
        case O_FORCE: force = 1; break;
        case O_QUIET: quiet = 1; break;
        case O_PROGRESS: progress = 1; break;
        case 'h': usage(); return FINE_EXIT_OK;
        case O_VERSION: fine_cli_version(TOOL); return FINE_EXIT_OK;
        default: return fine_cli_usage(TOOL, "unknown option");
        }
    }
    if (optind != argc - 1)
        return fine_cli_usage(TOOL, "expected one output directory");
    if (ids && have_cases)
        return fine_cli_usage(TOOL, "--cases and --ids exclude each other");
    const char *outdir = argv[optind];
    if (!outdir[0])
        return fine_cli_usage(TOOL, "the output directory is an empty string");
    so.seed = (uint64_t)seed;

    static int serials[MAX_SERIAL];
    int n;
    if (ids) {
        char msg[256];
        n = parse_ids(ids, serials, MAX_SERIAL, msg, sizeof msg);
        if (n < 0)
            return fine_cli_usage(TOOL, "%s", msg);
    } else {
        n = (int)ncases;
        for (int i = 0; i < n; i++)
            serials[i] = fine_synth_serial(i);
    }

    /* The file names, and a refusal before anything is written when one exists. */
    fine_err e = {0};
    char(*img)[PATH_CAP] = calloc((size_t)n, PATH_CAP);
    char(*lab)[PATH_CAP] = calloc((size_t)n, PATH_CAP);
    if (!img || !lab) {
        fine_err_set(&e, "out of memory");
        return fine_cli_fail(TOOL, &e);
    }
    const char *dimg = nnunet ? "imagesTr" : "img", *dlab = nnunet ? "labelsTr" : "label";
    for (int i = 0; i < n; i++) {
        int a, b;
        if (nnunet) {
            a = snprintf(img[i], PATH_CAP, "%s/%s/ABD_%03d_0000.nii.gz", outdir, dimg, serials[i]);
            b = snprintf(lab[i], PATH_CAP, "%s/%s/ABD_%03d.nii.gz", outdir, dlab, serials[i]);
        } else {
            a = snprintf(img[i], PATH_CAP, "%s/%s/img%04d.nii.gz", outdir, dimg, serials[i]);
            b = snprintf(lab[i], PATH_CAP, "%s/%s/label%04d.nii.gz", outdir, dlab, serials[i]);
        }
        if (a >= PATH_CAP || b >= PATH_CAP) {
            fine_err_set(&e, "%s: path too long", outdir);
            return fine_cli_fail(TOOL, &e);
        }
        if (!force) {
            const char *p = access(img[i], F_OK) == 0   ? img[i]
                            : access(lab[i], F_OK) == 0 ? lab[i]
                                                        : NULL;
            if (p) {
                fine_err_set(&e, "%s: exists (use --force to overwrite)", p);
                return fine_cli_fail(TOOL, &e);
            }
        }
    }
    char sub[PATH_CAP];
    if (nnunet && !force) {
        snprintf(sub, sizeof sub, "%s/dataset.json", outdir);
        if (access(sub, F_OK) == 0) {
            fine_err_set(&e, "%s: exists (use --force to overwrite)", sub);
            return fine_cli_fail(TOOL, &e);
        }
    }
    snprintf(sub, sizeof sub, "%s/%s", outdir, dimg);
    if (make_dirs(sub, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    snprintf(sub, sizeof sub, "%s/%s", outdir, dlab);
    if (make_dirs(sub, &e) < 0)
        return fine_cli_fail(TOOL, &e);

    /* The cases, on threads; the main thread draws the progress line. */
    if (threads == 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cpus > 0 ? cpus : 1;
    }
    if (threads > n)
        threads = n;
    job J;
    memset(&J, 0, sizeof J);
    J.opts = so;
    J.ncases = n;
    J.serials = serials;
    J.img = img;
    J.lab = lab;
    J.force = force;
    pthread_mutex_init(&J.mu, NULL);
    pthread_cond_init(&J.cv, NULL);
    pthread_t *tid = calloc((size_t)threads, sizeof *tid);
    if (!tid) {
        fine_err_set(&e, "out of memory");
        return fine_cli_fail(TOOL, &e);
    }
    fine_progress pr;
    fine_progress_init(&pr, TOOL, quiet, progress);
    int started = 0;
    for (int t = 0; t < threads; t++) {
        if (pthread_create(&tid[t], NULL, worker, &J) != 0)
            break;
        started++;
    }
    if (started == 0) {
        fine_err_set(&e, "cannot start a thread");
        return fine_cli_fail(TOOL, &e);
    }
    pthread_mutex_lock(&J.mu);
    int shown = -1;
    for (;;) {
        if (J.done != shown) {
            shown = J.done;
            char what[32];
            if (J.done > 0)
                snprintf(what, sizeof what, nnunet ? "ABD_%03d" : "img%04d", J.last_serial);
            else
                snprintf(what, sizeof what, "scale %g", so.scale);
            pthread_mutex_unlock(&J.mu);
            fine_progress_update(&pr, shown, n, what);
            pthread_mutex_lock(&J.mu);
            continue;
        }
        if (J.exited >= started)
            break;
        pthread_cond_wait(&J.cv, &J.mu);
    }
    pthread_mutex_unlock(&J.mu);
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    fine_progress_done(&pr);
    free(tid);
    free(img);
    free(lab);
    if (J.failed)
        return fine_cli_fail(TOOL, &J.err);
    if (J.done < n) {
        fine_err_set(&e, "only %d of %d cases were made", J.done, n);
        return fine_cli_fail(TOOL, &e);
    }
    if (nnunet && write_dataset_json(outdir, serials, n, &so, force, &e) < 0)
        return fine_cli_fail(TOOL, &e);
    return FINE_EXIT_OK;
}
