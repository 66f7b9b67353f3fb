// The repeat task and the induction-head analysis: batches, head scores on planted attention,
// the transition; and the small configs that do (two layers) and do not (one layer) form
// induction heads.
#include <torch/torch.h>

#include <cmath>

#include "catch.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/config.hpp"
#include "grokking/heads.hpp"
#include "grokking/patching.hpp"
#include "grokking/task.hpp"
#include "grokking/train.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {
TaskConfig repeat_task(int64_t vocab, int64_t context, int64_t lo, int64_t hi) {
  TaskConfig t;
  t.kind = "repeat";
  t.keys = {{"vocab", vocab}, {"context", context}, {"repeat_min", lo}, {"repeat_max", hi},
            {"eval_sequences", 40}, {"loss_on", "repeat"}};
  return t;
}
// The length of a padded sequence's repeated segment.
int64_t length_of(const torch::Tensor& row, int64_t pad) { return row.ne(pad).sum().item<int64_t>() / 2; }
}  // namespace

TEST_CASE("the repeat task: L tokens then the same L, one length per batch, seeded by the step", "[sequence]") {
  auto task = make_task(repeat_task(16, 24, 3, 10));
  const auto& shape = task->shape();
  CHECK(shape.vocab == 17);  // the pad token is 16
  CHECK(shape.classes == 16);
  CHECK(shape.fresh_batches);
  const Batch a = task->train_batch(7, 5), b = task->train_batch(7, 5), c = task->train_batch(8, 5);
  CHECK(torch::equal(a.x, b.x));
  CHECK(!torch::equal(a.x, c.x));
  const int64_t L = length_of(a.x[0], 16);
  CHECK(L >= 3);
  CHECK(L <= 10);
  for (int64_t i = 0; i < 5; ++i) {
    CHECK(length_of(a.x[i], 16) == L);  // one length a batch
    CHECK(torch::equal(a.x[i].narrow(0, 0, L), a.x[i].narrow(0, L, L)));
    // Scored: positions L..2L-2, each the next token.
    for (int64_t t = 0; t < 24; ++t) {
      const bool scored = t >= L && t + 1 < 2 * L;
      CHECK((a.y[i][t].item<int64_t>() >= 0) == scored);
      if (scored) CHECK(a.y[i][t].item<int64_t>() == a.x[i][t + 1].item<int64_t>());
    }
  }
  // The evaluation set holds every length of the range; a fixed length is widened to [L/2, 2L].
  std::set<int64_t> lengths;
  const Batch eval = task->eval_batch();
  for (int64_t i = 0; i < eval.x.size(0); ++i) lengths.insert(length_of(eval.x[i], 16));
  CHECK(lengths.size() == 8);
  std::set<int64_t> fixed;
  const Batch feval = make_task(repeat_task(16, 24, 6, 6))->eval_batch();
  for (int64_t i = 0; i < feval.x.size(0); ++i) fixed.insert(length_of(feval.x[i], 16));
  CHECK(*fixed.begin() == 3);
  CHECK(*fixed.rbegin() == 12);
  // loss_on "all": every next token of the sequence is scored in training, not in evaluation.
  auto all = repeat_task(16, 24, 3, 10);
  all.keys["loss_on"] = "all";
  auto all_task = make_task(all);
  const Batch t = all_task->train_batch(7, 2);
  CHECK(t.y[0][0].item<int64_t>() == t.x[0][1].item<int64_t>());
  CHECK(torch::equal(all_task->eval_batch().y, task->eval_batch().y));
}

TEST_CASE("head scores: perfect previous-token and induction attention score 1, TransformerLens's about one half",
          "[sequence]") {
  // Two sequences of L = 4 distinct tokens repeated, padded to 10 (pad 9).
  auto x = torch::tensor({{1, 2, 3, 4, 1, 2, 3, 4, 9, 9}, {5, 6, 7, 8, 5, 6, 7, 8, 9, 9}}, torch::kInt64);
  const int64_t T = 10;
  auto attn = torch::zeros({2, 3, T, T}, torch::kFloat64);
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t i = 0; i < T; ++i) {
      attn[n][0][i][std::max<int64_t>(i - 1, 0)] = 1;                 // head 0: the previous token
      attn[n][1][i][i >= 4 && i < 8 ? i - 3 : 0] = 1;                // head 1: induction (after the earlier copy)
      attn[n][2][i][0] = 1;                                          // head 2: the first token
    }
  const auto s = pattern_scores(attn, x, 9);
  CHECK(s.previous[0][0] == Approx(1.0));
  CHECK(s.induction[0][1] == Approx(1.0));
  CHECK(s.induction_tl[0][1] == Approx(4.0 / 8.0));  // 4 of the 8 real queries have something to attend to
  CHECK(s.duplicate[0][1] == Approx(0.0));
  CHECK(s.induction[0][0] < 0.01);
  CHECK(s.previous[0][2] < 0.2);
}

