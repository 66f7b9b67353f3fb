#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "catch.hpp"
#include "grokked_run.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {
// A run in checkpoints every 100 epochs, shaped as the paper describes it: the training set fit
// by 300; excluded loss lowest at 400, then rising; the weight norm highest at 300, falling
// slowly to 1,200, sharply to 1,600, then flat; log10 restricted loss falling slowly from 400,
// sharply from 1,100 to 1,600; the test loss flat to 1,200, then down 7 decades by 1,600; test
// accuracy 99 % from 1,500; the Gini rising from 1,200.
std::vector<ProgressRow> paper_shaped_run() {
  std::vector<ProgressRow> rows;
  for (int64_t e = 0; e <= 20; ++e) {
    const double x = double(e);
    ProgressRow r;
    r.epoch = e * 100;
    r.train_acc = e >= 3 ? 1.0 : 0.5;
    r.train_loss = std::pow(10.0, -0.5 * std::min(x, 12.0));
    r.excluded_loss = e <= 4 ? 5.0 - x : 2.0 * (x - 4);
    r.sum_sq_weights = e <= 3 ? 100 + 50 * x : e <= 12 ? 250 - 5 * (x - 3) : e <= 16 ? 205 - 40 * (x - 12) : 45 - 0.5 * (x - 16);
    r.restricted_loss = std::pow(10.0, e <= 4 ? 0.0 : e <= 11 ? -0.05 * (x - 4) : e <= 16 ? -0.35 - (x - 11) : -5.35);
    r.test_loss = std::pow(10.0, e <= 12 ? 1.0 : e <= 16 ? 1.0 - 1.75 * (x - 12) : -6.0);
    r.test_acc = e >= 15 ? 1.0 : 0.1;
    r.gini = e <= 12 ? 0.1 + 0.001 * x : std::min(0.6, 0.112 + 0.12 * (x - 12));
    rows.push_back(r);
  }
  return rows;
}
}  // namespace

TEST_CASE("phases from the progress measures: the three rules, and the paper's definitions checked", "[analysis]") {
  auto rows = paper_shaped_run();
  auto ph = detect_phases(rows);
  REQUIRE(ph.grokked);
  CHECK(ph.memorisation_end == int64_t(400));        // excluded loss lowest; the weights fall from there
  CHECK(ph.circuit_formation_end == int64_t(1200));  // the weight norm starts its sharp fall
  CHECK(ph.cleanup_end == int64_t(1600));            // the weight norm's sharp fall ends
  CHECK(ph.failed.empty());
  REQUIRE(ph.changes.size() == 3);
  CHECK(ph.changes[1].excluded_loss[0] == 1.0);
  CHECK(ph.changes[1].excluded_loss[1] == 16.0);
  auto j = phases_json(ph, {1, 2});
  CHECK(j["definitions_hold"] == true);
  CHECK(j["changes"]["cleanup"]["test_loss"][1] == Approx(1e-6));

  // A weight norm that peaks again after the excluded loss's minimum moves the end of
  // memorisation to that peak; an earlier, higher peak does not (rule 1).
  auto later = rows;
  later[6].sum_sq_weights = 300;
  later[1].sum_sq_weights = 1000;
  CHECK(detect_phases(later).memorisation_end == int64_t(600));
  // Cleanup never ends before generalisation, wherever the weight norm's knee is.
  auto early_knee = rows;
  for (auto& r : early_knee) r.test_acc = r.epoch >= 1900 ? 1.0 : 0.1;
  CHECK(detect_phases(early_knee).cleanup_end == int64_t(1900));

  // A test loss that falls through circuit formation breaks its definition, and the run says so.
  auto falling = rows;
  for (size_t i = 4; i <= 12; ++i) falling[i].test_loss = std::pow(10.0, 1.0 - 0.6 * double(i - 4));
  auto bad = detect_phases(falling);
  CHECK(bad.failed.find("circuit formation: test loss flat") != std::string::npos);
  CHECK(bad.note.find("do not meet the paper's definitions") != std::string::npos);
  CHECK(phases_json(bad, {})["definitions_hold"] == false);

  // Never grokked: only memorisation's end, and the note says so.
  for (auto& r : rows) r.test_acc = 0.1;
  ph = detect_phases(rows);
  CHECK_FALSE(ph.grokked);
  CHECK(ph.memorisation_end == int64_t(400));
  CHECK_FALSE(ph.cleanup_end.has_value());
  CHECK(ph.note.find("never grokked") != std::string::npos);
  CHECK(phases_json(ph, {})["definitions_hold"].is_null());
  // Never fit: nothing but the note, also where the test accuracy got high.
  for (auto& r : rows) r.train_acc = 0.5, r.test_acc = 1.0;
  auto unfit = detect_phases(rows);
  CHECK_FALSE(unfit.memorisation_end.has_value());
  CHECK_FALSE(unfit.grokked);
  CHECK(unfit.changes.empty());
}

