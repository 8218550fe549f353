// AVX2+FMA primitives: the 6x16 SGEMM micro-kernel (12 ymm accumulators, broadcast-FMA over packed
// panels), dot/axpy, a vectorised exp and the FMA peak loop. Compiled with -mavx2 -mfma; only called
// after the run-time CPU check in gemm.cc.
#include <immintrin.h>
#include "isa.h"

namespace {

constexpr int MR = 6;
constexpr int NR = 16;

inline __m256i tailMask(int n) {  // lanes < n set
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

template <int MM>
inline void kernelRows(int kc, const float* __restrict a, const float* __restrict b, float* c, long ldc, int n,
                       bool add) {
  // Fetch the C tile now so its cache misses overlap the k loop instead of stalling the stores.
#pragma GCC unroll 6
  for (int r = 0; r < MM; r++) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + NR - 1), _MM_HINT_T0);
  }
  __m256 c0[MM], c1[MM];
#pragma GCC unroll 6
  for (int r = 0; r < MM; r++) {
    c0[r] = _mm256_setzero_ps();
    c1[r] = _mm256_setzero_ps();
  }
  for (int k = 0; k < kc; k++) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
    __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
    for (int r = 0; r < MM; r++) {
      __m256 ar = _mm256_broadcast_ss(a + r);
      c0[r] = _mm256_fmadd_ps(ar, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(ar, b1, c1[r]);
    }
    a += MR;
    b += NR;
  }
  if (n == NR) {
#pragma GCC unroll 6
    for (int r = 0; r < MM; r++) {
      float* cr = c + r * ldc;
      if (add) {
        c0[r] = _mm256_add_ps(c0[r], _mm256_loadu_ps(cr));
        c1[r] = _mm256_add_ps(c1[r], _mm256_loadu_ps(cr + 8));
      }
      _mm256_storeu_ps(cr, c0[r]);
      _mm256_storeu_ps(cr + 8, c1[r]);
    }
  } else {
    __m256i m0 = tailMask(n), m1 = tailMask(n - 8);
#pragma GCC unroll 6
    for (int r = 0; r < MM; r++) {
      float* cr = c + r * ldc;
      if (add) {
        c0[r] = _mm256_add_ps(c0[r], _mm256_maskload_ps(cr, m0));
        c1[r] = _mm256_add_ps(c1[r], _mm256_maskload_ps(cr + 8, m1));
      }
      _mm256_maskstore_ps(cr, m0, c0[r]);
      _mm256_maskstore_ps(cr + 8, m1, c1[r]);
    }
  }
}

void ukernel(int kc, const float* a, const float* b, float* c, long ldc, int m, int n, bool add) {
  switch (m) {
    case 6: kernelRows<6>(kc, a, b, c, ldc, n, add); break;
    case 5: kernelRows<5>(kc, a, b, c, ldc, n, add); break;
    case 4: kernelRows<4>(kc, a, b, c, ldc, n, add); break;
    case 3: kernelRows<3>(kc, a, b, c, ldc, n, add); break;
    case 2: kernelRows<2>(kc, a, b, c, ldc, n, add); break;
    default: kernelRows<1>(kc, a, b, c, ldc, n, add); break;
  }
}

double fmaLoop(long iters) {
  __m256 acc[12];
#pragma GCC unroll 12
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(0.001f * i);
  const __m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], x, y);
    __asm__ volatile("" : "+x"(acc[0]), "+x"(acc[1]), "+x"(acc[2]), "+x"(acc[3]), "+x"(acc[4]), "+x"(acc[5]));
  }
  __m256 s = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < 12; i++) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  volatile float sink = out[0] + out[7];
  (void)sink;
  return double(iters) * 12 * 8 * 2;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

float dot(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i < n; i += 8) {
    __m256i m = tailMask(n - i);
    s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s0);
  }
  return hsum(_mm256_add_ps(s0, s1));
}

void axpy(float alpha, const float* x, float* y, int n) {
  const __m256 va = _mm256_set1_ps(alpha);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  if (i < n) {
    __m256i m = tailMask(n - i);
    _mm256_maskstore_ps(y + i, m, _mm256_fmadd_ps(va, _mm256_maskload_ps(x + i, m), _mm256_maskload_ps(y + i, m)));
  }
}

