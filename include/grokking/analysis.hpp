// The analysis of Nanda et al. (2023, sections 4-5): Fourier spectra, key
// frequencies, frequency ablations, restricted and excluded loss, and the phases of a run.
#pragma once
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "grokking/model.hpp"
#include "grokking/task.hpp"

namespace grokking {

// ---- Fourier basis over Z_P ----
// [P, P] float64, orthonormal rows: row 0 constant; rows 2k-1, 2k = cos, sin of frequency k for
// k = 1..(P-1)/2 (and, for even P, a last cos row for k = P/2).
torch::Tensor fourier_basis(int64_t p);
int64_t n_frequencies(int64_t p);  // floor(P/2): frequencies 1..n
// Basis row indices of frequency k (1..n_frequencies): {cos, sin} or {cos}.
std::vector<int64_t> frequency_rows(int64_t p, int64_t k);
// Per-frequency norms of the rows of F·X (X: [P, d]), index k-1: of the cos row, of the sin row
// (0 for k = P/2, which has none), and of both together.
struct FrequencyComponents {
  std::vector<double> cos, sin, total;
};
FrequencyComponents frequency_components(const torch::Tensor& x);
std::vector<double> frequency_norms(const torch::Tensor& x);  // frequency_components(x).total
double gini(std::vector<double> values);

// ---- the cycle an operation rotates on ----
// add/sub: a moves around Z_P (index = value). mul/div over a prime P: with a generator g of
// Z_P^*, a = g^i and b = g^j give a*b = g^(i+j), a/b = g^(i-j): indices mod n = P-1, and 0,
// which has no logarithm, is off the cycle (its pairs keep whatever the analysis does not touch).
// Every spectrum, direction and ablation is taken over the indices 0..n-1.
struct Cycle {
  std::string operation, relation;  // relation: "a+b", "a-b", "log a + log b", "log a - log b"
  int64_t p = 0, n = 0;
  int64_t generator = 0;             // g for mul/div, 0 for add/sub
  int64_t b_sign = 1;                // the label's index is i + b_sign*j (mod n)
  std::vector<int64_t> value_of;     // [n]: the value at each index
  std::vector<int64_t> index_of;     // [P]: the index of each value, -1 off the cycle
};
// UsageError in one line for operations with no such cycle (the polynomials, mixed) and for
// mul/div over a P that is not prime.
Cycle cycle_of(const TaskConfig& task);
void require_fourier_basis(const TaskConfig& task);  // cycle_of, for its error only
int64_t primitive_root(int64_t p);                   // the smallest generator of Z_P^*, P prime
// Rows of a by-value tensor ([P, ...]) in cycle order ([n, ...]).
torch::Tensor on_cycle(const torch::Tensor& by_value, const Cycle& c);
// Row in `pairs` ([N, 3] tokens a, b, =) of the pair (value_of[i], value_of[j]), for i, j in
// row-major order: [n^2] int64.
torch::Tensor cycle_grid(const Cycle& c, const torch::Tensor& pairs);
// The directions cos and sin(2 pi k (i + b_sign j) / n) of each frequency k at the N pairs given,
// zero on pairs off the cycle: [r, N] float64 (the paper's cos/sin(w_k(a+b)) directions for add),
// of unit length over the whole grid (orthonormal when `pairs` are all the pairs; a chunk of them
// gets its part of those vectors).
torch::Tensor relation_directions(const Cycle& c, const torch::Tensor& pairs, const std::vector<int64_t>& freqs);
// The part of logits [N, C] in the span of orthonormal directions [r, N].
torch::Tensor project_onto(const torch::Tensor& logits, const torch::Tensor& directions);

// ---- how the pair analysis reads a model: its kind's PairReadout ----
// UsageError in one line when the model kind or the task has none.
const PairReadout& readout_of(const Model& model);
// Each operand's embedding as a distinct parameter holds it, [operand_values, width] float64 on the
// CPU: one for the transformer (W_E's number rows, shared by a and b), two for an MLP (W_x and
// W_y, or the one-hot rows of a and of b in the first layer).
std::vector<torch::Tensor> operand_embeddings(const Model& model);
// Those side by side ([operand_values, total width]): what the embedding spectra are taken of.
torch::Tensor embedding_matrix(const Model& model);
// A copy of the model (on the CPU) with its operand embeddings replaced, in operand_embeddings() order.
Model with_operand_embeddings(const Model& model, const std::vector<torch::Tensor>& embeddings);

// ---- spectra and key frequencies ----
struct FourierReport {
  int64_t p = 0;
  Cycle cycle;                                    // frequencies are over its n indices
  std::vector<double> embed_norm, unembed_norm;  // per frequency 1..n: cos and sin together
  std::vector<double> embed_cos, embed_sin, unembed_cos, unembed_sin;  // ... and each apart
  double embed_const_norm = 0;                    // the constant component of W_E
  std::vector<int64_t> neuron_freq;               // per MLP neuron: best frequency (0: dead neuron)
  std::vector<double> neuron_frac;                // fraction of its variance that frequency explains
  std::vector<int64_t> neurons_per_freq;          // per frequency 1..n, clustered neurons only
  std::vector<int64_t> key_neurons, key_embed;    // key frequencies by the two methods
  double frac_neurons_clustered = 0;
  // The paper's clusters: neurons whose best frequency explains >= 85 % of their variance.
  double frac_neurons_85 = 0;
  std::vector<int64_t> neurons_per_freq_85;       // per frequency 1..n
  std::vector<int64_t> neuron_frac_hist;          // best-frequency fractions, 10 bins of 0.1 (dead neurons left out)
  // The neuron-logit map W_L = (W_out W_U)^T, [P, d_mlp]: its spectrum over the output c.
  std::vector<double> wl_norm;                    // per frequency 1..n
  std::vector<int64_t> key_wl;                    // key frequencies of W_L by the norm rule
  double gini_wl = 0;
  // Attention paid by "=" to a, per head, as a function of a (mean over b): its spectrum.
  std::vector<std::vector<double>> attn_a_norm;   // [head][frequency 1..n]
  std::vector<double> attn_a_const;               // [head]: the mean attention to a
  std::vector<int64_t> attn_key;                  // per head: the frequency with the largest norm (0: flat)
  torch::Tensor attn_by_a;                        // [n, heads] float64: that attention, a in cycle order
  // The same attention over every pair (a, b) on the cycle, per head: the frequency whose
  // {const, cos k, sin k}^2 block (a degree-2 polynomial of one frequency) explains the most of
  // its variance, and that fraction (the paper's Table 2, read as the neurons are; 0: flat head).
  std::vector<int64_t> attn_2d_key;
  std::vector<double> attn_2d_frac;
  torch::Tensor neuron_frac_matrix;               // [n_frequencies, d_mlp] float64: each neuron's fractions
  // The logits' 2-D Fourier transform over (a, b) on the cycle: the norm over the classes of
  // each component, [n, n] float64, rows/columns in basis order (0 constant, 2k-1 cos k, 2k sin k).
  torch::Tensor logit_2d_norm;
  double gini_embed = 0, gini_unembed = 0;
  // The paper's Gini: over the norms of the Fourier components (each cos and sin row apart, 2
  // per frequency), not over the per-frequency norms of gini_embed.
  double gini_embed_components = 0;
  std::string embedding_label;  // the operand weights' name: "W_E" (transformer), "W_x, W_y" (MLP)
  bool agree() const { return key_neurons == key_embed; }
};
// Neurons count as clustered when their best frequency explains at least this much variance
// (for the key-frequency rule); the paper's clusters use kNeuronClusterFrac85.
constexpr double kNeuronClusterFrac = 0.5;
constexpr double kNeuronClusterFrac85 = 0.85;
// The neuron-logit map W_L = (W_out W_U)^T, [P, d_mlp] (the paper's W_L; for an MLP W_U^T), float64 on the CPU.
torch::Tensor neuron_logit_map(const Model& model);
// Gini of the per-frequency norms (cos and sin together, frequencies 1..n of the cycle) of the
// operand embeddings (W_E's number rows) and of W_L: the vectors progress.csv's gini and gini_wl are taken over.
double gini_embed_frequencies(const Model& model, const Cycle& cycle);
double gini_wl_frequencies(const Model& model, const Cycle& cycle);
// Activations and logits of every pair (a, b) of a pair task at once, in row-major order, on the
// CPU: the reference the analyses' chunked passes (PairPass) are tested against.
Cache run_pair_forward(const Model& model);

// Pairs a chunk where an analysis runs a model over every pair in chunks, so that its memory
// stays bounded whatever the group (S6 has 518,400 pairs of 720 classes: 1.5 GB of logits).
// kPairChunk: as many pairs as make about 2^21 logits (16 MB in float64: small enough that the
// allocator reuses the chunks' temporaries instead of mapping fresh pages for each), at least 256.
constexpr int64_t kPairChunk = 0;
// A pass of a model over every pair of its pair task, chunk by chunk in row-major (a, b) order:
// each(fn) calls fn(first pair, the chunk's logits and mlp_post on the CPU). The chunks are held
// after the first pass where all of them fit in `hold_bytes` (a small group: later passes are
// free), and computed again on each pass otherwise.
class PairPass {
 public:
  explicit PairPass(const Model& model, int64_t chunk = kPairChunk, double hold_bytes = 256e6);
  void each(const std::function<void(int64_t first, const Cache& chunk)>& fn);
  int64_t pairs() const { return pairs_; }
  int64_t chunks() const { return (pairs_ + chunk_ - 1) / chunk_; }

