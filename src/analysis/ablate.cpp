#include "grokking/analysis.hpp"

#include <algorithm>
#include <functional>
#include <cmath>
#include <numeric>
#include <random>

#include "grokking/error.hpp"
#include "grokking/progress_note.hpp"

namespace grokking {

namespace {

// The operand embeddings (W_E's number rows) with the components of `freqs` (over the cycle's
// indices) projected out, or only those (and the constant) kept; rows off the cycle (0 under
// mul/div) unchanged.
std::vector<torch::Tensor> project_out_embedding(const Model& model, const Cycle& cycle, const std::vector<int64_t>& freqs,
                                                 bool keep) {
  auto F = fourier_basis(cycle.n);
  std::vector<int64_t> rows;
  if (keep) rows.push_back(0);  // keeping only some frequencies keeps the constant too
  for (auto k : freqs)
    for (auto r : frequency_rows(cycle.n, k)) rows.push_back(r);
  auto B = F.index_select(0, torch::tensor(rows, torch::kInt64));  // [r, n]
  auto idx = torch::tensor(cycle.value_of, torch::kInt64);
  std::vector<torch::Tensor> out;
  for (auto W : operand_embeddings(model)) {  // [P, d] each
    auto Wc = W.index_select(0, idx);          // [n, d]
    auto proj = B.t().matmul(B.matmul(Wc));
    out.push_back(W.index_copy(0, idx, keep ? proj : Wc - proj).to(torch::kFloat32));
  }
  return out;
}

}  // namespace

void SplitSums::add(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& train_mask) {
  // One log-softmax over the rows; each split is a masked sum of the per-row values.
  auto nll = -logits.to(torch::kFloat64).log_softmax(-1).gather(1, labels.unsqueeze(1)).squeeze(1);
  auto hit = logits.argmax(-1).eq(labels).to(torch::kFloat64);
  auto tr = train_mask.to(torch::kFloat64), te = 1 - tr;
  auto zero = torch::zeros({}, torch::kFloat64);
  // where, not a product with the mask: an infinite loss on one split must not turn the other into NaN.
  auto v = torch::stack({torch::where(train_mask, nll, zero).sum(), (hit * tr).sum(), tr.sum(),
                         torch::where(train_mask, zero, nll).sum(), (hit * te).sum(), te.sum()})
               .contiguous();
  auto a = v.accessor<double, 1>();
  for (int s = 0; s < 2; ++s) nll_[s] += a[3 * s], hits_[s] += a[3 * s + 1], rows_[s] += a[3 * s + 2];
}

void SplitSums::add_table(const torch::Tensor& table, const torch::Tensor& train_count, const torch::Tensor& test_count) {
  const auto t = table.to(torch::kFloat64);
  const auto classes = torch::arange(t.size(0), torch::kInt64);
  const auto nll = -t.log_softmax(-1).gather(1, classes.unsqueeze(1)).squeeze(1);
  const auto hit = t.argmax(-1).eq(classes).to(torch::kFloat64);
  const auto zero = torch::zeros({}, torch::kFloat64);
  const torch::Tensor counts[2] = {train_count.to(torch::kFloat64), test_count.to(torch::kFloat64)};
  for (int s = 0; s < 2; ++s) {
    // Labels no row has add nothing, even where their loss is infinite.
    nll_[s] += torch::where(counts[s] > 0, nll * counts[s], zero).sum().item<double>();
    hits_[s] += (hit * counts[s]).sum().item<double>();
    rows_[s] += counts[s].sum().item<double>();
  }
}

Splits SplitSums::splits() const {
  auto mean = [](double sum, double n) { return n > 0 ? sum / n : 0.0; };
  return {{mean(nll_[0], rows_[0]), mean(hits_[0], rows_[0])},
          {mean(nll_[1], rows_[1]), mean(hits_[1], rows_[1])},
          {mean(nll_[0] + nll_[1], rows_[0] + rows_[1]), mean(hits_[0] + hits_[1], rows_[0] + rows_[1])}};
}

Splits evaluate_splits(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& train_mask) {
  SplitSums s;
  s.add(logits, labels, train_mask);
  return s.splits();
}

Splits evaluate_pairs(const Model& model, const Dataset& data, int64_t chunk) {
  SplitSums s;
  PairPass(model, chunk).each([&](int64_t first, const Cache& c) {
    const int64_t n = c.logits.size(0);
    s.add(c.logits, data.all_y.narrow(0, first, n), data.train_mask.narrow(0, first, n));
  });
  return s.splits();
}

// ---------------------------------------------------------------------------------------------
// Ablations in logit space and weight space, over the pairs chunk by chunk: every measure is a
// function of sums over the pairs (the relation directions' coefficients, the logits' sums on the
// cycle) taken in one pass, and of a second pass that scores the ablated logits chunk by chunk.

namespace {

// The logits of every pair, chunk by chunk in row-major order: fn(first pair, logits [rows, C]).
using LogitFn = std::function<void(int64_t first, const torch::Tensor& logits)>;
using LogitChunks = std::function<void(const LogitFn&)>;

LogitChunks chunks_of(PairPass& pass) {
  return [&pass](const LogitFn& fn) { pass.each([&](int64_t first, const Cache& c) { fn(first, c.logits); }); };
}

// A chunk of pairs as the logit-space measures read it.
struct PairChunk {
  torch::Tensor logits;  // [rows, C] float64
  torch::Tensor dirs;    // [r, rows]: the relation directions at these pairs (zero off the cycle)
  torch::Tensor on;      // [rows] bool: the pair is on the cycle
  torch::Tensor grid;    // int64: the rows on the cycle
  torch::Tensor i, j;    // [grid rows] int64: the rows' indices on the cycle
  torch::Tensor t;       // [grid rows] int64: i + s j mod n, the label's index on the cycle
  torch::Tensor y, train;
};

// Sums over the pairs for the logit-space measures of the relation directions (cos, sin of
// w_k (i + s j)) of `freqs`: each direction's coefficient per class (over the whole grid the
// directions are orthonormal: a projection is d^T D), the logits' and the directions' sums over
// the pairs on the cycle; and the same over the test pairs alone, with the directions' Gram
// matrix there (a projection from the test pairs alone).
class RelationSums {
 public:
  RelationSums(const Cycle& cycle, std::vector<int64_t> freqs) : cycle_(cycle), freqs_(std::move(freqs)) {
    for (auto k : freqs_) {
      first_row_.push_back(rows_);
      rows_ += int64_t(frequency_rows(cycle.n, k).size());
    }
    index_of_ = torch::tensor(cycle.index_of, torch::kInt64);
  }

