#include "grokking/analysis.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <random>

#include "grokking/error.hpp"
#include "grokking/progress_note.hpp"

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

const PairReadout& readout_of(const Model& model) {
  const PairReadout* r = model.arch().pair_readout();
  if (!r)
    throw UsageError("the Fourier analysis reads models of pair tasks ([a, b, =]): model.kind \"" +
                     model.config().model.kind + "\" on task.kind \"" + model.config().task.kind + "\" has no such reading");
  return *r;
}

std::vector<torch::Tensor> operand_embeddings(const Model& model) {
  const PairReadout& r = readout_of(model);
  const int64_t n = model.shape().operand_values;
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < r.operands.size(); ++i) {
    const auto& o = r.operands[i];
    if (i > 0 && o.param == r.operands[0].param && o.first_row == r.operands[0].first_row) continue;  // shared (W_E)
    out.push_back(model.param(o.param).detach().cpu().narrow(0, o.first_row, n).to(torch::kFloat64));
  }
  return out;
}

torch::Tensor embedding_matrix(const Model& model) { return torch::cat(operand_embeddings(model), 1); }

Model with_operand_embeddings(const Model& model, const std::vector<torch::Tensor>& embeddings) {
  const PairReadout& r = readout_of(model);
  const int64_t n = model.shape().operand_values;
  Model copy = model.clone();
  copy.to(torch::kCPU);
  torch::NoGradGuard no_grad;
  size_t next = 0;
  for (size_t i = 0; i < r.operands.size(); ++i) {
    const auto& o = r.operands[i];
    if (i > 0 && o.param == r.operands[0].param && o.first_row == r.operands[0].first_row) continue;
    copy.param(o.param).narrow(0, o.first_row, n).copy_(embeddings.at(next++));
  }
  return copy;
}

Cache run_pair_forward(const Model& model) {
  torch::NoGradGuard no_grad;
  (void)readout_of(model);
  Model cpu_model = model;  // shares storage when already on the CPU
  cpu_model.to(torch::kCPU);
  Cache cache;
  cpu_model.forward_fast(make_dataset(model.config().task).all_x, &cache);
  return cache;
}

PairPass::PairPass(const Model& model, int64_t chunk, double hold_bytes)
    : model_(model), x_(make_dataset(model.config().task).all_x), chunk_(chunk), hold_bytes_(hold_bytes) {
  const int64_t classes = model.param(readout_of(model).unembed).size(1);
  if (chunk_ <= 0) chunk_ = std::max<int64_t>(256, (int64_t(1) << 21) / std::max<int64_t>(classes, 1));
  model_.to(torch::kCPU);
  pairs_ = x_.size(0);
}

void PairPass::each(const std::function<void(int64_t first, const Cache& chunk)>& fn) {
  if (held_) {
    for (size_t i = 0; i < chunks_.size(); ++i) fn(int64_t(i) * chunk_, chunks_[i]);
    return;
  }
  torch::NoGradGuard no_grad;
  bool hold = true;  // decided at the first chunk, from its size
  std::vector<Cache> kept;
  // A pass long enough to notice (a large group) says where it is every few seconds, or where
  // the work it is part of is.
  ProgressNote own("the model over " + std::to_string(pairs_) + " pairs, chunks of " + std::to_string(chunk_),
                   size_t(chunks()));
  ProgressNote& note = ProgressScope::active() ? *ProgressScope::active() : own;
  for (int64_t first = 0; first < pairs_; first += chunk_) {
    Cache c;
    model_.forward_fast(x_.narrow(0, first, std::min(chunk_, pairs_ - first)), &c);
    if (first == 0) {
      const double per_pair = double(c.logits.numel() + (c.mlp_post.defined() ? c.mlp_post.numel() : 0)) * 4.0 /
                              double(std::max<int64_t>(c.logits.size(0), 1));
      hold = per_pair * double(pairs_) <= hold_bytes_;
    }
    fn(first, c);
    note.tick();
    if (hold) {
      Cache h;  // what the analyses read of a chunk
      h.logits = c.logits, h.mlp_post = c.mlp_post;
      kept.push_back(std::move(h));
    }
  }
  if (hold) chunks_ = std::move(kept), held_ = true;
}

