// The block pool of the decoder's key/value cache (lm_kv_cache.h).
#include "cpu/lm_kv_cache.h"

#include <sys/mman.h>

#include <string>

namespace engine {

KvCache::KvCache(index_t layers, index_t kv_width, index_t block_tokens, index_t blocks, index_t max_sequences)
    : layers_(layers), width_(kv_width), bt_(block_tokens), blocks_(blocks),
      block_floats_(layers * 2 * block_tokens * kv_width) {
  ENGINE_CHECK(layers > 0 && kv_width > 0 && block_tokens > 0 && blocks > 0 && max_sequences > 0,
               "kv cache: layers, width, block tokens, blocks and sequences must be positive");
  ENGINE_CHECK(blocks < (index_t(1) << 31), "kv cache: too many blocks (" + std::to_string(blocks) + ")");
  pool_bytes_ = static_cast<size_t>(blocks) * static_cast<size_t>(block_floats_) * sizeof(float);
  // Anonymous, not reserved: the pool costs address space only until a block is written.
  void* p = mmap(nullptr, pool_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ENGINE_CHECK(p != MAP_FAILED, "kv cache: could not map " + std::to_string(pool_bytes_) + " bytes for " +
                                    std::to_string(blocks) + " blocks");
  pool_ = static_cast<float*>(p);
  free_.reserve(blocks);
  for (index_t b = blocks - 1; b >= 0; --b) free_.push_back(static_cast<std::int32_t>(b));
  seqs_.resize(max_sequences);
}

KvCache::~KvCache() {
  if (pool_) munmap(pool_, pool_bytes_);
}

index_t KvCache::open() {
  for (index_t s = 0; s < max_sequences(); ++s)
    if (!seqs_[s].open) {
      seqs_[s].open = true;
      seqs_[s].length = 0;
      return s;
    }
  return -1;
}

void KvCache::close(index_t seq) {
  if (!is_open(seq)) return;
  truncate(seq, 0);
  seqs_[seq].open = false;
}

void KvCache::truncate(index_t seq, index_t length) {
  Seq& s = seqs_[seq];
  const index_t keep = (length + bt_ - 1) / bt_;
  while (static_cast<index_t>(s.blocks.size()) > keep) {
    free_.push_back(s.blocks.back());
    s.blocks.pop_back();
  }
  s.length = length;
}

index_t KvCache::blocks_needed(index_t seq, index_t new_length) const {
  const index_t want = (new_length + bt_ - 1) / bt_, have = static_cast<index_t>(seqs_[seq].blocks.size());
  return want > have ? want - have : 0;
}

void KvCache::grow(index_t seq, index_t new_length) {
  Seq& s = seqs_[seq];
  for (index_t n = blocks_needed(seq, new_length); n > 0; --n) {
    s.blocks.push_back(free_.back());
    free_.pop_back();
  }
  s.length = new_length;
}

}  // namespace engine
