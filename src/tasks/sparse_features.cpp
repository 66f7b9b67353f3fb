// The sparse-features task (task.kind "sparse_features"; Elhage et al. 2022, "Toy Models of
// Superposition"): n features, each 0 with probability S (the sparsity) and otherwise uniform in
// [0, 1), to be reproduced at the output under the importance-weighted squared error. Fresh
// seeded batches every step and a fixed seeded evaluation set. Runs packed side by side may
// differ in sparsity and importances: every replica draws the same uniforms (from the task's seed
// and the step) and keeps each feature where its own threshold says, so a run's batches are the
// same alone or in a pack.

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "grokking/error.hpp"
#include "grokking/task.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {

// Feature i's importance: importances[i] when that list is given, else importance_decay^i.
std::vector<double> importances_of(const TaskConfig& t) {
  const int64_t n = t.integer("n_features");
  auto list = t.reals("importances");
  if (!list.empty()) return list;
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(std::pow(t.real("importance_decay"), double(i)));
  return out;
}

TaskShape sparse_shape(const TaskConfig& t) {
  TaskShape s;
  s.target = TaskShape::Target::reconstruct;
  s.features = s.classes = t.integer("n_features");
  s.fresh_batches = true;
  s.eval_examples = t.integer("eval_examples");
  return s;
}

// The stream torch::rand draws from a CPU generator made with createCPUGenerator(seed) (ATen's
// MT19937, seeded with the seed's low 32 bits; a float is (word & (2^24 - 1)) / 2^24), made 624
// words at a time in loops the compiler vectorises instead of one virtual call a number: at
// 1024 x 5 features two draws took a third of a pentagon's step. A test holds it to torch::rand
// bit for bit, so runs keep their batches.
class Mt19937 {
 public:
  explicit Mt19937(uint64_t seed) {
    s_[0] = uint32_t(seed & 0xffffffffu);
    for (uint32_t j = 1; j < kN; ++j) s_[j] = 1812433253u * (s_[j - 1] ^ (s_[j - 1] >> 30)) + j;
  }
  // n uniforms in [0, 1), as torch::rand gives them.
  void uniform(float* __restrict__ out, int64_t n) {
    while (n > 0) {
      if (next_ == kN) twist();
      const int64_t take = std::min<int64_t>(n, int64_t(kN - next_));
      const uint32_t* __restrict__ w = s_ + next_;
      for (int64_t i = 0; i < take; ++i) {
        uint32_t y = w[i];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        out[i] = float(y & 0xffffffu) * (1.0f / 16777216.0f);
      }
      next_ += uint32_t(take), out += take, n -= take;
    }
  }

 private:
  static constexpr uint32_t kN = 624, kM = 397;
  static uint32_t mix(uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
  }
  void twist() {
    uint32_t k = 0;
    for (; k < kN - kM; ++k) s_[k] = s_[k + kM] ^ mix(s_[k], s_[k + 1]);
    for (; k < kN - 1; ++k) s_[k] = s_[k + kM - kN] ^ mix(s_[k], s_[k + 1]);
    s_[kN - 1] = s_[kM - 1] ^ mix(s_[kN - 1], s_[0]);
    next_ = 0;
  }
  uint32_t s_[kN];
  uint32_t next_ = kN;
};

// out[j] = keep[j] < density ? values[j] : 0, written for the vectoriser: the value loaded whatever
// the test (a select, not a branch on random bits), no aliasing.
void keep_where(float* __restrict__ out, const float* __restrict__ values, const float* __restrict__ keep, float density,
                int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    const float v = values[j];
    out[j] = keep[j] < density ? v : 0.0f;
  }
}

// Feature sets (Elhage et al. 2022, "Superposition and correlated features"; the sampling of
// ARENA's generate_correlated_features / generate_anticorrelated_features): consecutive sets of
// k features. Correlated: a set's features are present together, the set with probability
// 1 - S. Anticorrelated: at most one of a set is present: the set with probability k (1 - S),
// then one member uniformly; each feature keeps its density 1 - S either way. Written as a
// rewrite of the keep draws, so that every replica's own threshold (keep < 1 - S) still decides:
// correlated, each feature takes its set's first draw; anticorrelated, the chosen member takes
// that draw / k (below 1 - S exactly when the set's draw is below k (1 - S)) and the others 2
// (never kept). The second member's draw picks the member. keep: [N, n], n a multiple of k.
void correlate_sets(float* keep, int64_t rows, int64_t n, int64_t k, bool anti) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = keep + r * n;
    for (int64_t first = 0; first < n; first += k) {
      const float draw = row[first];
      if (!anti) {
        for (int64_t j = 1; j < k; ++j) row[first + j] = draw;
        continue;
      }
      const auto chosen = std::min(k - 1, int64_t(row[first + 1] * float(k)));
      for (int64_t j = 0; j < k; ++j) row[first + j] = j == chosen ? draw / float(k) : 2.0f;
    }
  }
}

