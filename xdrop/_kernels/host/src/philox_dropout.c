/*
 * xdrop stream spec v1 (docs/stream-spec.md) in C: one source text for the
 * GPU (NVRTC, through CuPy, with XDROP_CUDA defined) and for the host (any C99
 * compiler, built into the extension module xdrop._kernels.host._philox by
 * _philox_module.c at install time). The host build is what the CPU-only tests
 * compare with the reference, so the Philox arithmetic the GPU runs is checked
 * on every CI run.
 *
 * Element i: block = i / 4, lane = i % 4,
 *   word = philox4x32_10((block lo, block hi, step lo, step hi), (seed lo, seed hi))[lane]
 *   keep = word < K  (K in [0, 2^32]: a 64-bit compare, or K = 2^32 split off)
 *   out  = keep ? x * scale : +0      (one IEEE product in the element type)
 */

#ifdef XDROP_CUDA
typedef unsigned int xd_u32;
typedef unsigned long long xd_u64;
#define XD_FN __device__ __forceinline__
#define XD_MULHILO(a, m, hi, lo) (hi = __umulhi((a), (m)), lo = (a) * (m))
#else
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef uint32_t xd_u32;
typedef uint64_t xd_u64;
#define XD_FN static inline
#define XD_MULHILO(a, m, hi, lo) \
    do {                             \
        xd_u64 xd_p = (xd_u64)(a) * (m); \
        hi = (xd_u32)(xd_p >> 32);   \
        lo = (xd_u32)xd_p;           \
    } while (0)
#endif

#define XD_M0 0xD2511F53u
#define XD_M1 0xCD9E8D57u
#define XD_W0 0x9E3779B9u
#define XD_W1 0xBB67AE85u

/* One Philox4x32 round on lvalues c0..c3 of word type T (a word, or on the
 * host a vector of packed words), with round key (k0, k1). MULHILO(a, m, hi,
 * lo) sets hi and lo to the high and low halves of a * m. */
#define XD_ROUND(T, MULHILO, c0, c1, c2, c3, k0, k1) \
    do {                                             \
        T xd_h0, xd_l0, xd_h1, xd_l1;                \
        MULHILO(c0, XD_M0, xd_h0, xd_l0);            \
        MULHILO(c2, XD_M1, xd_h1, xd_l1);            \
        c0 = xd_h1 ^ c1 ^ (k0);                      \
        c1 = xd_l1;                                  \
        c2 = xd_h0 ^ c3 ^ (k1);                      \
        c3 = xd_l0;                                  \
    } while (0)

/* The four words of one block: philox4x32 with 10 rounds. */
XD_FN void xd_philox10(xd_u64 block, xd_u64 step, xd_u64 seed, xd_u32 w[4]) {
    xd_u32 c0 = (xd_u32)block, c1 = (xd_u32)(block >> 32);
    xd_u32 c2 = (xd_u32)step, c3 = (xd_u32)(step >> 32);
    xd_u32 k0 = (xd_u32)seed, k1 = (xd_u32)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        XD_ROUND(xd_u32, XD_MULHILO, c0, c1, c2, c3, k0, k1);
        k0 += XD_W0;
        k1 += XD_W1;
    }
    w[0] = c0;
    w[1] = c1;
    w[2] = c2;
    w[3] = c3;
}

#ifdef XDROP_CUDA
/* ---- GPU: one thread per block of four elements. -------------------------
 * XD_T is the element type, XD_S the scale's type, XD_ZERO a +0 of XD_T and
 * XD_MUL(x, scale) the product (defined by the
 * caller: float and double multiply natively; half goes through float, whose
 * product of two halves is exact, so the one rounding is to half). */

extern "C" __global__ void xd_mask(xd_u64 start, xd_u64 n, xd_u64 seed, xd_u64 step, xd_u64 k, bool *out) {
    /* Offsets from start, never start + n: that wraps to 0 for a range that ends at 2^64. */
    xd_u64 t = (xd_u64)blockIdx.x * blockDim.x + threadIdx.x;
    xd_u64 block = start / 4 + t;
    xd_u64 lead = start % 4;
    if (4 * t >= lead + n) return;
    xd_u32 w[4];
    xd_philox10(block, step, seed, w);
    for (xd_u64 l = 0; l < 4; l++) {
        xd_u64 off = 4 * t + l; /* flat index start - lead + off */
        if (off >= lead && off - lead < n) out[off - lead] = (xd_u64)w[l] < k;
    }
}

#ifdef XD_T
/* The elements first .. min(first + 4, n) - 1 of one block, one at a time. */
XD_FN void xd_dropout_scalar(const XD_T *x, XD_T *out, xd_u64 first, xd_u64 n, const xd_u32 w[4], xd_u64 k,
                             XD_S scale) {
    for (int l = 0; l < 4 && first + l < n; l++) out[first + l] = (xd_u64)w[l] < k ? XD_MUL(x[first + l], scale) : XD_ZERO;
}

extern "C" __global__ void xd_dropout(const XD_T *x, XD_T *out, xd_u64 n, xd_u64 seed, xd_u64 step, xd_u64 k,
                                      XD_S scale) {
    xd_u64 block = (xd_u64)blockIdx.x * blockDim.x + threadIdx.x;
    xd_u64 first = block * 4;
    if (first >= n) return;
    xd_u32 w[4];
    xd_philox10(block, step, seed, w);
    xd_dropout_scalar(x, out, first, n, w, k, scale);
}

/* The same with one vector load and one vector store per thread: a thread's
 * four elements are adjacent, so scalar accesses would stride a warp's loads
 * by four elements. For x and out aligned to 4 elements (the launcher checks). */
struct __align__(XD_VEC_ALIGN) xd_vec4 {
    XD_T v[4];
};

extern "C" __global__ void xd_dropout_vec(const XD_T *x, XD_T *out, xd_u64 n, xd_u64 seed, xd_u64 step, xd_u64 k,
                                          XD_S scale) {
    xd_u64 block = (xd_u64)blockIdx.x * blockDim.x + threadIdx.x;
    xd_u64 first = block * 4;
    if (first >= n) return;
    xd_u32 w[4];
    xd_philox10(block, step, seed, w);
    if (first + 4 <= n) {
        xd_vec4 a = ((const xd_vec4 *)x)[block], o;
        for (int l = 0; l < 4; l++) o.v[l] = (xd_u64)w[l] < k ? XD_MUL(a.v[l], scale) : XD_ZERO;
        ((xd_vec4 *)out)[block] = o;
    } else {
        xd_dropout_scalar(x, out, first, n, w, k, scale);  // the last, partial block
    }
}
#endif

#else
/* ---- Host: the same xd_philox10 as the GPU, a chunk of 128 elements at a
 * time, in three variants that _philox_module.c wraps: "base" (any C99
 * compiler, scalar Philox; the mask and product loops vectorise with the
 * baseline ISA) and, on x86-64 with GCC or Clang, "avx2" (Philox on 8 blocks
 * per AVX2 register) and "avx512" (16 blocks per AVX-512F register). Those
 * carry target attributes, so one object holds all three and xd_variants
 * says by cpuid which ones this CPU runs. --------------------------------- */

/* Philox words of one block (for the tests: the scalar routine the GPU runs). */
void xd_block_words(xd_u64 block, xd_u64 step, xd_u64 seed, xd_u32 *w) { xd_philox10(block, step, seed, w); }

/* Keep masks (all ones: keep, zero: drop) of the elements of the first nb
 * blocks of the chunk of XD_CHUNK flat indices that starts at first (a
 * multiple of 4). Counter word j of every block in array cj, a loop over the
 * blocks per round: the compiler vectorises it with the baseline ISA (one
 * block at a time does not). K = 2^32 (keep all) is split off so that the
 * compare stays 32-bit and vectorises. */
#define XD_CHUNK 128
static inline void xd_keep_blocks(xd_u64 first, int nb, xd_u64 step, xd_u64 seed, xd_u64 k, xd_u32 m[XD_CHUNK]) {
    enum { NB = XD_CHUNK / 4 };
    xd_u32 c0[NB], c1[NB], c2[NB], c3[NB];
    xd_u32 k0 = (xd_u32)seed, k1 = (xd_u32)(seed >> 32), k32 = (xd_u32)k, all = (xd_u32)0 - (xd_u32)(k >> 32);
    for (int j = 0; j < nb; j++) {
        xd_u64 b = first / 4 + (xd_u64)j;
        c0[j] = (xd_u32)b;
        c1[j] = (xd_u32)(b >> 32);
        c2[j] = (xd_u32)step;
        c3[j] = (xd_u32)(step >> 32);
    }
    for (int r = 0; r < 10; r++) {
        for (int j = 0; j < nb; j++) {
            xd_u64 p0 = (xd_u64)c0[j] * XD_M0, p1 = (xd_u64)c2[j] * XD_M1;
            c0[j] = (xd_u32)(p1 >> 32) ^ c1[j] ^ k0;
            c1[j] = (xd_u32)p1;
            c2[j] = (xd_u32)(p0 >> 32) ^ c3[j] ^ k1;
            c3[j] = (xd_u32)p0;
        }
        k0 += XD_W0;
        k1 += XD_W1;
    }
    for (int j = 0; j < nb; j++) {
        m[4 * j + 0] = ((xd_u32)0 - (xd_u32)(c0[j] < k32)) | all;
        m[4 * j + 1] = ((xd_u32)0 - (xd_u32)(c1[j] < k32)) | all;
        m[4 * j + 2] = ((xd_u32)0 - (xd_u32)(c2[j] < k32)) | all;
        m[4 * j + 3] = ((xd_u32)0 - (xd_u32)(c3[j] < k32)) | all;
    }
}

/* The arguments fixed for one call, as the base variant's chunk routine takes them. */
typedef struct {
    xd_u64 seed, step, k;
} xd_args;

static inline void xd_args_init(xd_args *a, xd_u64 seed, xd_u64 step, xd_u64 k) {
    a->seed = seed;
    a->step = step;
    a->k = k;
}

static inline void xd_keep_chunk_base(const xd_args *a, xd_u64 first, int need, xd_u32 m[XD_CHUNK]) {
    xd_keep_blocks(first, (need + 3) / 4, a->step, a->seed, a->k, m);
}

/* What the vector variants derive from (seed, step) once per call, as words:
 * the round keys, and the scalar parts of rounds 1 and 2 (the step's words,
 * and where no lane carries the block's high word, are equal in every lane;
 * see xd_ctx_avx2). */
