#include "grokking/graph_step.hpp"

#include <stdexcept>

#ifdef GROKKING_CUDA_GRAPHS
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace grokking {

torch::Tensor device_scheduled_step(Model& model, FlatAdamW& opt, const torch::Tensor& x, const torch::Tensor& y,
                                    bool fast) {
  auto loss = forward_backward(model, x, y, fast);
  opt.step_on_device();
  return loss;
}

#ifdef GROKKING_CUDA_GRAPHS

struct GraphedStep::Impl {
  static constexpr int kWarmup = 3;  // eager steps before capture, as PyTorch's recipe does
  Model& model;
  FlatAdamW& opt;
  torch::Tensor x, y;
  bool fast;
  int eager_done = 0;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  torch::Tensor loss;  // the captured step's output, rewritten by every replay
  // Tensors the graph reads and writes by address: held so that their memory stays theirs.
  std::vector<torch::Tensor> pinned;
  c10::cuda::CUDAStream side;

  Impl(Model& m, FlatAdamW& o, torch::Tensor x_, torch::Tensor y_, bool f)
      : model(m), opt(o), x(std::move(x_)), y(std::move(y_)), fast(f),
        side(c10::cuda::getStreamFromPool(false, x.device().index())) {}

  // Runs fn on the side stream after everything queued on the current one has finished, and
  // waits for it to finish (warm-up and capture only: replays run on the current stream).
  template <class F>
  auto on_side_stream(F&& fn) {
    auto current = c10::cuda::getCurrentCUDAStream(x.device().index());
    current.synchronize();
    decltype(fn()) out;
    {
      c10::cuda::CUDAStreamGuard guard(side);
      out = fn();
    }
    side.synchronize();
    return out;
  }
};

bool GraphedStep::built() { return true; }

GraphedStep::GraphedStep(Model& model, FlatAdamW& opt, torch::Tensor x, torch::Tensor y, bool fast) {
  if (!x.is_cuda() || !model.flat().is_cuda())
    throw std::invalid_argument("GraphedStep: model and batch must be on a CUDA device");
  impl_ = std::make_unique<Impl>(model, opt, std::move(x), std::move(y), fast);
}

GraphedStep::~GraphedStep() = default;

bool GraphedStep::captured() const { return impl_->graph != nullptr; }

torch::Tensor GraphedStep::run() {
  auto& s = *impl_;
  if (s.eager_done < Impl::kWarmup) {
    ++s.eager_done;
    auto loss = s.on_side_stream([&] { return device_scheduled_step(s.model, s.opt, s.x, s.y, s.fast); });
    s.opt.count_device_step();
    return loss;
  }
  if (!s.graph) {
    // Capture one step; capturing runs nothing, so this call then replays it once.
    auto graph = std::make_unique<at::cuda::CUDAGraph>();
    s.loss = s.on_side_stream([&] {
      graph->capture_begin();
      try {
        // Detached: the captured loss need not keep the autograd graph of the capture alive.
        auto loss = device_scheduled_step(s.model, s.opt, s.x, s.y, s.fast).detach();
        graph->capture_end();
        return loss;
      } catch (...) {
        try {
          graph->capture_end();  // leave the stream out of capture mode before reporting
        } catch (...) {
        }
        throw;
      }
    });
    s.graph = std::move(graph);
    s.pinned = {s.model.flat(), s.model.flat_grad(), s.opt.exp_avg(), s.opt.exp_avg_sq(), s.opt.device_step(), s.x,
                s.y, s.loss};
  }
  // The graph writes where these tensors were at capture time.
  if (s.model.flat().data_ptr() != s.pinned[0].data_ptr() || s.opt.device_step().data_ptr() != s.pinned[4].data_ptr())
    throw std::logic_error("GraphedStep: the model or optimiser state moved after capture");
  s.graph->replay();
  s.opt.count_device_step();
  return s.loss;
}

#else  // LibTorch without CUDA

struct GraphedStep::Impl {};
bool GraphedStep::built() { return false; }
GraphedStep::GraphedStep(Model&, FlatAdamW&, torch::Tensor, torch::Tensor, bool) {
  throw std::logic_error("CUDA graphs are not built: this LibTorch has no CUDA");
}
GraphedStep::~GraphedStep() = default;
bool GraphedStep::captured() const { return false; }
torch::Tensor GraphedStep::run() { throw std::logic_error("CUDA graphs are not built"); }

#endif

}  // namespace grokking
