#include "grokking/analysis.hpp"

#include <algorithm>
#include <functional>
#include <cmath>
#include <numeric>
#include <random>

#include "grokking/error.hpp"

namespace grokking {

// ---------------------------------------------------------------------------------------------
// Ablations in logit space and weight space

torch::Tensor all_logits(const Model& model) {
  torch::NoGradGuard no_grad;
  require_fourier_basis(model.config().task);
  auto data = make_dataset(model.config().task);
  auto x = data.all_x.to(model.flat().device());
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < x.size(0); i += 16384) parts.push_back(model.forward_fast(x.slice(0, i, i + 16384)));
  return torch::cat(parts).to(torch::kCPU, torch::kFloat64);
}

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

// Only the key directions kept, with the per-class mean of what was removed added back (the
// paper's bias correction); the mean is over the pairs on the cycle, and pairs off it (a 0
// under mul/div) keep their logits, as in every logit-space ablation.
torch::Tensor restricted_logits(const torch::Tensor& logits, const torch::Tensor& kept, const Cycle& cycle,
                                const torch::Tensor& pairs) {
  if (cycle.n == cycle.p) return kept + (logits - kept).mean(0, true);
  auto grid = cycle_grid(cycle, pairs);
  auto on = kept + (logits - kept).index_select(0, grid).mean(0, true);
  return logits.index_copy(0, grid, on.index_select(0, grid));
}

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

Split restricted_heldout(const torch::Tensor& logits, const Dataset& data, const Cycle& cycle,
                         const std::vector<int64_t>& key) {
  const auto test = data.train_mask.logical_not().nonzero().squeeze(1);
  if (test.size(0) == 0 || key.empty()) return {};
  const auto x = data.all_x.index_select(0, test);
  const auto L = logits.to(torch::kCPU, torch::kFloat64).index_select(0, test);
  const auto y = data.all_y.index_select(0, test);
  // The key directions over the test pairs alone, orthonormalised there (zero off the cycle).
  const auto d = relation_directions(cycle, x, key);  // [r, n_test]
  const auto q = std::get<0>(at::linalg_qr(d.t()));    // [n_test, r]
  const auto kept = q.matmul(q.t().matmul(L));
  // Bias correction over the test pairs on the cycle; pairs off it keep their logits.
  const auto idx = torch::tensor(cycle.index_of, torch::kInt64);
  const auto on = idx.index_select(0, x.select(1, 0)).ge(0).logical_and(idx.index_select(0, x.select(1, 1)).ge(0));
  auto restricted = L.clone();
  if (on.any().item<bool>()) {
    const auto rows = on.nonzero().squeeze(1);
    const auto k = kept.index_select(0, rows);
    restricted.index_copy_(0, rows, k + (L.index_select(0, rows) - k).mean(0, true));
  }
  return evaluate_splits(restricted, y, torch::zeros({y.size(0)}, torch::kBool)).test;
}

LossMeasures loss_measures(const Model& model, const Dataset& data, const std::vector<int64_t>& key) {
  const Cycle cycle = cycle_of(model.config().task);
  auto logits = all_logits(model);
  LossMeasures m;
  auto ev = evaluate_splits(logits, data.all_y, data.train_mask);
  m.full = ev.all;
  m.train_loss = ev.train.loss, m.train_acc = ev.train.acc, m.test_loss = ev.test.loss, m.test_acc = ev.test.acc;
  auto kept = project_onto(logits, relation_directions(cycle, data.all_x, key));
  // Bias correction: add back the per-class mean of what was removed.
  auto restricted = restricted_logits(logits, kept, cycle, data.all_x);
  m.restricted = evaluate_splits(restricted, data.all_y, data.train_mask);
  m.restricted_loss = m.restricted.all.loss;
  m.restricted_heldout = restricted_heldout(logits, data, cycle, key);
  m.excluded_loss = evaluate_splits(logits - kept, data.all_y, data.train_mask).train.loss;
  for (auto k : key) {
    auto one = project_onto(logits, relation_directions(cycle, data.all_x, {k}));
    m.excluded_by_key.push_back(evaluate_splits(logits - one, data.all_y, data.train_mask).train.loss);
  }
  m.fit = fit_logit_trig(logits, cycle, data.all_x, key);
  return m;
}

