#include "grokking/compare.hpp"

#include <limits>
#include <optional>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>

#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"

namespace grokking {
using nlohmann::json;

Median median_of(std::vector<Outcome> x) {
  if (x.empty()) return {std::nan(""), false};
  // Censored values sort after uncensored ones at the same epoch: a run that never grokked by
  // epoch E did worse than one that grokked at E.
  std::sort(x.begin(), x.end(), [](const Outcome& a, const Outcome& b) {
    return a.value != b.value ? a.value < b.value : (!a.censored && b.censored);
  });
  const size_t n = x.size();
  if (n % 2 == 1) return {x[n / 2].value, x[n / 2].censored};
  const auto &a = x[n / 2 - 1], &b = x[n / 2];
  return {(a.value + b.value) / 2, a.censored || b.censored};
}

namespace {
std::vector<Outcome> resample(const std::vector<Outcome>& x, std::mt19937_64& rng) {
  std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
  std::vector<Outcome> out(x.size());
  for (auto& o : out) o = x[pick(rng)];
  return out;
}
std::vector<std::string> parse_values(const std::string& text) {
  std::vector<std::string> out;
  size_t i = 0;
  for (size_t j; (j = text.find(',', i)) != std::string::npos; i = j + 1) out.push_back(text.substr(i, j - i));
  out.push_back(text.substr(i));
  return out;
}
std::string join_keys(const std::vector<std::string>& keys) {
  std::string s;
  for (auto& k : keys) s += (s.empty() ? "" : ",") + k;
  return s.empty() ? "(none: one arm)" : s;
}
Interval percentiles(std::vector<double> v) {
  if (v.empty()) return {std::nan(""), std::nan("")};
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[size_t(std::floor(q * double(v.size() - 1) + 0.5))]; };
  return {at(0.025), at(0.975)};
}
}  // namespace

Interval bootstrap_median(const std::vector<Outcome>& x, uint64_t seed, int draws) {
  if (x.empty()) return {std::nan(""), std::nan("")};
  std::mt19937_64 rng(seed);
  std::vector<double> meds;
  for (int i = 0; i < draws; ++i) meds.push_back(median_of(resample(x, rng)).value);
  return percentiles(meds);
}

Interval bootstrap_ratio(const std::vector<Outcome>& x, const std::vector<Outcome>& base, uint64_t seed, int draws) {
  if (x.empty() || base.empty()) return {std::nan(""), std::nan("")};
  std::mt19937_64 rng(seed);
  std::vector<double> ratios;
  for (int i = 0; i < draws; ++i) {
    const double b = median_of(resample(base, rng)).value, a = median_of(resample(x, rng)).value;
    if (b > 0) ratios.push_back(a / b);
  }
  return percentiles(ratios);
}

RankTest mann_whitney(const std::vector<Outcome>& x, const std::vector<Outcome>& y) {
  RankTest t;
  if (x.empty() || y.empty()) return t;
  // Order: uncensored by value, then every censored value (tied).
  auto less = [](const Outcome& a, const Outcome& b) {
    if (a.censored != b.censored) return !a.censored;
    return !a.censored && a.value < b.value;
  };
  for (auto& a : x)
    for (auto& b : y) t.u += less(a, b) ? 1.0 : less(b, a) ? 0.0 : 0.5;
  // Normal approximation with the tie correction: ranks of the pooled sample.
  std::vector<Outcome> all = x;
  all.insert(all.end(), y.begin(), y.end());
  std::sort(all.begin(), all.end(), less);
  const double n1 = double(x.size()), n2 = double(y.size()), n = n1 + n2;
  double ties = 0;
  for (size_t i = 0; i < all.size();) {
    size_t j = i;
    while (j < all.size() && !less(all[i], all[j]) && !less(all[j], all[i])) ++j;
    const double k = double(j - i);
    ties += k * k * k - k;
    i = j;
  }
  const double var = n1 * n2 / 12.0 * ((n + 1) - ties / (n * (n - 1)));
  if (var <= 0) return t;
  t.z = (t.u - n1 * n2 / 2) / std::sqrt(var);
  t.p = std::erfc(std::abs(t.z) / std::sqrt(2.0));
  return t;
}

