#include "grokking/analysis.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "grokking/error.hpp"

namespace grokking {

// ---------------------------------------------------------------------------------------------
// Fourier basis

int64_t n_frequencies(int64_t p) { return p / 2; }

std::vector<int64_t> frequency_rows(int64_t p, int64_t k) {
  if (k < 1 || k > n_frequencies(p)) throw std::out_of_range("frequency out of range");
  if (p % 2 == 0 && k == p / 2) return {p - 1};
  return {2 * k - 1, 2 * k};
}

torch::Tensor fourier_basis(int64_t p) {
  auto x = torch::arange(p, torch::kFloat64);
  std::vector<torch::Tensor> rows = {torch::ones({p}, torch::kFloat64)};
  for (int64_t k = 1; k <= (p - 1) / 2; ++k) {
    rows.push_back(torch::cos(2 * M_PI * double(k) * x / double(p)));
    rows.push_back(torch::sin(2 * M_PI * double(k) * x / double(p)));
  }
  if (p % 2 == 0) rows.push_back(torch::cos(M_PI * x));
  auto f = torch::stack(rows);
  return f / f.norm(2, 1, true);
}

FrequencyComponents frequency_components(const torch::Tensor& x) {
  const int64_t p = x.size(0);
  auto coeffs = fourier_basis(p).matmul(x.to(torch::kFloat64));  // [P, d]
  auto row_sq = coeffs.pow(2).sum(1).contiguous();               // [P]
  const double* sq = row_sq.data_ptr<double>();
  FrequencyComponents out;
  for (int64_t k = 1; k <= n_frequencies(p); ++k) {
    auto rows = frequency_rows(p, k);
    out.cos.push_back(std::sqrt(sq[rows[0]]));
    out.sin.push_back(rows.size() > 1 ? std::sqrt(sq[rows[1]]) : 0.0);  // no sin row for k = P/2
    out.total.push_back(std::hypot(out.cos.back(), out.sin.back()));
  }
  return out;
}

std::vector<double> frequency_norms(const torch::Tensor& x) { return frequency_components(x).total; }

double gini(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  double sum = std::accumulate(v.begin(), v.end(), 0.0), weighted = 0;
  if (sum <= 0) return 0;
  for (size_t i = 0; i < v.size(); ++i) weighted += double(i + 1) * v[i];
  const double n = double(v.size());
  return 2 * weighted / (n * sum) - (n + 1) / n;
}

// ---------------------------------------------------------------------------------------------
// Spectra and key frequencies

namespace {
const std::vector<int64_t> kPairDims = {0, 1};  // the (a, b) axes of a [P, P, ...] tensor

// The Fourier analysis over Z_P means something for operations that are a rotation on the
// circle of residues: addition and subtraction. Multiplication and division are addition of
// discrete logarithms (a basis over Z_P^*, not implemented yet); the polynomials and `mixed`
// have no known basis. Refused in one line rather than printed as numbers that mean nothing.
void require_full_grid(const Model& m) {
  const auto& op = m.config().task.operation;
  if (op == "add" || op == "sub") return;
  if (op == "mul" || op == "div")
    throw UsageError("the Fourier analysis over Z_P is for add and sub; operation '" + op +
                     "' is addition of discrete logarithms, whose basis is not implemented yet");
  throw UsageError("the Fourier analysis is for add and sub; operation '" + op + "' has no known Fourier basis");
}

// Key frequencies from embedding norms: clear outliers among the per-frequency norms.
std::vector<int64_t> key_from_norms(const std::vector<double>& norms) {
  std::vector<double> sorted = norms;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2], mx = sorted.back();
  std::vector<int64_t> out;
  for (size_t i = 0; i < norms.size(); ++i)
    if (norms[i] >= 0.5 * mx && norms[i] >= 3 * median) out.push_back(int64_t(i) + 1);
  return out;
}
}  // namespace

