// Toy models of superposition: the sparse features, the geometry measures on planted weights,
// the two-feature optimum, and small configs that find the pentagon and the sticky D* = 1/2.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>
#include <tuple>

#include "catch.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/model.hpp"
#include "grokking/rundir.hpp"
#include "grokking/superposition.hpp"
#include "grokking/task.hpp"
#include "grokking/train.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {
TaskConfig features(int64_t n, double sparsity, double decay) {
  TaskConfig t;
  t.kind = "sparse_features";
  t.keys = {{"n_features", n}, {"sparsity", sparsity}, {"importance_decay", decay},
            {"importances", nlohmann::json::array()}, {"eval_examples", 1000}};
  return t;
}
Config toy(int64_t n, int64_t m, double sparsity) {
  auto j = config_to_json(test::tiny_config());
  j["task"] = {{"kind", "sparse_features"}, {"n_features", n}, {"sparsity", sparsity}};
  j["model"] = {{"kind", "toy_superposition"}, {"d_hidden", m}};
  j["train"]["batch_size"] = 64;
  return config_from_json(j, "(test)");
}
}  // namespace

TEST_CASE("sparse features: zero with probability S, else uniform; the same draws alone and packed", "[superposition]") {
  auto dense = make_task(features(4, 0.0, 0.9)), sparse = make_task(features(4, 0.75, 0.9));
  const Batch d = dense->train_batch(3, 20000), s = sparse->train_batch(3, 20000);
  CHECK(d.x.sizes().vec() == std::vector<int64_t>{1, 20000, 4});
  CHECK(d.x.gt(0).to(torch::kFloat64).mean().item<double>() == Approx(1.0).margin(1e-3));
  CHECK(s.x.gt(0).to(torch::kFloat64).mean().item<double>() == Approx(0.25).margin(0.01));
  CHECK(d.x.max().item<double>() < 1.0);
  CHECK(d.weight[0][2].item<double>() == Approx(0.81));
  // A pack of both: each replica's batch is what it draws alone.
  auto pack = make_task(std::vector<TaskConfig>{features(4, 0.0, 0.9), features(4, 0.75, 0.9)});
  const Batch p = pack->train_batch(3, 20000);
  CHECK(torch::equal(p.x[0], d.x[0]));
  CHECK(torch::equal(p.x[1], s.x[0]));
  CHECK(torch::equal(p.y, p.x));
  // The draw, as the task has always written it: the step's uniforms from the task's seed, each
  // replica's kept where its own threshold says (its values fixed: runs and figures depend on them).
  auto gen = at::detail::createCPUGenerator(uint64_t(features(4, 0.0, 0.9).seed) * 1000003u + 3 + 1);
  auto values = torch::rand({1, 20000, 4}, gen, torch::kFloat32);
  auto keep = torch::rand({1, 20000, 4}, gen, torch::kFloat32);
  auto density = torch::tensor(std::vector<double>{1.0, 0.25}, torch::kFloat32).view({2, 1, 1});
  CHECK(torch::equal(p.x, torch::where(keep < density, values, torch::zeros_like(values))));
}

