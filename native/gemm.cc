// SGEMM driver: BLIS-style loop nest (NC columns -> KC depth -> MC rows -> NR x MR micro-tiles) over
// panels packed k-major for the micro-kernel of the selected ISA; the ISA is chosen once at load time
// with __builtin_cpu_supports. Multi-threading splits C into disjoint row (or column) ranges, one per
// thread, so threads never synchronise inside a product.
#include "gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pool.h"
#include "scratch.h"

namespace {

const IsaOps* selectIsa() {
  const char* force = std::getenv("MATPO_ISA");
  std::string want = force ? force : "";
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  bool has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  bool has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (want == "portable") return &kPortableOps;
  if (want == "avx2" && has2) return &kAvx2Ops;
  if (has512 && want != "avx2") return &kAvx512Ops;
  if (has2) return &kAvx2Ops;
#endif
  return &kPortableOps;
}

// Compares the micro-kernel, dot, axpy and exp of `o` with the portable ones on fixed inputs (full
// and edge tiles, accumulate on/off). Returns the worst error relative to the tolerance (<= 1 passes).
double selfCheck(const IsaOps& o) {
  const IsaOps& p = kPortableOps;
  const int kc = 37;
  std::vector<float> a(size_t(kc) * o.MR), b(size_t(kc) * o.NR);
  for (size_t i = 0; i < a.size(); i++) a[i] = float(int((i * 37 + 11) % 23) - 11) / 8.f;
  for (size_t i = 0; i < b.size(); i++) b[i] = float(int((i * 53 + 5) % 19) - 9) / 8.f;
  double worst = 0;
  const int ldc = o.NR + 3;
  for (int m : {o.MR, 1, o.MR - 1})
    for (int n : {o.NR, 1, o.NR - 5})
      for (bool add : {false, true}) {
        std::vector<float> c(size_t(o.MR) * ldc, 0.5f), want(size_t(o.MR) * ldc, 0.5f);
        o.ukernel(kc, a.data(), b.data(), c.data(), ldc, m, n, add);
        for (int i = 0; i < m; i++)  // reference tile straight from the panels
          for (int j = 0; j < n; j++) {
            double s = add ? 0.5 : 0.0;
            for (int k = 0; k < kc; k++) s += double(a[size_t(k) * o.MR + i]) * b[size_t(k) * o.NR + j];
            want[size_t(i) * ldc + j] = float(s);
          }
        for (size_t i = 0; i < c.size(); i++) worst = std::max(worst, std::abs(double(c[i]) - want[i]) / 1e-4);
      }
  std::vector<float> x(203), y(203), e1(203), e2(203);
  for (int i = 0; i < 203; i++) {
    x[i] = float(i % 17) / 4.f - 2.f;
    y[i] = float(i % 13) / 3.f - 2.f;
    e1[i] = e2[i] = float(i) / 5.f - 30.f;
  }
  worst = std::max(worst, std::abs(double(o.dot(x.data(), y.data(), 203)) - p.dot(x.data(), y.data(), 203)) / 1e-3);
  double s1 = o.expShiftSum(e1.data(), 203, 3.f), s2 = p.expShiftSum(e2.data(), 203, 3.f);
  worst = std::max(worst, std::abs(s1 - s2) / (1e-5 * s2));
  for (int i = 0; i < 203; i++) worst = std::max(worst, std::abs(double(e1[i]) - e2[i]) / (1e-5 * e2[i] + 1e-30));
  worst = std::max(worst, std::abs(double(o.maxv(x.data(), 203)) - p.maxv(x.data(), 203)) / 1e-30);
  worst = std::max(worst, std::abs(double(o.maxv(x.data(), 5)) - p.maxv(x.data(), 5)) / 1e-30);
  const double d1 = o.dotShiftF64(x.data(), y.data(), 203, 0.5f), d2 = p.dotShiftF64(x.data(), y.data(), 203, 0.5f);
  worst = std::max(worst, std::abs(d1 - d2) / 1e-9);
  std::vector<float> y1(y), y2(y);
  o.axpy(0.75f, x.data(), y1.data(), 203);
  p.axpy(0.75f, x.data(), y2.data(), 203);
  for (int i = 0; i < 203; i++) worst = std::max(worst, std::abs(double(y1[i]) - y2[i]) / 1e-5);
  return worst;
}

double gSelfCheck = 0;

// The ISA actually used: the best one the CPU has, unless its self-check fails (then the next one).
const IsaOps* chooseIsa() {
  const IsaOps* o = selectIsa();
  while (o != &kPortableOps) {
    gSelfCheck = selfCheck(*o);
    if (gSelfCheck <= 1) return o;
    std::fprintf(stderr, "matpo: %s kernels failed their self-check (error ratio %g); falling back\n", o->name, gSelfCheck);
    o = o == &kAvx512Ops ? &kAvx2Ops : &kPortableOps;
    if (o == &kAvx2Ops && !__builtin_cpu_supports("avx2")) o = &kPortableOps;
  }
  return o;
}

const IsaOps* gIsa = chooseIsa();

using matpo::Scratch;
thread_local Scratch tlA, tlB;

// Pack op(A)[i0:i0+mc, p0:p0+kc] into MR-row panels, each kc x MR k-major, zero-padded.
template <int MR>
void packAT(bool transA, const float* A, long lda, int i0, int mc, int p0, int kc, float* out) {
  for (int ir = 0; ir < mc; ir += MR) {
    int m = std::min(MR, mc - ir);
    float* dst = out + long(ir / MR) * kc * MR;
    if (transA) {  // op(A)(i,k) = A[k*lda + i]: rows of A are contiguous in i
      for (int k = 0; k < kc; k++) {
        const float* src = A + long(p0 + k) * lda + i0 + ir;
        float* d = dst + long(k) * MR;
        if (m == MR) {
          for (int r = 0; r < MR; r++) d[r] = src[r];
        } else {
          int r = 0;
          for (; r < m; r++) d[r] = src[r];
          for (; r < MR; r++) d[r] = 0.f;
        }
      }
    } else if (m == MR && gIsa->packAPanel) {
      gIsa->packAPanel(A + long(i0 + ir) * lda + p0, lda, kc, dst);
    } else if (m == MR) {  // op(A)(i,k) = A[i*lda + k]: read MR rows side by side, write contiguously
      const float* rows[MR];
      for (int r = 0; r < MR; r++) rows[r] = A + long(i0 + ir + r) * lda + p0;
      for (int k = 0; k < kc; k++) {
        float* d = dst + long(k) * MR;
        for (int r = 0; r < MR; r++) d[r] = rows[r][k];
      }
    } else {
      for (int r = 0; r < m; r++) {
        const float* src = A + long(i0 + ir + r) * lda + p0;
        for (int k = 0; k < kc; k++) dst[long(k) * MR + r] = src[k];
      }
      for (int r = m; r < MR; r++)
        for (int k = 0; k < kc; k++) dst[long(k) * MR + r] = 0.f;
    }
  }
}

void packA(bool transA, const float* A, long lda, int i0, int mc, int p0, int kc, int MR, float* out) {
  switch (MR) {
    case 14: packAT<14>(transA, A, lda, i0, mc, p0, kc, out); break;
    case 6: packAT<6>(transA, A, lda, i0, mc, p0, kc, out); break;
    case 4: packAT<4>(transA, A, lda, i0, mc, p0, kc, out); break;
    default: std::abort();
  }
}

// Pack op(B)[p0:p0+kc, j0:j0+nc] into NR-column panels, each kc x NR k-major, zero-padded.
void packB(bool transB, const float* B, long ldb, int p0, int kc, int j0, int nc, int NR, float* out) {
  for (int jr = 0; jr < nc; jr += NR) {
    int n = std::min(NR, nc - jr);
    float* dst = out + long(jr / NR) * kc * NR;
    if (!transB) {  // op(B)(k,j) = B[k*ldb + j]
      for (int k = 0; k < kc; k++) {
        const float* src = B + long(p0 + k) * ldb + j0 + jr;
        float* d = dst + long(k) * NR;
        if (n == NR) {
          std::memcpy(d, src, sizeof(float) * NR);
        } else {
          int j = 0;
          for (; j < n; j++) d[j] = src[j];
          for (; j < NR; j++) d[j] = 0.f;
        }
      }
    } else {  // op(B)(k,j) = B[j*ldb + k]; transpose 8 columns at a time to keep reads streaming
      int j = 0;
      for (; j + 8 <= n; j += 8) {
        const float* s0 = B + long(j0 + jr + j) * ldb + p0;
        for (int k = 0; k < kc; k++) {
          float* d = dst + long(k) * NR + j;
          for (int u = 0; u < 8; u++) d[u] = s0[long(u) * ldb + k];
        }
      }
      for (; j < n; j++) {
        const float* src = B + long(j0 + jr + j) * ldb + p0;
        for (int k = 0; k < kc; k++) dst[long(k) * NR + j] = src[k];
      }
      for (; j < NR; j++)
        for (int k = 0; k < kc; k++) dst[long(k) * NR + j] = 0.f;
    }
  }
}

// The loop nest. When `prepacked` is set, B is taken from a packed weight (layout of packWeightNT)
// whose columns start at column jBase of that weight, with Npad columns per KC block.
void gemmCore(bool transA, bool transB, int M, int N, int K, const float* A, long lda, const float* B, long ldb,
              float* C, long ldc, bool accumulate, const float* prepacked, int jBase, long Npad) {
  const IsaOps& o = *gIsa;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int i = 0; i < M; i++) std::memset(C + long(i) * ldc, 0, sizeof(float) * N);
    return;
  }
  const int MR = o.MR, NR = o.NR, KC = o.KC;
  const int MC = o.MC, NC = o.NC;
  int mcMax = std::min(MC, ((M + MR - 1) / MR) * MR);
  int ncMax = std::min(NC, ((N + NR - 1) / NR) * NR);
  int kcMax = std::min(KC, K);
  float* ap = tlA.get(size_t(mcMax) * kcMax + 8);  // + slack for packAPanel's overlapping stores
  float* bp = prepacked ? nullptr : tlB.get(size_t(ncMax) * kcMax);
  for (int jc = 0; jc < N; jc += NC) {
    int nc = std::min(NC, N - jc);
    for (int pc = 0; pc < K; pc += KC) {
      int kc = std::min(KC, K - pc);
      const float* bpanels;
      if (prepacked) {
        bpanels = prepacked + long(pc) * Npad + long((jBase + jc) / NR) * kc * NR;
      } else {
        packB(transB, B, ldb, pc, kc, jc, nc, NR, bp);
        bpanels = bp;
      }
      bool add = accumulate || pc > 0;
      for (int ic = 0; ic < M; ic += MC) {
        int mc = std::min(MC, M - ic);
        packA(transA, A, lda, ic, mc, pc, kc, MR, ap);
        for (int jr = 0; jr < nc; jr += NR) {
          int n = std::min(NR, nc - jr);
          const float* b = bpanels + long(jr / NR) * kc * NR;
          for (int ir = 0; ir < mc; ir += MR) {
            int m = std::min(MR, mc - ir);
            o.ukernel(kc, ap + long(ir / MR) * kc * MR, b, C + long(ic + ir) * ldc + jc + jr, ldc, m, n, add);
          }
        }
      }
    }
  }
}