  PairChunk chunk(const torch::Tensor& pairs, const torch::Tensor& logits, const torch::Tensor& y,
                  const torch::Tensor& train) const {
    PairChunk c;
    c.logits = logits.to(torch::kCPU, torch::kFloat64);
    c.dirs = relation_directions(cycle_, pairs, freqs_);
    const auto i = index_of_.index_select(0, pairs.select(1, 0)), j = index_of_.index_select(0, pairs.select(1, 1));
    c.on = i.ge(0).logical_and(j.ge(0));
    c.grid = c.on.nonzero().squeeze(1);
    c.i = i.index_select(0, c.grid), c.j = j.index_select(0, c.grid);
    c.t = (c.i + cycle_.b_sign * c.j).remainder(cycle_.n);
    c.y = y, c.train = train;
    return c;
  }

  void add(const PairChunk& c) {
    const auto& L = c.logits;
    if (!D_.defined()) {
      const int64_t C = L.size(1);
      D_ = torch::zeros({rows_, C}, torch::kFloat64), Dt_ = D_.clone();
      G_t_ = torch::zeros({rows_, rows_}, torch::kFloat64);
      sum_ = torch::zeros({C}, torch::kFloat64), sum_t_ = sum_.clone();
      dir_sum_ = torch::zeros({rows_}, torch::kFloat64), dir_sum_t_ = dir_sum_.clone();
    }
    const auto on = c.on.to(torch::kFloat64), test_on = on * c.train.logical_not().to(torch::kFloat64);
    const auto d_t = c.dirs * c.train.logical_not().to(torch::kFloat64);  // the directions at the test pairs
    D_ += c.dirs.matmul(L), Dt_ += d_t.matmul(L), G_t_ += d_t.matmul(c.dirs.t());
    sum_ += on.matmul(L), sum_t_ += test_on.matmul(L);
    dir_sum_ += c.dirs.sum(1), dir_sum_t_ += d_t.sum(1);
    count_ += on.sum().item<double>(), count_t_ += test_on.sum().item<double>();
  }

