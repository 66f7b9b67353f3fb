// `grokking patch`: activation and path patching of a transformer on its task's clean and
// corrupted inputs (Wang et al. 2022, section 3; Goldowsky-Dill et al. 2023).
#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include <sys/stat.h>

#include "common.hpp"
#include "grokking/error.hpp"
#include "grokking/irreps.hpp"
#include "grokking/patching.hpp"
#include "grokking/rundir.hpp"
#include "grokking/task.hpp"
#include "grokking/text.hpp"
#include "grokking/threads.hpp"

namespace grokking {
using namespace analyses;

const AnalysisKind& patch_analysis();

namespace {

std::string head_label(int64_t l, int64_t h) { return "L" + std::to_string(l) + "H" + std::to_string(h); }

// patch_acts.csv (every site), and for a transformer patch_resid.csv, patch_heads.csv and
// patch_paths.csv, for a cycle's run patch_subspace.csv: a row per cell, what plot draws.
void write_files(const std::string& dir, const PatchReport& r, Capabilities caps) {
  CsvWriter acts({"activation", "axis", "index", "recovered"});
  for (auto& s : r.sites) acts.field(s.activation).field(s.axis).field(s.index).field(s.recovered).end_row();
  atomic_write(dir + "/patch_acts.csv", acts.text());
  if (caps.has(Capability::heads)) {
    CsvWriter resid({"layer", "position", "recovered"});
    for (size_t l = 0; l < r.resid.size(); ++l)
      for (size_t t = 0; t < r.resid[l].size(); ++t)
        resid.field(int64_t(l)).field(int64_t(t)).field(r.resid[l][t]).end_row();
    atomic_write(dir + "/patch_resid.csv", resid.text());
    CsvWriter heads({"layer", "head", "recovered"});
    for (size_t l = 0; l < r.head_out.size(); ++l)
      for (size_t h = 0; h < r.head_out[l].size(); ++h)
        heads.field(int64_t(l)).field(int64_t(h)).field(r.head_out[l][h]).end_row();
    atomic_write(dir + "/patch_heads.csv", heads.text());
    CsvWriter paths({"sender", "receiver", "recovered"});
    for (auto& e : r.paths) paths.field(head_label(e.layer, e.head)).field(e.receiver).field(e.recovered).end_row();
    atomic_write(dir + "/patch_paths.csv", paths.text());
  }
  if (caps.has(Capability::cycle) || caps.has(Capability::group)) {
    CsvWriter sub({"subspace", "units", "dims", "draws", "recovered", "low", "high"});
    for (auto& x : r.subspaces)
      sub.field(x.what).field(x.what.rfind("every", 0) == 0 ? std::string("all") : join_numbers(x.freqs)).field(x.dims)
          .field(x.draws).field(x.recovered).field(x.low).field(x.high).end_row();
    atomic_write(dir + "/patch_subspace.csv", sub.text());
  }
}

void print_json(const Checkpoint& ck, const PatchReport& r) {
  nlohmann::json j = {{"checkpoint", ck.path}, {"epoch", ck.epoch}, {"metric", r.metric_name},
                      {"corruption", r.corruption}, {"clean", r.clean}, {"corrupted", r.corrupted},
                      {"normalisation", "(patched - corrupted) / (clean - corrupted)"},
                      {"resid_pre", r.resid}, {"heads", r.head_out}, {"paths", nlohmann::json::array()}};
  for (auto& e : r.paths)
    j["paths"].push_back({{"sender", head_label(e.layer, e.head)}, {"receiver", e.receiver}, {"recovered", e.recovered}});
  j["sites"] = nlohmann::json::array();
  for (auto& x : r.sites)
    j["sites"].push_back({{"activation", x.activation}, {"axis", x.axis}, {"index", x.index}, {"recovered", x.recovered}});
  j["subspaces"] = nlohmann::json::array();
  for (auto& x : r.subspaces)
    j["subspaces"].push_back({{"subspace", x.what}, {"frequencies", x.freqs}, {"dims", x.dims}, {"draws", x.draws},
                              {"recovered", x.recovered}, {"low", x.low}, {"high", x.high}});
  std::printf("%s\n", j.dump(2).c_str());
}

// Every site of one activation on a line: "  blocks.0.attn.hook_z  by head   0.01  0.95".
void print_sites(const PatchReport& r) {
  std::printf("each named activation restored, one slice at a time:\n");
  for (size_t i = 0; i < r.sites.size();) {
    size_t j = i;
    std::printf("  %-26s %-12s", r.sites[i].activation.c_str(),
                r.sites[i].axis == "all" ? "whole" : ("by " + r.sites[i].axis).c_str());
    for (; j < r.sites.size() && r.sites[j].activation == r.sites[i].activation; ++j) {
      if (j - i == 24) {
        std::printf(" ... (%s)", "patch_acts.csv has them all");
        for (; j < r.sites.size() && r.sites[j].activation == r.sites[i].activation; ++j) {}
        break;
      }
      std::printf(" %5.2f", r.sites[j].recovered);
    }
    std::printf("\n");
    i = j;
  }
}

void print_subspaces(const PatchReport& r) {
  if (r.subspaces.empty()) return;
  std::printf("\nthe corrupted operand's embedding with its component in the directions of these frequencies (the rows "
              "of F W_E) or irreps (the row space of their isotypic part of W_E) taken from the clean operand's:\n");
  for (auto& x : r.subspaces) {
    const std::string which = x.what.rfind("every", 0) == 0 ? x.what :
                              x.what + " " + (x.what.rfind("other", 0) == 0 && x.draws > 1 ? "e.g. " : "") + join_numbers(x.freqs);
    if (x.draws > 1)
      std::printf("  %-44s %3lld dims  %6.3f (mean of %lld draws; %.3f to %.3f)\n", which.c_str(), (long long)x.dims,
                  x.recovered, (long long)x.draws, x.low, x.high);
    else
      std::printf("  %-44s %3lld dims  %6.3f\n", which.c_str(), (long long)x.dims, x.recovered);
  }
}

void print_text(const Checkpoint& ck, const PatchReport& r) {
  std::printf("checkpoint %s (epoch %lld)\nmetric: %s\ncorrupted inputs: %s\n", ck.path.c_str(), (long long)ck.epoch,
              r.metric_name.c_str(), r.corruption.c_str());
  std::printf("clean %.4g, corrupted %.4g; activation patching: the corrupted run with one clean activation, the "
              "share restored (patched - corrupted) / (clean - corrupted)\n\n",
              r.clean, r.corrupted);
  print_sites(r);
  print_subspaces(r);
  if (r.layers == 0) return;
  std::printf("\nthe residual stream into each block restored at one position (columns: positions 0..%lld)\n",
              (long long)r.positions - 1);
  for (size_t l = 0; l < r.resid.size(); ++l) {
    std::printf("  L%zu ", l);
    for (double v : r.resid[l]) std::printf(" %5.2f", v);
    std::printf("\n");
  }
  std::printf("\neach head's output restored (every position)\n      ");
  for (int64_t h = 0; h < r.heads; ++h) std::printf(" %6s", ("H" + std::to_string(h)).c_str());
  std::printf("\n");
  for (size_t l = 0; l < r.head_out.size(); ++l) {
    std::printf("  L%zu  ", l);
    for (double v : r.head_out[l]) std::printf(" %6.3f", v);
    std::printf("\n");
  }
  if (r.paths.empty()) {
    std::printf("\npaths: none (path patching needs a model without LayerNorm)\n");
    return;
  }
  auto sorted = r.paths;
  std::stable_sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.recovered > b.recovered; });
  std::printf("\npaths sender -> receiver (a later head's query, key or value input, or the logits directly): the "
              "clean run with that edge alone carrying the sender's corrupted output; the share of the effect it "
              "carries, (clean - patched) / (clean - corrupted), the largest first:\n");
  for (size_t i = 0; i < sorted.size() && i < 10; ++i)
    std::printf("  %-6s -> %-10s %7.3f\n", head_label(sorted[i].layer, sorted[i].head).c_str(), sorted[i].receiver.c_str(),
                sorted[i].recovered);
}

