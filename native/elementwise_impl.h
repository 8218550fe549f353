// (Included inside an anonymous namespace; not a normal header. Named .h so packaging picks it up.)
// Elementwise kernels written once as plain loops and compiled once per ISA: this file is included
// inside the anonymous namespace of each isa_*.cc, which must define expInPlace(float*, int) before
// including it. Only builtins are used here (no inline library functions), so no code compiled with
// one ISA's flags can be shared with another translation unit.

void adamwLoop(float* p, const float* g, float* m, float* v, long n, const AdamConsts& c) {
  for (long i = 0; i < n; i++) {
    float gi = g[i] * c.gradScale;
    float mi = c.b1 * m[i] + c.omb1 * gi;
    float vi = c.b2 * v[i] + c.omb2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * c.decay - c.lr * (mi * c.bc1) / (__builtin_sqrtf(vi * c.bc2) + c.eps);
  }
}

constexpr int kEwChunk = 512;

void swigluFwdLoop(float* out, const float* gate, const float* up, long n) {
  alignas(64) float e[kEwChunk];
  for (long i0 = 0; i0 < n; i0 += kEwChunk) {
    int len = int(n - i0 < kEwChunk ? n - i0 : kEwChunk);
    for (int j = 0; j < len; j++) e[j] = -gate[i0 + j];
    expInPlace(e, len);  // e = exp(-gate)
    for (int j = 0; j < len; j++) out[i0 + j] = gate[i0 + j] * up[i0 + j] / (1.f + e[j]);
  }
}

void swigluBwdLoop(float* dgate, float* dup, const float* dout, const float* gate, const float* up, long n) {
  alignas(64) float e[kEwChunk];
  for (long i0 = 0; i0 < n; i0 += kEwChunk) {
    int len = int(n - i0 < kEwChunk ? n - i0 : kEwChunk);
    for (int j = 0; j < len; j++) e[j] = -gate[i0 + j];
    expInPlace(e, len);
    for (int j = 0; j < len; j++) {
      const long i = i0 + j;
      const float s = 1.f / (1.f + e[j]), g = gate[i];
      dgate[i] += dout[i] * up[i] * s * (1.f + g * (1.f - s));
      dup[i] += dout[i] * g * s;
    }
  }
}

// Σ a[j]·(b[j] − shift), accumulated in double.
double dotShiftF64Generic(const float* a, const float* b, int n, float shift) {
  double s4[4] = {0, 0, 0, 0};
  int j = 0;
  for (; j + 4 <= n; j += 4)
    for (int u = 0; u < 4; u++) s4[u] += double(a[j + u]) * double(b[j + u] - shift);
  double s = (s4[0] + s4[1]) + (s4[2] + s4[3]);
  for (; j < n; j++) s += double(a[j]) * double(b[j] - shift);
  return s;
}
