// The analysis of group runs by irreps (irreps.hpp): projections through the isotypic
// projectors, Chughtai et al.'s logit similarity, key irreps, and losses with controls.
#include "grokking/irreps.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "grokking/error.hpp"

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

// The functions of the label in `basis` ([|G|, r] orthonormal columns): the part of `values`.
torch::Tensor project_label_basis(const torch::Tensor& values, const GroupStructure& gs, const torch::Tensor& basis) {
  auto M = label_means(values, gs);
  return basis.matmul(basis.t().matmul(M)).index_select(0, gs.labels);
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

// Chughtai et al.'s similarity of every irrep: the logits centred over the classes against the
// character cube chi(label . c^-1) over pairs and classes.
std::vector<double> logit_similarities(const torch::Tensor& logits, const GroupStructure& gs) {
  const int64_t N = gs.group.order;
  const auto centred = logits - logits.mean(1, /*keepdim=*/true);
  const double centred_norm = std::sqrt(sq(centred));
  auto summed = torch::zeros({N, N}, torch::kFloat64).index_add_(0, gs.labels, centred);  // [g, c]
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

// The Gini of the per-irrep norms (non-trivial irreps) of rows by element.
double irrep_gini(const std::vector<double>& fractions, const GroupStructure& gs) {
  std::vector<double> norms;
  for (size_t i = 0; i < fractions.size(); ++i)
    if (!gs.irreps[i].trivial()) norms.push_back(std::sqrt(fractions[i]));
  return norms.empty() ? 0.0 : gini(norms);
}

}  // namespace

torch::Tensor project_irreps(const torch::Tensor& values, const GroupStructure& gs, const std::vector<size_t>& irreps) {
  const int64_t N = gs.group.order;
  auto Q = torch::zeros({N, N}, torch::kFloat64);
  for (auto i : irreps) Q += gs.projectors.at(i);
  return Q.matmul(label_means(values, gs)).index_select(0, gs.labels);
}

namespace {
// The key irreps' part of the logits of the pairs in `mask` built from those pairs alone: per
// label, the mean over its pairs in the mask (labels with none: 0), projected; plus the
// per-class mean of the rest over those pairs. [pairs in mask, |G|].
torch::Tensor restricted_within(const torch::Tensor& logits, const GroupStructure& gs, const std::vector<size_t>& key,
                                const torch::Tensor& mask) {
  const int64_t N = gs.group.order;
  const auto idx = mask.nonzero().squeeze(1);
  const auto v = logits.index_select(0, idx).to(torch::kFloat64);
  const auto lab = gs.labels.index_select(0, idx);
  auto sums = torch::zeros({N, v.size(1)}, torch::kFloat64).index_add_(0, lab, v);
  auto counts = torch::zeros({N}, torch::kFloat64).index_add_(0, lab, torch::ones({lab.size(0)}, torch::kFloat64));
  const auto means = sums / counts.clamp_min(1).unsqueeze(1);
  auto Q = torch::zeros({N, N}, torch::kFloat64);
  for (auto i : key) Q += gs.projectors.at(i);
  const auto kept = Q.matmul(means).index_select(0, lab);
  return kept + (v - kept).mean(0, true);
}
}  // namespace

RestrictedReading read_restricted(const torch::Tensor& logits, const GroupStructure& gs, const Dataset& data,
                                  const std::vector<size_t>& key, const std::vector<double>* similarity) {
  RestrictedReading r;
  const auto l = logits.to(torch::kCPU, torch::kFloat64);
  const auto kept = project_irreps(l, gs, key);
  r.restricted = evaluate_splits(kept + (l - kept).mean(0, true), data.all_y, data.train_mask);
  const auto test = data.train_mask.logical_not();
  if (test.any().item<bool>()) {
    const auto y = data.all_y.index_select(0, test.nonzero().squeeze(1));
    r.heldout = evaluate_splits(restricted_within(l, gs, key, test), y, torch::zeros({y.size(0)}, torch::kBool)).test;
  }
  const auto sim = similarity ? *similarity : logit_similarities(l, gs);
  for (size_t i = 0; i < sim.size(); ++i)
    if (!gs.irreps[i].trivial() && sim[i] > kKeyIrrepSimilarity) r.rule.push_back(i);
  return r;
}

torch::Tensor memoriser_logits(const GroupStructure& gs, const Dataset& data, uint64_t seed) {
  const int64_t N = gs.group.order;
  auto gen = at::detail::createCPUGenerator(seed * 1000003u + 0x3e3);
  auto logits = torch::randn({N * N, N}, gen, torch::kFloat64);
  const auto train = data.train_mask.nonzero().squeeze(1);
  const auto margin = torch::full({train.size(0), 1}, 10.0, torch::kFloat64);
  auto rows = logits.index_select(0, train);
  rows.scatter_add_(1, data.all_y.index_select(0, train).unsqueeze(1), margin);
  return logits.index_copy(0, train, rows);
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
Split all_pairs_with_rows(const Model& model, const Dataset& data, const torch::Tensor& Q) {
  std::vector<torch::Tensor> emb;
  for (auto& e : operand_embeddings(model)) emb.push_back(Q.mm(e));
  const Model m = with_operand_embeddings(model, emb);
  const auto logits = run_pair_forward(m).logits.to(torch::kCPU, torch::kFloat64);
  return evaluate_splits(logits, data.all_y, data.train_mask).all;
}

namespace {
double loss_with_rows(const Model& model, const Dataset& data, const torch::Tensor& Q) {
  return all_pairs_with_rows(model, data, Q).loss;
}
}  // namespace


double theirs_restricted_loss(const Model& model, const GroupStructure& gs, const std::vector<size_t>& key) {
  torch::NoGradGuard no_grad;
  auto Q = torch::zeros({gs.group.order, gs.group.order}, torch::kFloat64);
  for (auto k : key) Q += gs.projectors.at(k);
  return loss_with_rows(model, make_dataset(model.config().task), Q);
}

IrrepReport analyse_irreps(const Model& model, const GroupStructure& gs, std::vector<size_t> key, int64_t draws,
                           uint64_t seed) {
  torch::NoGradGuard no_grad;
  const int64_t N = gs.group.order;
  const Dataset data = make_dataset(model.config().task);
  const Cache cache = run_pair_forward(model);
  const auto logits = cache.logits.to(torch::kCPU, torch::kFloat64);  // [|G|^2, |G|]
  IrrepReport r;
  r.group = gs.group.name, r.operation = gs.operation, r.order = N;
  r.model = evaluate_splits(logits, data.all_y, data.train_mask);

  const auto similarity = logit_similarities(logits, gs);

  // The readings of the weights: embeddings, unembedding, neuron-logit map, hidden neurons.
  const auto embed = row_fractions(embedding_matrix(model), gs);
  const PairReadout& readout = readout_of(model);
  const auto unembed = row_fractions(model.param(readout.unembed).detach().cpu().t(), gs);
  std::vector<double> wl(gs.irreps.size(), 0.0), hidden(gs.irreps.size(), 0.0);
  if (!readout.neuron_to_logits.empty()) wl = row_fractions(neuron_logit_map(model), gs);
  if (cache.mlp_post.defined()) {
    auto h = cache.mlp_post.to(torch::kCPU, torch::kFloat64);
    h = h - h.mean(0, true);
    const double total = std::max(sq(h), 1e-300);
    for (size_t i = 0; i < gs.irreps.size(); ++i) hidden[i] = sq(project_irreps(h, gs, {i})) / total;
  }
  // Chughtai et al.'s readings (their SymmetricMetrics, the paper's version of the code).
  const auto [tx, ty] = total_embeddings(model);
  const auto their_x = row_fractions(tx, gs), their_y = row_fractions(ty, gs);
  // percent_hidden: the centred hidden activations over all pairs, their share that is a function
  // of a alone, of b alone, of the label, in each irrep's component. Each of a, b and the label
  // takes every value on |G| pairs, so the projection of a function of one of them is |G| times
  // the squared norm of the projected per-value means.
  std::vector<double> their_hx(gs.irreps.size(), 0.0), their_hy(gs.irreps.size(), 0.0),
      their_hxy(gs.irreps.size(), 0.0);
  torch::Tensor hidden_uncentred;
  if (cache.mlp_post.defined()) {
    hidden_uncentred = cache.mlp_post.to(torch::kCPU, torch::kFloat64);
    const auto h = hidden_uncentred - hidden_uncentred.mean(0, true);
    const double total = std::max(sq(h), 1e-300);
    const auto by_pair = h.view({N, N, h.size(1)});
    const auto mean_a = by_pair.mean(1), mean_b = by_pair.mean(0), mean_xy = label_means(h, gs);
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
    m.theirs_excluded_loss = loss_with_rows(model, data, identity - gs.projectors[i]);
    m.name = gs.irreps[i].name;
    m.dim = gs.irreps[i].dim;
    m.component_dim = gs.component_dim(i);
    m.similarity = similarity[i];
    m.fve = m.similarity * m.similarity;
    m.embed_frac = embed[i], m.unembed_frac = unembed[i], m.wl_frac = wl[i], m.hidden_frac = hidden[i];
    m.excluded = evaluate_splits(logits - project_irreps(logits, gs, {i}), data.all_y, data.train_mask).train;
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
  const auto kept = project_irreps(logits, gs, key);
  const auto reading = read_restricted(logits, gs, data, key, &similarity);
  r.restricted = reading.restricted, r.restricted_heldout = reading.heldout;
  r.excluded = evaluate_splits(logits - kept, data.all_y, data.train_mask);
  auto Q = torch::zeros({N, N}, torch::kFloat64);
  for (auto k : key) Q += gs.projectors[k];
  r.theirs_restricted_loss = loss_with_rows(model, data, Q);  // = theirs_restricted_loss(model, gs, key)
  r.theirs_total_excluded_loss = loss_with_rows(model, data, identity - Q);
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
  if (hidden_uncentred.defined()) {
    r.theirs_table.has_hidden = true;
    const auto W_L = neuron_logit_map(model);  // [C, hidden]
    const auto kept_hidden = project_irreps(hidden_uncentred, gs, key);
    r.theirs_table.hidden_restricted_loss =
        evaluate_splits(kept_hidden.mm(W_L.t()), data.all_y, data.train_mask).all.loss;
    r.theirs_table.hidden_excluded_loss =
        evaluate_splits((hidden_uncentred - kept_hidden).mm(W_L.t()), data.all_y, data.train_mask).train.loss;
  }
  // The control a restricted loss needs: a lookup table of the same split, read the same way.
  r.memoriser = read_restricted(memoriser_logits(gs, data, seed), gs, data, key);

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
  if (!r.matched.empty())
    r.matched_excluded = evaluate_splits(logits - project_irreps(logits, gs, r.matched), data.all_y, data.train_mask);
  int64_t dim = 0;
  for (auto k : key) dim += gs.component_dim(k);
  if (dim > 0 && dim < N) {
    r.random_draws = draws;
    for (int64_t d = 0; d < draws; ++d) {
      auto gen = at::detail::createCPUGenerator(seed * 1000003u + uint64_t(d));
      auto basis = std::get<0>(at::linalg_qr(torch::randn({N, dim}, gen, torch::kFloat64)));
      auto s = evaluate_splits(logits - project_label_basis(logits, gs, basis), data.all_y, data.train_mask);
      for (auto [dst, src] : {std::pair{&r.random_excluded.train, &s.train}, {&r.random_excluded.test, &s.test},
                              {&r.random_excluded.all, &s.all}}) {
        dst->loss += src->loss / double(draws);
        dst->acc += src->acc / double(draws);
      }
    }
  }
  r.gini_embed = irrep_gini(embed, gs), r.gini_wl = irrep_gini(wl, gs);
  return r;
}

IrrepProgress irrep_progress(const Model& model, const GroupStructure& gs, const Dataset& data,
                             const std::vector<size_t>& key) {
  torch::NoGradGuard no_grad;
  IrrepProgress p;
  const auto logits = run_pair_forward(model).logits.to(torch::kCPU, torch::kFloat64);
  const auto ev = evaluate_splits(logits, data.all_y, data.train_mask);
  p.train_loss = ev.train.loss, p.test_loss = ev.test.loss, p.train_acc = ev.train.acc, p.test_acc = ev.test.acc;
  p.similarity = logit_similarities(logits, gs);
  const auto kept = project_irreps(logits, gs, key);
  const auto reading = read_restricted(logits, gs, data, key, &p.similarity);
  p.restricted = reading.restricted, p.restricted_heldout = reading.heldout;
  p.excluded_loss = evaluate_splits(logits - kept, data.all_y, data.train_mask).train.loss;
  for (size_t i = 0; i < gs.irreps.size(); ++i) {
    p.excluded_each.push_back(
        evaluate_splits(logits - project_irreps(logits, gs, {i}), data.all_y, data.train_mask).train.loss);
    const auto alone = read_restricted(logits, gs, data, {i}, &p.similarity);
    p.restricted_each.push_back(alone.restricted.all.loss), p.heldout_each.push_back(alone.heldout.loss);
  }
  for (auto k : key) p.excluded_by_key.push_back(p.excluded_each[k]);
  p.gini_embed = irrep_gini(row_fractions(embedding_matrix(model), gs), gs);
  const PairReadout& readout = readout_of(model);
  if (!readout.neuron_to_logits.empty()) p.gini_wl = irrep_gini(row_fractions(neuron_logit_map(model), gs), gs);
  return p;
}

}  // namespace grokking
