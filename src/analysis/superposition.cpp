// The analysis of toy models of superposition (superposition.hpp).
#include "grokking/superposition.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <map>

#include "grokking/error.hpp"

namespace grokking {

std::string geometry_name(int64_t k, int64_t r) {
  if (k == 1 && r == 1) return "dedicated dimension";
  if (k == 2 && r == 1) return "digon";
  if (k == 3 && r == 2) return "triangle";
  if (k == 4 && r == 3) return "tetrahedron";
  if (k == 5 && r == 2) return "pentagon";
  if (k == 8 && r == 3) return "square antiprism";
  return std::to_string(k) + " features in " + std::to_string(r) + " dimensions";
}

std::vector<FeatureGroup> feature_groups(const torch::Tensor& W_in) {
  const auto W = W_in.to(torch::kCPU, torch::kFloat64);
  const int64_t n = W.size(0);
  const auto norms = W.norm(2, {1});
  std::vector<int64_t> rep;
  for (int64_t i = 0; i < n; ++i)
    if (norms[i].item<double>() >= kRepresentedNorm) rep.push_back(i);
  const auto unit = W / norms.clamp_min(1e-12).unsqueeze(1);
  const auto cosine = unit.matmul(unit.t()).abs();
  // Connected components among the represented features (union by search).
  std::vector<int64_t> group(size_t(n), -1);
  std::vector<FeatureGroup> out;
  for (auto start : rep) {
    if (group[size_t(start)] >= 0) continue;
    FeatureGroup g;
    std::vector<int64_t> stack = {start};
    group[size_t(start)] = int64_t(out.size());
    while (!stack.empty()) {
      const int64_t i = stack.back();
      stack.pop_back();
      g.features.push_back(i);
      for (auto j : rep)
        if (group[size_t(j)] < 0 && cosine[i][j].item<double>() >= kGeometryCosine)
          group[size_t(j)] = int64_t(out.size()), stack.push_back(j);
    }
    std::sort(g.features.begin(), g.features.end());
    // The dimension they span: singular values above a tenth of the largest.
    const auto sv = at::linalg_svdvals(W.index_select(0, torch::tensor(g.features, torch::kInt64)));
    const double top = sv.max().item<double>();
    g.dims = sv.gt(0.1 * top).sum().item<int64_t>();
    g.name = geometry_name(int64_t(g.features.size()), g.dims);
    out.push_back(g);
  }
  std::stable_sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.features.size() > b.features.size(); });
  return out;
}

std::string geometry_text(const std::vector<FeatureGroup>& groups) {
  if (groups.empty()) return "no feature represented";
  std::map<std::string, std::vector<std::string>> by_name;
  std::vector<std::string> order;
  for (auto& g : groups) {
    std::string f;
    for (size_t i = 0; i < g.features.size(); ++i) f += (i ? "," : "") + std::to_string(g.features[i]);
    if (!by_name.count(g.name)) order.push_back(g.name);
    by_name[g.name].push_back(f);
  }
  std::string out;
  for (auto& name : order) {
    const auto& v = by_name[name];
    out += (out.empty() ? "" : "; ") + (v.size() > 1 ? std::to_string(v.size()) + " x " : std::string()) + name + " (";
    for (size_t i = 0; i < v.size() && i < 6; ++i) out += (i ? " " : "") + std::string("{") + v[i] + "}";
    out += v.size() > 6 ? " ...)" : ")";
  }
  return out;
}