NeuronSpectrum neuron_spectrum(const torch::Tensor& acts, int64_t p) {
  torch::NoGradGuard no_grad;
  if (acts.dim() != 2 || acts.size(0) != p * p) throw std::invalid_argument("neuron_spectrum: acts must be [P^2, m]");
  const int64_t m = acts.size(1), nf = n_frequencies(p);
  // Float32 like the activations themselves (fractions good to about 1e-6): at P=113 the float64
  // version spent most of its time converting and allocating 50 MB tensors.
  auto x = acts.to(torch::kFloat32);
  // Centring removes exactly the (const, const) component; the basis is orthonormal, so the
  // other coefficients do not change.
  auto centred = x - x.mean(0, true);
  NeuronSpectrum s;
  s.variance = centred.pow(2).sum(0).to(torch::kFloat64);  // = the sum of all squared coefficients
  // Transform over a once ([i, b, m]); over b only the 3x3 block {const, cos k, sin k}^2 of each
  // frequency is needed, 3 basis rows per frequency: P^2 m (P + 9) multiplies instead of the
  // 2 P^3 m of the full 2-D transform.
  auto F = fourier_basis(p).to(torch::kFloat32);
  auto over_a = F.matmul(centred.view({p, p * m})).view({p, p, m});
  std::vector<torch::Tensor> explained;
  for (int64_t k = 1; k <= nf; ++k) {
    auto rows = frequency_rows(p, k);
    rows.insert(rows.begin(), 0);
    auto idx = torch::tensor(rows, torch::kInt64);
    auto block = torch::matmul(F.index_select(0, idx), over_a.index_select(0, idx));  // [i, j, m]
    explained.push_back(block.to(torch::kFloat64).pow(2).sum(kPairDims));
  }
  s.frac = torch::stack(explained) / s.variance.clamp_min(1e-30);
  return s;
}

Cache run_all_pairs(const Model& model) {
  torch::NoGradGuard no_grad;
  require_full_grid(model);
  Model cpu_model = model;  // shares storage when already on the CPU
  cpu_model.to(torch::kCPU);
  Cache cache;
  cpu_model.forward_fast(make_dataset(model.config().task).all_x, &cache);
  return cache;
}

FourierReport analyse_fourier(const Model& model) { return analyse_fourier(model, run_all_pairs(model)); }

