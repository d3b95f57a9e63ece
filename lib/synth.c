/* synth.c: a synthetic BCV-like abdominal CT case (see synth.h for the contract and the
 * orientation convention).
 *
 * How a case is made:
 *   1. plan_build draws every parameter of the case (grid, body, spine, organ shapes and
 *      intensities) from a xoshiro256** generator seeded by (seed, serial), in a fixed order
 *      that does not depend on the grid scale. Anatomy lives in a "body frame" in millimetres:
 *      u toward the patient's left, v toward posterior, w toward superior, with the in-plane
 *      origin at the body centre and w = 0 near the renal hila (about L1/L2). The body frame is
 *      rotated by a few degrees about z relative to the array.
 *   2. render_base fills every voxel with the background: air, table, subcutaneous fat,
 *      muscle wall, ribs, mottled visceral fat, diaphragm, lung bases, paraspinal muscles, psoas
 *      and vertebrae. It also records a region code per voxel that later paints respect (organs
 *      never overwrite bone or the back muscles; liver, spleen and stomach stay in the abdomen).
 *   3. The organs are painted in order, later over earlier: each paint is a union of deformed
 *      ellipsoids and capsules (tubes with a linearly varying radius) with a label and an
 *      intensity (base HU plus a low-frequency texture). The boundary of each primitive is
 *      perturbed by low-frequency value noise, so shapes differ from case to case.
 *   4. The image is blurred slightly (a separable Gaussian of 0.6 voxel in-plane, 0.4 across
 *      slices) and white Gaussian noise of 10-20 HU is added; labels stay crisp.
 * Everything is a function of (seed, serial, scale): no global state, no time, no threads. */
#include "synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846
#define DEG (PI / 180.0)

/* ------------------------------------------------------------------------------------------ */
/* Random numbers: splitmix64 for seeding and hashing, xoshiro256** for streams.               */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

typedef struct rng {
    uint64_t s[4];
} rng;

static void rng_seed(rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in [0, 1). */
static double rng_unif(rng *r)
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static double U(rng *r, double a, double b)
{
    return a + (b - a) * rng_unif(r);
}

/* Uniform in [-a, a]: a jitter. */
static double J(rng *r, double a)
{
    return U(r, -a, a);
}

/* The key of a case: every stream of the case is derived from it. */
static uint64_t case_key(uint64_t seed, int serial)
{
    uint64_t x = seed;
    uint64_t a = splitmix64(&x);
    x = a ^ ((uint64_t)(uint32_t)serial * 0xD1B54A32D192ED03ULL);
    return splitmix64(&x);
}

/* ------------------------------------------------------------------------------------------ */
/* Low-frequency noise: value noise on the integer lattice, smooth-step interpolated.          */

static double lattice(uint64_t key, int64_t x, int64_t y, int64_t z)
{
    uint64_t h = key + (uint64_t)x * 0x9E3779B97F4A7C15ULL + (uint64_t)y * 0xC2B2AE3D27D4EB4FULL +
                 (uint64_t)z * 0x165667B19E3779F9ULL;
    h = mix64(h);
    return (double)(h >> 11) * 0x1.0p-52 - 1.0; /* [-1, 1) */
}

/* Value noise in [-1, 1], one lattice cell per unit of x, y, z. The lattice is rotated
 * against the axes (a fixed orthogonal matrix) so that no box pattern shows in the slices. */
static double vnoise(uint64_t key, double x0, double y0, double z0)
{
    double x = 0.80 * y0 + 0.60 * z0;
    double y = -0.80 * x0 + 0.36 * y0 - 0.48 * z0;
    double z = -0.60 * x0 - 0.48 * y0 + 0.64 * z0;
    double fx = floor(x), fy = floor(y), fz = floor(z);
    int64_t ix = (int64_t)fx, iy = (int64_t)fy, iz = (int64_t)fz;
    double tx = x - fx, ty = y - fy, tz = z - fz;
    tx = tx * tx * (3 - 2 * tx);
    ty = ty * ty * (3 - 2 * ty);
    tz = tz * tz * (3 - 2 * tz);
    double c00 = lattice(key, ix, iy, iz) * (1 - tx) + lattice(key, ix + 1, iy, iz) * tx;
    double c10 = lattice(key, ix, iy + 1, iz) * (1 - tx) + lattice(key, ix + 1, iy + 1, iz) * tx;
    double c01 = lattice(key, ix, iy, iz + 1) * (1 - tx) + lattice(key, ix + 1, iy, iz + 1) * tx;
    double c11 =
        lattice(key, ix, iy + 1, iz + 1) * (1 - tx) + lattice(key, ix + 1, iy + 1, iz + 1) * tx;
    double c0 = c00 * (1 - ty) + c10 * ty;
    double c1 = c01 * (1 - ty) + c11 * ty;
    return c0 * (1 - tz) + c1 * tz;
}

/* Two octaves, for organ boundaries: still within [-1, 1]. */
static double fnoise(uint64_t key, double x, double y, double z)
{
    return 0.75 * vnoise(key, x, y, z) + 0.25 * vnoise(key ^ 0x5851F42D4C957F2DULL, 2.03 * x + 17.1,
                                                       2.03 * y + 3.7, 2.03 * z + 9.2);
}

/* ------------------------------------------------------------------------------------------ */
/* The plan of a case.                                                                          */

/* Region codes of the base pass: paints respect them. */
enum { REG_AIR, REG_FAT, REG_WALL, REG_ABD, REG_DIAPH, REG_THORAX, REG_SOLID };
/* Where a paint may go: anywhere but air and bone or back muscle; the abdomen; the thorax. */
enum { IN_ANY, IN_ABD, IN_THORAX };

enum { PRIM_ELL, PRIM_CAP };

typedef struct prim {
    int kind;
    double c[3], s[3];   /* ellipsoid: centre and semi-axes (local x, y, z) */
    double rot[3][3];    /* ellipsoid: columns are the local axes in the body frame */
    double p0[3], p1[3]; /* capsule: the axis segment */
    double r0, r1;       /* capsule: radius at p0 and at p1 */
    double amp, lam;     /* boundary deformation: relative amplitude, wavelength (mm) */
    uint64_t key;
} prim;

typedef struct paint {
    int first, n; /* its primitives, a union */
    int label;    /* label to write, -1: leave the label */
    int only;     /* -1, or paint only voxels that already have this label */
    int where;    /* IN_ANY, IN_ABD, IN_THORAX */
    int half_on;  /* paint only where half[0] u + half[1] v + half[2] w < half[3] */
    double half[4];
    double hu, tex, lam; /* intensity: hu + tex * noise(p / lam) */
    uint64_t key;
} paint;

#define MAX_PRIMS 192
#define MAX_PAINTS 80

typedef struct plan {
    /* grid */
    int64_t n[3];   /* (z, y, x) */
    double sp[3];   /* (z, y, x) mm */
    double fov, ez; /* in-plane field of view and z extent, mm */
    /* RAS (mm) of the grid's outer corner: the patient-right, anterior, inferior edges */
    double x_left, y_ant, z_bottom;
    /* body frame */
    double cx, cy, ct, st, zref;
    double su, sv, sw, so; /* anatomy scale factors: lateral, AP, cranio-caudal, organ size */
    /* body */
    double A, B, Am, Bm, Ac, Bc;
    uint64_t k_body, k_mottle, k_lung;
    double hu_fat, hu_muscle, hu_soft, hu_lung;
    int table;
    double y_table;
    /* diaphragm: two domes */
    double wR, wL, uR, vR, uL, vL, rd;
    /* spine and back */
    double vb_v, vb_a, vb_b, canal_v, canal_r, per, disc, phase, hu_cort, hu_canc;
    double para_u, para_v, para_a, para_b;
    double rib_per, rib_phase, hu_rib;
    /* image */
    double noise_sd;
    uint64_t k_noise;
    /* organs */
    int nprim, npaint;
    prim prims[MAX_PRIMS];
    paint paints[MAX_PAINTS];
} plan;

typedef struct vec3 {
    double u, v, w;
} vec3;

static vec3 V3(double u, double v, double w)
{
    vec3 p = {u, v, w};
    return p;
}

static void rot_matrix(double r[3][3], double alpha, double beta, double gamma)
{
    /* R = Rz(alpha) Ry(beta) Rx(gamma): alpha about w (in-plane), beta about v, gamma about u. */
    double ca = cos(alpha), sa = sin(alpha), cb = cos(beta), sb = sin(beta), cg = cos(gamma),
           sg = sin(gamma);
    double rz[3][3] = {{ca, -sa, 0}, {sa, ca, 0}, {0, 0, 1}};
    double ry[3][3] = {{cb, 0, sb}, {0, 1, 0}, {-sb, 0, cb}};
    double rx[3][3] = {{1, 0, 0}, {0, cg, -sg}, {0, sg, cg}};
    double t[3][3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            t[i][j] = 0;
            for (int k = 0; k < 3; k++)
                t[i][j] += ry[i][k] * rx[k][j];
        }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            r[i][j] = 0;
            for (int k = 0; k < 3; k++)
                r[i][j] += rz[i][k] * t[k][j];
        }
}