SuperpositionReport analyse_superposition(const Model& model) {
  const FeatureReadout* readout = model.arch().feature_readout();
  if (!readout)
    throw UsageError("the superposition analysis reads a feature matrix; model.kind \"" + model.config().model.kind +
                     "\" has none");
  torch::NoGradGuard no_grad;
  const auto W = model.param(readout->weights).detach().to(torch::kCPU, torch::kFloat64);  // [n, m]
  const auto b = model.param(readout->bias).detach().to(torch::kCPU, torch::kFloat64);
  SuperpositionReport r;
  r.n = W.size(0), r.m = W.size(1);
  const auto norms = W.norm(2, {1});                                       // ||W_i||
  const auto unit = W / norms.clamp_min(1e-6).unsqueeze(1);                // W^_i (the notebook's clamp)
  const auto overlap = unit.matmul(W.t());                                 // [i, j] = W^_i . W_j
  const auto sq = overlap.pow(2);
  const auto wtw = W.matmul(W.t());
  for (int64_t i = 0; i < r.n; ++i) {
    FeatureGeometry f;
    f.norm = norms[i].item<double>();
    const double all = sq[i].sum().item<double>();  // j = i included: the notebook's denominator
    f.interference = all - sq[i][i].item<double>();
    f.dimensionality = all > 0 ? f.norm * f.norm / all : 0.0;
    f.bias = b[i].item<double>();
    for (int64_t k = 0; k < r.m; ++k) f.direction.push_back(W[i][k].item<double>());
    r.represented += f.norm >= kRepresentedNorm ? 1 : 0;
    r.superposed += f.norm >= kRepresentedNorm && f.interference >= kSuperposedInterference ? 1 : 0;
    std::vector<double> row;
    for (int64_t j = 0; j < r.n; ++j) row.push_back(wtw[i][j].item<double>());
    r.wtw.push_back(row);
    r.features.push_back(f);
  }
  const double frob = W.pow(2).sum().item<double>();
  r.dims_per_feature = frob > 0 ? double(r.m) / frob : 0.0;
  r.groups = feature_groups(W);
  return r;
}

SetGeometry set_geometry(const Model& model, bool represented_only) {
  SetGeometry g;
  const auto& task = model.config().task;
  if (!task.keys.contains("set_size") || task.integer("set_size") < 2) return g;
  g.set_size = task.integer("set_size"), g.sets = task.text("sets");
  const FeatureReadout* readout = model.arch().feature_readout();
  if (!readout) return g;
  torch::NoGradGuard no_grad;
  const auto W = model.param(readout->weights).detach().to(torch::kCPU, torch::kFloat64);  // [n, m]
  const int64_t n = W.size(0);
  const auto norms = W.norm(2, {1});
  const auto unit = W / norms.clamp_min(1e-12).unsqueeze(1);
  const auto cosine = unit.matmul(unit.t());
  // The pairs i < j, both represented where asked; within a set or across sets.
  const auto idx = torch::arange(n, torch::kInt64);
  auto pairs = idx.unsqueeze(1).lt(idx.unsqueeze(0));
  if (represented_only) {
    const auto rep = norms.ge(kRepresentedNorm);
    pairs = pairs & rep.unsqueeze(1) & rep.unsqueeze(0);
  }
  const auto set = idx.div(g.set_size, "floor");
  const auto same = set.unsqueeze(1).eq(set.unsqueeze(0));
  auto mean_of = [&](const torch::Tensor& mask, int64_t& count, double& mean, double& mean_abs) {
    count = mask.sum().item<int64_t>();
    const auto c = cosine.masked_select(mask);
    mean = count ? c.mean().item<double>() : std::nan("");
    mean_abs = count ? c.abs().mean().item<double>() : std::nan("");
  };
  mean_of(pairs & same, g.within_pairs, g.within_cos, g.within_abs_cos);
  mean_of(pairs & ~same, g.across_pairs, g.across_cos, g.across_abs_cos);
  return g;
}

