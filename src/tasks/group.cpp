// The group task (task.kind "group"): every pair (a, b) of a finite group's elements under
// composition (a.b) or Power et al.'s a.b.a^-1 and a.b.a; inputs [a, b, =], the label at the last
// position, a fixed split of the pairs drawn from task.seed (Chughtai, Chan and Nanda 2023).
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "grokking/error.hpp"
#include "grokking/groups.hpp"
#include "grokking/rundir.hpp"
#include "grokking/task.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {

TaskShape group_shape(const TaskConfig& t) {
  TaskShape s;
  const int64_t n = group_order(t.text("group"), "/task/group");
  s.target = TaskShape::Target::last;
  s.vocab = n + 1, s.seq_len = 3, s.classes = n, s.operand_values = n;
  s.eval_examples = n * n;
  s.train_examples = static_cast<int64_t>(std::floor(t.real("frac_train") * double(s.eval_examples)));
  return s;
}

// The group's elements as group.json records them: what analysis and Python read.
std::string group_file_text(const FiniteGroup& g, const std::string& op) {
  nlohmann::json j = {{"group", g.name}, {"order", g.order}, {"operation", op}, {"identity", 0}, {"elements", g.names}};
  if (!g.images.empty()) j["images"] = g.images;
  j["convention"] = g.family == "C"   ? "k: the residue k; a.b = a + b mod n"
                    : g.family == "D" ? "index k: r^k; index n + k: r^k s; r^a s^f . r^b s^g = r^(a + (-1)^f b) s^(f+g)"
                                      : "images[i] = p(i); (a.b)(i) = a(b(i)) (b first)";
  return j.dump(1) + "\n";
}

class GroupTask : public Task {
 public:
  explicit GroupTask(const TaskConfig& t)
      : Task(group_shape(t)), group_(make_group(t.text("group"), "/task/group")), op_(t.text("operation")) {
    const int64_t n = group_.order;
    std::vector<int64_t> tokens, labels;
    tokens.reserve(size_t(n * n * 3));
    for (int32_t a = 0; a < n; ++a)
      for (int32_t b = 0; b < n; ++b) {
        tokens.insert(tokens.end(), {a, b, n});
        labels.push_back(group_operation(group_, op_, a, b));
      }
    Dataset& d = data_;
    d.all_x = torch::tensor(tokens, torch::kInt64).view({n * n, 3});
    d.all_y = torch::tensor(labels, torch::kInt64);
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(t.seed));
    auto perm = torch::randperm(n * n, gen, torch::kInt64);
    const int64_t n_train = shape().train_examples;
    auto train_idx = perm.slice(0, 0, n_train), test_idx = perm.slice(0, n_train);
    d.train_x = d.all_x.index_select(0, train_idx), d.train_y = d.all_y.index_select(0, train_idx);
    d.test_x = d.all_x.index_select(0, test_idx), d.test_y = d.all_y.index_select(0, test_idx);
    d.train_mask = torch::zeros({n * n}, torch::kBool).index_fill_(0, train_idx, true);
  }
  const Dataset& dataset() const override { return data_; }

  void write_files(const std::string& run_dir, bool resume) const override {
    const std::string path = run_dir + "/group.json", text = group_file_text(group_, op_);
    if (resume && exists(path)) {
      if (read_file(path) != text)
        throw RunError(path + ": does not match the run's config (task.group " + group_.name + ", operation " + op_ +
                       "): written by another version or edited");
      return;
    }
    atomic_write(path, text);
  }

 private:
  FiniteGroup group_;
  std::string op_;
  Dataset data_;
};

void group_validate(const Config& c, const std::string& origin) {
  auto bad = [&](const std::string& ptr, const std::string& what) { throw UsageError(origin + ": " + ptr + ": " + what); };
  const auto& t = c.task;
  const std::string spec = t.text("group");
  (void)group_order(spec, origin + ": /task/group");
  const std::string& op = t.text("operation");
  if (op == "conjugate" && make_group(spec, origin + ": /task/group").abelian())
    bad("/task/operation", "\"conjugate\" (a.b.a^-1) is b itself in the abelian group " + spec +
                               ": the label would not depend on a; use compose or a*b*a");
  const TaskShape s = group_shape(t);
  if (s.train_examples < 1 || s.train_examples >= s.eval_examples)
    bad("/task/frac_train", "leaves an empty train or test set: " + std::to_string(s.train_examples) + " of " +
                                std::to_string(s.eval_examples) + " pairs (got " +
                                format_number(t.real("frac_train"), "%g") + ")");
}

}  // namespace

const TaskKind& group_task() {
  static const TaskKind kind = [] {
    TaskKind k;
    k.name = "group";
    k.doc = "composition in a finite group on every pair (Chughtai et al. 2023; Power et al. 2022's S5 tasks): inputs [a, b, =]";
    k.keys = {
        text_key("group", "S5",
                 "C<n> cyclic, D<n> dihedral (order 2n), S<n> symmetric (n <= 6), A<n> alternating (n <= 5); elements in the order of group.json, the identity first"),
        choice_key("operation", "compose", group_operation_names(),
                   "compose: a.b; conjugate: a.b.a^-1; a*b*a: a.b.a (Power et al.'s S5 tasks)"),
        real_key("frac_train", 0.6, 0, true, 1, true, "fraction of all pairs in the training set"),
    };
    k.size_key = "group";
    k.shape = group_shape;
    k.describe = [](const TaskConfig& t) { return t.text("operation") + " in " + t.text("group"); };
    // A cyclic group under composition is addition mod n: its Fourier analysis applies too.
    k.structure = [](const TaskConfig& t) {
      Capabilities c;
      c.add(Capability::pairs).add(Capability::group);
      if (t.text("group").rfind('C', 0) == 0 && t.text("operation") == "compose") c.add(Capability::cycle);
      return c;
    };
    k.validate = group_validate;
    k.make = [](const std::vector<TaskConfig>& replicas) -> std::unique_ptr<Task> {
      return std::make_unique<GroupTask>(replicas.at(0));
    };
    return k;
  }();
  return kind;
}

}  // namespace grokking
