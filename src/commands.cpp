#include "grokking/commands.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>

#include "grokking/compat.hpp"
#include "grokking/config.hpp"

namespace grokking {

void init_cli_logging() {
  auto logger = spdlog::stderr_logger_mt("grokking");
  logger->set_pattern("%v");
  spdlog::set_default_logger(logger);
}

std::string describe_exception(const std::exception& e) {
  std::string s = compat::what(e);
  // LibTorch messages can span lines; the user gets the first one.
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

int run_config_command(const std::string& config_path, const std::vector<std::string>& sets, bool doc) {
  if (doc) {
    std::printf("%-24s %-10s %s\n", "key", "default", "meaning");
    for (auto& k : config_docs()) std::printf("%-24s %-10s %s\n", k.key.c_str(), k.default_value.c_str(), k.doc.c_str());
    return 0;
  }
  Config c = config_path.empty() ? parse_config("{}", "(defaults)", sets) : load_config(config_path, sets);
  std::printf("%s\n", config_to_json(c).dump(2).c_str());
  return 0;
}

}  // namespace grokking
