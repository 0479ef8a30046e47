// Depthwise convolution, avx2 build of conv_depthwise_impl.h.
#define DW_ENTRY depthwise_rows_avx2
#include "conv_depthwise_impl.h"
