// Experiment (benchmarks/experiments/fused_hook.py): ASP hook element-wise work as plain C loops. Not product code.
#include <stdint.h>
#include <string.h>
#include <math.h>
typedef uint16_t bf16;
static inline bf16 f2b(float f) { uint32_t u; memcpy(&u, &f, 4); u += 0x7FFF + ((u >> 16) & 1); return (bf16)(u >> 16); }
static inline float b2f(bf16 b) { uint32_t u = ((uint32_t)b) << 16; float f; memcpy(&f, &u, 4); return f; }
#define TINY 1e-12f

void pos_bf16(const float *w, long n, bf16 *out) { for (long i = 0; i < n; i++) { float v = w[i] > 0 ? w[i] : 0.f; out[i] = f2b(v); } }
void cvt_bf16(const float *a, long n, bf16 *out) { for (long i = 0; i < n; i++) out[i] = f2b(a[i]); }

// top layer c-EB: D[b,:] = a[b,:] * (w+/z+ - w-/z-), w = W[y[b]]
void top(const float *a, const float *W, const int64_t *y, long B, long n, float *D) {
  for (long b = 0; b < B; b++) {
    const float *w = W + y[b] * n, *ab = a + b * n; float zp = 0, zn = 0;
    for (long j = 0; j < n; j++) { float v = w[j]; zp += ab[j] * (v > 0 ? v : 0); zn += ab[j] * (v < 0 ? -v : 0); }
    zp = zp > TINY ? zp : TINY; zn = zn > TINY ? zn : TINY; float ip = 1.f / zp, in = 1.f / zn;
    float *d = D + b * n;
    for (long j = 0; j < n; j++) { float v = w[j]; d[j] = ab[j] * ((v > 0 ? v : 0) * ip - (v < 0 ? -v : 0) * in); }
  }
}
// Pc = relu(D)/sum, per row; pre rows (bf16) written; sq[j] = sum_b Pc^2 ; Pc kept in out (f32)
void norm(const float *D, long B, long n, float *Pc, bf16 *pre_rows, float *sq) {
  for (long j = 0; j < n; j++) sq[j] = 0;
  for (long b = 0; b < B; b++) {
    const float *d = D + b * n; float s = 0;
    for (long j = 0; j < n; j++) s += d[j] > 0 ? d[j] : 0;
    float inv = 1.f / (s > TINY ? s : TINY);
    float *p = Pc + b * n; bf16 *r = pre_rows + b * n;
    for (long j = 0; j < n; j++) { float v = (d[j] > 0 ? d[j] : 0) * inv; p[j] = v; r[j] = f2b(v); sq[j] += v * v; }
  }
}
// post rows: bf16(Pc / div)
void post(const float *Pc, const float *div, long B, long n, bf16 *rows) {
  for (long b = 0; b < B; b++) for (long j = 0; j < n; j++) rows[b * n + j] = f2b(Pc[b * n + j] / div[j]);
}
// ratio = bf16(D / max(z, tiny)), z bf16
void ratio(const float *D, const bf16 *z, long m, bf16 *out) { for (long i = 0; i < m; i++) { float zz = b2f(z[i]); out[i] = f2b(D[i] / (zz > TINY ? zz : TINY)); } }
// D = back(bf16) * a
void back(const bf16 *bk, const float *a, long m, float *D) { for (long i = 0; i < m; i++) D[i] = b2f(bk[i]) * a[i]; }
// Oja scale: new = s*(1 - eps*sq/B); returns 1 if min(new) < floor (caller folds), else writes scale=new, div=new*B/eps
int scale(float *s, const float *sq, long n, float eps, long B, float floor_, float *div) {
  float mn = 1e30f;
  for (long j = 0; j < n; j++) { float v = s[j] * (1.f - eps * sq[j] / B); div[j] = v; if (v < mn) mn = v; }
  if (mn < floor_) return 1;
  for (long j = 0; j < n; j++) { s[j] = div[j]; div[j] = div[j] * B / eps; }
  return 0;
}

// ---- sparse first layer (SparseFirstLayer): W+ transposed, in bfloat16 ----
#define W_T bf16
#define W_STORE(v) f2b(v)
#define W_LOAD(v) b2f(v)
#include "sparse_kernels.h"

// ratio (float32) = D / max(z, tiny)
void ratio_f32(const float *D, const float *z, long m, float *out) { for (long i = 0; i < m; i++) out[i] = D[i] / (z[i] > TINY ? z[i] : TINY); }
// post rows in float32: out = Pc / div
void post_f32(const float *Pc, const float *div, long B, long n, float *out) {
  for (long b = 0; b < B; b++) for (long j = 0; j < n; j++) out[b * n + j] = Pc[b * n + j] / div[j];
}