std::vector<double> excluded_loss_by_frequency(const Model& model, const Dataset& data) {
  torch::NoGradGuard no_grad;
  const Cycle cycle = cycle_of(model.config().task);
  auto logits = all_logits(model);
  std::vector<double> out;
  for (int64_t k = 1; k <= n_frequencies(cycle.n); ++k) {
    auto one = project_onto(logits, relation_directions(cycle, data.all_x, {k}));
    out.push_back(evaluate_splits(logits - one, data.all_y, data.train_mask).train.loss);
  }
  return out;
}

LogitFit fit_logit_trig(const Model& model, const Dataset& data, const std::vector<int64_t>& freqs) {
  torch::NoGradGuard no_grad;
  return fit_logit_trig(all_logits(model), cycle_of(model.config().task), data.all_x, freqs);
}

LogitFit fit_logit_trig(const torch::Tensor& logits, const Cycle& cycle, const torch::Tensor& pairs,
                        const std::vector<int64_t>& freqs) {
  const int64_t n = cycle.n;
  auto values = torch::tensor(cycle.value_of, torch::kInt64);
  // [n^2, n]: pairs (i, j) on the cycle, classes l on the cycle, each pair's logits centred.
  auto L = logits.to(torch::kFloat64).index_select(0, cycle_grid(cycle, pairs)).index_select(1, values);
  auto pair_mean = L.mean(1, true);
  auto centred = L - pair_mean;
  auto i = torch::arange(n, torch::kFloat64).view({n, 1, 1}), j = torch::arange(n, torch::kFloat64).view({1, n, 1});
  auto l = torch::arange(n, torch::kFloat64).view({1, 1, n});
  auto label_index = torch::remainder(i + double(cycle.b_sign) * j, double(n));  // [n, n, 1]
  LogitFit fit;
  fit.freqs = freqs;
  auto fitted = torch::zeros_like(centred);
  for (auto k : freqs) {
    // The cos(w_k(i + s j - l)) features of distinct frequencies are orthogonal, and each sums
    // to zero over l: the least-squares coefficients are separate projections.
    auto x = torch::cos(2 * M_PI * double(k) * (label_index - l) / double(n)).reshape({n * n, n});
    const double alpha = (centred * x).sum().item<double>() / (x * x).sum().item<double>();
    fit.alpha.push_back(alpha);
    fitted += alpha * x;
  }
  const double total = centred.pow(2).sum().item<double>();
  fit.frac_variance = total > 0 ? 1.0 - (centred - fitted).pow(2).sum().item<double>() / total : 0.0;
  auto labels = label_index.reshape({n * n}).to(torch::kInt64);
  auto ev = evaluate_splits(fitted + pair_mean, labels, torch::ones({n * n}, torch::kBool));
  fit.loss = ev.all.loss, fit.acc = ev.all.acc;
  return fit;
}

