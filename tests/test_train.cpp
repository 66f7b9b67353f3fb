#include <set>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>

#include "catch.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/train.hpp"
#include "grokked_run.hpp"
#include "helpers.hpp"

using namespace grokking;
using test::contains;
using test::temp_dir;
using test::tiny_config;

namespace {
using test::metric_lines_without_time;
using test::prepare_run;
}  // namespace

TEST_CASE("a checkpoint round-trips weights, optimizer state and config", "[train]") {
  auto cfg = tiny_config();
  std::string dir = temp_dir("ckpt");
  Model m(cfg);
  FlatAdamW opt(m.flat(), m.flat_grad(), cfg.optim);
  opt.exp_avg().normal_();
  opt.exp_avg_sq().uniform_();
  opt.step(1e-3);
  auto st = opt.state();
  save_checkpoint(dir + "/a.pt", m, &st, 42);
  auto ck = load_checkpoint(dir + "/a.pt");
  CHECK(ck.epoch == 42);
  CHECK(config_to_json(ck.config) == config_to_json(cfg));
  REQUIRE(ck.has_optimizer);
  CHECK(ck.optimizer_step == 1);
  CHECK(torch::equal(ck.exp_avg, opt.exp_avg()));
  CHECK(torch::equal(ck.exp_avg_sq, opt.exp_avg_sq()));
  Model back = model_from_checkpoint(ck);
  CHECK(torch::equal(back.flat(), m.flat()));

  SECTION("a flipped bit is caught by the checksum") {
    std::string raw = read_file(dir + "/a.pt");
    // Flip a byte inside the tensor data: find the float data of the largest record.
    auto ref = m.param("blocks.0.mlp.W_in").contiguous();
    std::string needle(static_cast<const char*>(ref.data_ptr()), 16);
    auto pos = raw.find(needle);
    REQUIRE(pos != std::string::npos);
    raw[pos + 3] ^= 0x10;
    atomic_write(dir + "/flip.pt", raw);
    try {
      load_checkpoint(dir + "/flip.pt");
      FAIL("a corrupted checkpoint loaded");
    } catch (const RunError& e) {
      CHECK(contains(e.what(), "flip.pt: checksum mismatch"));
    }
  }
  SECTION("truncated, empty and foreign files are refused with the path") {
    std::string raw = read_file(dir + "/a.pt");
    atomic_write(dir + "/trunc.pt", raw.substr(0, raw.size() / 2));
    atomic_write(dir + "/empty.pt", "");
    atomic_write(dir + "/foreign.pt", "PK\x03\x04 not really a zip");
    for (auto name : {"trunc.pt", "empty.pt", "foreign.pt", "missing.pt"}) {
      INFO(name);
      try {
        load_checkpoint(dir + "/" + name);
        FAIL("loaded");
      } catch (const RunError& e) {
        CHECK(contains(e.what(), dir + "/" + name + ": "));
        CHECK_FALSE(contains(e.what(), "\n"));
      }
    }
  }
  SECTION("a weights-only checkpoint has no optimizer") {
    save_checkpoint(dir + "/w.pt", m, nullptr, 7);
    CHECK_FALSE(load_checkpoint(dir + "/w.pt").has_optimizer);
  }
}

TEST_CASE("Python's torch.load reads a checkpoint", "[train]") {
  // Debian's python3-torch (scripts/setup.sh installs it); the plain python3 on PATH may lack torch.
  const char* py = std::getenv("GROKKING_PYTHON") ? std::getenv("GROKKING_PYTHON") : "/usr/bin/python3";
  auto cfg = tiny_config();
  std::string dir = temp_dir("py");
  Model m(cfg);
  save_checkpoint(dir + "/a.pt", m, nullptr, 3);
  std::string script = dir + "/load.py";
  std::ofstream(script) << "import sys, torch\n"
                           "kw = {'weights_only': False} if 'weights_only' in torch.load.__code__.co_varnames else {}\n"
                           "ck = torch.load(sys.argv[1], map_location='cpu', **kw)\n"
                           "sd = ck['model']\n"
                           "print(ck['format'], ck['format_version'], ck['epoch'], len(sd))\n"
                           "print(' '.join(f'{k}:{list(v.shape)}' for k, v in sd.items()))\n"
                           "print('%.9e' % sd['embed.W_E'].double().sum().item())\n";
  std::string cmd = std::string(py) + " " + script + " " + dir + "/a.pt > " + dir + "/out.txt 2>&1";
  int rc = std::system(cmd.c_str());
  std::string out = read_file(dir + "/out.txt");
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(contains(out, "grokking-checkpoint 1 3 16"));
  CHECK(contains(out, "embed.W_E:[12, 16]"));
  CHECK(contains(out, "blocks.0.attn.W_O:[2, 8, 16]"));
  char expect[64];
  std::snprintf(expect, sizeof expect, "%.9e", m.param("embed.W_E").to(torch::kFloat64).sum().item<double>());
  CHECK(contains(out, expect));
}

