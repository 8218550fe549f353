// N-API entry points of matpo_native: argument checking (types, lengths, index ranges, with one-line
// messages naming the kernel and argument) and dispatch to the SGEMM driver and kernels.
#include <napi.h>

#include <string>

#include "gemm.h"
#include "kernels.h"
#include "pool.h"

namespace {

struct Args {
  const Napi::CallbackInfo& info;
  const char* fn;

  [[noreturn]] void fail(const std::string& msg) const {
    throw Napi::RangeError::New(info.Env(), std::string(fn) + ": " + msg);
  }
  void count(size_t n) const {
    if (info.Length() < n) fail("expected " + std::to_string(n) + " arguments, got " + std::to_string(info.Length()));
  }
  int i32(size_t i, const char* name, int min = 0) const {
    if (!info[i].IsNumber()) fail(std::string(name) + " must be a number");
    double d = info[i].As<Napi::Number>().DoubleValue();
    if (!(d >= min) || d > 2147483647.0 || d != double(long(d)))
      fail(std::string(name) + " must be an integer >= " + std::to_string(min) + ", got " + std::to_string(d));
    return int(d);
  }
  double num(size_t i, const char* name) const {
    if (!info[i].IsNumber()) fail(std::string(name) + " must be a number");
    return info[i].As<Napi::Number>().DoubleValue();
  }
  bool flag(size_t i, const char* name) const {
    if (!info[i].IsBoolean()) fail(std::string(name) + " must be a boolean");
    return info[i].As<Napi::Boolean>().Value();
  }
  float* f32(size_t i, const char* name, double need) const {
    Napi::Value v = info[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      fail(std::string(name) + " must be a Float32Array");
    auto a = v.As<Napi::Float32Array>();
    if (double(a.ElementLength()) < need)
      fail(std::string(name) + " has " + std::to_string(a.ElementLength()) + " elements, needs " +
           std::to_string(long(need)));
    return a.Data();
  }
  float* f32OrNull(size_t i, const char* name, double need) const {
    if (info[i].IsNull() || info[i].IsUndefined()) return nullptr;
    return f32(i, name, need);
  }
  int32_t* i32a(size_t i, const char* name, double need) const {
    Napi::Value v = info[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      fail(std::string(name) + " must be an Int32Array");
    auto a = v.As<Napi::Int32Array>();
    if (double(a.ElementLength()) < need)
      fail(std::string(name) + " has " + std::to_string(a.ElementLength()) + " elements, needs " +
           std::to_string(long(need)));
    return a.Data();
  }
  size_t len(size_t i) const { return info[i].As<Napi::TypedArray>().ElementLength(); }
  void indices(const int32_t* ids, long n, long limit, const char* name) const {
    for (long t = 0; t < n; t++)
      if (ids[t] < 0 || ids[t] >= limit)
        fail(std::string(name) + "[" + std::to_string(t) + "] = " + std::to_string(ids[t]) + " is outside [0, " +
             std::to_string(limit) + ")");
  }
};

Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Args a{info, "sgemm"};
  a.count(9);
  bool tA = a.flag(0, "transA"), tB = a.flag(1, "transB");
  int M = a.i32(2, "M"), N = a.i32(3, "N"), K = a.i32(4, "K");
  float* A = a.f32(5, "A", double(M) * K);
  float* B = a.f32(6, "B", double(K) * N);
  float* C = a.f32(7, "C", double(M) * N);
  bool acc = a.flag(8, "accumulate");
  gemmParallel(tA, tB, M, N, K, A, tA ? M : K, B, tB ? K : N, C, N, acc);
  return info.Env().Undefined();
}

Napi::Value PackedWeightFloats(const Napi::CallbackInfo& info) {
  Args a{info, "packedWeightFloats"};
  a.count(2);
  return Napi::Number::New(info.Env(), double(packedWeightFloats(a.i32(0, "N"), a.i32(1, "K"))));
}

Napi::Value PackWeightNT(const Napi::CallbackInfo& info) {
  Args a{info, "packWeightNT"};
  a.count(4);
  int N = a.i32(1, "N"), K = a.i32(2, "K");
  float* W = a.f32(0, "W", double(N) * K);
  float* out = a.f32(3, "packed", double(packedWeightFloats(N, K)));
  packWeightNT(W, N, K, out);
  return info.Env().Undefined();
}

Napi::Value SgemmPacked(const Napi::CallbackInfo& info) {
  Args a{info, "sgemmPacked"};
  a.count(7);
  int M = a.i32(0, "M"), N = a.i32(3, "N"), K = a.i32(4, "K");
  float* A = a.f32(1, "A", double(M) * K);
  float* P = a.f32(2, "packed", double(packedWeightFloats(N, K)));
  float* C = a.f32(5, "C", double(M) * N);
  bool acc = a.flag(6, "accumulate");
  gemmPackedWeight(M, N, K, A, P, C, acc);
  return info.Env().Undefined();
}

Napi::Value RmsnormForward(const Napi::CallbackInfo& info) {
  Args a{info, "rmsnormForward"};
  a.count(7);
  int T = a.i32(4, "T"), C = a.i32(5, "C", 1);
  kern::rmsnormForward(a.f32(0, "out", double(T) * C), a.f32(1, "rstd", T), a.f32(2, "x", double(T) * C),
                       a.f32(3, "weight", C), T, C, float(a.num(6, "eps")));
  return info.Env().Undefined();
}

Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  Args a{info, "rmsnormBackward"};
  a.count(8);
  int T = a.i32(6, "T"), C = a.i32(7, "C", 1);
  double TC = double(T) * C;
  kern::rmsnormBackward(a.f32(0, "dx", TC), a.f32(1, "dweight", C), a.f32(2, "dout", TC), a.f32(3, "x", TC),
                        a.f32(4, "weight", C), a.f32(5, "rstd", T), T, C);
  return info.Env().Undefined();
}

Napi::Value Rope(const Napi::CallbackInfo& info, bool inverse) {
  Args a{info, inverse ? "ropeBackward" : "ropeForward"};
  a.count(6);
  int T = a.i32(2, "T"), H = a.i32(3, "H"), D = a.i32(4, "D", 2);
  if (D % 2) a.fail("D must be even, got " + std::to_string(D));
  kern::rope(a.f32(0, "x", double(T) * H * D), a.i32a(1, "positions", T), T, H, D, a.num(5, "theta"), inverse);
  return info.Env().Undefined();
}
Napi::Value RopeForward(const Napi::CallbackInfo& info) { return Rope(info, false); }
Napi::Value RopeBackward(const Napi::CallbackInfo& info) { return Rope(info, true); }

// Checks cuSeqlens (length B+1, starts at 0, non-decreasing) and returns T = cuSeqlens[B].
int checkSeqlens(const Args& a, size_t i, int B) {
  const int32_t* cu = a.i32a(i, "cuSeqlens", double(B) + 1);
  if (cu[0] != 0) a.fail("cuSeqlens[0] must be 0, got " + std::to_string(cu[0]));
  for (int b = 0; b < B; b++)
    if (cu[b + 1] < cu[b])
      a.fail("cuSeqlens must be non-decreasing; cuSeqlens[" + std::to_string(b + 1) + "] = " +
             std::to_string(cu[b + 1]) + " < " + std::to_string(cu[b]));
  return cu[B];
}

void checkHeads(const Args& a, int H, int KV) {
  if (KV < 1 || H % KV) a.fail("H (" + std::to_string(H) + ") must be a multiple of KV (" + std::to_string(KV) + ")");
}

Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Args a{info, "attentionForward"};
  a.count(11);
  int B = a.i32(6, "B"), H = a.i32(7, "H", 1), KV = a.i32(8, "KV", 1), D = a.i32(9, "D", 1);
  checkHeads(a, H, KV);
  int T = checkSeqlens(a, 5, B);
  double tq = double(T) * H * D, tk = double(T) * KV * D;
  kern::attentionForward(a.f32(0, "out", tq), a.f32(1, "lse", double(T) * H), a.f32(2, "q", tq), a.f32(3, "k", tk),
                         a.f32(4, "v", tk), a.i32a(5, "cuSeqlens", B + 1.0), B, H, KV, D, float(a.num(10, "scale")));
  return info.Env().Undefined();
}

Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Args a{info, "attentionBackward"};
  a.count(15);
  int B = a.i32(10, "B"), H = a.i32(11, "H", 1), KV = a.i32(12, "KV", 1), D = a.i32(13, "D", 1);
  checkHeads(a, H, KV);
  int T = checkSeqlens(a, 9, B);
  double tq = double(T) * H * D, tk = double(T) * KV * D;
  kern::attentionBackward(a.f32(0, "dq", tq), a.f32(1, "dk", tk), a.f32(2, "dv", tk), a.f32(3, "dout", tq),
                          a.f32(4, "q", tq), a.f32(5, "k", tk), a.f32(6, "v", tk), a.f32(7, "out", tq),
                          a.f32(8, "lse", double(T) * H), a.i32a(9, "cuSeqlens", B + 1.0), B, H, KV, D,
                          float(a.num(14, "scale")));
  return info.Env().Undefined();
}