  // A logit-space ablation, made ready by the sums: the directions of some frequencies removed
  // (excluded), or only they kept with the per-class mean of the rest added back on the cycle
  // (restricted; held_out: from the test pairs alone, scored on them).
  struct Map {
    torch::Tensor rows, coef, mean;  // the directions' rows, their coefficients [r, C], the mean [C]
    bool remove = false, held_out = false;
    bool train_only = false;  // scored on the training pairs alone (an excluded loss is read there)
  };
  Map excluded(const std::vector<int64_t>& freqs, bool train_only = false) const {
    Map m;
    m.rows = rows_of(freqs), m.coef = D_.index_select(0, m.rows), m.remove = true, m.train_only = train_only;
    return m;
  }
  Map restricted(const std::vector<int64_t>& freqs) const {
    Map m;
    m.rows = rows_of(freqs), m.coef = D_.index_select(0, m.rows);
    m.mean = (sum_ - dir_sum_.index_select(0, m.rows).matmul(m.coef)) / std::max(count_, 1.0);
    return m;
  }
  Map held_out(const std::vector<int64_t>& freqs) const {
    Map m;
    m.rows = rows_of(freqs), m.held_out = true;
    const auto G = G_t_.index_select(0, m.rows).index_select(1, m.rows);
    m.coef = at::linalg_pinv(G).matmul(Dt_.index_select(0, m.rows));
    m.mean = (sum_t_ - dir_sum_t_.index_select(0, m.rows).matmul(m.coef)) / std::max(count_t_, 1.0);
    return m;
  }
  bool has_test_on_cycle() const { return count_t_ > 0; }

  // The chunk's logits under `m`, scored into `s` (a held-out map: its test pairs alone).
  void score(const Map& m, const PairChunk& c, SplitSums& s) const {
    if (m.train_only) {
      const auto rows = c.train.nonzero().squeeze(1);
      const auto kept = c.dirs.index_select(0, m.rows).index_select(1, rows).t().matmul(m.coef);
      s.add(c.logits.index_select(0, rows) - kept, c.y.index_select(0, rows), c.train.index_select(0, rows));
      return;
    }
    const auto kept = c.dirs.index_select(0, m.rows).t().matmul(m.coef);
    if (m.remove) {
      s.add(c.logits - kept, c.y, c.train);
      return;
    }
    const auto ablated = torch::where(c.on.unsqueeze(1), kept + m.mean, c.logits);
    if (!m.held_out) {
      s.add(ablated, c.y, c.train);
      return;
    }
    const auto test = c.train.logical_not().nonzero().squeeze(1);
    s.add(ablated.index_select(0, test), c.y.index_select(0, test), torch::zeros({test.size(0)}, torch::kBool));
  }

 private:
  torch::Tensor rows_of(const std::vector<int64_t>& freqs) const {
    std::vector<int64_t> rows;
    for (auto k : freqs) {
      const auto at = std::find(freqs_.begin(), freqs_.end(), k);
      if (at == freqs_.end()) throw std::logic_error("RelationSums: frequency " + std::to_string(k) + " not summed");
      const size_t f = size_t(at - freqs_.begin());
      const int64_t end = f + 1 < freqs_.size() ? first_row_[f + 1] : rows_;
      for (int64_t r = first_row_[f]; r < end; ++r) rows.push_back(r);
    }
    return torch::tensor(rows, torch::kInt64);
  }

