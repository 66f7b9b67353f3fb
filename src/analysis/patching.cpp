// Activation and path patching (patching.hpp).
#include "grokking/patching.hpp"

#include "grokking/error.hpp"

#include <cctype>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>

namespace grokking {

namespace {

std::string block(int64_t l) { return "blocks." + std::to_string(l) + "."; }

// Replaces named activations: each name's tensor with `fn` applied to what the forward offers.
class Replace : public ActivationHooks {
 public:
  using Fn = std::function<torch::Tensor(const torch::Tensor&)>;
  void add(const std::string& name, Fn fn) { fns_.emplace_back(name, std::move(fn)); }
  bool wants(const std::string& name) const override {
    for (auto& [n, f] : fns_)
      if (n == name) return true;
    return false;
  }
  torch::Tensor at(const std::string& name, const torch::Tensor& act) override {
    torch::Tensor out = act;
    for (auto& [n, f] : fns_)
      if (n == name) out = f(out);
    return out;
  }

 private:
  std::vector<std::pair<std::string, Fn>> fns_;
};

struct Runs {
  ActivationCache clean, corrupted;
  double clean_metric = 0, corrupted_metric = 0;
};

Runs cache_both(const Model& model, const PatchSets& sets) {
  Runs r;
  r.clean_metric = sets.metric(model.run_with_cache(sets.clean, r.clean));
  r.corrupted_metric = sets.metric(model.run_with_cache(sets.corrupted, r.corrupted));
  return r;
}

double normalised(double patched, const Runs& r) {
  const double span = r.clean_metric - r.corrupted_metric;
  return std::abs(span) > 1e-12 ? (patched - r.corrupted_metric) / span : std::numeric_limits<double>::quiet_NaN();
}

// The metric of the corrupted run with `hooks` applied.
double corrupted_with(const Model& model, const PatchSets& sets, Replace& hooks) {
  return sets.metric(model.run_with_hooks(sets.corrupted, hooks));
}

void require_patchable(const Model& model) {
  if (model.arch().attention_layers() == 0) throw UsageError("patching reads attention heads; this model has none");
  if (model.replicas() != 1) throw std::logic_error("patch: one model");
}

// A sender head's clean output minus its corrupted one, as it enters the residual stream:
// (z_clean - z_corrupted)[:, :, h] W_O[h], [N, T, d_model].
torch::Tensor sender_delta(const Model& model, const Runs& runs, int64_t sl, int64_t sh) {
  const std::string z = block(sl) + "attn.hook_z";
  const auto dz = (runs.clean[z] - runs.corrupted[z]).select(2, sh);  // [N, T, dh]
  return dz.matmul(model.param(block(sl) + "attn.W_O").detach()[sh]);  // [N, T, d]
}

bool has_layer_norm(const Model& model) { return model.has_param("blocks.0.ln1.w"); }

}  // namespace

namespace {
// Wang et al.'s path patching (their section 3): the clean run with the edges carrying their
// senders' corrupted outputs (each sender's difference reaches its receivers only; several
// senders into one receiver add up); the share of the clean-corrupted gap those edges close:
// (clean - patched) / (clean - corrupted).
double path_effect(const Model& model, const PatchSets& sets, const Runs& runs, const std::vector<PathEdge>& edges) {
  // Per receiver ("logits", or layer, head and input), the sum of its senders' differences.
  std::map<std::tuple<int64_t, int64_t, std::string>, torch::Tensor> into;
  for (auto& e : edges) {
    if (e.input != "logits" && (e.receiver_layer <= e.sender_layer || (e.input != "q" && e.input != "k" && e.input != "v")))
      throw std::invalid_argument("patch_paths: a receiver is a later layer's q, k or v, or the logits");
    const auto key = e.input == "logits" ? std::make_tuple(int64_t(-1), int64_t(-1), e.input)
                                         : std::make_tuple(e.receiver_layer, e.receiver_head, e.input);
    const auto delta = -sender_delta(model, runs, e.sender_layer, e.sender_head);  // corrupted minus clean
    auto it = into.find(key);
    if (it == into.end()) into.emplace(key, delta);
    else it->second = it->second + delta;
  }
  Replace hooks;
  for (auto& [key, delta] : into) {
    const auto& [rl, rh, input] = key;
    if (input == "logits") {
      // The direct path: the last block's output stream gets the difference, and only the
      // unembedding reads it.
      const int64_t last = model.arch().attention_layers() - 1;
      hooks.add(block(last) + "hook_resid_post", [d = delta](const torch::Tensor& r) { return r + d; });
      continue;
    }
    const std::string W = std::string(1, char(std::toupper(input[0])));
    const auto resid = runs.clean[block(rl) + "hook_resid_pre"];  // [N, T, d]: upstream is the clean run
    // The receiver head's input with its senders' corrupted outputs: [N, T, dh].
    const auto patched = (resid + delta).matmul(model.param(block(rl) + "attn.W_" + W).detach()[rh]) +
                         model.param(block(rl) + "attn.b_" + W).detach()[rh];
    hooks.add(block(rl) + "attn.hook_" + input, [patched, h = rh](const torch::Tensor& t) {  // [N, T, H, dh]
      auto out = t.clone();
      out.select(2, h).copy_(patched);
      return out;
    });
  }
  const double patched = sets.metric(model.run_with_hooks(sets.clean, hooks));
  const double span = runs.clean_metric - runs.corrupted_metric;
  return std::abs(span) > 1e-12 ? (runs.clean_metric - patched) / span : std::numeric_limits<double>::quiet_NaN();
}
}  // namespace

double patch_paths(const Model& model, const PatchSets& sets, const std::vector<PathEdge>& edges) {
  require_patchable(model);
  if (has_layer_norm(model)) throw UsageError("path patching needs a model without LayerNorm (the paths would not add up)");
  torch::NoGradGuard no_grad;
  return path_effect(model, sets, cache_both(model, sets), edges);
}

double patch_path(const Model& model, const PatchSets& sets, int64_t sl, int64_t sh, const std::string& input,
                  int64_t rl, int64_t rh) {
  return patch_paths(model, sets, {{sl, sh, input, rl, rh}});
}

PatchReport patch(const Model& model, const PatchSets& sets) {
  require_patchable(model);
  torch::NoGradGuard no_grad;
  const Runs runs = cache_both(model, sets);
  PatchReport r;
  r.metric_name = sets.metric_name, r.corruption = sets.corruption;
  r.clean = runs.clean_metric, r.corrupted = runs.corrupted_metric;
  r.layers = model.arch().attention_layers(), r.heads = model.arch().attention_heads();
  r.positions = sets.clean.size(1);

  // Per layer, the activation `suffix` restored one slice at a time along `dim`: [layer][slice].
  auto restored = [&](const char* suffix, int64_t dim, int64_t slices) {
    std::vector<std::vector<double>> table;
    for (int64_t l = 0; l < r.layers; ++l) {
      const std::string name = block(l) + suffix;
      const auto& clean = runs.clean[name];
      std::vector<double> row;
      for (int64_t k = 0; k < slices; ++k) {
        Replace hooks;
        hooks.add(name, [&, k](const torch::Tensor& x) {
          auto out = x.clone();
          out.select(dim, k).copy_(clean.select(dim, k));
          return out;
        });
        row.push_back(normalised(corrupted_with(model, sets, hooks), runs));
      }
      table.push_back(row);
    }
    return table;
  };
  r.resid = restored("hook_resid_pre", 1, r.positions);  // the residual stream into each block, by position
  r.head_out = restored("attn.hook_z", 2, r.heads);      // each head's output, every position

  // ---- paths: every head to every later head's q, k and v, and to the logits ----
  if (has_layer_norm(model)) return r;
  for (int64_t sl = 0; sl < r.layers; ++sl)
    for (int64_t sh = 0; sh < r.heads; ++sh) {
      for (int64_t rl = sl + 1; rl < r.layers; ++rl)
        for (int64_t rh = 0; rh < r.heads; ++rh)
          for (const char* in : {"q", "k", "v"})
            r.paths.push_back({sl, sh, "L" + std::to_string(rl) + "H" + std::to_string(rh) + "." + in,
                               path_effect(model, sets, runs, {{sl, sh, in, rl, rh}})});
      r.paths.push_back({sl, sh, "logits", path_effect(model, sets, runs, {{sl, sh, "logits", 0, 0}})});
    }
  return r;
}

}  // namespace grokking
