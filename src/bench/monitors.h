// EmbedBench resource monitors: host memory (RSS), GPU memory, GPU power/energy/utilization
// (NVML, loaded at run time), CPU energy (RAPL through powercap, else a labelled estimate).
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace embedkit::bench {

// Current and peak resident set size of this process (/proc/self/status VmRSS, VmHWM), bytes.
struct RssReading {
  size_t rss = 0, peak = 0;
};
RssReading read_rss();
// Resets the kernel's peak-RSS mark to the current RSS (writes "5" to /proc/self/clear_refs);
// false where the kernel refuses, in which case VmHWM is the peak since the process started.
bool reset_peak_rss();

// NVML through dlopen("libnvidia-ml.so.1"): no link-time dependency on the driver. All queries
// are for the GPU the CUDA runtime calls device 0 (matched by PCI bus id).
class Nvml {
 public:
  static Nvml& get();  // loads and initializes once; check available()
  bool available() const { return ok_; }
  const std::string& why_unavailable() const { return why_; }
  std::string device_name() const;
  std::string driver_version() const;
  std::optional<uint64_t> energy_mj() const;        // total energy since driver load, millijoules
  std::optional<double> power_w() const;            // instantaneous where the driver has it
  const std::string& power_source() const { return power_source_; }
  std::optional<unsigned> utilization_pct() const;  // GPU busy share of the driver's last sample window
  std::optional<size_t> memory_used() const;       // bytes used on the device (all processes)
  std::optional<size_t> memory_total() const;

 private:
  Nvml();
  struct Api;
  std::unique_ptr<Api> api_;
  void* device_ = nullptr;
  bool ok_ = false;
  std::string why_, power_source_;
};

// GPU memory as the CUDA runtime sees it (cudaMemGetInfo: total − free), bytes; nullopt in a
// build without CUDA or without a usable GPU. Creates the CUDA context if none exists: call it
// only for GPU runs.
std::optional<size_t> cuda_memory_used();
std::string cuda_pci_bus_id();  // "" when unknown

// Package energy counters under /sys/class/powercap (intel-rapl:N, also AMD on recent kernels).
class Rapl {
 public:
  Rapl();
  bool available() const { return !zones_.empty(); }
  const std::string& why_unavailable() const { return why_; }
  std::vector<uint64_t> read() const;  // microjoules per zone
  // Joules between two readings, handling counter wrap-around.
  double joules_between(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) const;
  std::string zones() const;

 private:
  struct Zone {
    std::string path, name;
    uint64_t max_range = 0;
  };
  std::vector<Zone> zones_;
  std::string why_;
};

double process_cpu_seconds();  // user + system CPU time of this process so far (getrusage)

struct MonitorPoint {
  double t_s = 0;           // since start()
  double rss_mb = 0;
  double gpu_used_mb = -1;  // -1: not measured
  double gpu_power_w = -1;
  double gpu_util_pct = -1;
};

struct MonitorSummary {
  double wall_s = 0;
  // Host memory.
  double rss_peak_mb = 0, rss_avg_mb = 0, rss_start_mb = 0;
  bool rss_peak_since_start = false;  // VmHWM was reset at start() (else: peak of the process)
  // GPU memory (device-wide, CUDA runtime view and NVML view).
  bool gpu = false;
  double gpu_used_avg_mb = -1, gpu_used_peak_mb = -1, gpu_used_start_mb = -1;
  // GPU energy.
  bool gpu_energy = false;
  std::string gpu_energy_note;
  double gpu_energy_j = -1;           // NVML counter delta
  double gpu_power_avg_w = -1;        // mean of the samples
  double gpu_energy_from_power_j = -1;  // avg power × wall time
  double gpu_util_avg_pct = -1;
  std::string gpu_power_source;
  // CPU energy.
  std::string cpu_energy_method;  // "rapl" | "estimate"
  std::string cpu_energy_note;
  double cpu_energy_j = -1, cpu_seconds = 0;
  std::vector<MonitorPoint> timeline;
};

// Samples memory, power and utilization every `interval_ms` on a thread between start() and
// stop(); energy counters are read at both ends.
class ResourceMonitor {
 public:
  struct Options {
    int interval_ms = 20;
    bool gpu = false;                  // the run uses the GPU: sample its memory, power, energy
    double cpu_watts_per_busy_core = 10.0;  // for the CPU energy estimate where RAPL is missing
  };
  explicit ResourceMonitor(Options o);
  ~ResourceMonitor();
  void start();
  MonitorSummary stop();

 private:
  MonitorPoint sample(double t) const;
  Options opt_;
  Rapl rapl_;
  std::thread thread_;
  std::atomic<bool> running_{false};
  std::mutex mu_;
  std::vector<MonitorPoint> points_;
  double t0_ = 0, cpu0_ = 0;
  std::optional<uint64_t> energy0_;
  std::vector<uint64_t> rapl0_;
  bool hwm_reset_ = false;
};

double now_s();  // steady clock, seconds

}  // namespace embedkit::bench
