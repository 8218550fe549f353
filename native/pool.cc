// Thread pool implementation (see pool.h).
#include "pool.h"

#include <atomic>
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>
#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

namespace pool {
namespace {

constexpr double kSpinMicros = 10.0;
thread_local bool insideJob = false;

struct Pool {
  std::vector<std::thread> workers;
  std::mutex m;
  std::condition_variable cv;
  std::atomic<unsigned long> generation{0};
  std::atomic<int> pending{0};
  const std::function<void(int, int)>* job = nullptr;
  int jobThreads = 1;
  bool stopping = false;
  std::mutex dispatch;  // one dispatcher at a time

  // `seen` is the generation current when the worker was created, so a job dispatched before the
  // thread first runs is not missed.
  void worker(int tid, unsigned long seen) {
    for (;;) {
      unsigned long g = generation.load(std::memory_order_acquire);
      if (g == seen) {
        auto start = std::chrono::steady_clock::now();
        for (int i = 0; g == seen; i++) {
          CPU_RELAX();
          g = generation.load(std::memory_order_acquire);
          if ((i & 63) == 63 &&
              std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() > kSpinMicros)
            break;
        }
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lk(m);
        cv.wait(lk, [&] { return stopping || generation.load(std::memory_order_acquire) != seen; });
        if (stopping) return;
        g = generation.load(std::memory_order_acquire);
      }
      seen = g;
      if (tid < jobThreads) {
        insideJob = true;
        (*job)(tid, jobThreads);
        insideJob = false;
      }
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void start(int n) {
    stopping = false;
    const unsigned long g0 = generation.load(std::memory_order_acquire);
    for (int t = 1; t < n; t++) workers.emplace_back([this, t, g0] { worker(t, g0); });
  }
  void stop() {
    {
      std::lock_guard<std::mutex> lk(m);
      stopping = true;
    }
    cv.notify_all();
    for (auto& w : workers) w.join();
    workers.clear();
  }
};

Pool* thePool = nullptr;
std::once_flag initOnce;

int defaultThreads() {
  if (const char* env = std::getenv("MATPO_THREADS")) {
    int n = std::atoi(env);
    if (n >= 1) return n;
  }
#if defined(__linux__)
  cpu_set_t set;  // CPUs this process may run on (what Node's os.availableParallelism() reports)
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
#endif
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : int(hc);
}

Pool& get() {
  std::call_once(initOnce, [] {
    thePool = new Pool();  // never destroyed: workers live for the process
    thePool->start(defaultThreads());
  });
  return *thePool;
}

}  // namespace

int size() { return int(get().workers.size()) + 1; }

void resize(int n) {
  if (n < 1) n = 1;
  Pool& p = get();
  std::lock_guard<std::mutex> lk(p.dispatch);
  if (int(p.workers.size()) + 1 == n) return;
  p.stop();
  p.start(n);
}

void run(const std::function<void(int, int)>& fn, int maxThreads) {
  Pool& p = get();
  int nt = std::min(int(p.workers.size()) + 1, maxThreads);
  if (nt <= 1 || insideJob || !p.dispatch.try_lock()) {
    bool was = insideJob;
    insideJob = true;
    fn(0, 1);
    insideJob = was;
    return;
  }
  p.job = &fn;
  p.jobThreads = nt;
  p.pending.store(int(p.workers.size()), std::memory_order_release);
  {
    std::lock_guard<std::mutex> lk(p.m);
    p.generation.fetch_add(1, std::memory_order_acq_rel);
  }
  p.cv.notify_all();
  insideJob = true;
  fn(0, nt);
  insideJob = false;
  while (p.pending.load(std::memory_order_acquire) != 0) CPU_RELAX();
  p.dispatch.unlock();
}

void parallelFor(long n, const std::function<void(long)>& fn) {
  if (n <= 0) return;
  std::atomic<long> next{0};
  run([&](int, int) {
    for (;;) {
      long i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= n) break;
      fn(i);
    }
  }, n < (1 << 30) ? int(n) : (1 << 30));
}

}  // namespace pool
