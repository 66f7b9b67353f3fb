// The model kinds, in documentation order. A new model kind: a file in this folder defining
// `const ModelKind& NAME_model()`, and its name in this list.
#include "grokking/kinds.hpp"

#define GROKKING_MODEL_KINDS(X) X(transformer) X(mlp) X(toy_superposition) X(toy_mlp)

namespace grokking {

#define GROKKING_DECLARE(name) const ModelKind& name##_model();
GROKKING_MODEL_KINDS(GROKKING_DECLARE)
#undef GROKKING_DECLARE

const std::vector<const ModelKind*>& model_kinds() {
#define GROKKING_ENTRY(name) &name##_model(),
  static const std::vector<const ModelKind*> kinds = {GROKKING_MODEL_KINDS(GROKKING_ENTRY)};
#undef GROKKING_ENTRY
  return kinds;
}

}  // namespace grokking
