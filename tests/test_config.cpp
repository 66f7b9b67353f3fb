#include <set>

#include "catch.hpp"
#include "grokking/config.hpp"
#include "grokking/task.hpp"
#include "grokking/error.hpp"
#include "grokking/text.hpp"
#include "helpers.hpp"

using namespace grokking;
using test::contains;

namespace {
// The message of the UsageError that parsing `text` raises ("" if none).
std::string error_of(const std::string& text, const std::vector<std::string>& sets = {}) {
  try {
    parse_config(text, "cfg.json", sets);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("the empty config is valid and gives the documented defaults", "[config]") {
  Config c = parse_config("{}", "cfg.json");
  CHECK(c.task.integer("p") == 113);
  CHECK(c.task.real("frac_train") == 0.3);
  CHECK(c.optim.lr == 1e-3);
  CHECK(c.optim.weight_decay == 1.0);
  CHECK(c.optim.beta2 == 0.98);
  CHECK(c.model.integer("d_model") == c.model.integer("n_heads") * c.model.integer("d_head"));
  // Every documented key appears in the resolved JSON and round-trips.
  auto j = config_to_json(c);
  // The default config's kinds are the modular task and the transformer: their keys are in it,
  // and no key that only another kind has.
  std::set<std::string> own;
  for (auto& k : config_docs())
    if (k.kind.empty() || k.kind == "task.kind modular" || k.kind == "model.kind transformer") own.insert(k.key);
  for (auto& k : config_docs()) {
    auto dot = k.key.find('.');
    INFO(k.key << " (" << k.kind << ")");
    CHECK(j[k.key.substr(0, dot)].contains(k.key.substr(dot + 1)) == (own.count(k.key) == 1));
  }
  Config back = config_from_json(j, "x");
  CHECK(config_to_json(back) == j);
}

TEST_CASE("values are read from the file", "[config]") {
  Config c = parse_config(R"({"task": {"p": 23, "operation": "sub"}, "optim": {"lr": 0.003}})", "cfg.json");
  CHECK(c.task.integer("p") == 23);
  CHECK(c.task.text("operation") == "sub");
  CHECK(c.optim.lr == 0.003);
  CHECK(c.train.epochs == 25000);
}

TEST_CASE("each validation rule names the file, the JSON path and what is allowed", "[config]") {
  struct Case {
    std::string text, pointer, allowed;
  };
  std::vector<Case> cases = {
      {R"({"tusk": {}})", "/tusk", "unknown section"},
      {R"({"task": {"q": 3}})", "/task/q",
       "unknown key; allowed in task with task.kind \"modular\": kind, seed, operation, p, frac_train"},
      {R"({"task": {"kind": "graph"}})", "/task/kind", "must be one of modular"},
      {R"({"task": {"kind": 3}})", "/task/kind", "must be a string"},
      {R"({"model": {"kind": "cnn"}})", "/model/kind", "must be one of transformer, mlp"},
      {R"({"model": {"kind": "mlp", "n_heads": 4}})", "/model/n_heads",
       "belongs to model.kind \"transformer\"; this config's model.kind is \"mlp\""},
      {R"({"model": {"hidden": [128]}})", "/model/hidden", "belongs to model.kind \"mlp\""},
      {R"({"model": {"kind": "mlp", "hidden": []}})", "/model/hidden", "a list of 1 to 16 integers in [1, 65536]"},
      {R"({"model": {"kind": "mlp", "hidden": [128, 0]}})", "/model/hidden", "a list of 1 to 16 integers"},
      {R"({"model": {"kind": "mlp", "encoding": "one_hot", "d_embed": 64}})", "/model/d_embed",
       "used only with model.encoding \"embed\""},
      {R"({"model": {"kind": "mlp", "activation": "tanh"}})", "/model/activation", "relu, gelu, square"},
      {R"({"model": {"kind": "mlp", "encoding": "one_hot"}, "train": {"path": "fast"}})", "/train/path",
       "model.kind \"mlp\" has no fast path for this task and model (it needs model.encoding \"embed\""},
      {R"({"model": {"layer_norm": "mid"}})", "/model/layer_norm", "none, pre, post"},
      {R"({"model": {"n_layers": 0}})", "/model/n_layers", "[1, 64]"},
      {R"({"train": {"loss": "hinge"}})", "/train/loss", "softmax, stablemax, mse"},
      {R"({"optim": {"grad_clip": -1}})", "/optim/grad_clip", "[0, "},
      {R"({"task": 3})", "/task", "must be an object"},
      {R"({"task": {"p": "113"}})", "/task/p", "must be an integer"},
      {R"({"task": {"p": 11.5}})", "/task/p", "must be an integer"},
      {R"({"task": {"p": 1}})", "/task/p", "[2, 4096]"},
      {R"({"task": {"p": 0}})", "/task/p", "[2, 4096]"},
      {R"({"task": {"p": 100000}})", "/task/p", "[2, 4096]"},
      {R"({"task": {"p": 99999999999999999999}})", "/task/p", "must be an integer"},
      {R"({"task": {"frac_train": 0}})", "/task/frac_train", "(0, 1)"},
      {R"({"task": {"frac_train": 1}})", "/task/frac_train", "(0, 1)"},
      {R"({"task": {"p": 2, "frac_train": 0.1}})", "/task/frac_train", "empty train or test set"},
      {R"({"task": {"operation": "pow"}})", "/task/operation", "must be one of add, sub"},
      {R"({"task": {"operation": "div", "p": 12}})", "/task/p", "prime"},
      {R"({"optim": {"lr": -1}})", "/optim/lr", "(0, 1e+09]"},
      {R"({"optim": {"lr": 0}})", "/optim/lr", "(0, 1e+09]"},
      {R"({"optim": {"beta1": 1}})", "/optim/beta1", "[0, 1)"},
      {R"({"optim": {"weight_decay": -0.1}})", "/optim/weight_decay", "[0, "},
      {R"({"model": {"d_model": 100}})", "/model/d_model", "n_heads*d_head"},
      {R"({"model": {"activation": "tanh"}})", "/model/activation", "relu, gelu"},
      {R"({"model": {"train_biases": 1}})", "/model/train_biases", "true, false or \"mlp\""},
      {R"({"train": {"device": "tpu"}})", "/train/device", "auto, cpu, cuda"},
      {R"({"train": {"epochs": 0}})", "/train/epochs", "integer in [1,"},
      {R"({"train": {"batch_size": 5000}})", "/train/batch_size", "at most the 3830 training pairs"},
      {R"({"train": {"early_stop_acc": 1.5}})", "/train/early_stop_acc", "[0, 1]"},
      {R"({"output": {"dir": 5}})", "/output/dir", "must be a string"},
  };
  for (auto& c : cases) {
    INFO(c.text);
    auto msg = error_of(c.text);
    CHECK(contains(msg, "cfg.json: " + c.pointer + ": "));
    CHECK(contains(msg, c.allowed));
  }
}

TEST_CASE("malformed JSON is reported with line and column", "[config]") {
  CHECK(contains(error_of(""), "empty file"));
  CHECK(contains(error_of("{\"task\": {\"p\": 3,}}"), "cfg.json: invalid JSON"));
  CHECK(contains(error_of("{\"task\": {\"p\": 3,}}"), "line 1"));
  CHECK(contains(error_of("{} trailing"), "invalid JSON"));
  CHECK(contains(error_of("{\"task\": {\"p\": 3}"), "invalid JSON"));
  CHECK(contains(error_of("// comment\n{}"), "invalid JSON"));
  CHECK(contains(error_of(R"({"task": {"frac_train": 1e999}})"), "cfg.json: invalid JSON: number overflow"));
  CHECK(contains(error_of("[1, 2]"), "must be a JSON object"));
  CHECK(contains(error_of(R"({"task": {"p": 3, "p": 5}})"), "duplicate key \"p\""));
}

TEST_CASE("--set overrides any key and is validated like the file", "[config]") {
  // The checks across fields run once all overrides are in, whatever their order.
  CHECK(parse_config("{}", "cfg.json", {"model.d_head=64", "model.d_model=256"}).model.integer("d_model") == 256);
  CHECK_THROWS_WITH(parse_config("{}", "cfg.json", {"model.d_head=64"}),
                    "--set model.d_head=64: /model/d_model: must equal n_heads*d_head = 4*64 (got 128)");
  Config c = parse_config("{}", "cfg.json", {"task.p=53", "train.device=cpu", "optim.weight_decay=5"});
  CHECK(c.task.integer("p") == 53);
  CHECK(c.train.device == "cpu");
  CHECK(c.optim.weight_decay == 5.0);
  CHECK(contains(error_of("{}", {"task.q=3"}), "--set task.q=3: /task/q: unknown key"));
  CHECK(contains(error_of("{}", {"task.p=abc"}), "--set task.p=abc: /task/p: must be an integer"));
  CHECK(contains(error_of("{}", {"nonsense"}), "expected section.key=value"));
  CHECK(contains(error_of("{}", {"model.d_head=16"}), "--set model.d_head=16: /model/d_model"));
  // A long value is quoted by a short prefix only.
  const std::string long_value = "train.device=" + std::string(100000, 'x');
  CHECK(error_of("{}", {long_value}).size() < 300);
}

TEST_CASE("--set model.kind switches the kind: the old kind's keys at their defaults go, others are refused", "[config]") {
  // From the defaults, and from a resolved config (config.json lists every key of its kinds).
  Config mlp = parse_config("{}", "cfg.json", {"model.kind=mlp", "model.hidden=[200, 200]", "model.encoding=one_hot"});
  CHECK(mlp.model.kind == "mlp");
  CHECK(mlp.model.integers("hidden") == std::vector<int64_t>{200, 200});
  CHECK_FALSE(config_to_json(mlp)["model"].contains("n_heads"));
  Config again = parse_config(config_file_text(parse_config("{}", "x")), "config.json", {"model.kind=mlp"});
  CHECK(again.model.kind == "mlp");
  // A transformer key the file set on purpose is not dropped silently.
  CHECK(contains(error_of(R"({"model": {"d_mlp": 64}})", {"model.kind=mlp"}),
                 "/model/d_mlp: belongs to model.kind \"transformer\""));
  // And back: the MLP's defaults go too; its keys set on purpose are refused.
  const auto default_mlp = config_file_text(parse_config("{}", "x", {"model.kind=mlp"}));
  CHECK(parse_config(default_mlp, "config.json", {"model.kind=transformer"}).model.kind == "transformer");
  CHECK(contains(error_of(config_file_text(mlp), {"model.kind=transformer"}), "belongs to model.kind \"mlp\""));
}

TEST_CASE("Grokfast's amplification defaults to the reference commands' (EMA 2, MA 5)", "[config]") {
  CHECK(parse_config("{}", "x", {"optim.grokfast=ema"}).optim.grokfast_amplification() == 2.0);
  CHECK(parse_config("{}", "x", {"optim.grokfast=ma"}).optim.grokfast_amplification() == 5.0);
  CHECK(parse_config("{}", "x", {"optim.grokfast=ma", "optim.grokfast_lamb=3"}).optim.grokfast_amplification() == 3.0);
  // A config.json written before the filters had defaults of their own still reads.
  CHECK_NOTHROW(parse_config(R"({"optim": {"grokfast": "none", "grokfast_lamb": 2.0}})", "x"));
}

TEST_CASE("operations follow Power et al.", "[config]") {
  CHECK(apply_operation("add", 100, 20, 113) == 7);
  CHECK(apply_operation("sub", 3, 5, 7) == 5);
  CHECK(apply_operation("div", 6, 3, 7) == 2);
  CHECK(apply_operation("div", 6, 0, 7) == -1);
  for (int64_t b = 1; b < 7; ++b) CHECK(apply_operation("div", apply_operation("mul", 4, b, 7), b, 7) == 4);
  CHECK(apply_operation("x^3+xy^2+y", 2, 3, 97) == (8 + 18 + 3) % 97);
}

TEST_CASE("text helpers: numbers, number lists, shapes and CSV rows", "[config]") {
  CHECK(format_number(0.1234567, "%.3f") == "0.123");
  CHECK(format_number(1e-5, "%g") == "1e-05");
  CHECK(optional_json(std::nullopt).is_null());
  CHECK(optional_json(int64_t(7)) == 7);
  CHECK(parse_int_list("1,2,5-7", "--x") == std::vector<int64_t>{1, 2, 5, 6, 7});
  CHECK(parse_int_list("-3", "--x") == std::vector<int64_t>{-3});
  CHECK_THROWS_AS(parse_int_list("", "--x"), UsageError);
  CHECK_THROWS_AS(parse_int_list("7-5", "--x"), UsageError);
  CHECK_THROWS_AS(parse_int_list("1,,2", "--x"), UsageError);
  CHECK_THROWS_WITH(parse_int_list("1,x", "--freqs"), "--freqs: expected numbers like 1,2,5-7 (got '1,x')");
  CHECK(format_shape({114, 128}) == "[114, 128]");
  CHECK(format_shape({}) == "[]");
  CHECK(join_numbers({}) == "-");
  CHECK(join_numbers({8, 19}, ",") == "8,19");

  CsvWriter csv({"name", "x", "n", "j"});
  csv.field("plain").field(0.1).field(int64_t(3)).field(nlohmann::json()).end_row();
  csv.field("a, \"b\"").field(1.0 / 3).field(-1).field(nlohmann::json("s,t")).end_row();
  CHECK(csv.text() == "name,x,n,j\nplain,0.1,3,\n\"a, \"\"b\"\"\",0.333333333,-1,\"s,t\"\n");
  csv.field("short");
  CHECK_THROWS_AS(csv.end_row(), std::logic_error);
}
