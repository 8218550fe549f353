// Non-GEMM kernels of the contract: RMSNorm, RoPE, causal packed-sequence GQA attention (blocked,
// built on the serial SGEMM and the ISA's vectorised exp), decode attention over KV-cache slots,
// SwiGLU, embeddings, fused log-softmax/gather/entropy, AdamW and sum of squares. Work is spread over
// the pool by rows, heads or sequences; reductions are done per thread and summed in a fixed order.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "pool.h"
#include "scratch.h"

namespace kern {
namespace {

using matpo::Scratch;
thread_local Scratch tlS, tlP, tlK, tlV;

// Calls fn(begin, end) over [0, n) in chunks of about `grain` items, spread over the pool.
template <class F>
void chunked(long n, long grain, F&& fn) {
  if (n <= 0) return;
  long chunks = (n + grain - 1) / grain;
  if (chunks <= 1) {
    fn(0L, n);
    return;
  }
  pool::parallelFor(chunks, [&](long c) { fn(c * grain, std::min(n, (c + 1) * grain)); });
}

}  // namespace

void rmsnormForward(float* out, float* rstd, const float* x, const float* w, int T, int C, float eps) {
  const IsaOps& o = isa();
  chunked(T, std::max(1, 16384 / std::max(C, 1)), [&](long t0, long t1) {
    for (long t = t0; t < t1; t++) {
      const float* xr = x + t * C;
      float* orow = out + t * C;
      float r = float(1.0 / std::sqrt(double(o.dot(xr, xr, C)) / C + eps));
      rstd[t] = r;
      for (int c = 0; c < C; c++) orow[c] = xr[c] * r * w[c];
    }
  });
}

void rmsnormBackward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int T,
                     int C) {
  std::vector<float> partial;
  // Split rows into a fixed number of parts so the dweight reduction order does not depend on timing.
  const int parts = std::min(T, 8);
  partial.assign(size_t(std::max(parts, 1)) * C, 0.f);
  pool::parallelFor(parts, [&](long part) {
    long t0 = long(T) * part / parts, t1 = long(T) * (part + 1) / parts;
    float* dwp = partial.data() + part * C;
    for (long t = t0; t < t1; t++) {
      const float* xr = x + t * C;
      const float* gr = dout + t * C;
      float* dxr = dx + t * C;
      const float r = rstd[t];
      double dot = 0;
      for (int c = 0; c < C; c++) dot += double(gr[c]) * w[c] * xr[c];
      const float k = float(double(r) * r * r / C * dot);
      for (int c = 0; c < C; c++) {
        dxr[c] += r * gr[c] * w[c] - k * xr[c];
        dwp[c] += gr[c] * xr[c] * r;
      }
    }
  });
  for (int p = 0; p < parts; p++) {
    const float* dwp = partial.data() + size_t(p) * C;
    for (int c = 0; c < C; c++) dw[c] += dwp[c];
  }
}