// A user's pairs: a row "a,b,a',b'" a line (commas or spaces; "#" comments and a header line
// of names allowed).
std::vector<std::array<int64_t, 4>> read_pairs(const std::string& path) {
  std::vector<std::array<int64_t, 4>> out;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw UsageError(path + ": no such file");
  const std::string text = read_file(path);  // RunError naming the file where unreadable
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    const std::string raw = text.substr(pos, end - pos);
    std::string line = raw;
    pos = end + 1, ++line_no;
    if (auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    for (auto& c : line)
      if (c == ',' || c == '\t' || c == '\r' || c == ';') c = ' ';
    std::istringstream in(line);
    std::vector<std::string> fields;
    for (std::string f; in >> f;) fields.push_back(f);
    if (fields.empty()) continue;
    auto number = [](const std::string& f, int64_t& v) {
      char* e = nullptr;
      errno = 0;
      const long long x = std::strtoll(f.c_str(), &e, 10);
      if (errno || !e || *e) return false;
      v = x;
      return true;
    };
    std::array<int64_t, 4> row{};
    bool numeric = fields.size() == 4;
    for (size_t i = 0; numeric && i < 4; ++i) numeric = number(fields[i], row[i]);
    if (!numeric) {
      if (out.empty() && line_no == 1 && fields.size() == 4 && !std::isdigit(static_cast<unsigned char>(fields[0][0])))
        continue;  // a header
      throw UsageError(path + ":" + std::to_string(line_no) + ": expected four operands a, b, a', b' (got \"" +
                       raw.substr(0, 60) + "\")");
    }
    out.push_back(row);
  }
  if (out.empty()) throw UsageError(path + ": no pairs (a line per pair: a, b, a', b')");
  return out;
}

