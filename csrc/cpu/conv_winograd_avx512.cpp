// Winograd F(4×4, 3×3) transforms, avx512 build of conv_winograd_impl.h.
#define WINO_SUFFIX avx512
#include "conv_winograd_impl.h"
