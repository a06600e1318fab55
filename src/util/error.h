// Two kinds of failure (shared/DESIGN.md §3.3):
//  * EK_CHECK: a programmer invariant; aborts with file:line. Never used for user input.
//  * embedkit::Error: bad input, files or options; carries a message a user can act on
//    (which file / tensor / field / line, and what was expected). CLI exit code 1.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace embedkit {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void check_failed(const char* expr, const char* file, int line, const std::string& msg) {
  std::fprintf(stderr, "embedkit: internal error: %s failed at %s:%d %s\n", expr, file, line, msg.c_str());
  std::abort();
}

}  // namespace embedkit

#define EK_CHECK(cond, ...)                                                          \
  do {                                                                               \
    if (!(cond)) ::embedkit::check_failed(#cond, __FILE__, __LINE__, std::string{__VA_ARGS__}); \
  } while (0)
