// The generic model: the flat parameter store, initialisation, replicas and the registry's
// architectures. What a kind computes lives in src/models/.
#include "grokking/model.hpp"

#include <algorithm>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "grokking/error.hpp"
#include "grokking/text.hpp"

namespace grokking {

namespace {
int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}
}  // namespace

std::shared_ptr<const Architecture> make_architecture(const Config& cfg) {
  return find_model_kind(cfg.model.kind).make(cfg, task_shape(cfg.task));
}

std::vector<ParamSpec> param_specs(const Config& cfg) { return make_architecture(cfg)->params(); }

Capabilities capabilities_of(const Config& cfg) {
  const auto& kind = find_task_kind(cfg.task.kind);
  Capabilities c;
  if (kind.structure) c.add(kind.structure(cfg.task));
  const auto arch = make_architecture(cfg);
  if (arch->attention_layers() > 0 && arch->attention_heads() > 0) c.add(Capability::heads);
  if (const auto* r = arch->pair_readout()) {
    c.add(Capability::pair_readout);
    if (!r->neuron_to_logits.empty()) c.add(Capability::neurons);
  }
  if (const auto* f = arch->feature_readout()) {
    c.add(Capability::feature_matrix);
    if (!f->neurons_in.empty()) c.add(Capability::neurons);  // a toy_mlp's ReLU layer
  }
  return c;
}

Model::Model(const Config& cfg, std::vector<int64_t> seeds)
    : cfg_(cfg), shape_(task_shape(cfg.task)), arch_(make_architecture(cfg)),
      seeds_(seeds.empty() ? std::vector<int64_t>{cfg.train.seed} : std::move(seeds)), specs_(arch_->params()) {
  int64_t n = 0;
  for (auto& s : specs_) n += numel(s.shape);
  const int64_t S = replicas();
  flat_ = torch::zeros({S * n}, torch::kFloat32);
  flat_grad_ = torch::zeros({S * n}, torch::kFloat32);

  // Initialise on the CPU, parameter by parameter in spec order, from one seeded generator per
  // replica; only random inits draw from it. Layout: parameter-major, each parameter one
  // contiguous [S, ...] block.
  for (int64_t r = 0; r < S; ++r) {
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seeds_[size_t(r)]));
    int64_t off = 0;
    for (auto& s : specs_) {
      const int64_t k = numel(s.shape);
      auto dst = flat_.narrow(0, off + r * k, k);
      const double scale = s.init.scale * cfg.model.init_scale;  // Omnigrok's alpha (1 by default: the same bits)
      switch (s.init.kind) {
        case ParamInit::Kind::normal: dst.copy_(torch::randn({k}, gen, torch::kFloat32) * scale); break;
        case ParamInit::Kind::uniform: dst.copy_((torch::rand({k}, gen, torch::kFloat32) * 2 - 1) * scale); break;
        case ParamInit::Kind::ones: dst.fill_(cfg.model.init_scale); break;
        case ParamInit::Kind::zeros: break;
      }
      off += S * k;
    }
  }
  bind_views();
}

void Model::bind_views() {
  torch::NoGradGuard no_grad;
  params_.clear();
  const int64_t S = replicas();
  int64_t off = 0;
  for (auto& s : specs_) {
    const int64_t k = S * numel(s.shape);
    std::vector<int64_t> shape = s.shape;
    if (S > 1) shape.insert(shape.begin(), S);
    auto v = flat_.narrow(0, off, k).view(shape);
    if (s.trained) {
      v.requires_grad_(true);
      // Gradients accumulate in place into a view of one flat buffer, so the optimiser
      // updates every parameter with a few kernels.
      v.mutable_grad() = flat_grad_.narrow(0, off, k).view(shape);
    }
    params_.emplace_back(s.name, v);
    off += k;
  }
}

torch::Tensor replica_part(const torch::Tensor& flat, const std::vector<ParamBlock>& blocks, int64_t r) {
  std::vector<torch::Tensor> parts;
  for (auto& b : blocks) parts.push_back(flat.narrow(-1, b.offset + r * b.numel, b.numel));
  return torch::cat(parts, -1);
}

torch::Tensor pack_replica_parts(const std::vector<torch::Tensor>& parts, const std::vector<ParamBlock>& blocks) {
  std::vector<torch::Tensor> out;
  int64_t one = 0;  // the block's offset in a single model's buffer
  for (auto& b : blocks) {
    for (auto& p : parts) out.push_back(p.narrow(-1, one, b.numel));
    one += b.numel;
  }
  return torch::cat(out, -1);
}

torch::Tensor Model::replica_part(const torch::Tensor& flat, int64_t s) const {
  return replicas() == 1 ? flat : grokking::replica_part(flat, param_blocks(), s);
}

std::vector<ParamBlock> Model::param_blocks() const {
  std::vector<ParamBlock> out;
  int64_t off = 0;
  for (auto& spec : specs_) {
    out.push_back({off, numel(spec.shape)});
    off += replicas() * numel(spec.shape);
  }
  return out;
}