namespace {
// The mean over opts.control_draws seeded draws of `count` random non-key frequencies, each
// ablated by `row_of` (the control a key set is compared with).
AblationResult random_control(const std::string& name, const std::string& space, const std::vector<int64_t>& non_key,
                              size_t count, const AblateOptions& opts,
                              const std::function<AblationResult(const std::vector<int64_t>&)>& row_of) {
  std::mt19937_64 rng(opts.seed);
  AblationResult avg{name, space, {}, {}, {}, {}, opts.control_draws};
  for (int64_t d = 0; d < opts.control_draws; ++d) {
    auto pool = non_key;
    std::shuffle(pool.begin(), pool.end(), rng);
    pool.resize(std::min(pool.size(), count));
    auto r = row_of(pool);
    for (auto [dst, src] : {std::pair{&avg.train, &r.train}, {&avg.test, &r.test}, {&avg.all, &r.all}}) {
      dst->loss += src->loss / double(opts.control_draws);
      dst->acc += src->acc / double(opts.control_draws);
    }
  }
  return avg;
}

// The logits with 2-D Fourier components (over the cycle's (i, j) grid) removed: every one that
// involves a non-key frequency in a or in b; and, the paper's definition, every one but the
// within-frequency ones (the constant, a or b alone at a key frequency, or both at the same
// one). Pairs off the cycle keep their logits.
std::vector<std::pair<std::string, torch::Tensor>> component_ablations(const torch::Tensor& logits, const Cycle& cycle,
                                                                       const torch::Tensor& all_x,
                                                                       const std::vector<int64_t>& key, int64_t p) {
  const int64_t n = cycle.n;
  std::vector<std::pair<std::string, torch::Tensor>> out;
  auto F = fourier_basis(n);
  std::vector<int64_t> rows = {0}, freq_of = {0};
  for (auto k : key)
    for (auto r : frequency_rows(n, k)) rows.push_back(r), freq_of.push_back(k);
  auto B = F.index_select(0, torch::tensor(rows, torch::kInt64));  // [r, n]
  auto grid = cycle_grid(cycle, all_x);
  auto L = logits.index_select(0, grid).view({n, n, p});              // [i, j, c]
  auto c = torch::tensordot(B, torch::tensordot(B, L, {1}, {0}), {1}, {1});  // [j', i', c]
  auto back_of = [&](const torch::Tensor& coeffs) {
    auto back = torch::tensordot(B, torch::tensordot(B, coeffs, {0}, {0}), {0}, {1});  // [i, j, c]
    return logits.index_copy(0, grid, back.reshape({n * n, p}));
  };
  out.emplace_back("remove all non-key components", back_of(c));
  // The paper's definition: only within-frequency components are kept, the constant, a or b
  // alone at a key frequency, or both at the same one; products of two different key
  // frequencies go too.
  const auto r = int64_t(rows.size());
  auto within = torch::zeros({r, r}, torch::kFloat64);
  for (int64_t x = 0; x < r; ++x)
    for (int64_t y = 0; y < r; ++y) {
      const auto fx = freq_of[size_t(x)], fy = freq_of[size_t(y)];
      within[x][y] = (fx == fy || fx == 0 || fy == 0) ? 1.0 : 0.0;
    }
  out.emplace_back("keep only within-frequency key components", back_of(c * within.unsqueeze(2)));
  return out;
}
}  // namespace

