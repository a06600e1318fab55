// Resource monitors for EmbedBench (see monitors.h).
#include "bench/monitors.h"

#include <dlfcn.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace embedkit::bench {

namespace fs = std::filesystem;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

RssReading read_rss() {
  RssReading r;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    auto kb = [&](const char* key, size_t& out) {
      if (line.rfind(key, 0) == 0) out = size_t(std::stoull(line.substr(std::strlen(key)))) * 1024;
    };
    kb("VmRSS:", r.rss);
    kb("VmHWM:", r.peak);
  }
  return r;
}

bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  if (!f) return false;
  f << "5";
  f.flush();
  return bool(f);
}

double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// ---- NVML ---------------------------------------------------------------------------------
// The few NVML declarations we use (nvml.h, stable ABI since the _v2 entry points).
namespace {
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
struct nvmlUtilization_t {
  unsigned int gpu, memory;
};
struct nvmlMemory_t {
  unsigned long long total, free, used;
};
struct nvmlFieldValue_t {
  unsigned int fieldId, scopeId;
  long long timestamp, latencyUsec;
  int valueType;
  nvmlReturn_t nvmlReturn;
  union {
    double d;
    unsigned int ui;
    unsigned long ul;
    unsigned long long ull;
    long long sll;
  } value;
};
constexpr unsigned kFieldPowerInstant = 186;  // NVML_FI_DEV_POWER_INSTANT (milliwatts)
}  // namespace

struct Nvml::Api {
  void* lib = nullptr;
  nvmlReturn_t (*init)() = nullptr;
  nvmlReturn_t (*handle_by_index)(unsigned, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*handle_by_pci)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*energy)(nvmlDevice_t, unsigned long long*) = nullptr;
  nvmlReturn_t (*power)(nvmlDevice_t, unsigned*) = nullptr;
  nvmlReturn_t (*fields)(nvmlDevice_t, int, nvmlFieldValue_t*) = nullptr;
  nvmlReturn_t (*util)(nvmlDevice_t, nvmlUtilization_t*) = nullptr;
  nvmlReturn_t (*memory)(nvmlDevice_t, nvmlMemory_t*) = nullptr;
  nvmlReturn_t (*name)(nvmlDevice_t, char*, unsigned) = nullptr;
  nvmlReturn_t (*driver)(char*, unsigned) = nullptr;
  const char* (*error)(nvmlReturn_t) = nullptr;
};

Nvml& Nvml::get() {
  static Nvml n;
  return n;
}

Nvml::Nvml() : api_(std::make_unique<Api>()) {
  Api& a = *api_;
  a.lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!a.lib) {
    why_ = "libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)";
    return;
  }
  auto sym = [&](auto& fn, const char* name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(a.lib, name));
    return fn != nullptr;
  };
  if (!sym(a.init, "nvmlInit_v2") || !sym(a.handle_by_index, "nvmlDeviceGetHandleByIndex_v2") ||
      !sym(a.energy, "nvmlDeviceGetTotalEnergyConsumption") || !sym(a.power, "nvmlDeviceGetPowerUsage") ||
      !sym(a.util, "nvmlDeviceGetUtilizationRates") || !sym(a.memory, "nvmlDeviceGetMemoryInfo") ||
      !sym(a.name, "nvmlDeviceGetName") || !sym(a.driver, "nvmlSystemGetDriverVersion") ||
      !sym(a.error, "nvmlErrorString")) {
    why_ = "libnvidia-ml.so.1 lacks an expected entry point (driver too old?)";
    return;
  }
  sym(a.handle_by_pci, "nvmlDeviceGetHandleByPciBusId_v2");
  sym(a.fields, "nvmlDeviceGetFieldValues");
  if (nvmlReturn_t r = a.init(); r != 0) {
    why_ = std::string("nvmlInit failed: ") + a.error(r);
    return;
  }
  // NVML numbers GPUs by PCI order; CUDA's device 0 may differ (CUDA_VISIBLE_DEVICES).
  nvmlDevice_t dev = nullptr;
  const std::string bus = cuda_pci_bus_id();
  if (!bus.empty() && a.handle_by_pci && a.handle_by_pci(bus.c_str(), &dev) == 0) {
  } else if (nvmlReturn_t r = a.handle_by_index(0, &dev); r != 0) {
    why_ = std::string("nvmlDeviceGetHandleByIndex(0) failed: ") + a.error(r);
    return;
  }
  device_ = dev;
  ok_ = true;
  power_source_ = "nvmlDeviceGetPowerUsage";
  if (a.fields) {
    nvmlFieldValue_t fv{};
    fv.fieldId = kFieldPowerInstant;
    if (a.fields(device_, 1, &fv) == 0 && fv.nvmlReturn == 0) power_source_ = "NVML_FI_DEV_POWER_INSTANT";
  }
}

