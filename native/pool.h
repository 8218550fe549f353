// Persistent thread pool of the native kernels: workers spin for a few microseconds after a job
// (cheap hand-off for back-to-back kernel calls) and then sleep on a condition variable.
// A job is a function of (thread index, thread count); the calling thread runs index 0.
// Calls from a second JS thread while the pool is busy, or from inside a job, run serially.
#pragma once
#include <functional>

namespace pool {
int size();
void resize(int n);  // n >= 1: total threads including the caller
// Runs fn(tid, nt) for tid in [0, nt) with nt <= size(); nt = 1 when the pool is busy.
void run(const std::function<void(int, int)>& fn, int maxThreads = 1 << 30);
// Runs fn(i) for i in [0, n), work items handed out dynamically.
void parallelFor(long n, const std::function<void(long)>& fn);
}  // namespace pool