// Splits C into nt parts (rows when M is large enough, else columns) and runs gemmCore on each.
void gemmSplit(bool transA, bool transB, int M, int N, int K, const float* A, long lda, const float* B, long ldb,
               float* C, long ldc, bool accumulate, const float* prepacked, long Npad) {
  const int MR = gIsa->MR, NR = gIsa->NR;
  double flops = 2.0 * M * N * K;
  if (flops < 2e5) {
    gemmCore(transA, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate, prepacked, 0, Npad);
    return;
  }
  pool::run([&](int tid, int nt) {
    bool byRows = M >= 16 * MR * nt || (M >= MR * nt && M * 4 >= N);
    if (byRows) {
      int per = ((M + nt - 1) / nt + MR - 1) / MR * MR;
      int i0 = tid * per, i1 = std::min(M, i0 + per);
      if (i0 >= i1) return;
      const float* a = transA ? A + i0 : A + long(i0) * lda;
      gemmCore(transA, transB, i1 - i0, N, K, a, lda, B, ldb, C + long(i0) * ldc, ldc, accumulate, prepacked, 0, Npad);
    } else {
      int per = ((N + nt - 1) / nt + NR - 1) / NR * NR;
      int j0 = tid * per, j1 = std::min(N, j0 + per);
      if (j0 >= j1) return;
      const float* b = prepacked ? nullptr : (transB ? B + long(j0) * ldb : B + j0);
      gemmCore(transA, transB, M, j1 - j0, K, A, lda, b, ldb, C + j0, ldc, accumulate, prepacked, j0, Npad);
    }
  });
}

}  // namespace