typedef struct {
    xd_u32 key[10][2];
    xd_u32 h1k0;       /* round 1: hi(step lo * M1) ^ key 0 (c0 = block hi ^ this) */
    xd_u32 l1;         /* round 1: c1 = lo(step lo * M1) */
    xd_u32 x2;         /* round 1: c2 = hi(c0 * M0) ^ step hi ^ key 1 */
    xd_u32 l1k0, k1_1; /* round 2: c1 ^ key 0, key 1 */
} xd_call_words;

static inline void xd_call_words_init(xd_call_words *w, xd_u64 seed, xd_u64 step) {
    xd_u32 k0 = (xd_u32)seed, k1 = (xd_u32)(seed >> 32), hi, lo;
    for (int r = 0; r < 10; r++) {
        w->key[r][0] = k0 + (xd_u32)r * XD_W0;
        w->key[r][1] = k1 + (xd_u32)r * XD_W1;
    }
    XD_MULHILO((xd_u32)step, XD_M1, hi, lo);
    w->h1k0 = hi ^ k0;
    w->l1 = lo;
    w->x2 = (xd_u32)(step >> 32) ^ k1;
    w->l1k0 = lo ^ w->key[1][0];
    w->k1_1 = w->key[1][1];
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define XD_HAVE_AVX2 1
#include <immintrin.h>
#define XD_AVX2 __attribute__((target("avx2")))

/* AVX2: counter word j of 8 blocks per register. A 32x32-bit multiply takes
 * the even lanes' and the odd lanes' 64-bit products (e, o); its lo half is
 * mullo, one op, and its hi half one shufps of e and o, which leaves the
 * lanes of each 128-bit half in order 0, 2, 1, 3 (call that permutation P).
 * Rather than undo P (two more ops), the words alternate between a lane order
 * and P of it, which the round keeps consistent when c1 and c3 start in P of
 * c0's order; the last round takes its lo halves by shufps too, which puts
 * every word back in c0's order. Per round and 8 blocks: 6 multiplies, 4
 * shuffles and 4 xors (14 ops; the plain way, natural lane order throughout:
 * 4 multiplies, 6 shifts, 4 blends and 4 xors). */
#define XD_SHUFPS(a, b, imm) \
    _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), imm))
#define XD_PROD_AVX2(a, m, e, o) \
    (e = _mm256_mul_epu32((a), (m)), o = _mm256_mul_epu32(_mm256_srli_epi64((a), 32), (m)))
#define XD_HI_AVX2(e, o) XD_SHUFPS(e, o, 0xDD)
#define XD_LO_AVX2(e, o) XD_SHUFPS(e, o, 0x88)

/* Groups of 8 blocks whose rounds interleave (to hide the multiply latency):
 * a whole chunk in one pass (4 groups: some spills, but the fastest), a
 * partial one in passes of 2 groups (the fewest wasted blocks). */
#define XD_AVX2_GROUPS 4
#define XD_AVX2_PART_GROUPS 2

/* What the AVX2 routines take, fixed for one call. Round 1 sees counter words
 * 2 and 3 (the step) equal in every lane, so its multiply of c2 is a scalar
 * one; where word 1 (the block's high word) is too, so is round 2's of c0.
 * The compare is signed, on words ^ 2^31: the last round's keys carry that
 * bias. K is in [1, 2^32 - 1] (the kernels split off 0 and 2^32). */
typedef struct {
    __m256i key[10][2];  /* round keys */
    __m256i x0, l1, x2;  /* round 1: c0 = c1 ^ x0, c1 = l1, c2 = hi(c0 * M0) ^ x2 */
    __m256i l1k0;        /* round 2: c1 ^ key */
    __m256i bias, kb;    /* 2^31, K ^ 2^31 */
    xd_u32 h1k0, k1_1;   /* round 1's hi(c2 * M1) ^ key, round 2's key word 1 */
} xd_ctx_avx2;

XD_AVX2 static inline void xd_ctx_avx2_init(xd_ctx_avx2 *c, xd_u64 seed, xd_u64 step, xd_u64 k) {
    xd_call_words w;
    xd_call_words_init(&w, seed, step);
    for (int r = 0; r < 10; r++) {
        xd_u32 bias = r == 9 ? 0x80000000u : 0;
        c->key[r][0] = _mm256_set1_epi32((int)(w.key[r][0] ^ bias));
        c->key[r][1] = _mm256_set1_epi32((int)(w.key[r][1] ^ bias));
    }
    c->h1k0 = w.h1k0;
    c->k1_1 = w.k1_1;
    c->x0 = _mm256_set1_epi32((int)w.h1k0);
    c->l1 = _mm256_set1_epi32((int)w.l1);
    c->l1k0 = _mm256_set1_epi32((int)w.l1k0);
    c->x2 = _mm256_set1_epi32((int)w.x2);
    c->bias = _mm256_set1_epi32((int)0x80000000u);
    c->kb = _mm256_set1_epi32((int)((xd_u32)k ^ 0x80000000u));
}

/* One round on group h's words with round keys (kv0, kv1); LO(a, m, e, o)
 * forms the lo halves. */
#define XD_ROUND_AVX2(h, kv0, kv1, LO)                                             \
    do {                                                                           \
        __m256i xd_e0, xd_o0, xd_e1, xd_o1, xd_l0, xd_l1;                          \
        XD_PROD_AVX2(c0[h], m0, xd_e0, xd_o0);                                     \
        XD_PROD_AVX2(c2[h], m1, xd_e1, xd_o1);                                     \
        xd_l0 = LO(c0[h], m0, xd_e0, xd_o0);                                       \
        xd_l1 = LO(c2[h], m1, xd_e1, xd_o1);                                       \
        c0[h] = _mm256_xor_si256(XD_HI_AVX2(xd_e1, xd_o1), _mm256_xor_si256(c1[h], kv0)); \
        c2[h] = _mm256_xor_si256(XD_HI_AVX2(xd_e0, xd_o0), _mm256_xor_si256(c3[h], kv1)); \
        c1[h] = xd_l1;                                                             \
        c3[h] = xd_l0;                                                             \
    } while (0)
#define XD_LO_MULLO(a, m, e, o) _mm256_mullo_epi32(a, m)
#define XD_LO_SHUF(a, m, e, o) XD_LO_AVX2(e, o)

/* Philox words of the 8 * groups blocks from block b: w[h][j] holds
 * word j of group h, whose lane i is block b + 8h + (0, 2, 4, 6, 1, 3, 5,
 * 7)[i], an order in which the 4x8 transpose to element order needs only
 * in-half unpacks. Words 0 and 2 come out ^ 2^31. */
XD_AVX2 static inline __attribute__((always_inline)) void xd_words_avx2(const xd_ctx_avx2 *c, xd_u64 b, int groups,
                                                                         __m256i w[XD_AVX2_GROUPS][4]) {
    const __m256i m0 = _mm256_set1_epi32((int)XD_M0), m1 = _mm256_set1_epi32((int)XD_M1);
    const __m256i lanes = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256i c0[XD_AVX2_GROUPS], c1[XD_AVX2_GROUPS], c2[XD_AVX2_GROUPS], c3[XD_AVX2_GROUPS];
    xd_u32 blo = (xd_u32)b, bhi = (xd_u32)(b >> 32);
    __m256i lo = _mm256_set1_epi32((int)blo);
    if (blo <= 0xFFFFFFFFu - (8 * (xd_u32)groups - 1)) {
        /* No carry into the high word: rounds 1 and 2 with their scalar multiplies. */
        xd_u32 hu, lu;
        XD_MULHILO(bhi ^ c->h1k0, XD_M0, hu, lu);
        __m256i x2 = _mm256_set1_epi32((int)(hu ^ c->k1_1)), l3 = _mm256_set1_epi32((int)lu);
        for (int h = 0; h < groups; h++) {
            __m256i a = _mm256_add_epi32(lo, _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * h))), e, o;
            XD_PROD_AVX2(a, m0, e, o);
            __m256i t2 = _mm256_xor_si256(XD_HI_AVX2(e, o), c->x2), t3 = _mm256_mullo_epi32(a, m0);
            XD_PROD_AVX2(t2, m1, e, o);
            c0[h] = _mm256_xor_si256(XD_HI_AVX2(e, o), c->l1k0);
            c1[h] = _mm256_mullo_epi32(t2, m1);
            c2[h] = _mm256_xor_si256(t3, x2);
            c3[h] = l3;
        }
    } else {
        for (int h = 0; h < groups; h++) {
            __m256i a = _mm256_add_epi32(lo, _mm256_add_epi32(lanes, _mm256_set1_epi32(8 * h))), e, o;
            /* c1 in order P: a lane whose low word wrapped (is below lo) carries into the high word */
            __m256i ap = _mm256_add_epi32(lo, _mm256_setr_epi32(8 * h, 8 * h + 4, 8 * h + 2, 8 * h + 6, 8 * h + 1,
                                                                 8 * h + 5, 8 * h + 3, 8 * h + 7));
            __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(lo, c->bias), _mm256_xor_si256(ap, c->bias));
            __m256i a1 = _mm256_sub_epi32(_mm256_set1_epi32((int)bhi), carry);
            XD_PROD_AVX2(a, m0, e, o); /* round 1 */
            c0[h] = _mm256_xor_si256(a1, c->x0);
            c1[h] = c->l1;
            c2[h] = _mm256_xor_si256(XD_HI_AVX2(e, o), c->x2);
            c3[h] = _mm256_mullo_epi32(a, m0);
            XD_ROUND_AVX2(h, c->key[1][0], c->key[1][1], XD_LO_MULLO);
        }
    }
#pragma GCC unroll 8
    for (int r = 2; r < 9; r++)
        for (int h = 0; h < groups; h++) XD_ROUND_AVX2(h, c->key[r][0], c->key[r][1], XD_LO_MULLO);
    for (int h = 0; h < groups; h++) {
        XD_ROUND_AVX2(h, c->key[9][0], c->key[9][1], XD_LO_SHUF);
        w[h][0] = c0[h];
        w[h][1] = c1[h];
        w[h][2] = c2[h];
        w[h][3] = c3[h];
    }
}

/* The 32-bit keep masks of one group's words w (from xd_words_avx2). */
#define XD_KEEP_AVX2(c, w, j) \
    _mm256_cmpgt_epi32((c)->kb, (j) % 2 ? _mm256_xor_si256((w)[j], (c)->bias) : (w)[j])