TEST_CASE("a resumed run equals an uninterrupted one bit for bit", "[train]") {
  auto cfg = tiny_config();
  cfg.train.epochs = 120;
  cfg.train.eval_every = 10;
  cfg.train.checkpoint_every = 30;
  for (int64_t batch : {0, 16}) {
    INFO("batch " << batch);
    cfg.train.batch_size = batch;
    std::string whole = prepare_run(cfg, "whole" + std::to_string(batch));
    train(cfg, whole, false, true);

    // The same run stopped at epoch 60 (a checkpoint), then resumed with the full epoch count.
    auto first = cfg;
    first.train.epochs = 60;
    std::string split = prepare_run(first, "split" + std::to_string(batch));
    train(first, split, false, true);
    // A kill after the checkpoint may leave rows past it: they must be dropped on resume.
    MetricsRow after = read_metrics(split + "/metrics.csv").back();
    after.epoch = 70;
    append_line(split + "/metrics.csv", format_row(after));
    Config resumed = load_run_config(split, {"train.epochs=120"});
    auto rep = train(resumed, split, true, true);
    CHECK(rep.epochs_done == 120);

    CHECK(metric_lines_without_time(whole + "/metrics.csv") == metric_lines_without_time(split + "/metrics.csv"));
    auto a = load_checkpoint(resume_path(whole)), b = load_checkpoint(resume_path(split));
    CHECK(a.epoch == 120);
    CHECK(b.epoch == 120);
    CHECK(torch::equal(model_from_checkpoint(a).flat(), model_from_checkpoint(b).flat()));
    CHECK(torch::equal(a.exp_avg_sq, b.exp_avg_sq));
  }
}

TEST_CASE("a few hundred steps on the fast path give the plain path's metrics", "[train]") {
  auto cfg = tiny_config(13);
  cfg.train.epochs = 300;
  cfg.train.eval_every = 25;
  cfg.train.checkpoint_every = 300;
  // Float rounding differs between the paths and Adam amplifies it slowly: the first 200 epochs
  // agree closely, and by 300 the loss differs by 3e-4 relative on an AMD EPYC and 1.0e-3 on an
  // Intel Xeon (measured; BLAS kernels differ by CPU).
  std::vector<std::vector<MetricsRow>> runs;
  for (auto path : {"plain", "fast"}) {
    cfg.train.path = path;
    std::string dir = prepare_run(cfg, std::string("path-") + path);
    train(cfg, dir, false, true);
    runs.push_back(read_metrics(dir + "/metrics.csv"));
  }
  REQUIRE(runs[0].size() == runs[1].size());
  REQUIRE(runs[0].size() == 13);
  CHECK(runs[0].back().train_acc > runs[0].front().train_acc + 0.3);  // the runs went somewhere
  const std::vector<MetricsRow> early0(runs[0].begin(), runs[0].begin() + 9), early1(runs[1].begin(), runs[1].begin() + 9);
  auto e = test::metrics_max_diff(early1, early0, "fast vs plain, epochs 0-200");
  CHECK(e.loss <= 1e-4);
  auto d = test::metrics_max_diff(runs[1], runs[0], "fast vs plain");
  CHECK(d.loss <= 3e-3);
  CHECK(d.acc <= 0.02);
  CHECK(d.sum_sq_weights <= 1e-3);
}