const IsaOps& isa() { return *gIsa; }
double isaSelfCheck() { return gSelfCheck; }

void gemmSerial(bool transA, bool transB, int M, int N, int K, const float* A, long lda, const float* B, long ldb,
                float* C, long ldc, bool accumulate) {
  gemmCore(transA, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate, nullptr, 0, 0);
}

void gemmParallel(bool transA, bool transB, int M, int N, int K, const float* A, long lda, const float* B, long ldb,
                  float* C, long ldc, bool accumulate) {
  gemmSplit(transA, transB, M, N, K, A, lda, B, ldb, C, ldc, accumulate, nullptr, 0);
}

long packedWeightFloats(int N, int K) {
  long NR = gIsa->NR;
  long Npad = (N + NR - 1) / NR * NR;
  return Npad * std::max(K, 1);
}

void packBT(const float* B, long ldb, int N, int K, float* out) {
  const int NR = gIsa->NR, KC = gIsa->KC;
  long Npad = long((N + NR - 1) / NR) * NR;
  for (int pc = 0; pc < K; pc += KC) {
    int kc = std::min(KC, K - pc);
    packB(true, B, ldb, pc, kc, 0, N, NR, out + long(pc) * Npad);
  }
}

void packWeightNT(const float* W, int N, int K, float* out) { packBT(W, K, N, K, out); }

