// `embedkit bench`: EmbedBench scenarios from the command line (src/bench does the work).
#pragma once
#include <CLI/CLI.hpp>

namespace embedkit::cli {

// Registers the subcommand on `app`; call run_bench_command() after parsing when it was chosen.
CLI::App* add_bench_command(CLI::App& app);
int run_bench_command(int argc, char** argv);

}  // namespace embedkit::cli