TEST_CASE("superposition measures: a pentagon, an antipodal pair, orthogonal features", "[superposition]") {
  auto planted = [](Config cfg, const torch::Tensor& W) {
    Model m(cfg);
    torch::NoGradGuard no_grad;
    m.param("W").copy_(W);
    return analyse_superposition(m);
  };
  std::vector<float> pentagon;
  for (int k = 0; k < 5; ++k) pentagon.push_back(float(std::cos(2 * M_PI * k / 5))), pentagon.push_back(float(std::sin(2 * M_PI * k / 5)));
  const auto p = planted(toy(5, 2, 0.9), torch::tensor(pentagon).view({5, 2}));
  for (auto& f : p.features) {
    CHECK(f.norm == Approx(1.0).epsilon(1e-6));
    CHECK(f.dimensionality == Approx(0.4).epsilon(1e-5));
  }
  CHECK(p.dims_per_feature == Approx(0.4).epsilon(1e-5));
  CHECK(p.represented == 5);
  CHECK(p.superposed == 5);
  REQUIRE(p.groups.size() == 1);
  CHECK(p.groups[0].name == "pentagon");
  CHECK(p.groups[0].dims == 2);
  const auto pair = planted(toy(2, 1, 0.9), torch::tensor({1.0f, -1.0f}).view({2, 1}));
  CHECK(pair.features[0].dimensionality == Approx(0.5));
  CHECK(two_feature_phase(pair) == "antipodal superposition");
  REQUIRE(pair.groups.size() == 1);
  CHECK(pair.groups[0].name == "digon");
  const auto ortho = planted(toy(3, 3, 0.0), torch::eye(3));
  for (auto& f : ortho.features) CHECK(f.dimensionality == Approx(1.0));
  CHECK(ortho.superposed == 0);
  CHECK(ortho.groups.size() == 3);
  for (auto& g : ortho.groups) CHECK(g.name == "dedicated dimension");
  const auto one = planted(toy(2, 1, 0.0), torch::tensor({1.0f, 0.0f}).view({2, 1}));
  CHECK(two_feature_phase(one) == "not represented");
  // A triangle and a digon side by side in 3 dimensions, and a tetrahedron: named by the
  // features and the dimensions they span; one feature left out is not in any group.
  std::vector<float> mixed;
  for (int k = 0; k < 3; ++k) mixed.insert(mixed.end(), {float(std::cos(2 * M_PI * k / 3)), float(std::sin(2 * M_PI * k / 3)), 0.0f});
  mixed.insert(mixed.end(), {0.0f, 0.0f, 1.0f, 0.0f, 0.0f, -1.0f, 0.0f, 0.0f, 0.1f});
  const auto mg = feature_groups(torch::tensor(mixed).view({6, 3}));
  REQUIRE(mg.size() == 2);
  CHECK(mg[0].name == "triangle");
  CHECK(mg[0].features == std::vector<int64_t>{0, 1, 2});
  CHECK(mg[1].name == "digon");
  CHECK(geometry_text(mg) == "triangle ({0,1,2}); digon ({3,4})");
  const std::vector<float> corners = {1, 1, 1, 1, -1, -1, -1, 1, -1, -1, -1, 1};
  const auto tet = feature_groups(torch::tensor(corners).view({4, 3}));
  REQUIRE(tet.size() == 1);
  CHECK(tet[0].name == "tetrahedron");
  CHECK(geometry_name(8, 3) == "square antiprism");
  CHECK(geometry_name(7, 3) == "7 features in 3 dimensions");
}

TEST_CASE("feature sets: correlated features present together, anticorrelated never, each at density 1 - S",
          "[superposition]") {
  auto sets = [](const std::string& kind, double sparsity) {
    TaskConfig t = features(6, sparsity, 1.0);
    t.keys["set_size"] = 2, t.keys["sets"] = kind;
    return t;
  };
  for (const std::string kind : {"correlated", "anticorrelated"}) {
    INFO(kind);
    // Two replicas side by side, S 0.7 and 0.9: each as it would be alone.
    const std::vector<TaskConfig> pack = {sets(kind, 0.7), sets(kind, 0.9)};
    const auto x = make_task(pack)->train_batch(3, 20000).x;  // [2, N, 6]
    for (int64_t s = 0; s < 2; ++s) {
      const auto alone = make_task(pack[size_t(s)])->train_batch(3, 20000).x[0];
      CHECK(torch::equal(alone, x[s]));
      const auto on = x[s].gt(0);
      for (int64_t j = 0; j < 6; ++j)
        CHECK(on.select(1, j).to(torch::kFloat64).mean().item<double>() == Approx(s ? 0.1 : 0.3).margin(0.01));
      for (int64_t first = 0; first < 6; first += 2) {
        const auto a = on.select(1, first), b = on.select(1, first + 1);
        if (kind == "correlated")
          CHECK(torch::equal(a, b));
        else
          CHECK(!(a & b).any().item<bool>());
        // Across sets, independent: both on about as often as the product of the densities.
        const double both = (a & on.select(1, (first + 2) % 6)).to(torch::kFloat64).mean().item<double>();
        CHECK(both == Approx(s ? 0.01 : 0.09).margin(0.01));
      }
    }
  }
  // Independent features (set_size 1) draw what they drew before sets existed: the same batch.
  TaskConfig plain = features(6, 0.7, 1.0);
  TaskConfig ones = plain;
  ones.keys["set_size"] = 1;
  CHECK(torch::equal(make_task(plain)->train_batch(5, 100).x, make_task(ones)->train_batch(5, 100).x));
}