Napi::Value AttentionDecode(const Napi::CallbackInfo& info) {
  Args a{info, "attentionDecode"};
  a.count(12);
  int n = a.i32(6, "n"), S = a.i32(7, "S", 1), H = a.i32(8, "H", 1), KV = a.i32(9, "KV", 1), D = a.i32(10, "D", 1);
  checkHeads(a, H, KV);
  float* kc = a.f32(2, "kCache", 0);
  float* vc = a.f32(3, "vCache", 0);
  long slotSize = long(S) * KV * D;
  long slots = long(std::min(a.len(2), a.len(3))) / slotSize;
  const int32_t* slot = a.i32a(4, "slot", n);
  const int32_t* pos = a.i32a(5, "pos", n);
  a.indices(slot, n, slots, "slot");
  a.indices(pos, n, S, "pos");
  kern::attentionDecode(a.f32(0, "out", double(n) * H * D), a.f32(1, "q", double(n) * H * D), kc, vc, slot, pos, n, S,
                        H, KV, D, float(a.num(11, "scale")));
  return info.Env().Undefined();
}

Napi::Value SwigluForward(const Napi::CallbackInfo& info) {
  Args a{info, "swigluForward"};
  a.count(4);
  int n = a.i32(3, "n");
  kern::swigluForward(a.f32(0, "out", n), a.f32(1, "gate", n), a.f32(2, "up", n), n);
  return info.Env().Undefined();
}

Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  Args a{info, "swigluBackward"};
  a.count(6);
  int n = a.i32(5, "n");
  kern::swigluBackward(a.f32(0, "dgate", n), a.f32(1, "dup", n), a.f32(2, "dout", n), a.f32(3, "gate", n),
                       a.f32(4, "up", n), n);
  return info.Env().Undefined();
}

