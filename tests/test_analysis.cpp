#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "catch.hpp"
#include "grokked_run.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "helpers.hpp"

using namespace grokking;

TEST_CASE("the Fourier basis is orthonormal, for odd and even P", "[analysis]") {
  for (int64_t p : {113, 23, 12}) {
    auto F = fourier_basis(p);
    CHECK(F.size(0) == p);
    CHECK((F.matmul(F.t()) - torch::eye(p, torch::kFloat64)).abs().max().item<double>() < 1e-12);
  }
  CHECK(n_frequencies(113) == 56);
  CHECK(frequency_rows(113, 56) == std::vector<int64_t>{111, 112});  // the last frequency is tested too
  CHECK(frequency_rows(12, 6) == std::vector<int64_t>{11});
}

TEST_CASE("a planted pure-frequency embedding has all its norm at that frequency", "[analysis]") {
  const int64_t p = 31, d = 8, k = 7;
  auto x = torch::arange(p, torch::kFloat64).unsqueeze(1);
  auto v1 = torch::randn({1, d}, torch::kFloat64), v2 = torch::randn({1, d}, torch::kFloat64);
  auto W = torch::cos(2 * M_PI * k * x / p).matmul(v1) + torch::sin(2 * M_PI * k * x / p).matmul(v2);
  auto norms = frequency_norms(W);
  REQUIRE(norms.size() == 15);
  // ||cos||^2 = P/2, so the norm is sqrt(P/2 (|v1|^2 + |v2|^2)).
  double expect = std::sqrt(p / 2.0 * (v1.pow(2).sum().item<double>() + v2.pow(2).sum().item<double>()));
  CHECK(norms[k - 1] == Approx(expect).epsilon(1e-10));
  for (int64_t j = 1; j <= 15; ++j)
    if (j != k) CHECK(norms[size_t(j - 1)] < 1e-10);
  // Its cos and sin parts apart: sqrt(P/2) |v1| and sqrt(P/2) |v2|.
  auto parts = frequency_components(W);
  CHECK(parts.cos[k - 1] == Approx(std::sqrt(p / 2.0 * v1.pow(2).sum().item<double>())).epsilon(1e-10));
  CHECK(parts.sin[k - 1] == Approx(std::sqrt(p / 2.0 * v2.pow(2).sum().item<double>())).epsilon(1e-10));
  // Even P: the last frequency has a cos row only.
  auto even = frequency_components(torch::cos(M_PI * torch::arange(12, torch::kFloat64)).unsqueeze(1));
  CHECK(even.cos.back() == Approx(std::sqrt(12.0)).epsilon(1e-10));
  CHECK(even.sin.back() == 0.0);
  // One non-zero value among n: Gini = (n-1)/n. Equal values: 0.
  CHECK(gini(norms) == Approx(14.0 / 15.0).epsilon(1e-9));
  CHECK(gini(std::vector<double>(10, 2.5)) == Approx(0.0).margin(1e-12));
}

TEST_CASE("logits built from one frequency's (a+b) directions are kept whole by the projection", "[analysis]") {
  const int64_t p = 13;
  auto a = torch::arange(p, torch::kFloat64).view({p, 1, 1}), b = torch::arange(p, torch::kFloat64).view({1, p, 1});
  auto c = torch::arange(p, torch::kFloat64).view({1, 1, p});
  // The paper's algorithm: logit(c) = cos(w(a+b-c)) for w = 2*pi*3/P, plus another frequency.
  auto pure = torch::cos(2 * M_PI * 3 * (a + b - c) / p).reshape({p * p, p});
  auto other = 0.5 * torch::cos(2 * M_PI * 5 * (a + b - c) / p).reshape({p * p, p});
  auto kept = project_sum_directions(pure + other, p, {3});
  CHECK((kept - pure).abs().max().item<double>() < 1e-10);
  CHECK(project_sum_directions(pure, p, {4}).abs().max().item<double>() < 1e-10);
}