/* One group's keep masks in element order: u[r] holds elements 8r .. 8r + 7. */
XD_AVX2 static inline void xd_group_masks_avx2(const xd_ctx_avx2 *c, const __m256i w[4], __m256i u[4]) {
    __m256i m0 = XD_KEEP_AVX2(c, w, 0), m1 = XD_KEEP_AVX2(c, w, 1);
    __m256i m2 = XD_KEEP_AVX2(c, w, 2), m3 = XD_KEEP_AVX2(c, w, 3);
    __m256i t0 = _mm256_unpacklo_epi32(m0, m1), t1 = _mm256_unpackhi_epi32(m0, m1); /* lanes 0, 1 | 4, 5 */
    __m256i t2 = _mm256_unpacklo_epi32(m2, m3), t3 = _mm256_unpackhi_epi32(m2, m3); /* lanes 2, 3 | 6, 7 */
    u[0] = _mm256_unpacklo_epi64(t0, t2); /* blocks 0 | 1 */
    u[1] = _mm256_unpackhi_epi64(t0, t2); /* blocks 2 | 3 */
    u[2] = _mm256_unpacklo_epi64(t1, t3); /* blocks 4 | 5 */
    u[3] = _mm256_unpackhi_epi64(t1, t3); /* blocks 6 | 7 */
}

/* A chunk's masks in xd_keep_blocks' form (the partial chunks, xd_mask). */
XD_AVX2 static inline void xd_keep_chunk_avx2(const xd_ctx_avx2 *c, xd_u64 first, int need, xd_u32 m[XD_CHUNK]) {
    for (int g = 0; g < XD_CHUNK / 32 && 32 * g < need; g += XD_AVX2_PART_GROUPS) {
        __m256i w[XD_AVX2_GROUPS][4], u[4];
        xd_words_avx2(c, first / 4 + 8 * (xd_u64)g, XD_AVX2_PART_GROUPS, w);
        for (int h = 0; h < XD_AVX2_PART_GROUPS; h++) {
            xd_group_masks_avx2(c, w[h], u);
            for (int r = 0; r < 4; r++) _mm256_storeu_si256((__m256i *)(void *)(m + 32 * (g + h) + 8 * r), u[r]);
        }
    }
}

/* A whole chunk of dropout, the masks applied from registers. */
XD_AVX2 static inline void xd_f32_chunk_avx2(const xd_ctx_avx2 *c, xd_u64 first, const float *x, float *out,
                                              float scale) {
    const __m256 s = _mm256_set1_ps(scale);
    for (int g = 0; g < XD_CHUNK / 32; g += XD_AVX2_GROUPS) {
        __m256i w[XD_AVX2_GROUPS][4], u[4];
        xd_words_avx2(c, first / 4 + 8 * (xd_u64)g, XD_AVX2_GROUPS, w);
        for (int h = 0; h < XD_AVX2_GROUPS; h++) {
            xd_group_masks_avx2(c, w[h], u);
            for (int r = 0; r < 4; r++) {
                int e = 32 * (g + h) + 8 * r;
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + e), s);
                _mm256_storeu_ps(out + e, _mm256_and_ps(v, _mm256_castsi256_ps(u[r])));
            }
        }
    }
}

/* Float64 takes 64-bit masks, one block per register: the first unpack
 * stage, its 128-bit halves recombined, then each mask doubled. */
XD_AVX2 static inline void xd_f64_chunk_avx2(const xd_ctx_avx2 *c, xd_u64 first, const double *x, double *out,
                                              double scale) {
    static const int blocks[8] = {0, 2, 1, 3, 4, 6, 5, 7}; /* d[q]'s block */
    const __m256d s = _mm256_set1_pd(scale);
    for (int g = 0; g < XD_CHUNK / 32; g += XD_AVX2_GROUPS) {
        __m256i w[XD_AVX2_GROUPS][4];
        xd_words_avx2(c, first / 4 + 8 * (xd_u64)g, XD_AVX2_GROUPS, w);
        for (int h = 0; h < XD_AVX2_GROUPS; h++) {
            __m256i m0 = XD_KEEP_AVX2(c, w[h], 0), m1 = XD_KEEP_AVX2(c, w[h], 1);
            __m256i m2 = XD_KEEP_AVX2(c, w[h], 2), m3 = XD_KEEP_AVX2(c, w[h], 3);
            __m256i t0 = _mm256_unpacklo_epi32(m0, m1), t1 = _mm256_unpackhi_epi32(m0, m1);
            __m256i t2 = _mm256_unpacklo_epi32(m2, m3), t3 = _mm256_unpackhi_epi32(m2, m3);
            __m256i v[4] = {_mm256_permute2x128_si256(t0, t2, 0x20), _mm256_permute2x128_si256(t0, t2, 0x31),
                            _mm256_permute2x128_si256(t1, t3, 0x20), _mm256_permute2x128_si256(t1, t3, 0x31)};
            for (int q = 0; q < 8; q++) {
                __m256i d = q % 2 ? _mm256_unpackhi_epi32(v[q / 2], v[q / 2]) : _mm256_unpacklo_epi32(v[q / 2], v[q / 2]);
                int e = 32 * (g + h) + 4 * blocks[q];
                __m256d p = _mm256_mul_pd(_mm256_loadu_pd(x + e), s);
                _mm256_storeu_pd(out + e, _mm256_and_pd(p, _mm256_castsi256_pd(d)));
            }
        }
    }
}

#define XD_AVX512 __attribute__((target("avx512f")))

/* ---- AVX-512F: the AVX2 scheme on 16 blocks per register, in two groups
 * (tests/test_kernels.py compiles the text from here to the end marker with
 * tests/avx512_emulation.h's scalar stand-ins for the intrinsics). The three-way
 * xors are one ternlog each; the words are transposed to element order before
 * the compare, whose mask registers then drive zero-masked products. ---- */
#define XD_SHUFPS512(a, b, imm) \
    _mm512_castps_si512(_mm512_shuffle_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), imm))
#define XD_PROD_AVX512(a, m, e, o) \
    (e = _mm512_mul_epu32((a), (m)), o = _mm512_mul_epu32(_mm512_srli_epi64((a), 32), (m)))
#define XD_XOR3_512(a, b, c) _mm512_ternarylogic_epi32((a), (b), (c), 0x96)

typedef struct {
    __m512i key[10][2];
    __m512i x0, l1, x2, l1k0; /* as in xd_ctx_avx2 */
    __m512i kv;               /* K, in [1, 2^32 - 1] */
    xd_u32 h1k0, k1_1;
} xd_ctx_avx512;

XD_AVX512 static inline void xd_ctx_avx512_init(xd_ctx_avx512 *c, xd_u64 seed, xd_u64 step, xd_u64 k) {
    xd_call_words w;
    xd_call_words_init(&w, seed, step);
    for (int r = 0; r < 10; r++) {
        c->key[r][0] = _mm512_set1_epi32((int)w.key[r][0]);
        c->key[r][1] = _mm512_set1_epi32((int)w.key[r][1]);
    }
    c->h1k0 = w.h1k0;
    c->k1_1 = w.k1_1;
    c->x0 = _mm512_set1_epi32((int)w.h1k0);
    c->l1 = _mm512_set1_epi32((int)w.l1);
    c->l1k0 = _mm512_set1_epi32((int)w.l1k0);
    c->x2 = _mm512_set1_epi32((int)w.x2);
    c->kv = _mm512_set1_epi32((int)(xd_u32)k);
}

#define XD_ROUND_AVX512(h, kv0, kv1, LAST)                                                   \
    do {                                                                                     \
        __m512i xd_e0, xd_o0, xd_e1, xd_o1, xd_l0, xd_l1;                                    \
        XD_PROD_AVX512(c0[h], m0, xd_e0, xd_o0);                                             \
        XD_PROD_AVX512(c2[h], m1, xd_e1, xd_o1);                                             \
        xd_l0 = (LAST) ? XD_SHUFPS512(xd_e0, xd_o0, 0x88) : _mm512_mullo_epi32(c0[h], m0);   \
        xd_l1 = (LAST) ? XD_SHUFPS512(xd_e1, xd_o1, 0x88) : _mm512_mullo_epi32(c2[h], m1);   \
        c0[h] = XD_XOR3_512(XD_SHUFPS512(xd_e1, xd_o1, 0xDD), c1[h], kv0);                  \
        c2[h] = XD_XOR3_512(XD_SHUFPS512(xd_e0, xd_o0, 0xDD), c3[h], kv1);                  \
        c1[h] = xd_l1;                                                                       \
        c3[h] = xd_l0;                                                                       \
    } while (0)

/* Keep masks of the 32 blocks from block b: k[h][r] for elements 16r .. 16r + 15
 * of group h (its 16 blocks from b + 16h). Lane i of a group holds block
 * (0, 4, 8, 12, 1, 5, ...)[i], so the in-lane 4x4 transposes put the words in
 * element order. */