Napi::Value EmbeddingForward(const Napi::CallbackInfo& info) {
  Args a{info, "embeddingForward"};
  a.count(5);
  int T = a.i32(3, "T"), C = a.i32(4, "C", 1);
  float* table = a.f32(1, "table", 0);
  const int32_t* ids = a.i32a(2, "ids", T);
  a.indices(ids, T, long(a.len(1)) / C, "ids");
  kern::embeddingForward(a.f32(0, "out", double(T) * C), table, ids, T, C);
  return info.Env().Undefined();
}

Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Args a{info, "embeddingBackward"};
  a.count(5);
  int T = a.i32(3, "T"), C = a.i32(4, "C", 1);
  float* dtable = a.f32(0, "dtable", 0);
  const int32_t* ids = a.i32a(2, "ids", T);
  a.indices(ids, T, long(a.len(0)) / C, "ids");
  kern::embeddingBackward(dtable, a.f32(1, "dout", double(T) * C), ids, T, C);
  return info.Env().Undefined();
}

Napi::Value LogprobsForward(const Napi::CallbackInfo& info) {
  Args a{info, "logprobsForward"};
  a.count(7);
  int T = a.i32(5, "T"), V = a.i32(6, "V", 1);
  const int32_t* targets = a.i32a(4, "targets", T);
  a.indices(targets, T, V, "targets");
  kern::logprobsForward(a.f32(0, "logprob", T), a.f32(1, "lse", T), a.f32OrNull(2, "entropy", T),
                        a.f32(3, "logits", double(T) * V), targets, T, V);
  return info.Env().Undefined();
}

