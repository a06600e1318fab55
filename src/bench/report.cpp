// EmbedBench reports rendered from the result tree: Markdown tables and a self-contained HTML
// page (inline CSS and SVG charts; no script, no network).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bench/bench.h"
#include "embedkit/profiling.h"
#include "util/error.h"

namespace embedkit::bench {

namespace {

std::string fmt(double x, int digits = 1) {
  if (!std::isfinite(x)) return "–";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, x);
  return buf;
}
// 3 significant digits, for values spanning decades (ms, texts/s).
std::string sig(double x) {
  if (!std::isfinite(x)) return "–";
  const double a = std::fabs(x);
  return fmt(x, a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::vector<double> numbers(const Value& arr) {
  std::vector<double> v;
  for (auto& x : arr.items()) v.push_back(x.number());
  return v;
}

// One table model, rendered as Markdown or HTML.
struct Table {
  std::string title, note;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows = {};
};

std::string markdown(const Table& t) {
  std::string s = "### " + t.title + "\n\n";
  if (!t.note.empty()) s += t.note + "\n\n";
  s += "|";
  for (auto& h : t.header) s += " " + h + " |";
  s += "\n|";
  for (size_t i = 0; i < t.header.size(); ++i) s += i == 0 ? "---|" : "---:|";
  s += "\n";
  for (auto& r : t.rows) {
    s += "|";
    for (auto& c : r) s += " " + c + " |";
    s += "\n";
  }
  return s + "\n";
}

std::string html_table(const Table& t) {
  std::string s = "<h3>" + html_escape(t.title) + "</h3>\n";
  if (!t.note.empty()) s += "<p class=note>" + html_escape(t.note) + "</p>\n";
  s += "<table><tr>";
  for (auto& h : t.header) s += "<th>" + html_escape(h) + "</th>";
  s += "</tr>\n";
  for (auto& r : t.rows) {
    s += "<tr>";
    for (auto& c : r) s += "<td>" + html_escape(c) + "</td>";
    s += "</tr>\n";
  }
  return s + "</table>\n";
}

std::vector<Table> build_tables(const Value& rep) {
  std::vector<Table> out;
  const Value& scen = rep.at("scenarios");
  const bool remote = rep.at("settings").str("mode") == "remote";

  Table summary{"Scenarios", "", {"scenario", "batch", "iterations", "texts/s", "tokens/s", "latency p50 ms", "p95 ms",
                                  "p99 ms", "RSS peak MB", "GPU peak MB", "energy J / 1k emb.", "phases sum / total"}};
  Table phases{"Where the time goes (mean ms per call)",
               "tokenize and queue (sort + pack) on the host; h2d / inference / pool / d2h from CUDA events on the "
               "GPU, host clock on the CPU; launch = host time of GPU calls outside their events; other = wall - "
               "named phases.",
               {"scenario"}};
  for (const char* p : kProfilePhases) phases.header.push_back(p);
  phases.header.push_back("wall");
  Table pdist{"Phase distributions (ms): mean ± stddev, p50 / p95 / p99, min-max", "", {"scenario", "phase", "mean", "stddev", "p50", "p95", "p99", "min", "max"}};
  Table energy{"Energy", "", {"scenario", "GPU J", "GPU J / 1k", "GPU avg W", "avg W x time J", "counter / (W x t)", "GPU util %", "CPU J", "CPU J / 1k", "CPU method"}};
  Table bpe{"Bytes per stored embedding", "", {"float32", "float16", "int8", "binary"}};
  std::vector<std::string> energy_notes;

  auto add_measured = [&](const std::string& name, const Value& r) {
    const Value& lat = r.at("latency_ms");
    const Value& mem = r.at("memory");
    const Value& en = r.at("energy");
    const Value& chk = r.at("phase_check");
    std::string ej = en.find("gpu_j_per_1000_embeddings") ? fmt(en.num("gpu_j_per_1000_embeddings"), 2) + " GPU"
                                                          : fmt(en.num("cpu_j_per_1000_embeddings"), 2) + " CPU" +
                                                                (en.str("cpu_method") == "estimate" ? " (est.)" : "");
    summary.rows.push_back({name, fmt(r.num("batch_size"), 0), fmt(r.num("iterations"), 0),
                            sig(r.at("throughput").num("texts_per_s")), sig(r.at("throughput").num("tokens_per_s")),
                            sig(lat.num("p50")), sig(lat.num("p95")), sig(lat.num("p99")), fmt(mem.num("rss_peak_mb")),
                            mem.find("gpu_used_peak_mb") ? fmt(mem.num("gpu_used_peak_mb")) : "–",
                            ej, fmt(chk.num("ratio"), 3) + (chk.flag("within_5pct") ? " ✓" : " ✗")});
    std::vector<std::string> row{name};
    for (const char* p : kProfilePhases) row.push_back(sig(r.at("phases_ms").at(p).num("mean")));
    row.push_back(sig(r.at("phases_ms").at("wall").num("mean")));
    phases.rows.push_back(row);
    for (const char* p : kProfilePhases) {
      const Value& d = r.at("phases_ms").at(p);
      pdist.rows.push_back({name, p, sig(d.num("mean")), sig(d.num("stddev")), sig(d.num("p50")), sig(d.num("p95")),
                            sig(d.num("p99")), sig(d.num("min")), sig(d.num("max"))});
    }
    energy.rows.push_back({name, en.find("gpu_j") ? fmt(en.num("gpu_j"), 1) : "–",
                           en.find("gpu_j_per_1000_embeddings") ? fmt(en.num("gpu_j_per_1000_embeddings"), 2) : "–",
                           en.find("gpu_power_avg_w") ? fmt(en.num("gpu_power_avg_w"), 1) : "–",
                           en.find("gpu_power_x_time_j") ? fmt(en.num("gpu_power_x_time_j"), 1) : "–",
                           en.find("gpu_counter_vs_power_ratio") ? fmt(en.num("gpu_counter_vs_power_ratio"), 3) : "–",
                           en.find("gpu_util_avg_pct") ? fmt(en.num("gpu_util_avg_pct"), 0) : "–",
                           fmt(en.num("cpu_j"), 1), fmt(en.num("cpu_j_per_1000_embeddings"), 2), en.str("cpu_method")});
    for (const char* k : {"gpu_note", "cpu_note"})
      if (!en.str(k).empty() && std::find(energy_notes.begin(), energy_notes.end(), en.str(k)) == energy_notes.end())
        energy_notes.push_back(en.str(k));
    if (bpe.rows.empty()) {
      const Value& b = mem.at("bytes_per_embedding");
      bpe.rows.push_back({fmt(b.num("float32"), 0), fmt(b.num("float16"), 0), fmt(b.num("int8"), 0), fmt(b.num("binary"), 0)});
      bpe.note = mem.str("bytes_per_embedding_note");
    }
  };

  for (auto& s : scen.items()) {
    const std::string name = s.str("name");
    if (const Value* r = s.find("result")) add_measured(name, *r);
    if (const Value* c = s.find("comparison")) {
      Table t{"Comparison: " + name, "", {"model", "device", "dtype", "threads", "texts/s", "tokens/s", "p50 ms", "p95 ms", "p99 ms", "RSS peak MB", "phases sum / total"}};
      for (auto& row : c->at("rows").items()) {
        const Value& e = row.at("engine");
        if (row.find("skipped")) {
          t.note += (t.note.empty() ? "skipped: " : "; ") + e.str("device") + " " + e.str("dtype") + " (" + row.str("skipped") + ")";
          continue;
        }
        const Value& r = row.at("result");
        t.rows.push_back({e.str("model"), e.str("device"), e.str("dtype"), fmt(e.num("threads"), 0),
                          sig(r.at("throughput").num("texts_per_s")), sig(r.at("throughput").num("tokens_per_s")),
                          sig(r.at("latency_ms").num("p50")), sig(r.at("latency_ms").num("p95")),
                          sig(r.at("latency_ms").num("p99")), fmt(r.at("memory").num("rss_peak_mb")),
                          fmt(r.at("phase_check").num("ratio"), 3)});
        add_measured(name + " " + e.str("device") + " t" + fmt(e.num("threads"), 0), r);
      }
      out.push_back(t);
    }
    if (const Value* sw = s.find("sweep")) {
      const std::string key = sw->str("swept");
      Table t{"Sweep: " + name + " (" + key + ")",
              "chosen: " + fmt(sw->num("chosen"), 0) + " (" + sig(sw->num("chosen_texts_per_s")) + " texts/s); best: " +
                  fmt(sw->num("best"), 0) + " (" + sig(sw->num("best_texts_per_s")) + " texts/s); rule: " + sw->str("rule") +
                  " (" + fmt(100 * sw->num("tolerance"), 0) + "%)" +
                  (sw->find("round_texts") ? "; each round: every point on the corpus's first " +
                                                 fmt(sw->num("round_texts"), 0) + " texts"
                                           : ""),
              {key, "iterations", "texts/s", "texts/s by round", "tokens/s", "p50 ms", "p99 ms", "RSS peak MB", ""}};
      for (auto& p : sw->at("points").items()) {
        const double x = p.num(key);
        std::string mark = x == sw->num("chosen") ? "chosen" : "";
        if (x == sw->num("best")) mark += mark.empty() ? "best" : ", best";
        std::string by_round;
        if (const Value* rt = p.find("round_texts_per_s"))
          for (auto& v : rt->items()) by_round += (by_round.empty() ? "" : " / ") + sig(v.number());
        t.rows.push_back({fmt(x, 0), fmt(p.num("iterations"), 0), sig(p.num("texts_per_s")), by_round.empty() ? "–" : by_round,
                          sig(p.num("tokens_per_s")), sig(p.num("latency_p50_ms")), sig(p.num("latency_p99_ms")),
                          fmt(p.num("rss_peak_mb")), mark});
      }
      out.push_back(t);
    }
    if (const Value* lv = s.find("remote_levels")) {
      Table t{"Remote: " + name + " (batch " + fmt(s.at("spec").num("batch_size"), 0) + ")", "",
              {"concurrency", "requests", "errors", "req/s", "texts/s", "p50 ms", "p95 ms", "p99 ms", "server tokens (/metrics)",
               "client tokens", "match", "server queue ms", "server inference ms"}};
      for (auto& l : lv->items()) {
        const Value& sm = l.at("server_metrics");
        std::string client;
        if (l.find("client_tokens_local")) client = fmt(l.num("client_tokens_local"), 0) + " (local)";
        if (l.find("client_tokens_usage"))
          client += (client.empty() ? "" : ", ") + fmt(l.num("client_tokens_usage"), 0) + " (usage)";
        if (client.empty()) client = "–";
        t.rows.push_back({fmt(l.num("concurrency"), 0), fmt(l.num("requests"), 0), fmt(l.num("errors"), 0),
                          sig(l.num("requests_per_s")), sig(l.num("texts_per_s")), sig(l.at("latency_ms").num("p50")),
                          sig(l.at("latency_ms").num("p95")), sig(l.at("latency_ms").num("p99")),
                          sm.find("tokens") ? fmt(sm.num("tokens"), 0) : "–", client,
                          sm.find("tokens_match_client") ? (sm.flag("tokens_match_client") ? "yes" : "NO") : "–",
                          sm.find("queue_mean_ms") ? sig(sm.num("queue_mean_ms")) : "–",
                          sm.find("inference_mean_ms") ? sig(sm.num("inference_mean_ms")) : "–"});
        for (auto& e : l.at("error_samples").items())
          t.note += (t.note.empty() ? "errors: " : "; ") + fmt(e.num("count"), 0) + "× " + e.str("message");
      }
      out.push_back(t);
    }
  }
  std::vector<Table> head;
  if (!summary.rows.empty()) {
    head.push_back(summary);
    head.push_back(phases);
    energy.note = "";
    for (auto& n : energy_notes) energy.note += (energy.note.empty() ? "" : " | ") + n;
    head.push_back(energy);
    head.push_back(bpe);
  }
  head.insert(head.end(), out.begin(), out.end());
  if (!pdist.rows.empty() && !remote) head.push_back(pdist);
  return head;
}

std::vector<std::pair<std::string, std::string>> header_facts(const Value& rep) {
  const Value& m = rep.at("machine");
  std::vector<std::pair<std::string, std::string>> f;
  f.push_back({"date (UTC)", rep.str("created_utc")});
  f.push_back({"commit", rep.str("commit")});
  const std::string blas = m.str("openblas_kernels");
  f.push_back({"machine", m.str("cpu") + ", " + fmt(m.num("logical_cores"), 0) + " logical cores" +
                              (blas.empty() ? "" : " (OpenBLAS " + blas + " kernels)") + ", " + fmt(m.num("memory_gib"), 1) +
                              " GiB, " + m.str("os") + " (kernel " + m.str("kernel") + ")"});
  std::string dev = rep.at("device").str("name");
  if (!rep.at("device").str("driver").empty()) dev += ", driver " + rep.at("device").str("driver");
  f.push_back({"device", dev});
  const Value& e = rep.at("engine");
  if (!e.is_null())
    f.push_back({"model", e.str("model") + " (" + e.str("architecture") + ", " + fmt(e.num("layers"), 0) + " layers, hidden " +
                              fmt(e.num("hidden_size"), 0) + ", dim " + fmt(e.num("dim"), 0) + ")"});
  const Value& s = rep.at("settings");
  f.push_back({"settings", "mode " + s.str("mode") + ", threads " + fmt(s.num("threads"), 0) + ", token budget " +
                               (s.num("batch_tokens") == 0 ? std::string("auto") : fmt(s.num("batch_tokens"), 0))});
  if (!rep.at("remote").is_null())
    f.push_back({"endpoint", rep.at("remote").str("url") + " " + rep.at("remote").str("route") + " (model " +
                                 rep.at("remote").str("model") + "; " + rep.at("remote").str("client_tokens") + ")"});
  f.push_back({"command", rep.str("command")});
  return f;
}

// ---- SVG charts ---------------------------------------------------------------------------
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};

std::vector<double> nice_ticks(double lo, double hi, int target = 6) {
  if (!(hi > lo)) hi = lo + 1;
  const double raw = (hi - lo) / target, mag = std::pow(10, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double x = std::ceil(lo / step) * step; x <= hi + step * 1e-9; x += step) t.push_back(std::fabs(x) < step * 1e-9 ? 0 : x);
  return t;
}

// Tick text with as many decimals as the tick step needs (k / M suffixes for large values).
std::string tick_label(double x, double step) {
  double scale = 1;
  std::string suffix;
  if (std::fabs(x) >= 1e6 || step >= 1e6) scale = 1e6, suffix = "M";
  else if (std::fabs(x) >= 1e4 || step >= 1e4) scale = 1e3, suffix = "k";
  const double st = step / scale;
  const int decimals = st >= 1 || st <= 0 ? 0 : std::min(4, int(std::ceil(-std::log10(st) - 1e-9)));
  return fmt(x / scale, decimals) + suffix;
}
double step_of(const std::vector<double>& t) { return t.size() > 1 ? t[1] - t[0] : 1; }

struct Series {
  std::string name;
  std::vector<double> x, y;
};

struct Frame {
  double W = 640, H = 300, L = 70, R = 20, T = 36, B = 50;
  double x0, x1, y0, y1;
  bool logx = false;
  double px(double x) const {
    const double a = logx ? std::log2(x0) : x0, b = logx ? std::log2(x1) : x1, v = logx ? std::log2(x) : x;
    return L + (v - a) / (b - a == 0 ? 1 : b - a) * (W - L - R);
  }
  double py(double y) const { return H - B - (y - y0) / (y1 - y0 == 0 ? 1 : y1 - y0) * (H - T - B); }
};

std::string svg_open(const Frame& f, const std::string& title) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns='http://www.w3.org/2000/svg' width='%.0f' height='%.0f' viewBox='0 0 %.0f %.0f' "
                "font-family='sans-serif' font-size='12'>\n<rect width='100%%' height='100%%' fill='white'/>\n",
                f.W, f.H, f.W, f.H);
  std::string s = buf;
  s += "<text x='" + fmt(f.W / 2, 0) + "' y='20' text-anchor='middle' font-size='14' font-weight='bold'>" +
       html_escape(title) + "</text>\n";
  return s;
}

