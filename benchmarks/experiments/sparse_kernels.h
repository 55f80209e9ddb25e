/* Sparse first layer of ASP's c-EB and Oja update, shared by the experiments fused_hook.c
   (W+ stored in bfloat16) and sparse_first_layer.c (float32). Not product code.
   The input x is mostly exact zeros (MNIST: 19 % of pixels are not). Exact for the rule: a zero
   input contributes nothing to Z, gets no signal back (D0 = x * ...), and its map entry, hence its
   Hebbian term, is 0. W+ is kept transposed (in x out) so that a pixel's weights are one
   contiguous row. The includer defines W_T (the stored type), W_STORE(float) and W_LOAD(W_T). */

// WT[j*out + i] = max(W[i*in + j], 0), in 32x32 tiles
void pos_T(const float *W, long out, long in, W_T *WT) {
  for (long i0 = 0; i0 < out; i0 += 32)
    for (long j0 = 0; j0 < in; j0 += 32)
      for (long j = j0; j < j0 + 32 && j < in; j++)
        for (long i = i0; i < i0 + 32 && i < out; i++) { float v = W[i * in + j]; WT[j * out + i] = W_STORE(v > 0 ? v : 0.f); }
}
// z[b,:] = sum_{j: x[b,j] != 0} x[b,j] * WT[j,:]   (float32 accumulation)
void z_sparse(const float *x, const W_T *WT, long B, long in, long out, float *z) {
  for (long b = 0; b < B; b++) {
    float *zb = z + b * out; const float *xb = x + b * in;
    for (long i = 0; i < out; i++) zb[i] = 0.f;
    for (long j = 0; j < in; j++) {
      float v = xb[j]; if (v == 0.f) continue;
      const W_T *w = WT + j * out;
      for (long i = 0; i < out; i++) zb[i] += v * W_LOAD(w[i]);
    }
  }
}
// D0[b,j] = x[b,j] * dot(r[b,:], WT[j,:]) where x[b,j] != 0, else 0
void back_sparse(const float *x, const float *r, const W_T *WT, long B, long in, long out, float *D0) {
  for (long b = 0; b < B; b++) {
    const float *xb = x + b * in, *rb = r + b * out; float *d = D0 + b * in;
    for (long j = 0; j < in; j++) {
      float v = xb[j]; if (v == 0.f) { d[j] = 0.f; continue; }
      const W_T *w = WT + j * out; float s = 0.f;
      for (long i = 0; i < out; i++) s += rb[i] * W_LOAD(w[i]);
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