XD_AVX512 static inline void xd_keep_avx512(const xd_ctx_avx512 *c, xd_u64 b, __mmask16 k[2][4]) {
    const __m512i m0 = _mm512_set1_epi32((int)XD_M0), m1 = _mm512_set1_epi32((int)XD_M1);
    const __m512i lanes = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i c0[2], c1[2], c2[2], c3[2];
    xd_u32 blo = (xd_u32)b, bhi = (xd_u32)(b >> 32);
    __m512i lo = _mm512_set1_epi32((int)blo);
    if (blo <= 0xFFFFFFFFu - 31) {
        xd_u32 hu, lu;
        XD_MULHILO(bhi ^ c->h1k0, XD_M0, hu, lu);
        __m512i x2 = _mm512_set1_epi32((int)(hu ^ c->k1_1)), l3 = _mm512_set1_epi32((int)lu);
        for (int h = 0; h < 2; h++) {
            __m512i a = _mm512_add_epi32(lo, _mm512_add_epi32(lanes, _mm512_set1_epi32(16 * h))), e, o;
            XD_PROD_AVX512(a, m0, e, o);
            __m512i t2 = _mm512_xor_si512(XD_SHUFPS512(e, o, 0xDD), c->x2), t3 = _mm512_mullo_epi32(a, m0);
            XD_PROD_AVX512(t2, m1, e, o);
            c0[h] = _mm512_xor_si512(XD_SHUFPS512(e, o, 0xDD), c->l1k0);
            c1[h] = _mm512_mullo_epi32(t2, m1);
            c2[h] = _mm512_xor_si512(t3, x2);
            c3[h] = l3;
        }
    } else {
        for (int h = 0; h < 2; h++) {
            __m512i a = _mm512_add_epi32(lo, _mm512_add_epi32(lanes, _mm512_set1_epi32(16 * h))), e, o;
            /* c1 in order P (lanes 1, 2 of each 128-bit lane swapped): carry where the low word wrapped */
            __m512i ap = _mm512_add_epi32(lo, _mm512_add_epi32(_mm512_setr_epi32(0, 8, 4, 12, 1, 9, 5, 13, 2, 10, 6, 14, 3,
                                                                                 11, 7, 15),
                                                                _mm512_set1_epi32(16 * h)));
            __m512i hi = _mm512_set1_epi32((int)bhi);
            __m512i a1 = _mm512_mask_add_epi32(hi, _mm512_cmplt_epu32_mask(ap, lo), hi, _mm512_set1_epi32(1));
            XD_PROD_AVX512(a, m0, e, o); /* round 1 */
            c0[h] = _mm512_xor_si512(a1, c->x0);
            c1[h] = c->l1;
            c2[h] = _mm512_xor_si512(XD_SHUFPS512(e, o, 0xDD), c->x2);
            c3[h] = _mm512_mullo_epi32(a, m0);
            XD_ROUND_AVX512(h, c->key[1][0], c->key[1][1], 0);
        }
    }
    for (int r = 2; r < 10; r++)
        for (int h = 0; h < 2; h++) XD_ROUND_AVX512(h, c->key[r][0], c->key[r][1], r == 9);
    for (int h = 0; h < 2; h++) {
        __m512i t0 = _mm512_unpacklo_epi32(c0[h], c1[h]), t1 = _mm512_unpackhi_epi32(c0[h], c1[h]);
        __m512i t2 = _mm512_unpacklo_epi32(c2[h], c3[h]), t3 = _mm512_unpackhi_epi32(c2[h], c3[h]);
        k[h][0] = _mm512_cmplt_epu32_mask(_mm512_unpacklo_epi64(t0, t2), c->kv); /* blocks 0 .. 3 */
        k[h][1] = _mm512_cmplt_epu32_mask(_mm512_unpackhi_epi64(t0, t2), c->kv); /* blocks 4 .. 7 */
        k[h][2] = _mm512_cmplt_epu32_mask(_mm512_unpacklo_epi64(t1, t3), c->kv); /* blocks 8 .. 11 */
        k[h][3] = _mm512_cmplt_epu32_mask(_mm512_unpackhi_epi64(t1, t3), c->kv); /* blocks 12 .. 15 */
    }
}

XD_AVX512 static inline void xd_keep_chunk_avx512(const xd_ctx_avx512 *c, xd_u64 first, int need, xd_u32 m[XD_CHUNK]) {
    __mmask16 k[2][4];
    (void)need;
    xd_keep_avx512(c, first / 4, k);
    for (int q = 0; q < 8; q++)
        _mm512_storeu_si512((void *)(m + 16 * q), _mm512_maskz_mov_epi32(k[q / 4][q % 4], _mm512_set1_epi32(-1)));
}

/* The products are unmasked and the keep mask is and-ed in after: a zero-masked
 * multiply, which the compiler folds with its load, ran at 0.98 ns per float32
 * element instead of 0.37 once x streamed from memory (2^24 elements, one thread,
 * AMD EPYC family 26); in cache the two forms take the same time. */
XD_AVX512 static inline void xd_f32_chunk_avx512(const xd_ctx_avx512 *c, xd_u64 first, const float *x, float *out,
                                                  float scale) {
    const __m512 s = _mm512_set1_ps(scale);
    const __m512i ones = _mm512_set1_epi32(-1);
    __mmask16 k[2][4];
    xd_keep_avx512(c, first / 4, k);
    for (int q = 0; q < 8; q++) {
        __m512i p = _mm512_castps_si512(_mm512_mul_ps(_mm512_loadu_ps(x + 16 * q), s));
        __m512i keep = _mm512_maskz_mov_epi32(k[q / 4][q % 4], ones);
        _mm512_storeu_ps(out + 16 * q, _mm512_castsi512_ps(_mm512_and_si512(p, keep)));
    }
}

XD_AVX512 static inline void xd_f64_chunk_avx512(const xd_ctx_avx512 *c, xd_u64 first, const double *x, double *out,
                                                  double scale) {
    const __m512d s = _mm512_set1_pd(scale);
    const __m512i ones = _mm512_set1_epi64(-1);
    __mmask16 k[2][4];
    xd_keep_avx512(c, first / 4, k);
    for (int q = 0; q < 8; q++) {
        __mmask16 kq = k[q / 4][q % 4];
        for (int h = 0; h < 2; h++) { /* as xd_f32_chunk_avx512: unmasked products, the mask and-ed in */
            __m512i p = _mm512_castpd_si512(_mm512_mul_pd(_mm512_loadu_pd(x + 16 * q + 8 * h), s));
            __m512i keep = _mm512_maskz_mov_epi64((__mmask8)(kq >> 8 * h), ones);
            _mm512_storeu_pd(out + 16 * q + 8 * h, _mm512_castsi512_pd(_mm512_and_si512(p, keep)));
        }
    }
}
/* ---- end of AVX-512F ---- */
#endif

/* Entries of a partial chunk's masks that are used: those below its end. */
#define XD_NEED(left) ((left) < XD_CHUNK ? (int)(left) : XD_CHUNK)

/* Runs, over the flat indices start + i, i in [0, n): FULL for each whole
 * chunk (its first index xd_at, its first i xd_i0), and BODY for each element
 * of a partial one (the first, the last), with KEEP its keep mask from
 * CHUNK_FN(CTX, first, need, m), which fills at least m[0 .. need). The loop counts offsets from the first chunk, never
 * start + n, which wraps to 0 (or near it) for a range that ends within a
 * chunk of 2^64. */
#define XD_FOR_EACH(CHUNK_FN, CTX, start, n, FULL, BODY)                                  \
    do {                                                                                  \
        xd_u64 xd_first = (start) / 4 * 4, xd_lead = (start) % 4, xd_end = xd_lead + (n); \
        for (xd_u64 xd_off = 0; xd_off < xd_end; xd_off += XD_CHUNK) {                    \
            if (xd_off >= xd_lead && xd_end - xd_off >= XD_CHUNK) {                       \
                xd_u64 xd_i0 = xd_off - xd_lead, xd_at = xd_first + xd_off;               \
                FULL;                                                                     \
            } else {                                                                      \
                xd_u32 KEEP_[XD_CHUNK];                                                   \
                int xd_e0 = xd_off < xd_lead ? (int)(xd_lead - xd_off) : 0;               \
                int xd_e1 = XD_NEED(xd_end - xd_off);                                     \
                CHUNK_FN(CTX, xd_first + xd_off, xd_e1, KEEP_);                           \
                for (int e = xd_e0; e < xd_e1; e++) {                                     \
                    xd_u64 i = xd_off + (xd_u64)e - xd_lead;                              \
                    xd_u32 KEEP = KEEP_[e];                                               \
                    BODY;                                                                 \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    } while (0)

/* A whole chunk through the mask buffer: a branch-free loop that vectorises. */
#define XD_FULL_VIA_MASKS(CHUNK_FN, CTX, BODY)      \
    do {                                            \
        xd_u32 KEEP_[XD_CHUNK];                     \
        CHUNK_FN(CTX, xd_at, XD_CHUNK, KEEP_);      \
        for (int e = 0; e < XD_CHUNK; e++) {        \
            xd_u64 i = xd_i0 + (xd_u64)e;           \
            xd_u32 KEEP = KEEP_[e];                 \
            BODY;                                   \
        }                                           \
    } while (0)

/* out[i] = x[i] * scale with the mask applied bitwise (a dropped element is
 * +0): no branch, so the loops vectorise. */
#define XD_BODY_F32                           \
    {                                         \
        float v = x[i] * scale;               \
        xd_u32 bits;                          \
        memcpy(&bits, &v, sizeof bits);       \
        bits &= KEEP;                         \
        memcpy(&out[i], &bits, sizeof bits);  \
    }
#define XD_BODY_F64                                      \
    {                                                    \
        double v = x[i] * scale;                         \
        xd_u64 bits;                                     \
        memcpy(&bits, &v, sizeof bits);                  \
        bits &= (xd_u64)0 - (xd_u64)(KEEP & 1u);         \
        memcpy(&out[i], &bits, sizeof bits);             \
    }
#define XD_FULL_F32_VIA_MASKS(CHUNK_FN) XD_FULL_VIA_MASKS(CHUNK_FN, &xd_c, XD_BODY_F32)
#define XD_FULL_F64_VIA_MASKS(CHUNK_FN) XD_FULL_VIA_MASKS(CHUNK_FN, &xd_c, XD_BODY_F64)

/* K = 0: every element +0; K = 2^32: every element x * scale. */
#define XD_NO_PHILOX(k, n)                                           \
    do {                                                             \
        if ((k) == 0)                                                \
            memset(out, 0, (size_t)(n) * sizeof *out);               \
        else                                                         \
            for (xd_u64 i = 0; i < (n); i++) out[i] = x[i] * scale;  \
    } while (0)

/* The exported kernels of one variant: names end in SUFFIX ("" for base).
 * x and out are contiguous, x[0] has flat index start. CTX is the type of
 * what CHUNK_FN takes (INIT(&ctx, seed, step, k) fills it); FULL32 and FULL64
 * do a whole chunk. K = 0 keeps nothing and K = 2^32 everything: no Philox
 * runs for those, and the chunk routines see K in [1, 2^32 - 1]. */
#define XD_HOST_KERNELS(SUFFIX, ATTR, CTX, INIT, CHUNK_FN, FULL32, FULL64)                                   \
    ATTR void xd_mask##SUFFIX(xd_u64 start, xd_u64 n, xd_u64 seed, xd_u64 step, xd_u64 k,                  \
                              unsigned char *restrict out) {                                                 \
        if (k == 0 || k >> 32) {                                                                             \
            memset(out, k != 0, (size_t)n);                                                                  \
            return;                                                                                          \
        }                                                                                                    \
        CTX xd_c;                                                                                            \
        INIT(&xd_c, seed, step, k);                                                                          \
        XD_FOR_EACH(CHUNK_FN, &xd_c, start, n,                                                               \
                    XD_FULL_VIA_MASKS(CHUNK_FN, &xd_c, out[i] = (unsigned char)(KEEP & 1u)),                 \
                    out[i] = (unsigned char)(KEEP & 1u));                                                    \
    }                                                                                                        \
    ATTR void xd_dropout_f32##SUFFIX(const float *restrict x, float *restrict out, xd_u64 start, xd_u64 n, \
                                     xd_u64 seed, xd_u64 step, xd_u64 k, float scale) {                     \
        if (k == 0 || k >> 32) {                                                                             \
            XD_NO_PHILOX(k, n);                                                                              \
            return;                                                                                          \
        }                                                                                                    \
        CTX xd_c;                                                                                            \
        INIT(&xd_c, seed, step, k);                                                                          \
        XD_FOR_EACH(CHUNK_FN, &xd_c, start, n, FULL32, XD_BODY_F32);                                         \
    }                                                                                                        \
    ATTR void xd_dropout_f64##SUFFIX(const double *restrict x, double *restrict out, xd_u64 start, xd_u64 n, \
                                     xd_u64 seed, xd_u64 step, xd_u64 k, double scale) {                    \
        if (k == 0 || k >> 32) {                                                                             \
            XD_NO_PHILOX(k, n);                                                                              \
            return;                                                                                          \
        }                                                                                                    \
        CTX xd_c;                                                                                            \
        INIT(&xd_c, seed, step, k);                                                                          \
        XD_FOR_EACH(CHUNK_FN, &xd_c, start, n, FULL64, XD_BODY_F64);                                         \
    }

