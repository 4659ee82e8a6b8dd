/* Scalar stand-ins for the AVX-512F intrinsics that the avx512 variant's chunk routines
 * use, with Intel's documented semantics, so tests/test_kernels.py can run their
 * algorithm (lane orders, counter carry, transposes, masked products) on a CPU without
 * AVX-512 and compare it with the scalar xd_keep_blocks. */
#include <stdint.h>
#include <string.h>

typedef long long __m512i __attribute__((vector_size(64)));
typedef uint16_t __mmask16;

static inline void em_get32(__m512i a, uint32_t v[16]) { memcpy(v, &a, 64); }
static inline __m512i em_put32(const uint32_t v[16]) {
    __m512i a;
    memcpy(&a, v, 64);
    return a;
}
static inline void em_get64(__m512i a, uint64_t v[8]) { memcpy(v, &a, 64); }
static inline __m512i em_put64(const uint64_t v[8]) {
    __m512i a;
    memcpy(&a, v, 64);
    return a;
}

static inline __m512i _mm512_setr_epi32(int e0, int e1, int e2, int e3, int e4, int e5, int e6, int e7, int e8,
                                        int e9, int e10, int e11, int e12, int e13, int e14, int e15) {
    uint32_t v[16] = {(uint32_t)e0,  (uint32_t)e1,  (uint32_t)e2,  (uint32_t)e3, (uint32_t)e4,  (uint32_t)e5,
                      (uint32_t)e6,  (uint32_t)e7,  (uint32_t)e8,  (uint32_t)e9, (uint32_t)e10, (uint32_t)e11,
                      (uint32_t)e12, (uint32_t)e13, (uint32_t)e14, (uint32_t)e15};
    return em_put32(v);
}
static inline __m512i _mm512_set1_epi32(int x) {
    uint32_t v[16];
    for (int i = 0; i < 16; i++) v[i] = (uint32_t)x;
    return em_put32(v);
}
static inline __m512i _mm512_add_epi32(__m512i a, __m512i b) {
    uint32_t x[16], y[16];
    em_get32(a, x);
    em_get32(b, y);
    for (int i = 0; i < 16; i++) x[i] += y[i];
    return em_put32(x);
}
static inline __mmask16 _mm512_cmplt_epu32_mask(__m512i a, __m512i b) {
    uint32_t x[16], y[16];
    em_get32(a, x);
    em_get32(b, y);
    __mmask16 k = 0;
    for (int i = 0; i < 16; i++) k |= (__mmask16)((x[i] < y[i]) << i);
    return k;
}
static inline __m512i _mm512_mask_add_epi32(__m512i src, __mmask16 k, __m512i a, __m512i b) {
    uint32_t s[16], x[16], y[16];
    em_get32(src, s);
    em_get32(a, x);
    em_get32(b, y);
    for (int i = 0; i < 16; i++) s[i] = (k >> i & 1) ? x[i] + y[i] : s[i];
    return em_put32(s);
}
static inline __m512i _mm512_mul_epu32(__m512i a, __m512i b) {
    uint64_t x[8], y[8];
    em_get64(a, x);
    em_get64(b, y);
    for (int i = 0; i < 8; i++) x[i] = (uint64_t)(uint32_t)x[i] * (uint32_t)y[i];
    return em_put64(x);
}
static inline __m512i _mm512_srli_epi64(__m512i a, unsigned n) {
    uint64_t x[8];
    em_get64(a, x);
    for (int i = 0; i < 8; i++) x[i] >>= n;
    return em_put64(x);
}
static inline __m512i _mm512_slli_epi64(__m512i a, unsigned n) {
    uint64_t x[8];
    em_get64(a, x);
    for (int i = 0; i < 8; i++) x[i] <<= n;
    return em_put64(x);
}
static inline __m512i _mm512_mask_blend_epi32(__mmask16 k, __m512i a, __m512i b) {
    uint32_t x[16], y[16];
    em_get32(a, x);
    em_get32(b, y);
    for (int i = 0; i < 16; i++) x[i] = (k >> i & 1) ? y[i] : x[i];
    return em_put32(x);
}
static inline __m512i _mm512_maskz_mov_epi32(__mmask16 k, __m512i a) {
    uint32_t x[16];
    em_get32(a, x);
    for (int i = 0; i < 16; i++) x[i] = (k >> i & 1) ? x[i] : 0;
    return em_put32(x);
}
static inline __m512i _mm512_or_si512(__m512i a, __m512i b) { return a | b; }
static inline void _mm512_storeu_si512(void *p, __m512i a) { memcpy(p, &a, 64); }

/* For the rounds, the in-lane transposes and the masked products. */
typedef float __m512 __attribute__((vector_size(64)));
typedef double __m512d __attribute__((vector_size(64)));
typedef uint8_t __mmask8;

