// embedkit_gpu_bench: times the CUDA encoder on pre-tokenized workloads (equal token ids for
// every engine, tokenization excluded) and the library's batch-1 latency (tokenization included).
// BERT-family models run cuda::BertEncoder with mean pooling (fp16 by default); Qwen3 models run
// cuda::Qwen3Encoder with last-token pooling (bf16 by default), as Qwen3-Embedding does.
//
//   embedkit_gpu_bench --model DIR --ids FILE [--dtype fp16|bf16] [--budgets 8192,16384,...] [--reps 5]
//                      [--pipeline 1…4]   batches in flight (default: 2, or EMBEDKIT_PIPELINE; BERT only)
//   embedkit_gpu_bench --model DIR --latency "a sixteen token query ..." [--iters 1000] [--latency-batch N]
//   embedkit_gpu_bench --model DIR --check-ids FILE --out FILE.f32   (pooled rows, for parity checks)
// ids FILE: int32 little-endian: n, then n × (len, len ids). Prints one JSON object per line.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/bert_cuda.h"
#include "cuda/qwen3_cuda.h"
#include "embedkit/embedkit.h"
#include "loader/model_files.h"
#include "loader/safetensors.h"
#include "models/bert.h"
#include "models/qwen3.h"
#include "util/error.h"

using namespace embedkit;
using Clock = std::chrono::steady_clock;

static std::vector<std::vector<int32_t>> read_ids(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  int32_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 4);
  std::vector<std::vector<int32_t>> seqs(size_t(std::max(n, 0)));
  for (auto& s : seqs) {
    int32_t len = 0;
    f.read(reinterpret_cast<char*>(&len), 4);
    s.resize(size_t(len));
    f.read(reinterpret_cast<char*>(s.data()), std::streamsize(4 * size_t(len)));
  }
  if (!f) throw Error(path + ": truncated");
  return seqs;
}

static std::vector<size_t> parse_list(const std::string& s) {
  std::vector<size_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoul(item));
  return out;
}