#define XD_NO_ATTR
XD_HOST_KERNELS(, XD_NO_ATTR, xd_args, xd_args_init, xd_keep_chunk_base, XD_FULL_F32_VIA_MASKS(xd_keep_chunk_base),
                XD_FULL_F64_VIA_MASKS(xd_keep_chunk_base))
#ifdef XD_HAVE_AVX2
XD_HOST_KERNELS(_avx2, XD_AVX2, xd_ctx_avx2, xd_ctx_avx2_init, xd_keep_chunk_avx2,
                xd_f32_chunk_avx2(&xd_c, xd_at, x + xd_i0, out + xd_i0, scale),
                xd_f64_chunk_avx2(&xd_c, xd_at, x + xd_i0, out + xd_i0, scale))
XD_HOST_KERNELS(_avx512, XD_AVX512, xd_ctx_avx512, xd_ctx_avx512_init, xd_keep_chunk_avx512,
                xd_f32_chunk_avx512(&xd_c, xd_at, x + xd_i0, out + xd_i0, scale),
                xd_f64_chunk_avx512(&xd_c, xd_at, x + xd_i0, out + xd_i0, scale))
#endif

/* ---- Attention: a block's softmax, keep mask and dropout, one row at a time.
 * A block is the flat rows row0 .. row0 + rows - 1 of the (N * L, S) weights,
 * all S keys of each: flat row f is query i = f % L of problem n = f / L, and
 * the keep decision of its key j is stream v1's at flat index f * S + j (i * S
 * + j where one mask serves every problem: xd_attn.shared), drawn
 * by the variant's chunk routine (xd_mask's bits). The scores arrive as the raw
 * products q k^T (a BLAS matmul wrote them into s); each row is short enough to
 * stay in L1 while it is read a few times, and the softmax is exact (the whole
 * row is there). The loops are plain arithmetic that the compiler vectorises
 * with each variant's ISA; no sum is reordered, so every variant gives the same
 * values. */

typedef struct {
    xd_u64 row0, rows, length, keys; /* the block's flat rows; L, S */
    double scale;                    /* of q k^T */
    const void *bias;                /* NULL, or the additive mask in the element type */
    int64_t so, si, sl, ss;          /* its element strides (outer, inner, query, key); 0 where it broadcasts */
    xd_u64 inner;                    /* problem n adds bias[n / inner, n % inner] */
    int causal;                      /* key j > query i is masked out */
    xd_u64 seed, step, k;            /* the stream, K */
    double a;                        /* the dropout scale, exact in the element type */
    int shared;                      /* one (L, S) mask for every problem: the mask's flat row is qi, not f */
} xd_attn;

/* The row routines are inlined into each variant's exported ones, so that
 * they are compiled (and vectorised) for that variant's ISA. */
#if defined(__GNUC__) || defined(__clang__)
#define XD_ROW_FN static inline __attribute__((always_inline))
#else
#define XD_ROW_FN static inline
#endif

/* Per-lane partial maxima and sums: a loop over XD_LANES accumulators
 * vectorises without reassociating any sum (the order is fixed in C). */
#define XD_LANES 16

/* c ? a : b by bit masks. Written as a conditional, a select whose arms feed
 * floating-point arithmetic becomes a branch (the arithmetic may trap), and a
 * loop with a branch does not vectorise. */
#define XD_SEL_FN(T, UT, NAME)          \
    XD_ROW_FN T NAME(int c, T a, T b) { \
        UT m = (UT)0 - (UT)c, x, y;     \
        memcpy(&x, &a, sizeof x);       \
        memcpy(&y, &b, sizeof y);       \
        x = (x & m) | (y & ~m);         \
        memcpy(&a, &x, sizeof a);       \
        return a;                       \
    }
XD_SEL_FN(float, xd_u32, xd_sel_f32)
XD_SEL_FN(double, xd_u64, xd_sel_f64)

/* e^x, to about 1 ulp, for the softmax's exponents (x <= 0, or a rounding
 * above): x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, the first with
 * few bits, so that n * ln2_hi is exact), e^r by its Taylor series (the first
 * omitted term is below the type's rounding), times 2^n as two factors so that
 * subnormal results are one correctly scaled product. Below LO the result is
 * 0 (e^LO rounds to 0), NaN stays NaN; x is clamped to [LO, HI] first so that
 * n converts to an int. The magic constant rounds to the nearest integer in
 * the default rounding mode. */
#define XD_EXP_FN(T, UT, NAME, SEL, LO, HI, MAGIC, LOG2E, LN2HI, LN2LO, BIAS, MANT, POLY) \
    XD_ROW_FN T NAME(T x) {                                                               \
        T y = SEL(!(x >= (T)(LO)), (T)(LO), x);                                           \
        y = SEL(y > (T)(HI), (T)(HI), y);                                                 \
        T n = (y * (T)(LOG2E) + (T)(MAGIC)) - (T)(MAGIC);                                 \
        T r = (y - n * (T)(LN2HI)) - n * (T)(LN2LO);                                      \
        T p = POLY;                                                                       \
        int32_t e = (int32_t)n, h = e / 2;                                                \
        UT b1 = (UT)(h + (BIAS)) << (MANT), b2 = (UT)(e - h + (BIAS)) << (MANT);          \
        T f1, f2;                                                                         \
        memcpy(&f1, &b1, sizeof f1);                                                      \
        memcpy(&f2, &b2, sizeof f2);                                                      \
        return SEL(x == x, SEL(x < (T)(LO), (T)0, p * f1 * f2), x);                       \
    }
/* Taylor coefficients 1/k!: to r^7 for float (r^8/8! < 2^-24 relative), r^13 for double. */
XD_EXP_FN(float, xd_u32, xd_exp_f32, xd_sel_f32, -104.0f, 88.0f, 12582912.0f, 1.44269504f, 0.693359375f,
          -2.12194440e-4f, 127, 23,
          1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 +
          r * (1.0f / 5040))))))))
XD_EXP_FN(double, xd_u64, xd_exp_f64, xd_sel_f64, -746.0, 709.0, 6755399441055744.0, 1.4426950408889634,
          6.93147180369123816490e-01, 1.90821492927058770002e-10, 1023, 52,
          1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040
          + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600
          + r * (1.0 / 6227020800.0))))))))))))))

/* The row routines of element type T (bits UT; SFX names them; EXP and LOG its
 * e^x and log). A row's keys 0 .. len - 1 are the ones not masked out by the
 * causal mask (the rest get weight 0); keep is NULL without dropout (K = 2^32)
 * or when none is kept (none = 1, K = 0), else its 32-bit keep masks. */
