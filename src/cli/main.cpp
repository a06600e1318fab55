// `embedkit` command line: embed, tokenize, similarity, info, serve (serve_command.cpp), bench (bench_command.cpp).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <simdjson.h>

#include "cli/bench_command.h"
#include "cli/serve_command.h"
#include "cuda/bert_cuda.h"
#include "embedkit/embedkit.h"
#include "ops/blas_kernels.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/json_writer.h"
#include "util/utf8.h"

using namespace embedkit;

namespace {

struct InputOptions {
  std::vector<std::string> texts;
  std::string input;
  bool jsonl = false;
};

void add_input_options(CLI::App* cmd, InputOptions& in) {
  cmd->add_option("text", in.texts, "Texts to process (one per argument)");
  cmd->add_option("-i,--input", in.input, "Read texts from FILE ('-' = stdin), one per line");
  cmd->add_flag("--jsonl", in.jsonl, "Input lines are JSON objects with a \"text\" field");
}

// Reads the texts to work on; every problem names the file and line.
std::vector<std::string> read_inputs(const InputOptions& in) {
  std::vector<std::string> out = in.texts;
  if (!in.input.empty()) {
    std::ifstream file;
    std::istream* is = &std::cin;
    const std::string name = in.input == "-" ? "<stdin>" : in.input;
    if (in.input != "-") {
      file.open(in.input, std::ios::binary);
      if (!file) throw Error(in.input + ": cannot open input file");
      is = &file;
    }
    std::string line;
    size_t line_no = 0;
    simdjson::dom::parser parser;
    while (std::getline(*is, line)) {
      ++line_no;
      const std::string where = name + ":" + std::to_string(line_no);
      size_t bad = utf8::first_invalid(line);
      if (bad != std::string::npos)
        throw Error(where + ": invalid UTF-8 at byte " + std::to_string(bad + 1) + " of the line");
      if (in.jsonl) {
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
        auto doc = parser.parse(simdjson::padded_string(line));
        if (doc.error()) throw Error(where + ": not valid JSON (" + simdjson::error_message(doc.error()) + ")");
        if (!doc.value_unsafe().is_object()) throw Error(where + ": expected a JSON object with a \"text\" field");
        auto text = doc.value_unsafe()["text"];
        if (text.error()) throw Error(where + ": JSON object has no \"text\" field");
        if (!text.value_unsafe().is_string()) throw Error(where + ": \"text\" must be a string");
        out.emplace_back(text.value_unsafe().get_string().value_unsafe());
      } else {
        out.push_back(line);
      }
    }
  }
  for (size_t i = 0; i < in.texts.size(); ++i) {
    size_t bad = utf8::first_invalid(in.texts[i]);
    if (bad != std::string::npos)
      throw Error("argument " + std::to_string(i + 1) + ": invalid UTF-8 at byte offset " + std::to_string(bad));
  }
  return out;
}

// Progress on stderr when it is a terminal and the work is long.
struct Progress {
  bool on;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  explicit Progress(size_t total) : on(isatty(2) && total >= 256) {}
  void operator()(size_t done, size_t total) const {
    if (!on) return;
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    int width = 30, fill = int(width * done / total);
    std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu texts  %.0f texts/s", fill, "##############################",
                 width - fill, "", done, total, s > 0 ? double(done) / s : 0.0);
    if (done == total) std::fprintf(stderr, "\n");
  }
};

FILE* open_output(const std::string& path, bool binary) {
  if (path.empty() || path == "-") return stdout;
  FILE* f = std::fopen(path.c_str(), binary ? "wb" : "w");
  if (!f) throw Error(path + ": cannot open output file for writing");
  return f;
}

void write_npy(FILE* f, const Embeddings& e) {
  // NPY v1.0: magic, version, header length, dict padded with spaces to a multiple of 64.
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(e.count) + ", " +
                       std::to_string(e.dim) + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  std::fwrite(magic, 1, 8, f);
  uint16_t len = uint16_t(header.size());
  unsigned char lb[2] = {uint8_t(len & 0xFF), uint8_t(len >> 8)};
  std::fwrite(lb, 1, 2, f);
  std::fwrite(header.data(), 1, header.size(), f);
  std::fwrite(e.data.data(), sizeof(float), e.data.size(), f);
}