TEST_CASE("a run writes its directory: config, metrics, summary, checkpoints", "[train]") {
  auto cfg = tiny_config();
  cfg.train.epochs = 45;
  std::string dir = prepare_run(cfg, "layout");
  auto rep = train(cfg, dir, false, true);
  CHECK(rep.status == RunStatus::completed);
  auto rows = read_metrics(dir + "/metrics.csv");
  std::vector<int64_t> epochs;
  for (auto& r : rows) epochs.push_back(r.epoch);
  CHECK(epochs == std::vector<int64_t>{0, 10, 20, 30, 40, 45});
  std::vector<int64_t> ckpts;
  for (auto& [e, p] : list_checkpoints(dir)) ckpts.push_back(e);
  CHECK(ckpts == std::vector<int64_t>{0, 20, 40, 45});
  auto s = read_json_file(dir + "/summary.json");
  CHECK(s["status"] == "completed");
  CHECK(s["epochs"] == 45);
  CHECK(s["final"]["test_acc"].get<double>() == rows.back().test_acc);
  CHECK(s["device"] == "cpu");
  CHECK(s.contains("libtorch"));
  CHECK(s.contains("blas"));
}

TEST_CASE("a diverging loss stops the run and names the epoch", "[train]") {
  auto cfg = tiny_config();
  cfg.optim.lr = 1e6;
  cfg.optim.warmup_steps = 0;
  cfg.optim.weight_decay = 0;
  cfg.train.epochs = 2000;
  std::string dir = prepare_run(cfg, "nan");
  try {
    train(cfg, dir, false, true);
    FAIL("no divergence detected");
  } catch (const RunError& e) {
    CHECK(contains(e.what(), "training diverged at epoch"));
  }
  CHECK(read_json_file(dir + "/summary.json")["status"] == "diverged");
  // Every checkpoint that was kept holds finite weights.
  for (auto& [e, p] : list_checkpoints(dir))
    CHECK(torch::isfinite(model_from_checkpoint(load_checkpoint(p)).flat()).all().item<bool>());
}

TEST_CASE("configs/ci-small.json groks: memorise first, generalise much later", "[ci-small]") {
  const auto& rep = test::grokked_run().report;
  REQUIRE(rep.milestones.memorised.has_value());
  REQUIRE(rep.milestones.grokked.has_value());
  INFO("memorised at " << *rep.milestones.memorised << ", grokked at " << *rep.milestones.grokked);
  CHECK(*rep.milestones.grokked - *rep.milestones.memorised >= 500);
  CHECK(rep.final.test_acc >= 0.99);
  CHECK(rep.final.train_acc == 1.0);
}

TEST_CASE("seeds trained side by side write what single-seed runs write", "[train]") {
  auto cfg = tiny_config(13);
  cfg.train.epochs = 80;
  cfg.train.eval_every = 20;
  cfg.train.checkpoint_every = 40;
  const std::vector<int64_t> seeds = {3, 4, 5};
  std::string parent = temp_dir("seeds");
  std::vector<std::string> dirs;
  for (auto s : seeds) {
    dirs.push_back(parent + "/seed=" + std::to_string(s));
    make_dirs(dirs.back() + "/checkpoints");
  }
  auto reps = train_replicas(cfg, seeds, dirs, false, true);
  REQUIRE(reps.size() == 3);
  for (size_t i = 0; i < seeds.size(); ++i) {
    INFO("seed " << seeds[i]);
    auto one = cfg;
    one.train.seed = seeds[i];
    std::string single = prepare_run(one, "single" + std::to_string(seeds[i]));
    train(one, single, false, true);
    auto a = read_metrics(single + "/metrics.csv"), b = read_metrics(dirs[i] + "/metrics.csv");
    auto d = test::metrics_max_diff(b, a, "seed " + std::to_string(seeds[i]) + " side by side vs alone");
    CHECK(d.loss <= 1e-3);
    CHECK(d.acc <= 0.02);
    CHECK(d.sum_sq_weights <= 1e-4);
    auto wa = model_from_checkpoint(load_checkpoint(resume_path(single))).flat();
    auto cb = load_checkpoint(resume_path(dirs[i]));
    CHECK(cb.config.train.seed == seeds[i]);
    auto wb = model_from_checkpoint(cb).flat();
    CHECK(test::max_rel_diff(wb, wa, "seed " + std::to_string(seeds[i]) + " final weights") <= 1e-3);
    CHECK(read_json_file(dirs[i] + "/summary.json")["seed"] == seeds[i]);
  }
}

