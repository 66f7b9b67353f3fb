#include "grokking/commands.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <new>

#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/heads.hpp"
#include "grokking/irreps.hpp"
#include "grokking/superposition.hpp"
#include "grokking/train.hpp"
#include "grokking/compat.hpp"
#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"
#include "grokking/train.hpp"

namespace grokking {

void init_cli_logging() {
  auto logger = spdlog::stderr_logger_mt("grokking");
  logger->set_pattern("%v");
  spdlog::set_default_logger(logger);
}

std::string describe_exception(const std::exception& e) {
  // No library's raw message reaches the user: what escaped our own translations is named.
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory";
  std::string s = compat::what(e);
  // LibTorch messages can span lines; the user gets the first one.
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  // nlohmann: "[json.exception.out_of_range.403] key 'keys' not found" -> the part after "] ".
  if (dynamic_cast<const nlohmann::json::exception*>(&e)) {
    if (auto pos = s.find("] "); pos != std::string::npos) s = s.substr(pos + 2);
    s = "unexpected JSON content: " + s;
  }
  return s;
}

int run_config_command(const ConfigOptions& opts) {
  if (opts.doc) {
    std::printf("%-24s %-10s %s\n", "key", "default", "meaning");
    // Grouped as the config is: the keys every config has, then each kind's own under its name.
    std::string group;
    for (auto& k : config_docs()) {
      const std::string section = k.key.substr(0, k.key.find('.'));
      const std::string g = !k.kind.empty() ? "with " + k.kind
                            : section == "task" || section == "model" ? section + " (every kind)"
                                                                      : section;
      if (g != group) {
        group = g;
        std::printf("%s%s\n", group == "task (every kind)" ? "" : "\n", group.c_str());
      }
      std::printf("  %-24s %-10s %s\n", k.key.c_str(), k.default_value.c_str(), k.doc.c_str());
    }
    return 0;
  }
  Config c = opts.config_path.empty() ? parse_config("{}", "(defaults)", opts.sets)
                                      : load_config(opts.config_path, opts.sets);
  std::printf("%s\n", config_to_json(c).dump(2).c_str());
  return 0;
}


}  // namespace grokking