ToyNeuronReport toy_neurons(const Model& model) {
  ToyNeuronReport r;
  const FeatureReadout* readout = model.arch().feature_readout();
  if (!readout || readout->neurons_in.empty()) return r;
  torch::NoGradGuard no_grad;
  const auto W = model.param(readout->neurons_in).detach().to(torch::kCPU, torch::kFloat64);  // [n, m]
  r.features = W.size(0);
  const int64_t m = W.size(1);
  const auto sq = W.pow(2);
  const auto norms = sq.sum(0).sqrt();  // [m]
  const double top_norm = norms.max().item<double>();
  // Each feature's unit input on each side, x = +-e_i, through the model: the neurons' activations
  // [2n, m] and outputs [2n, n] (row 2i: +e_i, row 2i + 1: -e_i).
  const auto eye = torch::eye(r.features, torch::kFloat32);
  const auto units =
      torch::stack({eye, -eye}, 1).reshape({2 * r.features, r.features}).to(model.param(readout->neurons_in).device());
  ActivationCache cache({readout->neurons_hook});
  const auto out = model.run_with_cache(units, cache).to(torch::kCPU, torch::kFloat64).reshape({2 * r.features, -1});
  const auto hidden = cache[readout->neurons_hook].to(torch::kCPU, torch::kFloat64);
  const auto V = model.param(readout->neurons_out).detach().to(torch::kCPU, torch::kFloat64);  // [m, n]
  auto row = [](int64_t feature, double sign) { return 2 * feature + (sign > 0 ? 0 : 1); };
  std::vector<int> pos(size_t(r.features), 0), neg(size_t(r.features), 0);
  for (int64_t j = 0; j < m; ++j) {
    ToyNeuron n;
    n.norm = norms[j].item<double>();
    const auto col = sq.select(1, j);
    n.feature = col.argmax().item<int64_t>();
    n.weight = W[n.feature][j].item<double>();
    n.share = n.norm > 0 ? col[n.feature].item<double>() / (n.norm * n.norm) : 0.0;
    if (n.norm < 0.1 * top_norm) {
      n.kind = "dead", ++r.dead;
    } else if (n.share >= kMonosemanticShare) {
      n.kind = "monosemantic", ++r.monosemantic;
      ++(n.weight > 0 ? pos : neg)[size_t(n.feature)];
    } else {
      n.kind = "polysemantic", ++r.polysemantic;
    }
    for (int64_t k = 0; k < r.features; ++k) {
      const double w = W[k][j].item<double>();
      if (k != n.feature && w * n.weight < 0 && std::abs(w) > std::abs(n.second_weight)) n.second = k, n.second_weight = w;
    }
    if (n.kind != "dead" && n.second >= 0) {
      n.ratio = std::abs(n.weight / n.second_weight);
      const int64_t i = n.feature, s = n.second;
      const double carries = hidden[row(s, n.second_weight)][j].item<double>() * V[j][s].item<double>();
      const int64_t primary = row(i, n.weight);
      const double interferes = hidden[primary][j].item<double>() * V[j][s].item<double>();
      const double net = out[primary][s].item<double>();
      if (n.ratio >= kAsymmetricRatio && carries >= kCarries && interferes >= kCarries && net <= 0.5 * interferes) {
        n.asymmetric = true, ++r.asymmetric;
        const auto parts = hidden[primary] * V.select(1, s);  // each neuron's part of output s
        n.inhibitor = parts.argmin().item<int64_t>();
      }
    }
    r.neurons.push_back(n);
  }
  for (int64_t i = 0; i < r.features; ++i) r.both_signs += pos[size_t(i)] > 0 && neg[size_t(i)] > 0 ? 1 : 0;
  return r;
}

double abs_without_superposition(const Model& model) {
  const auto& t = model.config().task;
  const FeatureReadout* readout = model.arch().feature_readout();
  if (!readout || readout->neurons_in.empty() || !t.keys.contains("target") || t.text("target") != "abs" ||
      t.text("values") != "signed")
    return std::nan("");
  const int64_t n = t.integer("n_features"), m = model.param(readout->neurons_in).size(1);
  std::vector<double> importance = t.reals("importances");
  if (importance.empty())
    for (int64_t i = 0; i < n; ++i) importance.push_back(std::pow(t.real("importance_decay"), double(i)));
  std::sort(importance.begin(), importance.end(), std::greater<>());
  const double p = 1.0 - t.real("sparsity");
  const double none = p / 3 - p * p / 4, one = p / 6;  // a feature's error with no neuron, with one
  double loss = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i < m / 2) continue;                                           // two neurons: exact
    loss += importance[size_t(i)] * (i == m / 2 && m % 2 ? std::min(one, none) : none);  // an odd neuron
  }
  return loss;
}

std::string two_feature_phase(const SuperpositionReport& r) {
  if (r.n != 2 || r.m != 1) throw UsageError("the two-feature phase diagram is for n = 2 features in m = 1 dimension");
  const double w1 = r.features[0].direction[0], w2 = r.features[1].direction[0];
  if (std::abs(w2) < kRepresentedNorm) return "not represented";
  if (std::abs(w1) < kRepresentedNorm) return "dedicated dimension";
  return w1 * w2 < 0 ? "antipodal superposition" : "superposition (same sign)";
}