namespace {
// Trains cfgs side by side into fresh directories under `name`, then each alone, and checks
// that every packed run wrote what its run alone wrote (float rounding apart).
struct PackedVsAlone {
  std::vector<std::string> packed, alone;
};
PackedVsAlone train_packed_and_alone(const std::vector<Config>& cfgs, const std::string& name) {
  PackedVsAlone out;
  const std::string parent = temp_dir(name);
  std::vector<Config> with_dirs;
  for (size_t i = 0; i < cfgs.size(); ++i) {
    Config c = cfgs[i];
    c.output.dir = parent + "/run" + std::to_string(i);
    make_dirs(c.output.dir + "/checkpoints");
    atomic_write(c.output.dir + "/config.json", config_to_json(c).dump(2));
    out.packed.push_back(c.output.dir);
    with_dirs.push_back(c);
  }
  try {
    train_packed(with_dirs, out.packed, false, true);
  } catch (const RunError& e) {  // a divergence is reported after every run is written
    INFO(e.what());
    CHECK(contains(e.what(), "diverged"));
  }
  for (size_t i = 0; i < cfgs.size(); ++i) {
    out.alone.push_back(prepare_run(cfgs[i], name + "-alone" + std::to_string(i)));
    try {
      train(cfgs[i], out.alone.back(), false, true);
    } catch (const RunError&) {
    }
  }
  return out;
}

void check_same_run(const std::string& packed, const std::string& alone, const std::string& what) {
  INFO(what);
  auto a = read_metrics(alone + "/metrics.csv"), b = read_metrics(packed + "/metrics.csv");
  auto d = test::metrics_max_diff(b, a, what + " packed vs alone");
  CHECK(d.loss <= 1e-3);
  CHECK(d.acc <= 0.02);
  CHECK(d.sum_sq_weights <= 1e-4);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(b[i].lr == Approx(a[i].lr).epsilon(1e-12));
  auto sa = read_json_file(alone + "/summary.json"), sb = read_json_file(packed + "/summary.json");
  CHECK(sb["status"] == sa["status"]);
  CHECK(sb["epochs"] == sa["epochs"]);
  auto ca = load_checkpoint(resume_path(alone)), cb = load_checkpoint(resume_path(packed));
  CHECK(cb.epoch == ca.epoch);
  // The checkpoint records the run's own config (its lr and weight decay), not the pack's first.
  CHECK(config_to_json(cb.config)["optim"] == config_to_json(ca.config)["optim"]);
  CHECK(cb.config.train.seed == ca.config.train.seed);
  CHECK(test::max_rel_diff(model_from_checkpoint(cb).flat(), model_from_checkpoint(ca).flat(), what + " weights") <= 1e-3);
  CHECK(test::max_rel_diff(cb.exp_avg_sq, ca.exp_avg_sq, what + " exp_avg_sq") <= 1e-2);
}
}  // namespace

TEST_CASE("runs packed side by side over seed x lr x weight decay write what each writes alone", "[train]") {
  auto base = tiny_config(13);
  base.train.epochs = 60;
  base.train.eval_every = 20;
  base.train.checkpoint_every = 30;
  std::vector<Config> cfgs;
  for (int64_t seed : {3, 4})
    for (double lr : {1e-3, 3e-3})
      for (double wd : {0.5, 1.0}) {
        Config c = base;
        c.train.seed = seed, c.optim.lr = lr, c.optim.weight_decay = wd;
        cfgs.push_back(c);
      }
  cfgs[7].optim.beta2 = 0.99, cfgs[7].optim.eps = 1e-6;  // the other numbers a pack may vary
  auto runs = train_packed_and_alone(cfgs, "pack-grid");
  for (size_t i = 0; i < cfgs.size(); ++i) check_same_run(runs.packed[i], runs.alone[i], "run " + std::to_string(i));
  CHECK(read_json_file(runs.packed[0] + "/summary.json")["seeds_side_by_side"] == 8);
}

