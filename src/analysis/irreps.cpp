// The analysis of group runs by irreps (irreps.hpp): projections through the isotypic
// projectors, Chughtai et al.'s logit similarity, key irreps, and losses with controls.
#include "grokking/irreps.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>

#include "grokking/error.hpp"
#include "grokking/progress_note.hpp"

namespace grokking {

int64_t GroupStructure::component_dim(size_t irrep) const {
  const auto& r = irreps[irrep];
  return std::lround(r.projector_scale * r.projector_character[0] * double(group.order));
}

GroupStructure group_structure(const TaskConfig& task) {
  if (!find_task_kind(task.kind).structure || !find_task_kind(task.kind).structure(task).has(Capability::group))
    throw UsageError("the irrep analysis is for group tasks; task.kind \"" + task.kind + "\" has no group");
  GroupStructure gs;
  gs.group = make_group(task.text("group"), "/task/group");
  gs.operation = task.text("operation");
  gs.irreps = real_irreps(gs.group);
  const int64_t N = gs.group.order;
  // P[x][y] = scale * chi(x y^-1): the index of x y^-1 for every (x, y).
  std::vector<int64_t> quotient(size_t(N * N));
  for (int64_t x = 0; x < N; ++x)
    for (int64_t y = 0; y < N; ++y) quotient[size_t(x * N + y)] = gs.group.mul(x, gs.group.inverse[size_t(y)]);
  auto q = torch::tensor(quotient, torch::kInt64);
  for (auto& r : gs.irreps)
    gs.projectors.push_back(
        (torch::tensor(r.projector_character, torch::kFloat64).index_select(0, q) * r.projector_scale).view({N, N}));
  std::vector<int64_t> labels;
  for (int32_t a = 0; a < N; ++a)
    for (int32_t b = 0; b < N; ++b) labels.push_back(group_operation(gs.group, gs.operation, a, b));
  gs.labels = torch::tensor(labels, torch::kInt64);
  return gs;
}

namespace {

// Per label g: the mean over the pairs with that label (each label holds |G| of the |G|^2 pairs:
// every operation here is a bijection in b).
torch::Tensor label_means(const torch::Tensor& values, const GroupStructure& gs) {
  const int64_t N = gs.group.order;
  auto v = values.to(torch::kFloat64);
  return torch::zeros({N, v.size(1)}, torch::kFloat64).index_add_(0, gs.labels, v) / double(N);
}

// The sum over the isotypic projectors of `irreps`.
torch::Tensor projector_of(const GroupStructure& gs, const std::vector<size_t>& irreps) {
  auto Q = torch::zeros({gs.group.order, gs.group.order}, torch::kFloat64);
  for (auto i : irreps) Q += gs.projectors.at(i);
  return Q;
}

double sq(const torch::Tensor& t) { return t.pow(2).sum().item<double>(); }

// The share of the squared norm of the rows of X ([|G|, w], indexed by element) in each irrep's
// isotypic component.
std::vector<double> row_fractions(const torch::Tensor& X, const GroupStructure& gs) {
  auto x = X.to(torch::kFloat64);
  const double total = std::max(sq(x), 1e-300);
  std::vector<double> out;
  for (auto& P : gs.projectors) out.push_back(sq(P.matmul(x)) / total);
  return out;
}

// The Gini of the per-irrep norms (non-trivial irreps) of rows by element.
double irrep_gini(const std::vector<double>& fractions, const GroupStructure& gs) {
  std::vector<double> norms;
  for (size_t i = 0; i < fractions.size(); ++i)
    if (!gs.irreps[i].trivial()) norms.push_back(std::sqrt(fractions[i]));
  return norms.empty() ? 0.0 : gini(norms);
}

}  // namespace

torch::Tensor project_irreps(const torch::Tensor& values, const GroupStructure& gs, const std::vector<size_t>& irreps) {
  return projector_of(gs, irreps).matmul(label_means(values, gs)).index_select(0, gs.labels);
}

LogitSums::LogitSums(const GroupStructure& gs, const Dataset& data)
    : labels(gs.labels), test_mask(data.train_mask.logical_not()) {
  const int64_t N = gs.group.order;
  if (!torch::equal(gs.labels, data.all_y)) throw std::logic_error("LogitSums: the group's labels are not the task's");
  const auto f64 = torch::kFloat64;
  by_label = torch::zeros({N, N}, f64), by_label_test = torch::zeros({N, N}, f64);
  label_row_mean = torch::zeros({N}, f64), by_class = torch::zeros({N}, f64), by_class_test = torch::zeros({N}, f64);
  train_count = torch::zeros({N}, f64).index_add_(0, labels, data.train_mask.to(f64));
  test_count = torch::zeros({N}, f64).index_add_(0, labels, test_mask.to(f64));
}

void LogitSums::add(int64_t first, const torch::Tensor& logits) {
  const auto l = logits.to(torch::kCPU, torch::kFloat64);
  const int64_t n = l.size(0);
  const auto lab = labels.narrow(0, first, n);
  const auto row_mean = l.mean(1);
  by_label.index_add_(0, lab, l);
  label_row_mean.index_add_(0, lab, row_mean);
  by_class += l.sum(0);
  centred_sq += (l - row_mean.unsqueeze(1)).pow(2).sum().item<double>();
  const auto test = test_mask.narrow(0, first, n).nonzero().squeeze(1);
  if (test.size(0) > 0) {
    const auto lt = l.index_select(0, test);
    by_label_test.index_add_(0, lab.index_select(0, test), lt);
    by_class_test += lt.sum(0);
  }
}

namespace {
// Per label, the mean logits over its pairs [|G|, C].
torch::Tensor label_means(const LogitSums& s) {
  return s.by_label / (s.train_count + s.test_count).clamp_min(1).unsqueeze(1);
}
}  // namespace

std::vector<double> logit_similarities(const LogitSums& sums, const GroupStructure& gs) {
  const int64_t N = gs.group.order;
  const double centred_norm = std::sqrt(sums.centred_sq);
  // Per (label g, class c): the centred logits summed over g's pairs.
  const auto summed = sums.by_label - sums.label_row_mean.unsqueeze(1);
  std::vector<int64_t> g_over_c(size_t(N * N));
  for (int64_t g = 0; g < N; ++g)
    for (int64_t c = 0; c < N; ++c) g_over_c[size_t(g * N + c)] = gs.group.mul(g, gs.group.inverse[size_t(c)]);
  const auto quotient = torch::tensor(g_over_c, torch::kInt64);
  std::vector<double> out;
  for (auto& irrep : gs.irreps) {
    const auto chi = torch::tensor(irrep.character, torch::kFloat64).index_select(0, quotient).view({N, N});
    const double cube_norm = std::sqrt(double(N) * sq(chi));  // the cube has each label's row N times
    out.push_back(centred_norm > 0 && cube_norm > 0 ? (summed * chi).sum().item<double>() / (centred_norm * cube_norm)
                                                    : 0.0);
  }
  return out;
}

RestrictedReading read_restricted(const LogitSums& s, const GroupStructure& gs, const std::vector<size_t>& key,
                                  const std::vector<double>* similarity) {
  RestrictedReading r;
  const auto Q = projector_of(gs, key);
  // Every pair's restricted logits are a function of its label: the label's mean logits projected,
  // plus the per-class mean over the pairs of what the projection leaves.
  const auto count = s.train_count + s.test_count;
  const auto kept = Q.matmul(label_means(s));
  const auto rest = (s.by_class - (count.unsqueeze(1) * kept).sum(0)) / std::max(count.sum().item<double>(), 1.0);
  SplitSums restricted;
  restricted.add_table(kept + rest, s.train_count, s.test_count);
  r.restricted = restricted.splits();
  // Held out: the same from the test pairs alone (labels with no test pair: 0 before the correction).
  const double tests = s.test_count.sum().item<double>();
  if (tests > 0) {
    const auto kept_t = Q.matmul(s.by_label_test / s.test_count.clamp_min(1).unsqueeze(1));
    const auto rest_t = (s.by_class_test - (s.test_count.unsqueeze(1) * kept_t).sum(0)) / tests;
    SplitSums heldout;
    heldout.add_table(kept_t + rest_t, torch::zeros_like(s.test_count), s.test_count);
    r.heldout = heldout.splits().test;
  }
  const auto sim = similarity ? *similarity : logit_similarities(s, gs);
  for (size_t i = 0; i < sim.size(); ++i)
    if (!gs.irreps[i].trivial() && sim[i] > kKeyIrrepSimilarity) r.rule.push_back(i);
  return r;
}

RestrictedReading read_restricted(const torch::Tensor& logits, const GroupStructure& gs, const Dataset& data,
                                  const std::vector<size_t>& key, const std::vector<double>* similarity) {
  LogitSums s(gs, data);
  s.add(0, logits);
  return read_restricted(s, gs, key, similarity);
}

namespace {
// The memoriser's logits block by block (blocks of a fixed size, so that the draws do not depend
// on who reads them): fn(first pair, the block's logits).
void memoriser_blocks(const GroupStructure& gs, const Dataset& data, uint64_t seed,
                      const std::function<void(int64_t, const torch::Tensor&)>& fn) {
  constexpr int64_t kBlock = 4096;
  const int64_t N = gs.group.order, pairs = N * N;
  auto gen = at::detail::createCPUGenerator(seed * 1000003u + 0x3e3);
  for (int64_t first = 0; first < pairs; first += kBlock) {
    const int64_t n = std::min(kBlock, pairs - first);
    auto logits = torch::randn({n, N}, gen, torch::kFloat64);
    const auto train = data.train_mask.narrow(0, first, n).nonzero().squeeze(1);
    auto rows = logits.index_select(0, train);
    rows.scatter_add_(1, data.all_y.narrow(0, first, n).index_select(0, train).unsqueeze(1),
                      torch::full({train.size(0), 1}, 10.0, torch::kFloat64));
    fn(first, logits.index_copy(0, train, rows));
  }
}
}  // namespace

torch::Tensor memoriser_logits(const GroupStructure& gs, const Dataset& data, uint64_t seed) {
  std::vector<torch::Tensor> blocks;
  memoriser_blocks(gs, data, seed, [&](int64_t, const torch::Tensor& b) { blocks.push_back(b); });
  return torch::cat(blocks);
}

LogitSums memoriser_sums(const GroupStructure& gs, const Dataset& data, uint64_t seed) {
  LogitSums s(gs, data);
  memoriser_blocks(gs, data, seed, [&](int64_t first, const torch::Tensor& b) { s.add(first, b); });
  return s;
}

namespace {
// The hidden activations' sums over every pair [.., hidden]: per value of a, of b and of the
// label; and each neuron's mean and squared deviation (merged chunk by chunk, Chan et al.).
struct HiddenSums {
  torch::Tensor by_a, by_b, by_label, mean, m2;
  double n = 0;
  void add(int64_t first, const torch::Tensor& hidden, const GroupStructure& gs) {
    const auto h = hidden.to(torch::kCPU, torch::kFloat64);
    const int64_t N = gs.group.order, rows = h.size(0);
    if (!by_a.defined()) {
      by_a = torch::zeros({N, h.size(1)}, torch::kFloat64), by_b = by_a.clone(), by_label = by_a.clone();
      mean = torch::zeros({h.size(1)}, torch::kFloat64), m2 = mean.clone();
    }
    const auto pair = torch::arange(first, first + rows, torch::kInt64);
    by_a.index_add_(0, pair.div(N, "floor"), h);
    by_b.index_add_(0, pair.remainder(N), h);
    by_label.index_add_(0, gs.labels.narrow(0, first, rows), h);
    const auto chunk_mean = h.mean(0);
    const auto chunk_m2 = (h - chunk_mean).pow(2).sum(0);
    const double m = double(rows), total = n + m;
    const auto delta = chunk_mean - mean;
    m2 += chunk_m2 + delta.pow(2) * (n * m / total);
    mean += delta * (m / total);
    n = total;
  }
};

// One pass of the model over the pairs: its logit sums, its splits, and the hidden activations'
// sums where `hidden` is given.
LogitSums first_pass(PairPass& pass, const GroupStructure& gs, const Dataset& data, SplitSums* splits,
                     HiddenSums* hidden) {
  LogitSums s(gs, data);
  pass.each([&](int64_t first, const Cache& c) {
    const int64_t n = c.logits.size(0);
    s.add(first, c.logits);
    if (splits) splits->add(c.logits, data.all_y.narrow(0, first, n), data.train_mask.narrow(0, first, n));
    if (hidden && c.mlp_post.defined()) hidden->add(first, c.mlp_post, gs);
  });
  return s;
}

// A second pass: the splits of the logits less each table's row of the pair's label ([|G|, C]
// each: a function of the label removed), and, where `hidden_map` is given ([C, hidden]), of the
// hidden activations mapped to the logits less hidden_table's row.
std::vector<Splits> less_label_tables(PairPass& pass, const LogitSums& s, const Dataset& data,
                                      const std::vector<torch::Tensor>& tables, const torch::Tensor& hidden_map = {},
                                      const torch::Tensor& hidden_table = {}) {
  std::vector<SplitSums> sums(tables.size() + (hidden_map.defined() ? 1 : 0));
  pass.each([&](int64_t first, const Cache& c) {
    const int64_t n = c.logits.size(0);
    const auto l = c.logits.to(torch::kFloat64);
    const auto lab = s.labels.narrow(0, first, n);
    const auto y = data.all_y.narrow(0, first, n), mask = data.train_mask.narrow(0, first, n);
    for (size_t k = 0; k < tables.size(); ++k) sums[k].add(l - tables[k].index_select(0, lab), y, mask);
    if (hidden_map.defined())
      sums.back().add(c.mlp_post.to(torch::kFloat64).mm(hidden_map.t()) - hidden_table.index_select(0, lab), y, mask);
  });
  std::vector<Splits> out;
  for (auto& x : sums) out.push_back(x.splits());
  return out;
}
}  // namespace

LogitSums model_logit_sums(const Model& model, const GroupStructure& gs, const Dataset& data, Splits* splits,
                           int64_t chunk) {
  PairPass pass(model, chunk);
  SplitSums sums;
  LogitSums out = first_pass(pass, gs, data, &sums, nullptr);
  if (splits) *splits = sums.splits();
  return out;
}

// The total embeddings Chughtai et al. read ([|G|, width] each, float64): x's and y's
// embeddings times their rows of the first hidden layer (an MLP with learned embeddings), the
// first layer's rows themselves (one-hot inputs), or W_E for both (a transformer).
std::pair<torch::Tensor, torch::Tensor> total_embeddings(const Model& model) {
  auto e = operand_embeddings(model);
  if (model.has_param("embed.W_x") && model.has_param("hidden.0.W")) {
    const auto w0 = model.param("hidden.0.W").detach().cpu().to(torch::kFloat64);
    const int64_t d = e[0].size(1);
    return {e[0].mm(w0.narrow(0, 0, d)), e[1].mm(w0.narrow(0, d, d))};
  }
  return {e[0], e.size() > 1 ? e[1] : e[0]};
}

// The loss over all pairs of the model with each operand embedding's rows replaced by `keep`
// of them (the isotypic projector Q applied to the rows: (Q W_x) W = Q (W_x W), so keeping or
// removing irreps of the embedding is keeping or removing them of the total embedding).
Split all_pairs_with_rows(const Model& model, const Dataset& data, const torch::Tensor& Q, int64_t chunk) {
  std::vector<torch::Tensor> emb;
  for (auto& e : operand_embeddings(model)) emb.push_back(Q.mm(e));
  return evaluate_pairs(with_operand_embeddings(model, emb), data, chunk).all;
}

double theirs_restricted_loss(const Model& model, const GroupStructure& gs, const std::vector<size_t>& key) {
  torch::NoGradGuard no_grad;
  return all_pairs_with_rows(model, make_dataset(model.config().task), projector_of(gs, key)).loss;
}

IrrepReport analyse_irreps(const Model& model, const GroupStructure& gs, std::vector<size_t> key, int64_t draws,
                           uint64_t seed, int64_t chunk) {
  torch::NoGradGuard no_grad;
  const int64_t N = gs.group.order;
  const Dataset data = make_dataset(model.config().task);
  PairPass pass(model, chunk);
  // Passes over the pairs: the model, each irrep removed from the embeddings, the key irreps kept
  // and removed there, and the logits' functions of the label removed.
  const size_t passes = gs.irreps.size() + 4;
  ProgressScope scope("irreps, " + std::to_string(passes) + " passes over " + std::to_string(pass.pairs()) + " pairs",
                      passes * size_t(pass.chunks()));
  SplitSums as_is;
  HiddenSums hs;
  const LogitSums sums = first_pass(pass, gs, data, &as_is, &hs);
  const auto M = label_means(sums);  // [|G|, C]
  IrrepReport r;
  r.group = gs.group.name, r.operation = gs.operation, r.order = N;
  r.model = as_is.splits();

  const auto similarity = logit_similarities(sums, gs);

  // The readings of the weights: embeddings, unembedding, neuron-logit map.
  const auto embed = row_fractions(embedding_matrix(model), gs);
  const PairReadout& readout = readout_of(model);
  const auto unembed = row_fractions(model.param(readout.unembed).detach().cpu().t(), gs);
  std::vector<double> wl(gs.irreps.size(), 0.0);
  if (!readout.neuron_to_logits.empty()) wl = row_fractions(neuron_logit_map(model), gs);
  // Chughtai et al.'s readings (their SymmetricMetrics, the paper's version of the code).
  const auto [tx, ty] = total_embeddings(model);
  const auto their_x = row_fractions(tx, gs), their_y = row_fractions(ty, gs);
  // percent_hidden: the centred hidden activations over all pairs, their share that is a function
  // of a alone, of b alone, of the label, in each irrep's component (the last is also the
  // hidden neurons' share by irrep). Each of a, b and the label takes every value on |G| pairs, so
  // the projection of a function of one of them is |G| times the squared norm of the projected
  // per-value means.
  std::vector<double> their_hx(gs.irreps.size(), 0.0), their_hy(gs.irreps.size(), 0.0),
      their_hxy(gs.irreps.size(), 0.0);
  const bool has_hidden = hs.by_a.defined();
  if (has_hidden) {
    const double total = std::max(hs.m2.sum().item<double>(), 1e-300);
    const auto mu = hs.mean.unsqueeze(0);
    const auto mean_a = hs.by_a / double(N) - mu, mean_b = hs.by_b / double(N) - mu, mean_xy = hs.by_label / double(N) - mu;
    for (size_t i = 0; i < gs.irreps.size(); ++i) {
      const auto& P = gs.projectors[i];
      their_hx[i] = double(N) * sq(P.matmul(mean_a)) / total;
      their_hy[i] = double(N) * sq(P.matmul(mean_b)) / total;
      their_hxy[i] = double(N) * sq(P.matmul(mean_xy)) / total;
    }
  }
  const auto identity = torch::eye(N, torch::kFloat64);
  for (size_t i = 0; i < gs.irreps.size(); ++i) {
    IrrepMeasure m;
    m.theirs_embed_x = their_x[i], m.theirs_embed_y = their_y[i];
    m.theirs_hidden_x = their_hx[i], m.theirs_hidden_y = their_hy[i], m.theirs_hidden = their_hxy[i];
    m.theirs_excluded_loss = all_pairs_with_rows(model, data, identity - gs.projectors[i], chunk).loss;
    m.name = gs.irreps[i].name;
    m.dim = gs.irreps[i].dim;
    m.component_dim = gs.component_dim(i);
    m.similarity = similarity[i];
    m.fve = m.similarity * m.similarity;
    m.embed_frac = embed[i], m.unembed_frac = unembed[i], m.wl_frac = wl[i], m.hidden_frac = their_hxy[i];
    if (!gs.irreps[i].trivial()) r.fve_total += m.fve;
    r.irreps.push_back(m);
  }
  if (key.empty())
    for (size_t i = 0; i < r.irreps.size(); ++i)
      if (!gs.irreps[i].trivial() && r.irreps[i].similarity > kKeyIrrepSimilarity) key.push_back(i);
  for (auto i : key)
    if (i >= gs.irreps.size())
      throw UsageError("--irreps: irrep " + std::to_string(i + 1) + " is out of range 1.." + std::to_string(gs.irreps.size()));
  std::sort(key.begin(), key.end());
  key.erase(std::unique(key.begin(), key.end()), key.end());
  r.key = key;

  // The key irreps together: kept (with the per-class mean of the rest, as the Fourier analysis's
  // bias correction), and removed.
  const auto reading = read_restricted(sums, gs, key, &similarity);
  r.restricted = reading.restricted, r.restricted_heldout = reading.heldout;
  const auto Q = projector_of(gs, key);
  r.theirs_restricted_loss = all_pairs_with_rows(model, data, Q, chunk).loss;  // = theirs_restricted_loss(model, gs, key)
  r.theirs_total_excluded_loss = all_pairs_with_rows(model, data, identity - Q, chunk).loss;
  // Their table's columns (paper/tables.py): the key irreps' shares summed, and the restricted
  // and excluded loss through the hidden layer (total_hidden_excluded_and_restricted_loss): the
  // uncentred hidden activations' part that is a function of the label in the key irreps kept
  // (removed), mapped to the logits by W_L alone (their hidden_to_logits: W_U, or a
  // transformer's W_out W_U, without the residual stream or biases); restricted over all pairs,
  // excluded over the training pairs.
  for (auto k : key) {
    const auto& m = r.irreps[k];
    r.theirs_table.embed_x += m.theirs_embed_x, r.theirs_table.embed_y += m.theirs_embed_y;
    r.theirs_table.unembed += m.wl_frac;
    r.theirs_table.mlp += m.theirs_hidden_x + m.theirs_hidden_y + m.theirs_hidden;
    r.theirs_table.mlp_xy += m.theirs_hidden;
  }
  torch::Tensor W_L, hidden_table;  // [C, hidden]; the kept hidden part mapped to the logits, per label [|G|, C]
  if (has_hidden) {
    r.theirs_table.has_hidden = true;
    W_L = neuron_logit_map(model);
    hidden_table = Q.matmul(hs.by_label / double(N)).mm(W_L.t());
    SplitSums kept;
    kept.add_table(hidden_table, sums.train_count, sums.test_count);
    r.theirs_table.hidden_restricted_loss = kept.splits().all.loss;
  }
  // The control a restricted loss needs: a lookup table of the same split, read the same way.
  r.memoriser = read_restricted(memoriser_sums(gs, data, seed), gs, key);

  // Controls: as many non-key irreps of the nearest dimensions; random label functions.
  std::vector<bool> taken(gs.irreps.size(), false);
  for (auto k : key) taken[k] = true;
  for (auto k : key) {
    size_t best = gs.irreps.size();
    for (size_t j = 0; j < gs.irreps.size(); ++j) {
      if (taken[j] || gs.irreps[j].trivial()) continue;
      if (best == gs.irreps.size() ||
          std::abs(gs.component_dim(j) - gs.component_dim(k)) < std::abs(gs.component_dim(best) - gs.component_dim(k)))
        best = j;
    }
    if (best < gs.irreps.size()) taken[best] = true, r.matched.push_back(best);
  }
  std::sort(r.matched.begin(), r.matched.end());
  // The second pass over the pairs: each irrep removed, the key irreps removed, the matched
  // control, the random controls, and the hidden layer's excluded loss; all of them functions of
  // the label taken from the logits.
  std::vector<torch::Tensor> tables;
  for (size_t i = 0; i < gs.irreps.size(); ++i) tables.push_back(gs.projectors[i].matmul(M));
  tables.push_back(Q.matmul(M));
  if (!r.matched.empty()) tables.push_back(projector_of(gs, r.matched).matmul(M));
  int64_t dim = 0;
  for (auto k : key) dim += gs.component_dim(k);
  if (dim > 0 && dim < N) {
    r.random_draws = draws;
    for (int64_t d = 0; d < draws; ++d) {
      auto gen = at::detail::createCPUGenerator(seed * 1000003u + uint64_t(d));
      auto basis = std::get<0>(at::linalg_qr(torch::randn({N, dim}, gen, torch::kFloat64)));
      tables.push_back(basis.matmul(basis.t().matmul(M)));
    }
  }
  const auto out = less_label_tables(pass, sums, data, tables, W_L, hidden_table);
  size_t next = 0;
  for (auto& m : r.irreps) m.excluded = out[next++].train;
  r.excluded = out[next++];
  if (!r.matched.empty()) r.matched_excluded = out[next++];
  for (int64_t d = 0; d < r.random_draws; ++d) {
    const Splits& s = out[next++];
    for (auto [dst, src] : {std::pair{&r.random_excluded.train, &s.train}, {&r.random_excluded.test, &s.test},
                            {&r.random_excluded.all, &s.all}}) {
      dst->loss += src->loss / double(draws);
      dst->acc += src->acc / double(draws);
    }
  }
  if (has_hidden) r.theirs_table.hidden_excluded_loss = out[next++].train.loss;
  r.gini_embed = irrep_gini(embed, gs), r.gini_wl = irrep_gini(wl, gs);
  return r;
}

IrrepProgress irrep_progress(const Model& model, const GroupStructure& gs, const Dataset& data,
                             const std::vector<size_t>& key, int64_t chunk) {
  torch::NoGradGuard no_grad;
  IrrepProgress p;
  PairPass pass(model, chunk);
  SplitSums as_is;
  const LogitSums sums = first_pass(pass, gs, data, &as_is, nullptr);
  const auto ev = as_is.splits();
  p.train_loss = ev.train.loss, p.test_loss = ev.test.loss, p.train_acc = ev.train.acc, p.test_acc = ev.test.acc;
  p.similarity = logit_similarities(sums, gs);
  const auto reading = read_restricted(sums, gs, key, &p.similarity);
  p.restricted = reading.restricted, p.restricted_heldout = reading.heldout;
  const auto M = label_means(sums);
  std::vector<torch::Tensor> tables = {projector_of(gs, key).matmul(M)};
  for (size_t i = 0; i < gs.irreps.size(); ++i) tables.push_back(gs.projectors[i].matmul(M));
  const auto out = less_label_tables(pass, sums, data, tables);
  p.excluded_loss = out[0].train.loss;
  for (size_t i = 0; i < gs.irreps.size(); ++i) {
    p.excluded_each.push_back(out[i + 1].train.loss);
    const auto alone = read_restricted(sums, gs, {i}, &p.similarity);
    p.restricted_each.push_back(alone.restricted.all.loss), p.heldout_each.push_back(alone.heldout.loss);
  }
  for (auto k : key) p.excluded_by_key.push_back(p.excluded_each[k]);
  p.gini_embed = irrep_gini(row_fractions(embedding_matrix(model), gs), gs);
  const PairReadout& readout = readout_of(model);
  if (!readout.neuron_to_logits.empty()) p.gini_wl = irrep_gini(row_fractions(neuron_logit_map(model), gs), gs);
  return p;
}

}  // namespace grokking