void gemmSerialPackedBT(int M, int N, int K, const float* A, long lda, const float* packed, int Npacked, float* C,
                        long ldc, bool accumulate) {
  const int NR = gIsa->NR;
  long Npad = long((Npacked + NR - 1) / NR) * NR;
  gemmCore(false, true, M, N, K, A, lda, nullptr, 0, C, ldc, accumulate, packed, 0, Npad);
}

void gemmPackedWeight(int M, int N, int K, const float* A, const float* packed, float* C, bool accumulate) {
  const int NR = gIsa->NR;
  long Npad = long((N + NR - 1) / NR) * NR;
  gemmSplit(false, true, M, N, K, A, K, nullptr, K, C, N, accumulate, packed, Npad);
}

// Timed on each thread's own CPU-time clock, so time the thread was descheduled (the machine may be
// shared) does not count: the result is what the cores deliver while running.
double peakGflops(int nt, double ms) {
  std::vector<double> rate(64, 0.0);
  auto cpuMs = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
  };
  pool::run([&](int tid, int) {
    const IsaOps& o = *gIsa;
    o.fmaLoop(100000);  // warm up clocks
    long iters = 1 << 18;
    double flops = 0;
    double t0 = cpuMs(), el = 0;
    do {
      flops += o.fmaLoop(iters);
      el = cpuMs() - t0;
    } while (el < ms);
    if (tid < 64) rate[tid] = flops / (el * 1e6);
  }, nt);
  double total = 0;
  for (double r : rate) total += r;
  return total;
}