TEST_CASE("computation in superposition: |x| of signed features, and the loss without superposition", "[superposition]") {
  // The task: signed values, the target their absolute value.
  TaskConfig t = features(5, 0.5, 1.0);
  t.keys["values"] = "signed", t.keys["target"] = "abs";
  const Batch b = make_task(t)->train_batch(1, 200000);
  CHECK(b.x.min().item<float>() < -0.99f);
  CHECK(b.x.max().item<float>() > 0.99f);
  CHECK(torch::equal(b.y, b.x.abs()));
  CHECK(b.x.ne(0).to(torch::kFloat64).mean().item<double>() == Approx(0.5).margin(0.01));
  // A toy_mlp that computes features 0 and 1 exactly (a neuron of each sign) and outputs the rest
  // at their mean reaches the loss abs_without_superposition says: 3 (1/6 - 1/16) = 0.3125.
  auto j = config_to_json(test::tiny_config());
  j["task"] = {{"kind", "sparse_features"}, {"n_features", 5}, {"sparsity", 0.5}, {"values", "signed"}, {"target", "abs"}};
  j["model"] = {{"kind", "toy_mlp"}, {"d_hidden", 4}};
  j["train"]["batch_size"] = 64;
  const Config cfg = parse_config(j.dump(), "(test)", {});
  Model m(cfg);
  CHECK(abs_without_superposition(m) == Approx(3 * (0.5 / 3 - 0.25 / 4)).epsilon(1e-12));
  {
    torch::NoGradGuard no_grad;
    auto W_in = m.param("W_in"), W_out = m.param("W_out"), b_in = m.param("b_in"), b_out = m.param("b_out");
    W_in.zero_(), W_out.zero_(), b_in.zero_(), b_out.fill_(0.25f);  // E|x| = (1 - S)/2
    for (int64_t f = 0; f < 2; ++f) {
      W_in[f][2 * f] = 1, W_in[f][2 * f + 1] = -1;
      W_out[2 * f][f] = 1, W_out[2 * f + 1][f] = 1, b_out[f] = 0;
    }
  }
  const auto out = m.forward(b.x);  // [1, N, 5]: the task's batch has the replica dimension
  const double loss = (out - b.y).pow(2).sum(-1).mean().item<double>();
  CHECK(loss == Approx(0.3125).margin(0.005));
  // Its neurons: four monosemantic, features 0 and 1 with one of each sign.
  const ToyNeuronReport r = toy_neurons(m);
  CHECK(r.monosemantic == 4);
  CHECK(r.both_signs == 2);
  // Not a |x| task: no baseline.
  j["task"]["target"] = "x";
  CHECK(std::isnan(abs_without_superposition(Model(parse_config(j.dump(), "(test)", {})))));
  // Not a model of neurons: no baseline and no neurons, whatever the task.
  j["task"]["target"] = "abs";
  j["model"] = {{"kind", "toy_superposition"}, {"d_hidden", 2}};
  const Model toy(parse_config(j.dump(), "(test)", {}));
  CHECK(std::isnan(abs_without_superposition(toy)));
  CHECK(toy_neurons(toy).neurons.empty());
}

