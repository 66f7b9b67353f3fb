// The analysis registry's contract, driven by the registries themselves: for every task kind x
// model kind that validates (a new kind is in it without editing this file), a short run is
// analysed by every analysis that applies, each writes exactly the files it declares, the others
// refuse it in one line naming what does apply, `analyse` finds nothing stale afterwards, and
// clearing the run directory leaves none of the files. Plus the table's own consistency.
#include <dirent.h>

#include <cstdlib>
#include <fstream>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>

#include "catch.hpp"
#include "grokking/analyses.hpp"
#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/heads.hpp"
#include "grokking/model.hpp"
#include "grokking/patching.hpp"
#include "grokking/task.hpp"
#include "grokking/kinds.hpp"
#include "grokking/plot.hpp"
#include "grokking/rundir.hpp"
#include "grokking/train.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {

// Small settings of each kind's own keys (a kind not listed trains with its defaults).
nlohmann::json small_task(const std::string& kind) {
  if (kind == "modular") return {{"p", 11}, {"frac_train", 0.5}};
  if (kind == "group") return {{"group", "D5"}, {"frac_train", 0.6}};
  if (kind == "repeat") return {{"vocab", 8}, {"context", 12}, {"repeat_min", 3}, {"repeat_max", 6}, {"eval_sequences", 16}};
  if (kind == "sparse_features") return {{"n_features", 5}, {"sparsity", 0.5}, {"eval_examples", 200}};
  return nlohmann::json::object();
}
nlohmann::json small_model(const std::string& kind) {
  if (kind == "transformer") return {{"d_model", 16}, {"n_heads", 2}, {"d_head", 8}, {"d_mlp", 32}, {"n_layers", 2}};
  if (kind == "mlp") return {{"d_embed", 8}, {"hidden", {16}}};
  if (kind == "toy_superposition") return {{"d_hidden", 2}};
  return nlohmann::json::object();
}

// The config of a task kind with a model kind, or nullopt where they do not go together.
std::optional<Config> pair_config(const TaskKind& task, const ModelKind& model) {
  nlohmann::json j = {{"task", small_task(task.name)},
                      {"model", small_model(model.name)},
                      {"train", {{"epochs", 20}, {"eval_every", 10}, {"checkpoint_every", 10}, {"threads", 1},
                                 {"device", "cpu"}, {"batch_size", 16}}}};
  j["task"]["kind"] = task.name;
  j["model"]["kind"] = model.name;
  try {
    Config c = parse_config(j.dump(), "(test)", {});
    // A fixed split trains on the full batch (what side-by-side training keeps exact); fresh
    // batches need a size.
    if (!task_shape(c.task).fresh_batches) c.train.batch_size = 0;
    return c;
  } catch (const UsageError&) {
    return std::nullopt;
  }
}

std::set<std::string> entries_of(const std::string& dir) {
  std::set<std::string> out;
  if (DIR* h = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(h)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") out.insert(n);
    }
    ::closedir(h);
  }
  return out;
}

}  // namespace

TEST_CASE("the analysis table is consistent: unique names, drawable figures, files --force knows", "[registry]") {
  std::set<std::string> names, files;
  const auto figures = run_figure_names();
  const auto& entries = run_dir_entries();
  for (auto* k : analysis_kinds()) {
    INFO(k->name);
    CHECK(names.insert(k->name).second);
    CHECK(k->run != nullptr);
    CHECK(!k->doc.empty());
    CHECK(!k->source.empty());
    CHECK((!k->needs.empty() || !k->needs_any.empty()));
    for (auto& f : k->files) {
      INFO(f.name);
      CHECK(files.insert(f.name).second);  // no file written by two analyses
      CHECK(std::count(entries.begin(), entries.end(), f.name) == 1);
    }
    for (auto& fig : k->figures) {
      INFO(fig);
      CHECK(std::count(figures.begin(), figures.end(), fig) == 1);
    }
    for (auto& [heading, file] : k->report) {
      INFO(file);
      CHECK(std::any_of(k->files.begin(), k->files.end(), [&](auto& f) { return f.name == file; }));
    }
  }
  CHECK(find_analysis("heads").name == "heads");
  CHECK_THROWS_AS(find_analysis("nope"), UsageError);
}