std::string Nvml::device_name() const {
  char buf[96] = {};
  return ok_ && api_->name(device_, buf, sizeof buf) == 0 ? buf : "";
}
std::string Nvml::driver_version() const {
  char buf[96] = {};
  return ok_ && api_->driver(buf, sizeof buf) == 0 ? buf : "";
}
std::optional<uint64_t> Nvml::energy_mj() const {
  unsigned long long mj = 0;
  if (!ok_ || api_->energy(device_, &mj) != 0) return std::nullopt;
  return uint64_t(mj);
}
std::optional<double> Nvml::power_w() const {
  if (!ok_) return std::nullopt;
  if (power_source_ == "NVML_FI_DEV_POWER_INSTANT") {
    nvmlFieldValue_t fv{};
    fv.fieldId = kFieldPowerInstant;
    if (api_->fields(device_, 1, &fv) == 0 && fv.nvmlReturn == 0) {
      // Milliwatts, in whichever member the driver says (nvmlValueType_t).
      switch (fv.valueType) {
        case 0: return fv.value.d / 1000.0;
        case 2: return double(fv.value.ul) / 1000.0;
        case 3: return double(fv.value.ull) / 1000.0;
        case 4: return double(fv.value.sll) / 1000.0;
        default: return double(fv.value.ui) / 1000.0;
      }
    }
  }
  unsigned mw = 0;
  if (api_->power(device_, &mw) != 0) return std::nullopt;
  return double(mw) / 1000.0;
}
std::optional<unsigned> Nvml::utilization_pct() const {
  nvmlUtilization_t u{};
  if (!ok_ || api_->util(device_, &u) != 0) return std::nullopt;
  return u.gpu;
}
std::optional<size_t> Nvml::memory_used() const {
  nvmlMemory_t m{};
  if (!ok_ || api_->memory(device_, &m) != 0) return std::nullopt;
  return size_t(m.used);
}
std::optional<size_t> Nvml::memory_total() const {
  nvmlMemory_t m{};
  if (!ok_ || api_->memory(device_, &m) != 0) return std::nullopt;
  return size_t(m.total);
}

// ---- RAPL ---------------------------------------------------------------------------------
Rapl::Rapl() {
  const fs::path root = "/sys/class/powercap";
  std::error_code ec;
  if (!fs::exists(root, ec)) {
    why_ = "/sys/class/powercap does not exist (no RAPL driver, or a VM that hides it)";
    return;
  }
  std::vector<fs::path> dirs;
  for (auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    // Top-level package zones only ("intel-rapl:0"); sub-zones ("intel-rapl:0:0") are inside them.
    if (n.rfind("intel-rapl:", 0) == 0 && std::count(n.begin(), n.end(), ':') == 1) dirs.push_back(e.path());
  }
  std::sort(dirs.begin(), dirs.end());
  for (auto& d : dirs) {
    std::ifstream f(d / "energy_uj"), m(d / "max_energy_range_uj"), nm(d / "name");
    uint64_t v = 0;
    if (!(f >> v)) continue;
    Zone z;
    z.path = (d / "energy_uj").string();
    m >> z.max_range;
    nm >> z.name;
    zones_.push_back(z);
  }
  if (zones_.empty()) why_ = "no readable /sys/class/powercap/intel-rapl:N/energy_uj (needs root on recent kernels)";
}

std::vector<uint64_t> Rapl::read() const {
  std::vector<uint64_t> v;
  for (auto& z : zones_) {
    std::ifstream f(z.path);
    uint64_t x = 0;
    f >> x;
    v.push_back(x);
  }
  return v;
}

double Rapl::joules_between(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) const {
  double j = 0;
  for (size_t i = 0; i < zones_.size() && i < a.size() && i < b.size(); ++i) {
    uint64_t d = b[i] >= a[i] ? b[i] - a[i] : b[i] + zones_[i].max_range - a[i];
    j += double(d) * 1e-6;
  }
  return j;
}

std::string Rapl::zones() const {
  std::string s;
  for (auto& z : zones_) s += (s.empty() ? "" : ", ") + z.name;
  return s;
}

// ---- ResourceMonitor ----------------------------------------------------------------------
ResourceMonitor::ResourceMonitor(Options o) : opt_(o) {}
ResourceMonitor::~ResourceMonitor() {
  if (running_) stop();
}