// exp(x): x = k ln2 + r, degree-6 polynomial on |r| <= ln2/2 (Cephes expf coefficients); inputs
// below -87.3 give 0.
inline __m256 expPs(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, lo);
  __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  __m256 r2 = _mm256_mul_ps(r, r);
  p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  __m256 res = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(under, res);
}

double expShiftSum(float* x, int n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  double total = 0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = expPs(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
    _mm256_storeu_ps(x + i, v);
    acc = _mm256_add_ps(acc, v);
    if (((i >> 3) & 127) == 127) {
      total += hsum(acc);
      acc = _mm256_setzero_ps();
    }
  }
  if (i < n) {
    __m256i m = tailMask(n - i);
    __m256 v = _mm256_and_ps(expPs(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), s)), _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, v);
    acc = _mm256_add_ps(acc, v);
  }
  return total + hsum(acc);
}

void expInPlace(float* x, int n) { expShiftSum(x, n, 0.f); }

// Σ a[j]·(b[j] − shift) in double (the subtraction in float, as in the generic loop).
double dotShiftF64Loop(const float* a, const float* b, int n, float shift) {
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  const __m256 sh = _mm256_set1_ps(shift);
  int j = 0;
  for (; j + 8 <= n; j += 8) {
    __m256 av = _mm256_loadu_ps(a + j), bv = _mm256_sub_ps(_mm256_loadu_ps(b + j), sh);
    s0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(av)), _mm256_cvtps_pd(_mm256_castps256_ps128(bv)), s0);
    s1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(av, 1)), _mm256_cvtps_pd(_mm256_extractf128_ps(bv, 1)), s1);
  }
  alignas(32) double t[4];
  _mm256_store_pd(t, _mm256_add_pd(s0, s1));
  double s = (t[0] + t[1]) + (t[2] + t[3]);
  for (; j < n; j++) s += double(a[j]) * double(b[j] - shift);
  return s;
}

// 6 rows x 8 columns at a time: an 8x8 transpose (two zero rows) and overlapping 8-float stores
// that each leave 6 values (the next store overwrites the 2 zeros).
void packAPanel(const float* A, long lda, int kc, float* dst) {
  const float* r0 = A;
  const float* r1 = A + lda;
  const float* r2 = A + 2 * lda;
  const float* r3 = A + 3 * lda;
  const float* r4 = A + 4 * lda;
  const float* r5 = A + 5 * lda;
  const __m256 z = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 a0 = _mm256_loadu_ps(r0 + k), a1 = _mm256_loadu_ps(r1 + k), a2 = _mm256_loadu_ps(r2 + k);
    __m256 a3 = _mm256_loadu_ps(r3 + k), a4 = _mm256_loadu_ps(r4 + k), a5 = _mm256_loadu_ps(r5 + k);
    __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1);
    __m256 t2 = _mm256_unpacklo_ps(a2, a3), t3 = _mm256_unpackhi_ps(a2, a3);
    __m256 t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5);
    __m256 t6 = _mm256_unpacklo_ps(z, z), t7 = t6;
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    // column c of the 8 rows is [s(c%4 pair) low/high 128-bit halves]
    float* d = dst + long(k) * 6;
    _mm256_storeu_ps(d + 0, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_storeu_ps(d + 6, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_storeu_ps(d + 12, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_storeu_ps(d + 18, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_storeu_ps(d + 30, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_storeu_ps(d + 36, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_storeu_ps(d + 42, _mm256_permute2f128_ps(s3, s7, 0x31));
  }
  for (; k < kc; k++) {
    float* d = dst + long(k) * 6;
    d[0] = r0[k]; d[1] = r1[k]; d[2] = r2[k]; d[3] = r3[k]; d[4] = r4[k]; d[5] = r5[k];
  }
}

float maxLoop(const float* x, int n) {
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  int j = 0;
  for (; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
  alignas(32) float t[8];
  _mm256_store_ps(t, m);
  float r = t[0];
  for (int u = 1; u < 8; u++) r = t[u] > r ? t[u] : r;
  for (; j < n; j++) r = x[j] > r ? x[j] : r;
  return r;
}

#include "elementwise_impl.h"

}  // namespace

extern const IsaOps kAvx2Ops = {"avx2", MR, NR, 384, 6 * 24, 4096, ukernel, fmaLoop, dot, axpy, expShiftSum, adamwLoop, swigluFwdLoop, swigluBwdLoop, maxLoop, dotShiftF64Loop, packAPanel};
