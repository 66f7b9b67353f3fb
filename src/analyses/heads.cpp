// `grokking heads`: the attention heads of a sequence run over training (Olsson et al. 2022).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "common.hpp"
#include "grokking/error.hpp"
#include "grokking/heads.hpp"
#include "grokking/rundir.hpp"
#include "grokking/task.hpp"
#include "grokking/progress_note.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"

namespace grokking {
using namespace analyses;

const AnalysisKind& heads_analysis();

namespace {

std::string label(int64_t l, int64_t h) { return "L" + std::to_string(l) + "H" + std::to_string(h); }
using HeadList = std::vector<std::pair<int64_t, int64_t>>;

// What `heads` measures of a run: at its final checkpoint and, per checkpoint, the scores.
struct HeadsReport {
  std::string dir;
  Checkpoint final_ck;
  int64_t L = 0, H = 0, classes = 0;
  HeadScores scores;                       // the final model's
  std::vector<HeadAblationResult> ablations;
  double base = 0, first_half = std::numeric_limits<double>::quiet_NaN();
  std::optional<Composition> comp;         // two layers or more
  std::vector<std::vector<double>> copying;  // Elhage et al.'s copying score, [layer][head]
  Transition transition;                   // of metrics.csv's repeated-half loss
  HeadList induction_heads, previous_heads;
};

// heads_progress.csv: every checkpoint's previous-token, duplicate and induction (Olsson et
// al.'s prefix-matching) scores per head; heads_position_loss.csv: every checkpoint's loss by
// position in the context.
void write_scores_over_training(const std::string& dir, const Batch& eval, int64_t L, int64_t H) {
  std::vector<std::string> cols = {"epoch"};
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < H; ++h)
      for (auto* what : {"prev", "dup", "ind"}) cols.push_back(label(l, h) + "_" + what);
  CsvWriter over(cols);
  CsvWriter by_position({"epoch", "position", "loss"});
  const auto checkpoints = list_checkpoints(dir);
  ProgressNote note(dir + ": heads, checkpoints", checkpoints.size());
  for (auto& [epoch, path] : checkpoints) {
    note.tick();
    const Model m = model_from_checkpoint(load_checkpoint(path));
    const auto sc = head_scores(m, eval);
    const auto pl = loss_by_position(m, eval);
    for (size_t t = 0; t < pl.size(); ++t)
      if (std::isfinite(pl[t])) by_position.field(epoch).field(int64_t(t)).field(pl[t]).end_row();
    over.field(epoch);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t h = 0; h < H; ++h)
        over.field(sc.previous[size_t(l)][size_t(h)]).field(sc.duplicate[size_t(l)][size_t(h)]).field(sc.induction[size_t(l)][size_t(h)]);
    over.end_row();
  }
  atomic_write(dir + "/heads_progress.csv", over.text());
  atomic_write(dir + "/heads_position_loss.csv", by_position.text());
}

// The final model: scores, ablations, composition; the transition in metrics.csv; which heads
// are induction heads (layers >= 1) and previous-token heads (the layers below).
HeadsReport measure_final(const std::string& dir, Checkpoint final_ck, const Batch& eval) {
  HeadsReport r;
  r.dir = dir;
  r.final_ck = std::move(final_ck);
  const Model model = model_from_checkpoint(r.final_ck);
  r.L = model.arch().attention_layers(), r.H = model.arch().attention_heads(), r.classes = model.shape().classes;
  r.scores = head_scores(model, eval);
  r.ablations = ablate_heads(model, eval);
  r.base = repeated_half_loss(model.forward(eval.x), eval);
  if (r.L >= 2) r.comp = k_composition(model);
  r.copying = copying_scores(model);
  const auto rows = read_metrics(dir + "/metrics.csv");
  r.transition = find_transition(rows);
  if (!rows.empty())
    for (auto& [name, v] : rows.back().extra)
      if (name == "first_half_loss") r.first_half = v;
  for (int64_t l = 0; l < r.L; ++l)
    for (int64_t h = 0; h < r.H; ++h) {
      if (l >= 1 && r.scores.induction[size_t(l)][size_t(h)] >= kHeadScoreThreshold) r.induction_heads.push_back({l, h});
      if (l + 1 < r.L && r.scores.previous[size_t(l)][size_t(h)] >= kHeadScoreThreshold) r.previous_heads.push_back({l, h});
    }
  return r;
}