  Cycle cycle_;
  std::vector<int64_t> freqs_, first_row_;
  int64_t rows_ = 0;
  torch::Tensor index_of_;
  torch::Tensor D_, Dt_, G_t_, sum_, sum_t_, dir_sum_, dir_sum_t_;
  double count_ = 0, count_t_ = 0;
};

// The logits' trig form (fit_logit_trig) over chunks: the least-squares sums in a first pass,
// the fit's residual and its loss in a second.
class TrigFit {
 public:
  TrigFit(const Cycle& cycle, std::vector<int64_t> freqs)
      : n_(cycle.n), values_(torch::tensor(cycle.value_of, torch::kInt64)) {
    fit_.freqs = std::move(freqs);
    num_.assign(fit_.freqs.size(), 0.0), den_.assign(fit_.freqs.size(), 0.0);
  }
  void add_sums(const PairChunk& c) {
    const auto centred = centred_of(c);
    const auto x = features(c.t);
    for (size_t f = 0; f < fit_.freqs.size(); ++f) {
      num_[f] += (centred * x[f]).sum().item<double>();
      den_[f] += x[f].pow(2).sum().item<double>();
    }
    total_ += centred.pow(2).sum().item<double>();
  }
  void solve() {
    // The cos(w_k(i + s j - l)) features of distinct frequencies are orthogonal, and each sums
    // to zero over l: the least-squares coefficients are separate projections.
    fit_.alpha.clear();
    for (size_t f = 0; f < fit_.freqs.size(); ++f) fit_.alpha.push_back(den_[f] > 0 ? num_[f] / den_[f] : 0.0);
  }
  void add_fitted(const PairChunk& c) {
    const auto L = c.logits.index_select(0, c.grid).index_select(1, values_);
    const auto pair_mean = L.mean(1, true);
    auto fitted = torch::zeros_like(L);
    const auto x = features(c.t);
    for (size_t f = 0; f < fit_.freqs.size(); ++f) fitted += fit_.alpha[f] * x[f];
    residual_ += (L - pair_mean - fitted).pow(2).sum().item<double>();
    scored_.add(fitted + pair_mean, c.t, torch::ones({c.t.size(0)}, torch::kBool));
  }
  LogitFit fit() const {
    LogitFit f = fit_;
    f.frac_variance = total_ > 0 ? 1.0 - residual_ / total_ : 0.0;
    const auto s = scored_.splits();
    f.loss = s.all.loss, f.acc = s.all.acc;
    return f;
  }

 private:
  // The chunk's pairs on the cycle, classes on the cycle, each pair's logits centred.
  torch::Tensor centred_of(const PairChunk& c) const {
    const auto L = c.logits.index_select(0, c.grid).index_select(1, values_);
    return L - L.mean(1, true);
  }
  std::vector<torch::Tensor> features(const torch::Tensor& t) const {
    const auto d = t.to(torch::kFloat64).unsqueeze(1) - torch::arange(n_, torch::kFloat64).unsqueeze(0);  // t - l
    std::vector<torch::Tensor> x;
    for (auto k : fit_.freqs) x.push_back(torch::cos(2 * M_PI * double(k) * d / double(n_)));
    return x;
  }