double log_spread(const std::vector<Outcome>& x) {
  if (x.size() < 2) return std::nan("");
  double mean = 0, sq = 0;
  for (auto& o : x) mean += std::log(std::max(o.value, 1.0)) / double(x.size());
  for (auto& o : x) sq += std::pow(std::log(std::max(o.value, 1.0)) - mean, 2);
  return std::sqrt(sq / double(x.size() - 1));
}

double detectable_ratio(double sd, size_t n1, size_t n2) {
  if (n1 < 2 || n2 < 2 || !std::isfinite(sd)) return std::numeric_limits<double>::infinity();
  const double z = 1.959964 + 0.841621;
  return std::exp(z * sd * std::sqrt(1.0 / double(n1) + 1.0 / double(n2)) / std::sqrt(3.0 / M_PI));
}

namespace {
// A run's outcome from its metrics.csv: the first epoch with test accuracy >= acc (or, with gap,
// the epochs from train accuracy >= acc to that), censored at the last epoch when never.
Outcome outcome_from_metrics(const std::vector<MetricsRow>& rows, double acc, bool gap) {
  std::optional<int64_t> train_at, test_at;
  for (auto& r : rows) {
    if (!train_at && r.train_acc >= acc) train_at = r.epoch;
    if (!test_at && r.test_acc >= acc) test_at = r.epoch;
  }
  const double last = rows.empty() ? 0.0 : double(rows.back().epoch);
  if (!gap) return test_at ? Outcome{double(*test_at), false} : Outcome{last, true};
  const double from = train_at ? double(*train_at) : last;
  return test_at ? Outcome{double(*test_at) - from, false} : Outcome{last - from, true};
}
// The test accuracy at epoch e: the last evaluation at or before it (NaN when the run stopped before e).
double acc_at(const std::vector<MetricsRow>& rows, int64_t e) {
  double v = std::nan("");
  for (auto& r : rows)
    if (r.epoch <= e) v = r.test_acc;
  return rows.empty() || rows.back().epoch < e ? std::nan("") : v;
}
double plain_median(std::vector<double> v) {
  v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}
}  // namespace

