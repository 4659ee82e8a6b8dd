/*
 * xdrop stream spec v1 (docs/stream-spec.md) in C: one source text for the
 * GPU (NVRTC, through CuPy, with XDROP_CUDA defined) and for the host (any C99
 * compiler, loaded with ctypes). The host build is what the CPU-only tests
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
    xd_u64 t = (xd_u64)blockIdx.x * blockDim.x + threadIdx.x;
    xd_u64 block = start / 4 + t;
    xd_u64 first = block * 4;
    if (first >= start + n) return;
    xd_u32 w[4];
    xd_philox10(block, step, seed, w);
    for (int l = 0; l < 4; l++) {
        xd_u64 i = first + l;
        if (i >= start && i < start + n) out[i - start] = (xd_u64)w[l] < k;
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
/* ---- Host: the same xd_philox10 as the GPU, a chunk of 64 elements at a
 * time (tried: vectorising the rounds across blocks with compiler vector
 * types was no faster with gcc 12, which lowers the 64-bit lane products to
 * shift-and-add sequences). Exported for ctypes. --------------------------- */

/* Philox words of one block (for the tests: the scalar routine the GPU runs). */
void xd_block_words(xd_u64 block, xd_u64 step, xd_u64 seed, xd_u32 *w) { xd_philox10(block, step, seed, w); }

/* Keep masks (all ones: keep, zero: drop) of the elements of the chunk of
 * XD_CHUNK flat indices that starts at first (a multiple of 4). K = 2^32
 * (keep all) is split off so that the compare stays 32-bit and vectorises. */
#define XD_CHUNK 64
static inline void xd_keep_chunk(xd_u64 first, xd_u64 step, xd_u64 seed, xd_u64 k, xd_u32 m[XD_CHUNK]) {
    xd_u32 k32 = (xd_u32)k, all = (xd_u32)0 - (xd_u32)(k >> 32);
    for (int j = 0; j < XD_CHUNK / 4; j++) {
        xd_u32 w[4];
        xd_philox10(first / 4 + (xd_u64)j, step, seed, w);
        for (int l = 0; l < 4; l++) m[4 * j + l] = ((xd_u32)0 - (xd_u32)(w[l] < k32)) | all;
    }
}

/* Runs BODY for each flat index g in [start, start + n) with i = g - start and
 * KEEP its keep mask; whole chunks take a branch-free loop that vectorises. */
#define XD_FOR_EACH(start, n, seed, step, k, BODY)                                      \
    do {                                                                                \
        /* Bounded by the last index, never start + n: that is 2^64 (wraps to 0) for    \
         * a range that ends at the top of the index space, and first + XD_CHUNK may    \
         * wrap too, so the loop stops by its distance to the last index. */            \
        if ((n) == 0) break;                                                            \
        xd_u64 xd_last = (start) + ((n) - 1);                                           \
        xd_u32 KEEP_[XD_CHUNK];                                                         \
        for (xd_u64 xd_first = (start) / 4 * 4;; xd_first += XD_CHUNK) {                \
            xd_keep_chunk(xd_first, (step), (seed), (k), KEEP_);                        \
            if (xd_first >= (start) && xd_last - xd_first >= XD_CHUNK - 1) {            \
                xd_u64 xd_off = xd_first - (start);                                     \
                for (int e = 0; e < XD_CHUNK; e++) {                                    \
                    xd_u64 i = xd_off + (xd_u64)e;                                      \
                    xd_u32 KEEP = KEEP_[e];                                             \
                    BODY;                                                               \
                }                                                                       \
            } else {                                                                    \
                for (int e = 0; e < XD_CHUNK; e++) {                                    \
                    xd_u64 g = xd_first + (xd_u64)e; /* wraps only past xd_last */      \
                    if (g < (start) || g > xd_last) continue;                           \
                    xd_u64 i = g - (start);                                             \
                    xd_u32 KEEP = KEEP_[e];                                             \
                    BODY;                                                               \
                }                                                                       \
            }                                                                           \
            if (xd_last - xd_first < XD_CHUNK) break;                                   \
        }                                                                               \
    } while (0)

void xd_mask(xd_u64 start, xd_u64 n, xd_u64 seed, xd_u64 step, xd_u64 k, unsigned char *restrict out) {
    XD_FOR_EACH(start, n, seed, step, k, out[i] = (unsigned char)(KEEP & 1u));
}

/* x and out are contiguous, x[0] has flat index start. The product is formed
 * for every element and masked bitwise (a dropped element is +0), so the loop
 * has no branch and vectorises. */
void xd_dropout_f32(const float *restrict x, float *restrict out, xd_u64 start, xd_u64 n, xd_u64 seed, xd_u64 step,
                    xd_u64 k, float scale) {
    XD_FOR_EACH(start, n, seed, step, k, {
        float v = x[i] * scale;
        xd_u32 bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= KEEP;
        memcpy(&out[i], &bits, sizeof bits);
    });
}

void xd_dropout_f64(const double *restrict x, double *restrict out, xd_u64 start, xd_u64 n, xd_u64 seed,
                    xd_u64 step, xd_u64 k, double scale) {
    XD_FOR_EACH(start, n, seed, step, k, {
        double v = x[i] * scale;
        xd_u64 bits;
        memcpy(&bits, &v, sizeof bits);
        bits &= (xd_u64)0 - (xd_u64)(KEEP & 1u);
        memcpy(&out[i], &bits, sizeof bits);
    });
}
#endif