void rope(float* x, const int32_t* pos, int T, int H, int D, double theta, bool inverse) {
  const int half = D / 2;
  std::vector<double> invFreq(half);
  for (int i = 0; i < half; i++) invFreq[i] = std::pow(theta, -2.0 * i / D);
  chunked(T, std::max(1, 4096 / std::max(H * D, 1)), [&](long t0, long t1) {
    std::vector<float> cs(half), sn(half);
    for (long t = t0; t < t1; t++) {
      for (int i = 0; i < half; i++) {
        double a = double(pos[t]) * invFreq[i];
        cs[i] = float(std::cos(a));
        sn[i] = float(inverse ? -std::sin(a) : std::sin(a));
      }
      for (int h = 0; h < H; h++) {
        float* xr = x + (t * H + h) * long(D);
        for (int i = 0; i < half; i++) {
          float x1 = xr[i], x2 = xr[i + half];
          xr[i] = x1 * cs[i] - x2 * sn[i];
          xr[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  });
}

namespace {
constexpr int BQ = 64;  // query rows per attention block

// Scores of query rows r0..r0+m-1 (sequence-relative) against keys 0..r0+m-1 turned into
// probabilities in place: row i keeps keys <= r0+i. With lseIn, P = exp(scale*s - lse); otherwise the
// row is normalised and its log-sum-exp returned through lseOut.
void softmaxRows(float* S, int m, int nk, int r0, float scale, const float* lseIn, long lseStride, float* lseOut) {
  const IsaOps& o = isa();
  for (int i = 0; i < m; i++) {
    float* row = S + long(i) * nk;
    int valid = r0 + i + 1;
    for (int j = 0; j < valid; j++) row[j] *= scale;
    if (lseIn) {
      o.expShiftSum(row, valid, lseIn[i * lseStride]);
    } else {
      const float mx = o.maxv(row, valid);
      double sum = o.expShiftSum(row, valid, mx);
      lseOut[i * lseStride] = float(mx + std::log(sum));
      float inv = float(1.0 / sum);
      for (int j = 0; j < valid; j++) row[j] *= inv;
    }
    for (int j = valid; j < nk; j++) row[j] = 0.f;
  }
}
}  // namespace

void attentionForward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* cu, int B,
                      int H, int KV, int D, float scale) {
  const int group = H / KV;
  const long ldq = long(H) * D, ldk = long(KV) * D;
  pool::parallelFor(long(B) * H, [&](long task) {
    int b = int(task / H), h = int(task % H), kvh = h / group;
    int s0 = cu[b], L = cu[b + 1] - s0;
    if (L <= 0) return;
    const float* Q = q + (long(s0) * H + h) * D;
    const float* Kp = k + (long(s0) * KV + kvh) * D;
    const float* Vp = v + (long(s0) * KV + kvh) * D;
    float* O = out + (long(s0) * H + h) * D;
    float* S = tlS.get(size_t(BQ) * L);
    float* Kpk = tlK.get(size_t(packedWeightFloats(L, D)));
    packBT(Kp, ldk, L, D, Kpk);  // keys packed once, reused by every query block
    for (int r0 = 0; r0 < L; r0 += BQ) {
      int m = std::min(BQ, L - r0), nk = r0 + m;
      gemmSerialPackedBT(m, nk, D, Q + r0 * ldq, ldq, Kpk, L, S, nk, false);
      softmaxRows(S, m, nk, r0, scale, nullptr, H, lse + (long(s0) + r0) * H + h);
      gemmSerial(false, false, m, D, nk, S, nk, Vp, ldk, O + r0 * ldq, ldq, false);
    }
  });
}

void attentionBackward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                       const float* v, const float* out, const float* lse, const int32_t* cu, int B, int H, int KV, int D,
                       float scale) {
  const IsaOps& o = isa();
  const int group = H / KV;
  const long ldq = long(H) * D, ldk = long(KV) * D;
  // One task per (sequence, kv head): it owns dk/dv of that head and dq of its query heads.
  pool::parallelFor(long(B) * KV, [&](long task) {
    int b = int(task / KV), kvh = int(task % KV);
    int s0 = cu[b], L = cu[b + 1] - s0;
    if (L <= 0) return;
    const float* Kp = k + (long(s0) * KV + kvh) * D;
    const float* Vp = v + (long(s0) * KV + kvh) * D;
    float* dK = dk + (long(s0) * KV + kvh) * D;
    float* dV = dv + (long(s0) * KV + kvh) * D;
    float* P = tlS.get(size_t(BQ) * L);
    float* dS = tlP.get(size_t(BQ) * L);
    float* Kpk = tlK.get(size_t(packedWeightFloats(L, D)));
    float* Vpk = tlV.get(size_t(packedWeightFloats(L, D)));
    packBT(Kp, ldk, L, D, Kpk);  // keys and values packed once per (sequence, kv head)
    packBT(Vp, ldk, L, D, Vpk);
    for (int hh = 0; hh < group; hh++) {
      int h = kvh * group + hh;
      const long off = (long(s0) * H + h) * D;
      for (int r0 = 0; r0 < L; r0 += BQ) {
        int m = std::min(BQ, L - r0), nk = r0 + m;
        const float* Qb = q + off + r0 * ldq;
        const float* dOb = dout + off + r0 * ldq;
        const float* Ob = out + off + r0 * ldq;
        gemmSerialPackedBT(m, nk, D, Qb, ldq, Kpk, L, P, nk, false);
        softmaxRows(P, m, nk, r0, scale, lse + (long(s0) + r0) * H + h, H, nullptr);
        gemmSerialPackedBT(m, nk, D, dOb, ldq, Vpk, L, dS, nk, false);
        for (int i = 0; i < m; i++) {
          float delta = o.dot(dOb + i * ldq, Ob + i * ldq, D);
          float* ds = dS + long(i) * nk;
          const float* p = P + long(i) * nk;
          int valid = r0 + i + 1;
          for (int j = 0; j < valid; j++) ds[j] = p[j] * (ds[j] - delta) * scale;
          for (int j = valid; j < nk; j++) ds[j] = 0.f;
        }
        gemmSerial(false, false, m, D, nk, dS, nk, Kp, ldk, dq + off + r0 * ldq, ldq, true);
        gemmSerial(true, false, nk, D, m, dS, nk, Qb, ldq, dK, ldk, true);
        gemmSerial(true, false, nk, D, m, P, nk, dOb, ldq, dV, ldk, true);
      }
    }
  });
}

void attentionDecode(float* out, const float* q, const float* kc, const float* vc, const int32_t* slot,
                     const int32_t* pos, int n, int S, int H, int KV, int D, float scale) {
  const IsaOps& o = isa();
  const int group = H / KV;
  const long kvStride = long(KV) * D;
  // One task per (query, kv head): the group's query heads share one pass over the cached keys and
  // one over the values, so each cache row is read once.
  pool::parallelFor(long(n) * KV, [&](long task) {
    const int i = int(task / KV), kvh = int(task % KV);
    const int len = pos[i] + 1;
    const float* kBase = kc + long(slot[i]) * S * kvStride + long(kvh) * D;
    const float* vBase = vc + long(slot[i]) * S * kvStride + long(kvh) * D;
    const float* qg = q + (long(i) * H + long(kvh) * group) * D;
    float* sc = tlS.get(size_t(group) * len);
    for (int j = 0; j < len; j++) {
      const float* kj = kBase + j * kvStride;
      __builtin_prefetch(kj + 8 * kvStride);
      for (int g = 0; g < group; g++) sc[long(g) * len + j] = o.dot(qg + long(g) * D, kj, D) * scale;
    }
    float* acc = tlP.get(size_t(group) * D);
    std::memset(acc, 0, sizeof(float) * group * D);
    std::vector<float> inv(group);
    for (int g = 0; g < group; g++) {
      float* row = sc + long(g) * len;
      float mx = -INFINITY;
      for (int j = 0; j < len; j++) mx = std::max(mx, row[j]);
      inv[g] = float(1.0 / o.expShiftSum(row, len, mx));
    }
    for (int j = 0; j < len; j++) {
      const float* vj = vBase + j * kvStride;
      __builtin_prefetch(vj + 8 * kvStride);
      for (int g = 0; g < group; g++) o.axpy(sc[long(g) * len + j] * inv[g], vj, acc + long(g) * D, D);
    }
    std::memcpy(out + (long(i) * H + long(kvh) * group) * D, acc, sizeof(float) * group * D);
  });
}

void swigluForward(float* out, const float* gate, const float* up, long n) {
  const IsaOps& o = isa();
  chunked(n, 32768, [&](long i0, long i1) { o.swigluForward(out + i0, gate + i0, up + i0, i1 - i0); });
}

void swigluBackward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, long n) {
  const IsaOps& o = isa();
  chunked(n, 32768, [&](long i0, long i1) {
    o.swigluBackward(dgate + i0, dup + i0, dout + i0, gate + i0, up + i0, i1 - i0);
  });
}

void embeddingForward(float* out, const float* table, const int32_t* ids, int T, int C) {
  chunked(T, std::max(1, 16384 / std::max(C, 1)), [&](long t0, long t1) {
    for (long t = t0; t < t1; t++) std::memcpy(out + t * C, table + long(ids[t]) * C, sizeof(float) * C);
  });
}

void embeddingBackward(float* dtable, const float* dout, const int32_t* ids, int T, int C) {
  // Split columns (not tokens) so repeated ids never race and the order of additions is fixed.
  chunked(C, std::max(16, (C + 7) / 8), [&](long c0, long c1) {
    for (int t = 0; t < T; t++) {
      float* d = dtable + long(ids[t]) * C;
      const float* g = dout + long(t) * C;
      for (long c = c0; c < c1; c++) d[c] += g[c];
    }
  });
}

void logprobsForward(float* logprob, float* lse, float* entropy, const float* logits, const int32_t* targets, int T,
                     int V) {
  const IsaOps& o = isa();
  pool::parallelFor(T, [&](long t) {
    const float* z = logits + t * V;
    const float mx = o.maxv(z, V);
    float* e = tlS.get(size_t(V));
    std::memcpy(e, z, sizeof(float) * V);
    const double sum = o.expShiftSum(e, V, mx);
    const double l = mx + std::log(sum);
    lse[t] = float(l);
    logprob[t] = float(double(z[targets[t]]) - l);
    // H = lse − E[z]; both taken relative to mx to keep the difference accurate
    if (entropy) entropy[t] = float(std::log(sum) - o.dotShiftF64(e, z, V, mx) / sum);
  });
}

void logprobsBackward(float* dlogits, const float* dlogprob, const float* dentropy, const float* logits,
                      const float* lse, const int32_t* targets, int T, int V) {
  const IsaOps& o = isa();
  pool::parallelFor(T, [&](long t) {
    const float* z = logits + t * V;
    float* d = dlogits + t * V;
    const float g = dlogprob[t];
    const float ge = dentropy ? dentropy[t] : 0.f;
    std::memcpy(d, z, sizeof(float) * V);
    o.expShiftSum(d, V, lse[t]);  // d = softmax(z)
    if (ge != 0.f) {
      // dH/dz_j = −p_j (z_j − E[z]); E[z] relative to lse keeps the subtraction well conditioned
      const float ezRel = float(o.dotShiftF64(d, z, V, lse[t]));
      const float l = lse[t];
      for (int j = 0; j < V; j++) d[j] = -d[j] * (g + ge * ((z[j] - l) - ezRel));
    } else {
      for (int j = 0; j < V; j++) d[j] = -g * d[j];
    }
    d[targets[t]] += g;
  });
}

void adamw(float* p, const float* g, float* m, float* v, long n, double lr, double b1, double b2, double eps, double wd,
           double step, double gradScale) {
  // Constants are formed in double and rounded once (1 - b1 rounded from double, not from float(b1)),
  // so the float32 update matches the float64 reference to a few ulps.
  const AdamConsts c{float(b1),
                     float(1.0 - b1),
                     float(b2),
                     float(1.0 - b2),
                     float(lr),
                     float(eps),
                     float(1.0 - lr * wd),
                     float(1.0 / (1.0 - std::pow(b1, step))),
                     float(1.0 / (1.0 - std::pow(b2, step))),
                     float(gradScale)};
  const IsaOps& o = isa();
  chunked(n, 65536, [&](long i0, long i1) { o.adamw(p + i0, g + i0, m + i0, v + i0, i1 - i0, c); });
}

double sumSquares(const float* x, long n) {
  const long grain = 65536;
  long chunks = (n + grain - 1) / grain;
  if (chunks <= 0) return 0;
  std::vector<double> part(chunks, 0.0);
  chunked(n, grain, [&](long i0, long i1) {
    double s[4] = {0, 0, 0, 0};
    long i = i0;
    for (; i + 4 <= i1; i += 4)
      for (int u = 0; u < 4; u++) s[u] += double(x[i + u]) * x[i + u];
    for (; i < i1; i++) s[0] += double(x[i]) * x[i];
    part[i0 / grain] = (s[0] + s[1]) + (s[2] + s[3]);
  });
  double s = 0;
  for (double d : part) s += d;
  return s;
}

}  // namespace kern