class SparseFeaturesTask : public Task {
 public:
  explicit SparseFeaturesTask(const std::vector<TaskConfig>& replicas)
      : Task(sparse_shape(replicas.at(0))), n_(replicas[0].integer("n_features")), seed_(uint64_t(replicas[0].seed)),
        set_size_(replicas[0].keys.value("set_size", int64_t(1))),
        anti_(replicas[0].keys.value("sets", std::string("correlated")) == "anticorrelated"),
        signed_(replicas[0].keys.value("values", std::string("unsigned")) == "signed"),
        abs_(replicas[0].keys.value("target", std::string("x")) == "abs") {
    std::vector<double> density, weight;
    for (auto& t : replicas) {
      density.push_back(1.0 - t.real("sparsity"));
      for (auto v : importances_of(t)) weight.push_back(v);
    }
    const auto S = int64_t(replicas.size());
    density_ = torch::tensor(density, torch::kFloat32).view({S, 1, 1});
    weight_ = torch::tensor(weight, torch::kFloat32).view({S, n_});
    eval_ = draw(seed_ * 1000003u + 0x5eed, replicas[0].integer("eval_examples"));
  }
  Batch train_batch(int64_t step, int64_t batch_size) const override {
    return draw(seed_ * 1000003u + uint64_t(step) + 1, batch_size);
  }
  Batch eval_batch() const override { return eval_; }

  // Clean: the evaluation examples, example i with feature i mod n on (at 1); corrupted: the same
  // with that feature off (0). The metric: the model's output for that feature, the mean over the
  // examples (what its reconstruction of a present feature is).
  PatchSets patch_sets(uint64_t seed) const override {
    (void)seed;  // the evaluation set is the task's own, drawn from its seed
    PatchSets p;
    const auto x = eval_.x[0];  // replica 0's examples [N, n]
    const int64_t N = x.size(0);
    const auto feature = torch::arange(N, torch::kInt64).remainder(n_);
    const auto rows = torch::arange(N, torch::kInt64);
    p.clean = x.clone(), p.corrupted = x.clone();
    p.clean.index_put_({rows, feature}, 1.0f);
    p.corrupted.index_put_({rows, feature}, 0.0f);
    p.metric = [feature](const torch::Tensor& out) {  // [N, n] (or [1, N, n])
      const auto o = (out.dim() == 3 ? out[0] : out).to(torch::kCPU, torch::kFloat64);
      return o.gather(1, feature.unsqueeze(1)).mean().item<double>();
    };
    p.metric_name = "the output of the feature switched on (mean over the examples)";
    p.corruption = "the feature off (each example switches one feature, i mod n)";
    return p;
  }

 private:
  // One set of uniforms from the generator, thresholded per replica: x [S, N, n].
  Batch draw(uint64_t generator_seed, int64_t size) const {
    Mt19937 gen(generator_seed);  // torch::rand's draws from createCPUGenerator(generator_seed)
    auto values = torch::empty({1, size, n_}, torch::kFloat32), keep = torch::empty({1, size, n_}, torch::kFloat32);
    gen.uniform(values.data_ptr<float>(), size * n_);
    if (signed_) values = values.mul_(2).sub_(1);  // uniform in [-1, 1)
    gen.uniform(keep.data_ptr<float>(), size * n_);
    if (set_size_ > 1) correlate_sets(keep.data_ptr<float>(), size, n_, set_size_, anti_);
    // x = where(keep < density, values, 0) [S, N, n], in one pass per replica (the same values).
    const int64_t S = density_.size(0), count = size * n_;
    auto x = torch::empty({S, size, n_}, torch::kFloat32);
    const float* v = values.data_ptr<float>();
    const float* k = keep.data_ptr<float>();
    const float* d = density_.data_ptr<float>();
    float* px = x.data_ptr<float>();
    at::parallel_for(0, S, 1, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) {
        const float density = d[s];
        float* out = px + s * count;
        keep_where(out, v, k, density, count);
      }
    });
    return Batch{x, abs_ ? x.abs() : x, weight_};
  }
  int64_t n_;
  uint64_t seed_;
  int64_t set_size_;
  bool anti_, signed_, abs_;
  torch::Tensor density_, weight_;
  Batch eval_;
};