TEST_CASE("the asymmetric superposition motif: found where a neuron inhibits the interference, not elsewhere",
          "[superposition]") {
  // Elhage et al.'s motif built by hand on two features: neuron 0 reads x0 with +2 and x1 with
  // -1/2 and writes output 0 with 1/2 and output 1 with 2 (so |x0| for x0 > 0 and |x1| for x1 < 0);
  // alone, x0 = 1 would write 4 to output 1: neuron 1 (reads +x0) writes -4 there to cancel it.
  // Neurons 2 and 3 compute the other sides (-x0, +x1) monosemantically.
  auto j = config_to_json(test::tiny_config());
  j["task"] = {{"kind", "sparse_features"}, {"n_features", 2}, {"sparsity", 0.9}, {"values", "signed"}, {"target", "abs"}};
  j["model"] = {{"kind", "toy_mlp"}, {"d_hidden", 4}};
  j["train"]["batch_size"] = 64;
  Model m(parse_config(j.dump(), "(test)", {}));
  auto build = [&](float primary, float second, float inhibit) {
    torch::NoGradGuard no_grad;
    auto W_in = m.param("W_in"), W_out = m.param("W_out");
    m.param("b_in").zero_(), m.param("b_out").zero_(), W_in.zero_(), W_out.zero_();
    W_in[0][0] = primary, W_in[1][0] = second, W_out[0][0] = 1 / primary, W_out[0][1] = -1 / second;
    W_in[0][1] = 1, W_out[1][1] = inhibit;
    W_in[0][2] = -1, W_out[2][0] = 1;
    W_in[1][3] = 1, W_out[3][1] = 1;
  };
  build(2, -0.5f, -4);
  // The model computes |x| on each unit input, but for the small interference the motif leaves of
  // the secondary on the primary (1/4 on output 0 for x1 = -1).
  const auto units = torch::tensor({{1.f, 0.f}, {-1.f, 0.f}, {0.f, 1.f}, {0.f, -1.f}});
  CHECK(torch::allclose(m.forward(units.unsqueeze(0)).squeeze(0), units.abs() + torch::tensor({{0.f, 0.f}, {0.f, 0.f}, {0.f, 0.f}, {0.25f, 0.f}})));
  ToyNeuronReport r = toy_neurons(m);
  CHECK(r.asymmetric == 1);
  CHECK(r.neurons[0].asymmetric);
  CHECK(r.neurons[0].feature == 0);
  CHECK(r.neurons[0].second == 1);
  CHECK(r.neurons[0].ratio == Approx(4));
  CHECK(r.neurons[0].inhibitor == 1);
  // Without the inhibition the interference stands: no motif.
  build(2, -0.5f, 0);
  CHECK(toy_neurons(m).asymmetric == 0);
  // Symmetric superposition (weights +-1): no motif, whatever inhibits.
  build(1, -1, -1);
  r = toy_neurons(m);
  CHECK(r.asymmetric == 0);
  CHECK(r.neurons[0].ratio == Approx(1));
  // Both of the same sign: no feature of the other sign to carry.
  build(2, 0.5f, -4);
  CHECK(toy_neurons(m).neurons[0].second == -1);
}

TEST_CASE("the two-feature optimum: the paper's three regions at their corners", "[superposition]") {
  CHECK(two_feature_optimum(0.1, 1.0) == "not represented");       // dense, feature 2 unimportant
  CHECK(two_feature_optimum(10.0, 1.0) == "dedicated dimension");  // dense, feature 2 more important
  CHECK(two_feature_optimum(1.0, 0.02) == "antipodal superposition");  // very sparse, equal importance
}

namespace {
SuperpositionReport trained_superposition(const std::string& file) {
  Config cfg = load_config(test::source_dir() + "/configs/superposition/" + file);
  cfg.train.threads = 1, cfg.train.device = "cpu";
  const std::string dir = test::prepare_run(cfg, file);
  train(cfg, dir, false, true);
  return analyse_superposition(model_from_checkpoint(load_checkpoint(resolve_checkpoint(dir))));
}
}  // namespace

TEST_CASE("configs/superposition/pentagon.json: five sparse features in two dimensions as a pentagon", "[superposition-train]") {
  const auto r = trained_superposition("pentagon.json");
  INFO("D* " << r.dims_per_feature);
  CHECK(r.represented == 5);
  for (auto& f : r.features) CHECK(f.dimensionality == Approx(0.4).margin(0.05));
  REQUIRE(!r.groups.empty());
  CHECK(r.groups[0].name == "pentagon");  // the analysis says what the fractions imply
}

TEST_CASE("configs/superposition/sticky-half.json: twenty equal features in five dimensions stick at D* = 1/2",
          "[superposition-train]") {
  // Elhage et al.'s "sticky" 1/2: antipodal pairs, as many features represented as twice the
  // dimensions, each of dimensionality 1/2, the others dropped.
  const auto r = trained_superposition("sticky-half.json");
  INFO("D* " << r.dims_per_feature << ", represented " << r.represented);
  CHECK(r.dims_per_feature == Approx(0.5).margin(0.03));
  CHECK(r.represented == 10);
  for (auto& f : r.features)
    if (f.norm >= 0.5) CHECK(f.dimensionality == Approx(0.5).margin(0.05));
  INFO(geometry_text(r.groups));
  CHECK(r.groups.size() == 5);
  for (auto& g : r.groups) CHECK(g.name == "digon");
}

