// Depthwise convolution, baseline (SSE2) build of conv_depthwise_impl.h.
#define DW_ENTRY depthwise_rows_portable
#include "conv_depthwise_impl.h"