namespace {

// The expected loss E[(x1 - x1')^2 + I2 (x2 - x2')^2] of x' = ReLU(w w^T x + b), w = (w1, w2),
// each x_i 0 with probability 1 - p else uniform in [0, 1): the four cases of which features are
// on, the uniform ones by midpoint quadrature.
double expected_loss(const std::array<double, 4>& q, double importance2, double p) {
  const double w1 = q[0], w2 = q[1], b1 = q[2], b2 = q[3];
  auto err = [&](double x1, double x2) {
    const double y1 = std::max(0.0, w1 * w1 * x1 + w1 * w2 * x2 + b1);
    const double y2 = std::max(0.0, w1 * w2 * x1 + w2 * w2 * x2 + b2);
    return (x1 - y1) * (x1 - y1) + importance2 * (x2 - y2) * (x2 - y2);
  };
  constexpr int kOne = 200, kTwo = 48;
  double one1 = 0, one2 = 0, two = 0;
  for (int i = 0; i < kOne; ++i) {
    const double u = (i + 0.5) / kOne;
    one1 += err(u, 0) / kOne, one2 += err(0, u) / kOne;
  }
  for (int i = 0; i < kTwo; ++i)
    for (int j = 0; j < kTwo; ++j) two += err((i + 0.5) / kTwo, (j + 0.5) / kTwo) / (kTwo * kTwo);
  return (1 - p) * (1 - p) * err(0, 0) + p * (1 - p) * (one1 + one2) + p * p * two;
}

// Nelder-Mead from a start: the least expected loss it finds and where.
std::pair<double, std::array<double, 4>> minimise(const std::function<double(const std::array<double, 4>&)>& f,
                                                  std::array<double, 4> start) {
  std::array<std::array<double, 4>, 5> s;
  std::array<double, 5> v;
  for (int i = 0; i < 5; ++i) {
    s[size_t(i)] = start;
    if (i > 0) s[size_t(i)][size_t(i - 1)] += 0.2;
    v[size_t(i)] = f(s[size_t(i)]);
  }
  for (int it = 0; it < 400; ++it) {
    std::array<int, 5> order = {0, 1, 2, 3, 4};
    std::sort(order.begin(), order.end(), [&](int a, int b) { return v[size_t(a)] < v[size_t(b)]; });
    auto pick = [&](int k) { return s[size_t(order[size_t(k)])]; };
    std::array<double, 4> centre{};
    for (int k = 0; k < 4; ++k)
      for (int d = 0; d < 4; ++d) centre[size_t(d)] += pick(k)[size_t(d)] / 4;
    const int worst = order[4];
    auto along = [&](double t) {
      std::array<double, 4> x;
      for (int d = 0; d < 4; ++d) x[size_t(d)] = centre[size_t(d)] + t * (s[size_t(worst)][size_t(d)] - centre[size_t(d)]);
      return x;
    };
    auto r = along(-1);
    const double fr = f(r);
    if (fr < v[size_t(order[0])]) {
      auto e = along(-2);
      const double fe = f(e);
      if (fe < fr) s[size_t(worst)] = e, v[size_t(worst)] = fe;
      else s[size_t(worst)] = r, v[size_t(worst)] = fr;
    } else if (fr < v[size_t(order[3])]) {
      s[size_t(worst)] = r, v[size_t(worst)] = fr;
    } else {
      auto c = along(0.5);
      const double fc = f(c);
      if (fc < v[size_t(worst)]) {
        s[size_t(worst)] = c, v[size_t(worst)] = fc;
      } else {  // shrink towards the best
        for (int k = 1; k < 5; ++k) {
          auto& x = s[size_t(order[size_t(k)])];
          for (int d = 0; d < 4; ++d) x[size_t(d)] = pick(0)[size_t(d)] + 0.5 * (x[size_t(d)] - pick(0)[size_t(d)]);
          v[size_t(order[size_t(k)])] = f(x);
        }
      }
    }
  }
  const auto best = size_t(std::min_element(v.begin(), v.end()) - v.begin());
  return {v[best], s[best]};
}

}  // namespace

std::string two_feature_optimum(double importance2, double density) {
  auto f = [&](const std::array<double, 4>& q) { return expected_loss(q, importance2, density); };
  // From each of the three configurations: feature 1 alone, feature 2 alone, antipodal.
  std::pair<double, std::array<double, 4>> best{1e300, {}};
  for (auto start : {std::array<double, 4>{1, 0, 0, density / 2}, std::array<double, 4>{0, 1, density / 2, 0},
                     std::array<double, 4>{1, -1, 0, 0}}) {
    auto r = minimise(f, start);
    if (r.first < best.first) best = r;
  }
  SuperpositionReport r;
  r.n = 2, r.m = 1;
  r.features.resize(2);
  r.features[0].direction = {best.second[0]};
  r.features[1].direction = {best.second[1]};
  return two_feature_phase(r);
}

}  // namespace grokking