TEST_CASE("the transition: 10, 50 and 90 % of the drop, Olsson et al.'s bump and a rise", "[sequence]") {
  std::vector<MetricsRow> rows;
  const std::vector<double> losses = {4.0, 3.9, 4.1, 3.5, 2.0, 1.0, 0.4, 0.3};
  for (size_t i = 0; i < losses.size(); ++i) {
    MetricsRow r;
    r.epoch = int64_t(i) * 100;
    r.test_loss = losses[i];
    rows.push_back(r);
  }
  const auto t = find_transition(rows);  // drop 3.7: 10 % at <= 3.63, 50 % at <= 2.15, 90 % at <= 0.67
  CHECK(t.at10 == 300);
  CHECK(t.at50 == 400);
  CHECK(t.at90 == 600);
  CHECK(t.rise == Approx(0.2));  // 4.1 at 200 over the running minimum 3.9
  CHECK(t.rise_at == 200);
  // Olsson et al.'s bump: the loss turning steeper, a stretch of the curve (against log step)
  // above its lower convex hull: here the slow start up to 300 before the steep fall.
  CHECK(t.bump > 1.0);
  CHECK(t.bump_at == 300);
  // A loss that falls as a convex function of log step has none, though it falls throughout;
  // a plateau and then a steeper fall has one, at the plateau's end.
  auto with = [&](const std::vector<double>& ls) {
    for (size_t i = 0; i < ls.size(); ++i) rows[i].test_loss = ls[i];
    return find_transition(rows);
  };
  std::vector<double> convex = {4.0};
  for (int64_t i = 1; i < 8; ++i) convex.push_back(4.0 * std::exp(-0.5 * std::log(double(i))));
  CHECK(with(convex).bump < 1e-12);
  const auto plateau = with({4.0, 4.0, 4.0, 4.0, 4.0, 1.0, 0.3, 0.2});
  CHECK(plateau.bump > 2.0);
  CHECK(plateau.bump_at == 400);
  CHECK(plateau.rise == 0);
}

namespace {
// Trains a shipped config, one thread, and returns its run directory and final head scores.
std::pair<std::string, HeadScores> trained_heads(const std::string& file) {
  Config cfg = load_config(test::source_dir() + "/configs/induction/" + file);
  cfg.train.threads = 1, cfg.train.device = "cpu";
  const std::string dir = test::prepare_run(cfg, file);
  train(cfg, dir, false, true);
  const auto ck = load_checkpoint(resolve_checkpoint(dir));
  return {dir, head_scores(model_from_checkpoint(ck), make_task(cfg.task)->eval_batch())};
}
double best(const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); }
}  // namespace