std::string axes(const Frame& f, const std::vector<double>& xt, const std::vector<double>& yt, const std::string& xlabel,
                 const std::string& ylabel) {
  std::string s;
  for (double y : yt) {
    const double p = f.py(y);
    s += "<line x1='" + fmt(f.L) + "' x2='" + fmt(f.W - f.R) + "' y1='" + fmt(p) + "' y2='" + fmt(p) +
         "' stroke='#ddd'/>\n<text x='" + fmt(f.L - 6) + "' y='" + fmt(p + 4) + "' text-anchor='end'>" + tick_label(y, step_of(yt)) +
         "</text>\n";
  }
  for (double x : xt) {
    const double p = f.px(x);
    s += "<line x1='" + fmt(p) + "' x2='" + fmt(p) + "' y1='" + fmt(f.H - f.B) + "' y2='" + fmt(f.H - f.B + 5) +
         "' stroke='#333'/>\n<text x='" + fmt(p) + "' y='" + fmt(f.H - f.B + 18) + "' text-anchor='middle'>" +
         tick_label(x, f.logx ? 1 : step_of(xt)) + "</text>\n";
  }
  s += "<line x1='" + fmt(f.L) + "' x2='" + fmt(f.W - f.R) + "' y1='" + fmt(f.H - f.B) + "' y2='" + fmt(f.H - f.B) +
       "' stroke='#333'/>\n<line x1='" + fmt(f.L) + "' x2='" + fmt(f.L) + "' y1='" + fmt(f.T) + "' y2='" + fmt(f.H - f.B) +
       "' stroke='#333'/>\n";
  s += "<text x='" + fmt((f.L + f.W - f.R) / 2) + "' y='" + fmt(f.H - 10) + "' text-anchor='middle'>" + html_escape(xlabel) +
       "</text>\n";
  s += "<text transform='translate(16," + fmt((f.T + f.H - f.B) / 2) + ") rotate(-90)' text-anchor='middle'>" +
       html_escape(ylabel) + "</text>\n";
  return s;
}