TEST_CASE("a pack refuses configs that differ in more than the optimiser's numbers and the seed", "[train]") {
  auto a = tiny_config(13), b = a;
  b.model.set("d_mlp", 64);
  CHECK(pack_key(a) != pack_key(b));
  b = a;
  b.optim.grokfast = "ema";
  CHECK(pack_key(a) != pack_key(b));
  b = a;
  b.train.seed = 9, b.optim.lr = 0.5, b.optim.weight_decay = 0, b.optim.beta1 = 0.5, b.optim.beta2 = 0.5;
  b.optim.eps = 1e-3, b.output.dir = "elsewhere", b.train.threads = 3;
  CHECK(pack_key(a) == pack_key(b));
  b.train.epochs = 7;
  CHECK(pack_key(a) != pack_key(b));
  CHECK_THROWS_AS(train_packed({a, b}, {temp_dir("pk-a"), temp_dir("pk-b")}, false, true), UsageError);
}

TEST_CASE("in a pack, a diverging run and an early-stopping one end alone; the others go on unharmed", "[train]") {
  auto base = tiny_config(13);
  base.train.epochs = 200;
  base.train.eval_every = 10;
  base.train.checkpoint_every = 20;
  base.optim.warmup_steps = 0;
  Config steady = base, wild = base, quick = base;
  steady.optim.lr = 1e-6;  // barely moves: stays near chance on the test split
  wild.optim.lr = 1e6, wild.optim.weight_decay = 0;
  quick.optim.lr = 1e-2;
  // The early-stop level: a test accuracy `quick` reaches alone and `steady` never does.
  std::string probe = prepare_run(quick, "pack-probe");
  train(quick, probe, false, true);
  double quick_best = 0;
  for (auto& r : read_metrics(probe + "/metrics.csv")) quick_best = std::max(quick_best, r.test_acc);
  std::string probe2 = prepare_run(steady, "pack-probe2");
  train(steady, probe2, false, true);
  double steady_best = 0;
  for (auto& r : read_metrics(probe2 + "/metrics.csv")) steady_best = std::max(steady_best, r.test_acc);
  INFO("best test accuracy: quick " << quick_best << ", steady " << steady_best);
  REQUIRE(quick_best > steady_best);
  for (auto* c : {&steady, &wild, &quick}) c->train.early_stop_acc = quick_best, c->train.early_stop_hold = 0;

  auto runs = train_packed_and_alone({steady, wild, quick}, "pack-ends");
  auto status = [](const std::string& dir) { return read_json_file(dir + "/summary.json")["status"]; };
  CHECK(status(runs.packed[0]) == "completed");
  CHECK(status(runs.packed[1]) == "diverged");
  CHECK(status(runs.packed[2]) == "early_stopped");
  CHECK(read_json_file(runs.packed[2] + "/summary.json")["epochs"] < 200);
  check_same_run(runs.packed[0], runs.alone[0], "the steady run");
  check_same_run(runs.packed[2], runs.alone[2], "the early-stopped run");
  // Its summary describes the weights it ended with (its last checkpoint), not the pack's last.
  CHECK(read_json_file(runs.packed[2] + "/summary.json")["weights_checksum"] ==
        weights_checksum(model_from_checkpoint(load_checkpoint(resume_path(runs.packed[2])))));
  CHECK(read_json_file(runs.packed[2] + "/summary.json")["weights_checksum"] ==
        read_json_file(runs.alone[2] + "/summary.json")["weights_checksum"]);
  // The diverged run stopped writing at its divergence; what it kept is finite.
  for (auto& [e, p] : list_checkpoints(runs.packed[1]))
    CHECK(torch::isfinite(model_from_checkpoint(load_checkpoint(p)).flat()).all().item<bool>());
  CHECK(read_metrics(runs.packed[1] + "/metrics.csv").size() == read_metrics(runs.alone[1] + "/metrics.csv").size());
}

