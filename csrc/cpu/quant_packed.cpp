// QuantPacked (engine/quant.h): repacking ggml blocks into tiles of 16 rows (quant_packed.h),
// and quant_matmul_packed: the packed kernels for any number of x rows (measured on SmolLM2's
// weights, one thread: 0.5x the blocks' few-row kernels' time at 1 row, 0.3x at 8, and 0.7x the
// dequantised-panel GEMM's at 128 and 512 rows), or the blocks' path on CPUs (or ISA caps)
// without AVX-512 VNNI.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "cpu/quant_packed.h"
#include "engine/cpu_features.h"
#include "engine/half.h"
#include "engine/scratch.h"
#include "engine/threadpool.h"

namespace engine {

namespace {

// Row n's block b as 32 codes (unsigned, offsets as in quant_packed.h) and its two scales' bits
// (f16 d and m as stored; Q4_K's f32 d*sc and -(dmin*m)).
struct BlockCodes {
  std::uint8_t code[32];
  std::uint32_t d = 0, m = 0;
};

std::uint32_t f32_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
std::uint16_t u16(const std::uint8_t* p) {
  std::uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

BlockCodes block_codes(const std::uint8_t* row, QuantType t, index_t b) {
  BlockCodes c;
  switch (t) {
    case QuantType::Q4_0:
    case QuantType::Q4_1: {
      const std::uint8_t* p = row + (t == QuantType::Q4_0 ? 18 : 20) * b;
      c.d = u16(p);
      if (t == QuantType::Q4_1) c.m = u16(p + 2);
      const std::uint8_t* nib = p + (t == QuantType::Q4_0 ? 2 : 4);
      for (int i = 0; i < 16; ++i) c.code[i] = nib[i] & 0x0F, c.code[i + 16] = nib[i] >> 4;
      return c;
    }
    case QuantType::Q8_0: {
      const std::uint8_t* p = row + 34 * b;
      c.d = u16(p);
      for (int i = 0; i < 32; ++i) c.code[i] = static_cast<std::uint8_t>(p[2 + i] ^ 0x80);  // int8 + 128
      return c;
    }
    default: {  // Q4_K: sub-block b % 8 of super-block b / 8
      const std::uint8_t* p = row + 144 * (b / 8);
      const int sub = static_cast<int>(b % 8);
      int sc, mn;
      k4_scale_min(p + 4, sub, sc, mn);
      // ggml's d1 = d * sc and m1 = dmin * m, rounded as it rounds them.
      c.d = f32_bits(half_bits_to_float(u16(p)) * static_cast<float>(sc));
      c.m = f32_bits(-(half_bits_to_float(u16(p + 2)) * static_cast<float>(mn)));
      const std::uint8_t* q = p + 16 + 32 * (sub / 2);
      for (int i = 0; i < 32; ++i) c.code[i] = (q[i] >> (4 * (sub & 1))) & 0x0F;
      return c;
    }
  }
}

void write_tile(std::uint8_t* tile, QuantType t, int n, const BlockCodes& c) {
  if (packed_nibbles(t)) {
    for (int v = 0; v < 4; ++v)
      for (int i = 0; i < 4; ++i)
        tile[64 * v + 4 * n + i] = static_cast<std::uint8_t>(c.code[4 * v + i] | (c.code[16 + 4 * v + i] << 4));
  } else {
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 4; ++i) tile[64 * j + 4 * n + i] = c.code[4 * j + i];
  }
  std::uint8_t* s = tile + packed_code_bytes(t);
  if (t == QuantType::Q4_K) {
    std::memcpy(s + 4 * n, &c.d, 4);
    std::memcpy(s + 64 + 4 * n, &c.m, 4);
  } else {
    const std::uint16_t d = static_cast<std::uint16_t>(c.d), m = static_cast<std::uint16_t>(c.m);
    std::memcpy(s + 2 * n, &d, 2);
    std::memcpy(s + 32 + 2 * n, &m, 2);
  }
}

}  // namespace

bool QuantPacked::supports(QuantType t) {
  return t == QuantType::Q4_0 || t == QuantType::Q4_1 || t == QuantType::Q8_0 || t == QuantType::Q4_K;
}

void QuantPacked::Free::operator()(std::uint8_t* p) const { std::free(p); }

QuantPacked::QuantPacked(const void* w, QuantType t, index_t N, index_t K)
    : QuantPacked(std::vector<Part>{{w, N}}, t, K) {}

QuantPacked::QuantPacked(const std::vector<Part>& parts, QuantType t, index_t K) : type_(t), N_(0), K_(K) {
  ENGINE_CHECK(supports(t), std::string("quant: no packed layout for weight type ") + quant_type_name(t));
  for (const Part& p : parts) {
    ENGINE_CHECK(p.rows >= 0, "quant: N must be >= 0, got " + std::to_string(p.rows));
    N_ += p.rows;
  }
  const index_t row_bytes = quant_row_bytes(t, K);  // checks K
  tile_bytes_ = packed_code_bytes(t) + packed_scale_bytes(t);
  const std::size_t n = std::max<std::size_t>(bytes(), 64);
  data_.reset(static_cast<std::uint8_t*>(std::aligned_alloc(64, n)));
  if (!data_) throw std::bad_alloc();
  std::memset(data_.get(), 0, n);  // rows past N: zero codes and scales
  const index_t nb = K / kXBlock;
  index_t row = 0;
  for (const Part& p : parts)
    for (index_t r = 0; r < p.rows; ++r, ++row)
      for (index_t b = 0; b < nb; ++b)
        write_tile(data_.get() + (row / kPackRows * nb + b) * tile_bytes_, t, static_cast<int>(row % kPackRows),
                   block_codes(static_cast<const std::uint8_t*>(p.w) + r * row_bytes, t, b));
}

bool quant_packed_active() { return cpu_isa() == Isa::Avx512 && cpu_has_avx512_vnni(); }

namespace {

void matmul_tiles(const float* x, index_t ldx, index_t M, const QuantPacked& w, float* y, index_t ldy,
                bool accumulate) {
  const index_t nb = w.cols() / kXBlock, G = w.groups();
  XBlock* xq = thread_scratch<XBlock, kScratchQuantX>(static_cast<std::size_t>(M * nb));
  auto* xoff = thread_scratch<std::int32_t, kScratchQuantXScales>(static_cast<std::size_t>(M * nb));
  quant_packed_avx512vnni::quantize_rows(x, ldx, M, w.cols(), packed_code_offset(w.type()), xq, xoff);
  const PackedRows a{xq, xoff, M, &w, y, ldy, accumulate};
  // Tasks of at least ~32 KiB of tiles, a few per thread (as quant_matmul's few-row path).
  const index_t group_bytes = nb * w.tile_bytes();
  const index_t grain = std::max<index_t>(1, (32 << 10) / (group_bytes * std::min<index_t>(M, 4)));
  const index_t tasks = std::min<index_t>((G + grain - 1) / grain, 4 * num_threads());
  if (tasks <= 1) return quant_packed_avx512vnni::matmul_groups(a, 0, G);
  parallel_tasks(tasks, [&](std::int64_t i) {
    quant_packed_avx512vnni::matmul_groups(a, G * i / tasks, G * (i + 1) / tasks);
  });
}

}  // namespace

void quant_matmul_packed(const float* x, index_t ldx, index_t M, const QuantPacked& w, const void* blocks,
                         float* y, index_t ldy, bool accumulate) {
  if (M == 0 || w.rows() == 0) return;
  if (!quant_packed_active()) {
    ENGINE_CHECK(blocks != nullptr, "quant_matmul_packed: this CPU (or ISA cap) needs the weight blocks");
    return quant_matmul(x, ldx, M, w.cols(), blocks, w.type(), w.rows(), y, ldy, accumulate);
  }
  matmul_tiles(x, ldx, M, w, y, ldy, accumulate);
}

}  // namespace engine