TEST_CASE("neuron spectra of planted activations have their closed forms", "[analysis]") {
  const int64_t p = 11;
  auto a = torch::arange(p, torch::kFloat64).view({p, 1}).expand({p, p}).reshape(-1);  // row-major (a, b)
  auto b = torch::arange(p, torch::kFloat64).view({1, p}).expand({p, p}).reshape(-1);
  auto w = [&](int64_t k) { return 2 * M_PI * double(k) / double(p); };
  auto acts = torch::stack({
                               5 + torch::cos(w(3) * a) * torch::sin(w(3) * b),  // both inputs at k=3, offset
                               torch::cos(w(2) * a) + 2 * torch::sin(w(4) * b),  // variance 1 : 4 at k=2, k=4
                               torch::full({p * p}, 7.0, torch::kFloat64),       // constant: no variance
                               torch::cos(w(1) * a) * torch::cos(w(2) * b),      // two frequencies: no block
                           },
                           1);
  auto s = neuron_spectrum(acts, p);
  REQUIRE(s.frac.sizes() == torch::IntArrayRef({5, 4}));
  auto f = [&](int64_t k, int64_t neuron) { return s.frac[k - 1][neuron].item<double>(); };
  // Variance over the P^2 pairs: cos^2 averages 1/2, a product of two 1/4.
  CHECK(s.variance[0].item<double>() == Approx(p * p / 4.0).epsilon(1e-5));
  CHECK(s.variance[1].item<double>() == Approx(p * p * (0.5 + 2.0)).epsilon(1e-5));
  CHECK(s.variance[2].item<double>() == Approx(0.0).margin(1e-6));
  CHECK(f(3, 0) == Approx(1.0).epsilon(1e-5));
  CHECK(f(2, 1) == Approx(0.2).epsilon(1e-5));
  CHECK(f(4, 1) == Approx(0.8).epsilon(1e-5));
  for (int64_t k = 1; k <= 5; ++k) {
    CHECK(f(k, 3) == Approx(0.0).margin(1e-5));
    if (k != 3) CHECK(f(k, 0) == Approx(0.0).margin(1e-5));
    if (k != 2 && k != 4) CHECK(f(k, 1) == Approx(0.0).margin(1e-5));
  }
}

TEST_CASE("train, test and all-pairs loss and accuracy from one pass", "[analysis]") {
  // Three pairs, three classes: the first two are training pairs.
  auto logits = torch::tensor({0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0}, torch::kFloat64).view({3, 3});
  auto labels = torch::tensor({1, 1, 2}, torch::kInt64);
  auto mask = torch::tensor({true, true, false});
  auto ev = evaluate_splits(logits, labels, mask);
  auto nll = [](double correct, double o1, double o2) {
    return -correct + std::log(std::exp(correct) + std::exp(o1) + std::exp(o2));
  };
  const double l0 = nll(1, 0, 0), l1 = nll(0, 2, 0), l2 = nll(3, 0, 0);
  CHECK(ev.train.loss == Approx((l0 + l1) / 2).epsilon(1e-12));
  CHECK(ev.train.acc == Approx(0.5));
  CHECK(ev.test.loss == Approx(l2).epsilon(1e-12));
  CHECK(ev.test.acc == Approx(1.0));
  CHECK(ev.all.loss == Approx((l0 + l1 + l2) / 3).epsilon(1e-12));
  CHECK(ev.all.acc == Approx(2.0 / 3.0));
  // An infinite loss on the test pair stays in the test split.
  auto inf_logits = logits.clone();
  inf_logits[2][2] = -std::numeric_limits<double>::infinity();
  auto ev_inf = evaluate_splits(inf_logits, labels, mask);
  CHECK(std::isinf(ev_inf.test.loss));
  CHECK(ev_inf.train.loss == Approx(ev.train.loss).epsilon(1e-12));
  // Every pair in train: the test split is empty and reads 0.
  auto all_train = evaluate_splits(logits, labels, torch::ones({3}, torch::kBool));
  CHECK(all_train.test.loss == 0.0);
  CHECK(all_train.train.loss == Approx(ev.all.loss).epsilon(1e-12));
}

TEST_CASE("phase detection: order, and a run that never grokked says so", "[analysis]") {
  std::vector<ProgressRow> rows;
  for (int64_t e = 0; e <= 20; ++e) {
    ProgressRow r;
    r.epoch = e * 100;
    r.train_acc = e >= 3 ? 1.0 : 0.5;
    r.test_loss = e <= 4 ? 1.0 + double(e) : 5.0 - 0.2 * double(e);
    r.test_acc = 0.1;
    r.restricted_loss = std::pow(10.0, -0.4 * double(e));
    rows.push_back(r);
  }
  auto ph = detect_phases(rows);
  CHECK_FALSE(ph.grokked);
  CHECK(ph.memorisation_end == int64_t(400));
  CHECK(ph.note.find("never grokked") != std::string::npos);
  for (int64_t e = 15; e <= 20; ++e) rows[size_t(e)].test_acc = 1.0;
  ph = detect_phases(rows);
  REQUIRE(ph.grokked);
  CHECK(*ph.memorisation_end <= *ph.circuit_formation_end);
  CHECK(*ph.circuit_formation_end <= *ph.cleanup_end);
  CHECK(ph.cleanup_end == int64_t(1500));
}

TEST_CASE("an untrained model's spectrum is spread out", "[analysis]") {
  Config cfg;
  cfg.task.p = 23;
  auto r = analyse_fourier(Model(cfg));
  CHECK(r.gini_embed < 0.35);
  CHECK(r.key_embed.size() <= 2);
}

