#include <torch/torch.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <sstream>
#include <limits>

#include "catch.hpp"
#include "grokked_run.hpp"
#include "grokking/analysis.hpp"
#include "grokking/checkpoint.hpp"
#include "grokking/error.hpp"
#include "grokking/progress.hpp"
#include "grokking/progress_note.hpp"
#include "grokking/rundir.hpp"
#include "helpers.hpp"

using namespace grokking;

namespace {
// A run in checkpoints every 100 epochs, shaped as the paper describes it: the training set fit
// by 300; excluded loss lowest at 400, then rising; the weight norm highest at 300, falling
// slowly to 1,200, sharply to 1,600, then flat; log10 restricted loss falling slowly from 400,
// sharply from 1,100 to 1,600; the test loss flat to 1,200, then down 7 decades by 1,600; test
// accuracy 99 % from 1,500; the Gini rising from 1,200.
std::vector<ProgressRow> paper_shaped_run(int64_t per_100_epochs = 1) {
  std::vector<ProgressRow> rows;
  for (int64_t i = 0; i <= 20 * per_100_epochs; ++i) {
    const double x = double(i) / double(per_100_epochs);  // epoch / 100
    ProgressRow r;
    r.epoch = i * 100 / per_100_epochs;
    r.train_acc = x >= 3 ? 1.0 : 0.5;
    r.train_loss = std::pow(10.0, -0.5 * std::min(x, 12.0));
    r.excluded_loss = x <= 4 ? 5.0 - x : 2.0 * (x - 4);
    r.sum_sq_weights = x <= 3 ? 100 + 50 * x : x <= 12 ? 250 - 5 * (x - 3) : x <= 16 ? 205 - 40 * (x - 12) : 45 - 0.5 * (x - 16);
    r.restricted_loss = std::pow(10.0, x <= 4 ? 0.0 : x <= 11 ? -0.05 * (x - 4) : x <= 16 ? -0.35 - (x - 11) : -5.35);
    r.test_loss = std::pow(10.0, x <= 12 ? 1.0 : x <= 16 ? 1.0 - 1.75 * (x - 12) : -6.0);
    r.test_acc = x >= 15 ? 1.0 : 0.1;
    r.gini = x <= 12 ? 0.1 + 0.001 * x : std::min(0.6, 0.112 + 0.12 * (x - 12));
    rows.push_back(r);
  }
  return rows;
}
}  // namespace

