#include <fstream>

#include "catch.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/sweep.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {
std::string write_sweep(const std::string& name, const std::string& text) {
  std::string dir = test::temp_dir(name);
  std::ofstream(dir + "/s.json") << text;
  return dir + "/s.json";
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
  auto msg = [](const std::string& text) {
    try {
      load_sweep(write_sweep("bad", text));
    } catch (const UsageError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
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
  CHECK(row.rfind("a=1,0.001,completed,100,20,80,60,1.0,0.995,", 0) == 0);
  CHECK(row.find(",3 5,20,60,80") != std::string::npos);
}
