// Shared by the libFuzzer targets: the tool's own errors are the expected answer to bad input;
// any other exception escaping is a finding (abort, so libFuzzer keeps the input).
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>

#include "grokking/error.hpp"

namespace fuzz {

template <class F>
int expect_tool_errors(F&& f) {
  try {
    f();
  } catch (const grokking::UsageError&) {
  } catch (const grokking::RunError&) {
  } catch (const std::exception& e) {
    std::fprintf(stderr, "finding: a %s escaped: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}

// A private scratch file per process: the file readers are called on a path, as the CLI calls them.
inline std::string scratch_file(const char* name, const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/grokking-fuzz.XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (!d) std::abort();
    return std::string(d);
  }();
  const std::string path = dir + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

}  // namespace fuzz