#define XD_ATTN_ROWS(T, UT, SFX, EXP, LOG)                                                                     \
    /* The scaled, biased scores of keys 0 .. len - 1, in place. */                                            \
    XD_ROW_FN void xd_attn_scores_##SFX(const xd_attn *p, T *s, const T *b, xd_u64 len) {                      \
        const T sc = (T)p->scale;                                                                              \
        if (b == NULL)                                                                                         \
            for (xd_u64 j = 0; j < len; j++) s[j] = s[j] * sc;                                                 \
        else if (p->ss == 1)                                                                                   \
            for (xd_u64 j = 0; j < len; j++) s[j] = s[j] * sc + b[j];                                          \
        else                                                                                                   \
            for (xd_u64 j = 0; j < len; j++) s[j] = s[j] * sc + b[(int64_t)j * p->ss];                         \
    }                                                                                                          \
    /* The maximum of s[0 .. len - 1] (-inf for none). */                                                      \
    XD_ROW_FN T xd_attn_max_##SFX(const T *s, xd_u64 len) {                                                    \
        T mx[XD_LANES], top = -(T)INFINITY;                                                                    \
        for (int l = 0; l < XD_LANES; l++) mx[l] = -(T)INFINITY;                                               \
        xd_u64 j = 0;                                                                                          \
        for (; j + XD_LANES <= len; j += XD_LANES)                                                             \
            for (int l = 0; l < XD_LANES; l++) mx[l] = s[j + l] > mx[l] ? s[j + l] : mx[l];                    \
        for (; j < len; j++) top = s[j] > top ? s[j] : top;                                                    \
        for (int l = 0; l < XD_LANES; l++) top = mx[l] > top ? mx[l] : top;                                    \
        return top;                                                                                            \
    }                                                                                                          \
    XD_ROW_FN T xd_attn_sum_##SFX(const T acc[XD_LANES], T tail) {                                             \
        for (int l = 0; l < XD_LANES; l++) tail += acc[l];                                                     \
        return tail;                                                                                           \
    }                                                                                                          \
    /* The element's keep mask as a mask of T's width. */                                                      \
    XD_ROW_FN UT xd_attn_bits_##SFX(xd_u32 keep) { return (UT)0 - (UT)(keep & 1u); }                           \
    /* Forward: s becomes the dropped weights, *lse the row's log-sum-exp (-inf for a row with no key). */     \
    XD_ROW_FN void xd_attn_fwd_row_##SFX(const xd_attn *p, T *s, const T *b, xd_u64 len, const xd_u32 *keep,   \
                                             int none, T *lse) {                                               \
        xd_attn_scores_##SFX(p, s, b, len);                                                                    \
        T top = xd_attn_max_##SFX(s, len);                                                                     \
        if (top == -(T)INFINITY) top = 0; /* every key masked out: weights 0 (torch's math path) */            \
        T acc[XD_LANES] = {0}, tail = 0;                                                                       \
        xd_u64 j = 0;                                                                                          \
        for (; j + XD_LANES <= len; j += XD_LANES)                                                             \
            for (int l = 0; l < XD_LANES; l++) {                                                               \
                T e = EXP(s[j + l] - top);                                                                     \
                s[j + l] = e;                                                                                  \
                acc[l] += e;                                                                                   \
            }                                                                                                  \
        for (; j < len; j++) {                                                                                 \
            s[j] = EXP(s[j] - top);                                                                            \
            tail += s[j];                                                                                      \
        }                                                                                                      \
        T total = xd_attn_sum_##SFX(acc, tail);                                                                \
        *lse = top + LOG(total);                                                                               \
        T d = total == 0 ? (T)1 : total, a = (T)p->a;                                                          \
        if (none) {                                                                                            \
            memset(s, 0, (size_t)p->keys * sizeof *s);                                                         \
            return;                                                                                            \
        }                                                                                                      \
        if (keep == NULL) {                                                                                    \
            for (j = 0; j < len; j++) s[j] = s[j] / d;                                                         \
        } else {                                                                                               \
            for (j = 0; j < len; j++) {                                                                        \
                T w = s[j] / d * a;                                                                            \
                UT bits;                                                                                       \
                memcpy(&bits, &w, sizeof bits);                                                                \
                bits &= xd_attn_bits_##SFX(keep[j]);                                                           \
                memcpy(&s[j], &bits, sizeof bits);                                                             \
            }                                                                                                  \
        }                                                                                                      \
        memset(s + len, 0, (size_t)(p->keys - len) * sizeof *s);                                               \
    }                                                                                                          \
    /* Backward: from the raw scores s, dp = dout v^T and the row's lse, s becomes the dropped weights         \
     * (for dv) and dp the biased scores' gradient dS = P * (dP' - sum(P * dP')), dP' = dp * a * keep (not     \
     * yet times the score scale: the bias's gradient is dS itself). w holds P, the weights before dropout. */ \
    XD_ROW_FN void xd_attn_bwd_row_##SFX(const xd_attn *p, T *s, T *dp, T *w, const T *b, xd_u64 len,          \
                                             const xd_u32 *keep, int none, T lse) {                            \
        xd_attn_scores_##SFX(p, s, b, len);                                                                    \
        T top = lse == -(T)INFINITY ? (T)0 : lse, a = (T)p->a;                                                 \
        T acc[XD_LANES] = {0}, tail = 0;                                                                       \
        xd_u64 j = 0;                                                                                          \
        if (none) {                                                                                            \
            for (j = 0; j < len; j++) w[j] = EXP(s[j] - top);                                                  \
            memset(s, 0, (size_t)len * sizeof *s);                                                             \
            memset(dp, 0, (size_t)len * sizeof *dp);                                                           \
        } else if (keep == NULL) {                                                                             \
            for (; j + XD_LANES <= len; j += XD_LANES)                                                         \
                for (int l = 0; l < XD_LANES; l++) {                                                           \
                    T e = EXP(s[j + l] - top);                                                                 \
                    w[j + l] = e;                                                                              \
                    s[j + l] = e;                                                                              \
                    acc[l] += e * dp[j + l];                                                                   \
                }                                                                                              \
            for (; j < len; j++) {                                                                             \
                w[j] = s[j] = EXP(s[j] - top);                                                                 \
                tail += w[j] * dp[j];                                                                          \
            }                                                                                                  \
        } else {                                                                                               \
            for (; j + XD_LANES <= len; j += XD_LANES)                                                         \
                for (int l = 0; l < XD_LANES; l++) {                                                           \
                    T e = EXP(s[j + l] - top), x = e * a, g = dp[j + l] * a;                                   \
                    UT m = xd_attn_bits_##SFX(keep[j + l]), bx, bg;                                            \
                    memcpy(&bx, &x, sizeof bx);                                                                \
                    memcpy(&bg, &g, sizeof bg);                                                                \
                    bx &= m;                                                                                   \
                    bg &= m;                                                                                   \
                    memcpy(&s[j + l], &bx, sizeof bx);                                                         \
                    memcpy(&g, &bg, sizeof bg);                                                                \
                    w[j + l] = e;                                                                              \
                    dp[j + l] = g;                                                                             \
                    acc[l] += e * g;                                                                           \
                }                                                                                              \
            for (; j < len; j++) {                                                                             \
                T e = EXP(s[j] - top);                                                                         \
                int kept = (int)(keep[j] & 1u);                                                                \
                w[j] = e;                                                                                      \
                s[j] = kept ? e * a : (T)0;                                                                    \
                dp[j] = kept ? dp[j] * a : (T)0;                                                               \
                tail += e * dp[j];                                                                             \
            }                                                                                                  \
        }                                                                                                      \
        T sum = xd_attn_sum_##SFX(acc, tail);                                                                  \
        for (j = 0; j < len; j++) dp[j] = w[j] * (dp[j] - sum);                                                \
        memset(s + len, 0, (size_t)(p->keys - len) * sizeof *s);                                               \
        memset(dp + len, 0, (size_t)(p->keys - len) * sizeof *dp);                                             \
    }

XD_ATTN_ROWS(float, xd_u32, f32, xd_exp_f32, logf)
XD_ATTN_ROWS(double, xd_u64, f64, xd_exp_f64, log)

/* The block's rows through ROW (xd_attn_fwd_row or xd_attn_bwd_row of type T),
 * each row's keep masks first drawn into keep by the variant's CHUNK_FN.
 * Returns -1 when the row buffers cannot be allocated, else 0. */
#define XD_ATTN_BLOCK(T, CTX, INIT, CHUNK_FN, ROW_CALL)                                                          \
    do {                                                                                                         \
        xd_u64 S = p->keys;                                                                                      \
        int none = p->k == 0, drop = !none && !(p->k >> 32);                                                     \
        xd_u32 *keep = drop ? (xd_u32 *)malloc((size_t)(S ? S : 1) * sizeof *keep) : NULL;                       \
        T *w = (T *)malloc((size_t)(S ? S : 1) * sizeof *w);                                                     \
        if ((drop && keep == NULL) || w == NULL) {                                                               \
            free(keep);                                                                                          \
            free(w);                                                                                             \
            return -1;                                                                                           \
        }                                                                                                        \
        CTX xd_c;                                                                                                \
        INIT(&xd_c, p->seed, p->step, p->k); /* unused without dropout */                                        \
        const T *bias = (const T *)p->bias;                                                                      \
        for (xd_u64 r = 0; r < p->rows; r++) {                                                                   \
            xd_u64 f = p->row0 + r, n = f / p->length, qi = f % p->length;                                       \
            xd_u64 len = p->causal && qi + 1 < S ? qi + 1 : S;                                                   \
            if (drop)                                                                                            \
                XD_FOR_EACH(CHUNK_FN, &xd_c, (p->shared ? qi : f) * S, len,                                      \
                            CHUNK_FN(&xd_c, xd_at, XD_CHUNK, keep + xd_i0), keep[i] = KEEP);                     \
            const T *b = bias == NULL ? NULL                                                                     \
                                      : bias + (int64_t)(n / p->inner) * p->so + (int64_t)(n % p->inner) * p->si \
                                            + (int64_t)qi * p->sl;                                               \
            ROW_CALL;                                                                                            \
        }                                                                                                        \
        free(keep);                                                                                              \
        free(w);                                                                                                 \
        return 0;                                                                                                \
    } while (0)

/* The exported attention routines of one variant (names end in SUFFIX):
 * forward, s (rows x S, the raw scores) and lse (rows) of the block; backward,
 * s and dp (rows x S, dout v^T) and the block's lse. */
#define XD_ATTN_KERNELS_T(T, SFX, SUFFIX, ATTR, CTX, INIT, CHUNK_FN)                                   \
    ATTR int xd_attn_fwd_##SFX##SUFFIX(const xd_attn *p, T *s, T *lse) {                               \
        XD_ATTN_BLOCK(T, CTX, INIT, CHUNK_FN,                                                          \
                      xd_attn_fwd_row_##SFX(p, s + r * S, b, len, keep, none, lse + r));               \
    }                                                                                                  \
    ATTR int xd_attn_bwd_##SFX##SUFFIX(const xd_attn *p, T *s, T *dp, const T *lse) {                  \
        XD_ATTN_BLOCK(T, CTX, INIT, CHUNK_FN,                                                          \
                      xd_attn_bwd_row_##SFX(p, s + r * S, dp + r * S, w, b, len, keep, none, lse[r])); \
    }
#define XD_ATTN_KERNELS(SUFFIX, ATTR, CTX, INIT, CHUNK_FN)           \
    XD_ATTN_KERNELS_T(float, f32, SUFFIX, ATTR, CTX, INIT, CHUNK_FN) \
    XD_ATTN_KERNELS_T(double, f64, SUFFIX, ATTR, CTX, INIT, CHUNK_FN)

XD_ATTN_KERNELS(, XD_NO_ATTR, xd_args, xd_args_init, xd_keep_chunk_base)
#ifdef XD_HAVE_AVX2
XD_ATTN_KERNELS(_avx2, XD_AVX2, xd_ctx_avx2, xd_ctx_avx2_init, xd_keep_chunk_avx2)
XD_ATTN_KERNELS(_avx512, XD_AVX512, xd_ctx_avx512, xd_ctx_avx512_init, xd_keep_chunk_avx512)
#endif

#ifdef XD_HAVE_AVX2
/* ---- Attention with xdrop's own products (float32; the avx512 and avx2
 * variants): per problem and tile of query rows, q k^T, the row pass above and
 * P v (backward: the five products around xd_attn_bwd_row) in one call, the
 * tile's scores and their gradient (at most XD_MM_TILE floats each) kept in L2
 * between the products. MKL, which torch's CPU matmuls call, takes its AVX2 code
 * on AMD CPUs: its products ran at 115 GFLOPS per core where AVX-512 FMAs reach
 * 275 (AMD EPYC family 26). The feature sizes E and Ev are multiples of 16; the
 * mask bits are the row pass's, the same as every other path's. */

