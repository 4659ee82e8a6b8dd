/*
 * xdrop stream spec v1 (docs/stream-spec.md) in C: one source text for the
 * GPU (NVRTC, through CuPy, with XDROP_CUDA defined) and for the host (any C99
 * compiler, built into the extension module xdrop._kernels._philox by
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
#include <stdint.h>
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

/* Keep masks (all ones: keep, zero: drop) of the elements of the chunk of
 * XD_CHUNK flat indices that starts at first (a multiple of 4). K = 2^32
 * (keep all) is split off so that the compare stays 32-bit and vectorises. */
#define XD_CHUNK 128
static inline void xd_keep_chunk(xd_u64 first, xd_u64 step, xd_u64 seed, xd_u64 k, xd_u32 m[XD_CHUNK]) {
    xd_u32 k32 = (xd_u32)k, all = (xd_u32)0 - (xd_u32)(k >> 32);
    for (int j = 0; j < XD_CHUNK / 4; j++) {
        xd_u32 w[4];
        xd_philox10(first / 4 + (xd_u64)j, step, seed, w);
        for (int l = 0; l < 4; l++) m[4 * j + l] = ((xd_u32)0 - (xd_u32)(w[l] < k32)) | all;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define XD_HAVE_AVX2 1
#include <immintrin.h>
#define XD_AVX2 __attribute__((target("avx2")))

/* hi and lo halves of the eight products a * m (m a constant): the even and
 * odd 32-bit lanes each take one 32x32->64-bit multiply. */
#define XD_MULHILO_AVX2(a, m, hi, lo)                                                  \
    do {                                                                               \
        __m256i xd_m = _mm256_set1_epi32((int)(m));                                    \
        __m256i xd_even = _mm256_mul_epu32((a), xd_m);                                 \
        __m256i xd_odd = _mm256_mul_epu32(_mm256_srli_epi64((a), 32), xd_m);           \
        lo = _mm256_blend_epi32(xd_even, _mm256_slli_epi64(xd_odd, 32), 0xAA);         \
        hi = _mm256_blend_epi32(_mm256_srli_epi64(xd_even, 32), xd_odd, 0xAA);         \
    } while (0)

/* The same masks as xd_keep_chunk: counter word j of blocks b .. b + 7 in
 * register c[h][j] (four independent groups h of 8 blocks hide the multiply's
 * latency), then a 4x8 transpose into element order. */
XD_AVX2 static inline void xd_keep_chunk_avx2(xd_u64 first, xd_u64 step, xd_u64 seed, xd_u64 k,
                                               xd_u32 m[XD_CHUNK]) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i bias = _mm256_set1_epi32((int)0x80000000u); /* unsigned compare via signed */
    const __m256i kb = _mm256_set1_epi32((int)((xd_u32)k ^ 0x80000000u));
    const __m256i all = _mm256_set1_epi32((int)((xd_u32)0 - (xd_u32)(k >> 32)));
    __m256i c[4][4];
    for (int h = 0; h < 4; h++) {
        xd_u64 b = first / 4 + 8 * (xd_u64)h;
        __m256i lo0 = _mm256_set1_epi32((int)(xd_u32)b);
        __m256i c0 = _mm256_add_epi32(lo0, lanes);
        /* lanes whose low word wrapped carry into the high word: wrapped means c0 < lo0 */
        __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(lo0, bias), _mm256_xor_si256(c0, bias));
        c[h][0] = c0;
        c[h][1] = _mm256_sub_epi32(_mm256_set1_epi32((int)(xd_u32)(b >> 32)), carry);
        c[h][2] = _mm256_set1_epi32((int)(xd_u32)step);
        c[h][3] = _mm256_set1_epi32((int)(xd_u32)(step >> 32));
    }
    xd_u32 k0 = (xd_u32)seed, k1 = (xd_u32)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        __m256i kv0 = _mm256_set1_epi32((int)k0), kv1 = _mm256_set1_epi32((int)k1);
        for (int h = 0; h < 4; h++) XD_ROUND(__m256i, XD_MULHILO_AVX2, c[h][0], c[h][1], c[h][2], c[h][3], kv0, kv1);
        k0 += XD_W0;
        k1 += XD_W1;
    }
    for (int h = 0; h < 4; h++) {
        __m256i w[4];
        for (int j = 0; j < 4; j++) w[j] = _mm256_or_si256(_mm256_cmpgt_epi32(kb, _mm256_xor_si256(c[h][j], bias)), all);
        __m256i t0 = _mm256_unpacklo_epi32(w[0], w[1]), t1 = _mm256_unpackhi_epi32(w[0], w[1]);
        __m256i t2 = _mm256_unpacklo_epi32(w[2], w[3]), t3 = _mm256_unpackhi_epi32(w[2], w[3]);
        __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2); /* blocks 0,4 | 1,5 */
        __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3); /* blocks 2,6 | 3,7 */
        __m256i *dst = (__m256i *)(void *)(m + 32 * h);
        _mm256_storeu_si256(dst + 0, _mm256_permute2x128_si256(u0, u1, 0x20));
        _mm256_storeu_si256(dst + 1, _mm256_permute2x128_si256(u2, u3, 0x20));
        _mm256_storeu_si256(dst + 2, _mm256_permute2x128_si256(u0, u1, 0x31));
        _mm256_storeu_si256(dst + 3, _mm256_permute2x128_si256(u2, u3, 0x31));
    }
}

