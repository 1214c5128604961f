/* CPU kernels for the lean decoder's forward, prefill and decode: fp32 arithmetic over fp32, bf16 or fp16 weights.
 *
 * Why these exist: at the tiny model's size a decode step is mostly fixed cost. Between its four matrix products a
 * layer ran ~60 small PyTorch ops (norms, RoPE, cache writes, attention as batched GEMMs, softmax, SiLU), each a
 * dispatch of several microseconds and, for attention at 32 rows, a poorly shaped bmm: a large share of the step.
 * Here each stretch between two matrix products is one kernel, the products themselves (ek_linear) stream
 * packed weights faster than oneDNN's small-M kernels did, and ek_forward runs a whole forward in one call and
 * one parallel region. The ek_* kernels stay callable one by one: the tests check each against PyTorch and the
 * forward against them.
 *
 * Every row (and every (row, kv head) of attention) is computed by one thread, in an order that depends only on
 * that row's own length: a sequence's results are bit-identical whatever else shares the step, which is what makes
 * greedy output the same alone and in a batch. Vectors are GCC vector extensions, so the same source builds for
 * AVX-512 (the products' 16-column panels one register each; see the __AVX512F__ section), AVX2+FMA (8 lanes in
 * one register) and a baseline x86-64 or another architecture; native/__init__.py picks the widest the CPU runs.
 * Every build computes each output element as the same FMA chain, so the FMA builds give the same bits.
 *
 * The products' weights may be 16-bit (bf16 or fp16, see WT_*): widened to fp32 in registers as they are loaded,
 * then the same FMA chains as over fp32 weights. Everything else (activations, norms, attention, the KV cache)
 * is fp32 whatever the weights are.
 */
#if defined(__AVX2__) || defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <math.h>
#include <omp.h>
#include <sched.h>
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

/* Weight types of the products (the ``wt`` arguments): fp32, or 16 bits widened to fp32 in registers.
 *
 * Why 16-bit weights: a decode step reads every weight once, and at a few rows it is bound by that read, so
 * half the bytes is up to twice the speed (and half the memory). Widening is exact (every bf16 and fp16 value is an
 * fp32 value) and the accumulation is the one over fp32 weights, chain for chain: a model's 16-bit weights give
 * exactly the bits its fp32 forward gives over the same weights rounded to 16 bits. */
enum { WT_F32 = 0, WT_BF16 = 1, WT_F16 = 2 };

typedef uint16_t v8h __attribute__((vector_size(16), aligned(2)));
typedef uint32_t v8u __attribute__((vector_size(32), aligned(4)));

/* bf16 is the high half of an fp32. (Intrinsics where there are: GCC builds the vector-extension form out of
 * 128-bit pieces.) */
static inline v8f bf16x8(const uint16_t *p) {
#if defined(__AVX2__)
    return (v8f)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
#else
    return (v8f)(__builtin_convertvector(*(const v8h *)p, v8u) << 16);
#endif
}

/* fp16: F16C's vcvtph2ps where the build has it (AVX2, AVX-512); otherwise the same exact conversion in integer
 * arithmetic (F. Giesen's half_to_float): move exponent and mantissa into fp32's places and rebias the exponent;
 * infinities and NaNs get fp32's maximum exponent; zeros and subnormals are renormalised by one exact
 * subtraction. */
static inline v8f f16x8(const uint16_t *p) {
#if defined(__F16C__)
    return (v8f)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    const v8u h = __builtin_convertvector(*(const v8h *)p, v8u);
    const v8u em = (h & 0x7fffu) << 13, exp = em & (0x7c00u << 13);
    v8u u = em + ((127u - 15u) << 23);
    u += (v8u)(exp == (0x7c00u << 13)) & ((128u - 16u) << 23);
    const v8u tiny = (v8u)((v8f)(u + (1u << 23)) - splat8(0x1p-14f)); /* only meant for exp == 0 */
    const v8u small = (v8u)(exp == 0u);
    u = (small & tiny) | (~small & u);
    return (v8f)(u | ((h & 0x8000u) << 16));
#endif
}