  int64_t n_;
  torch::Tensor values_;
  LogitFit fit_;
  std::vector<double> num_, den_;
  double total_ = 0, residual_ = 0;
  SplitSums scored_;
};

// Two passes of `chunks` over the pairs `data` holds: first(chunk) with the sums' chunks, then
// second(chunk) once `between` has made the ablations ready.
void two_passes(const LogitChunks& chunks, const RelationSums& sums, const Dataset& data,
                const std::function<void(const PairChunk&)>& first, const std::function<void()>& between,
                const std::function<void(const PairChunk&)>& second) {
  auto pass = [&](const std::function<void(const PairChunk&)>& fn) {
    chunks([&](int64_t at, const torch::Tensor& logits) {
      const int64_t rows = logits.size(0);
      fn(sums.chunk(data.all_x.narrow(0, at, rows), logits, data.all_y.narrow(0, at, rows),
                    data.train_mask.narrow(0, at, rows)));
    });
  };
  pass(first);
  between();
  pass(second);
}

std::vector<int64_t> all_frequencies(const Cycle& cycle) {
  std::vector<int64_t> all(size_t(n_frequencies(cycle.n)));
  std::iota(all.begin(), all.end(), int64_t(1));
  return all;
}

}  // namespace

LossMeasures loss_measures(const Model& model, const Dataset& data, const std::vector<int64_t>& key, int64_t chunk) {
  torch::NoGradGuard no_grad;
  const Cycle cycle = cycle_of(model.config().task);
  PairPass pass(model, chunk);
  RelationSums sums(cycle, key);
  TrigFit fit(cycle, key);
  SplitSums as_is;
  std::vector<RelationSums::Map> maps;
  std::vector<SplitSums> scored;
  two_passes(
      chunks_of(pass), sums, data,
      [&](const PairChunk& c) {
        sums.add(c), fit.add_sums(c);
        as_is.add(c.logits, c.y, c.train);
      },
      [&] {
        fit.solve();
        maps = {sums.restricted(key), sums.excluded(key, true)};
        for (auto k : key) maps.push_back(sums.excluded({k}, true));
        // The held-out restricted loss needs test pairs on the cycle and a key.
        if (!key.empty() && sums.has_test_on_cycle()) maps.push_back(sums.held_out(key));
        scored.resize(maps.size());
      },
      [&](const PairChunk& c) {
        for (size_t i = 0; i < maps.size(); ++i) sums.score(maps[i], c, scored[i]);
        fit.add_fitted(c);
      });
  LossMeasures m;
  const auto ev = as_is.splits();
  m.full = ev.all;
  m.train_loss = ev.train.loss, m.train_acc = ev.train.acc, m.test_loss = ev.test.loss, m.test_acc = ev.test.acc;
  m.restricted = scored[0].splits();
  m.restricted_loss = m.restricted.all.loss;
  m.excluded_loss = scored[1].splits().train.loss;
  for (size_t i = 0; i < key.size(); ++i) m.excluded_by_key.push_back(scored[2 + i].splits().train.loss);
  if (maps.size() > 2 + key.size()) m.restricted_heldout = scored.back().splits().test;
  m.fit = fit.fit();
  return m;
}

std::vector<double> excluded_loss_by_frequency(const Model& model, const Dataset& data) {
  torch::NoGradGuard no_grad;
  const Cycle cycle = cycle_of(model.config().task);
  const auto freqs = all_frequencies(cycle);
  PairPass pass(model);
  ProgressScope scope("the excluded loss of each of " + std::to_string(freqs.size()) + " frequencies, 2 passes over " +
                          std::to_string(pass.pairs()) + " pairs",
                      2 * size_t(pass.chunks()));
  RelationSums sums(cycle, freqs);
  std::vector<RelationSums::Map> maps;
  std::vector<SplitSums> scored(freqs.size());
  two_passes(
      chunks_of(pass), sums, data, [&](const PairChunk& c) { sums.add(c); },
      [&] {
        for (auto k : freqs) maps.push_back(sums.excluded({k}, true));
      },
      [&](const PairChunk& c) {
        for (size_t i = 0; i < maps.size(); ++i) sums.score(maps[i], c, scored[i]);
      });
  std::vector<double> out;
  for (auto& s : scored) out.push_back(s.splits().train.loss);
  return out;
}

LogitFit fit_logit_trig(const Model& model, const Dataset& data, const std::vector<int64_t>& freqs) {
  torch::NoGradGuard no_grad;
  const Cycle cycle = cycle_of(model.config().task);
  PairPass pass(model);
  RelationSums sums(cycle, {});
  TrigFit fit(cycle, freqs);
  two_passes(
      chunks_of(pass), sums, data, [&](const PairChunk& c) { fit.add_sums(c); }, [&] { fit.solve(); },
      [&](const PairChunk& c) { fit.add_fitted(c); });
  return fit.fit();
}

LogitFit fit_logit_trig(const torch::Tensor& logits, const Cycle& cycle, const torch::Tensor& pairs,
                        const std::vector<int64_t>& freqs) {
  RelationSums sums(cycle, {});
  TrigFit fit(cycle, freqs);
  const auto none = torch::zeros({pairs.size(0)}, torch::kInt64);
  const auto c = sums.chunk(pairs.to(torch::kCPU), logits, none, torch::ones({pairs.size(0)}, torch::kBool));
  fit.add_sums(c);
  fit.solve();
  fit.add_fitted(c);
  return fit.fit();
}

namespace {
// The logits' 2-D Fourier components over the cycle's (i, j) grid at the constant and the key
// frequencies' basis rows B: c[u, v, :] = sum over the pairs on the cycle of B[u, i] B[v, j] L;
// a pair's logits rebuilt from them: sum over (u, v) of B[u, i] B[v, j] c[u, v, :].
class ComponentSums {
 public:
  ComponentSums(const Cycle& cycle, const std::vector<int64_t>& key) {
    std::vector<int64_t> rows = {0};
    freq_of_ = {0};
    for (auto k : key)
      for (auto r : frequency_rows(cycle.n, k)) rows.push_back(r), freq_of_.push_back(k);
    B_ = fourier_basis(cycle.n).index_select(0, torch::tensor(rows, torch::kInt64));  // [r, n]
  }
  void add(const PairChunk& c) {
    const auto part = products(c).matmul(c.logits.index_select(0, c.grid));  // [r^2, C]
    coeffs_ = coeffs_.defined() ? coeffs_ + part : part;
  }
  // Every component, or (the paper's definition) the within-frequency ones only: the constant, a
  // or b alone at a key frequency, or both at the same one.
  torch::Tensor coefficients(bool within_only) const {
    if (!within_only) return coeffs_;
    const auto r = int64_t(freq_of_.size());
    auto within = torch::zeros({r * r, 1}, torch::kFloat64);
    for (int64_t x = 0; x < r; ++x)
      for (int64_t y = 0; y < r; ++y) {
        const auto fx = freq_of_[size_t(x)], fy = freq_of_[size_t(y)];
        within[x * r + y][0] = (fx == fy || fx == 0 || fy == 0) ? 1.0 : 0.0;
      }
    return coeffs_ * within;
  }
  // The chunk's logits with its pairs on the cycle rebuilt from `coeffs` (pairs off it keep theirs).
  torch::Tensor rebuilt(const PairChunk& c, const torch::Tensor& coeffs) const {
    return c.logits.index_copy(0, c.grid, products(c).t().matmul(coeffs));
  }