#define XD_AVX512 __attribute__((target("avx512f")))

#define XD_MULHILO_AVX512(a, m, hi, lo)                                              \
    do {                                                                             \
        __m512i xd_m = _mm512_set1_epi32((int)(m));                                  \
        __m512i xd_even = _mm512_mul_epu32((a), xd_m);                               \
        __m512i xd_odd = _mm512_mul_epu32(_mm512_srli_epi64((a), 32), xd_m);         \
        lo = _mm512_mask_blend_epi32(0xAAAA, xd_even, _mm512_slli_epi64(xd_odd, 32)); \
        hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(xd_even, 32), xd_odd); \
    } while (0)

/* The same masks as xd_keep_chunk: counter word j of blocks b .. b + 15 in
 * c[h][j] (two groups h of 16 blocks), compared under a mask register, then
 * interleaved into element order through a small buffer (AVX-512F only). */
XD_AVX512 static inline void xd_keep_chunk_avx512(xd_u64 first, xd_u64 step, xd_u64 seed, xd_u64 k,
                                                   xd_u32 m[XD_CHUNK]) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i kv = _mm512_set1_epi32((int)(xd_u32)k);
    const __m512i ones = _mm512_set1_epi32(-1);
    const xd_u32 all = (xd_u32)0 - (xd_u32)(k >> 32);
    __m512i c[2][4];
    for (int h = 0; h < 2; h++) {
        xd_u64 b = first / 4 + 16 * (xd_u64)h;
        __m512i lo0 = _mm512_set1_epi32((int)(xd_u32)b);
        __m512i c0 = _mm512_add_epi32(lo0, lanes);
        __mmask16 wrapped = _mm512_cmplt_epu32_mask(c0, lo0); /* low word wrapped: carry into the high word */
        c[h][0] = c0;
        c[h][1] = _mm512_mask_add_epi32(_mm512_set1_epi32((int)(xd_u32)(b >> 32)), wrapped,
                                        _mm512_set1_epi32((int)(xd_u32)(b >> 32)), _mm512_set1_epi32(1));
        c[h][2] = _mm512_set1_epi32((int)(xd_u32)step);
        c[h][3] = _mm512_set1_epi32((int)(xd_u32)(step >> 32));
    }
    xd_u32 k0 = (xd_u32)seed, k1 = (xd_u32)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        __m512i kv0 = _mm512_set1_epi32((int)k0), kv1 = _mm512_set1_epi32((int)k1);
        for (int h = 0; h < 2; h++) XD_ROUND(__m512i, XD_MULHILO_AVX512, c[h][0], c[h][1], c[h][2], c[h][3], kv0, kv1);
        k0 += XD_W0;
        k1 += XD_W1;
    }
    for (int h = 0; h < 2; h++) {
        xd_u32 t[4][16];
        for (int j = 0; j < 4; j++) {
            __mmask16 keep = _mm512_cmplt_epu32_mask(c[h][j], kv);
            _mm512_storeu_si512((void *)t[j], _mm512_or_si512(_mm512_maskz_mov_epi32(keep, ones), _mm512_set1_epi32((int)all)));
        }
        for (int b = 0; b < 16; b++)
            for (int j = 0; j < 4; j++) m[64 * h + 4 * b + j] = t[j][b];
    }
}
#endif