/* 8 weights at element i of a packed panel, as fp32 (wt is a constant wherever this is inlined). */
static inline __attribute__((always_inline)) v8f loadw8(const void *w, size_t i, const int wt) {
    if (wt == WT_BF16) return bf16x8((const uint16_t *)w + i);
    if (wt == WT_F16) return f16x8((const uint16_t *)w + i);
    return load8((const float *)w + i);
}

/* Element i of a packed weight of type wt. */
static inline const void *weight_at(const void *w, size_t i, int wt) {
    return (const char *)w + i * (wt == WT_F32 ? sizeof(float) : sizeof(uint16_t));
}

/* Pairwise sums within each input: [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7] (AVX's vhaddps). */
static inline v8f hadd8(v8f a, v8f b) {
    const v8i even = {0, 2, 8, 10, 4, 6, 12, 14}, odd = {1, 3, 9, 11, 5, 7, 13, 15};
    return __builtin_shuffle(a, b, even) + __builtin_shuffle(a, b, odd);
}

/* Eight horizontal sums at once: lane j is the sum of c_j's lanes, in a tree that involves c_j alone (so a
 * score does not depend on its neighbours, nor on whether they exist). ~8 shuffles for 8 sums, where reducing each
 * accumulator on its own took ~6 scalar operations apiece. */
static inline v8f sum8x8(v8f c0, v8f c1, v8f c2, v8f c3, v8f c4, v8f c5, v8f c6, v8f c7) {
    const v8i lo = {0, 1, 2, 3, 8, 9, 10, 11}, hi = {4, 5, 6, 7, 12, 13, 14, 15};
    v8f u0 = hadd8(hadd8(c0, c1), hadd8(c2, c3)); /* [c0..c3 low halves | c0..c3 high halves] */
    v8f u1 = hadd8(hadd8(c4, c5), hadd8(c6, c7));
    return __builtin_shuffle(u0, u1, lo) + __builtin_shuffle(u0, u1, hi);
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

/* Each kernel below is a body and a wrapper. A body shares its loop among the threads of whatever parallel
 * region it runs in (OpenMP's orphaned worksharing; outside a region one thread does it all), without a barrier at
 * the end: ek_forward runs every body of a whole forward in one region, separated by its own barriers; the ek_*
 * wrappers each open a region of their own, for callers that run one kernel at a time. */

/* Row loops go parallel only for prefill's hundreds of rows: for decode's few a parallel region costs more. */
#define PARALLEL_ROWS 64

static void rms_rows(const float *x, const float *w, float *out, int rows, int dim, float eps) {
#pragma omp for schedule(static) nowait
    for (int r = 0; r < rows; r++) rms_row(x + (size_t)r * dim, w, out + (size_t)r * dim, dim, eps);
}

void ek_rms_norm(const float *x, const float *w, float *out, int rows, int dim, float eps, int nthreads) {
#pragma omp parallel num_threads(nthreads) if (rows >= PARALLEL_ROWS)
    rms_rows(x, w, out, rows, dim, eps);
}

/* x += delta (the residual), then out = rms_norm(x) * w: the seam between a sublayer and the next. */
static void add_rms_rows(float *x, const float *delta, const float *w, float *out, int rows, int dim, float eps) {
#pragma omp for schedule(static) nowait
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * dim;
        const float *dr = delta + (size_t)r * dim;
        for (int i = 0; i < dim; i += LANES) store8(xr + i, load8(xr + i) + load8(dr + i));
        rms_row(xr, w, out + (size_t)r * dim, dim, eps);
    }
}

void ek_add_rms_norm(float *x, const float *delta, const float *w, float *out, int rows, int dim, float eps,
                     int nthreads) {
#pragma omp parallel num_threads(nthreads) if (rows >= PARALLEL_ROWS)
    add_rms_rows(x, delta, w, out, rows, dim, eps);
}