/* A point given in an ellipsoid's local frame, in the body frame. */
static vec3 local_to_body(const prim *p, double x, double y, double z)
{
    vec3 o;
    o.u = p->c[0] + p->rot[0][0] * x + p->rot[0][1] * y + p->rot[0][2] * z;
    o.v = p->c[1] + p->rot[1][0] * x + p->rot[1][1] * y + p->rot[1][2] * z;
    o.w = p->c[2] + p->rot[2][0] * x + p->rot[2][1] * y + p->rot[2][2] * z;
    return o;
}

/* Starts a paint; the primitives added next belong to it. */
static paint *begin_paint(plan *P, int label, double hu, double tex, double lam, uint64_t key)
{
    paint *q = &P->paints[P->npaint++];
    memset(q, 0, sizeof *q);
    q->first = P->nprim;
    q->label = label;
    q->only = -1;
    q->where = IN_ANY;
    q->hu = hu;
    q->tex = tex;
    q->lam = lam > 0 ? lam : 1;
    q->key = key;
    return q;
}

static prim *add_prim(plan *P, int kind, double amp, double lam, uint64_t key)
{
    prim *p = &P->prims[P->nprim++];
    memset(p, 0, sizeof *p);
    p->kind = kind;
    p->amp = amp;
    p->lam = lam;
    p->key = key;
    P->paints[P->npaint - 1].n++;
    return p;
}

static prim *add_ell(plan *P, vec3 c, vec3 s, double alpha, double beta, double gamma, double amp,
                     double lam, uint64_t key)
{
    prim *p = add_prim(P, PRIM_ELL, amp, lam, key);
    p->c[0] = c.u, p->c[1] = c.v, p->c[2] = c.w;
    p->s[0] = s.u, p->s[1] = s.v, p->s[2] = s.w;
    rot_matrix(p->rot, alpha, beta, gamma);
    return p;
}

static prim *add_cap(plan *P, vec3 a, vec3 b, double r0, double r1, double amp, double lam,
                     uint64_t key)
{
    prim *p = add_prim(P, PRIM_CAP, amp, lam, key);
    p->p0[0] = a.u, p->p0[1] = a.v, p->p0[2] = a.w;
    p->p1[0] = b.u, p->p1[1] = b.v, p->p1[2] = b.w;
    p->r0 = r0;
    p->r1 = r1;
    return p;
}

/* A copy of an ellipsoid or capsule, grown by d mm (shrunk when d < 0), in the current paint. */
static void add_grown(plan *P, const prim *src, double d)
{
    prim *p = add_prim(P, src->kind, src->amp, src->lam, src->key);
    *p = *src;
    for (int i = 0; i < 3; i++)
        p->s[i] = fmax(src->s[i] + d, 0.5);
    p->r0 = fmax(src->r0 + d, 0.5);
    p->r1 = fmax(src->r1 + d, 0.5);
}

/* Copies paint src's primitives grown by d into the current paint. */
static void add_grown_paint(plan *P, int src, double d)
{
    const paint *q = &P->paints[src];
    for (int i = 0; i < q->n; i++)
        add_grown(P, &P->prims[q->first + i], d);
}

static double lerp(double a, double b, double t)
{
    return a + (b - a) * t;
}

/* The diaphragm surface height at (u, v): the higher of two domes. */
static double dome(const plan *P, double u, double v)
{
    double r = ((u - P->uR) * (u - P->uR) + (v - P->vR) * (v - P->vR)) / (2 * P->rd);
    double l = ((u - P->uL) * (u - P->uL) + (v - P->vL) * (v - P->vL)) / (2 * P->rd);
    return fmax(P->wR - r, P->wL - l);
}

/* |x|^2.5 + |y|^2.5: the body cross-section is this superellipse (<= 1 inside). */
static double sell(double x, double y)
{
    x = fabs(x);
    y = fabs(y);
    return x * x * sqrt(x) + y * y * sqrt(y);
}

/* Grid and body: the part of the plan fine_synth_geometry needs. Draws from r in a fixed order. */
static void plan_grid(plan *P, rng *r, double scale)
{
    double sz_full = 2.5 + 0.5 * floor(U(r, 0, 6)); /* 2.5, 3.0, ..., 5.0 mm */
    double ez_want = U(r, 360, 520);
    long nz_full = lround(ez_want / sz_full);
    if (nz_full < 85)
        nz_full = 85;
    if (nz_full > 198)
        nz_full = 198;
    P->ez = (double)nz_full * sz_full;

    P->A = U(r, 125, 180);
    P->B = P->A * U(r, 0.70, 0.82);
    double fov_min = ceil(fmax(0.6 * 512, 2 * P->A + 50));
    P->fov = round(U(r, fov_min, 512)); /* whole mm; in-plane spacing fov / 512 in [0.6, 1.0] */

    double mx = fmin(15, P->fov / 2 - P->A - 15);
    double my = fmin(15, P->fov / 2 - P->B - 25);
    P->cx = J(r, mx);
    P->cy = J(r, my);
    double th = J(r, 6) * DEG;
    P->ct = cos(th);
    P->st = sin(th);
    P->zref = U(r, 95, P->ez - 175);

    /* World position (RAS mm) of the grid: like a scanner export, not centred on 0. */
    P->x_left = P->fov / 2 + round(J(r, 20));
    P->y_ant = P->fov / 2 + round(U(r, -30, 30));
    P->z_bottom = round(U(r, -700, -300));

    long nxy = lround(512 * scale);
    long nz = lround((double)nz_full * scale);
    if (nxy < 16)
        nxy = 16;
    if (nz < 8)
        nz = 8;
    P->n[0] = nz;
    P->n[1] = P->n[2] = nxy;
    P->sp[0] = P->ez / (double)nz;
    P->sp[1] = P->sp[2] = P->fov / (double)nxy;
}

