// Portable primitives (baseline x86-64 / any CPU): plain loops the compiler may vectorise with SSE2.
// Used when the CPU has neither AVX-512 nor AVX2+FMA.
#include <cmath>
#include "isa.h"

namespace {

constexpr int MR = 4;
constexpr int NR = 8;

void ukernel(int kc, const float* a, const float* b, float* c, long ldc, int m, int n, bool add) {
  float acc[MR][NR] = {};
  for (int k = 0; k < kc; k++) {
    for (int r = 0; r < MR; r++) {
      const float ar = a[r];
      for (int j = 0; j < NR; j++) acc[r][j] += ar * b[j];
    }
    a += MR;
    b += NR;
  }
  for (int r = 0; r < m; r++) {
    float* cr = c + r * ldc;
    for (int j = 0; j < n; j++) cr[j] = add ? cr[j] + acc[r][j] : acc[r][j];
  }
}

double fmaLoop(long iters) {
  float acc[8][4] = {};
  for (long it = 0; it < iters; it++)
    for (int i = 0; i < 8; i++)
      for (int j = 0; j < 4; j++) acc[i][j] = acc[i][j] * 0.999999f + 1e-7f;
  volatile float sink = acc[0][0] + acc[7][3];
  (void)sink;
  return double(iters) * 8 * 4 * 2;
}

float dot(const float* a, const float* b, int n) {
  float s[8] = {};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += a[i + j] * b[i + j];
  float t = 0;
  for (; i < n; i++) t += a[i] * b[i];
  for (int j = 0; j < 8; j++) t += s[j];
  return t;
}

void axpy(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; i++) y[i] += alpha * x[i];
}

double expShiftSum(float* x, int n, float shift) {
  double s = 0;
  for (int i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - shift);
    s += x[i];
  }
  return s;
}

void expInPlace(float* x, int n) { expShiftSum(x, n, 0.f); }

float maxLoop(const float* x, int n) {
  float m = -__builtin_inff();
  for (int j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
  return m;
}

#include "elementwise_impl.h"

}  // namespace

extern const IsaOps kPortableOps = {"portable", MR, NR, 256, 64, 2048, ukernel, fmaLoop, dot, axpy, expShiftSum, adamwLoop, swigluFwdLoop, swigluBwdLoop, maxLoop, dotShiftF64Generic, nullptr};