MonitorPoint ResourceMonitor::sample(double t) const {
  MonitorPoint p;
  p.t_s = t;
  p.rss_mb = double(read_rss().rss) / (1 << 20);
  if (opt_.gpu) {
    if (auto u = cuda_memory_used()) p.gpu_used_mb = double(*u) / (1 << 20);
    else if (auto n = Nvml::get().memory_used()) p.gpu_used_mb = double(*n) / (1 << 20);
    if (auto w = Nvml::get().power_w()) p.gpu_power_w = *w;
    if (auto u = Nvml::get().utilization_pct()) p.gpu_util_pct = double(*u);
  }
  return p;
}

void ResourceMonitor::start() {
  points_.clear();
  hwm_reset_ = reset_peak_rss();
  t0_ = now_s();
  cpu0_ = process_cpu_seconds();
  if (opt_.gpu) energy0_ = Nvml::get().energy_mj();
  if (rapl_.available()) rapl0_ = rapl_.read();
  points_.push_back(sample(0));
  running_ = true;
  thread_ = std::thread([this] {
    while (running_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(opt_.interval_ms));
      MonitorPoint p = sample(now_s() - t0_);
      std::lock_guard<std::mutex> lock(mu_);
      points_.push_back(p);
    }
  });
}

MonitorSummary ResourceMonitor::stop() {
  running_ = false;
  if (thread_.joinable()) thread_.join();
  MonitorSummary s;
  s.wall_s = now_s() - t0_;
  points_.push_back(sample(s.wall_s));
  const RssReading rss = read_rss();
  std::optional<uint64_t> energy1 = opt_.gpu ? Nvml::get().energy_mj() : std::nullopt;
  s.cpu_seconds = process_cpu_seconds() - cpu0_;

  s.timeline = points_;
  double rss_sum = 0, gpu_sum = 0, pw_sum = 0, util_sum = 0, rss_max = 0;
  size_t gpu_n = 0, pw_n = 0, util_n = 0;
  for (auto& p : points_) {
    rss_sum += p.rss_mb;
    rss_max = std::max(rss_max, p.rss_mb);
    if (p.gpu_used_mb >= 0) {
      gpu_sum += p.gpu_used_mb;
      s.gpu_used_peak_mb = std::max(s.gpu_used_peak_mb, p.gpu_used_mb);
      ++gpu_n;
    }
    if (p.gpu_power_w >= 0) pw_sum += p.gpu_power_w, ++pw_n;
    if (p.gpu_util_pct >= 0) util_sum += p.gpu_util_pct, ++util_n;
  }
  s.rss_start_mb = points_.front().rss_mb;
  s.rss_avg_mb = rss_sum / double(points_.size());
  // VmHWM is the kernel's exact peak (no sampling gaps); after a reset it covers this run only.
  s.rss_peak_since_start = hwm_reset_;
  s.rss_peak_mb = std::max(rss_max, double(rss.peak) / (1 << 20));
  if (gpu_n) {
    s.gpu = true;
    s.gpu_used_avg_mb = gpu_sum / double(gpu_n);
    s.gpu_used_start_mb = points_.front().gpu_used_mb;
  }
  if (util_n) s.gpu_util_avg_pct = util_sum / double(util_n);
  if (opt_.gpu) {
    Nvml& n = Nvml::get();
    if (!n.available()) {
      s.gpu_energy_note = "no GPU energy: " + n.why_unavailable();
    } else if (!energy0_ || !energy1) {
      s.gpu_energy_note = "no GPU energy: nvmlDeviceGetTotalEnergyConsumption unsupported on this GPU";
    } else {
      s.gpu_energy = true;
      s.gpu_energy_j = double(*energy1 - *energy0_) / 1000.0;
      s.gpu_energy_note = "NVML total-energy counter (nvmlDeviceGetTotalEnergyConsumption), whole GPU";
    }
    if (pw_n) {
      s.gpu_power_avg_w = pw_sum / double(pw_n);
      s.gpu_energy_from_power_j = s.gpu_power_avg_w * s.wall_s;
      s.gpu_power_source = n.power_source();
    }
  }
  if (rapl_.available()) {
    s.cpu_energy_method = "rapl";
    s.cpu_energy_j = rapl_.joules_between(rapl0_, rapl_.read());
    s.cpu_energy_note = "RAPL package counters (" + rapl_.zones() + "), whole CPU packages, all processes";
  } else {
    s.cpu_energy_method = "estimate";
    s.cpu_energy_j = s.cpu_seconds * opt_.cpu_watts_per_busy_core;
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", opt_.cpu_watts_per_busy_core);
    s.cpu_energy_note = "ESTIMATE, not measured: this process's CPU time (user+system, getrusage) x " +
                        std::string(buf) + " W per busy core (--cpu-watts-per-core); " + rapl_.why_unavailable();
  }
  return s;
}

}  // namespace embedkit::bench