int main(int argc, char** argv) {
  std::string model, ids_path, dtype = "auto", budgets = "4096,8192,16384,32768,65536", latency_text, check_ids, out_path;
  int reps = 5, iters = 1000, latency_batch = 1, pipeline = cuda::BertEncoder::pipeline_depth();
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--model") model = next();
    else if (a == "--ids") ids_path = next();
    else if (a == "--dtype") dtype = next();
    else if (a == "--budgets") budgets = next();
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--latency") latency_text = next();
    else if (a == "--iters") iters = std::stoi(next());
    else if (a == "--latency-batch") latency_batch = std::stoi(next());
    else if (a == "--pipeline") pipeline = std::stoi(next());
    else if (a == "--check-ids") check_ids = next();
    else if (a == "--out") out_path = next();
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  try {
    if (!latency_text.empty()) {
      EmbedderOptions opt;
      opt.model = model;
      opt.device = "cuda";
      opt.dtype = dtype;
      opt.batch_tokens = 4096;
      auto emb = Embedder::load(opt);
      std::vector<double> ms;
      // --latency-batch N: the text N times per call (a server's small batch; the GPU pass is
      // then as long as for N different texts of that length).
      const std::vector<std::string> batch(size_t(std::max(1, latency_batch)), latency_text);
      for (int i = 0; i < iters + 100; ++i) {
        auto t0 = Clock::now();
        auto e = emb->embed(batch);
        auto t1 = Clock::now();
        if (i >= 100) ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
      std::sort(ms.begin(), ms.end());
      auto tok = emb->tokenize(latency_text, true);
      std::printf("{\"latency_batch\": %zu, \"latency_tokens\": %zu, \"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"iters\": %d}\n",
                  batch.size(), tok.ids.size(), ms[ms.size() / 2], ms[ms.size() * 9 / 10], ms[ms.size() * 99 / 100], iters);
      return 0;
    }
    const std::string dir = resolve_model_dir(model);
    ModelFiles files = read_model_files(dir);
    WeightStore ws = WeightStore::open_dir(files.transformer_dir);
    const bool qwen3 = files.config.is_decoder();
    std::unique_ptr<BertModel> bert_model;
    std::unique_ptr<Qwen3Model> qwen3_model;
    if (qwen3) qwen3_model = std::make_unique<Qwen3Model>(files.config, ws);
    else bert_model = std::make_unique<BertModel>(files.config, ws);
    if (dtype == "auto") dtype = qwen3 ? "bf16" : "fp16";
    const auto prec = dtype == "bf16" ? cuda::Precision::BF16 : cuda::Precision::F16;
    // One encoder interface for both architectures: encode(batch, normalize, out), its pipelined
    // form submit(batch) … collect(ticket, out), and the times of the batch collected last. The
    // Qwen3 encoder has no pipelined form: its submit() only remembers the batch, collect() runs it.
    struct Encoder {
      std::unique_ptr<cuda::BertEncoder> bert;
      std::unique_ptr<cuda::Qwen3Encoder> qwen3;
      PoolingConfig pooling;
      std::vector<const PackedBatch*> qwen3_pending;  // by ticket
      void encode(const PackedBatch& b, float* out) {
        if (bert) bert->encode(b, pooling, {}, true, out);
        else qwen3->encode(b, pooling, {}, true, out);
      }
      uint64_t submit(const PackedBatch& b) {
        if (bert) return bert->submit(b, pooling, {}, true);
        qwen3_pending.push_back(&b);
        return qwen3_pending.size() - 1;
      }
      void collect(uint64_t ticket, float* out) {
        if (bert) bert->collect(ticket, out);
        else qwen3->encode(*qwen3_pending[ticket], pooling, {}, true, out);
      }
      int max_in_flight() const { return bert ? cuda::BertEncoder::kMaxInFlight : 1; }
      int layernorm_pairs() const { return bert ? bert->layernorm_pairs() : -1; }
      const cuda::PhaseTimes& times() const { return bert ? bert->last_times() : qwen3->last_times(); }
    };
    auto make_encoder = [&](size_t budget) {
      auto e = std::make_unique<Encoder>();
      if (qwen3) {
        e->qwen3 = std::make_unique<cuda::Qwen3Encoder>(files.config, qwen3_model->weights(), prec, budget);
        e->pooling.mean = false;
        e->pooling.last_token = true;  // + normalize: Qwen3-Embedding's modules
      } else {
        e->bert = std::make_unique<cuda::BertEncoder>(files.config, bert_model->weights(), prec, budget);
      }
      return e;
    };
    auto seqs = read_ids(check_ids.empty() ? ids_path : check_ids);
    std::vector<size_t> order(seqs.size());
    std::iota(order.begin(), order.end(), size_t(0));
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return seqs[a].size() > seqs[b].size(); });
    size_t total_tokens = 0;
    for (auto& s : seqs) total_tokens += s.size();
    const int64_t pdim = files.config.hidden_size;
    // BERT: mean pooling + normalize, as sentence-transformers' MiniLM/BGE setups (PoolingConfig's default).
    auto make_batches = [&](size_t budget) {
      std::vector<PackedBatch> batches;
      for (size_t start = 0; start < order.size();) {
        PackedBatch b;
        b.cu_seqlens.push_back(0);
        size_t end = start, tok = 0;
        while (end < order.size() && (end == start || tok + seqs[order[end]].size() <= budget)) {
          const auto& s = seqs[order[end]];
          b.ids.insert(b.ids.end(), s.begin(), s.end());
          b.type_ids.insert(b.type_ids.end(), s.size(), 0);
          for (size_t p = 0; p < s.size(); ++p) b.positions.push_back(int32_t(p));
          b.cu_seqlens.push_back(int32_t(b.ids.size()));
          tok += s.size();
          ++end;
        }
        batches.push_back(std::move(b));
        start = end;
      }
      return batches;
    };
    if (!check_ids.empty()) {
      auto enc = make_encoder(8192);
      std::vector<float> out(seqs.size() * size_t(pdim)), rows;
      size_t k = 0;
      for (auto& b : make_batches(8192)) {
        rows.resize(size_t(b.sequences() * pdim));
        enc->encode(b, rows.data());
        for (int64_t s = 0; s < b.sequences(); ++s, ++k)
          std::copy(rows.begin() + s * pdim, rows.begin() + (s + 1) * pdim, out.begin() + int64_t(order[k]) * pdim);
      }
      std::ofstream f(out_path, std::ios::binary);
      f.write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size() * 4));
      return 0;
    }
    // Qwen3: one encoder sized for the largest budget (uploading 0.6B weights per budget is slow;
    // a larger workspace changes nothing else). BERT: one per budget, as before.
    std::unique_ptr<Encoder> shared;
    if (qwen3) {
      size_t max_budget = 0;
      for (size_t b : parse_list(budgets)) max_budget = std::max(max_budget, b);
      size_t longest = 0;
      for (auto& q : seqs) longest = std::max(longest, q.size());
      shared = make_encoder(std::max(max_budget, longest));
    }
    for (size_t budget : parse_list(budgets)) {
      auto batches = make_batches(budget);
      std::unique_ptr<Encoder> own = shared ? nullptr : make_encoder(budget);
      Encoder& enc = shared ? *shared : *own;
      // Pipelined: batch i+1 is submitted (queued on the device behind batch i) before batch i is
      // collected, so the host's staging and copying never leave the GPU idle. With --pipeline 1
      // every batch is submitted and collected in turn (the synchronous encode()). collect() copies
      // the rows out before it returns, so one row buffer serves every batch.
      std::vector<float> rows;
      cuda::PhaseTimes sum;
      const size_t depth = size_t(std::clamp(pipeline, 1, enc.max_in_flight()));
      std::vector<uint64_t> tickets(batches.size());
      auto collect = [&](size_t i) {
        rows.resize(size_t(batches[i].sequences() * pdim));
        enc.collect(tickets[i], rows.data());
        const auto& t = enc.times();  // batch i's own device phases
        sum.h2d += t.h2d, sum.forward += t.forward, sum.pool += t.pool, sum.d2h += t.d2h;
        sum.gemm += t.gemm, sum.attention += t.attention, sum.layernorm += t.layernorm;
        sum.activation += t.activation, sum.embed += t.embed;
      };
      auto run_all = [&] {
        sum = {};
        enc.qwen3_pending.clear();
        size_t collected = 0;
        for (size_t i = 0; i < batches.size(); ++i) {
          tickets[i] = enc.submit(batches[i]);
          if (i + 1 - collected == depth) collect(collected++);  // keep at most depth in flight
        }
        while (collected < batches.size()) collect(collected++);
      };
      run_all();  // warm-up: heuristics, allocations
      std::vector<double> secs;
      for (int r = 0; r < reps; ++r) {
        auto t0 = Clock::now();
        run_all();
        secs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
      }
      std::sort(secs.begin(), secs.end());
      const double s = secs[secs.size() / 2];
      std::printf("{\"budget\": %zu, \"pipeline\": %zu, \"ln_pairs\": %d, \"batches\": %zu, \"tokens\": %zu, "
                  "\"seconds\": %.6f, \"tokens_per_s\": %.1f, \"ms\": {\"h2d\": %.3f, \"forward\": %.3f, \"pool\": %.3f, "
                  "\"d2h\": %.3f, \"gemm\": %.3f, \"attention\": %.3f, \"layernorm\": %.3f, \"activation\": %.3f, \"embed\": %.3f}}\n",
                  budget, depth, enc.layernorm_pairs(), batches.size(), total_tokens, s, double(total_tokens) / s, sum.h2d,
                  sum.forward, sum.pool, sum.d2h, sum.gemm, sum.attention, sum.layernorm, sum.activation, sum.embed);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "embedkit_gpu_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
