// Every difference between LibTorch 1.13 (Debian) and 2.x lives here.
#pragma once
#include <torch/torch.h>

#ifndef TORCH_VERSION_MAJOR
#include <torch/version.h>
#endif

namespace grokking::compat {

// The message of a c10::Error without its C++ backtrace.
inline std::string what(const std::exception& e) {
  if (auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

inline std::string torch_version() {
  return std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
         std::to_string(TORCH_VERSION_PATCH);
}

}  // namespace grokking::compat
