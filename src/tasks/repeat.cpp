// The repeat task (task.kind "repeat"): sequences of L random tokens followed by the same L
// tokens again, the model predicting every next token; the repeated half can be predicted only
// by looking back (an induction head), the first half not at all (Elhage et al. 2021; Olsson et
// al. 2022). Fresh seeded batches every step, one length L per batch drawn from a range; a fixed
// seeded evaluation set holding several lengths. Sequences are padded to the context length with
// a pad token (causal attention: padding after the sequence changes nothing before it).
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "grokking/error.hpp"
#include "grokking/task.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {

struct Spec {
  int64_t vocab, context, repeat_min, repeat_max, eval_sequences;
  bool loss_on_all;
  explicit Spec(const TaskConfig& t)
      : vocab(t.integer("vocab")), context(t.integer("context")), repeat_min(t.integer("repeat_min")),
        repeat_max(t.integer("repeat_max")), eval_sequences(t.integer("eval_sequences")),
        loss_on_all(t.text("loss_on") == "all") {}
  // The lengths the evaluation set holds: the training range; a range of fewer than 4 lengths
  // (a fixed L) widened to [L/2, 2L] within the context, so that a positional shortcut shows.
  std::pair<int64_t, int64_t> eval_range() const {
    if (repeat_max - repeat_min >= 3) return {repeat_min, repeat_max};
    return {std::max<int64_t>(2, repeat_min / 2), std::min(context / 2, 2 * repeat_max)};
  }
};

TaskShape repeat_shape(const TaskConfig& t) {
  const Spec s(t);
  TaskShape shape;
  shape.target = TaskShape::Target::sequence;
  shape.vocab = s.vocab + 1;  // the pad token is vocab
  shape.seq_len = s.context;
  shape.classes = s.vocab;
  shape.fresh_batches = true;
  shape.eval_examples = s.eval_sequences;
  return shape;
}

// One sequence of length 2L into row `row` of x and y: L random tokens, the same L again, pads;
// y scores the repeated half's predictable tokens (positions L..2L-2 predict tokens L+1..2L-1),
// or every next token of the sequence (loss_on "all", as a language model is trained). The
// evaluation set always scores the repeated half: its loss is the measure.
void fill(const Spec& s, int64_t L, const int64_t* h, int64_t row, torch::TensorAccessor<int64_t, 2> x,
          torch::TensorAccessor<int64_t, 2> y, bool all) {
  for (int64_t t = 0; t < s.context; ++t) {
    x[row][t] = t < 2 * L ? h[t % L] : s.vocab;
    y[row][t] = -1;
  }
  for (int64_t t = all ? 0 : L; t + 1 < 2 * L; ++t) y[row][t] = x[row][t + 1];
}

class RepeatTask : public Task {
 public:
  explicit RepeatTask(const TaskConfig& t) : Task(repeat_shape(t)), s_(t), seed_(uint64_t(t.seed)) {
    // The evaluation set: lengths cycling through its range, tokens from a generator of its own.
    const auto [lo, hi] = s_.eval_range();
    auto gen = at::detail::createCPUGenerator(seed_ * 1000003u + 0x5eed);
    eval_.x = torch::empty({s_.eval_sequences, s_.context}, torch::kInt64);
    eval_.y = torch::empty({s_.eval_sequences, s_.context}, torch::kInt64);
    eval_lengths_.clear();
    auto x = eval_.x.accessor<int64_t, 2>(), y = eval_.y.accessor<int64_t, 2>();
    for (int64_t i = 0; i < s_.eval_sequences; ++i) {
      const int64_t L = lo + i % (hi - lo + 1);
      eval_lengths_.push_back(L);
      fill(s_, L, torch::randint(s_.vocab, {L}, gen, torch::kInt64).data_ptr<int64_t>(), i, x, y, false);
    }
  }

  // Step `step`'s batch: one length for the batch, drawn with its tokens from (seed, step).
  Batch train_batch(int64_t step, int64_t batch_size) const override {
    auto gen = at::detail::createCPUGenerator(seed_ * 1000003u + uint64_t(step) + 1);
    const int64_t L = s_.repeat_min + torch::randint(s_.repeat_max - s_.repeat_min + 1, {1}, gen, torch::kInt64).item<int64_t>();
    auto tokens = torch::randint(s_.vocab, {batch_size, L}, gen, torch::kInt64);
    Batch b{torch::empty({batch_size, s_.context}, torch::kInt64), torch::empty({batch_size, s_.context}, torch::kInt64), {}};
    auto x = b.x.accessor<int64_t, 2>(), y = b.y.accessor<int64_t, 2>();
    const int64_t* t = tokens.data_ptr<int64_t>();  // [batch_size, L], contiguous
    for (int64_t i = 0; i < batch_size; ++i) fill(s_, L, t + i * L, i, x, y, s_.loss_on_all);
    return b;
  }
  Batch eval_batch() const override { return eval_; }

