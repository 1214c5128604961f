/* CPU kernels for the lean decoder's forward, prefill and decode (fp32).
 *
 * Why these exist: at the tiny model's size a decode step is mostly fixed cost. Between its four matrix products a
 * layer ran ~60 small PyTorch ops (norms, RoPE, cache writes, attention as batched GEMMs, softmax, SiLU), each a
 * dispatch of several microseconds and, for attention at 32 rows, a poorly shaped bmm; they took 40% of the step.
 * Here each stretch between two matrix products is one call, and the products themselves (ek_linear) stream
 * packed weights faster than oneDNN's small-M kernels did.
 *
 * Every row (and every (row, kv head) of attention) is computed by one thread, in an order that depends only on
 * that row's own length: a sequence's results are bit-identical whatever else shares the step, which is what makes
 * greedy output the same alone and in a batch. Vectors are GCC vector extensions, so the same source builds for
 * AVX2+FMA (8 lanes in one register) and for a baseline x86-64 or another architecture.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v8f __attribute__((vector_size(32), aligned(4)));
typedef int32_t v8i __attribute__((vector_size(32), aligned(4)));

#define LANES 8

static inline v8f load8(const float *p) { return *(const v8f *)p; }
static inline void store8(float *p, v8f v) { *(v8f *)p = v; }
static inline v8f splat8(float x) { return (v8f){x, x, x, x, x, x, x, x}; }

static inline float hsum8(v8f v) {
    /* Fixed pairwise order: part of what keeps results reproducible. */
    float a = (v[0] + v[4]) + (v[2] + v[6]);
    float b = (v[1] + v[5]) + (v[3] + v[7]);
    return a + b;
}

static inline v8f select8(v8i mask, v8f a, v8f b) { /* mask lanes are -1 or 0; C has no vector ?: */
    return (v8f)((mask & (v8i)a) | (~mask & (v8i)b));
}

/* exp(x), Cephes' single-precision polynomial (~1 ulp), clamped to where the result is a normal float. */
static inline v8f exp8(v8f x) {
    const v8f lo = splat8(-87.0f), hi = splat8(88.0f);
    x = select8(x < lo, lo, x);
    x = select8(x > hi, hi, x);
    v8f fx = x * splat8(1.44269504088896341f) + splat8(0.5f);
    v8i ni = __builtin_convertvector(fx, v8i); /* truncates toward zero: floor is one less where that rounded up */
    v8f nf = __builtin_convertvector(ni, v8f);
    v8i above = nf > fx;
    ni = ni + above;                               /* mask is -1 where true */
    nf = __builtin_convertvector(ni, v8f);
    v8f r = x - nf * splat8(0.693359375f) - nf * splat8(-2.12194440e-4f);
    v8f y = splat8(1.9875691500e-4f);
    y = y * r + splat8(1.3981999507e-3f);
    y = y * r + splat8(8.3334519073e-3f);
    y = y * r + splat8(4.1665795894e-2f);
    y = y * r + splat8(1.6666665459e-1f);
    y = y * r + splat8(5.0000001201e-1f);
    y = y * (r * r) + r + splat8(1.0f);
    v8i bits = (ni + 127) << 23;
    return y * (v8f)bits;
}

/* out = x / sqrt(mean(x^2) + eps) * w, one row of `dim` (a multiple of 8). */
static void rms_row(const float *x, const float *w, float *out, int dim, float eps) {
    v8f acc = splat8(0.0f);
    for (int i = 0; i < dim; i += LANES) {
        v8f v = load8(x + i);
        acc += v * v;
    }
    float inv = 1.0f / sqrtf(hsum8(acc) / (float)dim + eps);
    v8f s = splat8(inv);
    for (int i = 0; i < dim; i += LANES) store8(out + i, load8(w + i) * (load8(x + i) * s));
}

/* Row loops go parallel only for prefill's hundreds of rows: for decode's few a parallel region costs more. */
#define PARALLEL_ROWS 64