TEST_CASE("every task x model pair: each analysis that applies writes exactly its files; the rest refuse",
          "[registry]") {
  int pairs = 0;
  std::set<std::string> analyses_run;
  for (auto* task : task_kinds())
    for (auto* model : model_kinds()) {
      const auto cfg = pair_config(*task, *model);
      if (!cfg) continue;
      ++pairs;
      INFO("task " << task->name << ", model " << model->name);
      const std::string dir = test::prepare_run(*cfg, "registry-" + task->name + "-" + model->name);
      train(*cfg, dir, false, true);
      const Capabilities caps = capabilities_of(*cfg);
      const auto applicable = analyses_for(*cfg);
      CHECK(!applicable.empty());  // every pair that trains has at least one analysis
      for (auto* k : analysis_kinds()) {
        INFO("analysis " << k->name);
        AnalysisOptions o;
        o.path = dir;
        o.quiet = true;
        o.draws = 1;
        if (!k->applies(caps)) {
          try {
            k->run(o);
            FAIL("it ran on a run it does not apply to");
          } catch (const UsageError& e) {
            const std::string msg = e.what();
            CHECK(msg.find(k->name + " needs ") != std::string::npos);
            CHECK(msg.find("it is read by " + analysis_names(applicable)) != std::string::npos);
            CHECK(msg.find('\n') == std::string::npos);
          }
          continue;
        }
        const auto before = entries_of(dir);
        REQUIRE(k->run(o) == 0);
        std::set<std::string> written;
        for (auto& e : entries_of(dir))
          if (!before.count(e)) written.insert(e);
        const auto declared = k->files_for(caps);
        CHECK(written == std::set<std::string>(declared.begin(), declared.end()));
        analyses_run.insert(k->name);
      }
      // Up to date now; a newer checkpoint makes them stale again.
      CHECK(stale_analyses(dir, *cfg).empty());
      // --force's list holds every one of them.
      clear_run_dir(dir);
      for (auto* k : applicable)
        for (auto& f : k->files_for(caps)) CHECK_FALSE(exists(dir + "/" + f));
      CHECK(stale_analyses(dir, *cfg).size() == applicable.size());
    }
  CHECK(pairs >= 6);
  // Every registered analysis ran on some pair.
  CHECK(analyses_run.size() == analysis_kinds().size());
}

