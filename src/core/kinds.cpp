// Keys of the kinds: how each sort of value is read and checked. Torch-free.
#include "grokking/kinds.hpp"

#include <algorithm>
#include <cmath>

#include "grokking/config.hpp"
#include "grokking/error.hpp"
#include "grokking/text.hpp"

namespace grokking {
using nlohmann::json;

namespace {

// An integer value: JSON integers, and reals with no fractional part (3.0), within int64.
bool as_integer(const json& v, int64_t& out) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) return false;
    out = v.get<int64_t>();
    return true;
  }
  if (v.is_number_float() && std::isfinite(v.get<double>()) && std::floor(v.get<double>()) == v.get<double>() &&
      std::fabs(v.get<double>()) < 9e18) {
    out = static_cast<int64_t>(v.get<double>());
    return true;
  }
  return false;
}

std::string real_range(double lo, bool lo_open, double hi, bool hi_open) {
  return std::string(lo_open ? "(" : "[") + format_number(lo, "%g") + ", " +
         (std::isinf(hi) ? "inf" : format_number(hi, "%g")) + (hi_open ? ")" : "]");
}

}  // namespace

KindKey integer_key(const std::string& key, int64_t def, int64_t lo, int64_t hi, const std::string& doc,
                    const std::string& why_hi) {
  const std::string range = "[" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  const std::string why = why_hi.empty() ? std::string() : "; " + why_hi;
  return {key, def, doc, [=](const json& v, const std::string& where) {
            int64_t x = 0;
            if (!as_integer(v, x)) {
              if (v.is_number_integer()) fail_got(where, "must be an integer in " + range + why, v);  // past int64
              fail_got(where, "must be an integer", v);
            }
            if (x < lo) fail_got(where, "must be an integer in " + range, v);
            if (x > hi) fail_got(where, "must be an integer in " + range + why, v);
            return json(x);
          }};
}

KindKey real_key(const std::string& key, double def, double lo, bool lo_open, double hi, bool hi_open,
                 const std::string& doc) {
  return {key, def, doc, [=](const json& v, const std::string& where) {
            if (!v.is_number()) fail_got(where, "must be a number", v);
            const double x = v.get<double>();
            const std::string range = real_range(lo, lo_open, hi, hi_open);
            if (!std::isfinite(x)) fail_got(where, "must be a finite number in " + range, v);
            if ((lo_open ? x <= lo : x < lo) || (hi_open ? x >= hi : x > hi)) fail_got(where, "must be in " + range, v);
            return json(x);
          }};
}

KindKey bool_key(const std::string& key, bool def, const std::string& doc) {
  return {key, def, doc, [](const json& v, const std::string& where) {
            if (!v.is_boolean()) fail_got(where, "must be true or false", v);
            return v;
          }};
}

KindKey choice_key(const std::string& key, const std::string& def, const std::vector<std::string>& choices,
                   const std::string& doc) {
  return {key, def, doc, [=](const json& v, const std::string& where) {
            if (!v.is_string()) fail_got(where, "must be a string", v);
            if (std::find(choices.begin(), choices.end(), v.get<std::string>()) == choices.end())
              fail_got(where, "must be one of " + join_comma(choices), v);
            return v;
          }};
}

KindKey text_key(const std::string& key, const std::string& def, const std::string& doc) {
  return {key, def, doc, [](const json& v, const std::string& where) {
            if (!v.is_string()) fail_got(where, "must be a string", v);
            return v;
          }};
}

KindKey integer_list_key(const std::string& key, std::vector<int64_t> def, int64_t lo, int64_t hi, size_t max_len,
                         const std::string& doc) {
  const std::string what = "must be a list of 1 to " + std::to_string(max_len) + " integers in [" +
                           std::to_string(lo) + ", " + std::to_string(hi) + "]";
  return {key, def, doc, [=](const json& v, const std::string& where) {
            if (!v.is_array() || v.empty() || v.size() > max_len) fail_got(where, what, v);
            json out = json::array();
            for (auto& e : v) {
              int64_t x = 0;
              if (!as_integer(e, x) || x < lo || x > hi) fail_got(where, what, v);
              out.push_back(x);
            }
            return out;
          }};
}