static inline __m512 _mm512_castsi512_ps(__m512i a) {
    __m512 r;
    memcpy(&r, &a, 64);
    return r;
}
static inline __m512i _mm512_castps_si512(__m512 a) {
    __m512i r;
    memcpy(&r, &a, 64);
    return r;
}
static inline __m512i _mm512_mullo_epi32(__m512i a, __m512i b) {
    uint32_t x[16], y[16];
    em_get32(a, x);
    em_get32(b, y);
    for (int i = 0; i < 16; i++) x[i] *= y[i];
    return em_put32(x);
}
static inline __m512i _mm512_xor_si512(__m512i a, __m512i b) { return a ^ b; }
static inline __m512i _mm512_ternarylogic_epi32(__m512i a, __m512i b, __m512i c, int imm) {
    uint32_t x[16], y[16], z[16], r[16];
    em_get32(a, x);
    em_get32(b, y);
    em_get32(c, z);
    for (int i = 0; i < 16; i++) {
        r[i] = 0;
        for (int bit = 0; bit < 32; bit++) {
            unsigned idx = (x[i] >> bit & 1) << 2 | (y[i] >> bit & 1) << 1 | (z[i] >> bit & 1);
            r[i] |= (uint32_t)(imm >> idx & 1) << bit;
        }
    }
    return em_put32(r);
}
/* Per 128-bit lane: a[imm 1:0], a[imm 3:2], b[imm 5:4], b[imm 7:6]. */
static inline __m512 _mm512_shuffle_ps(__m512 a, __m512 b, int imm) {
    uint32_t x[16], y[16], r[16];
    memcpy(x, &a, 64);
    memcpy(y, &b, 64);
    for (int l = 0; l < 16; l += 4) {
        r[l + 0] = x[l + (imm & 3)];
        r[l + 1] = x[l + (imm >> 2 & 3)];
        r[l + 2] = y[l + (imm >> 4 & 3)];
        r[l + 3] = y[l + (imm >> 6 & 3)];
    }
    __m512 v;
    memcpy(&v, r, 64);
    return v;
}
/* Per 128-bit lane: lo interleaves elements 0, 1 of a and b, hi elements 2, 3 (epi64: element 0, 1). */
static inline __m512i em_unpack32(__m512i a, __m512i b, int hi) {
    uint32_t x[16], y[16], r[16];
    em_get32(a, x);
    em_get32(b, y);
    for (int l = 0; l < 16; l += 4) {
        r[l + 0] = x[l + 2 * hi];
        r[l + 1] = y[l + 2 * hi];
        r[l + 2] = x[l + 2 * hi + 1];
        r[l + 3] = y[l + 2 * hi + 1];
    }
    return em_put32(r);
}
static inline __m512i em_unpack64(__m512i a, __m512i b, int hi) {
    uint64_t x[8], y[8], r[8];
    em_get64(a, x);
    em_get64(b, y);
    for (int l = 0; l < 8; l += 2) {
        r[l + 0] = x[l + hi];
        r[l + 1] = y[l + hi];
    }
    return em_put64(r);
}
static inline __m512i _mm512_unpacklo_epi32(__m512i a, __m512i b) { return em_unpack32(a, b, 0); }
static inline __m512i _mm512_unpackhi_epi32(__m512i a, __m512i b) { return em_unpack32(a, b, 1); }
static inline __m512i _mm512_unpacklo_epi64(__m512i a, __m512i b) { return em_unpack64(a, b, 0); }
static inline __m512i _mm512_unpackhi_epi64(__m512i a, __m512i b) { return em_unpack64(a, b, 1); }
static inline __m512 _mm512_set1_ps(float v) {
    __m512 r;
    for (int i = 0; i < 16; i++) r[i] = v;
    return r;
}
static inline __m512d _mm512_set1_pd(double v) {
    __m512d r;
    for (int i = 0; i < 8; i++) r[i] = v;
    return r;
}
static inline __m512 _mm512_loadu_ps(const void *p) {
    __m512 r;
    memcpy(&r, p, 64);
    return r;
}
static inline __m512d _mm512_loadu_pd(const void *p) {
    __m512d r;
    memcpy(&r, p, 64);
    return r;
}
static inline void _mm512_storeu_ps(void *p, __m512 a) { memcpy(p, &a, 64); }
static inline void _mm512_storeu_pd(void *p, __m512d a) { memcpy(p, &a, 64); }
/* Lanes whose mask bit is clear are +0. */
static inline __m512 _mm512_mul_ps(__m512 a, __m512 b) { return a * b; }
static inline __m512d _mm512_mul_pd(__m512d a, __m512d b) { return a * b; }
static inline __m512d _mm512_castsi512_pd(__m512i a) {
    __m512d r;
    memcpy(&r, &a, 64);
    return r;
}
static inline __m512i _mm512_castpd_si512(__m512d a) {
    __m512i r;
    memcpy(&r, &a, 64);
    return r;
}
static inline __m512i _mm512_and_si512(__m512i a, __m512i b) { return a & b; }
static inline __m512i _mm512_set1_epi64(long long a) {
    uint64_t x[8];
    for (int i = 0; i < 8; i++) x[i] = (uint64_t)a;
    return em_put64(x);
}
static inline __m512i _mm512_maskz_mov_epi64(__mmask8 k, __m512i a) {
    uint64_t x[8];
    em_get64(a, x);
    for (int i = 0; i < 8; i++) x[i] = (k >> i & 1) ? x[i] : 0;
    return em_put64(x);
}