Model Model::replica(int64_t s) const {
  torch::NoGradGuard no_grad;
  Model m = *this;  // no fresh initialisation: only the weights are replaced
  m.cfg_.train.seed = seeds_[size_t(s)];
  m.seeds_ = {seeds_[size_t(s)]};
  m.flat_ = replica_part(flat_.detach(), s).clone();
  m.flat_grad_ = torch::zeros_like(m.flat_);
  m.bind_views();
  return m;
}

void Model::set_config(const Config& cfg) {
  // The task's keys that runs of one pack may differ in (a sparse-feature run's sparsity and
  // importances) leave the model as it is; every other task and model key must agree.
  auto shape_keys = [&](const Config& c) {
    auto j = config_to_json(c);
    for (auto& key : pack_varying_keys(c))
      if (key.rfind("task.", 0) == 0) j["task"].erase(key.substr(5));
    return j;
  };
  const auto a = shape_keys(cfg), b = shape_keys(cfg_);
  if (a["task"] != b["task"] || a["model"] != b["model"] || replicas() != 1 || cfg.train.seed != seeds_[0])
    throw std::invalid_argument("Model::set_config: another task, model or seed");
  cfg_ = cfg;
}

Model Model::clone() const {
  if (replicas() != 1) throw std::logic_error("clone copies one model; use replica(s)");
  return replica(0);
}

torch::Tensor Model::param(const std::string& name) const {
  for (auto& [n, t] : params_)
    if (n == name) return t;
  throw std::logic_error("no parameter " + name);
}

bool Model::has_param(const std::string& name) const {
  for (auto& entry : params_)
    if (entry.first == name) return true;
  return false;
}

void Model::to(torch::Device device) {
  if (flat_.device() == device) return;
  flat_ = flat_.to(device);
  flat_grad_ = flat_grad_.to(device);
  bind_views();
}

void Model::load(const std::vector<std::pair<std::string, torch::Tensor>>& weights) {
  torch::NoGradGuard no_grad;
  for (auto& [name, value] : weights) {
    auto dst = param(name);
    if (dst.sizes() != value.sizes())
      throw RunError("parameter " + name + " has shape " + format_shape(value.sizes().vec()) + "; the model's is " +
                     format_shape(dst.sizes().vec()));
    dst.copy_(value);
  }
}

double Model::sum_squared_weights() const {
  torch::NoGradGuard no_grad;
  return flat_.to(torch::kFloat64).pow(2).sum().item<double>();
}

torch::Tensor Architecture::forward_hooked(const Model& m, const torch::Tensor&, ActivationHooks&) const {
  throw UsageError("model.kind \"" + m.config().model.kind + "\" names no activations");
}

bool ActivationCache::wants(const std::string& name) const {
  return only_.empty() || std::find(only_.begin(), only_.end(), name) != only_.end();
}

torch::Tensor ActivationCache::at(const std::string& name, const torch::Tensor& act) {
  if (!acts_.count(name)) order_.push_back(name);
  acts_[name] = act.detach();
  return act;
}

const torch::Tensor& ActivationCache::operator[](const std::string& name) const {
  auto it = acts_.find(name);
  if (it == acts_.end()) throw std::out_of_range("no activation named " + name + " in the cache");
  return it->second;
}

std::vector<std::string> ActivationCache::names() const { return order_; }

torch::Tensor Model::run_with_hooks(const torch::Tensor& x, ActivationHooks& hooks) const {
  if (replicas() != 1) throw std::logic_error("activations are named for one model; use replica(s)");
  return arch_->forward_hooked(*this, x, hooks).squeeze(0);
}

torch::Tensor Model::outputs(const torch::Tensor& x, bool fast) const {
  return fast && arch_->has_fast_path() ? arch_->forward_fast(*this, x, nullptr) : arch_->forward(*this, x, nullptr);
}

torch::Tensor Model::forward(const torch::Tensor& x, Cache* cache) const {
  if (cache && replicas() != 1) throw std::logic_error("a cache is filled for one model; use replica(s)");
  auto out = arch_->forward(*this, x, cache);
  return replicas() == 1 ? out.squeeze(0) : out;
}

torch::Tensor Model::forward_fast(const torch::Tensor& x, Cache* cache) const {
  if (cache && replicas() != 1) throw std::logic_error("a cache is filled for one model; use replica(s)");
  auto out = arch_->has_fast_path() ? arch_->forward_fast(*this, x, cache) : arch_->forward(*this, x, cache);
  return replicas() == 1 ? out.squeeze(0) : out;
}

torch::Device resolve_device(const std::string& spec) {
  if (spec == "cpu") return torch::kCPU;
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  if (!torch::cuda::is_available())
    throw UsageError("/train/device: '" + spec + "' requested but " +
                     (torch::hasCUDA() ? std::string("no CUDA device is visible")
                                       : std::string("this LibTorch was built without CUDA")) +
                     "; use cpu or auto");
  torch::Device dev(spec);
  if (dev.has_index() && dev.index() >= int(torch::cuda::device_count()))
    throw UsageError("/train/device: '" + spec + "': only " + std::to_string(torch::cuda::device_count()) +
                     " CUDA device(s)");
  return dev;
}

}  // namespace grokking