torch::Tensor neuron_logit_map(const Model& model) {
  const PairReadout& r = readout_of(model);
  if (r.neuron_to_logits.empty())
    throw UsageError("model.kind \"" + model.config().model.kind + "\" has no hidden neurons to map to the logits (attn_only)");
  torch::Tensor m;
  for (auto& name : r.neuron_to_logits) {
    auto w = model.param(name).detach().cpu().to(torch::kFloat64);
    m = m.defined() ? m.matmul(w) : w;
  }
  return m.t().contiguous();  // [C, hidden]
}

double gini_embed_frequencies(const Model& model, const Cycle& cycle) {
  return gini(frequency_norms(on_cycle(embedding_matrix(model), cycle)));
}

double gini_wl_frequencies(const Model& model, const Cycle& cycle) {
  return gini(frequency_norms(on_cycle(neuron_logit_map(model), cycle)));
}

namespace {
// The embedding's and unembedding's spectra over the cycle's indices; W_L's where there are neurons.
void read_weight_spectra(FourierReport& r, const Model& model, const Cycle& cycle, const PairReadout& readout) {
  const int64_t n = cycle.n;
  auto W_E = on_cycle(embedding_matrix(model), cycle);  // [n, width]: the "=" row dropped
  auto embed = frequency_components(W_E);
  r.embed_norm = embed.total, r.embed_cos = embed.cos, r.embed_sin = embed.sin;
  r.embed_const_norm = (fourier_basis(n)[0].unsqueeze(0).matmul(W_E.to(torch::kFloat64))).norm().item<double>();
  auto unembed = frequency_components(on_cycle(model.param(readout.unembed).detach().cpu().t(), cycle));  // [n, d]
  r.unembed_norm = unembed.total, r.unembed_cos = unembed.cos, r.unembed_sin = unembed.sin;
  r.gini_embed = gini(r.embed_norm);
  {
    std::vector<double> components = r.embed_cos;
    for (size_t i = 0; i < r.embed_sin.size(); ++i)
      if (2 * int64_t(i + 1) != n) components.push_back(r.embed_sin[i]);  // frequency n/2 has no sin row
    r.gini_embed_components = gini(components);
  }
  r.gini_unembed = gini(r.unembed_norm);
  r.key_embed = key_from_norms(r.embed_norm);
  if (!readout.neuron_to_logits.empty()) {
    r.wl_norm = frequency_norms(on_cycle(neuron_logit_map(model), cycle));
    r.key_wl = key_from_norms(r.wl_norm);
    r.gini_wl = gini(r.wl_norm);
  }

}

// The attention of "=" to a, per head, as a function of a (mean over b: by_a, [p, heads]), and
// over (a, b) on the cycle (spectrum, read as the neurons' is).
void read_attention(FourierReport& r, const Cycle& cycle, const torch::Tensor& mean_by_a, const NeuronSpectrum& spectrum) {
  auto by_a = on_cycle(mean_by_a, cycle);  // [n, h]
  r.attn_by_a = by_a;
  auto mean = by_a.mean(0);
  const int64_t h = by_a.size(1);
  for (int64_t head = 0; head < h; ++head) {
    auto norms = frequency_norms(by_a.select(1, head).unsqueeze(1));
    r.attn_a_const.push_back(mean[head].item<double>());
    const auto best = std::max_element(norms.begin(), norms.end());
    // A head whose attention does not vary with a (all norms ~0) has no frequency.
    r.attn_key.push_back(best != norms.end() && *best > 1e-6 ? int64_t(best - norms.begin()) + 1 : 0);
    r.attn_a_norm.push_back(std::move(norms));
  }
  auto [best_frac, best_k] = spectrum.frac.max(0);
  for (int64_t head = 0; head < h; ++head) {
    const bool flat = spectrum.variance[head].item<double>() < 1e-20;
    r.attn_2d_key.push_back(flat ? 0 : best_k[head].item<int64_t>() + 1);
    r.attn_2d_frac.push_back(flat ? 0.0 : best_frac[head].item<double>());
  }
}

// The hidden neurons (spectrum: the 2-D Fourier spectrum of their activations over (a, b) on the
// cycle; none without hidden neurons): each neuron's best frequency and its share; the key
// frequencies by neuron clusters.
void read_neurons(FourierReport& r, const Cycle& cycle, const NeuronSpectrum* spectrum) {
  const int64_t nf = n_frequencies(cycle.n);
  r.neurons_per_freq.assign(size_t(nf), 0);
  r.neurons_per_freq_85.assign(size_t(nf), 0);
  r.neuron_frac_hist.assign(10, 0);
  if (r.wl_norm.empty()) r.wl_norm.assign(size_t(nf), std::numeric_limits<double>::quiet_NaN());
  if (!spectrum) {  // no hidden neurons (attention only)
    r.neuron_frac_matrix = torch::zeros({nf, 0}, torch::kFloat64);
    return;
  }
  const int64_t m = spectrum->frac.size(1);
  r.neuron_frac_matrix = spectrum->frac;
  auto [best_frac_t, best_k_t] = spectrum->frac.max(0);
  auto tot = spectrum->variance.contiguous(), best_frac = best_frac_t.contiguous(), best_k = best_k_t.contiguous();
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
  r.neurons_per_freq_85.assign(size_t(nf), 0);
  r.neuron_frac_hist.assign(10, 0);
  int64_t clustered85 = 0;
  for (int64_t i = 0; i < m; ++i) {
    if (r.neuron_freq[size_t(i)] == 0) continue;
    const double f = r.neuron_frac[size_t(i)];
    ++r.neuron_frac_hist[size_t(std::min<int64_t>(9, int64_t(f * 10)))];
    if (f >= kNeuronClusterFrac85) ++clustered85, ++r.neurons_per_freq_85[size_t(r.neuron_freq[size_t(i)] - 1)];
  }
  r.frac_neurons_85 = double(clustered85) / double(m);
  // A key frequency holds at least 2 clustered neurons and at least 2 % of them.
  for (int64_t k = 1; k <= nf; ++k) {
    auto count = r.neurons_per_freq[size_t(k - 1)];
    if (count >= 2 && double(count) >= 0.02 * double(clustered)) r.key_neurons.push_back(k);
  }
}

// The logits' 2-D Fourier transform over the cycle's (i, j) grid, columns j' in [first, first +
// cols) of it, accumulated over chunks of pairs: G[i, j', c] = sum_j F[j', j] L[(i, j), c]
// while the chunks come, then F G, squared and summed over the classes.
class LogitSpectrumBlock {
 public:
  LogitSpectrumBlock(const torch::Tensor& F, int64_t classes, int64_t first, int64_t cols)
      : F_(F), Fj_(F.narrow(0, first, cols)), G_(torch::zeros({F.size(0), cols, classes}, torch::kFloat64)) {}
  // logits [rows, C] of pairs on the grid at (i, j), in row-major order of the pairs: each run of
  // one i at once.
  void add(const torch::Tensor& logits, const torch::Tensor& i, const torch::Tensor& j) {
    const auto L = logits.to(torch::kCPU, torch::kFloat64);
    for_each_run(i, [&](int64_t begin, int64_t end, int64_t at) {
      G_[at] += Fj_.index_select(1, j.narrow(0, begin, end - begin)).matmul(L.narrow(0, begin, end - begin));
    });
  }
  torch::Tensor norms() const {  // [n (i'), cols (j')]
    const int64_t n = G_.size(0);
    return F_.matmul(G_.view({n, -1})).view(G_.sizes()).pow(2).sum(2).sqrt();
  }

