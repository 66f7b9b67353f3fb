// The task kinds, in documentation order. A new task kind: a file in this folder defining
// `const TaskKind& NAME_task()`, and its name in this list.
#include "grokking/kinds.hpp"

#define GROKKING_TASK_KINDS(X) X(modular) X(group) X(repeat) X(sparse_features)

namespace grokking {

#define GROKKING_DECLARE(name) const TaskKind& name##_task();
GROKKING_TASK_KINDS(GROKKING_DECLARE)
#undef GROKKING_DECLARE

const std::vector<const TaskKind*>& task_kinds() {
#define GROKKING_ENTRY(name) &name##_task(),
  static const std::vector<const TaskKind*> kinds = {GROKKING_TASK_KINDS(GROKKING_ENTRY)};
#undef GROKKING_ENTRY
  return kinds;
}

}  // namespace grokking