// heads.csv: the final model's scores and ablated losses, a row per head.
void write_head_table(const HeadsReport& r) {
  const auto& sc = r.scores;
  CsvWriter csv({"layer", "head", "previous", "duplicate", "induction", "induction_tl", "zero_ablated_loss",
                 "mean_ablated_loss", "copying"});
  for (auto& a : r.ablations) {
    const auto l = size_t(a.layer), h = size_t(a.head);
    csv.field(a.layer).field(a.head).field(sc.previous[l][h]).field(sc.duplicate[l][h]).field(sc.induction[l][h]);
    csv.field(sc.induction_tl[l][h]).field(a.zero_loss).field(a.mean_loss).field(r.copying[l][h]).end_row();
  }
  atomic_write(r.dir + "/heads.csv", csv.text());
  // heads_composition.csv: layer-0 head into layer-1 head, K-, Q- and V-composition, and the
  // random baseline (two layers or more; a header alone otherwise).
  CsvWriter comp({"receiver", "sender", "k", "q", "v", "random_baseline"});
  if (r.comp)
    for (size_t h1 = 0; h1 < r.comp->k.size(); ++h1)
      for (size_t h0 = 0; h0 < r.comp->k[h1].size(); ++h0)
        comp.field(label(1, int64_t(h1))).field(label(0, int64_t(h0))).field(r.comp->k[h1][h0]).field(r.comp->q[h1][h0])
            .field(r.comp->v[h1][h0]).field(r.comp->baseline).end_row();
  atomic_write(r.dir + "/heads_composition.csv", comp.text());
}

// heads_pattern.dat: the attention pattern of the strongest induction head (or of the last
// layer's first head) on the evaluation sequence with the longest repeat (the first of them);
// heads_pattern_prev.dat: the strongest previous-token head's below it (Olsson et al. show the
// two side by side).
void write_pattern(const HeadsReport& r, const Batch& eval) {
  const Model model = model_from_checkpoint(r.final_ck);
  // A sequence's repeat length: half its tokens before the padding (the pad token is the last of
  // the vocabulary).
  const auto lengths = eval.x.ne(model.shape().vocab - 1).sum(1);
  const int64_t row = lengths.eq(lengths.max()).nonzero()[0][0].item<int64_t>();
  const int64_t repeat = lengths[row].item<int64_t>() / 2;
  auto best_head = [&](const std::vector<std::vector<double>>& score, int64_t layer) {
    int64_t bh = 0;
    for (int64_t h = 1; h < r.H; ++h)
      if (score[size_t(layer)][size_t(h)] > score[size_t(layer)][size_t(bh)]) bh = h;
    return bh;
  };
  auto write = [&](int64_t bl, int64_t bh, const std::string& file) {
    const std::string name = "blocks." + std::to_string(bl) + ".attn.hook_pattern";
    ActivationCache cache({name});
    model.run_with_cache(eval.x.narrow(0, row, 1), cache);
    const auto pat = cache[name][0][bh].to(torch::kFloat64).contiguous();  // [T, T]
    std::string mat = "# attention of head " + label(bl, bh) + " on evaluation sequence " + std::to_string(row) +
                      " (repeat length L = " + std::to_string(repeat) + ": positions 0..L-1 repeated at L..2L-1, "
                      "padding after); rows: query position, columns: key\n";
    for (int64_t i = 0; i < pat.size(0); ++i) {
      for (int64_t j = 0; j < pat.size(1); ++j) mat += (j ? " " : "") + format_number(pat[i][j].item<double>(), "%.4g");
      mat += "\n";
    }
    atomic_write(r.dir + "/" + file, mat);
  };
  write(r.L - 1, best_head(r.scores.induction, r.L - 1), "heads_pattern.dat");
  // The strongest previous-token head of the layers below (of the only layer, in a one-layer model).
  int64_t pl = 0, ph = best_head(r.scores.previous, 0);
  for (int64_t l = 1; l < std::max<int64_t>(1, r.L - 1); ++l) {
    const int64_t h = best_head(r.scores.previous, l);
    if (r.scores.previous[size_t(l)][size_t(h)] > r.scores.previous[size_t(pl)][size_t(ph)]) pl = l, ph = h;
  }
  write(pl, ph, "heads_pattern_prev.dat");
}