std::vector<Arm> compare_sweep(const CompareOptions& opts) {
  const std::string& dir = opts.sweep_dir;
  if (!exists(dir + "/plan.json")) throw UsageError(dir + ": not a sweep directory (no plan.json)");
  const json plan = read_json_file(dir + "/plan.json");
  const auto keys = plan.at("keys").get<std::vector<std::string>>();
  for (auto& k : opts.by)
    if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
      std::string list;
      for (auto& s : keys) list += (list.empty() ? "" : ", ") + s;
      throw UsageError("--by " + k + ": not a swept key of " + dir + " (swept: " + list + ")");
    }
  // Arms in the order of the plan; runs without a summary, or whose summary says interrupted
  // (not finished: `sweep` resumes them), are left out and counted.
  std::map<std::vector<std::string>, size_t> index;
  std::vector<Arm> arms;
  for (auto& run : plan.at("runs")) {
    std::vector<std::string> values;
    std::string label;
    for (auto& k : opts.by) {
      // A point that does not set the key keeps the base's value (or the default): "(unset)".
      const json v = run.at("values").value(k, json());
      values.push_back(v.is_null() ? "(unset)" : v.is_string() ? v.get<std::string>() : v.dump());
      label += (label.empty() ? "" : ", ") + k + "=" + values.back();
    }
    if (opts.by.empty()) label = "all runs";  // no --by: the sweep's runs pooled into one arm
    auto [it, fresh] = index.emplace(values, arms.size());
    if (fresh) {
      Arm a;
      a.label = label, a.values = values;
      arms.push_back(a);
    }
    Arm& arm = arms[it->second];
    const std::string run_dir = dir + "/runs/" + run.at("name").get<std::string>();
    if (!exists(summary_path(run_dir))) continue;
    const Summary s = read_summary(run_dir);
    if (s.status == RunStatus::interrupted) continue;
    const double last = double(s.epochs);
    const double memorised = s.memorised_epoch ? double(*s.memorised_epoch) : 0.0;
    arm.runs.push_back(run.at("name").get<std::string>());
    if (opts.irreps) {
      const std::string file = run_dir + "/irreps_progress.csv";
      if (exists(file)) {
        arm.irrep_orders.push_back(irrep_crossings(read_irreps_progress(file)));
      } else {
        arm.irrep_orders.emplace_back();
        arm.no_irreps.push_back(arm.runs.back());
      }
    }
    if (opts.acc > 0 || !opts.at.empty()) {
      const auto rows = read_metrics(run_dir + "/metrics.csv");
      std::vector<double> accs;
      for (auto e : opts.at) accs.push_back(acc_at(rows, e));
      arm.per_run_acc.push_back(accs);
      if (opts.acc > 0) {
        const Outcome o = outcome_from_metrics(rows, opts.acc, opts.gap);
        arm.n_grokked += o.censored ? 0 : 1;
        arm.grokked.push_back(o);
        arm.delay.push_back({o.value - (opts.gap ? 0.0 : memorised), o.censored});
        continue;
      }
    }
    if (s.grokked_epoch) {
      const double g = double(*s.grokked_epoch);
      ++arm.n_grokked;
      arm.grokked.push_back({g, false});
      arm.delay.push_back({g - memorised, false});
    } else {
      arm.grokked.push_back({last, true});
      arm.delay.push_back({last - memorised, true});
    }
  }
  // The baseline first.
  if (!opts.baseline.empty()) {
    auto want = parse_values(opts.baseline);
    auto it = std::find_if(arms.begin(), arms.end(), [&](const Arm& a) { return a.values == want; });
    if (opts.by.empty()) throw UsageError("--baseline needs --by (without it the runs form one arm)");
    if (it == arms.end()) throw UsageError("--baseline " + opts.baseline + ": no arm has these values of " + join_keys(opts.by));
    std::rotate(arms.begin(), it, it + 1);
  }
  for (size_t i = 0; i < arms.size(); ++i) {
    Arm& a = arms[i];
    a.grok_median = median_of(a.grokked);
    a.delay_median = median_of(a.delay);
    a.grok_ci = bootstrap_median(a.grokked, opts.seed + 2 * i);
    a.delay_ci = bootstrap_median(a.delay, opts.seed + 2 * i + 1);
    const Arm& base = arms[0];
    a.ratio = base.grok_median.value > 0 ? a.grok_median.value / median_of(base.grokked).value : std::nan("");
    a.ratio_ci = bootstrap_ratio(a.grokked, base.grokked, opts.seed + 1000 + i);
    a.test = mann_whitney(a.grokked, base.grokked);
    // The spread of both arms' log outcomes, pooled: what the rank test could have detected.
    a.log_sd = log_spread(a.grokked);
    const double sb = log_spread(base.grokked);
    const double pooled = std::sqrt(((double(a.grokked.size()) - 1) * a.log_sd * a.log_sd +
                                     (double(base.grokked.size()) - 1) * sb * sb) /
                                    std::max(1.0, double(a.grokked.size() + base.grokked.size()) - 2));
    a.detectable = i == 0 ? std::nan("") : detectable_ratio(pooled, a.grokked.size(), base.grokked.size());
    for (size_t k = 0; k < opts.at.size(); ++k) {
      std::vector<double> v;
      for (auto& run : a.per_run_acc) v.push_back(run[k]);
      a.acc_at.push_back(plain_median(v));
    }
    if (opts.irreps) {
      std::vector<std::vector<IrrepCrossing>> read;
      for (size_t k = 0; k < a.runs.size(); ++k)
        if (std::find(a.no_irreps.begin(), a.no_irreps.end(), a.runs[k]) == a.no_irreps.end())
          read.push_back(a.irrep_orders[k]);
      a.irrep_summary = summarise_irrep_orders(read);
    }
  }
  return arms;
}