void ek_rms_norm(const float *x, const float *w, float *out, int rows, int dim, float eps, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (rows >= PARALLEL_ROWS)
    for (int r = 0; r < rows; r++) rms_row(x + (size_t)r * dim, w, out + (size_t)r * dim, dim, eps);
}

/* x += delta (the residual), then out = rms_norm(x) * w: the seam between a sublayer and the next. */
void ek_add_rms_norm(float *x, const float *delta, const float *w, float *out, int rows, int dim, float eps,
                     int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (rows >= PARALLEL_ROWS)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * dim;
        const float *dr = delta + (size_t)r * dim;
        for (int i = 0; i < dim; i += LANES) store8(xr + i, load8(xr + i) + load8(dr + i));
        rms_row(xr, w, out + (size_t)r * dim, dim, eps);
    }
}

/* Rows of [gate (ffn) | up (ffn)] -> silu(gate) * up; ffn a multiple of 8. */
void ek_silu_mul(const float *gu, float *out, int rows, int ffn, int nthreads) {
#pragma omp parallel for num_threads(nthreads) schedule(static) if (rows * ffn >= 16384)
    for (int r = 0; r < rows; r++) {
        const float *g = gu + (size_t)r * 2 * ffn;
        const float *u = g + ffn;
        float *o = out + (size_t)r * ffn;
        for (int i = 0; i < ffn; i += LANES) {
            v8f gv = load8(g + i);
            store8(o + i, gv / (splat8(1.0f) + exp8(-gv)) * load8(u + i));
        }
    }
}

/* HF's x * cos + rotate_half(x) * sin with the sign folded into the sine table: out[i] = x[i] * cos[i] +
 * x[(i + hd/2) % hd] * ssin[i]. */
static inline void rope_head(const float *x, const float *cos, const float *ssin, float *out, int hd) {
    int half = hd / 2;
    for (int i = 0; i < hd; i += LANES) {
        int j = i < half ? i + half : i - half;
        store8(out + i, load8(x + i) * load8(cos + i) + load8(x + j) * load8(ssin + i));
    }
}

/* Attention for `rows` rows (a decode step, or a prefill's prompt tokens) (the first `real_rows` real, the rest padding whose output is
 * zero). Row r holds its token's [q heads | k heads | v heads] at qkv + r * (nh + 2 * nkv) * hd; it sits at
 * position pos[r] of cache slot slots[r]. Caches are (slots, nkv, capacity, hd). First every real row's key (with
 * RoPE) and value are written at its position, then every (row, kv head) attends over positions 0..pos[r] of its
 * slot: rows of one slot at consecutive positions (speculative verification) see each other's keys. */