TEST_CASE("configs/superposition/*-pairs.json: correlated pairs orthogonal, anticorrelated pairs antipodal",
          "[superposition-train]") {
  // Elhage et al.'s "Superposition and correlated features" at S = 0.9, four features in two
  // dimensions: correlated pairs as local orthogonal bases, the two bases antipodal to each other;
  // anticorrelated pairs antipodal, the pairs orthogonal. An untrained model shows neither.
  auto run = [](const std::string& file) {
    Config cfg = load_config(test::source_dir() + "/configs/superposition/" + file);
    cfg.train.threads = 1, cfg.train.device = "cpu";
    const std::string dir = test::prepare_run(cfg, file);
    train(cfg, dir, false, true);
    const Model m = model_from_checkpoint(load_checkpoint(resolve_checkpoint(dir)));
    return std::make_pair(set_geometry(m), set_geometry(Model(cfg), false));
  };
  const auto [corr, corr0] = run("correlated-pairs.json");
  INFO("correlated: within " << corr.within_cos << " over " << corr.within_pairs << ", across " << corr.across_cos);
  CHECK(corr.sets == "correlated");
  CHECK(corr.within_pairs == 2);
  CHECK(corr.within_abs_cos < 0.1);
  CHECK(corr.across_cos < -0.4);
  const auto [anti, anti0] = run("anticorrelated-pairs.json");
  INFO("anticorrelated: within " << anti.within_cos << ", across " << anti.across_abs_cos << "; untrained "
                                 << anti0.within_cos);
  CHECK(anti.within_pairs == 2);
  CHECK(anti.within_cos < -0.99);
  CHECK(anti.across_abs_cos < 0.05);
  CHECK(anti0.across_pairs == 4);
  CHECK(anti0.across_abs_cos > 0.1);  // random directions in two dimensions: mean |cos| 2/pi in expectation
}

TEST_CASE("configs/superposition/abs.json: |x| computed in superposition when sparse, a neuron of each sign when dense",
          "[superposition-train]") {
  // Elhage et al.'s computation in superposition: 8 signed features, 4 ReLU neurons, S = 0.95:
  // its neurons polysemantic and its loss below the best a model without superposition reaches
  // (0.069 against 0.096 on an Intel Xeon). Dense, with a neuron for each sign of 4 features, it
  // computes each feature with a monosemantic neuron of each sign.
  auto run = [](Config cfg, const std::string& name) {
    cfg.train.threads = 1, cfg.train.device = "cpu";
    const std::string dir = test::prepare_run(cfg, name);
    train(cfg, dir, false, true);
    const Model m = model_from_checkpoint(load_checkpoint(resolve_checkpoint(dir)));
    return std::make_pair(toy_neurons(m), read_metrics(dir + "/metrics.csv").back().test_loss);
  };
  const Config sparse = load_config(test::source_dir() + "/configs/superposition/abs.json");
  const auto [r, loss] = run(sparse, "abs-sparse");
  INFO("sparse: " << r.monosemantic << " monosemantic, " << r.polysemantic << " polysemantic; loss " << loss
                  << " against " << abs_without_superposition(Model(sparse)));
  CHECK(r.polysemantic >= 2);
  CHECK(r.asymmetric >= 1);  // Elhage et al.'s motif: 2 neurons here (none untrained, none dense)
  CHECK(loss < 0.85 * abs_without_superposition(Model(sparse)));
  Config dense = sparse;
  dense.task.set("n_features", 4).set("sparsity", 0.0);
  dense.model.set("d_hidden", 8);
  const auto [d, dense_loss] = run(dense, "abs-dense");
  INFO("dense: " << d.monosemantic << " monosemantic, both signs for " << d.both_signs << "; loss " << dense_loss);
  CHECK(d.monosemantic == 8);
  CHECK(d.both_signs == 4);
  CHECK(d.asymmetric == 0);
  CHECK(dense_loss < 1e-3);
}

