// Activation and path patching (patching.hpp).
#include "grokking/patching.hpp"

#include "grokking/analysis.hpp"
#include "grokking/error.hpp"
#include "grokking/irreps.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <random>
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

void require_one(const Model& model) {
  if (model.replicas() != 1) throw std::logic_error("patch: one model");
}
void require_heads(const Model& model) {
  require_one(model);
  if (model.arch().attention_layers() == 0) throw UsageError("path patching reads attention heads; this model has none");
}

bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}

// Slice k of a site's activation (a view): along its dimension, or an operand's half of an
// MLP's [N, 2 d_embed] embedding, or the whole.
torch::Tensor slice_of(const torch::Tensor& x, const PatchSite& site, int64_t k) {
  if (site.dim < 0) return x;
  if (site.axis == "operand") {
    const int64_t w = x.size(1) / 2;
    return x.narrow(1, k * w, w);
  }
  return x.select(site.dim, k);
}
int64_t slices_of(const torch::Tensor& x, const PatchSite& site) {
  return site.dim < 0 ? 1 : site.axis == "operand" ? 2 : x.size(site.dim);
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
  require_heads(model);
  if (has_layer_norm(model)) throw UsageError("path patching needs a model without LayerNorm (the paths would not add up)");
  torch::NoGradGuard no_grad;
  return path_effect(model, sets, cache_both(model, sets), edges);
}

double patch_path(const Model& model, const PatchSets& sets, int64_t sl, int64_t sh, const std::string& input,
                  int64_t rl, int64_t rh) {
  return patch_paths(model, sets, {{sl, sh, input, rl, rh}});
}

std::vector<PatchSite> patch_sites(const ActivationCache& clean) {
  std::vector<PatchSite> out;
  for (auto& n : clean.names()) {
    if (n == "hook_embed") out.push_back({n, clean[n].dim() == 3 ? "position" : "operand", 1});
    else if (ends_with(n, ".hook_resid_pre") || ends_with(n, ".hook_mlp_out")) out.push_back({n, "position", 1});
    else if (ends_with(n, ".attn.hook_q") || ends_with(n, ".attn.hook_k") || ends_with(n, ".attn.hook_v") ||
             ends_with(n, ".attn.hook_z"))
      out.push_back({n, "head", 2});
    else if (n.rfind("hidden.", 0) == 0 && ends_with(n, ".hook_post")) out.push_back({n, "all", -1});
    else if (n == "hook_hidden") out.push_back({n, "unit", 1});
  }
  return out;
}

namespace {

// The units of subspace patching: a cycle's frequencies, or a group's irreps (from 1).
struct Units {
  bool group = false;
  int64_t count = 0;  // frequencies 1..count, irreps 1..count
  std::optional<Cycle> cycle;
  std::optional<GroupStructure> gs;
  std::string name() const { return group ? "irreps" : "frequencies"; }
};
Units units_of(const Model& model) {
  Units u;
  const Capabilities caps = capabilities_of(model.config());
  if (caps.has(Capability::group)) {
    u.group = true, u.gs = group_structure(model.config().task), u.count = int64_t(u.gs->irreps.size());
  } else {
    u.cycle = cycle_of(model.config().task), u.count = n_frequencies(u.cycle->n);
  }
  return u;
}

// Each operand's hook_embed slot (a transformer's position o, an MLP's half o) restricted to
// the span of the units' directions of that operand's embedding: for frequencies the rows of
// F W_E that hold them, for irreps the row space of their isotypic part of W_E (sum of the
// projectors, applied over the elements); the projection [w, w] per operand, float32; `dims`
// the span's dimension.
std::vector<torch::Tensor> unit_projections(const Model& model, const Units& u, const std::vector<int64_t>& units,
                                            int64_t* dims) {
  for (auto k : units)
    if (k < 1 || k > u.count)
      throw UsageError(std::string(u.group ? "irrep " : "frequency ") + std::to_string(k) + " is not among 1.." +
                       std::to_string(u.count));
  std::vector<torch::Tensor> out;
  for (auto& e : operand_embeddings(model)) {  // [values, w] float64 each
    torch::Tensor basis;                       // [w, r] orthonormal
    if (u.group) {
      auto Q = torch::zeros({e.size(0), e.size(0)}, torch::kFloat64);
      for (auto k : units) Q += u.gs->projectors[size_t(k - 1)];
      const auto svd = at::linalg_svd(Q.mm(e).t(), /*full_matrices=*/false);
      const auto& U = std::get<0>(svd);
      const auto& S = std::get<1>(svd);
      const int64_t r = S.gt(1e-9 * std::max(S.max().item<double>(), 1e-300)).sum().item<int64_t>();
      basis = U.narrow(1, 0, r);
    } else {
      const auto F = fourier_basis(u.cycle->n);
      const auto g = F.mm(on_cycle(e, *u.cycle));  // [n, w]: the embedding's component of each basis row
      std::vector<int64_t> rows;
      for (auto k : units)
        for (auto r : frequency_rows(u.cycle->n, k)) rows.push_back(r);
      basis = std::get<0>(at::linalg_qr(g.index_select(0, torch::tensor(rows, torch::kInt64)).t()));
    }
    if (dims) *dims = basis.size(1);
    out.push_back(basis.mm(basis.t()).to(torch::kFloat32));
  }
  return out;
}

double units_restored(const Model& model, const PatchSets& sets, const Runs& runs, const Units& u,
                      const std::vector<int64_t>& units, int64_t* dims) {
  if (!runs.clean.has("hook_embed"))
    throw UsageError("subspace patching reads the operands' embeddings (hook_embed); this model has none");
  const auto proj = unit_projections(model, u, units, dims);
  const auto& clean = runs.clean["hook_embed"];
  const PatchSite site{"hook_embed", clean.dim() == 3 ? "position" : "operand", 1};
  Replace hooks;
  hooks.add("hook_embed", [&](const torch::Tensor& x) {
    auto out = x.clone();
    for (int64_t o = 0; o < 2; ++o) {
      const auto& p = proj[size_t(std::min<int64_t>(o, int64_t(proj.size()) - 1))].to(x.device());
      auto slot = slice_of(out, site, o);
      slot.add_((slice_of(clean, site, o).to(x.device()) - slice_of(x, site, o)).matmul(p));
    }
    return out;
  });
  return normalised(corrupted_with(model, sets, hooks), runs);
}

}  // namespace