void sparse_validate(const Config& c, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  const auto& t = c.task;
  const auto list = t.reals("importances");
  if (!list.empty() && int64_t(list.size()) != t.integer("n_features"))
    bad("/task/importances", "must give one importance per feature: " + std::to_string(t.integer("n_features")) +
                                 " (got " + std::to_string(list.size()) + "; or leave it empty and set importance_decay)");
  if (!list.empty() && t.real("importance_decay") != 1.0)
    bad("/task/importance_decay", "is unused when importances are listed; leave it at 1");
  const int64_t k = t.integer("set_size"), n = t.integer("n_features");
  if (n % k != 0)
    bad("/task/set_size", "must divide n_features (" + std::to_string(n) + ") into whole sets (got " + std::to_string(k) + ")");
  if (k == 1 && t.text("sets") != "correlated")
    bad("/task/sets", "\"" + t.text("sets") + "\" needs set_size of at least 2");
  if (k > 1 && t.text("sets") == "anticorrelated" && double(k) * (1.0 - t.real("sparsity")) > 1.0 + 1e-12)
    bad("/task/sparsity", "anticorrelated sets of " + std::to_string(k) + " need k (1 - S) <= 1, so S >= " +
                              format_number(1.0 - 1.0 / double(k), "%g") + " (got " +
                              format_number(t.real("sparsity"), "%g") + ")");
}

}  // namespace

const TaskKind& sparse_features_task() {
  static const TaskKind kind = [] {
    TaskKind k;
    k.name = "sparse_features";
    k.doc = "n sparse features to reproduce, importance-weighted (Elhage et al. 2022, toy models of superposition); fresh batches every step";
    k.keys = {
        integer_key("n_features", 5, 1, 100000, "features n"),
        real_key("sparsity", 0.0, 0, false, 1, true, "S: each feature is 0 with probability S, else uniform in [0, 1)"),
        real_key("importance_decay", 1.0, 0, false, 1e6, false, "r: feature i's importance is r^i (when importances is empty)"),
        real_list_key("importances", {}, 0, 1e6, 100000, "each feature's importance (overrides importance_decay)"),
        integer_key("eval_examples", 10000, 1, 1 << 24, "examples of the fixed evaluation set"),
        integer_key("set_size", 1, 1, 100000,
                    "k: features in consecutive sets of k (1: independent), related as `sets` says"),
        choice_key("values", "unsigned", {"unsigned", "signed"},
                   "a present feature's value: unsigned, uniform in [0, 1); signed, uniform in [-1, 1)"),
        choice_key("target", "x", {"x", "abs"},
                   "what the model reproduces: x itself, or |x| (computation in superposition, with model.kind "
                   "\"toy_mlp\")"),
        choice_key("sets", "correlated", {"correlated", "anticorrelated"},
                   "correlated: a set's features present together; anticorrelated: at most one of a set present "
                   "(each feature's density stays 1 - S)"),
    };
    k.pack_varying = {"sparsity", "importance_decay", "importances"};
    k.size_key = "eval_examples";
    k.shape = sparse_shape;
    k.describe = [](const TaskConfig& t) {
      std::string sets;
      if (t.integer("set_size") > 1) sets = ", " + t.text("sets") + " sets of " + std::to_string(t.integer("set_size"));
      const std::string what = t.text("target") == "abs" ? " |x| of" : "";
      return std::to_string(t.integer("n_features")) + what + (t.text("values") == "signed" ? " signed" : "") +
             " sparse features (S " + format_number(t.real("sparsity"), "%g") + sets + ")";
    };
    k.structure = [](const TaskConfig&) { return Capabilities().add(Capability::features); };
    k.validate = sparse_validate;
    k.make = [](const std::vector<TaskConfig>& replicas) -> std::unique_ptr<Task> {
      return std::make_unique<SparseFeaturesTask>(replicas);
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
