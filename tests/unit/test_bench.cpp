// EmbedBench pieces that need no model: distribution summaries (values worked out by hand with
// numpy's linear-interpolation percentile definition), the phase split of one embed() call,
// the profiling hooks' start/stop/reset semantics, and the report value tree.
#include <gtest/gtest.h>

#include <cmath>

#include "bench/bench.h"
#include "bench/http_client.h"
#include "bench/value.h"
#include "embedkit/profiling.h"
#include "util/error.h"

using namespace embedkit;

TEST(BenchStats, PercentilesInterpolateLinearly) {
  // numpy.percentile([1, 2, 3, 4], q): rank = q/100 * 3.
  Distribution d = summarize({4, 1, 3, 2});
  EXPECT_EQ(d.count, 4u);
  EXPECT_DOUBLE_EQ(d.p50, 2.5);
  EXPECT_DOUBLE_EQ(d.p95, 3.85);   // rank 2.85: 3 + 0.85
  EXPECT_DOUBLE_EQ(d.p99, 3.97);   // rank 2.97
  EXPECT_DOUBLE_EQ(d.mean, 2.5);
  EXPECT_DOUBLE_EQ(d.stddev, std::sqrt(1.25));  // population: mean of (1.5², .5², .5², 1.5²)
  EXPECT_DOUBLE_EQ(d.min, 1);
  EXPECT_DOUBLE_EQ(d.max, 4);
  Distribution one = summarize({7});
  EXPECT_DOUBLE_EQ(one.p99, 7);
  EXPECT_DOUBLE_EQ(one.stddev, 0);
  EXPECT_EQ(summarize({}).count, 0u);
}