FourierReport analyse_fourier(const Model& model, const Cache& all_pairs) {
  torch::NoGradGuard no_grad;
  require_full_grid(model);
  const auto& cfg = model.config();
  const int64_t p = cfg.task.p, nf = n_frequencies(p);
  FourierReport r;
  r.p = p;

  // ---- embedding and unembedding spectra ----
  auto W_E = model.param("embed.W_E").detach().cpu().narrow(0, 0, p);  // [P, d]: "=" row dropped
  auto embed = frequency_components(W_E);
  r.embed_norm = embed.total, r.embed_cos = embed.cos, r.embed_sin = embed.sin;
  r.embed_const_norm = (fourier_basis(p)[0].unsqueeze(0).matmul(W_E.to(torch::kFloat64))).norm().item<double>();
  auto unembed = frequency_components(model.param("unembed.W_U").detach().cpu().t());  // [P, d]
  r.unembed_norm = unembed.total, r.unembed_cos = unembed.cos, r.unembed_sin = unembed.sin;
  r.gini_embed = gini(r.embed_norm);
  r.gini_unembed = gini(r.unembed_norm);
  r.key_embed = key_from_norms(r.embed_norm);

  // ---- MLP neurons: 2-D Fourier transform of centred activations over (a, b) ----
  const int64_t m = cfg.model.d_mlp;
  auto spectrum = neuron_spectrum(all_pairs.mlp_post, p);
  auto [best_frac_t, best_k_t] = spectrum.frac.max(0);
  auto tot = spectrum.variance.contiguous(), best_frac = best_frac_t.contiguous(), best_k = best_k_t.contiguous();
  const double* tot_v = tot.data_ptr<double>();
  const double* frac_v = best_frac.data_ptr<double>();
  const int64_t* k_v = best_k.data_ptr<int64_t>();
  r.neurons_per_freq.assign(size_t(nf), 0);
  int64_t clustered = 0;
  for (int64_t i = 0; i < m; ++i) {
    const bool dead = tot_v[i] < 1e-20;
    r.neuron_freq.push_back(dead ? 0 : k_v[i] + 1);
    r.neuron_frac.push_back(dead ? 0.0 : frac_v[i]);
    if (!dead && r.neuron_frac.back() >= kNeuronClusterFrac) {
      ++clustered;
      ++r.neurons_per_freq[size_t(r.neuron_freq.back() - 1)];
    }
  }
  r.frac_neurons_clustered = double(clustered) / double(m);
  // A key frequency holds at least 2 clustered neurons and at least 2 % of them.
  for (int64_t k = 1; k <= nf; ++k) {
    auto n = r.neurons_per_freq[size_t(k - 1)];
    if (n >= 2 && double(n) >= 0.02 * double(clustered)) r.key_neurons.push_back(k);
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Ablations in logit space and weight space

torch::Tensor all_logits(const Model& model) {
  torch::NoGradGuard no_grad;
  require_full_grid(model);
  auto data = make_dataset(model.config().task);
  auto x = data.all_x.to(model.flat().device());
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < x.size(0); i += 16384) parts.push_back(model.forward_fast(x.slice(0, i, i + 16384)));
  return torch::cat(parts).to(torch::kCPU, torch::kFloat64);
}

namespace {
// Unit vectors over the P^2 pairs for cos(w_k(a+b)) and sin(w_k(a+b)): [2|freqs|, P^2].
torch::Tensor sum_directions(int64_t p, const std::vector<int64_t>& freqs) {
  auto a = torch::arange(p, torch::kFloat64).view({p, 1}), b = torch::arange(p, torch::kFloat64).view({1, p});
  std::vector<torch::Tensor> dirs;
  for (auto k : freqs) {
    auto phase = 2 * M_PI * double(k) * (a + b) / double(p);
    for (auto d : {torch::cos(phase), torch::sin(phase)}) {
      auto flat = d.reshape(-1);
      auto n = flat.norm().item<double>();
      if (n > 1e-9) dirs.push_back(flat / n);  // sin(pi(a+b)) vanishes for k = P/2
    }
  }
  if (dirs.empty()) return torch::zeros({0, p * p}, torch::kFloat64);
  return torch::stack(dirs);
}

torch::Tensor project_out_embedding(const Model& model, const std::vector<int64_t>& freqs, bool keep) {
  const int64_t p = model.config().task.p;
  auto F = fourier_basis(p);
  std::vector<int64_t> rows;
  if (keep) rows.push_back(0);  // keeping only some frequencies keeps the constant too
  for (auto k : freqs)
    for (auto r : frequency_rows(p, k)) rows.push_back(r);
  auto B = F.index_select(0, torch::tensor(rows, torch::kInt64));  // [r, P]
  auto W = model.param("embed.W_E").detach().cpu().to(torch::kFloat64).narrow(0, 0, p);  // [P, d]
  auto proj = B.t().matmul(B.matmul(W));
  return (keep ? proj : W - proj).to(torch::kFloat32);
}

}  // namespace

torch::Tensor project_sum_directions(const torch::Tensor& logits, int64_t p, const std::vector<int64_t>& freqs) {
  auto U = sum_directions(p, freqs);  // [r, P^2]
  return U.t().matmul(U.matmul(logits));
}

Splits evaluate_splits(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& train_mask) {
  // One log-softmax over all pairs; each split is a masked mean of the per-pair values.
  auto nll = -logits.to(torch::kFloat64).log_softmax(-1).gather(1, labels.unsqueeze(1)).squeeze(1);
  auto hit = logits.argmax(-1).eq(labels).to(torch::kFloat64);
  auto tr = train_mask.to(torch::kFloat64), te = 1 - tr;
  auto zero = torch::zeros({}, torch::kFloat64);
  // where, not a product with the mask: an infinite loss on one split must not turn the other into NaN.
  auto nll_tr = torch::where(train_mask, nll, zero), nll_te = torch::where(train_mask, zero, nll);
  auto v = torch::stack({nll_tr.sum(), (hit * tr).sum(), tr.sum(), nll_te.sum(), (hit * te).sum(), te.sum(),
                         nll.sum(), hit.sum()})
               .contiguous();
  auto a = v.accessor<double, 1>();
  auto mean = [](double sum, double n) { return n > 0 ? sum / n : 0.0; };
  const double n = double(labels.size(0));
  return {{mean(a[0], a[2]), mean(a[1], a[2])}, {mean(a[3], a[5]), mean(a[4], a[5])}, {mean(a[6], n), mean(a[7], n)}};
}

LossMeasures loss_measures(const Model& model, const Dataset& data, const std::vector<int64_t>& key) {
  const int64_t p = model.config().task.p;
  auto logits = all_logits(model);
  LossMeasures m;
  auto ev = evaluate_splits(logits, data.all_y, data.train_mask);
  m.full = ev.all;
  m.train_loss = ev.train.loss, m.train_acc = ev.train.acc, m.test_loss = ev.test.loss, m.test_acc = ev.test.acc;
  auto kept = project_sum_directions(logits, p, key);
  // Bias correction: add back the per-class mean of what was removed.
  auto restricted = kept + (logits - kept).mean(0, true);
  m.restricted_loss = evaluate_splits(restricted, data.all_y, data.train_mask).all.loss;
  m.excluded_loss = evaluate_splits(logits - kept, data.all_y, data.train_mask).train.loss;
  return m;
}

std::vector<AblationResult> ablate(const Model& model, const Dataset& data, const AblateOptions& opts,
                                   std::vector<int64_t>* used_freqs) {
  torch::NoGradGuard no_grad;
  const auto& cfg = model.config();
  require_full_grid(model);  // no basis at all: say that first
  if (cfg.task.operation != "add")
    throw UsageError("frequency ablations use the cos/sin(w(a+b)) directions and are defined for operation 'add' (got '" +
                     cfg.task.operation + "')");
  const int64_t p = cfg.task.p, nf = n_frequencies(p);
  std::vector<int64_t> key = opts.freqs;
  const Cache cache = run_all_pairs(model);
  if (key.empty()) key = analyse_fourier(model, cache).key_neurons;
  for (auto k : key)
    if (k < 1 || k > nf)
      throw UsageError("--freqs: frequency " + std::to_string(k) + " is out of range 1.." + std::to_string(nf));
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
  for (auto k : key) out.push_back(row("remove key freq " + std::to_string(k), "logits", {k},
                                       logits - project_sum_directions(logits, p, {k})));
  auto kept = project_sum_directions(logits, p, key);
  out.push_back(row("remove all key freqs (excluded)", "logits", key, logits - kept));
  out.push_back(row("keep only key freqs (restricted)", "logits", key, kept + (logits - kept).mean(0, true)));
  {
    // Remove every 2-D Fourier component that involves a non-key frequency in a or in b.
    auto F = fourier_basis(p);
    std::vector<int64_t> rows = {0};
    for (auto k : key)
      for (auto r : frequency_rows(p, k)) rows.push_back(r);
    auto B = F.index_select(0, torch::tensor(rows, torch::kInt64));  // [r, P]
    auto L = logits.view({p, p, p});                                   // [a, b, c]
    auto c = torch::tensordot(B, torch::tensordot(B, L, {1}, {0}), {1}, {1});  // [j, i, c]
    auto back = torch::tensordot(B, torch::tensordot(B, c, {0}, {0}), {0}, {1});  // [a, b, c]
    out.push_back(row("remove all non-key components", "logits", key, back.reshape({p * p, p})));
  }
  if (!non_key.empty() && !key.empty()) {
    // Control: remove as many randomly chosen non-key frequencies, averaged over seeded draws.
    std::mt19937_64 rng(opts.seed);
    AblationResult avg{"remove " + std::to_string(key.size()) + " random non-key freqs (control)", "logits", {}, {}, {}, {},
                       opts.control_draws};
    for (int64_t d = 0; d < opts.control_draws; ++d) {
      auto pool = non_key;
      std::shuffle(pool.begin(), pool.end(), rng);
      pool.resize(std::min(pool.size(), key.size()));
      auto r = row("", "logits", pool, logits - project_sum_directions(logits, p, pool));
      for (auto [dst, src] : {std::pair{&avg.train, &r.train}, {&avg.test, &r.test}, {&avg.all, &r.all}}) {
        dst->loss += src->loss / double(opts.control_draws);
        dst->acc += src->acc / double(opts.control_draws);
      }
    }
    out.push_back(avg);
  }

  // ---- weight space: the frequencies' components of W_E projected out ----
  auto with_embedding = [&](const torch::Tensor& numbers) {
    Model copy = model.clone();
    {
      torch::NoGradGuard g;
      copy.param("embed.W_E").narrow(0, 0, p).copy_(numbers);
    }
    return all_logits(copy);
  };
  out.push_back(row("remove all key freqs from W_E", "weights", key, with_embedding(project_out_embedding(model, key, false))));
  out.push_back(row("keep only key freqs in W_E", "weights", key, with_embedding(project_out_embedding(model, key, true))));
  return out;
}

}  // namespace grokking
