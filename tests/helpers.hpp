#pragma once
#include <cstdlib>
#include <string>
#include <unistd.h>

#include "grokking/config.hpp"

namespace grokking::test {

// A tiny, fast config: P=11, a two-head model of width 16.
inline Config tiny_config(int64_t p = 11) {
  Config c;
  c.task.p = p;
  c.task.frac_train = 0.5;
  c.task.seed = 1;
  c.model.d_model = 16;
  c.model.n_heads = 2;
  c.model.d_head = 8;
  c.model.d_mlp = 32;
  c.train.seed = 2;
  c.train.epochs = 50;
  c.train.eval_every = 10;
  c.train.checkpoint_every = 20;
  c.train.threads = 1;
  c.train.device = "cpu";
  return c;
}

// A fresh empty directory under the build tree's temporary area.
inline std::string temp_dir(const std::string& name) {
  std::string base = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") + "/grokking-test-" +
                     std::to_string(::getpid()) + "-" + name;
  std::string cmd = "rm -rf '" + base + "' && mkdir -p '" + base + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot create " + base);
  return base;
}

inline std::string source_dir() { return GROKKING_SOURCE_DIR; }

}  // namespace grokking::test
