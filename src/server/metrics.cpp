#include "server/metrics.h"

#include <charconv>
#include <cmath>

namespace embedkit::server {

namespace {

std::vector<double> exponential(double start, double factor, int n) {
  std::vector<double> b;
  for (int i = 0; i < n; ++i, start *= factor) b.push_back(start);
  return b;
}

void append_number(std::string& s, double v) {
  if (std::isinf(v)) {
    s += v > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

void counter(std::string& out, const char* name, const char* help, const std::string& labels, uint64_t v,
             bool header) {
  if (header) out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
  out += name;
  out += labels;
  out += ' ';
  out += std::to_string(v);
  out += '\n';
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double cur = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  uint64_t cum = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i].load(std::memory_order_relaxed);
    out += name + "_bucket{le=\"";
    append_number(out, i < bounds_.size() ? bounds_[i] : INFINITY);
    out += "\"} " + std::to_string(cum) + "\n";
  }
  out += name + "_sum ";
  append_number(out, sum_.load(std::memory_order_relaxed));
  out += "\n" + name + "_count " + std::to_string(count_.load(std::memory_order_relaxed)) + "\n";
}

const char* error_type_name(Metrics::Err e) {
  static const char* names[] = {"validation", "tokenizer", "overloaded", "backend", "unhealthy", "empty"};
  return names[e];
}

Metrics::Metrics()
    : request_duration(exponential(1e-4, 2, 20)),
      tokenization_duration(exponential(1e-6, 2, 24)),
      queue_duration(exponential(1e-6, 2, 24)),
      inference_duration(exponential(1e-5, 2, 22)),
      input_length(exponential(2, 2, 14)),
      batch_size(exponential(1, 2, 14)),
      batch_tokens(exponential(2, 2, 18)),
      batch_inference_duration(exponential(1e-5, 2, 22)) {}

std::string Metrics::render() const {
  std::string out;
  out.reserve(16384);
  const char* methods[] = {"single", "batch"};
  for (int m = 0; m < 2; ++m)
    counter(out, "te_request_count", "Requests received", std::string("{method=\"") + methods[m] + "\"}",
            request_count[m].load(), m == 0);
  for (int m = 0; m < 2; ++m)
    counter(out, "te_request_success", "Requests answered successfully", std::string("{method=\"") + methods[m] + "\"}",
            request_success[m].load(), m == 0);
  for (int e = 0; e < kErrCount; ++e)
    counter(out, "te_request_failure", "Requests failed, by error type",
            std::string("{err=\"") + error_type_name(Err(e)) + "\"}", request_failure[e].load(), e == 0);
  counter(out, "te_embed_count", "Inputs embedded", "", embed_count.load(), true);
  counter(out, "te_batch_inference_count", "Model batches started", "", batch_inference_count.load(), true);
  counter(out, "te_batch_inference_success", "Model batches finished", "", batch_inference_success.load(), true);
  out += "# HELP te_queue_size Inputs queued or running\n# TYPE te_queue_size gauge\nte_queue_size " +
         std::to_string(queue_size.load()) + "\n";
  request_duration.render(out, "te_request_duration", "Request duration (seconds)");
  tokenization_duration.render(out, "te_request_tokenization_duration", "Tokenization duration per request (seconds)");
  queue_duration.render(out, "te_request_queue_duration", "Time a request's first input waited in the queue (seconds)");
  inference_duration.render(out, "te_request_inference_duration", "Model time spent on a request's batches (seconds)");
  input_length.render(out, "te_request_input_length", "Tokens per input");
  batch_size.render(out, "te_batch_next_size", "Inputs per model batch");
  batch_tokens.render(out, "te_batch_next_tokens", "Tokens per model batch");
  batch_inference_duration.render(out, "te_batch_inference_duration", "Model time per batch (seconds)");
  return out;
}

}  // namespace embedkit::server