double patch_frequencies(const Model& model, const PatchSets& sets, const std::vector<int64_t>& freqs, int64_t* dims) {
  require_one(model);
  torch::NoGradGuard no_grad;
  return units_restored(model, sets, cache_both(model, sets), units_of(model), freqs, dims);
}

PatchReport patch(const Model& model, const PatchSets& sets, const std::vector<int64_t>& key_freqs, int64_t draws,
                  uint64_t seed) {
  require_one(model);
  torch::NoGradGuard no_grad;
  const Runs runs = cache_both(model, sets);
  PatchReport r;
  r.metric_name = sets.metric_name, r.corruption = sets.corruption;
  r.clean = runs.clean_metric, r.corrupted = runs.corrupted_metric;
  r.layers = model.arch().attention_layers(), r.heads = model.arch().attention_heads();
  r.positions = sets.clean.dim() >= 2 ? sets.clean.size(1) : 0;

  // ---- activation patching: every site, one slice at a time ----
  if (r.layers > 0) r.resid.assign(size_t(r.layers), {}), r.head_out.assign(size_t(r.layers), {});
  for (const auto& site : patch_sites(runs.clean)) {
    const auto& clean = runs.clean[site.activation];
    for (int64_t k = 0; k < slices_of(clean, site); ++k) {
      Replace hooks;
      hooks.add(site.activation, [&, k](const torch::Tensor& x) {
        auto out = x.clone();
        slice_of(out, site, k).copy_(slice_of(clean, site, k));
        return out;
      });
      const double v = normalised(corrupted_with(model, sets, hooks), runs);
      r.sites.push_back({site.activation, site.axis, site.dim < 0 ? 0 : k, v});
      // The figure's views: blocks.L.hook_resid_pre and blocks.L.attn.hook_z.
      const bool resid = ends_with(site.activation, ".hook_resid_pre"), z = ends_with(site.activation, ".attn.hook_z");
      if (resid || z) {
        const auto l = size_t(std::stol(site.activation.substr(7)));  // "blocks.L."
        (resid ? r.resid : r.head_out).at(l).push_back(v);
      }
    }
  }

  // ---- subspace patching: the key units' directions, as many others, every unit ----
  if (!key_freqs.empty() && runs.clean.has("hook_embed")) {
    const Units u = units_of(model);
    const std::string unit = u.name();
    PatchReport::Subspace key{"key " + unit, key_freqs};
    key.recovered = key.low = key.high = units_restored(model, sets, runs, u, key_freqs, &key.dims);
    r.subspaces.push_back(key);
    std::vector<int64_t> others;
    for (int64_t k = 1; k <= u.count; ++k)
      if (std::find(key_freqs.begin(), key_freqs.end(), k) == key_freqs.end() &&
          !(u.group && u.gs->irreps[size_t(k - 1)].trivial()))
        others.push_back(k);
    if (int64_t(others.size()) >= int64_t(key_freqs.size())) {
      PatchReport::Subspace ctl{"other " + unit, {}};
      ctl.draws = draws, ctl.low = 1e300, ctl.high = -1e300;
      std::mt19937_64 rng(seed * 1000003u + 0xf7e9);
      for (int64_t d = 0; d < draws; ++d) {
        auto pool = others;
        std::shuffle(pool.begin(), pool.end(), rng);
        pool.resize(key_freqs.size());
        std::sort(pool.begin(), pool.end());
        const double v = units_restored(model, sets, runs, u, pool, &ctl.dims);
        ctl.recovered += v / double(draws), ctl.low = std::min(ctl.low, v), ctl.high = std::max(ctl.high, v);
        if (d == 0) ctl.freqs = pool;
      }
      r.subspaces.push_back(ctl);
    }
    std::vector<int64_t> all(static_cast<size_t>(u.count));
    for (int64_t k = 1; k <= u.count; ++k) all[size_t(k - 1)] = k;
    PatchReport::Subspace every{u.group ? "every irrep" : "every frequency", {}};
    every.recovered = every.low = every.high = units_restored(model, sets, runs, u, all, &every.dims);
    r.subspaces.push_back(every);
  }

  // ---- paths: every head to every later head's q, k and v, and to the logits ----
  if (r.layers == 0 || has_layer_norm(model)) return r;
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
