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

/* ---- sparse first layer: the input x is mostly exact zeros (MNIST: 19 % of pixels are not) ----
   Exact for the rule: a zero input contributes nothing to Z, gets no signal back (D0 = x * ...),
   and its map entry, hence its Hebbian term, is 0. W+ is kept transposed (in x out) so that a
   pixel's weights are one contiguous row. */

// WT[j*out + i] = bf16(max(W[i*in + j], 0)), in 32x32 tiles
void pos_T(const float *W, long out, long in, bf16 *WT) {
  for (long i0 = 0; i0 < out; i0 += 32)
    for (long j0 = 0; j0 < in; j0 += 32)
      for (long j = j0; j < j0 + 32 && j < in; j++)
        for (long i = i0; i < i0 + 32 && i < out; i++) { float v = W[i * in + j]; WT[j * out + i] = f2b(v > 0 ? v : 0.f); }
}
// z[b,:] = sum_{j: x[b,j] != 0} x[b,j] * WT[j,:]   (float32 accumulation)
void z_sparse(const float *x, const bf16 *WT, long B, long in, long out, float *z) {
  for (long b = 0; b < B; b++) {
    float *zb = z + b * out; const float *xb = x + b * in;
    for (long i = 0; i < out; i++) zb[i] = 0.f;
    for (long j = 0; j < in; j++) {
      float v = xb[j]; if (v == 0.f) continue;
      const bf16 *w = WT + j * out;
      for (long i = 0; i < out; i++) zb[i] += v * b2f(w[i]);
    }
  }
}
// ratio (float32) = D / max(z, tiny)
void ratio_f32(const float *D, const float *z, long m, float *out) { for (long i = 0; i < m; i++) out[i] = D[i] / (z[i] > TINY ? z[i] : TINY); }
// D0[b,j] = x[b,j] * dot(r[b,:], WT[j,:]) where x[b,j] != 0, else 0
void back_sparse(const float *x, const float *r, const bf16 *WT, long B, long in, long out, float *D0) {
  for (long b = 0; b < B; b++) {
    const float *xb = x + b * in, *rb = r + b * out; float *d = D0 + b * in;
    for (long j = 0; j < in; j++) {
      float v = xb[j]; if (v == 0.f) { d[j] = 0.f; continue; }
      const bf16 *w = WT + j * out; float s = 0.f;
      for (long i = 0; i < out; i++) s += rb[i] * b2f(w[i]);
      d[j] = v * s;
    }
  }
}
// accT[j,:] += sum_b pre[b,j] * post[b,:] over the non-zero pre[b,j], pixel by pixel
void hebb_T(const float *pre, const float *post, long B, long in, long out, float *accT, float *tmp) {
  for (long j = 0; j < in; j++) {
    int any = 0;
    for (long b = 0; b < B; b++) {
      float v = pre[b * in + j]; if (v == 0.f) continue;
      const float *pb = post + b * out;
      if (!any) { for (long i = 0; i < out; i++) tmp[i] = v * pb[i]; any = 1; }
      else for (long i = 0; i < out; i++) tmp[i] += v * pb[i];
    }
    if (any) { float *a = accT + j * out; for (long i = 0; i < out; i++) a[i] += tmp[i]; }
  }
}
// post rows in float32: out = Pc / div
void post_f32(const float *Pc, const float *div, long B, long n, float *out) {
  for (long b = 0; b < B; b++) for (long j = 0; j < n; j++) out[b * n + j] = Pc[b * n + j] / div[j];
}
