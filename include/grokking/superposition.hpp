// The analysis of toy models of superposition (Elhage et al. 2022): per feature its norm,
// interference and dimensionality; per model D* = m / ||W||_F^2 and how many features it
// represents and superposes; over a sweep, the dimensionality against 1/(1 - S) and the n = 2,
// m = 1 phase diagram.
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "grokking/model.hpp"

namespace grokking {

// A feature counts as represented when ||W_i|| is at least this; as in superposition when it is
// represented and its interference sum_{j != i} (W^_i . W_j)^2 is at least kSuperposedInterference.
constexpr double kRepresentedNorm = 0.5;
constexpr double kSuperposedInterference = 0.1;

struct FeatureGeometry {
  double norm = 0, interference = 0, dimensionality = 0, bias = 0;
  std::vector<double> direction;  // W_i, the feature's m coordinates
};
// A connected group of represented features in the interference graph (features joined when
// |cos(W_i, W_j)| >= kGeometryCosine): its features, the dimension they span, and its name after
// Elhage et al.'s section "The geometry of superposition": k features in r dimensions is a
// dedicated dimension (1 in 1), digon (2 in 1: an antipodal pair), triangle (3 in 2), tetrahedron
// (4 in 3), pentagon (5 in 2), square antiprism (8 in 3), else "k features in r dimensions".
struct FeatureGroup {
  std::vector<int64_t> features;
  int64_t dims = 0;
  std::string name;
};
constexpr double kGeometryCosine = 0.1;
std::string geometry_name(int64_t features, int64_t dims);

struct SuperpositionReport {
  int64_t n = 0, m = 0;
  std::vector<FeatureGroup> groups;  // of the represented features, the largest first
  std::vector<FeatureGeometry> features;
  std::vector<std::vector<double>> wtw;  // W^T W as the notebook draws it: [n][n], W_i . W_j
  double dims_per_feature = 0;           // D* = m / ||W||_F^2
  int64_t represented = 0, superposed = 0;
};
// UsageError in one line for a model that is not a toy model of superposition.
SuperpositionReport analyse_superposition(const Model& model);

// With feature sets (task.set_size k > 1; Elhage et al. 2022, "Superposition and correlated
// features"): how the represented features' directions sit within a set and across sets. Their
// finding: correlated features take orthogonal directions (|cos| near 0), anticorrelated ones
// antipodal (cos near -1), and sets sit across one another in superposition ("local
// almost-orthogonal bases"). Means over the pairs whose both features are represented; NaN where
// there is no such pair.
struct SetGeometry {
  int64_t set_size = 0;
  std::string sets;  // "correlated" or "anticorrelated"
  int64_t within_pairs = 0, across_pairs = 0;
  double within_cos = 0, within_abs_cos = 0, across_cos = 0, across_abs_cos = 0;
};
// Empty (set_size 0) for a model whose task has no feature sets. `represented_only` false: every
// pair (for an untrained model, whose features are not yet represented).
SetGeometry set_geometry(const Model& model, bool represented_only = true);
// The groups of features [n, m] (rows W_i) as analyse_superposition finds them.
std::vector<FeatureGroup> feature_groups(const torch::Tensor& W);
// "pentagon (0-4); digon (5, 7)": the groups, for a line of text.
std::string geometry_text(const std::vector<FeatureGroup>& groups);

// The neurons of a model whose hidden layer is ReLU neurons (FeatureReadout::neurons_in: a
// toy_mlp, computation in superposition): each neuron's input weights over the features (its
// column of W_in), classified as Elhage et al. draw them: monosemantic when one feature holds at
// least kMonosemanticShare of the column's squared norm, polysemantic otherwise, dead when its
// norm is under a tenth of the largest neuron's. |x| = ReLU(x) + ReLU(-x): a feature computed
// without superposition has a monosemantic neuron of each sign.
//
// Their "asymmetric superposition" motif, read from the model's behaviour: a neuron that reads a
// primary feature i with a large weight and a secondary feature j with a weight of the other sign
// kAsymmetricRatio or more times smaller (their example: 2 and -1/2), so that each fires it on its
// own side; it writes the secondary's output with a large weight (it carries |x_j|: on x = the unit
// input of j on that side its part of output j is at least kCarries), which makes the primary
// interfere strongly there (its part of output j on the primary's unit input at least kCarries);
// and another neuron inhibits that interference: the model's own output j on the primary's unit
// input is at most half of it. `inhibitor` is the neuron writing most negatively to output j there.
constexpr double kMonosemanticShare = 0.9, kAsymmetricRatio = 2.0, kCarries = 0.25;
struct ToyNeuron {
  double norm = 0, share = 0;  // share: the top feature's part of the squared norm
  int64_t feature = -1;        // the top feature
  double weight = 0;           // its weight into the neuron
  std::string kind;            // "monosemantic", "polysemantic" or "dead"
  // The largest weight of the other sign (-1 where there is none), its ratio |weight| / |it|,
  // whether the neuron is an asymmetric-superposition motif, and its inhibitor (-1 if not).
  int64_t second = -1;
  double second_weight = 0, ratio = 0;
  bool asymmetric = false;
  int64_t inhibitor = -1;
};
struct ToyNeuronReport {
  std::vector<ToyNeuron> neurons;
  int64_t monosemantic = 0, polysemantic = 0, dead = 0;
  int64_t both_signs = 0;  // features with a monosemantic neuron of each sign
  int64_t asymmetric = 0;  // neurons that are the asymmetric motif
  int64_t features = 0;
};
// Empty (no neurons) for a model without a layer of ReLU neurons.
ToyNeuronReport toy_neurons(const Model& model);
// The control for computation in superposition: the least expected loss a model of ReLU neurons
// on |x| reaches without it (every neuron reading one feature): the floor(m/2) most important
// features computed exactly by a neuron of each sign, the rest output at their mean, each
// contributing its importance times Var(|x_i|) = (1 - S)/3 - (1 - S)^2/4; an odd neuron left
// halves one more feature's error on its side (an upper bound there: (1 - S)/6). NaN unless the
// model has ReLU neurons and its task is target "abs" on signed values.
double abs_without_superposition(const Model& model);

// The n = 2, m = 1 phase diagram's classes: feature 2 (the one whose importance and density vary)
// not represented, alone on the dimension, or sharing it antipodally with feature 1.
std::string two_feature_phase(const SuperpositionReport& r);
// The same as the paper derives it: the configuration of least expected loss among the three,
// each with its weights and biases optimised (numerically, on a fixed sample) for importance I2
// of feature 2 (feature 1's is 1) and density p = 1 - S of both.
std::string two_feature_optimum(double importance2, double density);

}  // namespace grokking
