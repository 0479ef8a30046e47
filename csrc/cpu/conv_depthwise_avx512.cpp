// Depthwise convolution, avx512 build of conv_depthwise_impl.h.
#define DW_ENTRY depthwise_rows_avx512
#include "conv_depthwise_impl.h"