TEST(BenchStats, CpuPhasesSplitTheCall) {
  EmbedTimings t;
  t.total_s = 0.010;
  t.tokenize_s = t.tokenize_first_s = 0.001;
  t.pack_s = 0.0005;
  t.cpu_forward_s = 0.007;
  t.cpu_pool_s = 0.0004;
  t.postprocess_s = 0.0006;
  t.tokens = 30;
  t.batches = 1;
  CallPhases p = phases_of(t, 2);
  EXPECT_FALSE(p.device_timed);
  EXPECT_DOUBLE_EQ(p.tokenize, 1.0);
  EXPECT_DOUBLE_EQ(p.queue, 0.5);
  EXPECT_DOUBLE_EQ(p.inference, 7.0);
  EXPECT_NEAR(p.pool, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(p.h2d + p.d2h, 0.0);
  EXPECT_NEAR(p.other, 0.5, 1e-12);
  EXPECT_DOUBLE_EQ(p.total, 10.0);
}

TEST(BenchStats, GpuPhasesComeFromDeviceEvents) {
  EmbedTimings t;
  t.total_s = 0.004;
  t.tokenize_first_s = 0.0002;
  t.tokenize_wait_s = 0.0001;  // a later chunk the model waited for
  t.tokenize_s = 0.0009;       // includes overlapped tokenization: not on the critical path
  t.device_h2d_ms = 0.1;
  t.device_forward_ms = 3.0;
  t.device_pool_ms = 0.05;
  t.device_d2h_ms = 0.05;
  t.postprocess_s = 0.0001;
  t.device_launch_s = 0.0002;  // staging + submit + synchronize
  CallPhases p = phases_of(t, 8);
  EXPECT_TRUE(p.device_timed);
  EXPECT_NEAR(p.tokenize, 0.3, 1e-12);
  EXPECT_DOUBLE_EQ(p.h2d, 0.1);
  EXPECT_DOUBLE_EQ(p.inference, 3.0);
  EXPECT_NEAR(p.pool, 0.15, 1e-12);
  EXPECT_NEAR(p.launch, 0.2, 1e-12);
  EXPECT_NEAR(p.other, 4.0 - 0.3 - 0.1 - 3.0 - 0.15 - 0.05 - 0.2, 1e-12);
}

TEST(BenchProfiling, StartStopReset) {
  EmbedTimings t;
  t.total_s = 0.002;
  t.tokens = 5;
  t.batches = 1;
  reset_metrics();
  detail::record_embed_call(t, 1);  // not profiling: dropped
  start_profiling();
  EXPECT_TRUE(profiling_active());
  detail::record_embed_call(t, 1);
  detail::record_embed_call(t, 3);
  Profile snap = profile_snapshot();
  EXPECT_EQ(snap.calls.size(), 2u);
  Profile p = stop_profiling();
  EXPECT_FALSE(profiling_active());
  detail::record_embed_call(t, 1);  // stopped: dropped
  EXPECT_EQ(p.calls.size(), 2u);
  EXPECT_EQ(p.texts, 4u);
  EXPECT_EQ(p.tokens, 10u);
  EXPECT_DOUBLE_EQ(p.phase("total").p50, 2.0);
  EXPECT_THROW(p.phase("bogus"), Error);
  EXPECT_EQ(profile_snapshot().calls.size(), 2u);
  reset_metrics();
  EXPECT_EQ(profile_snapshot().calls.size(), 0u);
}

TEST(BenchValue, DumpsOrderedJson) {
  bench::Value v = bench::Value::object();
  v["b"] = 1.5;
  v["a"] = "x\"y\n";
  v["list"] = bench::Value::array_of(std::vector<double>{1, 2.25});
  v["nested"]["ok"] = true;
  v["nan"] = std::nan("");
  EXPECT_EQ(v.dump(0), "{\"b\":1.5,\"a\":\"x\\\"y\\n\",\"list\":[1,2.25],\"nested\":{\"ok\":true},\"nan\":null}");
  EXPECT_DOUBLE_EQ(v.num("b"), 1.5);
  EXPECT_EQ(v.num("missing", -1), -1);
  EXPECT_TRUE(v.at("nested").flag("ok"));
}

// Remote mode's answer check (simdjson on-demand: counts values without converting them). It must
// still catch every shape error a broken server could send.
TEST(BenchRemote, CheckResponseCatchesWrongShapes) {
  using bench::HttpResponse;
  long long tokens = 0;
  auto check = [&](const std::string& api, int status, const std::string& body, size_t n) {
    HttpResponse r;
    r.status = status;
    r.body = body;
    return bench::check_response(api, r, n, tokens);
  };
  EXPECT_EQ(check("tei", 200, "[[0.5,-1e-3,2],[1,2,3]]", 2), "");
  EXPECT_EQ(tokens, -1);
  EXPECT_NE(check("tei", 200, "[[0.5,-1e-3,2],[1,2,3]]", 3).find("2 embeddings for 3 inputs"), std::string::npos);
  EXPECT_NE(check("tei", 200, "[[1,2,3],[1,2]]", 2).find("row 1: embedding of 2 values"), std::string::npos);
  EXPECT_NE(check("tei", 200, "[[],[]]", 2).find("row 0: embedding of 0 values"), std::string::npos);
  EXPECT_NE(check("tei", 200, "[1,2]", 2).find("row 0: no embedding array"), std::string::npos);
  EXPECT_NE(check("tei", 200, "{\"a\":1}", 1).find("expected a JSON array"), std::string::npos);
  EXPECT_NE(check("tei", 200, "[[1,2", 1), "");  // truncated
  EXPECT_NE(check("tei", 200, "not json", 1), "");
  EXPECT_NE(check("tei", 429, "{\"error\":\"busy\"}", 1).find("HTTP 429"), std::string::npos);
  const std::string openai =
      "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.1,0.2]},"
      "{\"object\":\"embedding\",\"index\":1,\"embedding\":[0.3,0.4]}],\"model\":\"m\","
      "\"usage\":{\"prompt_tokens\":7,\"total_tokens\":7}}";
  EXPECT_EQ(check("openai", 200, openai, 2), "");
  EXPECT_EQ(tokens, 7);
  EXPECT_NE(check("openai", 200, "{\"data\":[{\"embedding\":[1,2]},{\"embedding\":[1]}]}", 2).find("row 1"),
            std::string::npos);
  EXPECT_NE(check("openai", 200, "{\"object\":\"list\"}", 1).find("no \"data\" array"), std::string::npos);
}
