// Beyond addition: the cycle each operation rotates on (unit tests by hand), and the grokking
// signature of configs/ci-small-sub.json and configs/ci-small-mul.json (trained once each).
#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "catch.hpp"
#include "grokked_run.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/progress.hpp"
#include "grokking/text.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {
TaskConfig task(const std::string& op, int64_t p) {
  TaskConfig t;
  t.set("operation", op).set("p", p).set("frac_train", 0.5);
  return t;
}
}  // namespace

TEST_CASE("the discrete-log cycle of mul and div: a generator, indices that turn products into sums", "[analysis]") {
  CHECK(primitive_root(7) == 3);    // 2 has order 3 mod 7
  CHECK(primitive_root(23) == 5);
  CHECK(primitive_root(113) == 3);
  for (const char* op : {"mul", "div"}) {
    const int64_t p = 13;
    auto c = cycle_of(task(op, p));
    INFO(op);
    REQUIRE(c.n == p - 1);
    CHECK(c.index_of[0] == -1);  // 0 has no logarithm
    CHECK(std::set<int64_t>(c.value_of.begin(), c.value_of.end()).size() == size_t(p - 1));
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t j = 0; j < c.n; ++j) {
        const int64_t a = c.value_of[size_t(i)], b = c.value_of[size_t(j)];
        const int64_t y = apply_operation(op, a, b, p);
        CHECK(c.index_of[size_t(y)] == ((i + c.b_sign * j) % c.n + c.n) % c.n);
      }
  }
  auto sub = cycle_of(task("sub", 11));
  CHECK(sub.n == 11);
  CHECK(sub.b_sign == -1);
  CHECK(sub.value_of[4] == 4);
  CHECK_THROWS_AS(cycle_of(task("mul", 12)), UsageError);  // not prime: no cyclic group of units
}

TEST_CASE("relation directions: orthonormal, equal to the paper's for add, zero off the cycle", "[analysis]") {
  for (const char* op : {"add", "sub", "mul", "div"}) {
    INFO(op);
    const int64_t p = 11;
    auto t = task(op, p);
    auto c = cycle_of(t);
    auto pairs = make_dataset(t).all_x;
    std::vector<int64_t> freqs;
    for (int64_t k = 1; k <= n_frequencies(c.n); ++k) freqs.push_back(k);
    auto d = relation_directions(c, pairs, freqs);
    auto gram = d.matmul(d.t());
    CHECK(test::max_rel_diff(gram, torch::eye(d.size(0), torch::kFloat64), std::string(op) + " gram") < 1e-10);
    // A logit table that is a function of the label's index alone lies in their span plus the
    // constant (on the cycle's pairs).
    auto acc = pairs.accessor<int64_t, 2>();
    std::vector<double> f;
    for (int64_t r = 0; r < pairs.size(0); ++r) {
      const int64_t i = c.index_of[size_t(acc[r][0])], j = c.index_of[size_t(acc[r][1])];
      const int64_t y = apply_operation(op, acc[r][0], acc[r][1], p);
      f.push_back(i < 0 || j < 0 ? 0.0 : std::cos(2 * M_PI * 2 * double(c.index_of[size_t(y)]) / double(c.n) + 0.3));
    }
    auto logits = torch::tensor(f, torch::kFloat64).unsqueeze(1);
    CHECK(test::max_rel_diff(project_onto(logits, d), logits, std::string(op) + " in span") < 1e-10);
  }
  // For add over all pairs, the directions are cos/sin(w_k(a+b)) normalised.
  const int64_t p = 7;
  auto d = relation_directions(cycle_of(task("add", p)), make_dataset(task("add", p)).all_x, {2});
  auto a = torch::arange(p, torch::kFloat64).view({p, 1}), b = torch::arange(p, torch::kFloat64).view({1, p});
  auto cosine = torch::cos(2 * M_PI * 2 * (a + b) / double(p)).reshape(-1);
  CHECK(test::max_rel_diff(d[0], cosine / cosine.norm(), "add cos direction") < 1e-12);
}