std::vector<AblationResult> ablate(const Model& model, const Dataset& data, const AblateOptions& opts,
                                   std::vector<int64_t>* used_freqs, NeuronLogitReading* reading) {
  torch::NoGradGuard no_grad;
  const auto& cfg = model.config();
  const Cycle cycle = cycle_of(cfg.task);  // no cycle at all: say that first
  const int64_t p = model.shape().operand_values, n = cycle.n, nf = n_frequencies(n);
  const std::string W_E = readout_of(model).embedding_label;  // how the rows name the operand weights
  std::vector<int64_t> key = opts.freqs;
  const Cache cache = run_all_pairs(model);
  if (key.empty()) key = analyse_fourier(model, cache).key_neurons;
  for (auto k : key)
    if (k < 1 || k > nf)
      throw UsageError("--freqs: frequency " + std::to_string(k) + " is out of range 1.." + std::to_string(nf));
  std::sort(key.begin(), key.end());
  key.erase(std::unique(key.begin(), key.end()), key.end());  // 3,3 would remove a direction twice
  if (used_freqs) *used_freqs = key;
  std::vector<int64_t> non_key;
  for (int64_t k = 1; k <= nf; ++k)
    if (std::find(key.begin(), key.end(), k) == key.end()) non_key.push_back(k);

  auto row = [&](const std::string& name, const std::string& space, std::vector<int64_t> freqs,
                 const torch::Tensor& logits) {
    auto ev = evaluate_splits(logits, data.all_y, data.train_mask);
    return AblationResult{name, space, std::move(freqs), ev.train, ev.test, ev.all, 1};
  };
  std::vector<AblationResult> out;
  auto logits = cache.logits.to(torch::kFloat64);
  out.push_back(row("model as is", "none", {}, logits));

  // ---- logit space (the paper's): project every class's logits over the P^2 pairs ----
  auto remove = [&](const std::vector<int64_t>& freqs) {
    return logits - project_onto(logits, relation_directions(cycle, data.all_x, freqs));
  };
  for (auto k : key) out.push_back(row("remove key freq " + std::to_string(k), "logits", {k}, remove({k})));
  auto kept = project_onto(logits, relation_directions(cycle, data.all_x, key));
  out.push_back(row("remove all key freqs (excluded)", "logits", key, logits - kept));
  out.push_back(row("keep only key freqs (restricted)", "logits", key, restricted_logits(logits, kept, cycle, data.all_x)));
  for (auto& [name, ablated] : component_ablations(logits, cycle, data.all_x, key, p))
    out.push_back(row(name, "logits", key, ablated));
  std::vector<int64_t> largest;  // the largest non-key frequencies, for the controls
  if (!non_key.empty() && !key.empty()) {
    // Control: remove as many randomly chosen non-key frequencies, averaged over seeded draws.
    out.push_back(random_control("remove " + std::to_string(key.size()) + " random non-key freqs (control)", "logits",
                                 non_key, key.size(), opts, [&](const std::vector<int64_t>& pool) {
                                   return row("", "logits", pool, remove(pool));
                                 }));
    // Control: the as many non-key frequencies that carry the most (by W_E norm), which a
    // random draw mostly misses in a grokked model.
    auto norms = frequency_norms(on_cycle(embedding_matrix(model), cycle));
    largest = non_key;
    std::stable_sort(largest.begin(), largest.end(),
                     [&](int64_t x, int64_t y) { return norms[size_t(x - 1)] > norms[size_t(y - 1)]; });
    largest.resize(std::min(largest.size(), key.size()));
    std::sort(largest.begin(), largest.end());
    out.push_back(row("remove " + std::to_string(largest.size()) + " largest non-key freqs (control)", "logits", largest,
                      remove(largest)));
  }

  // ---- neurons: the hidden activations projected onto the directions W_L reads, or off them ----
  if (reading && cache.mlp_post.defined()) {
    *reading = read_neuron_logit_map(model, data, cache, key);
    const auto& rd = *reading;
    out.push_back({"hidden acts onto W_L's " + std::to_string(rd.directions) + " key directions", "neurons", key, rd.projected.train,
                   rd.projected.test, rd.projected.all, 1});
    out.push_back({"hidden acts off them (null space)", "neurons", key, rd.null_space.train, rd.null_space.test,
                   rd.null_space.all, 1});
  }

  // ---- weight space: the frequencies' components of the operand embeddings projected out ----
  auto with_embedding = [&](const std::vector<torch::Tensor>& embeddings) {
    return all_logits(with_operand_embeddings(model, embeddings));
  };
  out.push_back(row("remove all key freqs from " + W_E, "weights", key, with_embedding(project_out_embedding(model, cycle, key, false))));
  out.push_back(row("keep only key freqs in " + W_E, "weights", key, with_embedding(project_out_embedding(model, cycle, key, true))));
  if (!largest.empty()) {
    // The same controls in weight space.
    out.push_back(random_control("remove " + std::to_string(key.size()) + " random non-key freqs from " + W_E + " (control)",
                                 "weights", non_key, key.size(), opts, [&](const std::vector<int64_t>& pool) {
                                   return row("", "weights", pool, with_embedding(project_out_embedding(model, cycle, pool, false)));
                                 }));
    out.push_back(row("remove " + std::to_string(largest.size()) + " largest non-key freqs from " + W_E + " (control)", "weights",
                      largest, with_embedding(project_out_embedding(model, cycle, largest, false))));
  }
  return out;
}

}  // namespace grokking
