// The decoder's key/value cache: one pool of fixed-size blocks, mapped once (pages the
// sequences never reach cost no memory), and per sequence a table of its blocks. A block
// holds block_tokens positions of every layer: [layer][keys, values][token][kv_width floats],
// so one sequence's keys of one layer within a block are rows kv_width apart.
// Not thread-safe: the decoder serialises its calls.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/common.h"

namespace engine {

class KvCache {
 public:
  KvCache(index_t layers, index_t kv_width, index_t block_tokens, index_t blocks, index_t max_sequences);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  index_t blocks() const { return blocks_; }
  index_t block_tokens() const { return bt_; }
  index_t free_blocks() const { return static_cast<index_t>(free_.size()); }
  index_t max_sequences() const { return static_cast<index_t>(seqs_.size()); }

  bool is_open(index_t seq) const { return seq >= 0 && seq < max_sequences() && seqs_[seq].open; }
  index_t open();                 // -1 when every sequence is open
  void close(index_t seq);        // frees its blocks; a closed id: no-op
  index_t length(index_t seq) const { return seqs_[seq].length; }
  void truncate(index_t seq, index_t length);  // length <= its length; frees blocks past it
  // Blocks a sequence needs to grow to new_length (0 when it has them already).
  index_t blocks_needed(index_t seq, index_t new_length) const;
  void grow(index_t seq, index_t new_length);  // takes the blocks (checked by the caller) and sets the length

  // Keys (values) of block `b` of a sequence for one layer: block_tokens rows of kv_width.
  float* keys(index_t seq, index_t layer, index_t b) const { return base(seq, layer, b); }
  float* values(index_t seq, index_t layer, index_t b) const { return base(seq, layer, b) + bt_ * width_; }

 private:
  struct Seq {
    bool open = false;
    index_t length = 0;
    std::vector<std::int32_t> blocks;
  };
  float* base(index_t seq, index_t layer, index_t b) const {
    return pool_ + static_cast<size_t>(seqs_[seq].blocks[b]) * block_floats_ + layer * 2 * bt_ * width_;
  }

  index_t layers_, width_, bt_, blocks_, block_floats_;
  float* pool_ = nullptr;
  size_t pool_bytes_ = 0;
  std::vector<std::int32_t> free_;  // a stack: the most recently freed (warm) block goes first
  std::vector<Seq> seqs_;
};

}  // namespace engine
