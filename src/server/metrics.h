// Prometheus metrics with text-embeddings-inference's names (te_*), so dashboards and alerts
// written for TEI work unchanged. Counters and histograms are lock-free (relaxed atomics);
// render() writes the text exposition format (version 0.0.4).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace embedkit::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  std::vector<std::atomic<uint64_t>> counts_;  // per bucket (non-cumulative), last = +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0};
};

struct Metrics {
  // Requests, labelled method="single" (one input) | "batch".
  std::atomic<uint64_t> request_count[2] = {}, request_success[2] = {};
  // Failures by TEI's error types.
  enum Err { Validation, Tokenizer, Overloaded, Backend, Unhealthy, Empty, kErrCount };
  std::atomic<uint64_t> request_failure[kErrCount] = {};
  std::atomic<uint64_t> embed_count{0};  // inputs embedded
  std::atomic<int64_t> queue_size{0};    // inputs queued or running

  Histogram request_duration, tokenization_duration, queue_duration, inference_duration;
  Histogram input_length;                    // tokens per input
  Histogram batch_size, batch_tokens;        // per model batch
  Histogram batch_inference_duration;
  std::atomic<uint64_t> batch_inference_count{0}, batch_inference_success{0};

  Metrics();
  std::string render() const;
};

const char* error_type_name(Metrics::Err e);  // "validation", ... (TEI's err label values)

}  // namespace embedkit::server