TEST_CASE("copying scores and Q-, K-, V-composition on heads built to have them", "[sequence]") {
  // Two attention-only layers, W_V = [I; 0], W_O = [I 0] (W_V W_O = P, a projector) and
  // W_U = W_E^T: every head's full OV circuit is W_E P W_E^T, positive semi-definite, so it
  // copies (score 1); with W_O = -[I 0] it
  // suppresses (-1). Layer 1 with W_Q = W_K: its QK circuit is symmetric, so Q- and
  // K-composition are the same.
  Model m(parse_config(R"({"task": {"kind": "repeat", "vocab": 10, "context": 12, "repeat_min": 2, "repeat_max": 5},
                           "model": {"n_layers": 2, "attn_only": true, "layer_norm": "none", "d_model": 12,
                                     "n_heads": 2, "d_head": 6, "train_biases": false},
                           "train": {"batch_size": 8}})",
                        "(test)", {}));
  torch::NoGradGuard no_grad;
  const auto half = torch::eye(12).narrow(1, 0, 6);  // [12, 6]
  for (auto l : {"0", "1"}) {
    const std::string b = std::string("blocks.") + l + ".attn.";
    m.param(b + "W_V").copy_(half.expand({2, 12, 6}));
    m.param(b + "W_O").copy_(half.t().expand({2, 6, 12}));
  }
  m.param("blocks.0.attn.W_O")[1].mul_(-1);
  m.param("unembed.W_U").copy_(m.param("embed.W_E").narrow(0, 0, m.param("unembed.W_U").size(1)).t());
  m.param("blocks.1.attn.W_K").copy_(m.param("blocks.1.attn.W_Q"));
  const auto c = copying_scores(m);
  CHECK(c[0][0] == Approx(1).margin(1e-9));
  CHECK(c[0][1] == Approx(-1).margin(1e-9));
  CHECK(c[1][0] == Approx(1).margin(1e-9));
  const auto comp = k_composition(m);
  for (size_t h1 = 0; h1 < 2; ++h1)
    for (size_t h0 = 0; h0 < 2; ++h0) {
      CHECK(comp.q[h1][h0] == Approx(comp.k[h1][h0]).epsilon(1e-9));
      CHECK(comp.v[h1][h0] == Approx(1.0 / std::sqrt(6.0)).epsilon(1e-9));  // ||P P|| / (||P|| ||P||), P of rank 6
    }
}

TEST_CASE("the in-context-learning score only where the first half is trained", "[induction]") {
  // Olsson et al.'s score is a late token's loss minus an early one's; with the loss on the
  // repeated half alone, the early token's loss is untrained and the difference means nothing.
  const Config lm = load_config(test::source_dir() + "/configs/induction/minimal-lm.json");
  const Config rep = load_config(test::source_dir() + "/configs/induction/minimal.json");
  CHECK(make_task(lm.task)->extra_columns() == std::vector<std::string>{"first_half_loss", "icl_score"});
  CHECK(make_task(rep.task)->extra_columns() == std::vector<std::string>{"first_half_loss"});
  const auto task = make_task(lm.task);
  const Model model(lm);
  torch::NoGradGuard no_grad;
  const Batch eval = task->eval_batch();
  const auto measures = task->extra_measures(model.outputs(eval.x, false), eval);
  REQUIRE(measures.size() == 2);
  CHECK(std::isfinite(measures[1][0]));
}