/* Rows of [gate (ffn) | up (ffn)] -> silu(gate) * up; ffn a multiple of 8. */
static void silu_rows(const float *gu, float *out, int rows, int ffn) {
#pragma omp for schedule(static) nowait
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

void ek_silu_mul(const float *gu, float *out, int rows, int ffn, int nthreads) {
#pragma omp parallel num_threads(nthreads) if (rows * ffn >= 16384)
    silu_rows(gu, out, rows, ffn);
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

/* The paged KV cache's geometry. A cache (one per layer, keys and values apart) is a pool of blocks of `block`
 * positions, laid out (blocks, nkv, block, hd): one block holds `block` consecutive positions of one sequence, each
 * kv head's keys contiguous within it (so attention reads eight keys at a time from one place). Slot s's position p
 * lives in block tables[s * width + p / block], at row p % block. `block` is a multiple of 8 (the key loop's
 * chunk never straddles two blocks).
 *
 * Why paged: a sequence holds only the blocks its length needs, sequences join and leave without copies, and a
 * block can belong to several sequences at once (a shared prompt prefix, runtime/engine/kv_cache.py). */
typedef struct {
    const int32_t *tables;
    int width, block;
} kv_pages;

static inline size_t kv_at(const kv_pages *pg, int slot, int h, int p, int nkv, int hd) {
    const size_t b = (size_t)pg->tables[(size_t)slot * pg->width + p / pg->block];
    return ((b * nkv + h) * pg->block + p % pg->block) * hd;
}

/* Attention for `rows` rows (a decode step, or a prefill's prompt tokens) (the first `real_rows` real, the rest padding whose output is
 * zero). Row r holds its token's [q heads | k heads | v heads] at qkv + r * (nh + 2 * nkv) * hd; it sits at
 * position pos[r] of cache slot slots[r] (see kv_pages). First every real row's key (with RoPE) and value are
 * written at its position, then every (row, kv head) attends over positions 0..pos[r] of its slot: rows of one
 * slot at consecutive positions (speculative verification, or a prompt's tokens) see each other's keys. */
static void attention_write(const float *qkv, int rows, int real_rows, const int32_t *pos, const int32_t *slots,
                            const float *cos, const float *ssin, float *kc, float *vc, const kv_pages *pg, int nh,
                            int nkv, int hd, float *out) {
    const int width = (nh + 2 * nkv) * hd;
#pragma omp for schedule(static) nowait
    for (int r = 0; r < real_rows; r++) {
        const float *row = qkv + (size_t)r * width;
        const float *c = cos + (size_t)pos[r] * hd, *s = ssin + (size_t)pos[r] * hd;
        for (int h = 0; h < nkv; h++) {
            size_t at = kv_at(pg, slots[r], h, pos[r], nkv, hd);
            rope_head(row + (size_t)(nh + h) * hd, c, s, kc + at, hd);
            memcpy(vc + at, row + (size_t)(nh + nkv + h) * hd, sizeof(float) * hd);
        }
    }
#pragma omp single nowait
    if (rows > real_rows) memset(out + (size_t)real_rows * nh * hd, 0, sizeof(float) * (rows - real_rows) * nh * hd);
}

static int attention_max_len(int real_rows, const int32_t *pos) {
    int max_len = 0;
    for (int r = 0; r < real_rows; r++) max_len = pos[r] + 1 > max_len ? pos[r] + 1 : max_len;
    return max_len;
}

/* Runs after attention_write has finished in every thread. scores (max_len) and q (hd) are this thread's. */
static void attention_attend(const float *qkv, int real_rows, const int32_t *pos, const int32_t *slots,
                             const float *cos, const float *ssin, const float *kc, const float *vc, const kv_pages *pg,
                             int nh, int nkv, int hd, float scale, float *out, float *scores, float *q) {
    const int width = (nh + 2 * nkv) * hd;
    const int group = nh / nkv;
    const int items = real_rows * nkv;
#pragma omp for schedule(dynamic, 1) nowait
    for (int item = 0; item < items; item++) {
        int r = item / nkv, h = item % nkv, len = pos[r] + 1;
        const float *row = qkv + (size_t)r * width;
        const float *c = cos + (size_t)pos[r] * hd, *s = ssin + (size_t)pos[r] * hd;
        for (int g = 0; g < group; g++) {
            int head = h * group + g;
            rope_head(row + (size_t)head * hd, c, s, q, hd);
            /* Eight keys at a time: eight independent FMA chains over head_dim, then one tree reduces all
             * eight (sum8x8). A block past the last key leaves its accumulators at zero instead of reading. */
            for (int t8 = 0; t8 < len; t8 += 8) {
                const float *k0 = kc + kv_at(pg, slots[r], h, t8, nkv, hd);
                v8f c0 = splat8(0.0f), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
                if (t8 + 8 <= len) {
                    for (int i = 0; i < hd; i += LANES) {
                        v8f qv = load8(q + i);
                        c0 += qv * load8(k0 + i);
                        c1 += qv * load8(k0 + hd + i);
                        c2 += qv * load8(k0 + 2 * hd + i);
                        c3 += qv * load8(k0 + 3 * hd + i);
                        c4 += qv * load8(k0 + 4 * hd + i);
                        c5 += qv * load8(k0 + 5 * hd + i);
                        c6 += qv * load8(k0 + 6 * hd + i);
                        c7 += qv * load8(k0 + 7 * hd + i);
                    }
                } else {
                    v8f c[8] = {c0, c0, c0, c0, c0, c0, c0, c0};
                    for (int j = 0; j < len - t8; j++)
                        for (int i = 0; i < hd; i += LANES) c[j] += load8(q + i) * load8(k0 + (size_t)j * hd + i);
                    c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], c4 = c[4], c5 = c[5], c6 = c[6], c7 = c[7];
                }
                v8f sc = sum8x8(c0, c1, c2, c3, c4, c5, c6, c7) * splat8(scale);
                float tmp[LANES];
                store8(tmp, sc);
                for (int j = 0; j < LANES && t8 + j < len; j++) scores[t8 + j] = tmp[j];
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
            for (int i = 0; i < hd; i += 8 * LANES) {
                /* Up to 64 floats of the output per pass, in 8 accumulators: eight independent FMA chains
                 * hide the FMA latency (four did not), and leave registers for the value loads. */
                const int n = hd - i < 8 * LANES ? (hd - i) / LANES : 8;
                if (n == 8) {
                    v8f a0 = splat8(0.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
                    const float *v = vc;
                    for (int tt = 0, left = 0; tt < len; tt++, left--) {
                        v8f p = splat8(scores[tt]);
                        /* the next position is the next row of the same block, or the first of the next one */
                        if (left) {
                            v += hd;
                        } else {
                            v = vc + kv_at(pg, slots[r], h, tt, nkv, hd) + i;
                            left = pg->block;
                        }
                        a0 += p * load8(v);
                        a1 += p * load8(v + LANES);
                        a2 += p * load8(v + 2 * LANES);
                        a3 += p * load8(v + 3 * LANES);
                        a4 += p * load8(v + 4 * LANES);
                        a5 += p * load8(v + 5 * LANES);
                        a6 += p * load8(v + 6 * LANES);
                        a7 += p * load8(v + 7 * LANES);
                    }
                    v8f iv = splat8(inv);
                    store8(o + i, a0 * iv); store8(o + i + LANES, a1 * iv);
                    store8(o + i + 2 * LANES, a2 * iv); store8(o + i + 3 * LANES, a3 * iv);
                    store8(o + i + 4 * LANES, a4 * iv); store8(o + i + 5 * LANES, a5 * iv);
                    store8(o + i + 6 * LANES, a6 * iv); store8(o + i + 7 * LANES, a7 * iv);
                } else {
                    v8f acc[8];
                    for (int j = 0; j < n; j++) acc[j] = splat8(0.0f);
                    const float *v = vc;
                    for (int tt = 0, left = 0; tt < len; tt++, left--) {
                        v8f p = splat8(scores[tt]);
                        if (left) {
                            v += hd;
                        } else {
                            v = vc + kv_at(pg, slots[r], h, tt, nkv, hd) + i;
                            left = pg->block;
                        }
                        for (int j = 0; j < n; j++) acc[j] += p * load8(v + j * LANES);
                    }
                    for (int j = 0; j < n; j++) store8(o + i + j * LANES, acc[j] * splat8(inv));
                }
            }
        }
    }
}

void ek_attention(const float *qkv, int rows, int real_rows, const int32_t *pos, const int32_t *slots,
                  const float *cos, const float *ssin, float *kc, float *vc, const int32_t *tables, int width,
                  int block, int nh, int nkv, int hd, float scale, float *out, int nthreads) {
    const kv_pages pg = {tables, width, block};
    const int max_len = attention_max_len(real_rows, pos);
    /* A lone stream's few rows over short contexts are less work than waking a passive OpenMP thread. */
    long work = 0;
    for (int r = 0; r < real_rows; r++) work += (long)(pos[r] + 1) * nh * hd;
#pragma omp parallel num_threads(nthreads) if (real_rows * nkv > 1 && work >= (1L << 18))
    {
        attention_write(qkv, rows, real_rows, pos, slots, cos, ssin, kc, vc, &pg, nh, nkv, hd, out);
#pragma omp barrier
        float *scores = malloc(sizeof(float) * (size_t)max_len);
        float *q = malloc(sizeof(float) * (size_t)hd);
        attention_attend(qkv, real_rows, pos, slots, cos, ssin, kc, vc, &pg, nh, nkv, hd, scale, out, scores, q);
        free(scores);
        free(q);
    }
}

/* Small-M matrix product y = x @ W.T (+ bias) over a packed weight (fp32 or 16-bit, see WT_*).
 *
 * Why not oneDNN for these: a decode step multiplies a few rows by every weight, so it is bound by streaming
 * the weights, and oneDNN's small-M kernels stream them well below the memory's bandwidth. This kernel streams each
 * weight panel once per block of rows: panels of 16 output columns laid out k-major, six (or four) rows at a time
 * in vector accumulators. Each output element is one FMA chain over k in order, whatever the number of rows, so
 * results are row-invariant by construction. Prefill's thousands of rows use the same kernel, blocked for L2. */
#define PANEL 16
/* Packed layout: w (n, k) row-major -> (n / 16, k, 16), n a multiple of 16 (packed once, by native.pack_weight). */

/* Micro-tiles: rows r..r+R-1 of x times one 16-column panel, R accumulator pairs. R = 6 (12 accumulators + 2
 * weights + 1 broadcast fill 15 of AVX2's 16 registers: enough independent FMA chains to cover the FMA latency on
 * both pipes, which 8 accumulators at R = 4 did not), and R = 4 for what 6 does not divide. */
#define ROW_FMA(i)                                                                                                 \
    do {                                                                                                           \
        v8f s = splat8(x[(size_t)(i) * k + kk]);                                                                   \
        a##i##0 += s * w0;                                                                                         \
        a##i##1 += s * w1;                                                                                         \
    } while (0)
#define ROW_STORE(i)                                                                                               \
    do {                                                                                                           \
        store8(y + (size_t)(i) * n, a##i##0 + b0);                                                                 \
        store8(y + (size_t)(i) * n + LANES, a##i##1 + b1);                                                         \
    } while (0)

static inline __attribute__((always_inline)) void tile6(const float *x, const void *wp, const int wt, v8f b0, v8f b1,
                                                       float *y, int n, int k) {
    v8f a00 = splat8(0.0f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00,
        a40 = a00, a41 = a00, a50 = a00, a51 = a00;
    for (int kk = 0; kk < k; kk++) {
        v8f w0 = loadw8(wp, (size_t)kk * PANEL, wt), w1 = loadw8(wp, (size_t)kk * PANEL + LANES, wt);
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3); ROW_FMA(4); ROW_FMA(5);
    }
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3); ROW_STORE(4); ROW_STORE(5);
}

static inline __attribute__((always_inline)) void tile4(const float *x, const void *wp, const int wt, v8f b0, v8f b1,
                                                       float *y, int n, int k) {
    v8f a00 = splat8(0.0f), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
    for (int kk = 0; kk < k; kk++) {
        v8f w0 = loadw8(wp, (size_t)kk * PANEL, wt), w1 = loadw8(wp, (size_t)kk * PANEL + LANES, wt);
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3);
    }
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3);
}

/* x (m, k) with m a multiple of 4, packed (of type wt), y (m, n). bias may be NULL.
 * Work is split into tiles of (a block of rows) x (one panel), rows blocked so a block of x stays in L2 while
 * every panel passes over it (without blocking, prefill's thousands of rows were re-read from L3 per panel).
 * Within a block rows go six at a time, four where six does not fit (any multiple of 4 is a sum of 6s and 4s);
 * which micro-tile computes a row never changes its result: each element is the same FMA chain either way. */
static int linear_tiles(int m, int n, int k, int *block) {
    int b = (192 * 1024 / (int)sizeof(float)) / k / 12 * 12;
    b = b < 12 ? 12 : b;
    *block = b > m ? m : b;
    return (m + *block - 1) / *block * (n / PANEL);
}

#if defined(__AVX512F__)
/* AVX-512: a 16-column panel is one register, so a micro-tile takes two panels side by side (each x value
 * broadcast once feeds two FMAs, which keeps the broadcasts within the load ports' budget) and R rows: R = 12 is
 * 24 accumulators + 2 weights + 1 broadcast of the 32 registers. Each output element is still one FMA chain over
 * k in order, the same chain as the 8-lane tiles compute, so this build's results are those of the AVX2 build. */
typedef float v16f __attribute__((vector_size(64), aligned(4)));

static inline v16f load16(const float *p) { return *(const v16f *)p; }
static inline void store16(float *p, v16f v) { *(v16f *)p = v; }
static inline v16f splat16(float x) { return (v16f){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

static inline __attribute__((always_inline)) v16f loadw16(const void *w, size_t i, const int wt) {
    const __m256i *h = (const __m256i *)((const uint16_t *)w + i);
    if (wt == WT_BF16) return (v16f)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(h)), 16);
    if (wt == WT_F16) return (v16f)_mm512_cvtph_ps(_mm256_loadu_si256(h));
    return load16((const float *)w + i);
}

/* Rows r..r+R-1 of x times panels wp0 and (if wp1) wp1; constant R after inlining, so the accumulator arrays live
 * in registers. */
static inline __attribute__((always_inline)) void tile16(const int R, const float *x, const void *wp0,
                                                        const void *wp1, const int wt, v16f b0, v16f b1, float *y,
                                                        int n, int k) {
    v16f a0[12], a1[12];
    for (int i = 0; i < R; i++) a0[i] = a1[i] = splat16(0.0f);
    if (wp1) {
        for (int kk = 0; kk < k; kk++) {
            v16f w0 = loadw16(wp0, (size_t)kk * PANEL, wt), w1 = loadw16(wp1, (size_t)kk * PANEL, wt);
#pragma GCC unroll 12
            for (int i = 0; i < R; i++) {
                v16f s = splat16(x[(size_t)i * k + kk]);
                a0[i] += s * w0;
                a1[i] += s * w1;
            }
        }
        for (int i = 0; i < R; i++) {
            store16(y + (size_t)i * n, a0[i] + b0);
            store16(y + (size_t)i * n + PANEL, a1[i] + b1);
        }
    } else {
        for (int kk = 0; kk < k; kk++) {
            v16f w0 = loadw16(wp0, (size_t)kk * PANEL, wt);
#pragma GCC unroll 12
            for (int i = 0; i < R; i++) a0[i] += splat16(x[(size_t)i * k + kk]) * w0;
        }
        for (int i = 0; i < R; i++) store16(y + (size_t)i * n, a0[i] + b0);
    }
}

static inline __attribute__((always_inline)) void linear_body_wt(const float *x, const void *packed, const int wt,
                                                                const float *bias, float *y, int m, int n, int k,
                                                                int nthreads) {
    const int panels = n / PANEL, pairs = (panels + 1) / 2;
    int block;
    const int blocks = linear_tiles(m, n, k, &block) / panels, tiles = blocks * pairs;
    const int chunk = tiles / (8 * nthreads) > 1 ? tiles / (8 * nthreads) : 1;
#pragma omp for schedule(dynamic, chunk) nowait
    for (int tile = 0; tile < tiles; tile++) {
        const int p = tile % pairs * 2, first = tile / pairs * block;
        const int last = first + block < m ? first + block : m;
        const void *wp0 = weight_at(packed, (size_t)p * k * PANEL, wt);
        const void *wp1 = p + 1 < panels ? weight_at(wp0, (size_t)k * PANEL, wt) : NULL;
        v16f b0 = splat16(0.0f), b1 = splat16(0.0f);
        if (bias) {
            b0 = load16(bias + p * PANEL);
            if (wp1) b1 = load16(bias + (p + 1) * PANEL);
        }
        for (int r = first; r < last;) {
            const int left = last - r;
            const float *xr = x + (size_t)r * k;
            float *yr = y + (size_t)r * n + p * PANEL;
            if (left == 12 || left >= 16) {
                tile16(12, xr, wp0, wp1, wt, b0, b1, yr, n, k);
                r += 12;
            } else if (left == 8) {
                tile16(8, xr, wp0, wp1, wt, b0, b1, yr, n, k);
                r += 8;
            } else {
                tile16(4, xr, wp0, wp1, wt, b0, b1, yr, n, k);
                r += 4;
            }
        }
    }
}
#else
static inline __attribute__((always_inline)) void linear_body_wt(const float *x, const void *packed, const int wt,
                                                                const float *bias, float *y, int m, int n, int k,
                                                                int nthreads) {
    const int panels = n / PANEL;
    int block;
    const int tiles = linear_tiles(m, n, k, &block);
    /* Dynamic chunks: on two cores the server's event loop often preempts one thread for a moment, and a
     * static split would make the whole product wait for it. Which thread computes a tile never changes its
     * result. */
    const int chunk = tiles / (8 * nthreads) > 1 ? tiles / (8 * nthreads) : 1;
#pragma omp for schedule(dynamic, chunk) nowait
    for (int tile = 0; tile < tiles; tile++) {
        const int p = tile % panels, first = tile / panels * block;
        const int last = first + block < m ? first + block : m;
        const void *wp = weight_at(packed, (size_t)p * k * PANEL, wt);
        v8f b0 = splat8(0.0f), b1 = splat8(0.0f);
        if (bias) {
            b0 = load8(bias + p * PANEL);
            b1 = load8(bias + p * PANEL + LANES);
        }
        for (int r = first; r < last;) {
            const int left = last - r;
            float *yr = y + (size_t)r * n + p * PANEL;
            if (left == 6 || left >= 10) {
                tile6(x + (size_t)r * k, wp, wt, b0, b1, yr, n, k);
                r += 6;
            } else {
                tile4(x + (size_t)r * k, wp, wt, b0, b1, yr, n, k);
                r += 4;
            }
        }
    }
}
#endif

/* One copy of the product per weight type, each with its loads resolved at compile time. */
static void linear_body(const float *x, const void *packed, int wt, const float *bias, float *y, int m, int n, int k,
                        int nthreads) {
    switch (wt) {
    case WT_BF16:
        linear_body_wt(x, packed, WT_BF16, bias, y, m, n, k, nthreads);
        break;
    case WT_F16:
        linear_body_wt(x, packed, WT_F16, bias, y, m, n, k, nthreads);
        break;
    default:
        linear_body_wt(x, packed, WT_F32, bias, y, m, n, k, nthreads);
    }
}

void ek_linear(const float *x, const void *packed, int wt, const float *bias, float *y, int m, int n, int k,
               int nthreads) {
    int block;
#pragma omp parallel num_threads(nthreads) if (linear_tiles(m, n, k, &block) > 1)
    linear_body(x, packed, wt, bias, y, m, n, k, nthreads);
}

/* A barrier for the threads of one forward: spin briefly, then yield the core.
 *
 * Why not OpenMP's: under OMP_WAIT_POLICY=PASSIVE (which the server needs: idle spinning workers starve the
 * event loop on a shared CPU) every OpenMP barrier puts the waiting thread to sleep in the kernel and the last
 * one in wakes it, tens of microseconds each, and a forward has dozens of them. Between two phases of one
 * forward the wait is normally a few microseconds of imbalance, so a short spin wins; when the other thread has been
 * preempted the spinner yields its core instead of burning it. Outside a forward nobody spins. */
typedef struct {
    int count, sense;
} spin_barrier;

#define SPIN_LIMIT 4000 /* ~100 us of pause instructions before yielding */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void spin_wait(spin_barrier *b, int nth, int *my_sense) {
    if (nth <= 1) return;
    const int s = *my_sense = !*my_sense;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == nth) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        return;
    }
    for (int spins = 0; __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s; spins++) {
        if (spins < SPIN_LIMIT)
            cpu_relax();
        else
            sched_yield();
    }
}