/* Runs BODY for each flat index start + i, i in [0, n), with KEEP its keep
 * mask; whole chunks take a branch-free loop that vectorises. The loop counts
 * offsets from the first chunk, never start + n, which wraps to 0 (or near
 * it) for a range that ends within a chunk of 2^64. */
#define XD_FOR_EACH(CHUNK_FN, start, n, seed, step, k, BODY)                              \
    do {                                                                                  \
        xd_u64 xd_first = (start) / 4 * 4, xd_lead = (start) % 4, xd_end = xd_lead + (n); \
        xd_u32 KEEP_[XD_CHUNK];                                                           \
        for (xd_u64 xd_off = 0; xd_off < xd_end; xd_off += XD_CHUNK) {                    \
            CHUNK_FN(xd_first + xd_off, (step), (seed), (k), KEEP_);                      \
            if (xd_off >= xd_lead && xd_end - xd_off >= XD_CHUNK) {                       \
                xd_u64 xd_i0 = xd_off - xd_lead;                                          \
                for (int e = 0; e < XD_CHUNK; e++) {                                      \
                    xd_u64 i = xd_i0 + (xd_u64)e;                                         \
                    xd_u32 KEEP = KEEP_[e];                                               \
                    BODY;                                                                 \
                }                                                                         \
            } else {                                                                      \
                for (int e = 0; e < XD_CHUNK; e++) {                                      \
                    xd_u64 xd_o = xd_off + (xd_u64)e;                                     \
                    if (xd_o < xd_lead || xd_o >= xd_end) continue;                       \
                    xd_u64 i = xd_o - xd_lead;                                            \
                    xd_u32 KEEP = KEEP_[e];                                               \
                    BODY;                                                                 \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    } while (0)

/* The exported kernels of one variant: names end in SUFFIX ("" for base).
 * x and out are contiguous, x[0] has flat index start. The product is formed
 * for every element and masked bitwise (a dropped element is +0), so the loop
 * has no branch and vectorises. */
#define XD_HOST_KERNELS(SUFFIX, ATTR, CHUNK_FN)                                                             \
    ATTR void xd_mask##SUFFIX(xd_u64 start, xd_u64 n, xd_u64 seed, xd_u64 step, xd_u64 k,                  \
                              unsigned char *restrict out) {                                                 \
        XD_FOR_EACH(CHUNK_FN, start, n, seed, step, k, out[i] = (unsigned char)(KEEP & 1u));                 \
    }                                                                                                        \
    ATTR void xd_dropout_f32##SUFFIX(const float *restrict x, float *restrict out, xd_u64 start, xd_u64 n, \
                                     xd_u64 seed, xd_u64 step, xd_u64 k, float scale) {                     \
        XD_FOR_EACH(CHUNK_FN, start, n, seed, step, k, {                                                     \
            float v = x[i] * scale;                                                                          \
            xd_u32 bits;                                                                                     \
            memcpy(&bits, &v, sizeof bits);                                                                  \
            bits &= KEEP;                                                                                    \
            memcpy(&out[i], &bits, sizeof bits);                                                             \
        });                                                                                                  \
    }                                                                                                        \
    ATTR void xd_dropout_f64##SUFFIX(const double *restrict x, double *restrict out, xd_u64 start, xd_u64 n, \
                                     xd_u64 seed, xd_u64 step, xd_u64 k, double scale) {                    \
        XD_FOR_EACH(CHUNK_FN, start, n, seed, step, k, {                                                     \
            double v = x[i] * scale;                                                                         \
            xd_u64 bits;                                                                                     \
            memcpy(&bits, &v, sizeof bits);                                                                  \
            bits &= (xd_u64)0 - (xd_u64)(KEEP & 1u);                                                         \
            memcpy(&out[i], &bits, sizeof bits);                                                             \
        });                                                                                                  \
    }

#define XD_NO_ATTR
XD_HOST_KERNELS(, XD_NO_ATTR, xd_keep_chunk)
#ifdef XD_HAVE_AVX2
XD_HOST_KERNELS(_avx2, XD_AVX2, xd_keep_chunk_avx2)
XD_HOST_KERNELS(_avx512, XD_AVX512, xd_keep_chunk_avx512)
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
