#include <fstream>

#include <cmath>

#include "catch.hpp"
#include "grokking/error.hpp"
#include "grokking/compare.hpp"
#include "grokking/rundir.hpp"
#include "grokking/sweep.hpp"
#include "grokking/text.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {
std::string write_sweep(const std::string& name, const std::string& text) {
  std::string dir = test::temp_dir(name);
  std::ofstream(dir + "/s.json") << text;
  return dir + "/s.json";
}

// The message load_sweep refuses `text` with (empty when it is accepted).
std::string msg(const std::string& text) {
  try {
    load_sweep(write_sweep("bad", text));
  } catch (const UsageError& e) {
    return std::string(e.what());
  }
  return std::string();
}
}  // namespace

TEST_CASE("a grid expands to its cartesian product, named by its values", "[sweep]") {
  auto path = write_sweep("grid", R"({"base": {"task": {"p": 11}}, "grid": {"train.seed": [0, 1, 2],
      "optim.weight_decay": [0.3, 1]}, "points": [{"task.operation": "sub"}], "dir": "x"})");
  auto plan = load_sweep(path);
  REQUIRE(plan.runs.size() == 7);
  CHECK(plan.runs[0].name == "optim.weight_decay=0.3_train.seed=0");
  CHECK(plan.runs[0].sets == std::vector<std::string>{"optim.weight_decay=0.3", "train.seed=0"});
  CHECK(plan.runs[5].name == "optim.weight_decay=1_train.seed=2");
  CHECK(plan.runs[6].name == "task.operation=sub");
  CHECK(plan.keys == std::vector<std::string>{"optim.weight_decay", "train.seed", "task.operation"});
  CHECK(plan.base["task"]["p"] == 11);
  CHECK(plan.dir == "x");
}

TEST_CASE("arms are crossed with the grid; a key an arm leaves out takes the base value", "[sweep]") {
  auto path = write_sweep("arms", R"({"base": {"task": {"p": 11}, "optim": {"weight_decay": 0.5}},
      "grid": {"train.seed": [0, 1, 2]},
      "arms": [{"train.loss": "stablemax"}, {"optim.orthograd": true, "optim.weight_decay": 0}]})");
  auto plan = load_sweep(path);
  REQUIRE(plan.runs.size() == 6);
  CHECK(plan.keys == std::vector<std::string>{"train.seed", "train.loss", "optim.orthograd", "optim.weight_decay"});
  // Per seed, every arm (a sweep stopped part way has compared arms on the same seeds).
  CHECK(plan.runs[0].name == "optim.orthograd=false_optim.weight_decay=0.5_train.loss=stablemax_train.seed=0");
  CHECK(plan.runs[1].name == "optim.orthograd=true_optim.weight_decay=0_train.loss=softmax_train.seed=0");
  CHECK(plan.runs[5].values["train.seed"] == 2);
  CHECK(plan.runs[5].values["optim.orthograd"] == true);
  // Arms alone (no grid) are runs as they are; a key in both places is refused.
  auto alone = load_sweep(write_sweep("arms2", R"({"arms": [{"train.seed": 1}, {"train.seed": 2}]})"));
  CHECK(alone.runs.size() == 2);
  CHECK(msg(R"({"grid": {"train.seed": [1]}, "arms": [{"train.seed": 2}]})").find("/arms/0/train.seed: also a grid key") !=
        std::string::npos);
  CHECK(msg(R"({"arms": [{"train.sed": 2}]})").find("/train/sed: unknown key") != std::string::npos);
  CHECK(msg(R"({"arms": [{"train.sed": 2}, {"train.seed": 1}]})").find("train.sed: not a config key") != std::string::npos);
  CHECK(msg(R"({"arms": []})").find("/arms: must be a non-empty list") != std::string::npos);
}

TEST_CASE("shards partition the runs for every n", "[sweep]") {
  auto path = write_sweep("shard", R"({"grid": {"train.seed": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}})");
  auto plan = load_sweep(path);
  for (int64_t n : {1, 2, 3, 4, 11, 13}) {
    std::vector<int> count(plan.runs.size(), 0);
    for (int64_t i = 0; i < n; ++i)
      for (auto& r : shard(plan.runs, i, n))
        for (size_t j = 0; j < plan.runs.size(); ++j)
          if (plan.runs[j].name == r.name) ++count[j];
    CHECK(std::all_of(count.begin(), count.end(), [](int c) { return c == 1; }));
  }
  CHECK(parse_shard("2/4") == std::pair<int64_t, int64_t>{2, 4});
  CHECK_THROWS_AS(parse_shard("4/4"), UsageError);
  CHECK_THROWS_AS(parse_shard("1/0"), UsageError);
  CHECK_THROWS_AS(parse_shard("a/b"), UsageError);
}