/* Floats of one tile's scores: 256 KiB, a quarter of the L2 of the CPUs measured. */
#define XD_MM_TILE 65536

/* The tensors of one call: q (N, L, E), k (N, S, E), v (N, S, Ev), out and dout
 * (N, L, Ev), lse (N, L), dq (N, L, E), all C-contiguous from problem 0; dk
 * (S, E) and dv (S, Ev) per problem from problem n0's (they accumulate). The
 * call covers problems n0 .. n1 - 1, query rows i0 .. i1 - 1 of each. With
 * heads = H > 1 the arrays but lse are (B, rows, H, F) (heads inner, Flax's
 * layout; problem n = b H + h), and with dheads = H so are dk and dv. */
typedef struct {
    const float *q, *k, *v, *dout;
    float *out, *lse, *dq, *dk, *dv;
    xd_u64 e, ev, n0, n1, i0, i1;
    xd_u64 heads, dheads; /* 0 or 1: as above; H: heads inner, below */
} xd_attn_io;

/* A microkernel NAME(MR, NV, kn, a, ars, aks, b, ldb, c, ldc, alpha, acc) of an ISA whose vector type VT
 * holds W floats: C[r][0 .. W NV) for r < MR, C = alpha A B (acc 0) or C += alpha A B (acc 1),
 * A(r, x) = a[r * ars + x * aks] for x < kn, B's row x at b + x * ldb. The MR x NV accumulators stay in
 * registers (MR and NV are constants where it is inlined: MR <= 6, NV <= NVMAX). MADD(a, b, c) is a * b + c. */
#define XD_MK_FN(NAME, ATTR, VT, W, NVMAX, LOAD, STORE, SET1, ZERO, MADD, MUL)                                     \
    ATTR static inline __attribute__((always_inline)) void NAME(int MR, int NV, xd_u64 kn, const float *a,            \
                                                                int64_t ars, int64_t aks, const float *b, int64_t ldb, \
                                                                float *c, int64_t ldc, float alpha, int acc) {         \
        VT t[6][NVMAX];                                                                                               \
        for (int r = 0; r < MR; r++)                                                                                  \
            for (int v = 0; v < NV; v++) t[r][v] = ZERO();                                                            \
        for (xd_u64 x = 0; x < kn; x++) {                                                                             \
            VT bv[NVMAX];                                                                                             \
            for (int v = 0; v < NV; v++) bv[v] = LOAD(b + (int64_t)x * ldb + W * v);                                  \
            for (int r = 0; r < MR; r++) {                                                                            \
                VT av = SET1(a[r * ars + (int64_t)x * aks]);                                                          \
                for (int v = 0; v < NV; v++) t[r][v] = MADD(av, bv[v], t[r][v]);                                      \
            }                                                                                                         \
        }                                                                                                             \
        VT al = SET1(alpha);                                                                                          \
        for (int r = 0; r < MR; r++)                                                                                  \
            for (int v = 0; v < NV; v++) {                                                                            \
                float *o = c + r * ldc + W * v;                                                                       \
                STORE(o, acc ? MADD(t[r][v], al, LOAD(o)) : MUL(t[r][v], al));                                        \
            }                                                                                                         \
    }

#define XD_FMA512(a, b, c) _mm512_fmadd_ps(a, b, c)
XD_MK_FN(xd_mk_avx512, XD_AVX512, __m512, 16, 4, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_setzero_ps,
         XD_FMA512, _mm512_mul_ps)
/* AVX2 without FMA (the variant's target): a product and a sum, which Zen's separate add pipes run beside
 * the multiplies. Its 16 registers hold 6 x 2 accumulators. */
#define XD_MADD256(a, b, c) _mm256_add_ps(_mm256_mul_ps(a, b), c)
XD_MK_FN(xd_mk_avx2, XD_AVX2, __m256, 8, 2, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_setzero_ps,
         XD_MADD256, _mm256_mul_ps)

#define XD_MK_CASE(MK, MR, NV)                                                                                     \
    case (MR) * 8 + (NV):                                                                                          \
        MK(MR, NV, kn, a + i * ars, ars, aks, b + j, ldb, c + i * ldc + j, ldc, alpha, acc);                       \
        break;
#define XD_MK_ROWS(MK, NV)                                                 \
    XD_MK_CASE(MK, 1, NV) XD_MK_CASE(MK, 2, NV) XD_MK_CASE(MK, 3, NV)      \
        XD_MK_CASE(MK, 4, NV) XD_MK_CASE(MK, 5, NV) XD_MK_CASE(MK, 6, NV)

/* NAME(m, n16, kn, a, ars, aks, b, ldb, c, ldc, alpha, acc): C (m x n16, n16 a multiple of 16) = or +=
 * alpha A B, A m x kn (strides as the microkernel's), B kn x n16: panels of W NVMAX columns (B's panel
 * stays in L1 or L2), tiles of 6 rows in each. CASES lists the microkernel's (MR, NV) cases. */
#define XD_GEMM_FN(NAME, ATTR, W, NVMAX, CASES)                                                                    \
    ATTR static void NAME(xd_u64 m, xd_u64 n16, xd_u64 kn, const float *a, int64_t ars, int64_t aks,               \
                          const float *b, int64_t ldb, float *c, int64_t ldc, float alpha, int acc) {              \
        for (xd_u64 j = 0; j < n16; j += W * NVMAX) {                                                              \
            int nv = n16 - j >= W * NVMAX ? NVMAX : (int)((n16 - j) / W);                                          \
            for (xd_u64 i = 0; i < m; i += 6) {                                                                    \
                int mr = m - i >= 6 ? 6 : (int)(m - i);                                                            \
                switch (mr * 8 + nv) { CASES }                                                                     \
            }                                                                                                      \
        }                                                                                                          \
    }
XD_GEMM_FN(xd_gemm_avx512, XD_AVX512, 16, 4,
           XD_MK_ROWS(xd_mk_avx512, 1) XD_MK_ROWS(xd_mk_avx512, 2) XD_MK_ROWS(xd_mk_avx512, 3)
               XD_MK_ROWS(xd_mk_avx512, 4))
XD_GEMM_FN(xd_gemm_avx2, XD_AVX2, 8, 2, XD_MK_ROWS(xd_mk_avx2, 1) XD_MK_ROWS(xd_mk_avx2, 2))

/* dst (cols x ld, row x at dst + x * ld) = src^T for src (rows x cols, row-major), columns rows .. ld - 1
 * zero: 16 source rows at a time, so that each destination row is written 16 floats at a time. */
static void xd_transpose_f32(const float *src, xd_u64 rows, xd_u64 cols, xd_u64 lds, float *dst, xd_u64 ld) {
    for (xd_u64 y = 0; y < ld; y += 16) {
        xd_u64 h = y >= rows ? 0 : rows - y < 16 ? rows - y : 16;
        for (xd_u64 x = 0; x < cols; x++) {
            float *d = dst + x * ld + y;
            for (xd_u64 u = 0; u < h; u++) d[u] = src[(y + u) * lds + x];
            for (xd_u64 u = h; u < 16 && y + u < ld; u++) d[u] = 0.0f;
        }
    }
}

/* Rows of a tile: XD_MM_TILE floats of scores (at least 6 rows, one microkernel's). */
static inline xd_u64 xd_mm_rows(xd_u64 s16) { return XD_MM_TILE / s16 < 6 ? 6 : XD_MM_TILE / s16; }

/* A thread's buffers for one call, allocated once and used by each of the parts it takes: kt and vt
 * (E x S16, Ev x S16: k and v transposed), s and dp (a tile's scores and their gradient), w and keep
 * (one row's weights and keep masks). */
typedef struct {
    float *kt, *vt, *s, *dp, *w;
    xd_u32 *keep;
    void *block;
} xd_attn_ws;

/* Returns -1 when the buffers cannot be allocated, else 0 (free ws->block after). */
static int xd_attn_ws_alloc(const xd_attn *p, const xd_attn_io *t, xd_attn_ws *ws) {
    xd_u64 s16 = (p->keys + 15) / 16 * 16, r = xd_mm_rows(s16);
    xd_u64 sizes[6] = {t->e * s16, t->ev * s16, r * s16, r * s16, s16, s16}, total = 0;
    for (int i = 0; i < 6; i++) total += (sizes[i] + 15) / 16 * 16; /* each buffer on its own cache lines */
    float *block = (float *)malloc((size_t)total * sizeof(float));
    ws->block = block;
    if (block == NULL) return -1;
    float **at[6] = {&ws->kt, &ws->vt, &ws->s, &ws->dp, &ws->w, (float **)(void *)&ws->keep};
    for (int i = 0; i < 6; i++) {
        *at[i] = block;
        block += (sizes[i] + 15) / 16 * 16;
    }
    return 0;
}

/* A call's parts: part j covers problems parts[6j] .. parts[6j + 1] - 1, rows parts[6j + 2] ..
 * parts[6j + 3] - 1, its dk and dv at the addresses parts[6j + 4] and parts[6j + 5]. Threads take the
 * next part not yet taken until none is left. */
typedef struct {
    const xd_attn *p;
    const xd_attn_io *t;
    const int64_t *parts;
    xd_u64 count;
    int backward;
    xd_u64 next; /* the next part to take (atomic) */
    int failed;  /* a thread could not allocate its buffers (atomic) */
} xd_attn_mm_job;

/* GOMP_parallel's type: the OpenMP runtime's entry point that runs fn(data) on a team of threads (the
 * caller one of them) and returns when all are done. */
typedef void (*xd_parallel_fn)(void (*fn)(void *), void *data, unsigned threads, unsigned flags);

/* The routines of one variant (names end in SUFFIX; CTX, INIT and CHUNK_FN its keep masks', GEMM its
 * products'):
 *   xd_attn_mm_fwd_f32: out and lse of a part's rows;
 *   xd_attn_mm_bwd_f32: dq of a part's rows written, their terms added into dk and dv;
 *   xd_attn_mm_run: a call's parts on `threads` threads, through `parallel` (the runtime torch's
 *     intra-op threads belong to, whose idle threads spin for a while after each operation and would
 *     take the cores from threads of ours), or on the calling thread alone where it is NULL. Returns -1
 *     if a thread could not allocate its buffers (then parts may be left undone), else 0.
 * Rows q0 .. q0 + rows - 1 of problem n go through the row pass with keys 0 .. len - 1 unmasked (causal),
 * each row's keep masks drawn into keep and its bias row found first. */