/* One decoder layer's weights (projections packed, all four of type wtype; biases may be NULL) and KV caches. */
typedef struct {
    const float *ln1, *ln2;
    const void *qkv;
    const float *qkv_bias;
    const void *o;
    const float *o_bias;
    const void *gate_up, *down;
    float *k_cache, *v_cache;
    int wtype;
} ek_layer;

/* The whole decoder stack for `rows` rows (a multiple of 4; the first `real_rows` real), in one call.
 *
 * Why one call: the runner's Python loop between the kernels above held the GIL ~30 times a step, and over HTTP
 * the event loop thread (serialising a step's 32 SSE events) kept it for milliseconds at a time while the step
 * waited; the glue itself (tensor allocation, ctypes marshalling) cost time every step too. Called through ctypes
 * this runs with the GIL released from the embeddings to the final norm. And it is one parallel region, its ~60
 * phases separated by spin_wait instead of ~35 regions each woken from sleep.
 *
 * Row r is at position pos[r] of slot slots[r], whose blocks tables[slots[r] * table_width ..] lists (kv_pages).
 * x (rows, hidden): the token embeddings in, the residual stream after; h (rows, hidden): the final-normed hidden
 * states out. Scratch: qkv (rows, (nh + 2 nkv) hd), attn (rows, nh hd), delta (rows, hidden), gu (rows, 2 ffn),
 * act (rows, ffn). Same kernels, same order as calling them one by one, so the same bits. */