// Reads a float32 C-order 2-D .npy (as `embedkit embed -f npy` writes); errors name the file.
std::vector<float> read_npy(const std::string& path, size_t& rows, size_t& cols) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open");
  char magic[8];
  f.read(magic, 8);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path + ": not a .npy file (bad magic)");
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (uint32_t(b[3]) << 24);
  }
  if (!f || hlen > (1u << 20)) throw Error(path + ": truncated .npy header");
  std::string header(hlen, '\0');
  f.read(header.data(), hlen);
  if (header.find("'<f4'") == std::string::npos) throw Error(path + ": expected dtype '<f4' (float32)");
  if (header.find("'fortran_order': False") == std::string::npos) throw Error(path + ": expected C order");
  const size_t lp = header.find("'shape': ("), rp = header.find(')', lp);
  if (lp == std::string::npos || rp == std::string::npos) throw Error(path + ": .npy header has no shape");
  if (std::sscanf(header.c_str() + lp + 10, "%zu, %zu", &rows, &cols) != 2)
    throw Error(path + ": expected a 2-D array (rows, dim)");
  std::vector<float> data(rows * cols);
  f.read(reinterpret_cast<char*>(data.data()), std::streamsize(data.size() * sizeof(float)));
  if (!f) throw Error(path + ": data shorter than its shape (" + std::to_string(rows) + " x " + std::to_string(cols) + ")");
  return data;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

// True when the command line asks for `--device cuda`, or `--device auto` on a machine with an
// NVIDIA driver (its control node exists): decided before anything loads (see main()).
static bool asks_for_gpu(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i], v;
    if (a == "--device" && i + 1 < argc) v = argv[i + 1];
    else if (a.starts_with("--device=")) v = a.substr(9);
    else continue;
    if (v == "cuda" || v.starts_with("cuda:")) return true;
    if (v == "auto") return access("/dev/nvidiactl", F_OK) == 0;
  }
  return false;
}

