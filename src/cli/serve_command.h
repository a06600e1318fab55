// Registers `embedkit serve` on the CLI; when chosen, `run` is set to the command's body.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

namespace embedkit {
void add_serve_command(CLI::App& app, std::function<int()>& run);
}