Napi::Value LogprobsBackward(const Napi::CallbackInfo& info) {
  Args a{info, "logprobsBackward"};
  a.count(8);
  int T = a.i32(6, "T"), V = a.i32(7, "V", 1);
  const int32_t* targets = a.i32a(5, "targets", T);
  a.indices(targets, T, V, "targets");
  kern::logprobsBackward(a.f32(0, "dlogits", double(T) * V), a.f32(1, "dlogprob", T), a.f32OrNull(2, "dentropy", T),
                         a.f32(3, "logits", double(T) * V), a.f32(4, "lse", T), targets, T, V);
  return info.Env().Undefined();
}

Napi::Value Adamw(const Napi::CallbackInfo& info) {
  Args a{info, "adamw"};
  a.count(12);
  int n = a.i32(4, "n");
  kern::adamw(a.f32(0, "params", n), a.f32(1, "grads", n), a.f32(2, "m", n), a.f32(3, "v", n), n, a.num(5, "lr"),
              a.num(6, "beta1"), a.num(7, "beta2"), a.num(8, "eps"), a.num(9, "weightDecay"), a.i32(10, "step", 1),
              a.num(11, "gradScale"));
  return info.Env().Undefined();
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  Args a{info, "sumSquares"};
  a.count(2);
  int n = a.i32(1, "n");
  return Napi::Number::New(info.Env(), kern::sumSquares(a.f32(0, "x", n), n));
}

Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pool::size()); }

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  Args a{info, "setThreads"};
  a.count(1);
  int n = a.i32(0, "n", 1);
  if (n > 256) a.fail("n must be <= 256, got " + std::to_string(n));
  pool::resize(n);
  return info.Env().Undefined();
}

Napi::Value PeakGflops(const Napi::CallbackInfo& info) {
  Args a{info, "peakGflops"};
  a.count(2);
  return Napi::Number::New(info.Env(), peakGflops(a.i32(0, "threads", 1), a.num(1, "ms")));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("isa", Napi::String::New(env, isa().name));
  exports.Set("isaSelfCheck", Napi::Number::New(env, isaSelfCheck()));
  exports.Set("gemmTile", Napi::String::New(env, std::to_string(isa().MR) + "x" + std::to_string(isa().NR)));
#define EXPORT(name, fn) exports.Set(name, Napi::Function::New(env, fn, name))
  EXPORT("sgemm", Sgemm);
  EXPORT("packedWeightFloats", PackedWeightFloats);
  EXPORT("packWeightNT", PackWeightNT);
  EXPORT("sgemmPacked", SgemmPacked);
  EXPORT("rmsnormForward", RmsnormForward);
  EXPORT("rmsnormBackward", RmsnormBackward);
  EXPORT("ropeForward", RopeForward);
  EXPORT("ropeBackward", RopeBackward);
  EXPORT("attentionForward", AttentionForward);
  EXPORT("attentionBackward", AttentionBackward);
  EXPORT("attentionDecode", AttentionDecode);
  EXPORT("swigluForward", SwigluForward);
  EXPORT("swigluBackward", SwigluBackward);
  EXPORT("embeddingForward", EmbeddingForward);
  EXPORT("embeddingBackward", EmbeddingBackward);
  EXPORT("logprobsForward", LogprobsForward);
  EXPORT("logprobsBackward", LogprobsBackward);
  EXPORT("adamw", Adamw);
  EXPORT("sumSquares", SumSquares);
  EXPORT("threads", Threads);
  EXPORT("setThreads", SetThreads);
  EXPORT("peakGflops", PeakGflops);
#undef EXPORT
  return exports;
}

}  // namespace

NODE_API_MODULE(matpo_native, Init)