 private:
  torch::Tensor products(const PairChunk& c) const {  // [r^2, grid rows]: B[u, i] B[v, j]
    const auto Bi = B_.index_select(1, c.i), Bj = B_.index_select(1, c.j);
    return (Bi.unsqueeze(1) * Bj.unsqueeze(0)).reshape({B_.size(0) * B_.size(0), c.i.size(0)});
  }
  torch::Tensor B_, coeffs_;
  std::vector<int64_t> freq_of_;
};

// The seeded draws of `count` random non-key frequencies a control averages over.
std::vector<std::vector<int64_t>> control_draws(const std::vector<int64_t>& non_key, size_t count,
                                                const AblateOptions& opts) {
  std::mt19937_64 rng(opts.seed);
  std::vector<std::vector<int64_t>> draws;
  for (int64_t d = 0; d < opts.control_draws; ++d) {
    auto pool = non_key;
    std::shuffle(pool.begin(), pool.end(), rng);
    pool.resize(std::min(pool.size(), count));
    draws.push_back(std::move(pool));
  }
  return draws;
}

AblationResult result(const std::string& name, const std::string& space, std::vector<int64_t> freqs, const Splits& s) {
  return AblationResult{name, space, std::move(freqs), s.train, s.test, s.all, 1};
}

// The mean over the draws' splits (the control a key set is compared with).
AblationResult mean_of(const std::string& name, const std::string& space, const std::vector<Splits>& draws) {
  AblationResult avg{name, space, {}, {}, {}, {}, int64_t(draws.size())};
  for (const auto& r : draws)
    for (auto [dst, src] : {std::pair{&avg.train, &r.train}, {&avg.test, &r.test}, {&avg.all, &r.all}}) {
      dst->loss += src->loss / double(draws.size());
      dst->acc += src->acc / double(draws.size());
    }
  return avg;
}
}  // namespace

std::vector<AblationResult> ablate(const Model& model, const Dataset& data, const AblateOptions& opts,
                                   std::vector<int64_t>* used_freqs, NeuronLogitReading* reading) {
  torch::NoGradGuard no_grad;
  const auto& cfg = model.config();
  const Cycle cycle = cycle_of(cfg.task);  // no cycle at all: say that first
  const int64_t nf = n_frequencies(cycle.n);
  const std::string W_E = readout_of(model).embedding_label;  // how the rows name the operand weights
  std::vector<int64_t> key = opts.freqs;
  if (key.empty()) key = key_frequencies(model);
  for (auto k : key)
    if (k < 1 || k > nf)
      throw UsageError("--freqs: frequency " + std::to_string(k) + " is out of range 1.." + std::to_string(nf));
  std::sort(key.begin(), key.end());
  key.erase(std::unique(key.begin(), key.end()), key.end());  // 3,3 would remove a direction twice
  if (used_freqs) *used_freqs = key;
  std::vector<int64_t> non_key;
  for (int64_t k = 1; k <= nf; ++k)
    if (std::find(key.begin(), key.end(), k) == key.end()) non_key.push_back(k);
  // The controls: as many randomly drawn non-key frequencies (averaged over seeded draws), and
  // as many of the non-key frequencies that carry the most (by W_E norm), which a random draw
  // mostly misses in a grokked model.
  std::vector<std::vector<int64_t>> draws;
  std::vector<int64_t> largest;
  if (!non_key.empty() && !key.empty()) {
    draws = control_draws(non_key, key.size(), opts);
    auto norms = frequency_norms(on_cycle(embedding_matrix(model), cycle));
    largest = non_key;
    std::stable_sort(largest.begin(), largest.end(),
                     [&](int64_t x, int64_t y) { return norms[size_t(x - 1)] > norms[size_t(y - 1)]; });
    largest.resize(std::min(largest.size(), key.size()));
    std::sort(largest.begin(), largest.end());
  }

  // ---- logit space (the paper's): every class's logits over the pairs, projected ----
  PairPass pass(model, opts.chunk);
  const bool read_neurons = reading && !readout_of(model).neuron_to_logits.empty();
  const size_t passes = 2 + (read_neurons ? 1 : 0) + 2 + (largest.empty() ? 0 : draws.size() + 1);  // + weight space
  ProgressScope scope("ablate, " + std::to_string(passes) + " passes over " + std::to_string(pass.pairs()) + " pairs",
                      passes * size_t(pass.chunks()));
  std::vector<int64_t> used = key;  // the frequencies some row removes or keeps
  for (const auto& pool : draws) used.insert(used.end(), pool.begin(), pool.end());
  used.insert(used.end(), largest.begin(), largest.end());
  std::sort(used.begin(), used.end());
  used.erase(std::unique(used.begin(), used.end()), used.end());
  RelationSums sums(cycle, used);
  ComponentSums components(cycle, key);
  SplitSums as_is;
  std::vector<RelationSums::Map> maps;  // each key frequency, all key, restricted, the draws, the largest
  std::vector<torch::Tensor> rebuilt;   // all non-key components removed; within-frequency key ones kept
  std::vector<SplitSums> scored, scored_rebuilt(2);
  two_passes(
      chunks_of(pass), sums, data,
      [&](const PairChunk& c) {
        sums.add(c), components.add(c);
        as_is.add(c.logits, c.y, c.train);
      },
      [&] {
        for (auto k : key) maps.push_back(sums.excluded({k}));
        maps.push_back(sums.excluded(key));
        maps.push_back(sums.restricted(key));
        for (const auto& pool : draws) maps.push_back(sums.excluded(pool));
        if (!largest.empty()) maps.push_back(sums.excluded(largest));
        scored.resize(maps.size());
        rebuilt = {components.coefficients(false), components.coefficients(true)};
      },
      [&](const PairChunk& c) {
        for (size_t i = 0; i < maps.size(); ++i) sums.score(maps[i], c, scored[i]);
        for (size_t i = 0; i < rebuilt.size(); ++i)
          scored_rebuilt[i].add(components.rebuilt(c, rebuilt[i]), c.y, c.train);
      });
  std::vector<AblationResult> out;
  out.push_back(result("model as is", "none", {}, as_is.splits()));
  size_t at = 0;
  for (auto k : key) out.push_back(result("remove key freq " + std::to_string(k), "logits", {k}, scored[at++].splits()));
  out.push_back(result("remove all key freqs (excluded)", "logits", key, scored[at++].splits()));
  out.push_back(result("keep only key freqs (restricted)", "logits", key, scored[at++].splits()));
  out.push_back(result("remove all non-key components", "logits", key, scored_rebuilt[0].splits()));
  out.push_back(result("keep only within-frequency key components", "logits", key, scored_rebuilt[1].splits()));
  if (!largest.empty()) {
    std::vector<Splits> each;
    for (size_t d = 0; d < draws.size(); ++d) each.push_back(scored[at++].splits());
    out.push_back(mean_of("remove " + std::to_string(key.size()) + " random non-key freqs (control)", "logits", each));
    out.push_back(result("remove " + std::to_string(largest.size()) + " largest non-key freqs (control)", "logits",
                         largest, scored[at++].splits()));
  }

  // ---- neurons: the hidden activations projected onto the directions W_L reads, or off them ----
  if (read_neurons) {
    *reading = read_neuron_logit_map(model, data, key, &pass);
    const auto& rd = *reading;
    out.push_back({"hidden acts onto W_L's " + std::to_string(rd.directions) + " key directions", "neurons", key, rd.projected.train,
                   rd.projected.test, rd.projected.all, 1});
    out.push_back({"hidden acts off them (null space)", "neurons", key, rd.null_space.train, rd.null_space.test,
                   rd.null_space.all, 1});
  }

  // ---- weight space: the frequencies' components of the operand embeddings projected out ----
  auto with_embedding = [&](const std::vector<int64_t>& freqs, bool keep) {
    return evaluate_pairs(with_operand_embeddings(model, project_out_embedding(model, cycle, freqs, keep)), data,
                          opts.chunk);
  };
  out.push_back(result("remove all key freqs from " + W_E, "weights", key, with_embedding(key, false)));
  out.push_back(result("keep only key freqs in " + W_E, "weights", key, with_embedding(key, true)));
  if (!largest.empty()) {
    // The same controls in weight space.
    std::vector<Splits> each;
    for (const auto& pool : draws) each.push_back(with_embedding(pool, false));
    out.push_back(mean_of("remove " + std::to_string(key.size()) + " random non-key freqs from " + W_E + " (control)",
                          "weights", each));
    out.push_back(result("remove " + std::to_string(largest.size()) + " largest non-key freqs from " + W_E + " (control)",
                         "weights", largest, with_embedding(largest, false)));
  }
  return out;
}

}  // namespace grokking
