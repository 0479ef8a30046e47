// One value in every lane as a single broadcast instruction, for the per-ISA kernel bodies
// (elementwise_vmath.h's splat fills lanes one by one, which GCC keeps as a chain of masked
// inserts inside loops). Included inside a per-ISA namespace after EW_W, <immintrin.h> and
// elementwise_vmath.h; no includes here.

static inline vf bcast(float f) {
#if EW_W == 16 && defined(__AVX512F__)
  return (vf)_mm512_set1_ps(f);
#elif EW_W == 8 && defined(__AVX__)
  return (vf)_mm256_set1_ps(f);
#elif EW_W == 4 && defined(__SSE__)
  return (vf)_mm_set1_ps(f);
#else
  return splat(f);
#endif
}
static inline vi bcasti(std::int32_t v) {
#if EW_W == 16 && defined(__AVX512F__)
  return (vi)_mm512_set1_epi32(v);
#elif EW_W == 8 && defined(__AVX__)
  return (vi)_mm256_set1_epi32(v);
#elif EW_W == 4 && defined(__SSE2__)
  return (vi)_mm_set1_epi32(v);
#else
  return splati(v);
#endif
}