 private:
  Model model_;  // on the CPU
  torch::Tensor x_;
  int64_t chunk_, pairs_;
  double hold_bytes_;
  bool held_ = false;
  std::vector<Cache> chunks_;
};

// How an analysis that runs a model over every pair bounds its memory: chunks of pairs (see
// PairPass), the chunks held for later passes up to hold_bytes, and the accumulators of one pass
// up to block_bytes (the logits' 2-D spectrum takes as many passes as need be).
struct PairBounds {
  int64_t chunk = kPairChunk;
  double hold_bytes = 256e6;
  double block_bytes = 256e6;
};
// Without `logit_spectrum`, logit_2d_norm is left empty: one pass over the pairs, where the
// logits' 2-D spectrum may take several (what key_frequencies needs).
FourierReport analyse_fourier(const Model& model, const PairBounds& bounds = {}, bool logit_spectrum = true);
// The key frequencies by the neuron method (FourierReport::key_neurons), in one pass.
std::vector<int64_t> key_frequencies(const Model& model);

// MLP activations acts [P^2, m] over all pairs (a, b) in row-major order: for each neuron, its
// variance over the pairs and the fraction of it in each frequency k's {const, cos k, sin k}^2
// block of the 2-D Fourier basis (both inputs at frequency k, or one of them).
struct NeuronSpectrum {
  torch::Tensor frac;      // [n_frequencies, m] float64, row k-1
  torch::Tensor variance;  // [m] float64: sum over pairs of the squared deviation from the mean
};
NeuronSpectrum neuron_spectrum(const torch::Tensor& acts, int64_t p);
// Calls fn(begin, end, value) for each run of equal values of `index` (int64 [rows]): pairs in
// row-major order come a row of one a at a time.
void for_each_run(const torch::Tensor& index, const std::function<void(int64_t begin, int64_t end, int64_t value)>& fn);
// The same over chunks of pairs in any order: add(values [rows, width], i, j) with each pair's
// indices on the n-grid (int64 [rows]), every (i, j) of the grid once in all, then spectrum().
// Memory: 9 n/2 + 2 coefficients a column, whatever the number of pairs.
class SpectrumSums {
 public:
  SpectrumSums(int64_t n, int64_t width);
  void add(const torch::Tensor& values, const torch::Tensor& i, const torch::Tensor& j);
  NeuronSpectrum spectrum() const;