TEST_CASE("every task x model pair: side by side = alone, resumed bit for bit, keys documented, loads in Python",
          "[registry]") {
  const char* py = std::getenv("GROKKING_PYTHON") ? std::getenv("GROKKING_PYTHON") : "/usr/bin/python3";
  const auto docs = config_docs();
  auto documented = [&](const std::string& key) {
    return std::any_of(docs.begin(), docs.end(), [&](const KeyDoc& d) { return d.key == key; });
  };
  int pairs = 0;
  for (auto* task : task_kinds())
    for (auto* model : model_kinds()) {
      auto cfg = pair_config(*task, *model);
      if (!cfg) continue;
      ++pairs;
      INFO("task " << task->name << ", model " << model->name);
      // config --doc lists every key of both kinds.
      for (auto& k : task->keys) CHECK(documented("task." + k.key));
      for (auto& k : model->keys) CHECK(documented("model." + k.key));
      // Two seeds side by side: each as it trains alone.
      const std::vector<int64_t> seeds = {3, 4};
      const std::string parent = test::temp_dir("contract-seeds-" + task->name + "-" + model->name);
      std::vector<std::string> dirs;
      for (auto sd : seeds) dirs.push_back(parent + "/seed=" + std::to_string(sd)), make_dirs(dirs.back() + "/checkpoints");
      train_replicas(*cfg, seeds, dirs, false, true);
      for (size_t i = 0; i < seeds.size(); ++i) {
        auto one = *cfg;
        one.train.seed = seeds[i];
        const std::string alone = test::prepare_run(one, "contract-alone");
        train(one, alone, false, true);
        const auto d = test::metrics_max_diff(read_metrics(dirs[i] + "/metrics.csv"), read_metrics(alone + "/metrics.csv"),
                                              task->name + " x " + model->name + " side by side vs alone");
        CHECK(d.loss <= 1e-4);
        CHECK(d.sum_sq_weights <= 1e-5);
      }
      // Stopped at half-way and resumed: the uninterrupted run's rows.
      const std::string whole = test::prepare_run(*cfg, "contract-whole");
      train(*cfg, whole, false, true);
      auto half = *cfg;
      half.train.epochs = cfg->train.epochs / 2;
      const std::string split = test::prepare_run(half, "contract-split");
      train(half, split, false, true);
      train(load_run_config(split, {"train.epochs=" + std::to_string(cfg->train.epochs)}), split, true, true);
      CHECK(test::metric_lines_without_time(whole + "/metrics.csv") == test::metric_lines_without_time(split + "/metrics.csv"));
      // The last checkpoint loads in Python, with the kind's parameter names.
      const std::string ck = list_checkpoints(whole).back().second;
      std::ofstream(whole + "/load.py") << "import sys, torch\n"
                                           "kw = {'weights_only': False} if 'weights_only' in torch.load.__code__.co_varnames else {}\n"
                                           "ck = torch.load(sys.argv[1], map_location='cpu', **kw)\n"
                                           "print(' '.join(ck['model'].keys()))\n";
      const std::string cmd = std::string(py) + " " + whole + "/load.py " + ck + " > " + whole + "/names.txt 2>&1";
      REQUIRE(std::system(cmd.c_str()) == 0);
      std::string want;
      const Model fresh(*cfg);
      for (auto& [name, t] : fresh.named_parameters()) want += (want.empty() ? "" : " ") + name;
      CHECK(read_file(whole + "/names.txt") == want + "\n");
    }
  CHECK(pairs >= 6);
}

TEST_CASE("capabilities come from the kinds, not from their names", "[registry]") {
  auto caps = [](const std::vector<std::string>& sets) {
    return capabilities_of(parse_config("{}", "(test)", sets));
  };
  const auto modular = caps({"task.p=11"});
  CHECK(modular.has(Capability::pairs));
  CHECK(modular.has(Capability::cycle));
  CHECK(modular.has(Capability::heads));
  CHECK(modular.has(Capability::pair_readout));
  CHECK(modular.has(Capability::neurons));
  CHECK_FALSE(modular.has(Capability::group));
  // Multiplication has a cycle only over a prime modulus; attention-only models have no neurons.
  CHECK_FALSE(caps({"task.p=12", "task.operation=mul"}).has(Capability::cycle));
  CHECK(caps({"task.p=11", "task.operation=mul"}).has(Capability::cycle));
  CHECK_FALSE(caps({"task.p=11", "model.attn_only=true"}).has(Capability::neurons));
  // A cyclic group is a group and a cycle; a dihedral group only a group.
  CHECK(caps({"task.kind=group", "task.group=C6"}).has(Capability::cycle));
  CHECK_FALSE(caps({"task.kind=group", "task.group=D4"}).has(Capability::cycle));
  CHECK(caps({"task.kind=group", "task.group=D4"}).names() == "pairs, group, heads, pair_readout, neurons");
}

namespace {
Config kind_config(const std::vector<std::string>& sets) {
  return parse_config(R"({"task": {"kind": "repeat", "vocab": 8, "context": 12, "repeat_min": 3, "repeat_max": 6,
    "eval_sequences": 8}, "model": {"d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32, "n_layers": 2},
    "train": {"batch_size": 8, "threads": 1}})",
                      "(test)", sets);
}
}  // namespace

