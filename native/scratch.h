// Per-thread scratch memory for packing panels and blocks: 64-byte aligned, grows geometrically,
// and is kept for the thread's lifetime so steady-state kernels do not allocate.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>

namespace matpo {

struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  float* get(size_t need) {
    if (need > n) {
      std::free(p);
      n = std::max(need, n * 2);
      p = static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64));
    }
    return p;
  }
  ~Scratch() { std::free(p); }
};

}  // namespace matpo
