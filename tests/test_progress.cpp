#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "catch.hpp"
#include "grokked_run.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/progress.hpp"
#include "grokking/rundir.hpp"
#include "helpers.hpp"

using namespace grokking;

TEST_CASE("phase detection: order, and a run that never grokked says so", "[analysis]") {
  std::vector<ProgressRow> rows;
  for (int64_t e = 0; e <= 20; ++e) {
    ProgressRow r;
    r.epoch = e * 100;
    r.train_acc = e >= 3 ? 1.0 : 0.5;
    r.test_loss = e <= 4 ? 1.0 + double(e) : 5.0 - 0.2 * double(e);
    r.test_acc = 0.1;
    r.restricted_loss = std::pow(10.0, -0.4 * double(e));
    rows.push_back(r);
  }
  auto ph = detect_phases(rows);
  CHECK_FALSE(ph.grokked);
  CHECK(ph.memorisation_end == int64_t(400));
  CHECK(ph.note.find("never grokked") != std::string::npos);
  for (int64_t e = 15; e <= 20; ++e) rows[size_t(e)].test_acc = 1.0;
  ph = detect_phases(rows);
  REQUIRE(ph.grokked);
  CHECK(*ph.memorisation_end <= *ph.circuit_formation_end);
  CHECK(*ph.circuit_formation_end <= *ph.cleanup_end);
  CHECK(ph.cleanup_end == int64_t(1500));
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
