// AVX-512 primitives: the 14x32 SGEMM micro-kernel (28 zmm accumulators, broadcast-FMA over packed
// A and B panels), dot/axpy, a vectorised exp and the FMA peak loop. Compiled with -mavx512*; only
// called after the run-time CPU check in gemm.cc.
#include <immintrin.h>
#include "isa.h"

namespace {

constexpr int MR = 14;
constexpr int NR = 32;

template <int MM>
inline void kernelRows(int kc, const float* __restrict a, const float* __restrict b, float* c, long ldc, int n,
                       bool add) {
  // Fetch the C tile now so its cache misses overlap the k loop instead of stalling the stores.
#pragma GCC unroll 14
  for (int r = 0; r < MM; r++) {
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + NR - 1), _MM_HINT_T0);
  }
  __m512 c0[MM], c1[MM];
#pragma GCC unroll 14
  for (int r = 0; r < MM; r++) {
    c0[r] = _mm512_setzero_ps();
    c1[r] = _mm512_setzero_ps();
  }
  int k = 0;
  for (; k + 1 < kc; k += 2) {
    _mm_prefetch(reinterpret_cast<const char*>(b + 8 * NR), _MM_HINT_T0);
    __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
    for (int r = 0; r < MM; r++) {
      __m512 ar = _mm512_set1_ps(a[r]);
      c0[r] = _mm512_fmadd_ps(ar, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(ar, b1, c1[r]);
    }
    b0 = _mm512_loadu_ps(b + NR);
    b1 = _mm512_loadu_ps(b + NR + 16);
#pragma GCC unroll 14
    for (int r = 0; r < MM; r++) {
      __m512 ar = _mm512_set1_ps(a[MR + r]);
      c0[r] = _mm512_fmadd_ps(ar, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(ar, b1, c1[r]);
    }
    a += 2 * MR;
    b += 2 * NR;
  }
  if (k < kc) {
    __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 14
    for (int r = 0; r < MM; r++) {
      __m512 ar = _mm512_set1_ps(a[r]);
      c0[r] = _mm512_fmadd_ps(ar, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(ar, b1, c1[r]);
    }
  }
  if (n == NR) {
#pragma GCC unroll 14
    for (int r = 0; r < MM; r++) {
      float* cr = c + r * ldc;
      if (add) {
        c0[r] = _mm512_add_ps(c0[r], _mm512_loadu_ps(cr));
        c1[r] = _mm512_add_ps(c1[r], _mm512_loadu_ps(cr + 16));
      }
      _mm512_storeu_ps(cr, c0[r]);
      _mm512_storeu_ps(cr + 16, c1[r]);
    }
  } else {
    __mmask16 m0 = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
    __mmask16 m1 = n <= 16 ? (__mmask16)0 : (__mmask16)((1u << (n - 16)) - 1);
#pragma GCC unroll 14
    for (int r = 0; r < MM; r++) {
      float* cr = c + r * ldc;
      if (add) {
        c0[r] = _mm512_add_ps(c0[r], _mm512_maskz_loadu_ps(m0, cr));
        c1[r] = _mm512_add_ps(c1[r], _mm512_maskz_loadu_ps(m1, cr + 16));
      }
      _mm512_mask_storeu_ps(cr, m0, c0[r]);
      _mm512_mask_storeu_ps(cr + 16, m1, c1[r]);
    }
  }
}

void ukernel(int kc, const float* a, const float* b, float* c, long ldc, int m, int n, bool add) {
  switch (m) {
    case 14: kernelRows<14>(kc, a, b, c, ldc, n, add); break;
    case 13: kernelRows<13>(kc, a, b, c, ldc, n, add); break;
    case 12: kernelRows<12>(kc, a, b, c, ldc, n, add); break;
    case 11: kernelRows<11>(kc, a, b, c, ldc, n, add); break;
    case 10: kernelRows<10>(kc, a, b, c, ldc, n, add); break;
    case 9: kernelRows<9>(kc, a, b, c, ldc, n, add); break;
    case 8: kernelRows<8>(kc, a, b, c, ldc, n, add); break;
    case 7: kernelRows<7>(kc, a, b, c, ldc, n, add); break;
    case 6: kernelRows<6>(kc, a, b, c, ldc, n, add); break;
    case 5: kernelRows<5>(kc, a, b, c, ldc, n, add); break;
    case 4: kernelRows<4>(kc, a, b, c, ldc, n, add); break;
    case 3: kernelRows<3>(kc, a, b, c, ldc, n, add); break;
    case 2: kernelRows<2>(kc, a, b, c, ldc, n, add); break;
    default: kernelRows<1>(kc, a, b, c, ldc, n, add); break;
  }
}

double fmaLoop(long iters) {
  __m512 acc[12];
#pragma GCC unroll 12
  for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iters; it++) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
    __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]), "+v"(acc[5]));
  }
  __m512 s = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, acc[i]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return double(iters) * 12 * 16 * 2;
}

float dot(const float* a, const float* b, int n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < n; i += 16) {
    int rem = n - i;
    __mmask16 m = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

void axpy(float alpha, const float* x, float* y, int n) {
  const __m512 va = _mm512_set1_ps(alpha);
  int i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
  }
}

// exp(x) by range reduction x = k ln2 + r and a degree-6 polynomial on |r| <= ln2/2 (Cephes expf
// coefficients); about 1 ulp; inputs below -87.3 give 0.
inline __m512 expPs(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3f);
  __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
  x = _mm512_max_ps(x, lo);
  __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(k), _mm512_set1_epi32(127)), 23);
  __m512 res = _mm512_mul_ps(p, _mm512_castsi512_ps(e));
  return _mm512_mask_mov_ps(res, under, _mm512_setzero_ps());
}

double expShiftSum(float* x, int n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  double total = 0;
  int i = 0;
  for (; i < n; i += 16) {
    int rem = n - i;
    __mmask16 m = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
    __m512 v = expPs(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s));
    _mm512_mask_storeu_ps(x + i, m, v);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(m, v));
    if (((i >> 4) & 63) == 63) {
      total += _mm512_reduce_add_ps(acc);
      acc = _mm512_setzero_ps();
    }
  }
  return total + _mm512_reduce_add_ps(acc);
}

void expInPlace(float* x, int n) { expShiftSum(x, n, 0.f); }

// Σ a[j]·(b[j] − shift) in double (the subtraction in float, as in the generic loop).
double dotShiftF64Loop(const float* a, const float* b, int n, float shift) {
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  const __m512 sh = _mm512_set1_ps(shift);
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    __m512 av = _mm512_loadu_ps(a + j), bv = _mm512_sub_ps(_mm512_loadu_ps(b + j), sh);
    s0 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(av)), _mm512_cvtps_pd(_mm512_castps512_ps256(bv)), s0);
    s1 = _mm512_fmadd_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(av, 1)), _mm512_cvtps_pd(_mm512_extractf32x8_ps(bv, 1)), s1);
  }
  double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  for (; j < n; j++) s += double(a[j]) * double(b[j] - shift);
  return s;
}

float maxLoop(const float* x, int n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  for (int j = 0; j < n; j += 16) {
    int rem = n - j;
    __mmask16 k = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + j));
  }
  return _mm512_reduce_max_ps(m);
}

#include "elementwise_impl.h"

}  // namespace

extern const IsaOps kAvx512Ops = {"avx512", MR, NR, 192, 14 * 12, 4096, ukernel, fmaLoop, dot, axpy, expShiftSum, adamwLoop, swigluFwdLoop, swigluBwdLoop, maxLoop, dotShiftF64Loop, nullptr};