TEST_CASE("continuous packing: runs of different lengths entering mid-way write exactly what each writes alone",
          "[train]") {
  auto base = tiny_config(13);
  base.train.epochs = 150;
  base.train.eval_every = 10;
  base.train.checkpoint_every = 30;
  base.optim.warmup_steps = 20;  // each run warms up on its own schedule, entering or not
  base.train.early_stop_acc = 0.12, base.train.early_stop_hold = 0;
  std::vector<Config> cfgs;
  const std::vector<double> lrs = {1e-2, 3e-3, 2e-2, 1e-3, 5e-3};
  for (size_t i = 0; i < lrs.size(); ++i) {
    Config c = base;
    c.train.seed = int64_t(3 + i), c.optim.lr = lrs[i];
    cfgs.push_back(c);
  }
  const std::string parent = temp_dir("pack-continuous");
  std::vector<std::string> dirs;
  for (size_t i = 0; i < cfgs.size(); ++i) {
    cfgs[i].output.dir = parent + "/run" + std::to_string(i);
    make_dirs(cfgs[i].output.dir + "/checkpoints");
    atomic_write(cfgs[i].output.dir + "/config.json", config_to_json(cfgs[i]).dump(2));
    dirs.push_back(cfgs[i].output.dir);
  }
  // Two places for five runs: three of them start only when an earlier one has ended.
  const auto reps = train_packed(cfgs, dirs, false, true, 2);
  REQUIRE(reps.size() == 5);
  std::set<int64_t> lengths;
  for (size_t i = 0; i < cfgs.size(); ++i) {
    INFO("run " << i << " (lr " << lrs[i] << ")");
    Config one = cfgs[i];
    const std::string alone = prepare_run(one, "pack-continuous-alone" + std::to_string(i));
    train(one, alone, false, true);
    // Bit for bit: every metrics row (time apart), the final state and the summary's figures.
    CHECK(metric_lines_without_time(dirs[i] + "/metrics.csv") == metric_lines_without_time(alone + "/metrics.csv"));
    auto a = load_checkpoint(resume_path(alone)), b = load_checkpoint(resume_path(dirs[i]));
    CHECK(a.epoch == b.epoch);
    CHECK(torch::equal(model_from_checkpoint(a).flat(), model_from_checkpoint(b).flat()));
    CHECK(torch::equal(a.exp_avg_sq, b.exp_avg_sq));
    CHECK(a.optimizer_step == b.optimizer_step);
    CHECK(list_checkpoints(dirs[i]).size() == list_checkpoints(alone).size());
    auto sa = read_json_file(alone + "/summary.json"), sb = read_json_file(dirs[i] + "/summary.json");
    CHECK(sb["status"] == sa["status"]);
    CHECK(sb["epochs"] == sa["epochs"]);
    CHECK(sb["weights_checksum"] == sa["weights_checksum"]);
    CHECK(sb["seeds_side_by_side"] == 2);
    lengths.insert(sb["epochs"].get<int64_t>());
  }
  CHECK(lengths.size() >= 3);  // the runs really had different lengths
}

TEST_CASE("the gradient-weight cosine of a minibatch run is the whole training set's, taken a batch at a time", "[train]") {
  // At epoch 0 nothing has trained yet: the full-batch run and one with batches of 7 measure the
  // same weights, the latter in chunks of 7 pairs weighted by their share of the mean.
  std::vector<MetricsRow> first;
  for (int64_t batch : {0, 7}) {
    auto cfg = tiny_config();
    cfg.train.epochs = 1, cfg.train.eval_every = 1, cfg.train.batch_size = batch;
    const std::string dir = prepare_run(cfg, "gradcos-" + std::to_string(batch));
    REQUIRE(train(cfg, dir, false, true).status == RunStatus::completed);
    first.push_back(read_metrics(dir + "/metrics.csv").front());
  }
  REQUIRE(first[0].epoch == 0);
  CHECK(first[1].grad_weight_cos == Approx(first[0].grad_weight_cos).epsilon(1e-5));
  REQUIRE(first[0].extra.size() == first[1].extra.size());
  for (size_t i = 0; i < first[0].extra.size(); ++i) {
    INFO(first[0].extra[i].first);
    CHECK(first[1].extra[i].second == Approx(first[0].extra[i].second).epsilon(1e-4).margin(1e-7));
  }
  CHECK(first[0].grad_weight_cos != 0.0);
}