namespace {
// A toy model of n features in m dimensions, one replica per sparsity (seeds 7, 8, ...), its
// output bias drawn so that the ReLU switches some outputs off, and the batch its task draws.
struct ToyPack {
  Config cfg;
  std::vector<TaskConfig> tasks;
  std::unique_ptr<Model> model;
  Batch batch;
};
// n features in m dimensions: 12 -> 3 takes the fused step's loop by hand (n m <= 256), 40 -> 8 its
// matrix products.
ToyPack toy_pack(const std::string& activation, const std::vector<double>& sparsities, int64_t n = 12, int64_t m = 3) {
  ToyPack p;
  p.cfg = toy(n, m, sparsities[0]);
  p.cfg.model.set("activation", activation);
  std::vector<int64_t> seeds;
  for (size_t s = 0; s < sparsities.size(); ++s) {
    seeds.push_back(int64_t(7 + s));
    TaskConfig t = p.cfg.task;
    t.set("sparsity", sparsities[s]);
    p.tasks.push_back(t);
  }
  p.model = std::make_unique<Model>(p.cfg, seeds);
  {
    torch::NoGradGuard no_grad;
    torch::manual_seed(3);
    p.model->param("b_final").normal_(0, 0.3);
  }
  p.batch = make_task(p.tasks)->train_batch(2, 200);
  return p;
}
// One training step's loss and flat gradient (forward_backward: on the fast path the toy model's
// own backward and the fused reconstruction loss).
std::pair<double, torch::Tensor> step_grad(Model& m, const Batch& b, bool fast) {
  auto loss = forward_backward(m, b, fast);
  return {loss.item<double>(), m.flat_grad().clone()};
}
// Every parameter's gradient, fast against generic, relative to its largest element.
void check_grads(const Model& m, const torch::Tensor& fast, const torch::Tensor& plain, const std::string& where) {
  int64_t off = 0;
  for (auto& [name, t] : m.named_parameters()) {
    CHECK(test::max_rel_diff(fast.narrow(0, off, t.numel()), plain.narrow(0, off, t.numel()), where + "grad " + name) <= 1e-5);
    off += t.numel();
  }
}
}  // namespace

TEST_CASE("the toy model's fast path computes the generic path's outputs, loss and gradients", "[superposition][model]") {
  for (const auto level : simd_levels())
  for (const char* activation : {"relu", "linear"}) {
    const std::string act = activation;
    for (const auto& [sparsities, n, d] : std::vector<std::tuple<std::vector<double>, int64_t, int64_t>>{
             {{0.6}, 12, 3}, {{0.0, 0.6, 0.9}, 12, 3}, {{0.0, 0.6, 0.9}, 40, 8}}) {
      test::ScopedSimd simd(level);
      auto p = toy_pack(act, sparsities, n, d);
      Model& m = *p.model;
      REQUIRE(m.has_fast_path());
      const std::string where = act + " S=" + std::to_string(sparsities.size()) + " n=" + std::to_string(n) +
                                " kernels " + simd_name(level) + " fast vs generic ";
      INFO(where);
      {
        torch::NoGradGuard no_grad;
        CHECK(test::max_rel_diff(m.outputs(p.batch.x, true), m.outputs(p.batch.x, false), where + "outputs") <= 1e-5);
      }
      // The training step: the model's backward from the fused loss's gradient.
      auto [l_plain, g_plain] = step_grad(m, p.batch, false);
      auto [l_fast, g_fast] = step_grad(m, p.batch, true);
      CHECK(test::max_rel_diff(torch::tensor(l_fast), torch::tensor(l_plain), where + "loss") <= 1e-5);
      check_grads(m, g_fast, g_plain, where);
      // The model's backward alone, from another loss's gradient, through to inputs that want one.
      torch::manual_seed(4);
      const auto r = torch::randn(p.batch.x.sizes());
      auto other = [&](bool fast) {
        m.flat_grad().zero_();
        auto x = p.batch.x.clone().requires_grad_(true);
        (m.outputs(x, fast) * r).sum().backward();
        return std::make_pair(m.flat_grad().clone(), x.grad());
      };
      auto [gp, xp] = other(false);
      auto [gf, xf] = other(true);
      check_grads(m, gf, gp, where + "(another loss) ");
      CHECK(test::max_rel_diff(xf, xp, where + "grad x") <= 1e-5);
      // The fused step's backward scales its gradients by the incoming one.
      m.flat_grad().zero_();
      auto fused = m.arch().fused_loss(m, p.batch, LossSpec{});
      REQUIRE(fused.defined());
      (3 * fused).backward();
      check_grads(m, m.flat_grad().clone(), 3 * g_plain, where + "(3 x the fused loss) ");
      // Where it cannot fuse (float64 inputs here), it says so and the step takes the generic loss.
      Batch doubled = p.batch;
      doubled.x = doubled.y = p.batch.x.to(torch::kFloat64);
      CHECK_FALSE(m.arch().fused_loss(m, doubled, LossSpec{}).defined());
    }
  }
}