void print_json(const HeadsReport& r) {
  auto heads_json = [&](const HeadList& hs) {
    nlohmann::json a = nlohmann::json::array();
    for (auto& [l, h] : hs) a.push_back(label(l, h));
    return a;
  };
  const auto& tr = r.transition;
  const auto& sc = r.scores;
  nlohmann::json j = {{"run_dir", r.dir},
                      {"checkpoint", r.final_ck.path},
                      {"epoch", r.final_ck.epoch},
                      {"threshold", kHeadScoreThreshold},
                      {"induction_heads", heads_json(r.induction_heads)},
                      {"previous_token_heads", heads_json(r.previous_heads)},
                      {"repeated_half_loss", r.base},
                      {"first_half_loss", r.first_half},
                      {"transition", {{"at10", optional_json(tr.at10)}, {"at50", optional_json(tr.at50)},
                                      {"at90", optional_json(tr.at90)}, {"start", tr.start}, {"lowest", tr.lowest},
                                      {"bump", tr.bump}, {"bump_at", tr.bump_at}, {"rise", tr.rise}, {"rise_at", tr.rise_at}}},
                      {"heads", nlohmann::json::array()}};
  for (auto& a : r.ablations) {
    const auto l = size_t(a.layer), h = size_t(a.head);
    j["heads"].push_back({{"head", label(a.layer, a.head)}, {"previous", sc.previous[l][h]},
                          {"duplicate", sc.duplicate[l][h]}, {"induction", sc.induction[l][h]},
                          {"induction_tl", sc.induction_tl[l][h]}, {"zero_ablated_loss", a.zero_loss},
                          {"mean_ablated_loss", a.mean_loss}, {"copying", r.copying[l][h]}});
  }
  if (r.comp) {
    j["k_composition"] = {{"layer1_by_layer0", r.comp->k}, {"random_baseline", r.comp->baseline}};
    j["q_composition"] = {{"layer1_by_layer0", r.comp->q}, {"random_baseline", r.comp->baseline}};
    j["v_composition"] = {{"layer1_by_layer0", r.comp->v}, {"random_baseline", r.comp->baseline}};
  }
  std::printf("%s\n", j.dump(2).c_str());
}

