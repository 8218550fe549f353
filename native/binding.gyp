# Build of the matpo native kernels (node-gyp). The SIMD micro-kernels live in separate static
# libraries, each compiled with its own target flags; the addon itself is built for baseline x86-64
# and picks a path at run time, so the binary runs on any x86-64 (no -march=native anywhere).
{
  "target_defaults": {
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags": ["-O3", "-fPIC"],
    "cflags_cc": ["-O3", "-fPIC", "-std=c++17", "-fexceptions", "-fno-math-errno"],
    "defines": ["NAPI_CPP_EXCEPTIONS", "NAPI_VERSION=8"]
  },
  "targets": [
    {
      "target_name": "kern_avx512",
      "type": "static_library",
      "sources": ["isa_avx512.cc"],
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-Wno-uninitialized", "-Wno-maybe-uninitialized"]
    },
    {
      "target_name": "kern_avx2",
      "type": "static_library",
      "sources": ["isa_avx2.cc"],
      "cflags_cc": ["-mavx2", "-mfma"]
    },
    {
      "target_name": "matpo_native",
      "dependencies": ["kern_avx512", "kern_avx2"],
      "sources": ["addon.cc", "pool.cc", "gemm.cc", "kernels.cc", "isa_portable.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "libraries": ["-lpthread"]
    }
  ]
}