#define XD_ATTN_MM(SUFFIX, ATTR, CTX, INIT, CHUNK_FN, GEMM)                                                        \
    ATTR static void xd_attn_mm_fwd_f32##SUFFIX(const xd_attn *p, const xd_attn_io *t, const xd_attn_ws *ws) {     \
        XD_MM_SETUP(CTX, INIT);                                                                                    \
        for (xd_u64 n = t->n0; n < t->n1; n++) {                                                                   \
            const float *kn = XD_MM_AT(t->k, n, S, E, H), *vn = XD_MM_AT(t->v, n, S, Ev, H);                     \
            xd_transpose_f32(kn, S, E, H * E, kt, S16);                                                            \
            for (xd_u64 q0 = t->i0; q0 < t->i1; q0 += R) {                                                         \
                XD_MM_TILE_SETUP;                                                                                  \
                const float *qt = XD_MM_AT(t->q, n, L, E, H) + q0 * H * E;                                         \
                GEMM(rows, j16, E, qt, (int64_t)(H * E), 1, kt, (int64_t)S16, s, (int64_t)S16, 1.0f, 0);           \
                XD_MM_ROWS(CHUNK_FN,                                                                               \
                           xd_attn_fwd_row_f32(p, s + r * S16, b, len, drop ? keep : NULL, none, t->lse + f))       \
                float *o = XD_MM_AT(t->out, n, L, Ev, H) + q0 * H * Ev;                                            \
                GEMM(rows, Ev, jmax, s, (int64_t)S16, 1, vn, (int64_t)(H * Ev), o, (int64_t)(H * Ev), 1.0f, 0);    \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
    ATTR static void xd_attn_mm_bwd_f32##SUFFIX(const xd_attn *p, const xd_attn_io *t, const xd_attn_ws *ws) {     \
        XD_MM_SETUP(CTX, INIT);                                                                                    \
        float *vt = ws->vt, *dp = ws->dp, sc = (float)p->scale;                                                    \
        for (xd_u64 n = t->n0; n < t->n1; n++) {                                                                   \
            const float *kn = XD_MM_AT(t->k, n, S, E, H), *vn = XD_MM_AT(t->v, n, S, Ev, H);                     \
            float *dkn = t->dk + (XD_MM_OFF(n, S, E, D) - XD_MM_OFF(t->n0, S, E, D));                              \
            float *dvn = t->dv + (XD_MM_OFF(n, S, Ev, D) - XD_MM_OFF(t->n0, S, Ev, D));                            \
            xd_transpose_f32(kn, S, E, H * E, kt, S16);                                                            \
            xd_transpose_f32(vn, S, Ev, H * Ev, vt, S16);                                                          \
            for (xd_u64 q0 = t->i0; q0 < t->i1; q0 += R) {                                                         \
                XD_MM_TILE_SETUP;                                                                                  \
                const float *qt = XD_MM_AT(t->q, n, L, E, H) + q0 * H * E;                                         \
                const float *g = XD_MM_AT(t->dout, n, L, Ev, H) + q0 * H * Ev;                                     \
                float *dq = XD_MM_AT(t->dq, n, L, E, H) + q0 * H * E;                                              \
                GEMM(rows, j16, E, qt, (int64_t)(H * E), 1, kt, (int64_t)S16, s, (int64_t)S16, 1.0f, 0);           \
                GEMM(rows, j16, Ev, g, (int64_t)(H * Ev), 1, vt, (int64_t)S16, dp, (int64_t)S16, 1.0f, 0);         \
                XD_MM_ROWS(CHUNK_FN, xd_attn_bwd_row_f32(p, s + r * S16, dp + r * S16, w, b, len,                  \
                                                         drop ? keep : NULL, none, t->lse[f]))                     \
                /* s: the dropped weights; dp: dS. dv += s^T dout, dq = scale dS k, dk += scale dS^T q. */         \
                GEMM(jmax, Ev, rows, s, 1, (int64_t)S16, g, (int64_t)(H * Ev), dvn, (int64_t)(D * Ev), 1.0f, 1);   \
                GEMM(rows, E, jmax, dp, (int64_t)S16, 1, kn, (int64_t)(H * E), dq, (int64_t)(H * E), sc, 0);       \
                GEMM(jmax, E, rows, dp, 1, (int64_t)S16, qt, (int64_t)(H * E), dkn, (int64_t)(D * E), sc, 1);      \
            }                                                                                                      \
        }                                                                                                          \
    }                                                                                                              \
    static void xd_attn_mm_work##SUFFIX(void *arg) {                                                               \
        xd_attn_mm_job *job = (xd_attn_mm_job *)arg;                                                               \
        xd_attn_ws ws;                                                                                             \
        if (xd_attn_ws_alloc(job->p, job->t, &ws) != 0) {                                                          \
            __atomic_store_n(&job->failed, 1, __ATOMIC_RELAXED); /* the other threads stop too */                 \
            return;                                                                                                \
        }                                                                                                          \
        for (;;) {                                                                                                 \
            xd_u64 j = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);                                        \
            if (j >= job->count || __atomic_load_n(&job->failed, __ATOMIC_RELAXED)) break;                         \
            const int64_t *a = job->parts + 6 * j;                                                                 \
            xd_attn_io t = *job->t;                                                                                \
            t.n0 = (xd_u64)a[0], t.n1 = (xd_u64)a[1], t.i0 = (xd_u64)a[2], t.i1 = (xd_u64)a[3];                    \
            t.dk = (float *)(intptr_t)a[4], t.dv = (float *)(intptr_t)a[5];                                        \
            if (job->backward)                                                                                     \
                xd_attn_mm_bwd_f32##SUFFIX(job->p, &t, &ws);                                                       \
            else                                                                                                   \
                xd_attn_mm_fwd_f32##SUFFIX(job->p, &t, &ws);                                                       \
        }                                                                                                          \
        free(ws.block);                                                                                            \
    }                                                                                                              \
    int xd_attn_mm_run##SUFFIX(const xd_attn *p, const xd_attn_io *t, const int64_t *parts, xd_u64 count,          \
                               int backward, xd_parallel_fn parallel, unsigned threads) {                          \
        xd_attn_mm_job job = {p, t, parts, count, backward, 0, 0};                                                 \
        if (parallel != NULL && threads > 1 && count > 1)                                                          \
            parallel(xd_attn_mm_work##SUFFIX, &job, threads < count ? threads : (unsigned)count, 0);               \
        else                                                                                                       \
            xd_attn_mm_work##SUFFIX(&job);                                                                         \
        return job.failed ? -1 : 0;                                                                                \
    }

/* Where problem n's rows of F floats start in an array of `rows` rows per problem: problem n = b H + h at
 * (b, 0, h) of a (B, rows, H, F) array, rows H F floats apart; with H = 1, (N, rows, F) C-contiguous. */
#define XD_MM_OFF(n, rows, F, H) (((n) / (H)) * (rows) * (H) * (F) + ((n) % (H)) * (F))
#define XD_MM_AT(base, n, rows, F, H) ((base) + XD_MM_OFF(n, rows, F, H))

/* What both directions set up: sizes, the layouts (H: q, k, v, out and their gradients; D: dk and dv),
 * the tile's rows, the stream, the thread's buffers. */
#define XD_MM_SETUP(CTX, INIT)                                                           \
    xd_u64 L = p->length, S = p->keys, E = t->e, Ev = t->ev, S16 = (S + 15) / 16 * 16;  \
    xd_u64 H = t->heads > 1 ? t->heads : 1, D = t->dheads > 1 ? t->dheads : 1;           \
    (void)D;                                                                             \
    xd_u64 R = xd_mm_rows(S16);                                                          \
    int none = p->k == 0, drop = !none && !(p->k >> 32);                                 \
    const float *bias = (const float *)p->bias;                                          \
    CTX xd_c;                                                                            \
    INIT(&xd_c, p->seed, p->step, drop ? p->k : 1);                                      \
    float *kt = ws->kt, *s = ws->s, *w = ws->w;                                          \
    xd_u32 *keep = ws->keep;                                                             \
    (void)w

/* A tile: its rows, and the keys any of its rows sees (jmax; j16 rounded up to 16). */
#define XD_MM_TILE_SETUP                                                                 \
    xd_u64 rows = t->i1 - q0 < R ? t->i1 - q0 : R;                                       \
    xd_u64 jmax = p->causal && q0 + rows < S ? q0 + rows : S, j16 = (jmax + 15) / 16 * 16

#define XD_MM_ROWS(CHUNK_FN, ROW_CALL)                                                                           \
    for (xd_u64 r = 0; r < rows; r++) {                                                                          \
        xd_u64 qi = q0 + r, f = n * L + qi;                                                                      \
        xd_u64 len = p->causal && qi + 1 < S ? qi + 1 : S;                                                       \
        if (drop)                                                                                                \
            XD_FOR_EACH(CHUNK_FN, &xd_c, (p->shared ? qi : f) * S, len,                                          \
                        CHUNK_FN(&xd_c, xd_at, XD_CHUNK, keep + xd_i0), keep[i] = KEEP);                         \
        const float *b = bias == NULL ? NULL                                                                     \
                                      : bias + (int64_t)(n / p->inner) * p->so + (int64_t)(n % p->inner) * p->si \
                                            + (int64_t)qi * p->sl;                                               \
        ROW_CALL;                                                                                                \
    }

XD_ATTN_MM(_avx512, XD_AVX512, xd_ctx_avx512, xd_ctx_avx512_init, xd_keep_chunk_avx512, xd_gemm_avx512)
XD_ATTN_MM(_avx2, XD_AVX2, xd_ctx_avx2, xd_ctx_avx2_init, xd_keep_chunk_avx2, xd_gemm_avx2)
#endif

/* Bit 0: base (always), bit 1: avx2, bit 2: avx512 (compiled in and run by this CPU: cpuid). */
int xd_variants(void) {
    int v = 1;
#ifdef XD_HAVE_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) v |= 2;
    if (__builtin_cpu_supports("avx512f")) v |= 4;
#endif
    return v;
}
#endif
