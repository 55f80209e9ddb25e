// Experiment (not used by the product): ASP's first-layer work over the input's non-zero pixels
// only, in float32, with plain loops that gcc vectorizes. See sparse_first_layer.py.
#define W_T float
#define W_STORE(v) (v)
#define W_LOAD(v) (v)
#include "sparse_kernels.h"