std::string line_chart(const std::string& title, const std::string& xlabel, const std::string& ylabel,
                       const std::vector<Series>& series, bool logx, bool markers) {
  Frame f;
  f.logx = logx;
  double xmin = INFINITY, xmax = -INFINITY, ymax = 0;
  for (auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  if (!std::isfinite(xmin)) return "";
  if (xmax == xmin) xmax = xmin + 1;
  std::vector<double> yt = nice_ticks(0, ymax * 1.2);  // headroom for the legend
  if (yt.size() > 1 && yt.back() < ymax * 1.2) yt.push_back(yt.back() + step_of(yt));
  f.x0 = xmin, f.x1 = xmax, f.y0 = 0, f.y1 = yt.empty() ? ymax : std::max(yt.back(), ymax);
  std::vector<double> xt;
  if (logx) {
    for (double x = std::exp2(std::floor(std::log2(xmin))); x <= xmax * 1.0001; x *= 2)
      if (x >= xmin * 0.9999) xt.push_back(x);
  } else {
    xt = nice_ticks(xmin, xmax);
  }
  std::string s = svg_open(f, title) + axes(f, xt, yt, xlabel, ylabel);
  for (size_t k = 0; k < series.size(); ++k) {
    const auto& se = series[k];
    const char* c = kColors[k % 8];
    std::string pts;
    for (size_t i = 0; i < se.x.size(); ++i) pts += fmt(f.px(se.x[i])) + "," + fmt(f.py(se.y[i])) + " ";
    s += "<polyline fill='none' stroke='" + std::string(c) + "' stroke-width='2' points='" + pts + "'/>\n";
    if (markers)
      for (size_t i = 0; i < se.x.size(); ++i)
        s += "<circle cx='" + fmt(f.px(se.x[i])) + "' cy='" + fmt(f.py(se.y[i])) + "' r='3.5' fill='" + c + "'/>\n";
    if (series.size() > 1 || !se.name.empty()) {
      const double ly = f.T + 4 + 16 * double(k);
      // Legend top-left inside the plot: the curves here (throughput, memory) start low.
      s += "<rect x='" + fmt(f.L + 10) + "' y='" + fmt(ly) + "' width='12' height='12' fill='" + c + "'/>\n";
      s += "<text x='" + fmt(f.L + 27) + "' y='" + fmt(ly + 10) + "'>" + html_escape(se.name) + "</text>\n";
    }
  }
  return s + "</svg>\n";
}

std::string histogram(const std::string& title, const std::string& xlabel, const std::vector<double>& v) {
  if (v.empty()) return "";
  std::vector<double> sorted = v;
  std::sort(sorted.begin(), sorted.end());
  // Range up to p99.5 so a few stragglers do not squash the body; the last bin holds the rest.
  const double lo = sorted.front(), hi = std::max(percentile(sorted, 99.5), lo * 1.0001 + 1e-9);
  const int bins = 40;
  std::vector<double> counts(bins, 0);
  for (double x : v) counts[size_t(std::clamp(int((x - lo) / (hi - lo) * bins), 0, bins - 1))] += 1;
  Frame f;
  const double cmax = *std::max_element(counts.begin(), counts.end());
  std::vector<double> yt = nice_ticks(0, cmax * 1.08);
  f.x0 = lo, f.x1 = hi, f.y0 = 0, f.y1 = std::max(yt.back(), cmax);
  std::string s = svg_open(f, title) + axes(f, nice_ticks(lo, hi), yt, xlabel, "calls");
  const double bw = (f.W - f.L - f.R) / bins;
  for (int b = 0; b < bins; ++b) {
    const double y = f.py(counts[size_t(b)]);
    s += "<rect x='" + fmt(f.L + b * bw + 0.5) + "' y='" + fmt(y) + "' width='" + fmt(bw - 1) + "' height='" +
         fmt(f.H - f.B - y) + "' fill='#1f77b4'/>\n";
  }
  for (double q : {50.0, 99.0}) {
    const double x = f.px(std::min(percentile(sorted, q), hi));
    s += "<line x1='" + fmt(x) + "' x2='" + fmt(x) + "' y1='" + fmt(f.T) + "' y2='" + fmt(f.H - f.B) +
         "' stroke='#d62728' stroke-dasharray='4 3'/>\n";
    // Label beside the line, on the side with room; p99 one line lower so the two never collide.
    const bool left = x > f.W - f.R - 90;
    s += "<text x='" + fmt(left ? x - 3 : x + 3) + "' y='" + fmt(f.T + (q == 50 ? 12 : 28)) + "' text-anchor='" +
         (left ? "end" : "start") + "' fill='#d62728'>p" + fmt(q, 0) + " " + sig(percentile(sorted, q)) + " ms</text>\n";
  }
  return s + "</svg>\n";
}

// Mean time per phase, one horizontal stacked bar per scenario.
std::string phase_bars(const std::vector<std::pair<std::string, const Value*>>& runs) {
  if (runs.empty()) return "";
  Frame f;
  f.H = 60 + 34 * double(runs.size()) + 40;
  f.L = 170;
  f.B = 60;
  const char* names[] = {"tokenize", "queue", "h2d", "inference", "pool", "d2h", "launch", "other"};
  std::string s = svg_open(f, "Share of each call's wall time by phase (mean)");
  const double width = f.W - f.L - f.R;
  for (size_t r = 0; r < runs.size(); ++r) {
    const Value& ph = runs[r].second->at("phases_ms");
    const double wall = std::max(ph.at("wall").num("mean"), 1e-12);
    double x = f.L;
    const double y = f.T + 8 + 34 * double(r);
    s += "<text x='" + fmt(f.L - 6) + "' y='" + fmt(y + 16) + "' text-anchor='end'>" + html_escape(runs[r].first) +
         "</text>\n";
    for (int k = 0; k < 8; ++k) {
      const double share = std::max(0.0, ph.at(names[k]).num("mean")) / wall;
      const double w = std::min(share, 1.0) * width;
      s += "<rect x='" + fmt(x) + "' y='" + fmt(y) + "' width='" + fmt(w) + "' height='24' fill='" + kColors[k] + "'/>\n";
      if (w > 34) s += "<text x='" + fmt(x + w / 2) + "' y='" + fmt(y + 16) + "' text-anchor='middle' fill='white'>" +
                       fmt(100 * share, 0) + "%</text>\n";
      x += w;
    }
  }
  const double ly = f.H - 26;
  for (int k = 0; k < 8; ++k) {
    const double lx = f.L - 150 + 76 * k;
    s += "<rect x='" + fmt(lx) + "' y='" + fmt(ly) + "' width='12' height='12' fill='" + kColors[k] + "'/>\n<text x='" +
         fmt(lx + 16) + "' y='" + fmt(ly + 10) + "'>" + names[k] + "</text>\n";
  }
  return s + "</svg>\n";
}

}  // namespace