TEST_CASE("phases: the best fit of four regimes whose phases meet the paper's definitions", "[analysis]") {
  auto rows = paper_shaped_run();
  auto ph = detect_phases(rows);
  REQUIRE(ph.grokked);
  // The regimes change where the measures do: the excluded loss turns at 400 (the weight norm at
  // 300), the weight norm's sharp fall, the restricted loss's and the Gini's rise run 1,200-1,600.
  // (Least squares over five measures that turn at 300 and 400 may put the first boundary a
  // checkpoint either side.)
  REQUIRE(ph.memorisation_end.has_value());
  CHECK(*ph.memorisation_end >= 300);
  CHECK(*ph.memorisation_end <= 500);
  CHECK(ph.circuit_formation_end == int64_t(1200));
  CHECK(ph.cleanup_end == int64_t(1600));
  CHECK(ph.failed.empty());
  CHECK(ph.note.empty());
  REQUIRE(ph.changes.size() == 3);
  CHECK(ph.changes[1].excluded_loss[1] == 16.0);
  auto j = phases_json(ph, {1, 2});
  CHECK(j["definitions_hold"] == true);
  CHECK(j["changes"]["cleanup"]["test_loss"][1] == Approx(1e-6));

  // The model generalises in cleanup: with test accuracy 99 % only at 1,900 the best fit that
  // meets the definitions ends cleanup there, not at the regimes' change at 1,600.
  auto late = rows;
  for (auto& r : late) r.test_acc = r.epoch >= 1900 ? 1.0 : 0.1;
  auto lph = detect_phases(late);
  CHECK(lph.cleanup_end == int64_t(1900));
  CHECK(lph.failed.empty());

  // A run whose test loss falls from the start (generalising while it memorises, as some small
  // runs do) has no circuit formation with a flat test loss: no boundaries meet the definitions,
  // and the run says so rather than print phases.
  auto gradual = rows;
  for (size_t i = 1; i < gradual.size(); ++i) gradual[i].test_loss = std::pow(10.0, 1.0 - 0.35 * double(i));
  auto bad = detect_phases(gradual);
  CHECK(bad.failed.find("circuit formation: test loss flat") != std::string::npos);
  CHECK(bad.note.find("no boundaries meet the paper's definitions") != std::string::npos);
  CHECK(phases_json(bad, {})["definitions_hold"] == false);
  // So has one whose Gini rises fastest early and ever slower (no jump).
  auto steady = rows;
  for (auto& r : steady) r.gini = 0.1 + 0.1 * std::sqrt(double(r.epoch) / 100);
  auto flat = detect_phases(steady);
  CHECK(flat.failed.find("cleanup: Gini jumps") != std::string::npos);
  CHECK_FALSE(phases_json(flat, {})["definitions_hold"].get<bool>());

  // Never grokked (the run stopped in circuit formation): only memorisation's end, the note says so.
  rows.resize(12);
  for (auto& r : rows) r.test_acc = 0.1;
  ph = detect_phases(rows);
  CHECK_FALSE(ph.grokked);
  REQUIRE(ph.memorisation_end.has_value());
  CHECK(*ph.memorisation_end >= 300);  // the training set is fit by then
  CHECK(*ph.memorisation_end <= 400);
  CHECK_FALSE(ph.cleanup_end.has_value());
  CHECK(ph.note.find("never grokked") != std::string::npos);
  CHECK(phases_json(ph, {})["definitions_hold"].is_null());
  // Never fit: nothing but the note, also where the test accuracy got high.
  for (auto& r : rows) r.train_acc = 0.5, r.test_acc = 1.0;
  auto unfit = detect_phases(rows);
  CHECK_FALSE(unfit.memorisation_end.has_value());
  CHECK_FALSE(unfit.grokked);
  CHECK(unfit.changes.empty());
  // A run of 2,001 checkpoints (one every epoch) is searched on 500 of them: the same phases.
  auto fine = detect_phases(paper_shaped_run(100));
  REQUIRE(fine.cleanup_end.has_value());
  // (The restricted loss turns at 1,100, the other measures at 1,200: at this resolution the fit
  // lands between.)
  CHECK(*fine.circuit_formation_end >= 1100);
  CHECK(*fine.circuit_formation_end <= 1200);
  CHECK(std::abs(*fine.cleanup_end - 1600) <= 10);
  CHECK(fine.failed.empty());
  // Where test accuracy reaches 99 % only at checkpoints the spread leaves out, the search still
  // sees them: the run grokked, and cleanup holds that checkpoint.
  auto blip = paper_shaped_run(100);
  for (auto& r : blip) r.test_acc = r.epoch == 1501 ? 1.0 : 0.1;
  auto bph = detect_phases(blip);
  CHECK(bph.grokked);
  REQUIRE(bph.cleanup_end.has_value());
  CHECK(*bph.circuit_formation_end < 1501);
  CHECK(*bph.cleanup_end >= 1501);

  // Seven checkpoints are enough for three phases of three, six are not (and a grokked run is
  // still said to have grokked); a run that never grokked needs five for its two regimes.
  auto pick = [&](std::initializer_list<size_t> at) {
    std::vector<ProgressRow> out;
    for (auto i : at) out.push_back(paper_shaped_run()[i]);
    return out;
  };
  CHECK(detect_phases(pick({0, 3, 6, 9, 12, 16, 20})).cleanup_end.has_value());
  auto six = detect_phases(pick({0, 4, 8, 12, 16, 20}));
  CHECK(six.grokked);
  CHECK_FALSE(six.memorisation_end.has_value());
  CHECK(six.note.find("too few checkpoints to find phases (7 needed)") != std::string::npos);
  auto early = pick({0, 2, 4, 6, 8});  // stopped at 800, before generalisation
  CHECK(detect_phases(early).memorisation_end.has_value());
  early.pop_back();
  CHECK(detect_phases(early).note.find("too few checkpoints to find phases (5 needed)") != std::string::npos);

  // Measures that are not finite (a run that diverged at its end): no phases, and a note.
  auto nan = paper_shaped_run();
  nan.back().excluded_loss = std::numeric_limits<double>::quiet_NaN();
  auto nph = detect_phases(nan);
  CHECK_FALSE(nph.cleanup_end.has_value());
  CHECK(nph.note.find("not finite") != std::string::npos);
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
  REQUIRE(ph.cleanup_end.has_value());
  CHECK(*ph.memorisation_end < *ph.circuit_formation_end);
  CHECK(*ph.circuit_formation_end < *ph.cleanup_end);
  // After grokking the Fourier circuit alone solves the task; before memorisation ends it does not.
  CHECK(rows.back().restricted_loss < 0.01);
  CHECK(rows.back().excluded_loss > rows.back().train_loss * 100);
  // progress.csv: a header and a row per checkpoint; the phases land in summary.json.
  write_progress(run.dir, progress);
  const std::string csv = read_file(run.dir + "/progress.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == std::ptrdiff_t(rows.size() + 1));
  CHECK(csv.find("restricted_acc,test_over_restricted,gini_wl,heldout_restricted_loss,heldout_restricted_acc,excluded_loss_k" +
                 std::to_string(progress.key_freqs[0])) !=
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
  refused(text + "5,1\n", "2 columns, the header has 18");
}

TEST_CASE("long work says where it is: a progress note a line per interval, none when notes are off", "[analysis]") {
  std::ostringstream out;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>("notes", std::make_shared<spdlog::sinks::ostream_sink_mt>(out));
  logger->set_pattern("%v");
  spdlog::set_default_logger(logger);
  {
    ProgressNote note("run: progress, checkpoints", 3, 0.0);  // every tick is due
    for (int i = 0; i < 3; ++i) note.tick();
  }
  const std::string shown = out.str();
  CHECK(shown.find("run: progress, checkpoints: 1/3, ") == 0);
  CHECK(shown.find("run: progress, checkpoints: 2/3, ") != std::string::npos);
  CHECK(shown.find("3/3") == std::string::npos);  // the end is said by whoever finished the work
  out.str("");
  {
    ProgressNote slow("slow", 100, 3600.0);  // nothing before the first interval
    for (int i = 0; i < 50; ++i) slow.tick();
    set_progress_notes(false);
    ProgressNote off("off", 3, 0.0);
    for (int i = 0; i < 3; ++i) off.tick();
    set_progress_notes(true);
  }
  CHECK(out.str().empty());
  spdlog::set_default_logger(previous);
}

TEST_CASE("irreps across seeds: each run's order of becoming key, the final key sets, the pairwise orders", "[analysis]") {
  // Three irreps over five checkpoints (similarity above 0.005 = 1, below = 0).
  auto run = [](const std::vector<std::vector<int>>& above) {
    RunProgress p;
    p.irrep_names = {"A", "B", "C"};
    for (size_t r = 0; r < above.size(); ++r) {
      ProgressRow row;
      row.epoch = int64_t(100 * r);
      p.rows.push_back(row);
      std::vector<double> sim;
      for (int a : above[r]) sim.push_back(a ? 0.3 : 0.001);
      p.irrep_similarity.push_back(sim);
    }
    return irrep_crossings(p);
  };
  // Seed 1: A key from 100, B from 200; C above at 100 only (dropped at 200).
  const auto one = run({{0, 0, 0}, {1, 0, 1}, {1, 1, 0}, {1, 1, 0}, {1, 1, 0}});
  REQUIRE(one.size() == 3);
  CHECK(one[0].name == "A");
  CHECK(*one[0].key_from == 100);
  CHECK(one[1].name == "B");
  CHECK(*one[1].key_from == 200);
  CHECK(one[2].name == "C");
  CHECK(!one[2].key_from);
  CHECK(*one[2].first_above == 100);
  CHECK(*one[2].dropped_at == 200);
  // A crossing that falls back and rises again is key from its last rise.
  const auto back = run({{1, 0, 0}, {0, 0, 0}, {1, 0, 0}, {1, 0, 0}, {1, 0, 0}});
  CHECK(*back[0].first_above == 0);
  CHECK(*back[0].key_from == 200);
  CHECK(!back[0].dropped_at);
  // Seed 2: B from 100, A from 300, C never. Seed 3: A and B together from 200.
  const auto two = run({{0, 0, 0}, {0, 1, 0}, {0, 1, 0}, {1, 1, 0}, {1, 1, 0}});
  const auto three = run({{0, 0, 0}, {0, 0, 0}, {1, 1, 0}, {1, 1, 0}, {1, 1, 0}});
  // Seed 4: only C at the end.
  const auto four = run({{0, 0, 0}, {0, 0, 1}, {0, 0, 1}, {0, 0, 1}, {0, 0, 1}});
  const auto s = summarise_irrep_orders({one, two, three, four});
  CHECK(s.runs == 4);
  REQUIRE(s.key_sets.size() == 2);
  CHECK(s.key_sets[0].irreps == std::vector<std::string>{"A", "B"});
  CHECK(s.key_sets[0].runs == 3);
  CHECK(s.key_sets[1].irreps == std::vector<std::string>{"C"});
  CHECK(s.key_sets[1].runs == 1);
  REQUIRE(s.pairs.size() == 1);
  CHECK(s.pairs[0].first == "A");
  CHECK(s.pairs[0].second == "B");
  CHECK(s.pairs[0].before == 1);
  CHECK(s.pairs[0].after == 1);
  CHECK(s.pairs[0].tied == 1);
  CHECK(s.drop_pairs.empty());  // only C ever dropped out, in one run
  // Drop-outs: A out from 200 and C from 300 in two runs (five); C out before A in a third (six);
  // A before C in a fourth, where C falls, rises and falls again (seven: a drop-out counts from
  // its last fall); both out at once in `tie`.
  const auto five = run({{1, 0, 1}, {1, 0, 1}, {0, 0, 1}, {0, 0, 0}, {0, 0, 0}});
  const auto six = run({{1, 0, 1}, {1, 0, 0}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}});
  const auto seven = run({{1, 0, 1}, {1, 0, 0}, {0, 0, 1}, {0, 0, 0}, {0, 0, 0}});
  REQUIRE(seven.size() == 2);
  CHECK(*seven[1].dropped_at == 300);
  const auto d = summarise_irrep_orders({five, five, six, seven});
  REQUIRE(d.drop_pairs.size() == 1);
  CHECK(d.drop_pairs[0].first == "A");
  CHECK(d.drop_pairs[0].second == "C");
  CHECK(d.drop_pairs[0].before == 3);
  CHECK(d.drop_pairs[0].after == 1);
  CHECK(d.drop_pairs[0].tied == 0);
  const auto tie = run({{1, 0, 1}, {1, 0, 1}, {0, 0, 0}, {0, 0, 0}, {0, 0, 0}});
  CHECK(summarise_irrep_orders({tie}).drop_pairs[0].tied == 1);
  // B before A in two of two: the pair is named that way round.
  const auto s2 = summarise_irrep_orders({two, two});
  REQUIRE(s2.pairs.size() == 1);
  CHECK(s2.pairs[0].first == "B");
  CHECK(s2.pairs[0].before == 2);
  CHECK(s2.pairs[0].after == 0);
}

TEST_CASE("irreps_progress.csv reads back; a damaged one is refused by line and column", "[analysis]") {
  const std::string dir = test::temp_dir("irreps-csv");
  auto write = [&](const std::string& text) {
    atomic_write(dir + "/irreps_progress.csv", text);
    return dir + "/irreps_progress.csv";
  };
  const RunProgress p = read_irreps_progress(write("epoch,sign,\"standard (3,1)\"\n0,0.001,0.002\n100,0.2,0.01\n"));
  CHECK(p.irrep_names == std::vector<std::string>{"sign", "standard (3,1)"});
  REQUIRE(p.rows.size() == 2);
  CHECK(p.rows[1].epoch == 100);
  CHECK(p.irrep_similarity[1][0] == Approx(0.2));
  auto refused = [&](const std::string& text, const std::string& part) {
    try {
      read_irreps_progress(write(text));
      FAIL("accepted: " << part);
    } catch (const RunError& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(part) != std::string::npos);
    }
  };
  refused("step,sign\n0,0.1\n", "line 1: not an irreps_progress.csv header");
  refused("epoch,sign\n0,x\n", "line 2: column sign: not a finite number");
  refused("epoch,sign\n100,0.1\n0,0.1\n", "line 3: epochs must increase");
  refused("epoch,sign\n0,0.1,0.2\n", "line 2: 3 columns, the header has 2");
  refused("epoch,sign\n", "no rows");
}
