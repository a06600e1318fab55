// The batcher's batch-size rule (batch_token_cap): the budget, or a share of what waits.
#include <gtest/gtest.h>

#include "scheduler/batcher.h"

namespace embedkit {
namespace {

TEST(BatchTokenCap, WithoutSplitTheBudget) {
  BatcherOptions o;
  o.max_batch_tokens = 65536;
  EXPECT_EQ(batch_token_cap(o, 0), 65536u);
  EXPECT_EQ(batch_token_cap(o, 1000), 65536u);
  EXPECT_EQ(batch_token_cap(o, 10'000'000), 65536u);
}

TEST(BatchTokenCap, SplitTakesAShareBetweenTheFloorAndTheBudget) {
  BatcherOptions o;
  o.max_batch_tokens = 65536;
  o.split_ways = 4;
  o.split_min_tokens = 8192;
  EXPECT_EQ(batch_token_cap(o, 0), 8192u);        // little waiting: the floor
  EXPECT_EQ(batch_token_cap(o, 20000), 8192u);    // a quarter is below the floor
  EXPECT_EQ(batch_token_cap(o, 40960), 10240u);   // 64 × 32 short texts: a quarter
  EXPECT_EQ(batch_token_cap(o, 400000), 65536u);  // a deep queue: whole budgets
}

TEST(BatchTokenCap, NeverAboveTheBudget) {
  BatcherOptions o;
  o.max_batch_tokens = 4096;  // a CPU engine's small budget
  o.split_ways = 4;
  o.split_min_tokens = 8192;
  EXPECT_EQ(batch_token_cap(o, 0), 4096u);
  EXPECT_EQ(batch_token_cap(o, 1'000'000), 4096u);
}

}  // namespace
}  // namespace embedkit
