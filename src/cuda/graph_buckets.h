// Shape buckets for CUDA graph replay (host code, shared by the BERT and Qwen3 encoders).
// Small batches are launch-bound, so a whole pass runs as a CUDA graph keyed by the batch's shape;
// but a server's small batches rarely repeat a shape exactly. pad_to_bucket() pads a packed batch
// up to a bucket: tokens to a multiple of Bucket::tokens, sequences to a multiple of Bucket::seqs
// (at least one dummy sequence of pad tokens, positions from 0, the pad spread evenly so that no
// dummy is longer than max_dummy_len and the attention launch shape never changes); the caller
// pads its attention tiles to a multiple of Bucket::tiles with tiles that start past their
// sequence's end (no work, no writes). Each dummy row is computed and dropped; real rows are
// untouched, since attention, pooling and the norms are per sequence or per token.
// Two tiers: up to 2,048 tokens fine buckets (under 80 dummy tokens a batch); up to 16,384 coarse
// ones (at most 583 dummy tokens, ~290 on average: 14% of a batch just over 2,048 tokens, 2% of
// one of 16,384; small batches are bound by host time, not by the device). Measured on the H100
// (MiniLM server, docs/benchmarks.md): the first tier took single-text requests at c64 from 25.4k
// to 48.3k/s (the executor's host time per batch 0.85 → 0.27 ms), the second the host time per
// batch of a loaded server (a few hundred texts) 0.43 → 0.22 ms; a lone 15-token query now pads to
// 16 sequences and 64 tokens (batch-1 p50 0.175 → 0.196 ms).
#pragma once

#include <cstdint>
#include <vector>

#include "models/model.h"

namespace embedkit::cuda {

struct Bucket {
  int max_tokens, tokens, seqs, tiles;
};
inline constexpr Bucket kGraphBuckets[2] = {{2048, 64, 16, 32}, {16384, 512, 64, 128}};
inline constexpr int kGraphBucketMaxTokens = 16384;

// Pads b (and its per-sequence pooling skips, when not empty) into padded / padded_skip; returns
// the tile multiple of the bucket used, or 0 when b is too big for any bucket (nothing written).
inline int pad_to_bucket(const PackedBatch& b, const std::vector<int32_t>& skip, int max_dummy_len,
                         PackedBatch& padded, std::vector<int32_t>& padded_skip) {
  const int Tn = int(b.tokens()), S = int(b.sequences());
  if (Tn > kGraphBucketMaxTokens) return 0;
  auto up = [](int x, int m) { return (x + m - 1) / m * m; };
  int Sb = 0, dummies = 0, Tb = 0, tiles = 0;
  for (const Bucket& k : kGraphBuckets) {  // the finest tier the padded batch fits
    Sb = up(S + 1, k.seqs), dummies = Sb - S, Tb = up(Tn + dummies, k.tokens);
    while ((Tb - Tn + dummies - 1) / dummies > max_dummy_len)
      Sb += k.seqs, dummies = Sb - S, Tb = up(Tn + dummies, k.tokens);
    if (Tb <= k.max_tokens) {
      tiles = k.tiles;
      break;
    }
  }
  if (!tiles) return 0;
  padded.ids.assign(b.ids.begin(), b.ids.end());
  padded.type_ids.assign(b.type_ids.begin(), b.type_ids.end());
  padded.positions.assign(b.positions.begin(), b.positions.end());
  padded.cu_seqlens.assign(b.cu_seqlens.begin(), b.cu_seqlens.end());
  const int pad = Tb - Tn;  // spread evenly: each dummy 1…max_dummy_len tokens
  for (int k = 0; k < dummies; ++k) {
    const int len = pad / dummies + (k < pad % dummies ? 1 : 0);
    for (int p = 0; p < len; ++p) {
      padded.ids.push_back(0);
      if (!b.type_ids.empty()) padded.type_ids.push_back(0);
      padded.positions.push_back(p);
    }
    padded.cu_seqlens.push_back(int32_t(padded.ids.size()));
  }
  if (!skip.empty()) {
    padded_skip.assign(skip.begin(), skip.end());
    padded_skip.resize(size_t(Sb), 0);
  }
  return tiles;
}

// Pads a bucketed batch's attention tiles (sequence, first query row) to a multiple of `multiple`
// (pad_to_bucket's result) with tiles that start past the end of the last sequence, a dummy:
// they load nothing and write nothing.
template <class Tile>
void pad_tiles(std::vector<Tile>& tiles, int sequences, int multiple) {
  while (tiles.size() % size_t(multiple)) tiles.push_back({sequences - 1, 1 << 20});
}

}  // namespace embedkit::cuda
