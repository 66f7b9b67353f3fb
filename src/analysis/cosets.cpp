// Subgroups up to conjugacy, cosets, and how much of a group network's hidden units they explain
// (Stander et al. 2024), beside the irreps' account (Chughtai et al. 2023).
#include "grokking/cosets.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "grokking/analysis.hpp"
#include "grokking/groups.hpp"
#include "grokking/irreps.hpp"
#include "grokking/model.hpp"
#include "grokking/progress_note.hpp"
#include "grokking/task.hpp"

namespace grokking {

namespace {

using Subgroup = std::vector<int32_t>;  // sorted elements

// The subgroup the generators generate: products until nothing new appears.
Subgroup closure(const FiniteGroup& g, const std::vector<int32_t>& gens) {
  std::vector<char> in(size_t(g.order), 0);
  std::vector<int32_t> members = {0};
  in[0] = 1;
  for (size_t i = 0; i < members.size(); ++i)
    for (auto s : gens) {
      const int32_t p = g.mul(members[i], s);
      if (!in[size_t(p)]) in[size_t(p)] = 1, members.push_back(p);
    }
  std::sort(members.begin(), members.end());
  return members;
}

Subgroup conjugate(const FiniteGroup& g, const Subgroup& H, int32_t x) {
  Subgroup out;
  for (auto h : H) out.push_back(g.mul(g.mul(x, h), g.inverse[size_t(x)]));
  std::sort(out.begin(), out.end());
  return out;
}

bool is_cyclic(const FiniteGroup& g, const Subgroup& H) {
  for (auto h : H)
    if (int64_t(closure(g, {h}).size()) == int64_t(H.size())) return true;
  return false;
}

// A name a reader knows, where one applies; else the order (and "C<k>" when cyclic).
std::string name_of(const FiniteGroup& g, const Subgroup& H, bool cyclic) {
  const int64_t k = int64_t(H.size());
  if (g.family == "S" || g.family == "A") {
    auto fact = [](int64_t n) { int64_t f = 1; for (int64_t i = 2; i <= n; ++i) f *= i; return f; };
    const int64_t n = g.n;
    // A point's stabiliser: every element fixes one common point.
    for (int p = 0; p < n; ++p) {
      bool fixes = true;
      for (auto h : H) fixes = fixes && g.images[size_t(h)][size_t(p)] == p;
      if (fixes && k == (g.family == "S" ? fact(n - 1) : fact(n - 1) / 2))
        return std::string(g.family == "S" ? "S" : "A") + std::to_string(n - 1) + ", a point's stabiliser";
      // In S_n, the even permutations fixing a point: A_{n-1}, inside that point's stabiliser.
      if (fixes && g.family == "S" && n > 4 && k == fact(n - 1) / 2) {  // (A3 is C3: named so)
        auto even = [&](int32_t h) {  // an even permutation: n minus its number of cycles is even
          const auto& img = g.images[size_t(h)];
          std::vector<bool> seen(img.size(), false);
          int64_t cycles = 0;
          for (size_t s = 0; s < img.size(); ++s) {
            if (seen[s]) continue;
            ++cycles;
            for (size_t x = s; !seen[x]; x = size_t(img[x])) seen[x] = true;
          }
          return (int64_t(img.size()) - cycles) % 2 == 0;
        };
        if (std::all_of(H.begin(), H.end(), even))
          return "A" + std::to_string(n - 1) + ", the even part of a point's stabiliser";
      }
    }
    if (g.family == "S" && 2 * k == g.order) return "A" + std::to_string(n);
  }
  if (g.family == "D" && k == g.n && std::all_of(H.begin(), H.end(), [&](int32_t h) { return h < g.n; }))
    return "rotations C" + std::to_string(g.n);
  if (cyclic) return "C" + std::to_string(k);
  if (k == 4) return "C2xC2";  // the one non-cyclic group of order 4
  return "order " + std::to_string(k);
}

// Centred columns of f [|G|, W] (float64) and the per-column sum of squares of their coset means
// (times the coset sizes) for a labelling: the variance constant on the cosets.
torch::Tensor explained(const torch::Tensor& fc, const std::vector<int32_t>& labels, int64_t index) {
  const auto lab = torch::tensor(std::vector<int64_t>(labels.begin(), labels.end()), torch::kInt64);
  auto sums = torch::zeros({index, fc.size(1)}, torch::kFloat64).index_add_(0, lab, fc);
  const auto counts = torch::zeros({index}, torch::kFloat64).index_add_(0, lab, torch::ones({fc.size(0)}, torch::kFloat64));
  return (sums.pow(2) / counts.unsqueeze(1)).sum(0);  // [W]
}

// Their ratio for one labelling: the sum over cosets of the within-coset sample variance over the
// whole sample variance, per column.
torch::Tensor their_ratio(const torch::Tensor& f, const std::vector<int32_t>& labels, int64_t index) {
  const auto lab = torch::tensor(std::vector<int64_t>(labels.begin(), labels.end()), torch::kInt64);
  const auto n = torch::zeros({index}, torch::kFloat64).index_add_(0, lab, torch::ones({f.size(0)}, torch::kFloat64));
  const auto s1 = torch::zeros({index, f.size(1)}, torch::kFloat64).index_add_(0, lab, f);
  const auto s2 = torch::zeros({index, f.size(1)}, torch::kFloat64).index_add_(0, lab, f.pow(2));
  const auto nn = n.unsqueeze(1);
  const auto within = ((s2 - s1.pow(2) / nn) / (nn - 1).clamp_min(1)).sum(0);
  return within / f.var(0).clamp_min(1e-300);
}

}  // namespace

std::vector<int32_t> coset_labels(const FiniteGroup& g, const std::vector<int32_t>& H, bool left) {
  std::vector<int32_t> label(size_t(g.order), -1);
  int32_t next = 0;
  for (int32_t x = 0; x < g.order; ++x) {
    if (label[size_t(x)] >= 0) continue;
    for (auto h : H) label[size_t(left ? g.mul(x, h) : g.mul(h, x))] = next;
    ++next;
  }
  return label;
}

std::vector<SubgroupClass> subgroup_classes(const FiniteGroup& g) {
  std::set<Subgroup> found;
  const auto add = [&](const Subgroup& H) {
    if (H.size() > 1 && int64_t(H.size()) < g.order) found.insert(H);
  };
  for (int32_t a = 1; a < g.order; ++a) add(closure(g, {a}));
  if (g.order <= 120) {
    for (int32_t a = 1; a < g.order; ++a) {
      const Subgroup A = closure(g, {a});
      for (int32_t b = a + 1; b < g.order; ++b)
        if (!std::binary_search(A.begin(), A.end(), b)) add(closure(g, {a, b}));
    }
  } else {
    if (g.family == "S" || g.family == "A") {
      // Each point's stabiliser (generated by the stabiliser's own elements), and A_n in S_n.
      for (int p = 0; p < g.n; ++p) {
        std::vector<int32_t> gens;
        for (int32_t x = 0; x < g.order; ++x)
          if (g.images[size_t(x)][size_t(p)] == p) gens.push_back(x);
        add(closure(g, gens));
      }
      if (g.family == "S") {  // A_n: the even permutations (n minus their cycles is even)
        Subgroup even;
        for (int32_t x = 0; x < g.order; ++x) {
          std::vector<char> seen(size_t(g.n), 0);
          int cycles = 0;
          for (int p = 0; p < g.n; ++p)
            if (!seen[size_t(p)]) {
              ++cycles;
              for (int q = p; !seen[size_t(q)]; q = g.images[size_t(x)][size_t(q)]) seen[size_t(q)] = 1;
            }
          if ((g.n - cycles) % 2 == 0) even.push_back(x);
        }
        add(even);
      }
    }
    if (g.family == "D" && g.n >= 2) add(closure(g, {1}));  // the rotations, generated by r
  }
  // Up to conjugacy.
  std::vector<SubgroupClass> out;
  std::set<Subgroup> placed;
  for (auto& H : found) {
    if (placed.count(H)) continue;
    std::set<Subgroup> conj;
    for (int32_t x = 0; x < g.order; ++x) conj.insert(conjugate(g, H, x));
    SubgroupClass c;
    c.order = int64_t(H.size()), c.index = g.order / c.order, c.normal = conj.size() == 1, c.cyclic = is_cyclic(g, H);
    c.name = name_of(g, H, c.cyclic);
    for (auto& K : conj) {
      placed.insert(K);
      c.conjugates.push_back(K);
    }
    out.push_back(std::move(c));
  }
  std::stable_sort(out.begin(), out.end(), [](const SubgroupClass& a, const SubgroupClass& b) { return a.order < b.order; });
  return out;
}

LogitReadout::LogitReadout(const FiniteGroup& g) {
  const int64_t N = g.order;
  const auto M = torch::tensor(std::vector<int64_t>(g.table.begin(), g.table.end()), torch::kInt64).reshape({N, N});
  const auto inv = torch::tensor(std::vector<int64_t>(g.inverse.begin(), g.inverse.end()), torch::kInt64);
  left_ = M.index_select(0, inv).t().contiguous();  // [c^-1][y] read at y, then c
  right_ = M.index_select(1, inv);                  // [y][c^-1]
  S_[0] = torch::zeros({N}, torch::kFloat64), S_[1] = torch::zeros({N}, torch::kFloat64);
}

LogitReadout::LogitReadout(const torch::Tensor& logits, const std::vector<int64_t>& answers, const FiniteGroup& g)
    : LogitReadout(g) {
  add(logits, torch::tensor(answers, torch::kInt64));
}

void LogitReadout::add(const torch::Tensor& logits, const torch::Tensor& answers) {
  const auto y = logits.to(torch::kCPU, torch::kFloat64);
  const auto yc = y - y.mean(1, true);
  total_ += yc.pow(2).sum().item<double>(), pairs_ += y.size(0);
  // d[p, c] = c^-1 y_p (left) and y_p c^-1 (right).
  const auto left = left_.index_select(0, answers), right = right_.index_select(0, answers);
  S_[0].index_add_(0, left.reshape(-1), yc.reshape(-1));
  S_[1].index_add_(0, right.reshape(-1), yc.reshape(-1));
}

double LogitReadout::share(const torch::Tensor& A, bool left) const {
  if (total_ <= 0) return 0;
  // Every pair's row holds each d once: the regressors' Gram matrix is pairs x A~^T A~.
  const auto Ac = A.to(torch::kFloat64) - A.to(torch::kFloat64).mean(0, true);
  const auto s = Ac.t().mv(S_[left ? 0 : 1]);
  const auto G = Ac.t().mm(Ac) * double(pairs_);
  return s.dot(at::linalg_pinv(G, 1e-10, /*hermitian=*/true).mv(s)).item<double>() / total_;
}

double LogitReadout::ceiling(bool left) const {
  return total_ > 0 ? S_[left ? 0 : 1].pow(2).sum().item<double>() / double(pairs_) / total_ : 0;
}

CosetReport analyse_cosets(const Model& model, const GroupStructure& gs, const std::vector<size_t>* given_key) {
  torch::NoGradGuard no_grad;
  const FiniteGroup& g = gs.group;
  const int64_t N = g.order;
  const Dataset data = make_dataset(model.config().task);
  CosetReport r;
  r.group = g.name, r.order = N;
  const auto [fa, fb] = total_embeddings(model);  // [|G|, W] float64
  r.units = fa.size(1);
  const auto ca = fa - fa.mean(0, true), cb = fb - fb.mean(0, true);
  const auto var_a = ca.pow(2).sum(0), var_b = cb.pow(2).sum(0);
  // Units that carry anything (a dead unit's ratio is noise).
  const auto live = (var_a + var_b) > 1e-9 * (var_a + var_b).max().item<double>();
  r.live_units = live.sum().item<int64_t>();
  const double total_a = var_a.sum().item<double>(), total_b = var_b.sum().item<double>();

  // Passes over the pairs: the model, the key irreps kept, and each class's coset structure kept
  // (one side for a normal subgroup; both sides and the two mixed pairings otherwise, a model
  // with one shared embedding taking only the matched ones).
  const auto operands = operand_embeddings(model);
  const auto classes = subgroup_classes(g);
  size_t passes = 2;
  for (const auto& c : classes) passes += c.normal ? 1 : operands.size() == 2 ? 4 : 2;
  PairPass pairs(model);
  ProgressScope scope("cosets, " + std::to_string(passes) + " passes over " + std::to_string(pairs.pairs()) + " pairs",
                      passes * size_t(pairs.chunks()));
  // The model itself, and the irreps' account of the same units: one pass over the pairs, in
  // chunks; the logits read by where each class sits from the answer.
  SplitSums as_is_sums;
  LogitSums sums(gs, data);
  LogitReadout readout(g);
  pairs.each([&](int64_t first, const Cache& c) {
    const int64_t n = c.logits.size(0);
    const auto y = data.all_y.narrow(0, first, n);
    as_is_sums.add(c.logits, y, data.train_mask.narrow(0, first, n));
    sums.add(first, c.logits);
    readout.add(c.logits, y);
  });
  const Splits as_is = as_is_sums.splits();
  r.model_loss = as_is.all.loss, r.model_acc = as_is.all.acc, r.uniform_loss = std::log(double(N));
  r.key = given_key ? *given_key : read_restricted(sums, gs, {}).rule;
  const auto& key = r.key;
  auto Q = torch::zeros({N, N}, torch::kFloat64);
  for (auto k : key) {
    Q += gs.projectors.at(k);
    r.key_irreps.push_back(gs.irreps[k].name);
    r.irrep_dims += gs.component_dim(k);
  }
  r.irrep_fve_a = total_a > 0 ? Q.mm(ca).pow(2).sum().item<double>() / total_a : 0;
  r.irrep_fve_b = total_b > 0 ? Q.mm(cb).pow(2).sum().item<double>() / total_b : 0;
  const Split irrep_kept = all_pairs_with_rows(model, data, Q);
  r.irrep_kept_loss = irrep_kept.loss, r.irrep_kept_acc = irrep_kept.acc;
  if (!key.empty()) {
    std::vector<torch::Tensor> chars;  // the identity's row of each projector: its character, scaled
    for (auto k : key) chars.push_back(gs.projectors.at(k)[0]);
    r.irrep_logit_fve = readout.share(torch::stack(chars, 1), true);
  }
  r.logit_ceiling_left = readout.ceiling(true), r.logit_ceiling_right = readout.ceiling(false);

  // Per class and side: each unit's best conjugate's explained variance and their ratio, and the
  // projector on the functions constant on every conjugate's cosets.
  struct Side {
    torch::Tensor best_a, best_b, ratio_a, ratio_b, P;
    int64_t dims = 0;
  };
  const auto median = [&](const torch::Tensor& v) { return r.live_units > 0 ? v.index({live}).median().item<double>() : 0.0; };
  for (const auto& c : classes) {
    Side sides[2];  // left gH, right Hg
    double logit_left = 0, logit_right = 0;
    for (int s = 0; s < (c.normal ? 1 : 2); ++s) {
      Side& d = sides[s];
      d.best_a = torch::zeros({r.units}, torch::kFloat64), d.best_b = d.best_a.clone();
      d.ratio_a = torch::full({r.units}, 1e300, torch::kFloat64), d.ratio_b = d.ratio_a.clone();
      auto A = torch::zeros({N, int64_t(c.conjugates.size()) * c.index}, torch::kFloat64);
      for (size_t j = 0; j < c.conjugates.size(); ++j) {
        const auto lab = coset_labels(g, c.conjugates[j], s == 0);
        d.best_a = torch::maximum(d.best_a, explained(ca, lab, c.index));
        d.best_b = torch::maximum(d.best_b, explained(cb, lab, c.index));
        d.ratio_a = torch::minimum(d.ratio_a, their_ratio(fa, lab, c.index));
        d.ratio_b = torch::minimum(d.ratio_b, their_ratio(fb, lab, c.index));
        for (int64_t x = 0; x < N; ++x) A[x][int64_t(j) * c.index + lab[size_t(x)]] = 1.0;
      }
      if (s == 0 || c.normal) {  // the conjugates' indicators, for the logits
        auto I = torch::zeros({N, int64_t(c.conjugates.size())}, torch::kFloat64);
        for (size_t j = 0; j < c.conjugates.size(); ++j)
          for (auto h : c.conjugates[j]) I[h][int64_t(j)] = 1.0;
        logit_left = readout.share(I, true), logit_right = readout.share(I, false);
      }
      const auto svd = at::linalg_svd(A, /*full_matrices=*/false);
      const auto& S = std::get<1>(svd);
      d.dims = (S > S.max() * 1e-9).sum().item<int64_t>();
      const auto U = std::get<0>(svd).narrow(1, 0, d.dims);
      d.P = U.mm(U.t());
    }
    // a read on side sa, b on side sb: both left, both right, and the two mixed pairings
    // (Stander et al. find a's units constant on right cosets Ha and b's on left cosets bH).
    std::vector<std::pair<int, int>> pairings = {{0, 0}};
    if (!c.normal) pairings = {{0, 0}, {1, 1}, {1, 0}, {0, 1}};
    for (auto [sa, sb] : pairings) {
      const Side &A = sides[sa], &B = sides[sb];
      CosetMeasure m;
      m.subgroup = c.name, m.order = c.order, m.index = c.index, m.conjugates = int64_t(c.conjugates.size());
      m.normal = c.normal, m.left = sa == 0, m.chance = double(c.index - 1) / double(N - 1);
      m.side = c.normal ? "both" : sa == sb ? (sa == 0 ? "left gH" : "right Hg") : (sa == 1 ? "a Ha, b bH" : "a aH, b Hb");
      m.fve_a = total_a > 0 ? A.best_a.sum().item<double>() / total_a : 0;
      m.fve_b = total_b > 0 ? B.best_b.sum().item<double>() / total_b : 0;
      m.units_a = ((A.best_a >= 0.9 * var_a) & live & (var_a > 0)).sum().item<int64_t>();
      m.units_b = ((B.best_b >= 0.9 * var_b) & live & (var_b > 0)).sum().item<int64_t>();
      m.theirs_ratio_a = median(A.ratio_a), m.theirs_ratio_b = median(B.ratio_b);
      m.kept_dims = A.dims;
      m.logit_fve_left = logit_left, m.logit_fve_right = logit_right;
      // The coset structure kept: each operand's embedding projected on its side's functions (a
      // model whose operands share one embedding, a transformer's W_E, takes only one side).
      if (operands.size() == 2 || sa == sb) {
        std::vector<torch::Tensor> emb;
        for (size_t o = 0; o < operands.size(); ++o) emb.push_back((o == 0 ? A.P : B.P).mm(operands[o]));
        const Split kept = evaluate_pairs(with_operand_embeddings(model, emb), data).all;
        m.kept_loss = kept.loss, m.kept_acc = kept.acc;
      } else {
        m.kept_loss = m.kept_acc = std::nan("");
      }
      r.measures.push_back(m);
    }
  }
  // The best explained first; of classes that explain as much (a subgroup of H has finer cosets,
  // so it explains all that H does), the larger subgroup, whose cosets are fewer functions.
  std::stable_sort(r.measures.begin(), r.measures.end(), [](const CosetMeasure& a, const CosetMeasure& b) {
    const double ra = std::round((a.fve_a + a.fve_b) * 5e5), rb = std::round((b.fve_a + b.fve_b) * 5e5);
    return ra != rb ? ra > rb : a.order > b.order;
  });
  return r;
}

}  // namespace grokking