  // Clean: the evaluation sequences; corrupted: other repeated sequences of the same lengths
  // (fresh tokens, repeated): every token differs, the structure stays. The metric: the mean
  // log-probability of the clean repeat's tokens (what an induction circuit predicts).
  PatchSets patch_sets(uint64_t seed) const override {
    PatchSets p;
    p.clean = eval_.x;
    p.corrupted = eval_.x.clone();
    auto gen = at::detail::createCPUGenerator(seed * 1000003u + 0xc0ffee);
    auto c = p.corrupted.accessor<int64_t, 2>();
    for (int64_t i = 0; i < eval_.x.size(0); ++i) {
      const int64_t L = eval_lengths_[size_t(i)];
      const auto fresh = torch::randint(s_.vocab, {L}, gen, torch::kInt64);
      for (int64_t t = 0; t < L; ++t) c[i][t] = c[i][L + t] = fresh[t].item<int64_t>();
    }
    const auto y = eval_.y;
    p.metric = [y](const torch::Tensor& logits) {  // [N, T, V]
      const auto lp = logits.to(torch::kCPU, torch::kFloat64).log_softmax(-1);
      const auto flat_y = y.reshape({-1});
      const auto idx = flat_y.ge(0).nonzero().squeeze(1);
      return lp.reshape({-1, lp.size(-1)}).index_select(0, idx).gather(1, flat_y.index_select(0, idx).unsqueeze(1)).mean().item<double>();
    };
    p.metric_name = "mean log-probability of the repeated half's tokens";
    p.corruption = "another repeated sequence of fresh tokens, of the same length";
    return p;
  }

  // The first half's loss: positions 0..L-2 predicting tokens 1..L-1, which nothing can predict
  // (ln vocab at best); and Olsson et al.'s in-context-learning score scaled to this context: the
  // loss at the repeat's last predicted token (position 2L-2) minus the loss early in the first
  // half (position floor(L/4)), over the evaluation sequences. The score only where the first
  // half is trained (loss_on "all"): with the loss on the repeat alone the early position's loss
  // is an untrained one (about 10 nats), and the difference measures that, not in-context learning.
  std::vector<std::string> extra_columns() const override {
    if (s_.loss_on_all) return {"first_half_loss", "icl_score"};
    return {"first_half_loss"};
  }
  std::vector<std::vector<double>> extra_measures(const torch::Tensor& outputs, const Batch& eval) const override {
    const auto logp = outputs.to(torch::kCPU, torch::kFloat64).log_softmax(-1).contiguous();  // [S, N, C, V]
    const auto x = eval.x.to(torch::kCPU, torch::kInt64).contiguous();
    const int64_t S = logp.size(0), n = x.size(0);
    const auto lp = logp.accessor<double, 4>();
    const auto xs = x.accessor<int64_t, 2>();
    std::vector<double> first(size_t(S), 0.0), icl(size_t(S), 0.0);
    double first_count = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t L = eval_lengths_.at(size_t(i));
      for (int64_t r = 0; r < S; ++r) {
        double sum = 0;  // the first half's log-probabilities of each next token
        for (int64_t t = 0; t + 1 < L; ++t) sum += lp[r][i][t][xs[i][t + 1]];
        first[size_t(r)] -= sum;
        const double late = lp[r][i][2 * L - 2][xs[i][2 * L - 1]], early = lp[r][i][L / 4][xs[i][L / 4 + 1]];
        icl[size_t(r)] += (-late) - (-early);
      }
      first_count += double(L - 1);
    }
    for (int64_t r = 0; r < S; ++r) first[size_t(r)] /= first_count, icl[size_t(r)] /= double(n);
    if (!s_.loss_on_all) return {first};
    return {first, icl};
  }

 private:
  Spec s_;
  uint64_t seed_;
  Batch eval_;
  std::vector<int64_t> eval_lengths_;
};

void repeat_validate(const Config& c, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  const Spec s(c.task);
  if (s.repeat_min > s.repeat_max)
    bad("/task/repeat_min", "must be at most repeat_max (" + std::to_string(s.repeat_max) + "; got " +
                                std::to_string(s.repeat_min) + "): the range of repeat lengths is empty");
  if (2 * s.repeat_max > s.context)
    bad("/task/context", "must hold twice the longest repeat: 2*repeat_max = " + std::to_string(2 * s.repeat_max) +
                             " (got " + std::to_string(s.context) + ")");
}

}  // namespace

const TaskKind& repeat_task() {
  static const TaskKind kind = [] {
    TaskKind k;
    k.name = "repeat";
    k.doc = "L random tokens then the same L again, next-token prediction (induction heads: Elhage et al. 2021, Olsson et al. 2022); fresh batches every step";
    k.keys = {
        integer_key("vocab", 64, 2, 65536, "tokens 0..vocab-1 (the pad token is vocab)"),
        integer_key("context", 64, 4, 4096, "sequence length the model sees (padded); at least 2*repeat_max"),
        integer_key("repeat_min", 8, 2, 2048, "shortest repeated segment L (each batch draws L from [repeat_min, repeat_max])"),
        integer_key("repeat_max", 32, 2, 2048,
                    "longest L; repeat_min = repeat_max fixes L, and then a model can learn 'attend to t - L + 1' by position: the evaluation set then holds lengths from L/2 to 2L to show it"),
        integer_key("eval_sequences", 512, 4, 1 << 20, "sequences of the fixed evaluation set (lengths cycling through its range)"),
        choice_key("loss_on", "repeat", {"repeat", "all"},
                   "the training loss on the repeated half's predictable tokens, or on every next token (as a language model); the evaluation always measures the repeated half"),
    };
    k.size_key = "eval_sequences";
    k.shape = repeat_shape;
    k.describe = [](const TaskConfig& t) {
      return "repeat (vocab " + std::to_string(t.integer("vocab")) + ", L " + std::to_string(t.integer("repeat_min")) +
             "-" + std::to_string(t.integer("repeat_max")) + ")";
    };
    k.structure = [](const TaskConfig&) { return Capabilities().add(Capability::sequence); };
    k.validate = repeat_validate;
    k.make = [](const std::vector<TaskConfig>& replicas) -> std::unique_ptr<Task> {
      return std::make_unique<RepeatTask>(replicas.at(0));
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