 private:
  int64_t n_;
  torch::Tensor basis_;                 // [n, n] float32
  std::vector<int64_t> blocks_;         // per frequency: its basis rows {const, cos k, sin k}, counted
  torch::Tensor u_rows_, v_rows_;       // per product row: the basis row over a, over b
  torch::Tensor coeffs_;                // [products, width] float64: each block's row products
  torch::Tensor shift_, sum_, sum_sq_;
  double count_ = 0;
};

// ---- ablations ----
struct Split {
  double loss = 0, acc = 0;
};
struct AblationResult {
  std::string name;   // what was done
  std::string space;  // "logits" or "weights"
  std::vector<int64_t> freqs;
  Split train, test, all;
  int64_t draws = 1;  // random controls: averaged over this many draws
};
struct Splits {
  Split train, test, all;
};
// Loss (float64) and accuracy of logits [P^2, P] on the training pairs, the test pairs and all pairs.
Splits evaluate_splits(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& train_mask);
// The same summed chunk by chunk: add() each chunk of rows, then splits().
class SplitSums {
 public:
  void add(const torch::Tensor& logits, const torch::Tensor& labels, const torch::Tensor& train_mask);
  // Rows that are a function of their label alone: row g of `table` [classes, classes] scored
  // against class g, as many times as train_count[g] and test_count[g] ([classes] float64) say.
  void add_table(const torch::Tensor& table, const torch::Tensor& train_count, const torch::Tensor& test_count);
  Splits splits() const;