 private:
  torch::Tensor F_, Fj_, G_;
};
}  // namespace

FourierReport analyse_fourier(const Model& model, const PairBounds& bounds, bool logit_spectrum) {
  torch::NoGradGuard no_grad;
  const Cycle cycle = cycle_of(model.config().task);
  const PairReadout& readout = readout_of(model);
  FourierReport r;
  r.p = model.shape().operand_values;
  r.cycle = cycle;
  r.embedding_label = readout.embedding_label;
  read_weight_spectra(r, model, cycle, readout);

  // One pass over the pairs in chunks for the neurons, the attention and the first columns of
  // the logits' spectrum; one more for each further block of its columns.
  const int64_t n = cycle.n, p = r.p;
  const auto x = make_dataset(model.config().task).all_x;
  const auto index_of = torch::tensor(cycle.index_of, torch::kInt64);
  PairPass pass(model, bounds.chunk, bounds.hold_bytes);
  const int64_t classes = model.param(readout.unembed).size(1);
  const int64_t cols = std::clamp<int64_t>(int64_t(bounds.block_bytes / (8.0 * double(n * classes))), 1, n);
  const int64_t passes = logit_spectrum ? (n + cols - 1) / cols : 1;
  ProgressScope scope("fourier, " + std::to_string(passes) + (passes == 1 ? " pass" : " passes") + " over " +
                          std::to_string(pass.pairs()) + " pairs",
                      size_t(passes * pass.chunks()));
  const auto F = fourier_basis(n);
  std::optional<SpectrumSums> neurons, heads;
  torch::Tensor attn_sum, attn_count;
  std::vector<torch::Tensor> logit_cols;
  for (int64_t first_col = 0, pass_at = 0; pass_at < passes; first_col += cols, ++pass_at) {
    LogitSpectrumBlock block(F, classes, first_col, logit_spectrum ? std::min(cols, n - first_col) : 0);
    pass.each([&](int64_t first, const Cache& c) {
      const int64_t rows = c.logits.size(0);
      const auto xs = x.narrow(0, first, rows);
      auto i = index_of.index_select(0, xs.select(1, 0)), j = index_of.index_select(0, xs.select(1, 1));
      torch::Tensor on;  // the rows on the cycle's grid (all of them under add and sub)
      if (n != p) {
        on = i.ge(0).logical_and(j.ge(0)).nonzero().squeeze(1);
        i = i.index_select(0, on), j = j.index_select(0, on);
      }
      auto grid = [&](const torch::Tensor& t) { return on.defined() ? t.index_select(0, on.to(t.device())) : t; };
      if (logit_spectrum) block.add(grid(c.logits), i, j);
      if (first_col > 0) return;
      if (c.mlp_post.defined()) {
        if (!neurons) neurons.emplace(n, c.mlp_post.size(1));
        neurons->add(grid(c.mlp_post), i, j);
      }
      if (readout.attention) {
        const auto to_a = c.attn_pattern.select(2, 0).to(torch::kCPU, torch::kFloat64);  // [rows, heads]
        if (!heads) {
          heads.emplace(n, to_a.size(1));
          attn_sum = torch::zeros({p, to_a.size(1)}, torch::kFloat64), attn_count = torch::zeros({p}, torch::kFloat64);
        }
        const auto a_tok = xs.select(1, 0);
        attn_sum.index_add_(0, a_tok, to_a);
        attn_count.index_add_(0, a_tok, torch::ones({rows}, torch::kFloat64));
        heads->add(grid(to_a), i, j);
      }
    });
    if (logit_spectrum) logit_cols.push_back(block.norms());
  }
  if (logit_spectrum) r.logit_2d_norm = torch::cat(logit_cols, 1).contiguous();  // [i', j']
  if (heads) read_attention(r, cycle, attn_sum / attn_count.clamp_min(1).unsqueeze(1), heads->spectrum());
  const auto spectrum = neurons ? std::optional<NeuronSpectrum>(neurons->spectrum()) : std::nullopt;
  read_neurons(r, cycle, spectrum ? &*spectrum : nullptr);
  return r;
}

std::vector<int64_t> key_frequencies(const Model& model) { return analyse_fourier(model, {}, false).key_neurons; }

}  // namespace grokking