void ek_attention(const float *qkv, int rows, int real_rows, const int32_t *pos, const int32_t *slots,
                         const float *cos, const float *ssin, float *kc, float *vc, int capacity, int nh, int nkv,
                         int hd, float scale, float *out, int nthreads) {
    const int width = (nh + 2 * nkv) * hd;
    const int group = nh / nkv;
#pragma omp parallel for num_threads(nthreads) schedule(static) if (real_rows >= PARALLEL_ROWS)
    for (int r = 0; r < real_rows; r++) {
        const float *row = qkv + (size_t)r * width;
        const float *c = cos + (size_t)pos[r] * hd, *s = ssin + (size_t)pos[r] * hd;
        for (int h = 0; h < nkv; h++) {
            size_t at = (((size_t)slots[r] * nkv + h) * capacity + pos[r]) * hd;
            rope_head(row + (size_t)(nh + h) * hd, c, s, kc + at, hd);
            memcpy(vc + at, row + (size_t)(nh + nkv + h) * hd, sizeof(float) * hd);
        }
    }
    if (rows > real_rows) memset(out + (size_t)real_rows * nh * hd, 0, sizeof(float) * (rows - real_rows) * nh * hd);
    int max_len = 0;
    for (int r = 0; r < real_rows; r++) max_len = pos[r] + 1 > max_len ? pos[r] + 1 : max_len;
    const int items = real_rows * nkv;
    /* A lone stream's few rows over short contexts are less work than waking a passive OpenMP thread. */
    long work = 0;
    for (int r = 0; r < real_rows; r++) work += (long)(pos[r] + 1) * nh * hd;
#pragma omp parallel num_threads(nthreads) if (items > 1 && work >= (1L << 18))
    {
        float *scores = malloc(sizeof(float) * (size_t)max_len);
        float *q = malloc(sizeof(float) * (size_t)hd);
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < items; item++) {
            int r = item / nkv, h = item % nkv, len = pos[r] + 1;
            const float *row = qkv + (size_t)r * width;
            const float *c = cos + (size_t)pos[r] * hd, *s = ssin + (size_t)pos[r] * hd;
            const float *keys = kc + ((size_t)slots[r] * nkv + h) * capacity * hd;
            const float *values = vc + ((size_t)slots[r] * nkv + h) * capacity * hd;
            for (int g = 0; g < group; g++) {
                int head = h * group + g;
                rope_head(row + (size_t)head * hd, c, s, q, hd);
                /* Four keys at a time: four independent FMA chains instead of one latency-bound chain; each
                 * score is still its own chain over head_dim in order, whatever the length. */
                int t4 = 0;
                for (; t4 + 4 <= len; t4 += 4) {
                    const float *k0 = keys + (size_t)t4 * hd, *k1 = k0 + hd, *k2 = k1 + hd, *k3 = k2 + hd;
                    v8f c0 = splat8(0.0f), c1 = c0, c2 = c0, c3 = c0;
                    for (int i = 0; i < hd; i += LANES) {
                        v8f qv = load8(q + i);
                        c0 += qv * load8(k0 + i);
                        c1 += qv * load8(k1 + i);
                        c2 += qv * load8(k2 + i);
                        c3 += qv * load8(k3 + i);
                    }
                    scores[t4] = hsum8(c0) * scale;
                    scores[t4 + 1] = hsum8(c1) * scale;
                    scores[t4 + 2] = hsum8(c2) * scale;
                    scores[t4 + 3] = hsum8(c3) * scale;
                }
                for (; t4 < len; t4++) {
                    const float *k0 = keys + (size_t)t4 * hd;
                    v8f c0 = splat8(0.0f);
                    for (int i = 0; i < hd; i += LANES) c0 += load8(q + i) * load8(k0 + i);
                    scores[t4] = hsum8(c0) * scale;
                }
                float m = -INFINITY;
                for (int t = 0; t < len; t++) m = scores[t] > m ? scores[t] : m;
                v8f mv = splat8(m), sumv = splat8(0.0f);
                int t = 0;
                for (; t + LANES <= len; t += LANES) {
                    v8f e = exp8(load8(scores + t) - mv);
                    store8(scores + t, e);
                    sumv += e;
                }
                float sum = hsum8(sumv);
                if (t < len) {
                    float tail[LANES];
                    for (int i = 0; i < LANES; i++) tail[i] = t + i < len ? scores[t + i] : m;
                    v8f e = exp8(load8(tail) - mv);
                    for (int i = 0; t + i < len; i++) {
                        scores[t + i] = e[i];
                        sum += e[i];
                    }
                }
                float *o = out + ((size_t)r * nh + head) * hd;
                float inv = 1.0f / sum;
                for (int i = 0; i < hd; i += 4 * LANES) {
                    /* 4 accumulators of 8 lanes per pass: enough registers left for the loads. */
                    int n = hd - i < 4 * LANES ? (hd - i) / LANES : 4;
                    v8f acc[4] = {splat8(0.0f), splat8(0.0f), splat8(0.0f), splat8(0.0f)};
                    for (int tt = 0; tt < len; tt++) {
                        v8f p = splat8(scores[tt]);
                        const float *v = values + (size_t)tt * hd + i;
                        for (int j = 0; j < n; j++) acc[j] += p * load8(v + j * LANES);
                    }
                    for (int j = 0; j < n; j++) store8(o + i + j * LANES, acc[j] * splat8(inv));
                }
            }
        }
        free(scores);
        free(q);
    }
}