TEST_CASE("a bad sweep file is refused before anything runs, naming the field", "[sweep]") {
  CHECK(msg(R"({"grid": {"train.seed": []}})").find("/grid/train.seed: must be a non-empty list") != std::string::npos);
  CHECK(msg(R"({"grid": {"task.p": [1]}})").find("run task.p=1") != std::string::npos);
  CHECK(msg(R"({"grid": {"task.q": [1]}})").find("/task/q: unknown key") != std::string::npos);
  CHECK(msg(R"({"gird": {}})").find("/gird: unknown key") != std::string::npos);
  CHECK(msg(R"({})").find("no runs") != std::string::npos);
  CHECK(msg(R"({"points": [{"train.seed": 1}, {"train.seed": 1}]})").find("share the name") != std::string::npos);
}

TEST_CASE("the aggregate has one row per finished run with its swept values", "[sweep]") {
  std::string dir = test::temp_dir("agg");
  make_dirs(dir + "/runs/a=1");
  make_dirs(dir + "/runs/a=2");
  atomic_write(dir + "/plan.json", R"({"keys": ["optim.lr"], "runs": [
      {"name": "a=1", "sets": ["optim.lr=1"], "values": {"optim.lr": 0.001}},
      {"name": "a=2", "sets": ["optim.lr=2"], "values": {"optim.lr": 0.002}}]})");
  atomic_write(dir + "/runs/a=1/summary.json", R"({"status": "completed", "epochs": 100, "memorised_epoch": 20,
      "grokked_epoch": 80, "grokking_delay": 60, "final": {"train_acc": 1.0, "test_acc": 0.995},
      "phases": {"key_freqs": [3, 5], "memorisation": {"end": 20}, "circuit_formation": {"end": 60}, "cleanup": {"end": 80}}})");
  CHECK(aggregate_sweep(dir) == 1);  // a=2 has not finished
  auto csv = read_file(dir + "/sweep.csv");
  auto header = csv.substr(0, csv.find('\n'));
  CHECK(header.rfind("name,optim.lr,status,epochs,memorised_epoch,grokked_epoch,grokking_delay", 0) == 0);
  auto row = csv.substr(csv.find('\n') + 1);
  CHECK(row.rfind("a=1,0.001,completed,100,20,80,60,1,0.995,", 0) == 0);
  CHECK(row.find(",3 5,20,60,80") != std::string::npos);
}

TEST_CASE("compare: medians with censored runs, the rank test and the bootstrap, by hand", "[sweep]") {
  auto g = [](double v) { return Outcome{v, false}; };
  auto c = [](double v) { return Outcome{v, true}; };
  CHECK(median_of({g(1), g(3), g(2)}).value == 2);
  CHECK(median_of({g(1), g(2), g(3), g(4)}).value == 2.5);
  auto m = median_of({c(100), g(5), g(7)});
  CHECK(m.value == 7);
  CHECK_FALSE(m.lower_bound);
  m = median_of({c(100), c(100), g(5)});
  CHECK(m.value == 100);
  CHECK(m.lower_bound);  // most runs never grokked: the median is only known to be >= 100

  // x = {1, 2} against y = {3, 4}: every pair has x earlier, U = 4; var = 2*2/12*5, z = 2/sqrt(5/3).
  auto t = mann_whitney({g(1), g(2)}, {g(3), g(4)});
  CHECK(t.u == 4);
  CHECK(t.z == Approx(2 / std::sqrt(5.0 / 3)));
  CHECK(t.p == Approx(0.121335).epsilon(1e-4));  // 2(1 - Phi(1.5492))
  // Censored runs rank after every grokked one and tie with each other: 10 < 30c, 10 < 30c,
  // 20c ~ 30c twice (half each): U = 3.
  CHECK(mann_whitney({g(10), c(20)}, {c(30), c(30)}).u == 3);
  CHECK(mann_whitney({g(5), g(6)}, {g(5), g(6)}).p == Approx(1.0));

  const std::vector<Outcome> x = {g(10), g(12), g(11), g(30), c(50)};
  auto a = bootstrap_median(x, 7), b = bootstrap_median(x, 7);
  CHECK(a.lo == b.lo);  // seeded: reruns print the same
  CHECK(a.hi == b.hi);
  CHECK(a.lo <= median_of(x).value);
  CHECK(a.hi >= median_of(x).value);
  CHECK(bootstrap_median({g(4), g(4), g(4)}, 1).lo == 4);
  auto r = bootstrap_ratio({g(20), g(20)}, {g(10), g(10)}, 3);
  CHECK(r.lo == 2);
  CHECK(r.hi == 2);
}