std::string render_markdown(const Value& rep) {
  std::string s = "## EmbedBench report\n\n";
  for (auto& [k, v] : header_facts(rep)) s += "- **" + k + "**: " + v + "\n";
  s += "\n";
  for (auto& t : build_tables(rep)) s += markdown(t);
  return s;
}

std::string render_html(const Value& rep) {
  std::string s =
      "<!DOCTYPE html>\n<html lang=en><head><meta charset='utf-8'><title>EmbedBench report</title>\n<style>\n"
      "body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}\n"
      "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;"
      "font-size:13px}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}\n"
      ".note{color:#555;font-size:13px;max-width:1200px}.charts{display:flex;flex-wrap:wrap;gap:12px}"
      ".charts svg{border:1px solid #ddd}\nul{font-size:14px}\n</style></head><body>\n<h1>EmbedBench report</h1>\n<ul>\n";
  for (auto& [k, v] : header_facts(rep)) s += "<li><b>" + html_escape(k) + "</b>: " + html_escape(v) + "</li>\n";
  s += "</ul>\n<h2>Charts</h2>\n<div class=charts>\n";
  std::vector<std::pair<std::string, const Value*>> runs;
  for (auto& sc : rep.at("scenarios").items()) {
    const std::string name = sc.str("name");
    if (const Value* r = sc.find("result")) {
      runs.push_back({name, r});
      const Value& smp = r->at("samples");
      if (smp.find("latency_ms"))
        s += histogram("Latency: " + name + " (batch " + fmt(r->num("batch_size"), 0) + ")", "ms per call",
                       numbers(smp.at("latency_ms")));
      const Value& tl = smp.at("timeline");
      if (tl.find("t_s")) {
        std::vector<Series> mem{{"host RSS (MB)", numbers(tl.at("t_s")), numbers(tl.at("rss_mb"))}};
        if (tl.find("gpu_used_mb")) mem.push_back({"GPU used (MB)", numbers(tl.at("t_s")), numbers(tl.at("gpu_used_mb"))});
        s += line_chart("Memory over time: " + name, "seconds", "MB", mem, false, false);
        if (tl.find("gpu_power_w"))
          s += line_chart("GPU power and utilization: " + name, "seconds", "W / %",
                          {{"power (W)", numbers(tl.at("t_s")), numbers(tl.at("gpu_power_w"))},
                           {"utilization (%)", numbers(tl.at("t_s")), numbers(tl.at("gpu_util_pct"))}},
                          false, false);
      }
    }
    if (const Value* c = sc.find("comparison"))
      for (auto& row : c->at("rows").items())
        if (!row.find("skipped")) runs.push_back({name + " " + row.at("engine").str("device") + " t" + fmt(row.at("engine").num("threads"), 0),
                        &row.at("result")});
    if (const Value* sw = sc.find("sweep")) {
      const std::string key = sw->str("swept");
      Series tp{"texts/s", {}, {}};
      for (auto& p : sw->at("points").items()) {
        tp.x.push_back(p.num(key));
        tp.y.push_back(p.num("texts_per_s"));
      }
      s += line_chart("Throughput vs " + std::string(key == "batch_size" ? "batch size" : "token budget") + ": " + name +
                          " (chosen " + fmt(sw->num("chosen"), 0) + ")",
                      key == "batch_size" ? "batch size (texts per call)" : "token budget", "texts / s", {tp}, true, true);
    }
    if (const Value* lv = sc.find("remote_levels")) {
      Series rps{"texts/s", {}, {}}, p99{"p99 latency (ms)", {}, {}};
      for (auto& l : lv->items()) {
        rps.x.push_back(l.num("concurrency"));
        rps.y.push_back(l.num("texts_per_s"));
        p99.x.push_back(l.num("concurrency"));
        p99.y.push_back(l.at("latency_ms").num("p99"));
      }
      s += line_chart("Remote throughput vs concurrency: " + name, "concurrent connections", "texts / s", {rps}, true, true);
      s += line_chart("Remote p99 latency vs concurrency: " + name, "concurrent connections", "ms", {p99}, true, true);
    }
  }
  s += phase_bars(runs);
  s += "</div>\n<h2>Tables</h2>\n";
  for (auto& t : build_tables(rep)) s += html_table(t);
  s += "<p class=note>Generated by <code>embedkit bench</code>; the JSON report beside this file holds every number and "
       "the raw samples.</p>\n</body></html>\n";
  return s;
}

std::vector<std::string> write_reports(const Value& report, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error(dir + ": cannot create the report directory (" + ec.message() + ")");
  std::vector<std::string> paths;
  auto put = [&](const std::string& name, const std::string& text) {
    const std::string p = dir + "/" + name;
    std::ofstream f(p, std::ios::binary);
    if (!f) throw Error(p + ": cannot open for writing");
    f << text;
    if (!f) throw Error(p + ": write failed");
    paths.push_back(p);
  };
  put("embedbench.json", report.dump(1) + "\n");
  put("embedbench.md", render_markdown(report));
  put("embedbench.html", render_html(report));
  return paths;
}

}  // namespace embedkit::bench