TEST_CASE("the logit trig fit recovers planted coefficients, on every cycle", "[analysis]") {
  for (const char* op : {"add", "sub", "mul"}) {
    INFO(op);
    const int64_t p = 13;
    auto t = task(op, p);
    auto c = cycle_of(t);
    auto pairs = make_dataset(t).all_x;
    auto acc = pairs.accessor<int64_t, 2>();
    // logits = 3 cos(w_2(i + s j - l)) + 1.5 cos(w_5(...)) + a per-pair constant, on the cycle.
    auto logits = torch::zeros({pairs.size(0), p}, torch::kFloat64);
    auto L = logits.accessor<double, 2>();
    for (int64_t r = 0; r < pairs.size(0); ++r) {
      const int64_t i = c.index_of[size_t(acc[r][0])], j = c.index_of[size_t(acc[r][1])];
      for (int64_t v = 0; v < p; ++v) {
        const int64_t l = c.index_of[size_t(v)];
        if (i < 0 || j < 0 || l < 0) continue;
        const double m = double(i + c.b_sign * j - l);
        L[r][v] = 3 * std::cos(2 * M_PI * 2 * m / double(c.n)) + 1.5 * std::cos(2 * M_PI * 5 * m / double(c.n)) + double(r % 7);
      }
    }
    auto fit = fit_logit_trig(logits, c, pairs, {2, 5});
    REQUIRE(fit.alpha.size() == 2);
    CHECK(fit.alpha[0] == Approx(3.0).epsilon(1e-10));
    CHECK(fit.alpha[1] == Approx(1.5).epsilon(1e-10));
    CHECK(fit.frac_variance == Approx(1.0).epsilon(1e-10));
    CHECK(fit.acc == 1.0);
    // One frequency alone explains its share: 9 / (9 + 2.25).
    CHECK(fit_logit_trig(logits, c, pairs, {2}).frac_variance == Approx(9.0 / 11.25).epsilon(1e-10));
  }
}

TEST_CASE("operations without a cycle are refused in one line", "[analysis]") {
  for (auto op : {"x^2+y^2", "mixed"}) {
    INFO(op);
    CHECK_THROWS_AS(require_fourier_basis(task(op, 23)), UsageError);
  }
  for (auto op : {"add", "sub", "mul", "div"}) CHECK_NOTHROW(require_fourier_basis(task(op, 23)));
}

// ---- the grokking signature of each operation's small config ----
namespace {
void check_signature(const std::string& name) {
  const auto& run = test::grokked_run(name);
  const auto& rep = run.report;
  REQUIRE(rep.milestones.memorised.has_value());
  REQUIRE(rep.milestones.grokked.has_value());
  CHECK(*rep.milestones.grokked - *rep.milestones.memorised >= 500);
  CHECK(rep.final.test_acc >= 0.99);

  auto ck = load_checkpoint(resolve_checkpoint(run.dir));
  Model m = model_from_checkpoint(ck);
  auto data = make_dataset(ck.config.task);
  const Cycle cycle = cycle_of(ck.config.task);
  // A sparse spectrum: a few key frequencies, found alike by both methods.
  auto f = analyse_fourier(m);
  INFO(name << ": key frequencies " << join_numbers(f.key_neurons));
  CHECK(!f.key_neurons.empty());
  CHECK(f.key_neurons.size() <= 5);
  CHECK(f.agree());
  CHECK(f.frac_neurons_clustered >= 0.5);
  // Ablations: the key frequencies carry the model, as many other frequencies nothing.
  auto rows = ablate(m, data, AblateOptions{});
  auto find = [&](const std::string& prefix, const std::string& space) { return test::find_ablation(rows, prefix, space); };
  // Pairs off the cycle (a 0 under mul) keep their logits: chance is reached on the others.
  const double off_share = double(data.all_x.size(0) - cycle.n * cycle.n) / double(data.all_x.size(0));
  const double chance = 1.0 / double(cycle.p);
  CHECK(find("remove all key freqs", "logits").all.acc < off_share + 3 * chance);
  CHECK(find("remove all key freqs from W_E", "weights").all.acc < off_share + 3 * chance);
  CHECK(find("keep only key freqs (restricted)", "logits").test.acc >= 0.99);
  // The logit-space controls, random and largest, leave the model intact. (In weight space the
  // largest non-key frequencies of W_E do matter for sub at P = 23: not asserted; README.)
  for (auto& r : rows)
    if (r.name.find("(control)") != std::string::npos && r.space == "logits") CHECK(r.test.acc >= 0.98);
  // The logits' trig form over the key frequencies, and the excluded loss per frequency.
  auto fit = fit_logit_trig(m, data, f.key_neurons);
  CHECK(fit.frac_variance >= 0.7);
  CHECK(fit.acc >= 0.99);
  auto by_freq = excluded_loss_by_frequency(m, data);
  double key_min = 1e300, other_max = 0;
  for (size_t i = 0; i < by_freq.size(); ++i) {
    const bool key = std::count(f.key_neurons.begin(), f.key_neurons.end(), int64_t(i + 1)) > 0;
    if (key) key_min = std::min(key_min, by_freq[i]);
    else other_max = std::max(other_max, by_freq[i]);
  }
  CHECK(key_min > 100 * other_max);
  // Progress measures run over the whole run; excluded loss ends far above restricted loss.
  auto progress = measure_progress(run.dir, {});
  REQUIRE(!progress.rows.empty());
  CHECK(progress.rows.back().excluded_loss > 100 * progress.rows.back().restricted_loss);
}
}  // namespace

TEST_CASE("configs/ci-small-sub.json groks, and its analysis in the a-b directions shows the signature", "[ci-small-sub]") {
  check_signature("ci-small-sub");
}

TEST_CASE("configs/ci-small-mul.json groks, and its analysis over discrete logs shows the signature", "[ci-small-mul]") {
  check_signature("ci-small-mul");
}