KindKey real_list_key(const std::string& key, std::vector<double> def, double lo, double hi, size_t max_len,
                      const std::string& doc) {
  const std::string what = "must be a list of at most " + std::to_string(max_len) + " finite numbers in " +
                           real_range(lo, false, hi, false);
  return {key, def, doc, [=](const json& v, const std::string& where) {
            if (!v.is_array() || v.size() > max_len) fail_got(where, what, v);
            json out = json::array();
            for (auto& e : v) {
              if (!e.is_number() || !std::isfinite(e.get<double>()) || e.get<double>() < lo || e.get<double>() > hi)
                fail_got(where, what, v);
              out.push_back(e.get<double>());
            }
            return out;
          }};
}

namespace {
template <class Kind>
std::string names_of(const std::vector<const Kind*>& kinds) {
  std::vector<std::string> names;
  for (auto* k : kinds) names.push_back(k->name);
  return join_comma(names);
}
template <class Kind>
const Kind& find_kind(const std::vector<const Kind*>& kinds, const std::string& name, const std::string& where) {
  for (auto* k : kinds)
    if (k->name == name) return *k;
  fail_got(where, "must be one of " + names_of(kinds), json(name));
}
}  // namespace

std::string task_kind_names() { return names_of(task_kinds()); }
std::string model_kind_names() { return names_of(model_kinds()); }
const TaskKind& find_task_kind(const std::string& name, const std::string& where) {
  return find_kind(task_kinds(), name, where);
}
const ModelKind& find_model_kind(const std::string& name, const std::string& where) {
  return find_kind(model_kinds(), name, where);
}

TaskShape task_shape(const TaskConfig& task) { return find_task_kind(task.kind).shape(task); }

}  // namespace grokking

namespace grokking {

const std::vector<Capability>& all_capabilities() {
  static const std::vector<Capability> all = {Capability::pairs,        Capability::cycle,   Capability::group,
                                              Capability::sequence,     Capability::features, Capability::heads,
                                              Capability::pair_readout, Capability::neurons, Capability::feature_matrix};
  return all;
}

const char* capability_name(Capability c) {
  switch (c) {
    case Capability::pairs: return "pairs";
    case Capability::cycle: return "cycle";
    case Capability::group: return "group";
    case Capability::sequence: return "sequence";
    case Capability::features: return "features";
    case Capability::heads: return "heads";
    case Capability::pair_readout: return "pair_readout";
    case Capability::neurons: return "neurons";
    case Capability::feature_matrix: return "feature_matrix";
  }
  return "?";
}

const char* capability_doc(Capability c) {
  switch (c) {
    case Capability::pairs: return "a task on every pair (a, b) of an operation, with a fixed split";
    case Capability::cycle: return "an operation on a cycle (add, sub; mul, div mod a prime; C_n): a Fourier basis";
    case Capability::group: return "a finite group task (its table, characters and irreps)";
    case Capability::sequence: return "a sequence task (next-token prediction, a repeated half)";
    case Capability::features: return "a sparse-features task (features reconstructed)";
    case Capability::heads: return "a model with attention heads";
    case Capability::pair_readout: return "a model read on a pair task (embedding rows, unembedding, W_L)";
    case Capability::neurons: return "a model with hidden neurons (an MLP layer writing to the logits, a toy_mlp's ReLU layer)";
    case Capability::feature_matrix: return "a toy model's feature matrix W and output bias";
  }
  return "?";
}

std::string Capabilities::names() const {
  std::string out;
  for (auto c : all_capabilities())
    if (has(c)) out += (out.empty() ? "" : ", ") + std::string(capability_name(c));
  return out.empty() ? "none" : out;
}

}  // namespace grokking

namespace grokking {

std::string describe_task(const TaskConfig& task) {
  const auto& kind = find_task_kind(task.kind);
  return kind.describe ? kind.describe(task) : "task " + task.kind;
}

}  // namespace grokking