TEST_CASE("compare's power: the smallest ratio 8 seeds an arm detect at a spread of 0.35 is about 1.65", "[sweep]") {
  // (1.96 + 0.84) * 0.35 * sqrt(2/8) / sqrt(3/pi) = 0.502: exp of it.
  CHECK(detectable_ratio(0.35, 8, 8) == Approx(1.652).epsilon(1e-3));
  CHECK(detectable_ratio(0.85, 8, 8) > 3.0);  // P = 23's spread: only effects of 3x and more
  CHECK(std::isinf(detectable_ratio(0.35, 1, 8)));
  CHECK(log_spread({{100, false}, {100, false}}) == 0.0);
  CHECK(log_spread({{std::exp(1.0), false}, {std::exp(3.0), false}}) == Approx(std::sqrt(2.0)));
}

TEST_CASE("compare groups a sweep's runs into arms by the --by keys, seeds pooled", "[sweep]") {
  std::string dir = test::temp_dir("compare");
  nlohmann::json plan = {{"keys", {"optim.lr", "train.seed"}}, {"runs", nlohmann::json::array()}};
  // lr 0.001: grokked at 100, 300, never (run to 1000); lr 0.003: 50, 60, 70. Memorised at 10.
  const std::vector<std::tuple<double, int, nlohmann::json>> runs = {
      {0.001, 0, 100}, {0.001, 1, 300}, {0.001, 2, nullptr}, {0.003, 0, 50}, {0.003, 1, 60}, {0.003, 2, 70}};
  for (auto& [lr, seed, grokked] : runs) {
    std::string name = "lr=" + std::to_string(lr) + ",seed=" + std::to_string(seed);
    plan["runs"].push_back({{"name", name}, {"values", {{"optim.lr", lr}, {"train.seed", seed}}}});
    make_dirs(dir + "/runs/" + name);
    atomic_write(dir + "/runs/" + name + "/summary.json",
                 nlohmann::json({{"status", "completed"}, {"epochs", 1000}, {"grokked_epoch", grokked}, {"memorised_epoch", 10}}).dump());
  }
  atomic_write(dir + "/plan.json", plan.dump());
  CompareOptions o;
  o.sweep_dir = dir;
  o.by = {"optim.lr"};
  o.baseline = "0.003";
  auto arms = compare_sweep(o);
  REQUIRE(arms.size() == 2);
  CHECK(arms[0].label == "optim.lr=0.003");  // the baseline first
  CHECK(arms[0].n_grokked == 3);
  CHECK(arms[0].grok_median.value == 60);
  CHECK(arms[0].delay_median.value == 50);
  CHECK(arms[1].runs.size() == 3);
  CHECK(arms[1].n_grokked == 2);  // the censored run is counted, not dropped
  CHECK(arms[1].grok_median.value == 300);
  CHECK(arms[1].ratio == Approx(5.0));
  CHECK(arms[1].test.u == 0);  // no run of lr 0.001 grokked before one of lr 0.003
  auto refusal = [&] {
    try {
      compare_sweep(o);
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  o.by = {"optim.wd"};
  CHECK(refusal().find("--by optim.wd: not a swept key") != std::string::npos);
  o.by = {"optim.lr"};
  o.baseline = "0.5";
  CHECK(refusal().find("--baseline 0.5: no arm") != std::string::npos);
}

TEST_CASE("sweep.csv's list values are quoted and read back whole (RFC 4180)", "[sweep]") {
  CsvWriter csv({"name", "task.importances", "after"});
  csv.field("a").field(nlohmann::json::parse("[1.0,0.1]")).field(nlohmann::json(3)).end_row();
  csv.field("b").field(nlohmann::json::parse("{\"x\":\"y,\\\"z\"}")).field(nlohmann::json()).end_row();
  const std::string dir = test::temp_dir("csv-quote");
  atomic_write(dir + "/t.csv", csv.text());
  const auto t = read_csv(dir + "/t.csv");
  REQUIRE(t.rows.size() == 2);
  REQUIRE(t.rows[0].size() == 3);
  CHECK(t.rows[0][1] == "[1.0,0.1]");
  CHECK(t.rows[0][2] == "3");
  REQUIRE(t.rows[1].size() == 3);
  CHECK(t.rows[1][1] == "{\"x\":\"y,\\\"z\"}");
  CHECK(t.rows[1][2].empty());
}