void ek_forward(const ek_layer *layers, int n_layers, const float *final_norm, float *x, float *h, float *qkv,
                float *attn, float *delta, float *gu, float *act, int rows, int real_rows, const int32_t *pos,
                const int32_t *slots, const int32_t *tables, int table_width, int block, const float *cos,
                const float *ssin, int nh, int nkv, int hd, int hidden, int ffn, float eps, float scale, int nthreads) {
    const int width = (nh + 2 * nkv) * hd;
    const kv_pages pg = {tables, table_width, block};
    const int max_len = attention_max_len(real_rows, pos);
    spin_barrier barrier = {0, 0};
#pragma omp parallel num_threads(nthreads)
    {
        const int nth = omp_get_num_threads();
        int sense = 0;
        float *scores = malloc(sizeof(float) * (size_t)max_len);
        float *q = malloc(sizeof(float) * (size_t)hd);
        rms_rows(x, layers[0].ln1, h, rows, hidden, eps);
        spin_wait(&barrier, nth, &sense);
        for (int l = 0; l < n_layers; l++) {
            const ek_layer *L = &layers[l];
            linear_body(h, L->qkv, L->wtype, L->qkv_bias, qkv, rows, width, hidden, nth);
            spin_wait(&barrier, nth, &sense);
            attention_write(qkv, rows, real_rows, pos, slots, cos, ssin, L->k_cache, L->v_cache, &pg, nh, nkv,
                            hd, attn);
            spin_wait(&barrier, nth, &sense);
            attention_attend(qkv, real_rows, pos, slots, cos, ssin, L->k_cache, L->v_cache, &pg, nh, nkv, hd,
                             scale, attn, scores, q);
            spin_wait(&barrier, nth, &sense);
            linear_body(attn, L->o, L->wtype, L->o_bias, delta, rows, hidden, nh * hd, nth);
            spin_wait(&barrier, nth, &sense);
            add_rms_rows(x, delta, L->ln2, h, rows, hidden, eps);
            spin_wait(&barrier, nth, &sense);
            linear_body(h, L->gate_up, L->wtype, NULL, gu, rows, 2 * ffn, hidden, nth);
            spin_wait(&barrier, nth, &sense);
            silu_rows(gu, act, rows, ffn);
            spin_wait(&barrier, nth, &sense);
            linear_body(act, L->down, L->wtype, NULL, delta, rows, hidden, ffn, nth);
            spin_wait(&barrier, nth, &sense);
            add_rms_rows(x, delta, l + 1 < n_layers ? layers[l + 1].ln1 : final_norm, h, rows, hidden, eps);
            spin_wait(&barrier, nth, &sense);
        }
        free(scores);
        free(q);
    }
}