TEST_CASE("run_with_cache names the transformer's activations as TransformerLens does, and changes nothing",
          "[registry]") {
  torch::NoGradGuard no_grad;
  for (auto ln : {"none", "pre", "post"}) {
    INFO("layer_norm " << ln);
    Model m(kind_config({std::string("model.layer_norm=") + ln, "model.train_biases=true"}));
    const auto x = make_task(m.config().task)->eval_batch().x;  // [N, T]
    const int64_t N = x.size(0), T = x.size(1);
    // Only the activations that keep the forward's order of sums: the outputs are the forward's, bit for bit.
    ActivationCache some({"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_z", "blocks.1.hook_resid_post"});
    CHECK(torch::equal(m.run_with_cache(x, some), m.forward(x)));
    CHECK(some.names().size() == 3);
    // Everything: names in forward order, TransformerLens's shapes, outputs within rounding.
    ActivationCache all;
    const auto out = m.run_with_cache(x, all);
    CHECK(test::max_rel_diff(out, m.forward(x), "run_with_cache vs forward") <= 1e-6);
    const auto names = all.names();
    REQUIRE(names.size() == 2 + 2 * 12);  // per block: resid_pre, q, k, v, pattern, z, attn_out, resid_mid, mlp pre and post, mlp_out, resid_post
    CHECK(names[0] == "hook_embed");
    CHECK(names[2] == "blocks.0.hook_resid_pre");
    CHECK(names.back() == "blocks.1.hook_resid_post");
    CHECK(all["blocks.1.attn.hook_pattern"].sizes() == torch::IntArrayRef({N, 2, T, T}));
    CHECK(all["blocks.0.attn.hook_z"].sizes() == torch::IntArrayRef({N, T, 2, 8}));
    CHECK(all["blocks.0.mlp.hook_post"].sizes() == torch::IntArrayRef({N, T, 32}));
    CHECK(all["blocks.1.hook_resid_mid"].sizes() == torch::IntArrayRef({N, T, 16}));
    // They fit together: z = pattern v per head; one block's output is the next one's input.
    const auto z = torch::einsum("nhqk,nkhd->nqhd", {all["blocks.0.attn.hook_pattern"], all["blocks.0.attn.hook_v"]});
    CHECK(test::max_rel_diff(z, all["blocks.0.attn.hook_z"], "pattern v = z") <= 1e-5);
    CHECK(torch::equal(all["blocks.0.hook_resid_post"], all["blocks.1.hook_resid_pre"]));
    // Causal: no query attends to a later key.
    CHECK(all["blocks.0.attn.hook_pattern"].triu(1).abs().max().item<double>() == 0);
  }
}

TEST_CASE("a hook's replacement is what the forward goes on with", "[registry]") {
  torch::NoGradGuard no_grad;
  Model m(kind_config({"model.train_biases=true"}));
  const auto x = make_task(m.config().task)->eval_batch().x;
  struct Zero : ActivationHooks {
    std::string name;
    bool wants(const std::string& n) const override { return n == name; }
    torch::Tensor at(const std::string&, const torch::Tensor& a) override { return torch::zeros_like(a); }
  } zero;
  // The last residual stream zeroed: every logit is the unembedding's bias.
  zero.name = "blocks.1.hook_resid_post";
  const auto out = m.run_with_hooks(x, zero);  // [N, T, V]
  CHECK(torch::equal(out, m.param("unembed.b_U").expand_as(out)));
  // A head's output zeroed through its hook_z: what the head ablation of `heads` computes.
  const auto ablated = forward_head_ablated(m, x, 1, 0, false);
  CHECK_FALSE(torch::equal(ablated, m.forward(x)));
  struct ZeroHead : ActivationHooks {
    bool wants(const std::string& n) const override { return n == "blocks.1.attn.hook_z"; }
    torch::Tensor at(const std::string&, const torch::Tensor& z) override {
      auto o = z.clone();
      o.select(2, 0).zero_();
      return o;
    }
  } zero_head;
  CHECK(torch::equal(m.run_with_hooks(x, zero_head), ablated));
}