void print_text(const HeadsReport& r) {
  auto epoch = [](const std::optional<int64_t>& e) { return e ? std::to_string(*e) : std::string("-"); };
  auto names = [&](const HeadList& hs) {
    std::string out;
    for (auto& [l, h] : hs) out += (out.empty() ? "" : ", ") + label(l, h);
    return out.empty() ? std::string("none") : out;
  };
  const auto& tr = r.transition;
  const auto& sc = r.scores;
  std::printf("%s: checkpoint epoch %lld; %lld layer(s) of %lld heads\n", r.dir.c_str(), (long long)r.final_ck.epoch,
              (long long)r.L, (long long)r.H);
  std::printf("repeated-half loss %.3f (first half %.3f; uniform ln %lld = %.3f)\n", r.base, r.first_half,
              (long long)r.classes, std::log(double(r.classes)));
  std::printf("transition of the repeated-half loss (%.3f -> %.3f): 10%% at %s, 50%% at %s, 90%% at %s\n", tr.start,
              tr.lowest, epoch(tr.at10).c_str(), epoch(tr.at50).c_str(), epoch(tr.at90).c_str());
  std::printf("bump (Olsson et al.: the loss turning steeper; the largest height of the loss above its lower convex hull "
              "over log step) %.3f nats at step %lld; largest rise before the 90%% point %.3f nats at %lld\n",
              tr.bump, (long long)tr.bump_at, tr.rise, (long long)tr.rise_at);
  std::printf("induction heads (score >= %.1f, layers >= 1): %s; previous-token heads (layers below): %s\n\n",
              kHeadScoreThreshold, names(r.induction_heads).c_str(), names(r.previous_heads).c_str());
  std::printf("%-6s %9s %9s %9s %12s %14s %14s %8s\n", "head", "previous", "duplicate", "induction", "induction_tl",
              "zero-ablated", "mean-ablated", "copying");
  for (auto& a : r.ablations) {
    const auto l = size_t(a.layer), h = size_t(a.head);
    std::printf("%-6s %9.3f %9.3f %9.3f %12.3f %14.3f %14.3f %8.3f\n", label(a.layer, a.head).c_str(), sc.previous[l][h],
                sc.duplicate[l][h], sc.induction[l][h], sc.induction_tl[l][h], a.zero_loss, a.mean_loss,
                r.copying[l][h]);
  }
  std::printf("(scores: the share of attention on the pattern among the queries that have one; induction_tl: "
              "TransformerLens's, over every query; induction is Olsson et al.'s prefix matching; ablated: the repeated-half "
              "loss; copying: Elhage et al.'s eigenvalue score of W_E W_V W_O W_U, 1 copies, -1 suppresses)\n");
  if (r.comp) {
    std::printf("\ncomposition of layer-0 OV into layer-1 heads, K / Q / V (rows: layer-1 head, columns: layer-0 "
                "head; random baseline %.3f):\n",
                r.comp->baseline);
    for (int64_t h1 = 0; h1 < r.H; ++h1) {
      std::printf("  L1H%lld:", (long long)h1);
      for (int64_t h0 = 0; h0 < r.H; ++h0)
        std::printf("  %5.3f/%5.3f/%5.3f", r.comp->k[size_t(h1)][size_t(h0)], r.comp->q[size_t(h1)][size_t(h0)],
                    r.comp->v[size_t(h1)][size_t(h0)]);
      std::printf("\n");
    }
  }
}

int run_heads(const AnalysisOptions& opts) {
  configure_threads(0);
  Checkpoint final_ck = load_final(heads_analysis(), opts.path).ck;
  const Batch eval = make_task(final_ck.config.task)->eval_batch();
  const Model model = model_from_checkpoint(final_ck);
  write_scores_over_training(opts.path, eval, model.arch().attention_layers(), model.arch().attention_heads());
  const HeadsReport r = measure_final(opts.path, std::move(final_ck), eval);
  write_head_table(r);
  write_pattern(r, eval);
  if (opts.quiet) return 0;
  if (opts.json) print_json(r);
  else print_text(r);
  return 0;
}

}  // namespace

const AnalysisKind& heads_analysis() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "heads";
    a.doc = "Induction heads of a sequence run: per-head scores over training, the transition and bump, head "
            "ablations, copying scores, Q-/K-/V-composition, the loss by position";
    a.scope = AnalysisKind::Scope::run;
    a.needs = {Capability::sequence, Capability::heads};
    a.files = {{"heads.csv"}, {"heads_progress.csv"}, {"heads_pattern.dat"}, {"heads_pattern_prev.dat"}, {"heads_composition.csv"},
               {"heads_position_loss.csv"}};
    a.figures = {"heads", "pattern", "position_loss"};
    a.source = "Olsson et al. 2022 (prefix matching, loss by position); TransformerLens's head detector (scores); "
               "Elhage et al. 2021 (copying eigenvalues; Q-, K-, V-composition as ARENA 1.2's get_comp_score)";
    a.report = {{"Attention heads (scores, ablated losses)", "heads.csv"}};
    a.run = run_heads;
    return a;
  }();
  return k;
}

}  // namespace grokking