int main(int argc, char** argv) {
  // Both fixes below are environment variables that a library reads once, when it loads: set them
  // and re-execute when the user has not chosen.
  bool reexec = false;
  // On the GPU, OpenMP's workers (tokenization's team) would spin on every core after each
  // parallel region (libgomp's default) while the batcher's threads feed the device: passive
  // waits there. CPU inference, `serve` included, keeps the spinning default: a pass is ~90
  // back-to-back parallel regions, and a worker put to sleep after each one is woken late —
  // passive waits cost the CPU server 4–8% at 64 clients (docs/benchmarks.md, eleventh session).
  if (argc > 1 && !std::getenv("OMP_WAIT_POLICY") && asks_for_gpu(argc, argv)) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    reexec = true;
  }
  // OpenBLAS fell back to generic kernels on a CPU it does not know (ops/blas_kernels.h): ~4x slower.
  if (const std::string core = openblas_core_override(); !core.empty()) {
    setenv("OPENBLAS_CORETYPE", core.c_str(), 1);
    reexec = true;
  }
  if (reexec) execv("/proc/self/exe", argv);  // on failure, carry on with the defaults
  CLI::App app{"EmbedKit: text embeddings with sentence-transformers' results, fast on CPU and GPU"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "embedkit 0.1.0");

  EmbedderOptions opt;
  auto add_model_options = [&](CLI::App* cmd) {
    cmd->add_option("-m,--model", opt.model,
                    "Model directory, or hub id resolved offline from EmbedKit's store and the HF cache")
        ->capture_default_str();
  };

  // embed
  auto* embed = app.add_subcommand("embed", "Embed texts (arguments, a file or stdin)");
  InputOptions embed_in;
  std::string format = "jsonl", output;
  std::string prompt, prompt_name;
  bool no_normalize = false;
  add_model_options(embed);
  add_input_options(embed, embed_in);
  embed->add_option("--device", opt.device, "cpu | cuda | auto (cuda when a GPU is usable)")->capture_default_str();
  embed->add_option("--dtype", opt.dtype, "auto (GPU: fp16, bf16 for Qwen3; CPU: fp32) | fp16 | bf16 | fp32")->capture_default_str();
  embed->add_option("-t,--threads", opt.threads, "CPU threads (0 = all cores)")->capture_default_str();
  embed->add_option("--batch-tokens", opt.batch_tokens, "Token budget of one forward pass (0 = auto: CPU 8192, GPU 65536)")
      ->capture_default_str();
  embed->add_option("-f,--format", format, "Output format: jsonl ({\"index\", \"embedding\"} per line) or npy (float32 n x dim)")
      ->check(CLI::IsMember({"jsonl", "npy"}))
      ->capture_default_str();
  embed->add_option("-o,--output", output, "Output file (default stdout)");
  embed->add_option("--prompt", prompt, "Text prepended to every input");
  embed->add_option("--prompt-name", prompt_name, "Prompt from the model's config_sentence_transformers.json");
  auto* dimensions = embed->add_option("--dimensions", opt.dimensions, "Keep the first N dimensions (Matryoshka), then re-normalize");
  embed->add_flag("--no-normalize", no_normalize, "Skip the model's Normalize module");
  bool timings = false;
  embed->add_flag("--timings", timings, "Print where the time went (tokenize, device copies, compute, output) to stderr");

  // tokenize
  auto* tok = app.add_subcommand("tokenize", "Print token ids, tokens and byte offsets as JSON lines");
  InputOptions tok_in;
  bool raw = false, no_truncate = false;
  add_model_options(tok);
  add_input_options(tok, tok_in);
  tok->add_flag("--raw", raw, "tokenizer.json alone: no strip, no prompt, no truncation (what HF tokenizers' encode gives)");
  tok->add_flag("--no-truncate", no_truncate, "Do not truncate at the model's max_seq_length");
  std::string tokenizer_file;
  tok->add_option("--tokenizer", tokenizer_file, "A tokenizer.json to use alone (implies --raw; no model needed)");

  // similarity
  auto* sim = app.add_subcommand("similarity", "Cosine similarity matrix between two sets of texts (or .npy embeddings)");
  std::string sim_a, sim_b, sim_format = "jsonl", sim_output;
  add_model_options(sim);
  sim->add_option("-a,--a", sim_a, "Rows: a text file (one text per line) or a float32 .npy of embeddings")->required();
  sim->add_option("-b,--b", sim_b, "Columns: a text file or a .npy, as for -a")->required();
  sim->add_option("--device", opt.device, "cpu | cuda | auto")->capture_default_str();
  sim->add_option("-f,--format", sim_format, "jsonl ({\"index\", \"scores\"} per row of -a) or npy (float32 n x m)")
      ->check(CLI::IsMember({"jsonl", "npy"}))
      ->capture_default_str();
  sim->add_option("-o,--output", sim_output, "Output file (default stdout)");

  // serve
  std::function<int()> run_serve;
  add_serve_command(app, run_serve);

  // info
  auto* info = app.add_subcommand("info", "Describe a model: architecture, dimensions, pooling, prompts");
  add_model_options(info);

  auto* bench = embedkit::cli::add_bench_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    if (run_serve) return run_serve();
    if (*embed) {
      if (!prompt.empty()) opt.prompt = prompt;
      if (!prompt_name.empty()) opt.prompt_name = prompt_name;
      if (no_normalize) opt.normalize = false;
      // 0 means "all" in EmbedderOptions; given explicitly it is a mistake.
      if (dimensions->count() > 0 && opt.dimensions <= 0)
        throw Error("--dimensions " + std::to_string(opt.dimensions) +
                    ": must be at least 1 (leave the option out to keep all of the model's dimensions)");
      auto texts = read_inputs(embed_in);
      if (texts.empty()) throw Error("no input texts: give TEXT arguments or --input FILE");
      auto emb = Embedder::load(opt);
      Progress progress(texts.size());
      const auto t_embed = std::chrono::steady_clock::now();
      Embeddings e = emb->embed(texts, progress);
      const auto t_out = std::chrono::steady_clock::now();
      FILE* f = open_output(output, format == "npy");
      if (format == "npy") {
        write_npy(f, e);
      } else {
        // Rows are formatted in parallel (shortest round-trip floats), written in order.
        const size_t block = 4096;
        std::vector<std::string> lines(std::min(block, e.count));
        for (size_t b0 = 0; b0 < e.count; b0 += block) {
          const size_t b1 = std::min(e.count, b0 + block);
#pragma omp parallel for schedule(dynamic, 64)
          for (size_t i = b0; i < b1; ++i) {
            std::string& line = lines[i - b0];
            line.clear();
            line += "{\"index\": " + std::to_string(i) + ", \"embedding\": [";
            const float* r = e.row(i);
            for (size_t k = 0; k < e.dim; ++k) {
              if (k) line += ", ";
              json::append_float(line, r[k]);
            }
            line += "]}\n";
          }
          for (size_t i = b0; i < b1; ++i) std::fwrite(lines[i - b0].data(), 1, lines[i - b0].size(), f);
        }
      }
      if (f != stdout) std::fclose(f);
      else std::fflush(stdout);
      if (timings) {
        const EmbedTimings t = emb->last_timings();
        const double out_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_out).count();
        const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_embed).count();
        std::fprintf(stderr,
                     "timings: %zu texts, %zu tokens, %zu batches on %s\n"
                     "  embed total     %8.3f s  (%.0f texts/s, %.0f tokens/s)\n"
                     "  tokenize        %8.3f s  (CPU, overlapped; the model waited %.3f s for it)\n"
                     "  encode          %8.3f s  (host wall of forward+pool calls)\n"
                     "    device H2D    %8.3f ms\n    device model  %8.3f ms\n    device pool   %8.3f ms\n"
                     "    device D2H    %8.3f ms\n"
                     "  post-process    %8.3f s\n  output          %8.3f s  (%s)\n  total           %8.3f s\n",
                     e.count, t.tokens, t.batches, emb->info().device.c_str(), t.total_s, double(e.count) / t.total_s,
                     double(t.tokens) / t.total_s, t.tokenize_s, t.tokenize_wait_s, t.encode_s, t.device_h2d_ms,
                     t.device_forward_ms, t.device_pool_ms, t.device_d2h_ms, t.postprocess_s, out_s, format.c_str(),
                     wall);
      }
    } else if (*tok) {
      auto texts = read_inputs(tok_in);
      if (texts.empty()) throw Error("no input texts: give TEXT arguments or --input FILE");
      std::unique_ptr<Tokenizer> raw_tok;
      std::unique_ptr<Embedder> emb;
      if (!tokenizer_file.empty()) {
        raw = true;
        raw_tok = std::make_unique<Tokenizer>(Tokenizer::from_file(tokenizer_file));
      } else {
        emb = Embedder::load(opt);
        if (raw) raw_tok = std::make_unique<Tokenizer>(Tokenizer::from_file(emb->info().dir + "/tokenizer.json"));
      }
      std::string line;
      for (size_t i = 0; i < texts.size(); ++i) {
        TokenizedText t;
        if (raw) {
          Encoding e;
          try {
            e = raw_tok->encode(texts[i], true, 0);
          } catch (const Error& err) {
            throw Error("input " + std::to_string(i) + ": " + err.what());
          }
          t.ids = e.ids;
          t.offsets = e.offsets;
          for (int32_t id : e.ids) t.tokens.push_back(raw_tok->id_to_token(id));
        } else {
          t = emb->tokenize(texts[i], !no_truncate);
        }
        line = "{\"index\": " + std::to_string(i) + ", \"ids\": [";
        for (size_t k = 0; k < t.ids.size(); ++k) line += (k ? ", " : "") + std::to_string(t.ids[k]);
        line += "], \"tokens\": [";
        for (size_t k = 0; k < t.tokens.size(); ++k) {
          if (k) line += ", ";
          json::append_string(line, t.tokens[k]);
        }
        line += "], \"offsets\": [";
        for (size_t k = 0; k < t.offsets.size(); ++k)
          line += (k ? ", [" : "[") + std::to_string(t.offsets[k].first) + ", " + std::to_string(t.offsets[k].second) + "]";
        line += "]}\n";
        std::fwrite(line.data(), 1, line.size(), stdout);
      }
    } else if (*sim) {
      std::unique_ptr<Embedder> emb;
      auto load_side = [&](const std::string& path, size_t& rows, size_t& dim) {
        if (ends_with(path, ".npy")) return read_npy(path, rows, dim);
        InputOptions in;
        in.input = path;
        auto texts = read_inputs(in);
        if (!emb) emb = Embedder::load(opt);
        Embeddings e = emb->embed(texts);
        rows = e.count;
        dim = e.dim;
        return e.data;
      };
      size_t n = 0, m = 0, da = 0, db = 0;
      auto a = load_side(sim_a, n, da);
      auto b = load_side(sim_b, m, db);
      if (da != db) throw Error("similarity: -a has dimension " + std::to_string(da) + " but -b has " + std::to_string(db));
      std::string device = opt.device;
      if (device == "auto") {
        std::string why;
        device = embedkit::cuda::available(&why) ? "cuda" : "cpu";
      }
      std::vector<float> scores(n * m);
      cosine_similarity(a.data(), n, b.data(), m, da, scores.data(), device);
      FILE* f = open_output(sim_output, sim_format == "npy");
      if (sim_format == "npy") {
        Embeddings mat;
        mat.count = n;
        mat.dim = m;
        mat.data = std::move(scores);
        write_npy(f, mat);
      } else {
        std::string line;
        for (size_t i = 0; i < n; ++i) {
          line = "{\"index\": " + std::to_string(i) + ", \"scores\": [";
          for (size_t j = 0; j < m; ++j) {
            if (j) line += ", ";
            json::append_float(line, scores[i * m + j]);
          }
          line += "]}\n";
          std::fwrite(line.data(), 1, line.size(), f);
        }
      }
      if (f != stdout) std::fclose(f);
    } else if (*bench) {
      return embedkit::cli::run_bench_command(argc, argv);
    } else if (*info) {
      auto emb = Embedder::load(opt);
      ModelInfo i = emb->info();
      std::printf("model dir:        %s\n", i.dir.c_str());
      std::printf("architecture:     %s (model_type %s)\n", i.architecture.c_str(), i.model_type.c_str());
      std::printf("layers / heads:   %lld / %lld, hidden %lld, vocab %lld\n", (long long)i.num_layers,
                  (long long)i.num_heads, (long long)i.hidden_size, (long long)i.vocab_size);
      std::printf("max_seq_length:   %zu tokens\n", i.max_seq_length);
      std::printf("pooling:          %s\n", i.pooling.c_str());
      std::printf("normalize:        %s\n", i.normalize ? "yes" : "no");
      std::printf("dimensions:       %zu\n", i.dim);
      std::printf("device:           %s\n", i.device.c_str());
      std::printf("cpu kernels:      OpenBLAS %s%s\n", openblas_core().c_str(),  // the CPU path's GEMMs
                  std::getenv("OPENBLAS_CORETYPE") ? " (OPENBLAS_CORETYPE)" : "");
      std::printf("modules:         ");
      for (auto& m : i.modules) std::printf(" %s", m.c_str());
      std::printf("\n");
      std::printf("prompts:          %s\n", i.prompts.empty() ? "(none)" : "");
      for (auto& [k, v] : i.prompts) std::printf("  %s%s: \"%s\"\n", k.c_str(), k == i.default_prompt_name ? " (default)" : "", v.c_str());
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "embedkit: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