TEST_CASE("the toy model's fast step: each replica's gradient is what it computes alone, bit for bit", "[superposition]") {
  for (const auto level : simd_levels())
  for (const auto& [act, n, m] : std::vector<std::tuple<std::string, int64_t, int64_t>>{
           {"relu", 12, 3}, {"linear", 12, 3}, {"relu", 40, 8}, {"linear", 40, 8}}) {
    test::ScopedSimd simd(level);
    INFO(act << " " << n << " -> " << m << ", kernels " << simd_name(level));
    auto p = toy_pack(act, {0.0, 0.6, 0.9}, n, m);
    forward_backward(*p.model, p.batch, true);
    for (int64_t s = 0; s < 3; ++s) {
      INFO("replica " << s);
      Model one = p.model->replica(s);
      forward_backward(one, make_task(p.tasks[size_t(s)])->train_batch(2, 200), true);
      CHECK(torch::equal(one.flat_grad(), p.model->replica_part(p.model->flat_grad(), s)));
    }
  }
}

TEST_CASE("the toy model's fast step and evaluation on two and three threads: the bits of one, alone or packed", "[superposition]") {
  // Enough work to share (replicas x examples x weights >= 2^20): by hand (12 -> 3) and by products (40 -> 8).
  for (const auto& [act, n, m, S] : std::vector<std::tuple<std::string, int64_t, int64_t, int>>{
           {"relu", 12, 3, 30}, {"linear", 40, 8, 5}}) {
    INFO(act << " " << n << " -> " << m << ", " << S << " side by side");
    auto p = toy_pack(act, std::vector<double>(size_t(S), 0.5), n, m);
    p.batch = make_task(p.tasks)->train_batch(2, 1024);
    auto step = [&](int threads) {
      test::ScopedShards shards(threads);
      double loss = 0;
      torch::Tensor eval;
      auto work = [&](int) {
        loss = forward_backward(*p.model, p.batch, true).item<double>();
        eval = model_measures(*p.model, p.batch, true).loss;
      };
      if (threads == 1) run_sharded(1, work);  // one thread, BLAS included
      else work(0);
      return std::make_tuple(loss, p.model->flat_grad().clone(), eval);
    };
    const auto [loss1, grad1, eval1] = step(1);
    for (int threads : {2, 3}) {
      INFO(threads << " threads");
      const auto [loss, grad, eval] = step(threads);
      CHECK(loss == loss1);
      CHECK(torch::equal(grad, grad1));
      CHECK(torch::equal(eval, eval1));
    }
    // Alone on two threads, the first replica gets the gradient it gets packed.
    Model one = p.model->replica(0);
    test::ScopedShards shards(2);
    forward_backward(one, make_task(p.tasks[0])->train_batch(2, 1024), true);
    CHECK(torch::equal(one.flat_grad(), p.model->replica_part(grad1, 0)));
  }
}

TEST_CASE("a sparsity sweep packs: runs of different sparsity side by side write what each writes alone",
          "[superposition]") {
  std::vector<Config> cfgs;
  std::vector<std::string> dirs;
  const std::string parent = test::temp_dir("toy-pack");
  for (double sparsity : {0.0, 0.7, 0.95}) {
    Config c = toy(5, 2, sparsity);
    c.train.epochs = 60;
    c.output.dir = parent + "/s" + std::to_string(int(sparsity * 100));
    make_dirs(c.output.dir + "/checkpoints");
    cfgs.push_back(c);
    dirs.push_back(c.output.dir);
  }
  REQUIRE(pack_key(cfgs[0]) == pack_key(cfgs[2]));  // sparsity is a key runs of a pack may differ in
  REQUIRE(train_packed(cfgs, dirs, false, true).size() == 3);
  for (size_t i = 0; i < cfgs.size(); ++i) {
    INFO("sparsity " << cfgs[i].task.real("sparsity"));
    const std::string alone = test::prepare_run(cfgs[i], "toy-alone");
    train(cfgs[i], alone, false, true);
    CHECK(test::metric_lines_without_time(dirs[i] + "/metrics.csv") ==
          test::metric_lines_without_time(alone + "/metrics.csv"));
    // Each run's checkpoint records its own task (its sparsity), not the pack's first.
    CHECK(load_checkpoint(resume_path(dirs[i])).config.task.real("sparsity") == cfgs[i].task.real("sparsity"));
  }
}