 private:
  // Loss summed, hits and rows: train, then test; all is their sum.
  double nll_[2] = {}, hits_[2] = {}, rows_[2] = {};
};
// The loss and accuracy of a model over every pair of its pair task, in chunks.
Splits evaluate_pairs(const Model& model, const Dataset& data, int64_t chunk = kPairChunk);

// The logits' trig form: logits over the pairs on the cycle, classes on the cycle, fitted by
// least squares with a constant plus sum_k alpha_k cos(w_k(i + s j - l)) over the key
// frequencies (l the class's index; for add cos(w_k(a + b - c))).
struct LogitFit {
  std::vector<int64_t> freqs;
  std::vector<double> alpha;  // per key frequency
  double frac_variance = 0;   // of the centred logits explained by the fit
  double loss = 0, acc = 0;   // of the fitted logits (constant + fit), over the pairs on the cycle
};
struct LossMeasures {
  Split full;        // the model as is (all pairs)
  double train_loss = 0, test_loss = 0, train_acc = 0, test_acc = 0;
  double restricted_loss = 0;  // only the key (a+b) directions, bias corrected, all pairs
  double excluded_loss = 0;    // key (a+b) directions removed, training pairs
  Splits restricted;           // the restricted logits on train, test and all pairs (loss and accuracy)
  // The restricted loss held out: the test pairs' logits projected onto the key (a+b) directions
  // taken over the test pairs alone, bias corrected over them. The paper's restricted loss
  // projects over every pair, so a test pair's restricted logits draw on the training pairs'
  // too; this one cannot credit memorisation. Zero without a key or test pairs on the cycle.
  Split restricted_heldout;
  std::vector<double> excluded_by_key;  // per key frequency: only its directions removed, training pairs
  LogitFit fit;                         // the logits' trig form at the key frequencies (fit_logit_trig)
};
// The model run over the pairs in chunks (two passes: the projections' sums, then the scores).
LossMeasures loss_measures(const Model& model, const Dataset& data, const std::vector<int64_t>& key_freqs,
                           int64_t chunk = kPairChunk);

struct AblateOptions {
  std::vector<int64_t> freqs;  // empty: the key frequencies by the neuron method
  int64_t control_draws = 5;
  uint64_t seed = 0;
  int64_t chunk = kPairChunk;  // pairs a chunk of the passes over the pairs
};
struct NeuronLogitReading;
// With `reading`, a model with hidden neurons also gets read_neuron_logit_map at the frequencies
// used, and its two projections are rows of the result (space "neurons").
std::vector<AblationResult> ablate(const Model& model, const Dataset& data, const AblateOptions& opts,
                                   std::vector<int64_t>* used_freqs = nullptr, NeuronLogitReading* reading = nullptr);

// Excluded loss (training pairs) with only frequency k's directions removed, for every k = 1..n
// of the cycle: the paper's sweep over all frequencies. [n] in frequency order.
std::vector<double> excluded_loss_by_frequency(const Model& model, const Dataset& data);

// The logits' trig form (LogitFit, above) of a model at frequencies `freqs`.
LogitFit fit_logit_trig(const Model& model, const Dataset& data, const std::vector<int64_t>& freqs);
// The same on given logits [N, P] of the pairs `pairs` ([N, 3] tokens).
LogitFit fit_logit_trig(const torch::Tensor& logits, const Cycle& cycle, const torch::Tensor& pairs,
                        const std::vector<int64_t>& freqs);

// ---- the neuron-logit map at the key frequencies (the paper's sections 4.2 and 4.4) ----
// W_L ([classes, hidden], classes on the cycle, centred over them: a constant over the classes
// moves no softmax) written as sum_k cos(w_k c) u_k^T + sin(w_k c) v_k^T over the key
// frequencies, u_k and v_k its cos and sin rows in the Fourier basis over c.
struct NeuronLogitReading {
  bool present = false;  // false: the model has no hidden neurons (nothing below is filled)
  std::vector<int64_t> freqs;
  int64_t directions = 0;  // the u_k and v_k: 2 per frequency (1 for k = n/2)
  std::vector<double> singular;  // W_L's singular values (centred), largest first, at most 20
  double top_share = 0;          // share of its squared norm in the 2|freqs| largest
  double residual = 0;           // ||W_L - sum_k (...)||_F / ||W_L||_F (centred; the paper: < 0.55 %)
  // Per key frequency: the fraction of the variance of u_k . MLP(a, b) over the pairs on the
  // cycle (centred) explained by cos(w_k(a+b)), and of v_k . MLP(a, b) by sin(w_k(a+b)) (Table 1).
  std::vector<double> fve_cos, fve_sin;
  // The hidden activations of every pair replaced by their projection onto span{u_k, v_k} (the
  // 2|freqs| directions W_L reads), or onto its orthogonal complement; the rest of the forward as
  // it is. Train, test and all pairs.
  Splits model, projected, null_space;
};
// UsageError for a model without hidden neurons or a task without a cycle.
// The pairs are run in chunks (in `pass` where one is given: its held chunks are reused).
NeuronLogitReading read_neuron_logit_map(const Model& model, const Dataset& data, const std::vector<int64_t>& freqs,
                                         PairPass* pass = nullptr);

}  // namespace grokking
