// The non-GEMM kernels of the contract (src/engine/kernels.ts), on raw pointers. Argument checking
// is done by the caller (addon.cc).
#pragma once
#include <cstdint>

namespace kern {
void rmsnormForward(float* out, float* rstd, const float* x, const float* w, int T, int C, float eps);
void rmsnormBackward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd, int T,
                     int C);
void rope(float* x, const int32_t* pos, int T, int H, int D, double theta, bool inverse);
void attentionForward(float* out, float* lse, const float* q, const float* k, const float* v, const int32_t* cu, int B,
                      int H, int KV, int D, float scale);
void attentionBackward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                       const float* v, const float* out, const float* lse, const int32_t* cu, int B, int H, int KV, int D,
                       float scale);
void attentionDecode(float* out, const float* q, const float* kc, const float* vc, const int32_t* slot,
                     const int32_t* pos, int n, int S, int H, int KV, int D, float scale);
void swigluForward(float* out, const float* gate, const float* up, long n);
void swigluBackward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, long n);
void embeddingForward(float* out, const float* table, const int32_t* ids, int T, int C);
void embeddingBackward(float* dtable, const float* dout, const int32_t* ids, int T, int C);
void logprobsForward(float* logprob, float* lse, float* entropy, const float* logits, const int32_t* targets, int T,
                     int V);
void logprobsBackward(float* dlogits, const float* dlogprob, const float* dentropy, const float* logits,
                      const float* lse, const int32_t* targets, int T, int V);
void adamw(float* p, const float* g, float* m, float* v, long n, double lr, double b1, double b2, double eps, double wd,
           double step, double gradScale);
double sumSquares(const float* x, long n);
}  // namespace kern