TEST_CASE("the MLP and the toy model name their hidden layers", "[registry]") {
  torch::NoGradGuard no_grad;
  Model mlp(parse_config(R"({"task": {"p": 11}, "model": {"kind": "mlp", "d_embed": 8, "hidden": [16, 12]}})", "(test)", {}));
  const auto pairs = make_dataset(mlp.config().task).all_x;
  ActivationCache c;
  CHECK(torch::equal(mlp.run_with_cache(pairs, c), mlp.forward(pairs)));
  CHECK(c.names() == std::vector<std::string>{"hook_embed", "hidden.0.hook_pre", "hidden.0.hook_post", "hidden.1.hook_pre",
                                              "hidden.1.hook_post"});
  CHECK(c["hidden.1.hook_post"].sizes() == torch::IntArrayRef({121, 12}));
  CHECK(c["hidden.0.hook_post"].min().item<double>() >= 0);  // after the ReLU
  Model toy(parse_config(R"({"task": {"kind": "sparse_features", "n_features": 5, "eval_examples": 50},
                             "model": {"kind": "toy_superposition", "d_hidden": 2}, "train": {"batch_size": 8}})", "(test)", {}));
  const auto xs = make_task(toy.config().task)->eval_batch().x;  // [1, N, F]
  ActivationCache t;
  toy.run_with_cache(xs, t);
  CHECK(t.names() == std::vector<std::string>{"hook_hidden", "hook_out"});
  CHECK(test::max_rel_diff(t["hook_hidden"], xs.squeeze(0).mm(toy.param("W")), "h = x W") <= 1e-6);
}

TEST_CASE("patching every model kind: an MLP's operands and hidden layer, a toy model's hidden units", "[registry]") {
  torch::NoGradGuard no_grad;
  // An MLP on pairs, either encoding: the corrupted pairs differ in a, so a's embedding restores
  // the clean run whole and b's nothing; one hidden layer: restoring it whole gives the clean
  // logits back.
  for (const char* encoding : {"embed", "one_hot"}) {
    INFO(encoding);
    Model mlp(parse_config(std::string(R"({"task": {"p": 11}, "model": {"kind": "mlp", "encoding": ")") + encoding +
                               R"(", "hidden": [24]}})",
                           "(test)", {}));
    const auto sets = make_task(mlp.config().task)->patch_sets(4);
    const auto r = patch(mlp, sets);
    auto site = [&](const std::string& name, int64_t k) {
      for (auto& x : r.sites)
        if (x.activation == name && x.index == k) return x;
      FAIL("no site " << name << " " << k);
      return PatchReport::Site{};
    };
    CHECK(site("hook_embed", 0).axis == "operand");
    CHECK(std::abs(site("hook_embed", 0).recovered - 1) <= 1e-5);
    CHECK(std::abs(site("hook_embed", 1).recovered) <= 1e-5);
    CHECK(site("hidden.0.hook_post", 0).axis == "all");
    CHECK(std::abs(site("hidden.0.hook_post", 0).recovered - 1) <= 1e-5);
    CHECK(r.paths.empty());
    CHECK(r.resid.empty());
    // The frequencies' directions of each operand's embedding (W_x and W_y, or the one-hot rows).
    CHECK(std::abs(patch_frequencies(mlp, sets, {1, 2, 3, 4, 5}) - 1) <= 1e-4);
  }
  // A toy model: a feature on against off, scored by that feature's output. With one hidden
  // unit, restoring it is the whole clean run.
  Model toy(parse_config(R"({"task": {"kind": "sparse_features", "n_features": 5, "eval_examples": 60},
                             "model": {"kind": "toy_superposition", "d_hidden": 1}, "train": {"batch_size": 8}})",
                         "(test)", {}));
  const auto ts = make_task(toy.config().task)->patch_sets(0);
  const auto diff = (ts.clean - ts.corrupted).ne(0);
  CHECK(diff.sum(1).eq(1).all().item<bool>());  // each example differs in its one feature (1 against 0)
  for (int64_t i = 0; i < 60; ++i) CHECK(ts.clean[i][i % 5].item<float>() == 1.0f);
  const auto tr = patch(toy, ts);
  REQUIRE(tr.sites.size() == 1);
  CHECK(tr.sites[0].activation == "hook_hidden");
  CHECK(std::abs(tr.sites[0].recovered - 1) <= 1e-5);
  CHECK(tr.clean != tr.corrupted);
}