TEST_CASE("configs/induction/small.json forms induction heads: a previous-token head, then an induction head",
          "[induction]") {
  const auto [dir, s] = trained_heads("small.json");
  const auto rows = read_metrics(dir + "/metrics.csv");
  const auto& last = rows.back();
  double first_half = 0;
  for (auto& [name, v] : last.extra)
    if (name == "first_half_loss") first_half = v;
  INFO("repeated half " << last.test_loss << ", first half " << first_half << "; L1 induction " << best(s.induction[1])
                        << ", L0 previous " << best(s.previous[0]));
  CHECK(best(s.induction[1]) >= kHeadScoreThreshold);
  CHECK(best(s.previous[0]) >= kHeadScoreThreshold);
  CHECK(last.test_loss < 0.25 * first_half);
  const auto t = find_transition(rows);
  CHECK(t.at50.has_value());
  // Olsson et al.'s bump: the loss turns steeper during the transition (0.73 nats above its
  // convex hull at step 400 on seed 0; the one-layer control: 0.23, late).
  INFO("bump " << t.bump << " at " << t.bump_at << "; transition " << *t.at10 << " to " << t.at90.value_or(-1));
  CHECK(t.bump > 0.5);
  CHECK(t.bump_at >= *t.at10);
  CHECK(t.bump_at <= t.at90.value_or(0));
  // The loss by position: the first token after the start is unpredictable (about ln 32), the
  // repeated half's far below it; the induction heads copy (Elhage et al.'s eigenvalue score).
  {
    const Model final_model = model_from_checkpoint(load_checkpoint(resolve_checkpoint(dir)));
    const auto eval = make_task(final_model.config().task)->eval_batch();
    const auto pl = loss_by_position(final_model, eval);
    double lowest = 1e9;
    for (double v : pl)
      if (std::isfinite(v)) lowest = std::min(lowest, v);
    INFO("loss at position 0 " << pl[0] << ", lowest " << lowest);
    CHECK(pl[0] > 2.5);
    CHECK(lowest < 0.25 * pl[0]);
    const auto cs = copying_scores(final_model);
    for (int64_t h = 0; h < int64_t(s.induction[1].size()); ++h)
      if (s.induction[1][size_t(h)] >= kHeadScoreThreshold) CHECK(cs[1][size_t(h)] > 0.5);
  }

  // Patching finds the circuit (Olsson et al.; Elhage et al. 2021): the previous-token heads'
  // outputs reach the induction heads through their keys, and the induction heads' outputs reach
  // the logits directly. Each such edge carries more than any other of its kind (head to later
  // head; head to logits); together the induction heads' outputs carry the whole effect.
  const Model model = model_from_checkpoint(load_checkpoint(resolve_checkpoint(dir)));
  const auto sets = make_task(model.config().task)->patch_sets(0);
  const auto r = patch(model, sets);
  std::vector<int64_t> ind, prev;
  for (int64_t h = 0; h < int64_t(s.induction[1].size()); ++h) {
    if (s.induction[1][size_t(h)] >= kHeadScoreThreshold) ind.push_back(h);
    if (s.previous[0][size_t(h)] >= kHeadScoreThreshold) prev.push_back(h);
  }
  REQUIRE(!ind.empty());
  REQUIRE(!prev.empty());
  auto in = [](const std::vector<int64_t>& v, int64_t x) { return std::count(v.begin(), v.end(), x) > 0; };
  double best_key = -1e9, best_other_edge = -1e9, best_ind_logits = -1e9, best_other_logits = -1e9;
  for (auto& e : r.paths) {
    const bool to_logits = e.receiver == "logits";
    const bool circuit_key = e.layer == 0 && in(prev, e.head) && e.receiver.size() == 6 && e.receiver.back() == 'k' &&
                             in(ind, e.receiver[3] - '0');
    if (to_logits) (e.layer == 1 && in(ind, e.head) ? best_ind_logits : best_other_logits) = std::max(
        e.layer == 1 && in(ind, e.head) ? best_ind_logits : best_other_logits, e.recovered);
    else (circuit_key ? best_key : best_other_edge) = std::max(circuit_key ? best_key : best_other_edge, e.recovered);
  }
  std::vector<PathEdge> keys, outs;
  for (auto p : prev)
    for (auto i : ind) keys.push_back({0, p, "k", 1, i});
  for (auto i : ind) outs.push_back({1, i, "logits", 0, 0});
  const double joint_keys = patch_paths(model, sets, keys), joint_outs = patch_paths(model, sets, outs);
  INFO("clean " << r.clean << ", corrupted " << r.corrupted << "; previous-token -> induction key: best edge " << best_key
                << " (best other head-to-head " << best_other_edge << "), together " << joint_keys
                << "; induction heads -> logits: best " << best_ind_logits << " (best other " << best_other_logits
                << "), together " << joint_outs);
  CHECK(r.clean > r.corrupted + 1);
  CHECK(best_key > best_other_edge);
  CHECK(best_ind_logits > best_other_logits);
  // Measured on seed 0: each previous-token -> induction-key edge 0.07 (every other head-to-head
  // edge at most 0.004), together 0.36 of the gap (the rest reaches the keys from the embeddings
  // directly); the induction heads' direct paths to the logits together 1.01.
  CHECK(best_key > 10 * std::max(best_other_edge, 1e-3));
  CHECK(joint_keys > 0.25);
  CHECK(joint_outs > 0.9);
}

TEST_CASE("configs/induction/small-1layer.json, the same with one layer, forms none", "[induction-control]") {
  const auto [dir, s] = trained_heads("small-1layer.json");
  const auto last = read_metrics(dir + "/metrics.csv").back();
  INFO("repeated half " << last.test_loss << "; induction " << best(s.induction[0]));
  CHECK(best(s.induction[0]) < kHeadScoreThreshold);
  CHECK(last.test_loss > 1.0);  // nowhere near what two layers reach
  const auto t = find_transition(read_metrics(dir + "/metrics.csv"));
  INFO("bump " << t.bump << " at " << t.bump_at);
  CHECK(t.bump < 0.4);  // no phase change: at most a third of the two-layer run's
}
