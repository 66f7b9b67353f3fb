// The analysis of a group run by irreducible representations (Chughtai, Chan and Nanda 2023):
// which irreps the logits, embeddings and hidden neurons use, the key irreps, and excluded and
// restricted loss by irrep with their controls. The group counterpart of the Fourier analysis:
// for C_n, irrep "freq k" is frequency k, and the losses are the Fourier analysis's.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "grokking/analysis.hpp"
#include "grokking/groups.hpp"
#include "grokking/model.hpp"
#include "grokking/task.hpp"

namespace grokking {

// What the analysis needs of a group task: the group, its real irreps with their isotypic
// projectors ([|G|, |G|] float64), and the label of every pair in make_dataset's all_x order.
struct GroupStructure {
  FiniteGroup group;
  std::string operation;
  std::vector<RealIrrep> irreps;
  std::vector<torch::Tensor> projectors;
  torch::Tensor labels;  // [|G|^2] int64
  // The dimension of each irrep's isotypic component (the rank of its projector).
  int64_t component_dim(size_t irrep) const;
};
// UsageError in one line for a task that is not a group task.
GroupStructure group_structure(const TaskConfig& task);

// The part of per-pair values [|G|^2, C] that is a function of the pair's label lying in the
// given irreps' isotypic components (for composition: the span of the entries of rho(a.b)).
torch::Tensor project_irreps(const torch::Tensor& values, const GroupStructure& gs, const std::vector<size_t>& irreps);

// What the irreps' measures need of per-pair logits [|G|^2, C], summed chunk by chunk so that no
// [|G|^2, C] tensor is held: per label, the logits summed over all pairs and over the test pairs,
// and the pairs' mean logit (over the classes) summed; per class, the logits summed over all pairs
// and over the test pairs; the squared norm of the logits centred over the classes.
struct LogitSums {
  LogitSums(const GroupStructure& gs, const Dataset& data);  // zeros
  // Pairs first .. first + logits.size(0) of make_dataset's all_x order.
  void add(int64_t first, const torch::Tensor& logits);
  torch::Tensor by_label, by_label_test;  // [|G|, C] float64
  torch::Tensor label_row_mean;           // [|G|]
  torch::Tensor by_class, by_class_test;  // [C]
  double centred_sq = 0;
  torch::Tensor train_count, test_count;  // [|G|]: pairs of each label in each split
  torch::Tensor labels, test_mask;        // of every pair: [|G|^2] int64 and bool
};
// The model over every pair in chunks: its logit sums, and its loss and accuracy where `splits`
// is given.
LogitSums model_logit_sums(const Model& model, const GroupStructure& gs, const Dataset& data, Splits* splits = nullptr,
                           int64_t chunk = kPairChunk);
// Chughtai et al.'s logit similarity of every irrep: the logits centred over the classes against
// the character cube chi(label . c^-1) over pairs and classes (a cosine).
std::vector<double> logit_similarities(const LogitSums& sums, const GroupStructure& gs);

// The restricted loss two ways, and what the key rule picks, from one set of logits [|G|^2, |G|]:
// `restricted`, Chughtai et al.'s (the per-label means over every pair projected onto the key
// irreps, plus the per-class mean of the rest: a test pair's restricted logits are built from
// the training pairs that share its label, so a lookup table scores well on it); `heldout`, the
// test pairs' restricted logits built from the test pairs alone (a memoriser's are noise).
struct RestrictedReading {
  Splits restricted;
  Split heldout;                  // test pairs only
  std::vector<size_t> rule;       // the irreps the 0.005 rule picks from these logits
};
// `similarity`: these logits' logit similarities where the caller has them (else computed).
RestrictedReading read_restricted(const LogitSums& sums, const GroupStructure& gs, const std::vector<size_t>& key,
                                  const std::vector<double>* similarity = nullptr);
// The same of logits held whole.
RestrictedReading read_restricted(const torch::Tensor& logits, const GroupStructure& gs, const Dataset& data,
                                  const std::vector<size_t>& key, const std::vector<double>* similarity = nullptr);
// A lookup-table memoriser of the split: logits N(0, 1) everywhere plus a margin of 10 at each
// training pair's label (train loss about |G| e^-10, test accuracy chance), seeded; drawn in
// blocks of pairs, so that its sums take no more memory than a block.
torch::Tensor memoriser_logits(const GroupStructure& gs, const Dataset& data, uint64_t seed);
LogitSums memoriser_sums(const GroupStructure& gs, const Dataset& data, uint64_t seed);

// The total embeddings Chughtai et al. read ([|G|, width] each, float64): x's and y's
// embeddings times their rows of the first hidden layer (an MLP with learned embeddings), the
// first layer's rows themselves (one-hot inputs), or W_E for both (a transformer).
std::pair<torch::Tensor, torch::Tensor> total_embeddings(const Model& model);
// The model over all pairs with each operand embedding's rows replaced by Q times them ([|G|, |G|]:
// a projector keeps or removes a subspace of the functions of the operand).
Split all_pairs_with_rows(const Model& model, const Dataset& data, const torch::Tensor& Q, int64_t chunk = kPairChunk);

// Chughtai et al.'s restricted loss of a model (IrrepReport::theirs_restricted_loss): the key
// irreps kept in its operand embeddings, the loss over all pairs.
double theirs_restricted_loss(const Model& model, const GroupStructure& gs, const std::vector<size_t>& key);

// Chughtai et al.'s rule for key irreps: the non-trivial irreps whose logit similarity at the
// final checkpoint exceeds 0.005 (their determine_key_reps).
constexpr double kKeyIrrepSimilarity = 0.005;

struct IrrepMeasure {
  std::string name;
  int64_t dim = 0, component_dim = 0;
  double similarity = 0;   // cosine of the centred logits with chi(label . c^-1) over pairs and classes
  double fve = 0;          // similarity^2: the share of the centred logits' variance
  double embed_frac = 0, unembed_frac = 0, hidden_frac = 0;  // share of the squared norm in the isotypic component
  double wl_frac = 0;      // of the neuron-logit map W_L over the classes
  Split excluded;          // this irrep alone removed from the logits (train pairs)
  // Chughtai et al.'s own (rep_theory/utils/metrics.py, SymmetricMetrics, the paper's version):
  // the share of the total embedding of x and of y (the embedding times the first layer: W_x W,
  // W_y W; the transformer's W_E) in the irrep's isotypic component; the share of the centred
  // hidden activations over all pairs that is a function of a alone, of b alone, of the label
  // (their percent_hidden: x, y, xy) in it. And the loss over all pairs with the irrep removed
  // from both total embeddings and the network run on from there (their earlier code, df7d699).
  double theirs_embed_x = 0, theirs_embed_y = 0, theirs_excluded_loss = 0;
  double theirs_hidden_x = 0, theirs_hidden_y = 0, theirs_hidden = 0;
};
// The columns of Chughtai et al.'s tables (rep_theory/paper/tables.py over their
// summary_metrics.json), the key irreps' shares summed: W_a and W_b FVE (total embeddings), W_U
// FVE (the neuron-logit map W_L: their get_unembed), MLP FVE (hidden x + y + xy), MLP rho(ab) FVE
// (xy), and their excluded (training pairs) and restricted (all pairs) loss through the hidden
// layer. Without hidden neurons (attention-only) only the first three.
struct TheirTable {
  double embed_x = 0, embed_y = 0, unembed = 0, mlp = 0, mlp_xy = 0;
  bool has_hidden = false;
  double hidden_excluded_loss = 0, hidden_restricted_loss = 0;
};
struct IrrepReport {
  std::string group, operation;
  int64_t order = 0;
  std::vector<IrrepMeasure> irreps;
  std::vector<size_t> key;     // indices into irreps
  double fve_total = 0;        // the non-trivial irreps' similarity^2, summed (Chughtai et al.'s)
  Splits model;                // the model as it is
  Splits restricted;           // only the key irreps (and the per-class mean of the rest) kept
  Split restricted_heldout;    // the same on the test pairs, from the test pairs alone
  RestrictedReading memoriser; // the same measures on memoriser_logits of this split, with the same key irreps
  Splits excluded;             // the key irreps removed
  std::vector<size_t> matched; // control: as many non-key irreps of the nearest dimensions
  Splits matched_excluded;
  Splits random_excluded;      // control: random label functions of the key irreps' total dimension
  int64_t random_draws = 0;
  double gini_embed = 0, gini_wl = 0;  // Gini of the per-irrep norms (non-trivial irreps) of the embeddings and W_L
  // Chughtai et al.'s restricted and total excluded loss: the key irreps kept in (removed from)
  // both total embeddings, the network run on from there, the loss over all pairs. Through the
  // weights, so no pair's logits borrow from another's: a memoriser cannot pass it.
  double theirs_restricted_loss = 0, theirs_total_excluded_loss = 0;
  TheirTable theirs_table;
};
// `key` empty: Chughtai et al.'s rule. `draws` random controls seeded by `seed`.
// Every pass over the pairs runs in chunks of `chunk` pairs (the memory bound).
IrrepReport analyse_irreps(const Model& model, const GroupStructure& gs, std::vector<size_t> key = {},
                           int64_t draws = 5, uint64_t seed = 0, int64_t chunk = kPairChunk);

// The measures `grokking progress` takes of a group run at one checkpoint, with the run's key
// irreps: its losses, restricted and excluded loss (and per key irrep), the Gini of the
// embeddings' and W_L's per-irrep norms, and every irrep's logit similarity.
struct IrrepProgress {
  double train_loss = 0, test_loss = 0, train_acc = 0, test_acc = 0;
  Splits restricted;
  Split restricted_heldout;
  double excluded_loss = 0;
  std::vector<double> excluded_by_key;
  double gini_embed = 0, gini_wl = 0;
  std::vector<double> similarity;
  // Every irrep on its own: the train loss with it removed from the logits, the loss over all
  // pairs with only it kept (Chughtai et al.'s restricted loss of one irrep), and the same held
  // out (the test pairs from the test pairs alone; the figure a memoriser cannot pass).
  std::vector<double> excluded_each, restricted_each, heldout_each;
};
IrrepProgress irrep_progress(const Model& model, const GroupStructure& gs, const Dataset& data,
                             const std::vector<size_t>& key, int64_t chunk = kPairChunk);

}  // namespace grokking