namespace {
std::string shown(const Median& m) { return (m.lower_bound ? ">=" : "") + format_number(m.value, "%.0f"); }
std::string shown(const Interval& i, const char* f = "%.0f") {
  return "[" + format_number(i.lo, f) + ", " + format_number(i.hi, f) + "]";
}
json median_json(const Median& m, const Interval& ci) {
  return {{"median", m.value}, {"median_is_lower_bound", m.lower_bound}, {"ci95", {ci.lo, ci.hi}}};
}
json epoch_json(const std::optional<int64_t>& e) { return e ? json(*e) : json(); }
json irreps_json(const Arm& a) {
  json runs = json::array();
  for (size_t k = 0; k < a.runs.size(); ++k) {
    if (std::find(a.no_irreps.begin(), a.no_irreps.end(), a.runs[k]) != a.no_irreps.end()) continue;
    json order = json::array();
    for (auto& c : a.irrep_orders[k])
      order.push_back({{"irrep", c.name}, {"first_above", epoch_json(c.first_above)}, {"key_from", epoch_json(c.key_from)},
                       {"dropped_at", epoch_json(c.dropped_at)}});
    runs.push_back({{"run", a.runs[k]}, {"order", order}});
  }
  json sets = json::array();
  for (auto& s : a.irrep_summary.key_sets) sets.push_back({{"irreps", s.irreps}, {"runs", s.runs}});
  auto pairs_json = [](const std::vector<IrrepOrderSummary::Pair>& v) {
    json out = json::array();
    for (auto& p : v)
      out.push_back({{"first", p.first}, {"second", p.second}, {"before", p.before}, {"after", p.after}, {"tied", p.tied}});
    return out;
  };
  return {{"runs", runs},
          {"without_irreps_progress", a.no_irreps},
          {"key_sets", sets},
          {"pairs", pairs_json(a.irrep_summary.pairs)},
          {"drop_pairs", pairs_json(a.irrep_summary.drop_pairs)}};
}
std::string names_text(const std::vector<std::string>& v) {
  std::string out;
  for (auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return "{" + (out.empty() ? "none" : out) + "}";
}
void print_irreps(const Arm& a) {
  std::printf("\n%s: irreps in the order they became key for good (logit similarity > 0.005 to the last checkpoint; "
              "each run's irreps_progress.csv)\n", a.label.c_str());
  int width = 3;
  for (auto& r : a.runs) width = std::max(width, int(r.size()));
  for (size_t k = 0; k < a.runs.size(); ++k) {
    if (std::find(a.no_irreps.begin(), a.no_irreps.end(), a.runs[k]) != a.no_irreps.end()) continue;
    std::string key, dropped;
    for (auto& c : a.irrep_orders[k]) {
      if (c.key_from) key += (key.empty() ? "" : ", ") + c.name + " " + std::to_string(*c.key_from);
      if (c.dropped_at) dropped += (dropped.empty() ? "" : ", ") + c.name + " " + std::to_string(*c.dropped_at);
    }
    std::printf("  %-*s %s%s\n", width, a.runs[k].c_str(), key.empty() ? "none key at the end" : key.c_str(),
                dropped.empty() ? "" : ("  (dropped out: " + dropped + ")").c_str());
  }
  if (!a.no_irreps.empty())
    std::printf("  %zu run(s) without irreps_progress.csv, left out (grokking progress RUN, or grokking analyse SWEEP, "
                "writes it): %s\n", a.no_irreps.size(), names_text(a.no_irreps).c_str());
  const auto& s = a.irrep_summary;
  if (s.runs == 0) return;
  std::printf("  final key sets:");
  for (auto& k : s.key_sets) std::printf(" %s in %lld of %lld;", names_text(k.irreps).c_str(), (long long)k.runs, (long long)s.runs);
  std::printf("\n");
  // Pairs seen in two runs or more (the JSON has every pair), ten at most; all ties said so.
  auto print_pairs = [&](const std::vector<IrrepOrderSummary::Pair>& pairs, const char* what, const char* verb) {
    size_t seen = 0, tied = 0, shown = 0;
    for (auto& p : pairs) seen += p.before + p.after + p.tied >= 2, tied += p.before + p.after == 0;
    if (pairs.empty()) return;
    std::printf("  %s", what);
    if (tied == pairs.size()) {
      std::printf(" every pair at the same checkpoint in every run (no order to read)\n");
      return;
    }
    for (auto& p : pairs) {
      if (p.before + p.after + p.tied < 2 || p.before + p.after == 0 || shown == 10) continue;
      std::printf(" %s %s %s in %lld of %lld;", p.first.c_str(), verb, p.second.c_str(), (long long)p.before,
                  (long long)(p.before + p.after + p.tied));
      ++shown;
    }
    if (shown == 0) std::printf(" no pair ordered in two runs or more");
    std::printf("%s\n", seen > shown ? " (every pair: --json)" : "");
  };
  print_pairs(s.pairs, "order of becoming key, in the runs where both did:", "before");
  print_pairs(s.drop_pairs, "order of dropping out, in the runs where both did:", "before");
}
}  // namespace

int run_compare_command(const CompareOptions& opts) {
  auto arms = compare_sweep(opts);
  CsvWriter csv({"arm", "runs", "grokked", "grok_median", "grok_median_is_lower_bound", "grok_ci_lo", "grok_ci_hi",
                 "delay_median", "delay_ci_lo", "delay_ci_hi", "ratio", "ratio_ci_lo", "ratio_ci_hi", "mann_whitney_u",
                 "z", "p"});
  // What each run's number is (the JSON keeps the key grokked_epoch for it whichever it is).
  const std::string what = opts.acc <= 0 ? "grokked epoch (test accuracy >= 99 %)"
                           : opts.gap ? "epochs from train to test accuracy >= " + format_number(opts.acc, "%g")
                                      : "first epoch with test accuracy >= " + format_number(opts.acc, "%g");
  json j = {{"sweep_dir", opts.sweep_dir}, {"by", opts.by}, {"baseline", arms.empty() ? json() : json(arms[0].label)},
            {"outcome", what},
            {"censoring", "runs that never grokked count at their last epoch (a lower bound); a median that falls "
                          "on one is marked as a lower bound; the rank test ranks them after every grokked run"},
            {"arms", json::array()}};
  for (auto& a : arms) {
    if (a.runs.empty()) {  // no finished run yet: nothing to report but that
      csv.field(a.label).field(int64_t(0)).field(int64_t(0));
      for (int k = 0; k < 13; ++k) csv.field(json());
      csv.end_row();
      j["arms"].push_back({{"arm", a.label}, {"runs", 0}});
      continue;
    }
    csv.field(a.label).field(int64_t(a.runs.size())).field(a.n_grokked).field(a.grok_median.value);
    csv.field(int64_t(a.grok_median.lower_bound)).field(a.grok_ci.lo).field(a.grok_ci.hi).field(a.delay_median.value);
    csv.field(a.delay_ci.lo).field(a.delay_ci.hi).field(a.ratio).field(a.ratio_ci.lo).field(a.ratio_ci.hi);
    csv.field(a.test.u).field(a.test.z).field(a.test.p).end_row();
    j["arms"].push_back({{"arm", a.label},
                         {"runs", a.runs.size()},
                         {"grokked", a.n_grokked},
                         {"grokked_epoch", median_json(a.grok_median, a.grok_ci)},
                         {"grokking_delay", median_json(a.delay_median, a.delay_ci)},
                         {"ratio_to_baseline",
                          {{"value", a.ratio},
                           {"is_lower_bound", a.grok_median.lower_bound && !arms[0].grok_median.lower_bound},
                           {"ci95", {a.ratio_ci.lo, a.ratio_ci.hi}}}},
                         {"mann_whitney", {{"u", a.test.u}, {"z", a.test.z}, {"p", a.test.p}}},
                         {"log_sd", a.log_sd},
                         {"detectable_ratio_80pct_power",
                          std::isfinite(a.detectable) ? json(a.detectable) : json()}});
    if (opts.irreps) j["arms"].back()["irreps"] = irreps_json(a);
    if (!opts.at.empty()) {
      json at = json::object();
      for (size_t k = 0; k < opts.at.size(); ++k)
        at[std::to_string(opts.at[k])] = std::isnan(a.acc_at[k]) ? json() : json(a.acc_at[k]);
      j["arms"].back()["median_test_acc_at"] = at;
    }
  }
  atomic_write(opts.sweep_dir + "/compare.csv", csv.text());
  // Every run's outcome by arm, for plot's figure.
  CsvWriter runs({"arm_index", "grokked_epoch", "censored", "run", "arm"});
  for (size_t i = 0; i < arms.size(); ++i)
    for (size_t k = 0; k < arms[i].runs.size(); ++k)
      runs.field(int64_t(i)).field(arms[i].grokked[k].value).field(int64_t(arms[i].grokked[k].censored))
          .field(arms[i].runs[k]).field(arms[i].label).end_row();
  atomic_write(opts.sweep_dir + "/compare_runs.csv", runs.text());
  if (opts.json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%s: arms by %s; baseline %s; outcome: %s; intervals: 95%% bootstrap (seed %llu)\n",
              opts.sweep_dir.c_str(), join_keys(opts.by).c_str(), arms.empty() ? "-" : arms[0].label.c_str(),
              what.c_str(), (unsigned long long)opts.seed);
  int width = 3;
  for (auto& a : arms) width = std::max(width, int(a.label.size()));
  std::printf("%-*s %5s %7s %9s %17s %9s %17s %6s %15s %7s %6s %10s", width, "arm", "runs", "reached", "median",
              "95% CI", "delay", "95% CI", "ratio", "95% CI", "p (MW)", "sd log", "detectable");
  for (auto e : opts.at) std::printf(" %9s", ("acc@" + std::to_string(e)).c_str());
  std::printf("\n");
  for (auto& a : arms) {
    if (a.runs.empty()) {
      std::printf("%-*s %5d  (no finished run yet)\n", width, a.label.c_str(), 0);
      continue;
    }
    const bool alone = arms.size() == 1;  // one arm: nothing to compare it with
    std::printf("%-*s %5zu %7lld %9s %17s %9s %17s %6s %15s %7s %6.2f %10s", width, a.label.c_str(), a.runs.size(),
                (long long)a.n_grokked, shown(a.grok_median).c_str(), shown(a.grok_ci).c_str(),
                shown(a.delay_median).c_str(), shown(a.delay_ci).c_str(),
                // A censored median over an uncensored baseline's: the ratio is a lower bound too.
                alone ? "-"
                      : ((a.grok_median.lower_bound && !arms[0].grok_median.lower_bound ? ">=" : "") +
                         format_number(a.ratio, "%.2f")).c_str(),
                alone ? "-" : shown(a.ratio_ci, "%.2f").c_str(), alone ? "-" : format_number(a.test.p, "%.3g").c_str(),
                a.log_sd,
                std::isnan(a.detectable)   ? "-"
                : std::isinf(a.detectable) ? "none"  // an arm of one run: no spread to test against
                                           : ("x" + format_number(a.detectable, "%.2f")).c_str());
    for (auto v : a.acc_at) std::printf(" %9s", std::isnan(v) ? "-" : format_number(v, "%.3f").c_str());
    std::printf("\n");
  }
  std::printf("detectable: the ratio of medians (either way) a two-sided rank test at 0.05 would find with 80 %% power, "
              "from the two arms' spread of log outcomes and their sizes (none: an arm or the baseline has one run)\n");
  std::printf("runs that never grokked count at their last epoch (>= marks a median that is such a lower bound)\n");
  if (opts.irreps)
    for (auto& a : arms)
      if (!a.runs.empty()) print_irreps(a);
  return 0;
}

}  // namespace grokking