static void plan_build(plan *P, uint64_t seed, int serial, double scale)
{
    memset(P, 0, sizeof *P);
    rng R, *r = &R;
    rng_seed(r, case_key(seed, serial));
    plan_grid(P, r, scale);

    /* ---- body wall ---- */
    double tfat = P->A * U(r, 0.05, 0.15), tmus = U(r, 8, 13);
    P->Am = P->A - tfat;
    P->Bm = P->B - tfat;
    P->Ac = P->Am - tmus;
    P->Bc = P->Bm - tmus;
    double su = P->su = P->Ac / 120.0, sv = P->sv = P->Bc / 85.0, sw = P->sw = U(r, 0.9, 1.1);
    double so = P->so = sqrt(su * sv);
    P->k_body = rng_next(r);
    P->k_mottle = rng_next(r);
    P->k_lung = rng_next(r);
    P->k_noise = rng_next(r);
    P->table = rng_unif(r) < 0.8;
    P->y_table = P->cy + P->B + 2;

    /* ---- intensities (HU): enhancement e scales the contrast-filled structures ---- */
    double e = U(r, 0.85, 1.15);
    P->hu_fat = U(r, -110, -85);
    P->hu_muscle = U(r, 38, 55);
    P->hu_soft = U(r, 25, 40);
    P->hu_lung = U(r, -870, -820);
    double hu_liver = U(r, 52, 68);
    double hu_spleen = hu_liver + U(r, -12, 4);
    double hu_kidney = 150 * e;
    double hu_aorta = 180 * e, hu_ivc = 120 * e, hu_portal = 140 * e, hu_heart = 130 * e;
    double hu_pancreas = U(r, 38, 52), hu_adrenal = U(r, 38, 52), hu_gb = U(r, 8, 22);
    double hu_eso = U(r, 35, 50), hu_gwall = U(r, 40, 55), hu_gcont = U(r, 5, 30);
    int gastric_air = rng_unif(r) < 0.7;
    P->noise_sd = U(r, 10, 20);
    P->hu_cort = U(r, 700, 1000);
    P->hu_canc = U(r, 300, 420);
    P->hu_rib = U(r, 450, 650);

    /* ---- diaphragm ---- */
    P->wR = 140 * sw + J(r, 8);
    P->wL = P->wR - U(r, 5, 20);
    P->uR = -55 * su;
    P->vR = 0;
    P->uL = 55 * su;
    P->vL = 10 * sv;
    P->rd = 70 * su;

    /* ---- spine and back muscles ---- */
    P->vb_a = 20 * so * U(r, 0.92, 1.08);
    P->vb_b = 16 * so * U(r, 0.92, 1.08);
    P->vb_v = 42 * sv;
    P->canal_r = 9 * so;
    P->canal_v = P->vb_v + P->vb_b + P->canal_r + 1.5;
    P->per = 36 * sw;
    P->disc = 9 * sw;
    P->phase = U(r, 0, P->per);
    P->para_u = P->canal_r + 24 * su;
    P->para_v = P->canal_v + 8 * sv;
    P->para_a = 24 * su;
    P->para_b = 18 * sv;
    P->rib_per = 30 * sw;
    P->rib_phase = U(r, 0, P->rib_per);

    /* ---- organs, painted in this order (later over earlier) ---- */
    paint *q;
    uint64_t k;

    /* Liver (6): a right lobe and a left lobe, under the right dome, inside the abdomen. */
    double fl = U(r, 0.95, 1.15);
    q = begin_paint(P, 6, hu_liver, 6, 25, rng_next(r));
    q->where = IN_ABD;
    k = rng_next(r);
    add_ell(P, V3(-55 * su + J(r, 6), -6 * sv + J(r, 5), P->wR - 75 * sw + J(r, 6)),
            V3(75 * su * fl, 70 * sv * fl, 85 * sw * fl), J(r, 8) * DEG, 0, 0, 0.12, 45, k);
    add_ell(P, V3(15 * su + J(r, 8), -42 * sv + J(r, 4), P->wR - 60 * sw + J(r, 6)),
            V3(60 * su * fl, 30 * sv * fl, 42 * sw * fl * U(r, 0.8, 1.2)), (-15 + J(r, 8)) * DEG, 0,
            0, 0.15, 35, k ^ 1);

    /* IVC geometry is needed by the hepatic veins; drawn here, painted later. */
    double r_ivc = 11 * so * U(r, 0.85, 1.15);
    double ivc_v = P->vb_v - P->vb_b - 2;
    vec3 I0 = V3(-26 * su, ivc_v, -110 * sw), I1 = V3(-26 * su + J(r, 3), ivc_v, -5 * sw);
    vec3 I2 = V3(-28 * su + J(r, 3), ivc_v - 20 * sv, 60 * sw);
    vec3 I3 = V3(-22 * su + J(r, 3), ivc_v - 26 * sv, P->wR - 12 * sw);

    /* Hepatic veins: vessel intensity inside the liver, still labelled liver. */
    q = begin_paint(P, -1, hu_ivc * 0.95, 4, 20, rng_next(r));
    q->only = 6;
    k = rng_next(r);
    add_cap(P, I3, V3(-85 * su + J(r, 8), -15 * sv + J(r, 8), P->wR - 55 * sw), 6 * so, 2.5 * so,
            0.1, 20, k);
    add_cap(P, I3, V3(-40 * su + J(r, 8), -55 * sv + J(r, 6), P->wR - 45 * sw), 5.5 * so, 2.5 * so,
            0.1, 20, k ^ 1);
    add_cap(P, I3, V3(10 * su + J(r, 8), -45 * sv + J(r, 6), P->wR - 35 * sw), 5 * so, 2.5 * so,
            0.1, 20, k ^ 2);

    /* Spleen (1): posterolateral on the left, long axis along the wall. */
    double fs = U(r, 0.85, 1.15);
    double spl_a = 25 * so * fs;
    q = begin_paint(P, 1, hu_spleen, 6, 25, rng_next(r));
    q->where = IN_ABD;
    prim *spleen = add_ell(P, V3(88 * su + J(r, 5), 36 * sv + J(r, 6), P->wL - 70 * sw + J(r, 8)),
                           V3(spl_a, 50 * so * fs, 42 * sw * fs), (40 + J(r, 8)) * DEG, 0, 0, 0.1,
                           35, rng_next(r));
    vec3 spl_hilum = local_to_body(spleen, -0.8 * spl_a, 0, -0.1 * spleen->s[2]);

    /* Bowel (label 0, only over background): colon, small bowel loops. Wall, then content. */
    {
        double rc = 20 * so;
        vec3 cp[7] = {
            V3(-85 * su, -10 * sv, -170 * sw), V3(-88 * su, -25 * sv, -15 * sw),
            V3(-30 * su, -72 * sv, -30 * sw),  V3(30 * su, -70 * sv, -20 * sw),
            V3(85 * su, -40 * sv, 20 * sw),    V3(92 * su, -5 * sv, 10 * sw),
            V3(88 * su, 5 * sv, -170 * sw),
        };
        for (int i = 0; i < 7; i++) {
            cp[i].u += J(r, 8);
            cp[i].v += J(r, 6);
            cp[i].w += J(r, 8);
        }
        int first = P->npaint;
        q = begin_paint(P, 0, 40, 4, 10, rng_next(r));
        q->only = 0;
        q->where = IN_ABD;
        k = rng_next(r);
        for (int i = 0; i < 6; i++)
            add_cap(P, cp[i], cp[i + 1], rc * U(r, 0.85, 1.15), rc * U(r, 0.85, 1.15), 0.15, 30,
                    k + (uint64_t)i);
        int air = rng_unif(r) < 0.6;
        q = begin_paint(P, 0, air ? -900 : -250, air ? 60 : 250, 8, rng_next(r));
        q->only = 0;
        q->where = IN_ABD;
        add_grown_paint(P, first, -3);

        int nsb = 6 + (int)(rng_next(r) % 5);
        for (int i = 0; i < nsb; i++) {
            vec3 a = V3(U(r, -70, 70) * su, U(r, -70, 10) * sv, U(r, -150, -35) * sw);
            double az = U(r, 0, 2 * PI), el = U(r, -0.6, 0.6), len = U(r, 40, 90);
            vec3 b = V3(a.u + len * cos(el) * cos(az), a.v + len * cos(el) * sin(az),
                        a.w + len * sin(el));
            double rs = U(r, 10, 15) * so;
            int f = P->npaint;
            q = begin_paint(P, 0, 40, 4, 10, rng_next(r));
            q->only = 0;
            q->where = IN_ABD;
            add_cap(P, a, b, rs, rs * U(r, 0.8, 1.2), 0.15, 25, rng_next(r));
            int sair = rng_unif(r) < 0.25;
            q = begin_paint(P, 0, sair ? -900 : U(r, 5, 35), sair ? 50 : 6, 10, rng_next(r));
            q->only = 0;
            q->where = IN_ABD;
            add_grown_paint(P, f, -3);
        }
    }

    /* Stomach (7): fundus under the left dome, body, antrum to the pylorus; then the duodenum. */
    double fst = U(r, 0.85, 1.15);
    vec3 fc = V3(42 * su + J(r, 6), -2 * sv + J(r, 6), P->wL - 40 * sw + J(r, 6));
    vec3 fsz = V3(34 * so * fst, 32 * so * fst, 34 * sw * fst);
    vec3 bc = V3(48 * su + J(r, 6), -42 * sv + J(r, 5), fc.w - 45 * sw);
    vec3 bsz = V3(36 * so * fst, 26 * so * fst, 48 * sw * fst);
    vec3 pa = V3(38 * su + J(r, 5), -55 * sv + J(r, 4), bc.w - 30 * sw);
    vec3 pyl = V3(-18 * su + J(r, 5), -58 * sv + J(r, 4), bc.w - 38 * sw + J(r, 5));
    /* The duodenum first, so that the stomach is painted over its start. */
    {
        vec3 d1 = V3(-38 * su, -40 * sv, pyl.w + 2 * sw),
             d2 = V3(-42 * su, -22 * sv, pyl.w - 45 * sw);
        vec3 d3 = V3(15 * su, -18 * sv, pyl.w - 55 * sw),
             d4 = V3(28 * su, -25 * sv, pyl.w - 35 * sw);
        int f = P->npaint;
        q = begin_paint(P, 0, 40, 4, 10, rng_next(r));
        q->only = 0;
        q->where = IN_ABD;
        k = rng_next(r);
        add_cap(P, pyl, d1, 11 * so, 11 * so, 0.1, 20, k);
        add_cap(P, d1, d2, 12 * so, 12 * so, 0.1, 20, k ^ 1);
        add_cap(P, d2, d3, 11 * so, 11 * so, 0.1, 20, k ^ 2);
        add_cap(P, d3, d4, 10 * so, 10 * so, 0.1, 20, k ^ 3);
        int dair = rng_unif(r) < 0.3;
        q = begin_paint(P, 0, dair ? -900 : U(r, 5, 35), dair ? 50 : 6, 10, rng_next(r));
        q->only = 0;
        q->where = IN_ABD;
        add_grown_paint(P, f, -3);
    }
    int stomach = P->npaint;
    q = begin_paint(P, 7, hu_gwall, 4, 15, rng_next(r));
    q->where = IN_ABD;
    k = rng_next(r);
    add_ell(P, fc, fsz, J(r, 10) * DEG, 0, 0, 0.1, 30, k);
    add_ell(P, bc, bsz, (-25 + J(r, 8)) * DEG, 0, (10 + J(r, 8)) * DEG, 0.1, 30, k ^ 1);
    add_cap(P, pa, pyl, 17 * so, 11 * so, 0.1, 25, k ^ 2);
    q = begin_paint(P, 7, hu_gcont, 8, 12, rng_next(r));
    q->only = 7;
    add_grown_paint(P, stomach, -4.5);
    int stomach_in = P->npaint - 1;
    double air_v = bc.v - bsz.v * U(r, 0.35, 0.75); /* fluid level: air is anterior (up) */
    if (gastric_air) {
        q = begin_paint(P, 7, -1000, 30, 10, rng_next(r));
        q->only = 7;
        q->half_on = 1;
        q->half[1] = 1;
        q->half[3] = air_v;
        add_grown_paint(P, stomach_in, 0);
    }

    /* Kidneys (2 right, 3 left): same intensity, told apart only by side. Each sits in
     * perirenal fat; its sinus (fat and pelvis) opens at the hilum toward anteromedial. */
    vec3 kid_top[2], sinus_c[2];
    double fk = U(r, 0.85, 1.15); /* both kidneys about the same size */
    for (int side = 0; side < 2; side++) {
        double sg = side == 0 ? -1 : 1; /* -1: right (small u), +1: left */
        int lab = side == 0 ? 2 : 3;
        double f = fk * U(r, 0.95, 1.05);
        vec3 c =
            V3(sg * 70 * su + J(r, 5), 36 * sv + J(r, 4), (side == 0 ? -12 : 4) * sw + J(r, 10));
        vec3 s = V3(26 * so * f, 23 * so * f, 55 * sw * f);
        double alpha = (sg * 30 + J(r, 8)) * DEG, beta = (-sg * 15 + J(r, 5)) * DEG;
        uint64_t kk = rng_next(r);
        q = begin_paint(P, 0, P->hu_fat, 5, 10, rng_next(r));
        q->where = IN_ANY;
        add_ell(P, c, V3(s.u + 7, s.v + 7, s.w + 7), alpha, beta, 0, 0.05, 40, kk);
        q = begin_paint(P, lab, hu_kidney, 8, 12, rng_next(r));
        prim *kp = add_ell(P, c, s, alpha, beta, 0, 0.05, 40, kk);
        kid_top[side] = local_to_body(kp, 0, 0, 0.9 * s.w);
        /* the sinus opens toward the hilum: local +x for the right kidney (rotated by -30
         * degrees, so medial and anterior), local -x for the left one */
        double hx = -sg * 0.6 * s.u;
        sinus_c[side] = local_to_body(kp, hx, 0, 0);
        q = begin_paint(P, 0, U(r, -60, -20), 15, 8, rng_next(r));
        q->only = lab;
        add_ell(P, sinus_c[side], V3(0.5 * s.u, 0.42 * s.v, 0.45 * s.w), alpha, beta, 0, 0.1, 15,
                rng_next(r));
    }

    /* Aorta geometry (needed by the left renal vein). */
    double r_ao = 11 * so * U(r, 0.85, 1.15);
    double ao_u = 10 * su + J(r, 3), ao_v = P->vb_v - P->vb_b - r_ao - 2;
    double w_bif = -95 * sw + J(r, 10), w_top = P->ez - P->zref + 50;

    /* Renal veins (unlabelled, over background only): sinus to IVC; the left one passes in
     * front of the aorta. */
    {
        double rv = 5.5 * so;
        q = begin_paint(P, 0, hu_ivc, 5, 10, rng_next(r));
        q->only = 0;
        k = rng_next(r);
        vec3 ivc_r = V3(I1.u, ivc_v, sinus_c[0].w);
        add_cap(P, sinus_c[0], ivc_r, rv, rv, 0.1, 15, k);
        vec3 front = V3(ao_u, ao_v - r_ao - rv - 1, sinus_c[1].w);
        add_cap(P, sinus_c[1], front, rv, rv, 0.1, 15, k ^ 1);
        add_cap(P, front, V3(I1.u, ivc_v, sinus_c[1].w), rv, rv, 0.1, 15, k ^ 2);
    }

    /* Pancreas (11): head in the duodenal C, neck in front of the portal confluence, body,
     * tail toward the splenic hilum. */
    vec3 shift = V3(J(r, 5), J(r, 4), J(r, 5));
    vec3 ph = V3(-22 * su + J(r, 3), -20 * sv + J(r, 3), -8 * sw + J(r, 3));
    vec3 pn = V3(-2 * su + J(r, 3), -32 * sv + J(r, 3), 4 * sw + J(r, 3));
    vec3 pb = V3(30 * su + J(r, 3), -24 * sv + J(r, 3), 14 * sw + J(r, 3));
    vec3 pt = V3(64 * su + J(r, 3), 0 * sv + J(r, 3), 32 * sw + J(r, 3));
    vec3 *pp[4] = {&ph, &pn, &pb, &pt};
    for (int i = 0; i < 4; i++) {
        pp[i]->u += shift.u;
        pp[i]->v += shift.v;
        pp[i]->w += shift.w;
    }
    double fp = U(r, 0.85, 1.15);
    double rh = 17 * so * fp, rn = 11 * so * fp, rb = 11 * so * fp, rt = 9 * so * fp;
    q = begin_paint(P, 11, hu_pancreas, 10, 6, rng_next(r));
    k = rng_next(r);
    add_cap(P, ph, pn, rh, rn, 0.15, 15, k);
    add_cap(P, pn, pb, rn, rb, 0.15, 15, k ^ 1);
    add_cap(P, pb, pt, rb, rt, 0.15, 15, k ^ 2);

    /* Gallbladder (4): under the liver, fundus tilted anterior and down. */
    double fg = U(r, 0.8, 1.2);
    q = begin_paint(P, 4, hu_gb, 3, 15, rng_next(r));
    q->where = IN_ABD;
    add_ell(P, V3(-52 * su + J(r, 6), -52 * sv + J(r, 5), 12 * sw + J(r, 8)),
            V3(15 * so * fg, 16 * so * fg, 34 * sw * fg), J(r, 15) * DEG, 0, (-25 + J(r, 8)) * DEG,
            0.08, 25, rng_next(r));

    /* Adrenals (12 right, 13 left): thin inverted-V plates above and medial to the upper
     * poles, in fat; same intensity, told apart only by side. */
    for (int side = 0; side < 2; side++) {
        double sg = side == 0 ? -1 : 1;
        int lab = side == 0 ? 12 : 13;
        vec3 apex =
            side == 0 ? V3(-36 * su + J(r, 3), 24 * sv + J(r, 3), kid_top[0].w + 6 * sw + J(r, 4))
                      : V3(34 * su + J(r, 3), 18 * sv + J(r, 3), kid_top[1].w - 12 * sw + J(r, 4));
        double f = U(r, 0.85, 1.15);
        double dl[2][2] = {{sg * 0.4, 0.92}, {-sg * 0.25, 0.97}}; /* lateral and medial limb */
        vec3 lc[2];
        double la[2];
        for (int l = 0; l < 2; l++) {
            double n = hypot(dl[l][0], dl[l][1]);
            double du = dl[l][0] / n, dv = dl[l][1] / n;
            lc[l] = V3(apex.u + 11 * so * f * du, apex.v + 11 * so * f * dv, apex.w);
            la[l] = atan2(-du, dv);
        }
        vec3 s = V3(4 * so * f, 14 * so * f, 22 * sw * f);
        uint64_t kk = rng_next(r);
        q = begin_paint(P, 0, P->hu_fat, 5, 10, rng_next(r));
        for (int l = 0; l < 2; l++)
            add_ell(P, lc[l], V3(s.u + 3, s.v + 3, s.w + 3), la[l], 0, 0, 0.1, 15,
                    kk + (uint64_t)l);
        q = begin_paint(P, lab, hu_adrenal, 5, 10, rng_next(r));
        for (int l = 0; l < 2; l++)
            add_ell(P, lc[l], s, la[l], 0, 0, 0.1, 15, kk + (uint64_t)l);
    }

    /* Portal vein and splenic vein (10): the confluence behind the pancreatic neck, the splenic
     * vein along the back of the pancreas to the splenic hilum, the portal vein up and right
     * into the liver hilum with its first branches. */
    double r_pv = 7 * so * U(r, 0.9, 1.1), r_sv = 4.5 * so * U(r, 0.9, 1.1);
    vec3 conf = V3(pn.u - 3 * su, pn.v + rn + 2 + r_pv, pn.w + 2 * sw);
    vec3 sv1 = V3(pb.u, pb.v + rb + 1 + r_sv, pb.w + 2 * sw);
    vec3 sv2 = V3(pt.u, pt.v + rt + 1 + r_sv, pt.w + 3 * sw);
    vec3 hh = V3(-40 * su + J(r, 5), -18 * sv + J(r, 5), conf.w + 40 * sw + J(r, 5));
    q = begin_paint(P, 10, hu_portal, 5, 10, rng_next(r));
    k = rng_next(r);
    add_cap(P, conf, sv1, r_sv, r_sv, 0.1, 15, k);
    add_cap(P, sv1, sv2, r_sv, r_sv, 0.1, 15, k ^ 1);
    add_cap(P, sv2, spl_hilum, r_sv, r_sv, 0.1, 15, k ^ 2);
    add_cap(P, conf, hh, r_pv, r_pv, 0.08, 20, k ^ 3);
    add_cap(P, hh, V3(-72 * su + J(r, 6), -12 * sv + J(r, 6), hh.w + 16 * sw), 0.7 * r_pv,
            0.5 * r_pv, 0.1, 15, k ^ 4);
    add_cap(P, hh, V3(-12 * su + J(r, 6), -40 * sv + J(r, 6), hh.w + 12 * sw), 0.6 * r_pv,
            0.45 * r_pv, 0.1, 15, k ^ 5);

    /* Aorta (8) down to the bifurcation; the iliac arteries below it are not labelled. */
    q = begin_paint(P, 8, hu_aorta, 5, 20, rng_next(r));
    add_cap(P, V3(ao_u, ao_v, w_bif), V3(ao_u - 2 * su, ao_v + 2 * sv, w_top), r_ao, r_ao * 1.1,
            0.05, 30, rng_next(r));
    q = begin_paint(P, 0, hu_aorta, 5, 20, rng_next(r));
    q->only = 0;
    k = rng_next(r);
    for (int s = -1; s <= 1; s += 2)
        add_cap(P, V3(ao_u, ao_v, w_bif), V3(s * 45 * su, ao_v + 10 * sv, w_bif - 100 * sw),
                0.65 * r_ao, 0.55 * r_ao, 0.05, 30, k + (uint64_t)(s + 1));

    /* IVC (9) from the iliac confluence up through the liver to the right atrium. */
    q = begin_paint(P, 9, hu_ivc, 5, 20, rng_next(r));
    k = rng_next(r);
    add_cap(P, I0, I1, r_ivc, r_ivc, 0.06, 30, k);
    add_cap(P, I1, I2, r_ivc, r_ivc * 1.05, 0.06, 30, k);
    add_cap(P, I2, I3, r_ivc * 1.05, r_ivc, 0.06, 30, k);
    q = begin_paint(P, 0, hu_ivc, 5, 20, rng_next(r));
    q->only = 0;
    k = rng_next(r);
    for (int s = -1; s <= 1; s += 2)
        add_cap(P, I0, V3(s * 40 * su, ivc_v + 15 * sv, I0.w - 80 * sw), 0.7 * r_ivc, 0.6 * r_ivc,
                0.05, 30, k + (uint64_t)(s + 1));

    /* Heart (unlabelled) above the diaphragm, in front of the esophagus. */
    q = begin_paint(P, 0, hu_heart, 10, 20, rng_next(r));
    q->where = IN_THORAX;
    add_ell(P, V3(5 * su, -52 * sv, P->wR + 60 * sw), V3(60 * su, 36 * sv, 55 * sw), 0, 0, 0, 0.05,
            40, rng_next(r));

    /* Esophagus (5): in front of and right of the aorta, then left and forward through the
     * hiatus to the gastro-oesophageal junction at the fundus. */
    double r_e = 7.5 * so * U(r, 0.9, 1.1);
    vec3 et = V3(-2 * su, ao_v - r_ao - r_e + 1, w_top);
    vec3 em = V3(-2 * su + J(r, 3), et.v + J(r, 3), P->wL - 5 * sw);
    vec3 ge = V3(fc.u - 0.8 * fsz.u, fc.v - 6 * sv, fc.w + 0.35 * fsz.w);
    q = begin_paint(P, 5, hu_eso, 5, 10, rng_next(r));
    k = rng_next(r);
    add_cap(P, et, em, r_e, r_e, 0.1, 20, k);
    add_cap(P, em, ge, r_e, r_e * 1.1, 0.1, 20, k ^ 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Rendering.                                                                                   */

typedef struct canvas {
    const plan *P;
    float *hu;
    uint8_t *lab;
    uint8_t *reg;
} canvas;

/* Array-physical in-plane coordinates of voxel (i, j), relative to the FOV centre. */
static void to_body(const plan *P, int64_t i, int64_t j, int64_t k, double *u, double *v, double *w)
{
    double X = ((double)i + 0.5) * P->sp[2] - P->fov / 2;
    double Y = ((double)j + 0.5) * P->sp[1] - P->fov / 2;
    double dx = X - P->cx, dy = Y - P->cy;
    *u = P->ct * dx + P->st * dy;
    *v = -P->st * dx + P->ct * dy;
    *w = ((double)k + 0.5) * P->sp[0] - P->zref;
}

static double wrap(double x, double per)
{
    double m = fmod(x, per);
    return m < 0 ? m + per : m;
}

static void render_base(canvas *C)
{
    const plan *P = C->P;
    int64_t nz = P->n[0], ny = P->n[1], nx = P->n[2];
    for (int64_t k = 0; k < nz; k++) {
        for (int64_t j = 0; j < ny; j++) {
            double Y = ((double)j + 0.5) * P->sp[1] - P->fov / 2;
            for (int64_t i = 0; i < nx; i++) {
                double X = ((double)i + 0.5) * P->sp[2] - P->fov / 2;
                double u, v, w;
                to_body(P, i, j, k, &u, &v, &w);
                double hu = -1000;
                int reg = REG_AIR;
                if (P->table && Y >= P->y_table && Y < P->y_table + 14 && fabs(X) < 220) {
                    double d = Y - P->y_table;
                    hu = (d < 2.5 || d > 11.5) ? 100 : -550;
                }
                if (sell(u / (P->A * 1.04), v / (P->B * 1.04)) <= 1) {
                    double f = 1 + 0.03 * vnoise(P->k_body, u / 60, v / 60, w / 60);
                    if (sell(u / (P->A * f), v / (P->B * f)) <= 1) {
                        reg = REG_FAT;
                        hu = P->hu_fat;
                        double sm = sell(u / (P->Am * f), v / (P->Bm * f));
                        if (sm <= 1) {
                            reg = REG_WALL;
                            hu = P->hu_muscle;
                            double sc = sell(u / (P->Ac * f), v / (P->Bc * f));
                            if (sc <= 1) {
                                double wd = dome(P, u, v);
                                if (w > wd) {
                                    reg = REG_THORAX;
                                    if (fabs(u) < 28 * P->su && v < P->vb_v - P->vb_b)
                                        hu = P->hu_fat + 40; /* mediastinal fat */
                                    else
                                        hu = P->hu_lung +
                                             40 * vnoise(P->k_lung, u / 8, v / 8, w / 8);
                                } else if (w > wd - 5) {
                                    reg = REG_DIAPH;
                                    hu = P->hu_muscle;
                                } else {
                                    reg = REG_ABD;
                                    double m =
                                        0.5 + 0.6 * fnoise(P->k_mottle, u / 16, v / 16, w / 16);
                                    double t = m < 0.5 ? 0 : m > 0.7 ? 1 : (m - 0.5) / 0.2;
                                    hu = lerp(P->hu_fat, P->hu_soft, t * t * (3 - 2 * t));
                                }
                            } else {
                                /* ribs in the wall, above the costal margin */
                                double ant = v < 0 ? fmin(1, -v / P->Bm) : 0;
                                double low = P->wR - (135 - 85 * ant) * P->sw;
                                int mid = (fabs(u) < 30 * P->su && v > 0) ||
                                          (fabs(u) < 20 * P->su && v < 0);
                                if (w > low && !mid &&
                                    wrap(w - P->rib_phase + 20 * P->sw * v / P->Bm, P->rib_per) <
                                        10 * P->sw)
                                    hu = ant > 0.6 ? 130 : P->hu_rib;
                            }
                        }
                        /* back muscles and psoas */
                        double pu = (fabs(u) - P->para_u) / P->para_a,
                               pv = (v - P->para_v) / P->para_b;
                        if (pu * pu + pv * pv <= 1) {
                            reg = REG_SOLID;
                            hu = P->hu_muscle + 5;
                        }
                        double wp = -5 * P->sw - w;
                        if (wp > 0) {
                            double rp = fmin(6 + 0.22 * wp, 24) * P->so;
                            double cu = P->vb_a + 0.5 * rp, cv = P->vb_v + 0.4 * P->vb_b;
                            double du = fabs(u) - cu, dv = v - cv;
                            if (du * du + dv * dv <= rp * rp) {
                                reg = REG_SOLID;
                                hu = P->hu_muscle;
                            }
                        }
                        /* vertebra: body (or disc), canal, arch, spinous and transverse processes
                         */
                        double ph = wrap(w - P->phase, P->per);
                        int in_disc = ph < P->disc;
                        double qa = u / P->vb_a, qb = (v - P->vb_v) / P->vb_b;
                        double qv = qa * qa + qb * qb;
                        double dc = sqrt(u * u + (v - P->canal_v) * (v - P->canal_v));
                        if (qv <= 1) {
                            reg = REG_SOLID;
                            hu = in_disc ? 85 : qv > 0.72 ? P->hu_cort : P->hu_canc;
                        } else if (dc <= P->canal_r) {
                            reg = REG_SOLID;
                            hu = 15;
                        } else if (dc <= P->canal_r + 6 * P->so && !in_disc) {
                            reg = REG_SOLID;
                            hu = 0.8 * P->hu_cort;
                        } else if (!in_disc && ph < P->per - 8 * P->sw && fabs(u) < 4 * P->so &&
                                   v > P->canal_v && v < P->canal_v + P->canal_r + 28 * P->sv) {
                            reg = REG_SOLID;
                            hu = 0.7 * P->hu_cort;
                        } else if (ph > P->disc + 6 * P->sw && ph < P->disc + 16 * P->sw &&
                                   fabs(v - (P->canal_v - 2)) < 5 * P->so &&
                                   fabs(u) < P->canal_r + 32 * P->su) {
                            reg = REG_SOLID;
                            hu = 0.7 * P->hu_cort;
                        }
                    }
                }
                int64_t idx = (k * ny + j) * nx + i;
                C->hu[idx] = (float)hu;
                C->reg[idx] = (uint8_t)reg;
                C->lab[idx] = 0;
            }
        }
    }
}

static int prim_inside(const prim *p, double u, double v, double w)
{
    double a = 1 - p->amp, b = 1 + p->amp;
    if (p->kind == PRIM_ELL) {
        double d[3] = {u - p->c[0], v - p->c[1], w - p->c[2]};
        double rho2 = 0;
        for (int i = 0; i < 3; i++) {
            double q = p->rot[0][i] * d[0] + p->rot[1][i] * d[1] + p->rot[2][i] * d[2];
            q /= p->s[i];
            rho2 += q * q;
        }
        if (rho2 > b * b)
            return 0;
        if (rho2 < a * a)
            return 1;
        return sqrt(rho2) <= 1 + p->amp * fnoise(p->key, u / p->lam, v / p->lam, w / p->lam);
    }
    double d[3] = {p->p1[0] - p->p0[0], p->p1[1] - p->p0[1], p->p1[2] - p->p0[2]};
    double e[3] = {u - p->p0[0], v - p->p0[1], w - p->p0[2]};
    double dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2];
    double t = dd > 0 ? (e[0] * d[0] + e[1] * d[1] + e[2] * d[2]) / dd : 0;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    double x = e[0] - t * d[0], y = e[1] - t * d[1], z = e[2] - t * d[2];
    double dist2 = x * x + y * y + z * z;
    double rr = p->r0 + t * (p->r1 - p->r0);
    if (dist2 > rr * rr * b * b)
        return 0;
    if (dist2 < rr * rr * a * a)
        return 1;
    return sqrt(dist2) <= rr * (1 + p->amp * fnoise(p->key, u / p->lam, v / p->lam, w / p->lam));
}

/* Body-frame bounding box of a primitive. */
static void prim_box(const prim *p, double lo[3], double hi[3])
{
    if (p->kind == PRIM_ELL) {
        double R = fmax(p->s[0], fmax(p->s[1], p->s[2])) * (1 + p->amp) + 1;
        for (int i = 0; i < 3; i++) {
            lo[i] = p->c[i] - R;
            hi[i] = p->c[i] + R;
        }
    } else {
        double R = fmax(p->r0, p->r1) * (1 + p->amp) + 1;
        for (int i = 0; i < 3; i++) {
            lo[i] = fmin(p->p0[i], p->p1[i]) - R;
            hi[i] = fmax(p->p0[i], p->p1[i]) + R;
        }
    }
}

static int64_t clampi(int64_t x, int64_t lo, int64_t hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

static void render_paint(canvas *C, const paint *q)
{
    const plan *P = C->P;
    if (q->n == 0)
        return;
    double lo[3] = {1e30, 1e30, 1e30}, hi[3] = {-1e30, -1e30, -1e30};
    for (int i = 0; i < q->n; i++) {
        double a[3], b[3];
        prim_box(&P->prims[q->first + i], a, b);
        for (int d = 0; d < 3; d++) {
            lo[d] = fmin(lo[d], a[d]);
            hi[d] = fmax(hi[d], b[d]);
        }
    }
    /* body box -> array-physical box (the body frame is rotated in-plane) */
    double xmin = 1e30, xmax = -1e30, ymin = 1e30, ymax = -1e30;
    for (int c = 0; c < 4; c++) {
        double u = (c & 1) ? hi[0] : lo[0], v = (c & 2) ? hi[1] : lo[1];
        double X = P->cx + P->ct * u - P->st * v, Y = P->cy + P->st * u + P->ct * v;
        xmin = fmin(xmin, X), xmax = fmax(xmax, X);
        ymin = fmin(ymin, Y), ymax = fmax(ymax, Y);
    }
    int64_t nz = P->n[0], ny = P->n[1], nx = P->n[2];
    int64_t i0 = clampi((int64_t)floor((xmin + P->fov / 2) / P->sp[2] - 0.5), 0, nx - 1);
    int64_t i1 = clampi((int64_t)ceil((xmax + P->fov / 2) / P->sp[2] - 0.5), 0, nx - 1);
    int64_t j0 = clampi((int64_t)floor((ymin + P->fov / 2) / P->sp[1] - 0.5), 0, ny - 1);
    int64_t j1 = clampi((int64_t)ceil((ymax + P->fov / 2) / P->sp[1] - 0.5), 0, ny - 1);
    int64_t k0 = clampi((int64_t)floor((lo[2] + P->zref) / P->sp[0] - 0.5), 0, nz - 1);
    int64_t k1 = clampi((int64_t)ceil((hi[2] + P->zref) / P->sp[0] - 0.5), 0, nz - 1);
    if (xmax + P->fov / 2 < 0 || ymax + P->fov / 2 < 0 || hi[2] + P->zref < 0 ||
        lo[2] + P->zref > P->ez || xmin > P->fov / 2 || ymin > P->fov / 2)
        return;

    for (int64_t k = k0; k <= k1; k++)
        for (int64_t j = j0; j <= j1; j++)
            for (int64_t i = i0; i <= i1; i++) {
                int64_t idx = (k * ny + j) * nx + i;
                int reg = C->reg[idx];
                if (reg == REG_AIR || reg == REG_SOLID)
                    continue;
                if (q->where == IN_ABD && reg != REG_ABD)
                    continue;
                if (q->where == IN_THORAX && reg != REG_THORAX)
                    continue;
                if (q->only >= 0 && C->lab[idx] != q->only)
                    continue;
                double u, v, w;
                to_body(P, i, j, k, &u, &v, &w);
                if (q->half_on && q->half[0] * u + q->half[1] * v + q->half[2] * w >= q->half[3])
                    continue;
                int in = 0;
                for (int p = 0; p < q->n && !in; p++)
                    in = prim_inside(&P->prims[q->first + p], u, v, w);
                if (!in)
                    continue;
                if (q->label >= 0)
                    C->lab[idx] = (uint8_t)q->label;
                double hu = q->hu;
                if (q->tex != 0)
                    hu += q->tex * vnoise(q->key, u / q->lam, v / q->lam, w / q->lam);
                C->hu[idx] = (float)hu;
            }
}

/* In-place Gaussian blur along one axis (stride between neighbours, n points per line). */
static void blur_axis(float *a, int64_t nlines, int64_t n, int64_t stride, int64_t line_step,
                      int64_t line_inner, int64_t inner_step, double sigma, float *tmp)
{
    if (sigma <= 0 || n < 2)
        return;
    int rad = (int)ceil(3 * sigma);
    double wts[16];
    if (rad > 15)
        rad = 15;
    double sum = 0;
    for (int t = -rad; t <= rad; t++)
        sum += wts[t + rad] = exp(-0.5 * t * t / (sigma * sigma));
    for (int t = 0; t <= 2 * rad; t++)
        wts[t] /= sum;
    /* lines are indexed by (outer, inner): start = outer * line_step + inner * inner_step */
    for (int64_t L = 0; L < nlines; L++) {
        int64_t start = (L / line_inner) * line_step + (L % line_inner) * inner_step;
        for (int64_t x = 0; x < n; x++)
            tmp[x] = a[start + x * stride];
        for (int64_t x = 0; x < n; x++) {
            double s = 0;
            for (int t = -rad; t <= rad; t++) {
                int64_t y = clampi(x + t, 0, n - 1);
                s += wts[t + rad] * tmp[y];
            }
            a[start + x * stride] = (float)s;
        }
    }
}

static void blur_and_noise(canvas *C)
{
    const plan *P = C->P;
    int64_t nz = P->n[0], ny = P->n[1], nx = P->n[2];
    int64_t nmax = nx > ny ? nx : ny;
    if (nz > nmax)
        nmax = nz;
    float *tmp = malloc((size_t)nmax * sizeof *tmp);
    if (tmp) {
        /* x: lines (k, j), stride 1 */
        blur_axis(C->hu, nz * ny, nx, 1, nx, 1, 0, 0.6, tmp);
        /* y: lines (k, i): start k*ny*nx + i, stride nx */
        blur_axis(C->hu, nz * nx, ny, nx, ny * nx, nx, 1, 0.6, tmp);
        /* z: lines (j, i) = one outer: start j*nx + i, stride ny*nx */
        blur_axis(C->hu, ny * nx, nz, ny * nx, 0, ny * nx, 1, 0.4, tmp);
        free(tmp);
    }
    rng R;
    rng_seed(&R, P->k_noise);
    int64_t n = nz * ny * nx;
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = rng_unif(&R), u2 = rng_unif(&R);
        double m = sqrt(-2 * log(1 - u1)) * P->noise_sd;
        C->hu[i] += (float)(m * cos(2 * PI * u2));
        if (i + 1 < n)
            C->hu[i + 1] += (float)(m * sin(2 * PI * u2));
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Public functions.                                                                            */

static const char *label_names[FINE_SYNTH_LABELS] = {
    "background",
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal vein and splenic vein",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
};

void fine_synth_opts_init(fine_synth_opts *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 0;
    o->scale = 1.0;
    o->image_dtype = FINE_I16;
}

const char *fine_synth_label_name(int id)
{
    return id >= 0 && id < FINE_SYNTH_LABELS ? label_names[id] : NULL;
}

int fine_synth_serial(int index)
{
    return index < 10 ? index + 1 : index + 11;
}

static int check_opts(const fine_synth_opts *o, int serial, fine_err *e)
{
    if (!(o->scale >= 0.05 && o->scale <= 2.0))
        return fine_err_set(e, "scale %g is out of range (0.05 to 2)", o->scale);
    if (serial < 1 || serial > 9999)
        return fine_err_set(e, "case serial %d is out of range (1 to 9999)", serial);
    if (o->image_dtype != FINE_I16 && o->image_dtype != FINE_F32)
        return fine_err_set(e, "image dtype %s is not supported (i16 or f32)",
                            fine_dtype_name(o->image_dtype));
    return 0;
}

static void fill_geometry(const plan *P, uint64_t seed, int serial, fine_geometry *g)
{
    fine_geometry_init(g, P->n, P->sp);
    double sx = P->sp[2], sy = P->sp[1], sz = P->sp[0];
    g->nifti_version = 1;
    g->qform_code = 1; /* NIFTI_XFORM_SCANNER_ANAT */
    g->sform_code = 1;
    /* rotation diag(-1, -1, 1): 180 degrees about z, quaternion (a, b, c, d) = (0, 0, 0, 1) */
    g->quatern[0] = 0;
    g->quatern[1] = 0;
    g->quatern[2] = 1;
    g->qfac = 1;
    g->qoffset[0] = P->x_left - 0.5 * sx;
    g->qoffset[1] = P->y_ant - 0.5 * sy;
    g->qoffset[2] = P->z_bottom + 0.5 * sz;
    g->pixdim[0] = 1;
    g->pixdim[1] = sx;
    g->pixdim[2] = sy;
    g->pixdim[3] = sz;
    memset(g->srow, 0, sizeof g->srow);
    g->srow[0][0] = -sx;
    g->srow[1][1] = -sy;
    g->srow[2][2] = sz;
    for (int i = 0; i < 3; i++)
        g->srow[i][3] = g->qoffset[i];
    g->xyz_units = 2; /* NIFTI_UNITS_MM */
    g->time_units = 0;
    snprintf(g->descrip, sizeof g->descrip, "fine-synth seed %llu case %d",
             (unsigned long long)seed, serial);
}

int fine_synth_geometry(const fine_synth_opts *o, int serial, fine_geometry *g, fine_err *e)
{
    if (check_opts(o, serial, e) < 0)
        return -1;
    plan P;
    memset(&P, 0, sizeof P);
    rng R;
    rng_seed(&R, case_key(o->seed, serial));
    plan_grid(&P, &R, o->scale);
    fill_geometry(&P, o->seed, serial, g);
    return 0;
}

int fine_synth_case(const fine_synth_opts *o, int serial, fine_tensor *image, fine_tensor *label,
                    fine_geometry *g, fine_err *e)
{
    memset(image, 0, sizeof *image);
    memset(label, 0, sizeof *label);
    if (check_opts(o, serial, e) < 0)
        return -1;
    plan *P = malloc(sizeof *P);
    if (!P)
        return fine_err_set(e, "out of memory");
    plan_build(P, o->seed, serial, o->scale);
    int64_t n = P->n[0] * P->n[1] * P->n[2];
    canvas C = {P, NULL, NULL, NULL};
    C.hu = malloc((size_t)n * sizeof *C.hu);
    C.reg = malloc((size_t)n);
    if (!C.hu || !C.reg || fine_tensor_alloc(label, FINE_U8, 3, P->n, e) < 0 ||
        fine_tensor_alloc(image, o->image_dtype, 3, P->n, e) < 0) {
        free(C.hu);
        free(C.reg);
        free(P);
        fine_tensor_free(label);
        fine_tensor_free(image);
        return fine_err_set(e, "case %d: out of memory for %lld voxels", serial, (long long)n);
    }
    C.lab = label->data;
    render_base(&C);
    for (int i = 0; i < P->npaint; i++)
        render_paint(&C, &P->paints[i]);
    blur_and_noise(&C);
    if (o->image_dtype == FINE_F32) {
        memcpy(image->data, C.hu, (size_t)n * sizeof(float));
    } else {
        int16_t *out = image->data;
        for (int64_t i = 0; i < n; i++) {
            float v = C.hu[i];
            v = v < -1024 ? -1024 : v > 3071 ? 3071 : v;
            out[i] = (int16_t)lrintf(v);
        }
    }
    fill_geometry(P, o->seed, serial, g);
    free(C.hu);
    free(C.reg);
    free(P);
    return 0;
}