/* Small-M matrix product y = x @ W.T (+ bias) over a weight packed by ek_pack_weight.
 *
 * Why not oneDNN for these: a decode step multiplies a few rows by every weight, so it is bound by streaming
 * the weights, and oneDNN's kernels reached ~8 GB/s at 4 rows here (memory gives 20-30). This kernel streams each
 * weight panel once: panels of 16 output columns laid out k-major, four rows at a time held in 8 vector
 * accumulators. Each output element is one FMA chain over k in order, whatever the number of rows, so results are
 * row-invariant by construction. Larger products (prefill) stay with oneDNN, which blocks for caches. */
#define PANEL 16
#define MR 4

/* w (n, k) row-major -> packed (n / 16, k, 16); n must be a multiple of 16. */
void ek_pack_weight(const float *w, float *packed, int n, int k) {
    for (int p = 0; p < n / PANEL; p++)
        for (int kk = 0; kk < k; kk++)
            for (int j = 0; j < PANEL; j++)
                packed[((size_t)p * k + kk) * PANEL + j] = w[((size_t)p * PANEL + j) * k + kk];
}

/* x (m, k) with m a multiple of 4, packed from ek_pack_weight, y (m, n). bias may be NULL.
 * Work is split into tiles of (a block of rows) x (one panel), rows blocked so a block of x stays in L2 while
 * every panel passes over it (without blocking, prefill's thousands of rows were re-read from L3 per panel). */
void ek_linear(const float *x, const float *packed, const float *bias, float *y, int m, int n, int k, int nthreads) {
    const int panels = n / PANEL;
    int block = (192 * 1024 / (int)sizeof(float)) / k / MR * MR;
    block = block < MR ? MR : block;
    block = block > m ? m : block;
    const int blocks = (m + block - 1) / block;
    const int tiles = blocks * panels;
    /* Dynamic chunks: on two cores the server's event loop often preempts one thread for a moment, and a
     * static split would make the whole product wait for it. Which thread computes a tile never changes its
     * result. */
    const int chunk = tiles / (8 * nthreads) > 1 ? tiles / (8 * nthreads) : 1;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, chunk) if (tiles > 1)
    for (int tile = 0; tile < tiles; tile++) {
        const int p = tile % panels, first = tile / panels * block;
        const int last = first + block < m ? first + block : m;
        const float *wp = packed + (size_t)p * k * PANEL;
        v8f b0 = splat8(0.0f), b1 = splat8(0.0f);
        if (bias) {
            b0 = load8(bias + p * PANEL);
            b1 = load8(bias + p * PANEL + LANES);
        }
        for (int r = first; r < last; r += MR) {
            const float *x0 = x + (size_t)r * k, *x1 = x0 + k, *x2 = x1 + k, *x3 = x2 + k;
            v8f a00 = splat8(0.0f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int kk = 0; kk < k; kk++) {
                v8f w0 = load8(wp + (size_t)kk * PANEL), w1 = load8(wp + (size_t)kk * PANEL + LANES);
                v8f s0 = splat8(x0[kk]), s1 = splat8(x1[kk]), s2 = splat8(x2[kk]), s3 = splat8(x3[kk]);
                a00 += s0 * w0; a01 += s0 * w1;
                a10 += s1 * w0; a11 += s1 * w1;
                a20 += s2 * w0; a21 += s2 * w1;
                a30 += s3 * w0; a31 += s3 * w1;
            }
            float *y0 = y + (size_t)r * n + p * PANEL;
            store8(y0, a00 + b0); store8(y0 + LANES, a01 + b1);
            store8(y0 + n, a10 + b0); store8(y0 + n + LANES, a11 + b1);
            store8(y0 + 2 * (size_t)n, a20 + b0); store8(y0 + 2 * (size_t)n + LANES, a21 + b1);
            store8(y0 + 3 * (size_t)n, a30 + b0); store8(y0 + 3 * (size_t)n + LANES, a31 + b1);
        }
    }
}
