/* Scalar stand-ins for the AVX-512F intrinsics that xd_keep_chunk_avx512 uses, with
 * Intel's documented semantics, so tests/test_kernels.py can run that function's
 * algorithm (lane order, counter carry, mask interleave) on a CPU without AVX-512
 * and compare it with the scalar xd_keep_chunk. */
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