TEST_CASE("patching: untouched positions restore nothing, a head's direct path is its output in one layer", "[registry]") {
  torch::NoGradGuard no_grad;
  // A pair task's corrupted pairs change a and keep b, with another answer.
  Model pair(parse_config(R"({"task": {"p": 11}, "model": {"d_model": 16, "n_heads": 2, "d_head": 8, "d_mlp": 32}})", "(test)", {}));
  const auto ps = make_task(pair.config().task)->patch_sets(1);
  CHECK(torch::equal(ps.clean.select(1, 1), ps.corrupted.select(1, 1)));
  CHECK(ps.clean.select(1, 0).ne(ps.corrupted.select(1, 0)).all().item<bool>());
  CHECK(ps.clean.size(0) >= 100);
  const auto pr = patch(pair, ps);
  CHECK(pr.paths.size() == 2);  // one layer: only the direct paths
  // The inputs differ at a's position only: restoring it there gives the clean run back whole;
  // b's and "="'s positions restore nothing.
  REQUIRE(pr.resid.size() == 1);
  CHECK(std::abs(pr.resid[0][0] - 1) <= 1e-5);
  CHECK(pr.resid[0][1] == 0);
  CHECK(pr.resid[0][2] == 0);
  // One attention-only layer without LayerNorm: the logits are the embeddings' and each head's
  // output unembedded, and the metric (a logit difference) is linear in them, so the share a
  // head's output restores and the share its direct path to the logits carries are the same.
  Model attn(parse_config(R"({"task": {"p": 11}, "model": {"d_model": 16, "n_heads": 2, "d_head": 8, "attn_only": true}})",
                          "(test)", {}));
  const auto as = make_task(attn.config().task)->patch_sets(2);
  const auto ar = patch(attn, as);
  for (int64_t h = 0; h < 2; ++h) {
    const double direct = patch_path(attn, as, 0, h, "logits", 0, 0);
    CHECK(std::abs(direct - ar.head_out[0][size_t(h)]) <= 1e-4 * std::max(1.0, std::abs(direct)));
  }
  // Patching the whole embedding at a's position restores everything; so does taking the
  // component in every frequency's directions of it (a - a' lies in their span).
  int64_t dims = 0;
  CHECK(std::abs(patch_frequencies(pair, ps, {1, 2, 3, 4, 5}, &dims) - 1) <= 1e-4);
  CHECK(dims == 10);
  const double some = patch_frequencies(pair, ps, {2, 3}, &dims);
  CHECK(dims == 4);
  CHECK(std::abs(some - 1) > 1e-3);  // an untrained model's answer is not in two frequencies
  // A user's pairs: each (a, b) against (a', b'), checked against the task.
  const auto task = make_task(pair.config().task);
  const auto user = task->patch_sets_from({{1, 2, 3, 2}, {4, 4, 0, 0}}, "pairs.csv");
  CHECK(user.clean.size(0) == 2);
  CHECK(user.clean[1][0].item<int64_t>() == 4);
  CHECK(user.corrupted[0][0].item<int64_t>() == 3);
  CHECK_THROWS_WITH(task->patch_sets_from({{1, 2, 2, 1}}, "pairs.csv"),
                    "pairs.csv: row 1: the clean and corrupted pairs have the same answer");
  CHECK_THROWS_WITH(task->patch_sets_from({{1, 2, 3, 2}, {1, 11, 3, 2}}, "pairs.csv"),
                    "pairs.csv: row 2: 11 is not an operand (0..10)");
  // A sequence task's corrupted inputs are other repeated sequences of the same lengths.
  Model rep(kind_config({}));
  const auto rs = make_task(rep.config().task)->patch_sets(3);
  CHECK(rs.clean.sizes() == rs.corrupted.sizes());
  CHECK(rs.clean.eq(8).equal(rs.corrupted.eq(8)));  // padding (token 8 = vocab) where the clean one has it
  CHECK(rs.clean.ne(rs.corrupted).any().item<bool>());
  for (int64_t i = 0; i < rs.clean.size(0); ++i) {
    const int64_t L = rs.clean[i].ne(8).sum().item<int64_t>() / 2;
    CHECK(torch::equal(rs.corrupted[i].narrow(0, 0, L), rs.corrupted[i].narrow(0, L, L)));
  }
}
