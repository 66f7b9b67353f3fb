// `grokking superposition`: the geometry of toy models of superposition (Elhage et al. 2022).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "common.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/superposition.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"
#include "grokking/train.hpp"

namespace grokking {
using namespace analyses;

const AnalysisKind& superposition_analysis();

namespace {

// Each feature's group name ("" where it is not represented).
std::vector<std::string> geometry_of_features(const SuperpositionReport& r) {
  std::vector<std::string> out(size_t(r.n));
  for (auto& g : r.groups)
    for (auto i : g.features) out[size_t(i)] = g.name;
  return out;
}

// One run's superposition: its files (superposition.csv, wtw.dat) and its report.
SuperpositionReport superposition_of_run(const std::string& dir, bool write) {
  const auto ck = load_checkpoint(resolve_checkpoint(dir));
  const auto r = analyse_superposition(model_from_checkpoint(ck));
  if (write) {
    std::vector<std::string> cols = {"feature", "norm", "interference", "dimensionality", "bias", "represented",
                                     "superposed", "geometry"};
    const auto geometry = geometry_of_features(r);
    for (int64_t k = 0; k < r.m; ++k) cols.push_back("w" + std::to_string(k));
    CsvWriter csv(cols);
    for (size_t i = 0; i < r.features.size(); ++i) {
      const auto& f = r.features[i];
      csv.field(int64_t(i)).field(f.norm).field(f.interference).field(f.dimensionality).field(f.bias);
      csv.field(int64_t(f.norm >= kRepresentedNorm));
      csv.field(int64_t(f.norm >= kRepresentedNorm && f.interference >= kSuperposedInterference));
      csv.field(geometry[i]);
      for (auto v : f.direction) csv.field(v);
      csv.end_row();
    }
    atomic_write(dir + "/superposition.csv", csv.text());
    std::string mat = "# W^T W as the notebook draws it: entry (i, j) = W_i . W_j\n";
    for (auto& row : r.wtw) {
      for (size_t j = 0; j < row.size(); ++j) mat += (j ? " " : "") + format_number(row[j], "%.4g");
      mat += "\n";
    }
    atomic_write(dir + "/wtw.dat", mat);
    // A layer of ReLU neurons: each neuron's weights from and to every feature, with its class
    // and motif, one row a neuron and feature (plot's neuron figure).
    const Model model = model_from_checkpoint(ck);
    if (const auto neurons = toy_neurons(model); !neurons.neurons.empty()) {
      const FeatureReadout* fr = model.arch().feature_readout();
      const auto W = model.param(fr->neurons_in).detach().to(torch::kCPU, torch::kFloat64);   // [n, m]
      const auto V = model.param(fr->neurons_out).detach().to(torch::kCPU, torch::kFloat64);  // [m, n]
      CsvWriter nc({"neuron", "feature", "weight_in", "weight_out", "kind", "primary", "second", "ratio", "asymmetric",
                    "inhibitor"});
      for (size_t j = 0; j < neurons.neurons.size(); ++j) {
        const auto& u = neurons.neurons[j];
        for (int64_t i = 0; i < W.size(0); ++i) {
          nc.field(int64_t(j)).field(i).field(W[i][int64_t(j)].item<double>()).field(V[int64_t(j)][i].item<double>());
          nc.field(u.kind).field(u.feature).field(u.second).field(u.ratio).field(int64_t(u.asymmetric)).field(u.inhibitor);
          nc.end_row();
        }
      }
      atomic_write(dir + "/superposition_neurons.csv", nc.text());
    }
  }
  return r;
}

int run_superposition(const AnalysisOptions& opts) {
  const std::string dir = opts.path;
  if (!is_dir(dir)) throw UsageError(dir + ": superposition takes a run directory or a sweep directory");
  configure_threads(1);
  if (exists(dir + "/plan.json")) {
    // A sweep: every finished run, one row per feature, and the phase diagram's cells where n = 2, m = 1.
    const auto plan = read_json_file(dir + "/plan.json");
    CsvWriter csv({"run", "sparsity", "inverse_density", "feature", "importance", "norm", "interference",
                   "dimensionality", "dims_per_feature", "represented", "superposed", "phase", "optimum", "geometry"});
    nlohmann::json runs = nlohmann::json::array();
    for (auto& run : plan.at("runs")) {
      const std::string name = run.at("name").get<std::string>(), run_dir = dir + "/runs/" + name;
      if (!exists(summary_path(run_dir)) || !finished(read_summary(run_dir).status)) continue;
      const Config cfg = load_run_config(run_dir);
      require_applies(superposition_analysis(), cfg, run_dir);
      const auto r = superposition_of_run(run_dir, true);
      const double S = cfg.task.real("sparsity");
      std::vector<double> importance = cfg.task.reals("importances");
      if (importance.empty())
        for (int64_t i = 0; i < r.n; ++i) importance.push_back(std::pow(cfg.task.real("importance_decay"), double(i)));
      std::string phase, optimum;
      if (r.n == 2 && r.m == 1) {
        phase = two_feature_phase(r);
        optimum = two_feature_optimum(importance[1] / std::max(importance[0], 1e-300), 1 - S);
      }
      const auto geometry = geometry_of_features(r);
      for (size_t i = 0; i < r.features.size(); ++i) {
        const auto& f = r.features[i];
        csv.field(name).field(S).field(1 / (1 - S)).field(int64_t(i)).field(importance[i]).field(f.norm);
        csv.field(f.interference).field(f.dimensionality).field(r.dims_per_feature).field(r.represented);
        csv.field(r.superposed).field(phase).field(optimum).field(geometry[i]).end_row();
      }
      runs.push_back({{"run", name}, {"sparsity", S}, {"dims_per_feature", r.dims_per_feature},
                      {"represented", r.represented}, {"superposed", r.superposed}, {"n", r.n}, {"m", r.m},
                      {"geometry", geometry_text(r.groups)}});
      if (!phase.empty()) runs.back()["phase"] = phase, runs.back()["optimum"] = optimum;
    }
    if (runs.empty()) throw UsageError(dir + ": no finished sparse_features runs yet");
    atomic_write(dir + "/superposition.csv", csv.text());
    if (opts.quiet) return 0;
    if (opts.json) {
      std::printf("%s\n", nlohmann::json({{"sweep_dir", dir}, {"runs", runs}}).dump(2).c_str());
      return 0;
    }
    std::printf("%-60s %9s %6s %12s %11s %10s%s\n", "run", "sparsity", "n/m", "D* = m/|W|^2", "represented",
                "superposed", runs[0].contains("phase") ? "  phase (trained / optimum)" : "");
    for (auto& r : runs) {
      std::printf("%-60s %9.4f %3lld/%-2lld %12.3f %11lld %10lld", short_text(r["run"].get<std::string>(), 60).c_str(),
                  r["sparsity"].get<double>(), (long long)r["n"].get<int64_t>(), (long long)r["m"].get<int64_t>(),
                  r["dims_per_feature"].get<double>(), (long long)r["represented"].get<int64_t>(),
                  (long long)r["superposed"].get<int64_t>());
      if (r.contains("phase"))
        std::printf("  %s / %s", r["phase"].get<std::string>().c_str(), r["optimum"].get<std::string>().c_str());
      std::printf("\n");
    }
    std::printf("-> %s/superposition.csv (one row per run and feature); grokking plot %s draws it\n", dir.c_str(),
                dir.c_str());
    return 0;
  }
  const Config cfg = load_run_config(dir);
  require_applies(superposition_analysis(), cfg, dir);
  const auto r = superposition_of_run(dir, true);
  if (opts.quiet) return 0;
  // Feature sets: the trained model's within- and across-set cosines beside the untrained one's
  // (the config's initialisation): what a model that learned nothing of the sets shows.
  const SetGeometry sets = set_geometry(model_from_checkpoint(load_checkpoint(resolve_checkpoint(dir))));
  // The untrained control: the mean over 16 initialisations (train.seed + 0..15), every pair.
  SetGeometry sets0;
  if (sets.set_size) {
    constexpr int kInits = 16;
    for (int s = 0; s < kInits; ++s) {
      Config c = cfg;
      c.train.seed = cfg.train.seed + s;
      const SetGeometry g = set_geometry(Model(c), false);
      sets0.within_pairs = g.within_pairs, sets0.across_pairs = g.across_pairs;
      sets0.within_cos += g.within_cos / kInits, sets0.within_abs_cos += g.within_abs_cos / kInits;
      sets0.across_cos += g.across_cos / kInits, sets0.across_abs_cos += g.across_abs_cos / kInits;
    }
  }
  // A layer of ReLU neurons: classified, with the asymmetric motif counted beside 16 untrained
  // initialisations (what chance arrangements of the weights show).
  const Model model = model_from_checkpoint(load_checkpoint(resolve_checkpoint(dir)));
  const ToyNeuronReport neurons = toy_neurons(model);
  double motifs0 = 0;
  if (!neurons.neurons.empty()) {
    constexpr int kInits = 16;
    for (int s = 0; s < kInits; ++s) {
      Config c = cfg;
      c.train.seed = cfg.train.seed + s;
      motifs0 += double(toy_neurons(Model(c)).asymmetric) / kInits;
    }
  }
  auto sets_json = [](const SetGeometry& g) {
    return nlohmann::json{{"within_pairs", g.within_pairs}, {"within_cos", g.within_cos},
                          {"within_abs_cos", g.within_abs_cos}, {"across_pairs", g.across_pairs},
                          {"across_cos", g.across_cos}, {"across_abs_cos", g.across_abs_cos}};
  };
  if (opts.json) {
    nlohmann::json j = {{"run_dir", dir}, {"n", r.n}, {"m", r.m}, {"dims_per_feature", r.dims_per_feature},
                        {"represented", r.represented}, {"superposed", r.superposed},
                        {"geometry", geometry_text(r.groups)}, {"groups", nlohmann::json::array()},
                        {"features", nlohmann::json::array()}};
    if (!neurons.neurons.empty()) {
      if (const double base = abs_without_superposition(model); !std::isnan(base)) j["abs_loss_without_superposition"] = base;
      j["neurons"] = {{"monosemantic", neurons.monosemantic}, {"polysemantic", neurons.polysemantic},
                      {"dead", neurons.dead}, {"features_with_both_signs", neurons.both_signs},
                      {"asymmetric", neurons.asymmetric}, {"asymmetric_untrained", motifs0},
                      {"each", nlohmann::json::array()}};
      for (auto& n : neurons.neurons) {
        nlohmann::json e = {{"norm", n.norm},         {"feature", n.feature}, {"weight", n.weight},
                            {"share", n.share},       {"kind", n.kind},       {"second", n.second},
                            {"second_weight", n.second_weight}, {"ratio", n.ratio}, {"asymmetric", n.asymmetric}};
        if (n.asymmetric) e["inhibitor"] = n.inhibitor;
        j["neurons"]["each"].push_back(e);
      }
    }
    if (sets.set_size)
      j["feature_sets"] = {{"set_size", sets.set_size}, {"sets", sets.sets}, {"trained", sets_json(sets)},
                           {"untrained", sets_json(sets0)}};
    for (auto& g : r.groups) j["groups"].push_back({{"name", g.name}, {"features", g.features}, {"dims", g.dims}});
    for (auto& f : r.features)
      j["features"].push_back({{"norm", f.norm}, {"interference", f.interference}, {"dimensionality", f.dimensionality},
                               {"bias", f.bias}, {"direction", f.direction}});
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s: %lld features in %lld dimensions; D* = m/||W||_F^2 = %.3f; %lld represented (||W_i|| >= %.1f), "
              "%lld in superposition (interference >= %.1f)\n",
              dir.c_str(), (long long)r.n, (long long)r.m, r.dims_per_feature, (long long)r.represented, kRepresentedNorm,
              (long long)r.superposed, kSuperposedInterference);
  std::printf("geometry (features joined where |cos(W_i, W_j)| >= %.1f; named by features and the dimensions they span, as "
              "Elhage et al. name them): %s\n",
              kGeometryCosine, geometry_text(r.groups).c_str());
  if (sets.set_size) {
    std::printf("%s sets of %lld (features 0-%lld, %lld-%lld, ...): cos(W_i, W_j) of represented features, mean [mean "
                "|cos|]\n",
                sets.sets.c_str(), (long long)sets.set_size, (long long)sets.set_size - 1, (long long)sets.set_size,
                (long long)2 * sets.set_size - 1);
    std::printf("  within a set: %6.3f [%5.3f] over %lld pairs (untrained, 16 inits: %6.3f [%5.3f]); across sets: %6.3f "
                "[%5.3f] over %lld pairs (untrained %6.3f [%5.3f])\n",
                sets.within_cos, sets.within_abs_cos, (long long)sets.within_pairs, sets0.within_cos,
                sets0.within_abs_cos, sets.across_cos, sets.across_abs_cos, (long long)sets.across_pairs,
                sets0.across_cos, sets0.across_abs_cos);
    std::printf("  (Elhage et al.: correlated features orthogonal, |cos| near 0; anticorrelated antipodal, cos near -1)\n");
  }
  if (!neurons.neurons.empty()) {
    std::printf("neurons (columns of W_in): %lld monosemantic (one feature >= %.0f%% of the squared weights), %lld "
                "polysemantic, %lld dead; features with a monosemantic neuron of each sign (|x| = ReLU(x) + ReLU(-x)): "
                "%lld of %lld\n",
                (long long)neurons.monosemantic, 100 * kMonosemanticShare, (long long)neurons.polysemantic,
                (long long)neurons.dead, (long long)neurons.both_signs, (long long)neurons.features);
    std::printf("asymmetric superposition (Elhage et al.'s motif: a secondary feature of the other sign read %.0fx or "
                "more weaker, its interference inhibited by another neuron): %lld neurons (untrained, 16 inits: %.2f)\n",
                kAsymmetricRatio, (long long)neurons.asymmetric, motifs0);
    std::printf("%8s %8s %8s %8s %7s  %-13s %7s %8s %6s  %s\n", "neuron", "norm", "feature", "weight", "share", "kind",
                "second", "weight", "ratio", "motif");
    for (size_t j = 0; j < neurons.neurons.size() && j < 64; ++j) {
      const auto& n = neurons.neurons[j];
      std::printf("%8zu %8.3f %8lld %+8.3f %6.0f%%  %-13s", j, n.norm, (long long)n.feature, n.weight, 100 * n.share,
                  n.kind.c_str());
      if (n.second >= 0)
        std::printf(" %7lld %+8.3f %6.1f", (long long)n.second, n.second_weight, n.ratio);
      else
        std::printf(" %7s %8s %6s", "-", "-", "-");
      if (n.asymmetric) std::printf("  asymmetric, inhibited by neuron %lld", (long long)n.inhibitor);
      std::printf("\n");
    }
    if (const double base = abs_without_superposition(model); !std::isnan(base)) {
      const auto rows = read_metrics(dir + "/metrics.csv");
      const double trained = rows.empty() ? std::nan("") : rows.back().test_loss;
      std::printf("loss on the evaluation set %.4g; without superposition at best %.4g (the %lld most important features "
                  "computed exactly by a neuron of each sign, the rest at their mean): %s\n",
                  trained, base, (long long)(cfg.model.integer("d_hidden") / 2),
                  trained < base ? "it computes more than its neurons could one feature at a time"
                                 : "no better than computing one feature at a time");
    }
    std::printf("(the rows below: each feature's weights into the neurons, W_in's row, read as the toy model's W)\n");
  }
  std::printf("%8s %8s %13s %15s %9s\n", "feature", "||W_i||", "interference", "dimensionality", "bias");
  for (size_t i = 0; i < r.features.size(); ++i) {
    const auto& f = r.features[i];
    std::printf("%8zu %8.3f %13.3f %15.3f %9.3f\n", i, f.norm, f.interference, f.dimensionality, f.bias);
  }
  return 0;
}

}  // namespace

const AnalysisKind& superposition_analysis() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "superposition";
    a.doc = "Toy models of superposition: each feature's norm, interference and dimensionality, D*; over a sweep, the "
            "dimensionality against 1/(1-S) and the two-feature phase diagram";
    a.scope = AnalysisKind::Scope::run_or_sweep;
    a.needs = {Capability::features, Capability::feature_matrix};
    a.files = {{"superposition.csv"}, {"wtw.dat"}, {"superposition_neurons.csv", uint32_t(Capability::neurons)}};
    a.figures = {"superposition"};
    a.source = "Elhage et al. 2022 and anthropics/toy-models-of-superposition's notebook (D_i, D*, W^T W)";
    a.report = {{"Features (norm, interference, dimensionality)", "superposition.csv"}};
    a.run = run_superposition;
    return a;
  }();
  return k;
}

}  // namespace grokking