TEST_CASE("progress measures over the run find the phases in order", "[ci-small]") {
  const auto& run = test::grokked_run();
  auto list = list_checkpoints(run.dir);
  REQUIRE(list.size() >= 5);
  auto progress = measure_progress(run.dir);
  const auto& rows = progress.rows;
  REQUIRE(rows.size() == list.size());
  for (size_t i = 0; i < rows.size(); ++i) CHECK(rows[i].epoch == list[i].first);
  // The key frequencies are the final checkpoint's, by the neuron method.
  CHECK(progress.key_freqs == analyse_fourier(model_from_checkpoint(load_checkpoint(list.back().second))).key_neurons);
  // Each row is the loss measures of its checkpoint, whichever worker thread computed it.
  const size_t mid = rows.size() / 2;
  Model m = model_from_checkpoint(load_checkpoint(list[mid].second));
  auto lm = loss_measures(m, make_dataset(m.config().task), progress.key_freqs);
  CHECK(rows[mid].excluded_loss == Approx(lm.excluded_loss).epsilon(1e-9));
  CHECK(rows[mid].restricted_acc == Approx(lm.restricted.all.acc).epsilon(1e-12));
  REQUIRE(rows[mid].excluded_by_key.size() == progress.key_freqs.size());
  // Each key frequency alone carries part of the model at the end.
  for (auto e : rows.back().excluded_by_key) CHECK(e > 100 * rows.back().train_loss);
  CHECK(rows.back().restricted_acc >= 0.99);
  CHECK(rows.back().gini_wl > rows.front().gini_wl);
  CHECK(rows[mid].sum_sq_weights == Approx(m.sum_squared_weights()).epsilon(1e-12));
  auto ph = progress.phases;
  REQUIRE(ph.grokked);
  CHECK(*ph.memorisation_end < *ph.cleanup_end);
  CHECK(*ph.memorisation_end <= *ph.circuit_formation_end);
  CHECK(*ph.circuit_formation_end <= *ph.cleanup_end);
  // After grokking the Fourier circuit alone solves the task; before memorisation ends it does not.
  CHECK(rows.back().restricted_loss < 0.01);
  CHECK(rows.back().excluded_loss > rows.back().train_loss * 100);
  // progress.csv: a header and a row per checkpoint; the phases land in summary.json.
  write_progress(run.dir, progress);
  const std::string csv = read_file(run.dir + "/progress.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == std::ptrdiff_t(rows.size() + 1));
  CHECK(csv.find("restricted_acc,test_over_restricted,gini_wl,excluded_loss_k" + std::to_string(progress.key_freqs[0])) !=
        std::string::npos);
  auto summary = read_json_file(run.dir + "/summary.json");
  CHECK(summary["phases"]["cleanup"]["end"] == *ph.cleanup_end);
  CHECK(summary["phases"]["key_freqs"] == nlohmann::json(progress.key_freqs));
}

TEST_CASE("progress.csv reads back to the same rows and phases; a damaged one is refused by line", "[analysis]") {
  RunProgress p;
  p.rows = paper_shaped_run();
  p.key_freqs = {3, 7};
  for (auto& r : p.rows) r.excluded_by_key = {r.excluded_loss / 2, r.excluded_loss / 3};
  p.phases = detect_phases(p.rows);
  const std::string dir = test::temp_dir("progress-csv");
  write_progress(dir, p);
  auto back = read_progress(dir + "/progress.csv");
  CHECK(back.key_freqs == p.key_freqs);
  REQUIRE(back.rows.size() == p.rows.size());
  for (size_t i = 0; i < p.rows.size(); ++i) {
    CHECK(back.rows[i].epoch == p.rows[i].epoch);
    // progress.csv keeps 9 significant digits.
    CHECK(back.rows[i].restricted_loss == Approx(p.rows[i].restricted_loss).epsilon(1e-8));
    REQUIRE(back.rows[i].excluded_by_key.size() == 2);
    for (size_t k = 0; k < 2; ++k)
      CHECK(back.rows[i].excluded_by_key[k] == Approx(p.rows[i].excluded_by_key[k]).epsilon(1e-8));
  }
  CHECK(back.phases.circuit_formation_end == p.phases.circuit_formation_end);
  CHECK(back.phases.cleanup_end == p.phases.cleanup_end);
  const std::string text = read_text_file(dir + "/progress.csv");
  auto refused = [&](const std::string& damaged, const std::string& part) {
    atomic_write(dir + "/progress.csv", damaged);
    try {
      read_progress(dir + "/progress.csv");
      FAIL("accepted: " << part);
    } catch (const RunError& e) {
      CHECK(std::string(e.what()).find(part) != std::string::npos);
    }
  };
  refused("epoch,x\n", "line 1: not a progress.csv header");
  refused(text.substr(0, text.find('\n') + 1), "no rows");
  std::string bad = text;
  bad.replace(bad.find("\n100,") + 1, 3, "1e9x");
  refused(bad, "line 3: column epoch: not a finite number");
  refused(text + "5,1\n", "2 columns, the header has 16");
}