int run_patch(const AnalysisOptions& opts) {
  auto [ck, run_dir] = load_for_analysis(patch_analysis(), opts.path);
  const Model model = model_from_checkpoint(ck);
  const auto task = make_task(ck.config.task);
  const auto sets = opts.pairs_file.empty() ? task->patch_sets(opts.seed)
                                            : task->patch_sets_from(read_pairs(opts.pairs_file), opts.pairs_file);
  const Capabilities caps = capabilities_of(ck.config);
  // A group's key irreps (Chughtai et al.'s rule; numbered from 1), or a cycle's key
  // frequencies (the paper's neuron method), for subspace patching.
  std::vector<int64_t> keys;
  if (caps.has(Capability::group)) {
    // The rule alone (not the whole irreps analysis): read off the model's logits over all pairs.
    const GroupStructure gs = group_structure(ck.config.task);
    for (auto k : read_restricted(model_logit_sums(model, gs, make_dataset(ck.config.task)), gs, {}).rule)
      keys.push_back(int64_t(k) + 1);
  } else if (caps.has(Capability::cycle)) {
    keys = key_frequencies(model);
  }
  const PatchReport r = patch(model, sets, keys, opts.draws, opts.seed);
  if (!run_dir.empty() && opts.pairs_file.empty()) write_files(run_dir, r, caps);
  if (opts.quiet) return 0;
  if (opts.json) print_json(ck, r);
  else print_text(ck, r);
  return 0;
}

}  // namespace

const AnalysisKind& patch_analysis() {
  static const AnalysisKind k = [] {
    AnalysisKind a;
    a.name = "patch";
    a.doc = "Activation and path patching on the task's clean and corrupted inputs (or --pairs): each named "
            "activation restored (residual stream by layer and position, each head's output, query, key and value, an "
            "MLP's layers, a toy model's hidden units), each head-to-head and head-to-logits path, a cycle's key "
            "frequencies' directions against as many others";
    a.scope = AnalysisKind::Scope::checkpoint;
    a.needs_any = {Capability::sequence, Capability::pairs, Capability::features};
    const auto heads = uint32_t(Capability::heads), cycle = uint32_t(Capability::cycle), group = uint32_t(Capability::group);
    a.files = {{"patch_acts.csv"},
               {"patch_resid.csv", heads},
               {"patch_heads.csv", heads},
               {"patch_paths.csv", heads},
               {"patch_subspace.csv", 0, 0, cycle | group}};
    a.figures = {"patch"};
    a.report = {{"Patching: each named activation restored", "patch_acts.csv"},
                {"Patching: each head's output restored", "patch_heads.csv"},
                {"Patching: paths sender -> receiver", "patch_paths.csv"},
                {"Patching: key frequencies' directions", "patch_subspace.csv"}};
    a.options = {AnalysisOption::seed, AnalysisOption::draws, AnalysisOption::pairs};
    a.source = "Wang et al. 2022, section 3 (activation and path patching, the normalised metric); "
               "Goldowsky-Dill et al. 2023 (path patching); Nanda et al. 2023, section 5 (the key frequencies' "
               "directions)";
    a.run = run_patch;
    return a;
  }();
  return k;
}

}  // namespace grokking
