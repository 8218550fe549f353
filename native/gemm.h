// Packed, cache-blocked SGEMM driver over the run-time selected ISA micro-kernel.
#pragma once
#include "isa.h"

const IsaOps& isa();  // the ops selected at load time (MATPO_ISA=avx2|portable may lower it)
double isaSelfCheck();  // worst error ratio of the load-time self-check of the selected SIMD path (<= 1)

// C[M x N] = (accumulate ? C : 0) + op(A) op(B) with leading dimensions; single-threaded (safe to
// call from inside a pool job).
void gemmSerial(bool transA, bool transB, int M, int N, int K, const float* A, long lda, const float* B, long ldb,
                float* C, long ldc, bool accumulate);
// Same, split across the pool.
void gemmParallel(bool transA, bool transB, int M, int N, int K, const float* A, long lda, const float* B, long ldb,
                  float* C, long ldc, bool accumulate);

// Packed weight for NT products with W stored [N x K]: floats needed, pack, and C = A W^T.
long packedWeightFloats(int N, int K);
void packWeightNT(const float* W, int N, int K, float* out);
// B given as rows [N x K] with row stride ldb, packed for op(B) = B^T (the layout of packWeightNT);
// the product may use the first N <= Npacked columns of a weight packed with Npacked columns.
void packBT(const float* B, long ldb, int N, int K, float* out);
void gemmSerialPackedBT(int M, int N, int K, const float* A, long lda, const float* packed, int Npacked, float* C,
                        long ldc, bool accumulate);
void gemmPackedWeight(int M, int N, int K, const float* A, const float* packed, float* C, bool accumulate);

// FMA peak of the selected ISA on nt threads measured for about `ms` milliseconds (GFLOP/s).
double peakGflops(int nt, double ms);