// ---- on the grokked configs/ci-small.json model (trained once per test process) ----

TEST_CASE("a grokked model is sparse in frequency, and both methods find its key frequencies", "[ci-small]") {
  const auto& run = test::grokked_run();
  auto ck = load_checkpoint(resolve_checkpoint(run.dir));
  Model m = model_from_checkpoint(ck);
  auto r = analyse_fourier(m);
  Config untrained_cfg = ck.config;
  auto untrained = analyse_fourier(Model(untrained_cfg));
  INFO("key (neurons) " << r.key_neurons.size() << ", key (embed) " << r.key_embed.size());
  CHECK(r.key_neurons.size() >= 1);
  CHECK(r.key_neurons.size() <= 6);
  CHECK(r.frac_neurons_clustered > 0.6);
  CHECK(r.gini_embed > untrained.gini_embed + 0.15);
  // The embedding norms single out the neurons' frequencies.
  for (auto k : r.key_embed)
    CHECK(std::find(r.key_neurons.begin(), r.key_neurons.end(), k) != r.key_neurons.end());
}

TEST_CASE("removing the key frequencies destroys the model; removing as many others does nothing", "[ci-small]") {
  const auto& run = test::grokked_run();
  auto ck = load_checkpoint(resolve_checkpoint(run.dir));
  Model m = model_from_checkpoint(ck);
  auto data = make_dataset(ck.config.task);
  auto rows = ablate(m, data, AblateOptions{});
  auto find = [&](const std::string& prefix, const std::string& space) {
    for (auto& r : rows)
      if (r.name.rfind(prefix, 0) == 0 && r.space == space) return r;
    FAIL("no ablation " << prefix);
    return rows[0];
  };
  auto base = find("model as is", "none");
  CHECK(base.test.acc >= 0.99);
  const double chance = 1.0 / double(ck.config.task.p);
  CHECK(find("remove all key freqs", "logits").test.acc < 3 * chance);
  CHECK(find("remove all key freqs from W_E", "weights").test.acc < 3 * chance);
  for (auto& r : rows)
    if (r.name.find("(control)") != std::string::npos) {
      CHECK(r.draws == 5);
      CHECK(r.test.acc >= 0.99);
    }
  auto restricted = find("keep only key freqs (restricted)", "logits");
  CHECK(restricted.test.acc >= 0.99);
  CHECK(restricted.all.loss <= std::max(10 * base.all.loss, 1e-3));
}

TEST_CASE("progress measures over the run find the phases in order", "[ci-small]") {
  const auto& run = test::grokked_run();
  auto list = list_checkpoints(run.dir);
  REQUIRE(list.size() >= 5);
  auto progress = measure_progress(run.dir);
  const auto& rows = progress.rows;
  REQUIRE(rows.size() == list.size());
  for (size_t i = 0; i < rows.size(); ++i) CHECK(rows[i].epoch == list[i].first);
  // The key frequencies are the final checkpoint's, by the neuron method.
  CHECK(progress.key_freqs == analyse_fourier(model_from_checkpoint(load_checkpoint(list.back().second))).key_neurons);
  // Each row is the loss measures of its checkpoint, whichever worker thread computed it.
  const size_t mid = rows.size() / 2;
  Model m = model_from_checkpoint(load_checkpoint(list[mid].second));
  auto lm = loss_measures(m, make_dataset(m.config().task), progress.key_freqs);
  CHECK(rows[mid].excluded_loss == Approx(lm.excluded_loss).epsilon(1e-9));
  CHECK(rows[mid].sum_sq_weights == Approx(m.sum_squared_weights()).epsilon(1e-12));
  auto ph = progress.phases;
  REQUIRE(ph.grokked);
  CHECK(*ph.memorisation_end < *ph.cleanup_end);
  CHECK(*ph.memorisation_end <= *ph.circuit_formation_end);
  CHECK(*ph.circuit_formation_end <= *ph.cleanup_end);
  // After grokking the Fourier circuit alone solves the task; before memorisation ends it does not.
  CHECK(rows.back().restricted_loss < 0.01);
  CHECK(rows.back().excluded_loss > rows.back().train_loss * 100);
  // progress.csv: a header and a row per checkpoint; the phases land in summary.json.
  write_progress(run.dir, progress);
  const std::string csv = read_file(run.dir + "/progress.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == std::ptrdiff_t(rows.size() + 1));
  auto summary = read_json_file(run.dir + "/summary.json");
  CHECK(summary["phases"]["cleanup"]["end"] == *ph.cleanup_end);
  CHECK(summary["phases"]["key_freqs"] == nlohmann::json(progress.key_freqs));
}
