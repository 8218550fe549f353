// Per-ISA compute primitives of the native kernels. Each ISA (AVX-512, AVX2+FMA, portable) lives in
// its own translation unit compiled with its own target flags; gemm.cc and kernels.cc call them only
// through an IsaOps table chosen at run time (see selectIsa in gemm.cc).
#pragma once
#include <cstddef>

// AdamW step constants, precomputed in double by the caller and rounded once.
struct AdamConsts {
  float b1, omb1, b2, omb2, lr, eps, decay, bc1, bc2, gradScale;
};

struct IsaOps {
  const char* name;
  int MR, NR;          // register tile of the SGEMM micro-kernel
  int KC, MC, NC;      // cache blocking (KC x NR B panel in L1, MC x KC A block in L2)
  // C[m x n] (+)= Apanel(kc x MR, k-major) * Bpanel(kc x NR, k-major); m <= MR, n <= NR.
  void (*ukernel)(int kc, const float* a, const float* b, float* c, long ldc, int m, int n, bool add);
  // Runs `iters` iterations of independent FMA chains; returns the flops performed.
  double (*fmaLoop)(long iters);
  // sum_i a[i]*b[i]
  float (*dot)(const float* a, const float* b, int n);
  // y[i] += alpha * x[i]
  void (*axpy)(float alpha, const float* x, float* y, int n);
  // x[i] = exp(x[i] - shift) for i < n; returns the sum of the results (float64).
  double (*expShiftSum)(float* x, int n, float shift);
  // Elementwise kernels of the contract (see elementwise_impl.h), on [0, n).
  void (*adamw)(float* p, const float* g, float* m, float* v, long n, const AdamConsts& c);
  void (*swigluForward)(float* out, const float* gate, const float* up, long n);
  void (*swigluBackward)(float* dgate, float* dup, const float* dout, const float* gate, const float* up, long n);
  float (*maxv)(const float* x, int n);                                   // max (−inf for n = 0)
  double (*dotShiftF64)(const float* a, const float* b, int n, float shift);  // Σ a·(b − shift) in double
  // Optional (may be null): pack one full MR-row panel of a row-major A (rows `lda` apart) for kc
  // columns, k-major; may write up to 8 floats past the panel's end (the driver leaves slack).
  void (*packAPanel)(const float* A, long lda, int kc, float* dst);
};

extern const IsaOps kAvx512Ops;
extern const IsaOps kAvx2Ops;
extern const IsaOps kPortableOps;
