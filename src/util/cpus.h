// CPUs this process may run on: the affinity mask (taskset, cgroup cpusets, container limits
// applied as cpusets), not the machine's count that std::thread::hardware_concurrency() reports.
// Thread pools sized from it do not oversubscribe a pinned process.
#pragma once
#include <sched.h>

#include <thread>

namespace embedkit {

inline int usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc > 0 ? int(hc) : 1;
}

}  // namespace embedkit
