#include "grokking/plot.hpp"

#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <sstream>

#include "grokking/analyses.hpp"
#include "grokking/commands.hpp"
#include "grokking/compare.hpp"
#include "grokking/error.hpp"
#include "grokking/rundir.hpp"
#include "grokking/text.hpp"
#include "grokking/train.hpp"

namespace grokking {
using nlohmann::json;

namespace {

std::string sig6(double v) { return format_number(v, "%.6g"); }

// Runs gnuplot on `script` inside `dir`; RunError with a hint when gnuplot is missing.
void run_gnuplot(const std::string& gnuplot, const std::string& dir, const std::string& script) {
  pid_t pid = ::fork();
  if (pid < 0) throw RunError("fork failed");
  if (pid == 0) {
    if (::chdir(dir.c_str()) != 0) std::_Exit(126);
    ::execlp(gnuplot.c_str(), gnuplot.c_str(), script.c_str(), static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  if (rc == 127)
    throw RunError("gnuplot not found: install it with 'sudo apt-get install gnuplot-nox' (scripts/setup.sh does)");
  if (rc != 0) throw RunError(dir + "/" + script + ": gnuplot failed (exit " + std::to_string(rc) + ")");
}

// A figure: its gnuplot script writes NAME.png and NAME.svg from the same plot commands.
void figure(const std::string& gnuplot, const std::string& plots, const std::string& name, const std::string& body) {
  std::string script =
      "# " + name + ": regenerate with `gnuplot " + name + ".gp` in this folder; restyle freely.\n"
      "set datafile separator ','\n"
      "set key outside right top autotitle columnhead\n"
      "set grid lc rgb '#dddddd'\n"
      "set style line 1 lc rgb '#1f77b4' lw 2\n"
      "set style line 2 lc rgb '#d62728' lw 2\n"
      "set style line 3 lc rgb '#2ca02c' lw 2\n"
      "set style line 4 lc rgb '#9467bd' lw 2\n"
      "set style line 5 lc rgb '#ff7f0e' lw 2\n"
      "set terminal pngcairo size 1000,560 font 'sans,11'\n"
      "set output '" + name + ".png'\n" + body +
      // The body again, not `replot`: replot repeats only the last panel of a multiplot.
      "unset multiplot\nunset label\nunset arrow\nunset object\n"
      "set terminal svg size 1000,560 font 'sans,11' dynamic\n"
      "set output '" + name + ".svg'\n" + body;
  atomic_write(plots + "/" + name + ".gp", script);
  run_gnuplot(gnuplot, plots, name + ".gp");
}

// Vertical lines at the memorisation and grokking epochs.
std::string milestone_marks(const std::optional<Summary>& s) {
  std::string out;
  auto mark = [&](const std::optional<int64_t>& epoch, const char* label, const char* color, const char* place) {
    if (!epoch) return;
    const std::string e = std::to_string(*epoch);
    out += "set arrow from " + e + ", graph 0 to " + e + ", graph 1 nohead dt 2 lc rgb '" + color + "'\n";
    out += "set label '" + std::string(label) + " " + e + "' at " + e + place + " tc rgb '" + color + "' noenhanced\n";
  };
  if (!s) return out;
  mark(s->memorised_epoch, "memorised", "#555555", ", graph 0.92 left offset 0.5,0");
  mark(s->grokked_epoch, "grokked", "#2ca02c", ", graph 0.97 right offset -0.5,0");
  return out;
}

std::string phase_shading(const std::optional<Summary>& s) {
  if (!s || !s->phases.is_object()) return "";
  const json& p = s->phases;
  // A run whose phases fail the paper's definitions does not show them: nothing to shade.
  if (p.value("definitions_hold", json()) == json(false)) return "";
  std::string out;
  auto band = [&](const char* phase, const char* color, const char* height) {
    if (!p.contains(phase)) return;
    auto& ph = p[phase];
    if (!ph["start"].is_number() || !ph["end"].is_number()) return;
    out += "set object rect from " + ph["start"].dump() + ", graph 0 to " + ph["end"].dump() +
           ", graph 1 fc rgb '" + color + "' fs solid 0.35 noborder behind\n";
    std::string label = phase;
    std::replace(label.begin(), label.end(), '_', ' ');
    out += "set label '" + label + "' at " + ph["start"].dump() + ", graph " + height + " offset 0.5,0 font ',9' noenhanced\n";
  };
  band("memorisation", "#dbe9f6", "0.04");
  band("circuit_formation", "#fde8c8", "0.09");
  band("cleanup", "#d8f0d2", "0.04");
  return out;
}

std::string html_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '<') o += "&lt;";
    else if (ch == '>') o += "&gt;";
    else if (ch == '&') o += "&amp;";
    else o += ch;
  }
  return o;
}

std::string html_table(const CsvTable& t, size_t max_rows = 200) {
  std::string h = "<table><tr>";
  for (auto& c : t.header) h += "<th>" + html_escape(c) + "</th>";
  h += "</tr>";
  for (size_t i = 0; i < t.rows.size() && i < max_rows; ++i) {
    h += "<tr>";
    for (auto& c : t.rows[i]) {
      char* end = nullptr;
      double v = std::strtod(c.c_str(), &end);
      bool numeric = !c.empty() && end && *end == 0 && c.find_first_of("eE.") != std::string::npos;
      h += "<td>" + html_escape(numeric ? sig6(v) : c) + "</td>";
    }
    h += "</tr>";
  }
  return h + "</table>";
}

std::string inline_svg(const std::string& path) {
  if (!exists(path)) return "";
  std::string svg = read_file(path);
  auto start = svg.find("<svg");
  return start == std::string::npos ? "" : "<div class=fig>" + svg.substr(start) + "</div>";
}

const char* kStyle =
    "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right}th{background:#f3f3f3}.fig svg{max-width:100%;height:auto}pre{background:#f6f6f6;"
    "padding:1em;overflow:auto}</style>";

// ---- the figures of a run: one function each, drawing from the run directory's files; each
// says whether it drew (the files it needs may be absent) ----

// What every figure of a run draws from: its directory, its plots/ folder and its summary.
struct RunFigures {
  const PlotOptions& opts;
  std::string dir, plots;
  std::optional<Summary> summary;
  Config cfg;  // the run's: what its task and model are
  std::string marks() const { return milestone_marks(summary) + phase_shading(summary); }
  bool has(const std::string& file) const { return exists(dir + "/" + file); }
};

bool loss_figure(const RunFigures& f) {
  // The uniform guess of the task at hand (ln of its classes), or none for a reconstruction.
  const TaskShape shape = task_shape(f.cfg.task);
  const std::string title =
      shape.has_accuracy() ? "Loss (uniform guess: ln " + std::to_string(shape.classes) + " = " +
                                 format_number(std::log(double(shape.classes)), "%.3g") + ")"
                           : std::string("Loss (importance-weighted squared error)");
  figure(f.opts.gnuplot, f.plots, "loss",
         "set title '" + title + "'\nset xlabel 'epoch'\nset ylabel 'loss'\nset logscale y\n"
         "set format y '10^{%L}'\n" + f.marks() +
             "plot '../metrics.csv' using 'epoch':'train_loss' with lines ls 1 title 'train', "
             "'' using 'epoch':'test_loss' with lines ls 2 title 'test'\n");
  return true;
}

bool accuracy_figure(const RunFigures& f) {
  if (!task_shape(f.cfg.task).has_accuracy()) return false;
  figure(f.opts.gnuplot, f.plots, "accuracy",
         "set title 'Accuracy'\nset xlabel 'epoch'\nset ylabel 'accuracy'\nset yrange [0:1.05]\n" + f.marks() +
             "plot '../metrics.csv' using 'epoch':'train_acc' with lines ls 1 title 'train', "
             "'' using 'epoch':'test_acc' with lines ls 2 title 'test'\n");
  return true;
}

// Olsson et al.'s in-context-learning score over training (the loss late in the context minus
// the loss early in it; it falls below zero as the model learns from its context), where
// metrics.csv has it (a repeat run with loss_on "all"), with the first half's loss beside it.
bool icl_figure(const RunFigures& f) {
  const std::string text = read_file(f.dir + "/metrics.csv");
  if (text.substr(0, text.find('\n')).find("icl_score") == std::string::npos) return false;
  figure(f.opts.gnuplot, f.plots, "icl",
         "set title 'In-context learning score (Olsson et al.: loss late in the context minus loss early in it)'\n"
         "set xlabel 'step'\nset ylabel 'nats'\nset key below\n"
         "set arrow from graph 0, first 0 to graph 1, first 0 nohead dt 3 lc rgb '#888888'\n" + f.marks() +
             "plot '../metrics.csv' using 'epoch':'icl_score' with lines lw 2 lc rgb '#d62728' title 'in-context learning "
             "score', '' using 'epoch':'first_half_loss' with lines lc rgb '#1f77b4' title 'first half loss'\n");
  return true;
}

// metrics.csv written before the diagnostics columns has none to draw; before zero_terms, its
// softmax_collapse column counted the zero terms.
bool diagnostics_figure(const RunFigures& f) {
  const std::string text = read_file(f.dir + "/metrics.csv");
  const std::string header = text.substr(0, text.find('\n'));
  if (header.find("softmax_collapse") == std::string::npos) return false;
  const bool both = header.find("zero_terms") != std::string::npos;
  if (!task_shape(f.cfg.task).has_accuracy()) {
    // A reconstruction has no softmax: the cosine alone.
    figure(f.opts.gnuplot, f.plots, "diagnostics",
           "set title 'Naive loss minimisation: cos(-gradient, weights) (Prieto et al. 2025)'\nset xlabel 'step'\n"
           "set ylabel 'cosine'\nset yrange [-1.05:1.05]\nset key below\n" + f.marks() +
               "plot '../metrics.csv' using 'epoch':'grad_weight_cos' with lines ls 2 title 'cos(-gradient, weights)'\n");
    return true;
  }
  figure(f.opts.gnuplot, f.plots, "diagnostics",
         "set title 'Softmax collapse and naive loss minimisation (Prieto et al. 2025)'\nset xlabel 'epoch'\n"
         "set ylabel 'fraction / cosine'\nset yrange [-1.05:1.05]\nset key below\n" + f.marks() +
             "plot '../metrics.csv' using 'epoch':'" + (both ? "zero_terms" : "softmax_collapse") +
             "' with lines ls 1 title 'training examples whose loss term is exactly 0', " +
             (both ? "'' using 'epoch':'softmax_collapse' with lines ls 3 title 'softmax collapsed (sum of exp = 1)', "
                   : "") +
             "'' using 'epoch':'grad_weight_cos' with lines ls 2 title 'cos(-gradient, weights)'\n");
  return true;
}

// The operand embeddings' spectrum beside W_L's (the neuron-logit map), key frequencies highlighted.
bool spectrum_figure(const RunFigures& f) {
  if (!f.has("fourier.csv")) return false;
  auto panel = [](const std::string& column, const std::string& title) {
    return "set title '" + title + "' noenhanced\n"
           "plot '../fourier.csv' using 'k':(column('key_neurons') == 1 ? column('" + column + "') : 1/0) with boxes "
           "lc rgb '#d62728' title 'key', '' using 'k':(column('key_neurons') == 0 ? column('" + column + "') : 1/0) "
           "with boxes lc rgb '#1f77b4' title 'other'\n";
  };
  const auto table = read_csv(f.dir + "/fourier.csv");
  // Not in an older fourier.csv, nor for a model without hidden neurons (NaN).
  const int wl_col = table.column("wl_norm");
  const bool wl = wl_col >= 0 && !table.rows.empty() && table.rows[0][size_t(wl_col)] != "nan";
  figure(f.opts.gnuplot, f.plots, "spectrum",
         std::string(wl ? "set multiplot layout 1,2\nset key inside right top\n" : "") +
             "set xlabel 'frequency k'\n"
             "set ylabel 'norm of the cos k, sin k components'\nset style fill solid 0.8 noborder\nset boxwidth 0.8\n"
             "set xrange [0:*]\nset yrange [0:*]\nset offsets 0, 0, graph 0.08, 0\n" +
             panel("embed_norm", "operand embeddings") +
             (wl ? panel("wl_norm", "neuron-logit map W_L") + "unset multiplot\n" : std::string()));
  return true;
}

bool neurons_figure(const RunFigures& f) {
  if (!f.has("neuron_spectrum.dat") || read_file(f.dir + "/neuron_spectrum.dat").find("\n0") == std::string::npos)
    return false;  // no live neurons to draw
  figure(f.opts.gnuplot, f.plots, "neurons",
         "set datafile separator whitespace\nset title 'Fraction of variance of each hidden neuron per frequency "
         "(neurons grouped by best frequency)'\nset xlabel 'frequency k'\nset ylabel 'neuron (sorted)'\n"
         "set cblabel 'fraction of variance'\nset cbrange [0:1]\nset palette defined (0 '#ffffff', 0.3 '#9ecae1', "
         "1 '#08306b')\nset yrange [*:*] reverse\nset autoscale fix\nset key noautotitle\nset grid front\n"
         "plot '../neuron_spectrum.dat' matrix using ($1+1):2:3 with image pixels\n");
  return true;
}

bool logits2d_figure(const RunFigures& f) {
  if (!f.has("logit_spectrum.dat")) return false;
  figure(f.opts.gnuplot, f.plots, "logits2d",
         "set datafile separator whitespace\nset title 'Norm of each 2-D Fourier component of the logits over (a, b)'\n"
         "set xlabel 'basis index over b (0 constant, 2k-1 cos k, 2k sin k)'\n"
         "set ylabel 'basis index over a'\nset cblabel 'norm over the classes'\n"
         "set palette defined (0 '#ffffff', 0.15 '#9ecae1', 1 '#08306b')\nset yrange [*:*] reverse\n"
         "set autoscale fix\nset key noautotitle\nset size ratio -1\n"
         "plot '../logit_spectrum.dat' matrix using 1:2:3 with image pixels\n");
  return true;
}

bool attention_figure(const RunFigures& f) {
  if (!f.has("attention.csv")) return false;
  const auto att = read_csv(f.dir + "/attention.csv");
  std::string plot = "plot ";
  for (size_t c = 2; c < att.header.size(); ++c)
    plot += std::string(c > 2 ? ", " : "") + "'../attention.csv' using 'i':'" + att.header[c] + "' with linespoints ls " +
            std::to_string((c - 2) % 5 + 1) + " pt 7 ps 0.5 title '" + att.header[c] + "'";
  figure(f.opts.gnuplot, f.plots, "attention",
         "set title 'Attention paid by \"=\" to a, as a function of a (mean over b), per head'\n"
         "set xlabel 'a (for mul and div: its discrete logarithm i, a = g^i)' noenhanced\n"
         "set ylabel 'attention to a'\nset yrange [0:1]\n" + plot + "\n");
  return true;
}

// A line per column of DIR/FILE named PREFIX<K>, titled "k = K" ("" when there is none).
// One line per key frequency's column of `file` (PREFIX<k>), titled "k = <k>"; a group run's
// columns are irrep numbers, titled by the irrep's name (irreps_progress.csv's header).
std::string per_frequency_lines(const RunFigures& f, const std::string& file, const std::string& prefix) {
  if (!f.has(file)) return "";
  std::vector<std::string> irreps;  // a group run's irreps in table order
  if (f.has("irreps_progress.csv")) {
    const auto h = read_csv(f.dir + "/irreps_progress.csv").header;
    if (!h.empty()) irreps.assign(h.begin() + 1, h.end());
  }
  std::string plot;
  int n = 0;
  for (auto& col : read_csv(f.dir + "/" + file).header)
    if (col.rfind(prefix, 0) == 0) {
      const std::string k = col.substr(prefix.size());
      const long i = std::strtol(k.c_str(), nullptr, 10);
      const std::string title = !irreps.empty() && i >= 1 && size_t(i) <= irreps.size()
                                    ? "irrep " + irreps[size_t(i - 1)]
                                    : "k = " + k;
      plot += std::string(n ? ", " : "plot ") + "'../" + file + "' using 'epoch':'" + col + "' with lines ls " +
              std::to_string(n % 5 + 1) + " title '" + title + "' noenhanced", ++n;
    }
  return plot;
}

bool excluded_figure(const RunFigures& f) {
  const std::string plot = per_frequency_lines(f, "progress.csv", "excluded_loss_k");
  if (plot.empty()) return false;
  figure(f.opts.gnuplot, f.plots, "excluded",
         std::string(f.has("irreps_progress.csv") ? "set title 'Excluded loss (train) with each key irrep alone removed'\n"
                                                  : "set title 'Excluded loss (train) with each key frequency alone removed'\n") +
         "set xlabel 'epoch'\n"
         "set ylabel 'loss'\nset logscale y\nset format y '10^{%L}'\n" + f.marks() + plot +
             ", '../progress.csv' using 'epoch':'excluded_loss' with lines lc rgb '#000000' dt 2 lw 2 "
             "title 'all key removed'\n");
  return true;
}

// After `progress`: the coefficients alpha_k of the logits' trig fit over training (the paper's
// Fig. 14), and the share of the centred logits' variance the fit explains.
bool trig_fit_figure(const RunFigures& f) {
  const std::string plot = per_frequency_lines(f, "trig_fit.csv", "alpha_k");
  if (plot.empty()) return false;
  figure(f.opts.gnuplot, f.plots, "trig_fit",
         "set title \"Logits fitted by {/Symbol S}_k {/Symbol a}_k cos(w_k(a+b-c)): the coefficients over training\"\n"
         "set xlabel 'epoch'\nset ylabel '{/Symbol a}_k'\nset y2label 'share of the centred logits explained (black)'\n"
         "set y2range [0:1]\nset ytics nomirror\nset y2tics\nset key below\n" + f.marks() + plot +
             ", '../trig_fit.csv' using 'epoch':'frac_variance' axes x1y2 with lines lc rgb '#000000' dt 2 lw 2 "
             "title 'share explained'\n");
  return true;
}

// A group run after `progress`: every irrep's logit similarity over training (Chughtai et al.).
bool irreps_figure(const RunFigures& f) {
  if (!f.has("irreps_progress.csv")) return false;
  const auto t = read_csv(f.dir + "/irreps_progress.csv");
  // A colour an irrep, none repeated below twenty (the default cycle repeats every eight), and
  // the key rule's threshold drawn.
  static const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
                                         "#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39",
                                         "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363"};
  std::string plot;
  for (size_t c = 1; c < t.header.size(); ++c)
    plot += std::string(plot.empty() ? "plot " : ", ") + "'../irreps_progress.csv' using 1:" + std::to_string(c + 1) +
            " with lines lw 2 lc rgb '" + kColours[(c - 1) % 20] + "'" + (c > 20 ? " dt 2" : "") + " title '" +
            t.header[c] + "' noenhanced";
  if (plot.empty()) return false;
  plot += ", 0.005 with lines dt 3 lw 1 lc rgb 'black' title 'key rule (0.005)'";
  figure(f.opts.gnuplot, f.plots, "irreps",
         "set title 'Logit similarity per irreducible representation (key: above 0.005)'\nset xlabel 'epoch'\n"
         "set ylabel 'similarity'\nset key below\n" + f.marks() + plot + "\n");
  return true;
}

// A toy-superposition run after `superposition`: W^T W as a heat map (their notebook's figure)
// and, for two hidden dimensions, each feature's column of W drawn in the plane.
bool superposition_figure(const RunFigures& f) {
  if (!f.has("wtw.dat") || !f.has("superposition.csv")) return false;
  const auto t = read_csv(f.dir + "/superposition.csv");
  const bool plane = t.column("w0") >= 0 && t.column("w1") >= 0 && t.column("w2") < 0;
  // A layer of ReLU neurons (toy_mlp): each neuron's weight from every feature, the
  // asymmetric-superposition motif's neurons marked with their inhibitor.
  std::string neurons;
  if (f.has("superposition_neurons.csv")) {
    const auto nt = read_csv(f.dir + "/superposition_neurons.csv");
    const int cn = nt.column("neuron"), cf = nt.column("feature"), ca = nt.column("asymmetric"), ci = nt.column("inhibitor");
    const size_t n = t.rows.size();
    if (cn >= 0 && cf >= 0 && ca >= 0 && ci >= 0 && n > 0 && !nt.rows.empty()) {
      const size_t m = nt.rows.size() / n;
      neurons = "set datafile separator ','\nset title 'Neurons: W_in by feature (colour)' noenhanced\n"
                "set xlabel 'neuron'\nset ylabel 'W_in' noenhanced\nset yrange [*:*] noreverse\nset xrange [-0.6:" +
                std::to_string(double(m) - 0.4) + "]\nset xtics 1\nset xzeroaxis\nunset key\nset size noratio\n";
      for (auto& row : nt.rows)
        if (row[size_t(ca)] == "1" && row[size_t(cf)] == "0")
          neurons += "set label \"asym.\\ninh. " + row[size_t(ci)] + "\" at " + row[size_t(cn)] +
                     ", graph 0.93 center font ',9'\n";
      neurons += "plot '../superposition_neurons.csv' using (column('neuron') - 0.4 + 0.8 * (column('feature') + 0.5) / " +
                 std::to_string(n) + "):'weight_in':(column('feature') + 1) with impulses lw 4 lc variable\n"
                 "unset label\n";
    }
  }
  // Elhage et al.'s bars: each feature's norm ||W_i||, coloured by how much it shares its
  // dimensions, sum_{j != i} (W^_i . W_j)^2 (black: a dimension of its own; yellow: superposed).
  std::string body =
      "set multiplot layout 1," + std::to_string(2 + (plane ? 1 : 0) + (neurons.empty() ? 0 : 1)) + "\n"
      "set datafile separator ','\nset title '||W_i||, coloured by superposition' noenhanced\nset xlabel 'feature'\n"
      "set ylabel '||W_i||'\nset yrange [0:*]\nset style fill solid 1.0\nset boxwidth 0.8\nunset key\n"
      "set palette defined (0 'black', 0.5 '#7a0177', 1 '#fec44f')\nset cbrange [0:1]\n"
      "set cblabel 'sum_{j!=i} (W^_i . W_j)^2' noenhanced\n"
      "plot '../superposition.csv' using 'feature':'norm':'interference' with boxes lc palette\n"
      "unset style\nset style fill empty\nset autoscale\nunset cblabel\n"
      "set title 'W^T W (entry i, j: W_i . W_j)' noenhanced\nset xlabel 'feature j'\nset ylabel 'feature i'\n"
      "set yrange [] reverse\nset palette defined (-1 '#2166ac', 0 'white', 1 '#b2182b')\nset cbrange [-1.5:1.5]\n"
      "set datafile separator whitespace\nunset key\n"
      "plot '../wtw.dat' matrix with image pixels\n";
  if (plane)
    body += "set datafile separator ','\nset title 'Columns of W in the hidden plane'\nset xlabel 'h_0'\n"
            "set ylabel 'h_1'\nset size ratio -1\nset yrange [*:*] noreverse\nset xrange [*:*]\n"
            "plot '../superposition.csv' using (0):(0):'w0':'w1' with vectors head filled lw 2 lc rgb '#1f77b4', "
            "'' using 'w0':'w1':(sprintf('%d', column('feature'))) with labels offset 1,1\n";
  body += neurons + "unset multiplot\n";
  figure(f.opts.gnuplot, f.plots, "superposition", body);
  return true;
}

// After `heads`: the loss at each position of the context at a few checkpoints (Olsson et al.'s
// per-token loss, which falls late in the context once induction heads form), log scale.
bool position_loss_figure(const RunFigures& f) {
  if (!f.has("heads_position_loss.csv")) return false;
  const auto t = read_csv(f.dir + "/heads_position_loss.csv");
  const int ce = t.column("epoch");
  if (ce < 0 || t.rows.empty()) return false;
  std::vector<std::string> epochs;
  for (auto& r : t.rows)
    if (epochs.empty() || epochs.back() != r[size_t(ce)]) epochs.push_back(r[size_t(ce)]);
  // Up to six checkpoints, evenly spread, the first and the last among them.
  std::vector<std::string> picked;
  const size_t k = std::min<size_t>(6, epochs.size());
  for (size_t i = 0; i < k; ++i) {
    const auto& e = epochs[k == 1 ? 0 : i * (epochs.size() - 1) / (k - 1)];
    if (picked.empty() || picked.back() != e) picked.push_back(e);
  }
  static const char* const kColours[] = {"#c6dbef", "#9ecae1", "#6baed6", "#3182bd", "#08519c", "#08306b"};
  std::string plot;
  for (size_t i = 0; i < picked.size(); ++i)
    plot += std::string(i ? ", " : "plot ") + "'../heads_position_loss.csv' using 'position':(column('epoch') == " +
            picked[i] + " ? column('loss') : 1/0) with linespoints pt 7 ps 0.5 lw 2 lc rgb '" +
            kColours[i + 6 - picked.size()] + "' title 'step " + picked[i] + "'";
  figure(f.opts.gnuplot, f.plots, "position_loss",
         "set title 'Loss by position in the context (each next token, over the evaluation sequences)'\n"
         "set xlabel 'position'\nset ylabel 'loss (nats)'\nset logscale y\n" + plot + "\n");
  return true;
}

// A repeat-task run after `heads`: each head's induction score (solid) and previous-token score
// (dashed) over training, the repeated half's loss on the right axis, and the transition (10 % to
// 90 % of the loss's drop, as `heads` prints it) shaded.
bool heads_figure(const RunFigures& f) {
  if (!f.has("heads_progress.csv")) return false;
  const auto t = read_csv(f.dir + "/heads_progress.csv");
  std::string plot;
  std::map<std::string, int> colour;  // one colour a head, for both of its scores
  for (size_t c = 1; c < t.header.size(); ++c) {
    const std::string& name = t.header[c];
    const auto cut = name.rfind('_');
    if (cut == std::string::npos) continue;
    const std::string head = name.substr(0, cut), what = name.substr(cut + 1);
    if (what != "ind" && what != "prev") continue;
    // Twelve distinct colours, none of them the loss's black.
    static const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                                           "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a"};
    const int lc = colour.emplace(head, int(colour.size())).first->second;
    plot += std::string(plot.empty() ? "plot " : ", ") + "'../heads_progress.csv' using 1:" + std::to_string(c + 1) +
            " with lines lw 2 lc rgb '" + kColours[lc % 12] + "'" + (what == "prev" ? " dt 2" : "") +
            " title '" + head + (what == "ind" ? " induction" : " previous token") + "' noenhanced";
  }
  if (plot.empty()) return false;
  std::string shading;
  const Transition tr = find_transition(read_metrics(f.dir + "/metrics.csv"));
  if (tr.at10 && tr.at90) {
    const std::string a = std::to_string(*tr.at10), b = std::to_string(std::max(*tr.at90, *tr.at10 + 1));
    shading = "set object rect from " + a + ", graph 0 to " + b + ", graph 1 fc rgb '#fde8c8' fs solid 0.5 noborder "
              "behind\nset label 'transition " + a + "-" + std::to_string(*tr.at90) + "' at " + a +
              ", graph 0.97 offset 0.5,0 font ',9' noenhanced\n";
  }
  figure(f.opts.gnuplot, f.plots, "heads",
         "set title 'Head scores over training (share of attention on the pattern); transition shaded'\n"
         "set xlabel 'step'\nset ylabel 'score'\nset yrange [0:1.05]\nset y2label 'repeated-half loss (black)'\n"
         "set y2range [0:*]\nset y2tics\nset key below\n" + shading + plot +
             ", '../metrics.csv' using 'epoch':'test_loss' axes x1y2 with lines lw 2 lc rgb 'black' "
             "title 'repeated-half loss (right)'\n");
  return true;
}

// The attention patterns `heads` saved on the evaluation sequence with the longest repeat: the
// strongest induction head (the stripe one below the diagonal of the repeat: attending to the
// token after the earlier occurrence) and, beside it, the strongest previous-token head below it
// (the stripe just below the diagonal), as Olsson et al. show them.
bool pattern_figure(const RunFigures& f) {
  if (!f.has("heads_pattern.dat")) return false;
  // One panel: the file's head and repeat length from its comment line (files written before it
  // had none); the induction targets circled on the induction head's panel.
  auto panel = [&](const std::string& file, bool induction) {
    const std::string text = read_file(f.dir + "/" + file);
    std::string head = "a head";
    long L = 0;
    if (text.rfind("# attention of head ", 0) == 0) {
      head = text.substr(20, text.find(' ', 20) - 20);
      const auto at = text.find("L = ");
      if (at != std::string::npos && at < text.find('\n')) L = std::strtol(text.c_str() + at + 4, nullptr, 10);
    }
    std::replace(head.begin(), head.end(), '\'', ' ');
    const std::string what = induction ? "induction head " : "previous-token head ";
    if (L <= 0)
      return "set title 'Attention of " + what + head + "' noenhanced\nset yrange [*:*] reverse\nset autoscale fix\n"
             "plot '../" + file + "' matrix with image pixels notitle\n";
    // Only the sequence (not its padding); an induction head attends to the token after the
    // earlier occurrence, key = query - L + 1, for the queries of the repeated half.
    const std::string end = std::to_string(2 * L - 1) + ".5";
    std::string body = "set title 'Attention of " + what + head + " (repeat length " + std::to_string(L) +
                       ")' noenhanced\nset xrange [-0.5:" + end + "]\nset yrange [" + end + ":-0.5]\nset samples " +
                       std::to_string(L) + "\nplot '../" + file + "' matrix with image pixels notitle";
    if (induction)
      body += ", [t=" + std::to_string(L) + ":" + std::to_string(2 * L - 1) + "] '+' using ($1 - " + std::to_string(L) +
              " + 1):1 with points pt 6 ps 1.6 lc rgb '#d62728' title 'induction target: the token after the earlier "
              "occurrence'";
    return body + "\n";
  };
  std::string body = "set datafile separator whitespace\nset xlabel 'key position'\nset ylabel 'query position'\n"
                     "set cblabel 'attention'\nset cbrange [0:1]\nset palette defined (0 '#ffffff', 0.3 '#9ecae1', "
                     "1 '#08306b')\nset size ratio -1\nset key below noautotitle\n";
  if (f.has("heads_pattern_prev.dat"))
    body += "set multiplot layout 1,2\n" + panel("heads_pattern_prev.dat", false) + panel("heads_pattern.dat", true) +
            "unset multiplot\n";
  else
    body += panel("heads_pattern.dat", true);
  figure(f.opts.gnuplot, f.plots, "pattern", body);
  return true;
}

bool progress_figure(const RunFigures& f) {
  if (!f.has("progress.csv")) return false;
  const std::string shading = phase_shading(f.summary);
  figure(f.opts.gnuplot, f.plots, "progress",
         "set title 'Progress measures" + std::string(shading.empty() ? "" : " (phases shaded)") +
             "'\nset xlabel 'epoch'\nset ylabel 'loss'\nset logscale y\n"
             "set format y '10^{%L}'\nset y2label 'Gini of the embeddings frequency norms'\nset y2range [0:1]\nset y2tics\n"
             "set key outside right top\n" + shading +
             "plot '../progress.csv' using 'epoch':'train_loss' with lines ls 1 title 'train', "
             "'' using 'epoch':'test_loss' with lines ls 2 title 'test', "
             "'' using 'epoch':'restricted_loss' with lines ls 3 title 'restricted', " +
             std::string(read_csv(f.dir + "/progress.csv").column("heldout_restricted_loss") >= 0
                             ? "'' using 'epoch':'heldout_restricted_loss' with lines ls 3 dt 3 title 'restricted, "
                               "held out (test)', "
                             : "") +
             "'' using 'epoch':'excluded_loss' with lines ls 4 title 'excluded', "
             "'' using 'epoch':'gini' axes x1y2 with lines ls 5 dt 2 title 'Gini (right)'\n");
  return true;
}

// report.html: the summary, every figure drawn, the tables and the config, in one page.
void write_run_report(const RunFigures& f, const std::vector<std::string>& drawn) {
  std::string h = "<!doctype html><html><head><meta charset=utf-8><title>grokking run " + html_escape(f.dir) +
                  "</title>" + kStyle + "</head><body><h1>Run " + html_escape(f.dir) + "</h1>";
  if (f.summary) {
    const Summary& s = *f.summary;
    auto epoch = [](const std::optional<int64_t>& e) { return e ? std::to_string(*e) : std::string("never"); };
    const TaskShape shape = task_shape(f.cfg.task);
    if (shape.has_accuracy()) {
      h += "<p>status <b>" + html_escape(to_string(s.status)) + "</b>; memorised at epoch " + epoch(s.memorised_epoch) +
           ", grokked at epoch " + epoch(s.grokked_epoch) + " (resolution " +
           std::to_string(s.milestone_resolution_epochs) + " epochs); a uniform guess over the " +
           std::to_string(shape.classes) + " classes has loss ln " + std::to_string(shape.classes) + " = " +
           sig6(std::log(double(shape.classes))) + "</p>";
      // The figures people look for first, then everything.
      h += "<table><tr><th>epochs</th><th>memorised</th><th>grokked</th><th>delay</th><th>train loss</th>"
           "<th>test loss</th><th>train acc</th><th>test acc</th><th>wall time (s)</th><th>device</th></tr><tr><td>" +
           std::to_string(s.epochs) + "</td><td>" + epoch(s.memorised_epoch) + "</td><td>" + epoch(s.grokked_epoch) +
           "</td><td>" + (s.grokking_delay ? std::to_string(*s.grokking_delay) : "-") + "</td><td>" +
           sig6(s.final.train_loss) + "</td><td>" + sig6(s.final.test_loss) + "</td><td>" + sig6(s.final.train_acc) +
           "</td><td>" + sig6(s.final.test_acc) + "</td><td>" + sig6(s.wall_time_s) + "</td><td>" +
           html_escape(s.device) + "</td></tr></table>";
    } else {
      // A task without accuracy (features reconstructed): no milestones, the losses only.
      h += "<p>status <b>" + html_escape(to_string(s.status)) + "</b> (task " + html_escape(f.cfg.task.kind) +
           ": no accuracy, so no memorisation or grokking epoch)</p>";
      h += "<table><tr><th>steps</th><th>train loss</th><th>evaluation loss</th><th>wall time (s)</th><th>device</th>"
           "</tr><tr><td>" + std::to_string(s.epochs) + "</td><td>" + sig6(s.final.train_loss) + "</td><td>" +
           sig6(s.final.test_loss) + "</td><td>" + sig6(s.wall_time_s) + "</td><td>" + html_escape(s.device) +
           "</td></tr></table>";
    }
    // Boundaries only where they meet the paper's definitions; otherwise the reason.
    const json& p = s.phases;
    if (p.is_object() && p.value("definitions_hold", json()) != json(true)) {
      h += "<p>phases: " + html_escape(p.value("note", std::string())) + "</p>";
    } else if (p.is_object()) {
      auto cell = [](const json& v) { return html_escape(v.dump()); };
      h += "<p>phases: memorisation 0&ndash;" + cell(p["memorisation"]["end"]) + ", circuit formation " +
           cell(p["circuit_formation"]["start"]) + "&ndash;" + cell(p["circuit_formation"]["end"]) + ", cleanup " +
           cell(p["cleanup"]["start"]) + "&ndash;" + cell(p["cleanup"]["end"]) +
           (p.contains("key_irreps") ? "; key irreps " + cell(p["key_irreps"]) : "; key frequencies " + cell(p["key_freqs"])) +
           "</p>";
    }
    h += "<details><summary>summary.json</summary><pre>" + html_escape(s.to_json().dump(2)) + "</pre></details>";
  }
  for (auto& name : drawn) h += inline_svg(f.plots + "/" + name + ".svg");
  // Each analysis' tables, as it declares them (what applies to this run only).
  for (auto* k : analyses_for(f.cfg))
    for (auto& [heading, file] : k->report)
      if (f.has(file)) h += "<h2>" + html_escape(heading) + "</h2>" + html_table(read_csv(f.dir + "/" + file));
  h += "<h2>Config</h2><pre>" + html_escape(read_file(f.dir + "/config.json")) + "</pre></body></html>\n";
  atomic_write(f.dir + "/report.html", h);
}

// After `patch`: the restored share as heat maps, cell by cell (Wang et al.'s figures): for a
// transformer the residual stream by layer and position, each head's output by layer and head,
// and each path sender -> receiver; for other models each named activation's slices as bars.
std::string patch_paths_panel(const RunFigures& f) {
  const auto t = read_csv(f.dir + "/patch_paths.csv");
  const int cs = t.column("sender"), cr = t.column("receiver"), cv = t.column("recovered");
  if (t.rows.empty() || cs < 0 || cr < 0 || cv < 0) return "";
  std::vector<std::string> senders, receivers;
  auto index = [](std::vector<std::string>& v, const std::string& x) {
    auto it = std::find(v.begin(), v.end(), x);
    if (it != v.end()) return size_t(it - v.begin());
    v.push_back(x);
    return v.size() - 1;
  };
  std::string data = "$paths << EOD\n";
  for (auto& r : t.rows) {
    const size_t x = index(receivers, r[size_t(cr)]), y = index(senders, r[size_t(cs)]);
    data += std::to_string(x) + "," + std::to_string(y) + "," + r[size_t(cv)] + "\n";
  }
  data += "EOD\n";
  auto tics = [](const std::vector<std::string>& v) {
    std::string out = "(";
    for (size_t i = 0; i < v.size(); ++i) out += (i ? ", '" : "'") + v[i] + "' " + std::to_string(i);
    return out + ")";
  };
  return data + "set title 'paths sender -> receiver'\nset xlabel 'receiver'\nset ylabel 'sender'\nset xtics " +
         tics(receivers) + " rotate by 60 right\nset ytics " + tics(senders) + "\nset xrange [-0.5:" +
         std::to_string(receivers.size() - 1) + ".5]\nset yrange [-0.5:" + std::to_string(senders.size() - 1) +
         ".5] reverse\nplot $paths using 1:2:(0.5):(0.5):3 with boxxyerror fs solid lw 0 fc palette notitle, "
         "$paths using 1:2:(abs($3) >= 0.05 ? sprintf('%.2f', $3) : '') with labels notitle\n";
}

bool patch_figure(const RunFigures& f) {
  const std::string head =
      "set termoption noenhanced\nset datafile separator ','\nset palette defined (-1 '#2166ac', 0 '#f7f7f7', 1 '#b2182b')\n"
      "set cbrange [-1:1]\nset cblabel '(patched - corrupted) / (clean - corrupted)'\n";
  if (!f.has("patch_resid.csv") || !f.has("patch_heads.csv")) {
    if (!f.has("patch_acts.csv")) return false;
    figure(f.opts.gnuplot, f.plots, "patch",
           head + "set title 'Activation patching: each clean activation restored into the corrupted run'\n"
                  "set ylabel '(patched - corrupted) / (clean - corrupted)'\nset yrange [-0.2:1.2]\nset xtics rotate by 60 "
                  "right\nset style fill solid 0.8\nset boxwidth 0.8\nset bmargin 10\n"
                  "plot '../patch_acts.csv' using 0:'recovered':xtic(stringcolumn('activation') . '[' . "
                  "stringcolumn('index') . ']') with boxes lc rgb '#1f77b4' notitle\n");
    return true;
  }
  // Cells centred on whole numbers, the ranges their edges.
  auto extent = [&](const std::string& file, const std::string& column) {
    const auto t = read_csv(f.dir + "/" + file);
    const int c = t.column(column);
    long top = 0;
    for (auto& r : t.rows) top = std::max(top, c >= 0 ? std::strtol(r[size_t(c)].c_str(), nullptr, 10) : 0L);
    return "[-0.5:" + std::to_string(top) + ".5]";
  };
  const std::string layers = extent("patch_heads.csv", "layer");
  // A tic a position up to 12 of them, then about 8 tics.
  const std::string positions = extent("patch_resid.csv", "position");
  const long last = std::strtol(positions.c_str() + positions.find(':') + 1, nullptr, 10);
  const std::string position_step = std::to_string(last < 12 ? 1 : (last + 1 + 7) / 8);
  const std::string paths = f.has("patch_paths.csv") ? patch_paths_panel(f) : "";
  figure(f.opts.gnuplot, f.plots, "patch",
         head + "set multiplot layout 1," + (paths.empty() ? "2" : "3") +
             " title 'Activation patching: clean activations restored into the corrupted run; path patching: the "
             "share of the effect each edge carries'\n"
         "set title 'residual stream into each block'\nset xlabel 'position'\nset ylabel 'layer'\nset xtics " +
         position_step + "\nset ytics 1\n"
         "set xrange " + positions + "\nset yrange " + layers + " reverse\n"
         "plot '../patch_resid.csv' using 'position':'layer':(0.5):(0.5):'recovered' with boxxyerror fs solid lw 0 "
         "fc palette notitle\n"
         "set title \"each head's output\"\nset xlabel 'head'\nset xtics 1\nset xrange " + extent("patch_heads.csv", "head") +
         "\nplot '../patch_heads.csv' using 'head':'layer':(0.5):(0.5):'recovered' with boxxyerror fs solid lw 0 "
         "fc palette notitle, '' using 'head':'layer':(sprintf('%.2f', column('recovered'))) with labels notitle\n" +
         paths + "unset multiplot\n");
  return true;
}

// Every figure of a run by name: training's and those the analyses declare.
const std::map<std::string, bool (*)(const RunFigures&)>& figure_drawers() {
  static const std::map<std::string, bool (*)(const RunFigures&)> d = {
      {"loss", loss_figure},         {"accuracy", accuracy_figure}, {"diagnostics", diagnostics_figure}, {"icl", icl_figure},
      {"spectrum", spectrum_figure}, {"neurons", neurons_figure},   {"logits2d", logits2d_figure},
      {"attention", attention_figure}, {"progress", progress_figure}, {"excluded", excluded_figure},
      {"trig_fit", trig_fit_figure}, {"irreps", irreps_figure},     {"heads", heads_figure},
      {"pattern", pattern_figure},     {"position_loss", position_loss_figure},   {"superposition", superposition_figure}, {"patch", patch_figure}};
  return d;
}

void plot_run(const PlotOptions& opts, const std::string& dir) {
  if (!exists(dir + "/metrics.csv")) throw UsageError(dir + ": not a run directory (no metrics.csv)");
  // Read as resume reads it: a damaged file is one clear error here, not gnuplot's warnings.
  if (read_metrics(dir + "/metrics.csv").empty()) throw UsageError(dir + "/metrics.csv: no rows to plot");
  // The analyses that apply to this run, brought up to date (what is missing or older than the
  // newest checkpoint) through the registry; their figures, after the training ones.
  const Config cfg = load_run_config(dir);
  if (opts.analyse && !list_checkpoints(dir).empty()) update_analyses(dir, false, false);
  RunFigures f{opts, dir, dir + "/plots", std::nullopt, cfg};
  if (exists(summary_path(dir))) f.summary = read_summary(dir);
  make_dirs(f.plots);
  std::vector<std::string> wanted = {"loss", "accuracy", "diagnostics", "icl"};
  for (auto* k : analyses_for(cfg))
    for (auto& fig : k->figures) wanted.push_back(fig);
  const auto& drawers = figure_drawers();
  std::vector<std::string> drawn;
  for (auto& name : wanted)
    if (drawers.at(name)(f)) drawn.push_back(name);
  write_run_report(f, drawn);
  std::string list;
  for (auto& d : drawn) list += (list.empty() ? "" : ",") + d;
  spdlog::info("{}: {} figure{} in plots/ ({{{}}}.{{png,svg,gp}}) and report.html", dir, drawn.size(),
               drawn.size() == 1 ? "" : "s", list);
}

// Per swept key (seeds pooled): each run's grokking epoch against the key's value, never-grokked
// runs at their last epoch, and the median per value.
void grok_vs_key_figures(const PlotOptions& opts, const std::string& plots, const CsvTable& table, const json& plan,
                         std::vector<std::string>& figs) {
  const int g = table.column("grokked_epoch"), last = table.column("epochs");
  // Runs of a task without accuracy (sparse features) have no milestones: no epoch figures.
  const int memorised = table.column("memorised_epoch");
  bool milestones = false;
  for (auto& r : table.rows) milestones = milestones || (memorised >= 0 && !r[size_t(memorised)].empty());
  for (auto& key : plan["keys"]) {
    if (!milestones) break;
    const std::string k = key.get<std::string>();
    // Seeds are replicates, not a factor: they are pooled in every other figure.
    if (k == "train.seed" || k == "task.seed") continue;
    const int c = table.column(k);
    // Points: (value, grokked epoch) per run, or (value, last epoch) for a run that never
    // grokked, drawn apart; the median per value counts those at their last epoch (a lower bound).
    std::map<double, std::vector<Outcome>> by_value;
    std::string points = "value,epoch,censored\n";
    for (auto& r : table.rows) {
      char* end = nullptr;
      const double v = std::strtod(r[size_t(c)].c_str(), &end);
      if (r[size_t(c)].empty() || *end != 0) continue;
      const bool censored = r[size_t(g)].empty();
      if (censored && (last < 0 || r[size_t(last)].empty())) continue;
      const double e = std::strtod(r[size_t(censored ? last : g)].c_str(), nullptr);
      by_value[v].push_back({e, censored});
      points += sig6(v) + "," + sig6(e) + "," + (censored ? "1" : "0") + "\n";
    }
    if (by_value.size() < 2) continue;  // one value: nothing to compare along this key
    std::string medians = "value,median\n";
    for (auto& [v, es] : by_value) medians += sig6(v) + "," + sig6(median_of(es).value) + "\n";
    std::string safe = k;
    std::replace(safe.begin(), safe.end(), '.', '_');
    atomic_write(plots + "/grok_vs_" + safe + ".csv", points);
    atomic_write(plots + "/grok_vs_" + safe + "_median.csv", medians);
    const bool logx = by_value.begin()->first > 0 && by_value.rbegin()->first / by_value.begin()->first >= 10;
    figure(opts.gnuplot, plots, "grok_vs_" + safe,
           "set termoption noenhanced\nset title \"Grokking epoch against " + k +
               "\\n(open triangles: never grokked, drawn at their last epoch)\"\nset key below\nset xlabel '" + k +
               "'\nset ylabel 'first epoch with test accuracy >= 99%'\n" + (logx ? "set logscale x\n" : "") +
               "set offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05\nset datafile separator ','\n"
               "plot 'grok_vs_" + safe + ".csv' using 1:($3 == 0 ? $2 : 1/0) with points pt 7 ps 1.2 "
               "lc rgb '#1f77b4' title 'grokked', '' using 1:($3 == 1 ? $2 : 1/0) with points pt 8 ps 1.5 "
               "lc rgb '#d62728' title 'never grokked', 'grok_vs_" + safe +
               "_median.csv' using 1:2 with linespoints ls 2 title 'median (never grokked at last epoch)'\n");
    figs.push_back("grok_vs_" + safe);
  }
}

// grokking compare's arms: each run a point, never-grokked runs marked, median and 95 % interval.
void compare_figure(const PlotOptions& opts, const std::string& dir, const std::string& plots,
                    std::vector<std::string>& figs) {
  if (exists(dir + "/compare.csv") && exists(dir + "/compare_runs.csv")) {
    auto arms = read_csv(dir + "/compare.csv");
    std::string labels, medians = "index,median,lo,hi\n";
    const int med = arms.column("grok_median"), lo = arms.column("grok_ci_lo"), hi = arms.column("grok_ci_hi");
    // Tick labels carry the values only ("4.0, fixed"); the keys go to the axis label.
    std::string keys;
    auto split_arm = [](const std::string& arm, bool want_keys) {
      std::string out;
      size_t start = 0;
      while (start <= arm.size()) {
        size_t end = arm.find(", ", start);
        if (end == std::string::npos) end = arm.size();
        const std::string part = arm.substr(start, end - start);
        const size_t eq = part.find('=');
        out += (out.empty() ? "" : ", ") + (eq == std::string::npos ? part : want_keys ? part.substr(0, eq) : part.substr(eq + 1));
        start = end + 2;
      }
      return out;
    };
    for (size_t i = 0; i < arms.rows.size(); ++i) {
      if (i == 0) keys = split_arm(arms.rows[i][0], true);
      labels += (i ? ", " : "") + std::string("'") + split_arm(arms.rows[i][0], false) + "' " + std::to_string(i);
      medians += std::to_string(i) + "," + arms.rows[i][size_t(med)] + "," + arms.rows[i][size_t(lo)] + "," +
                 arms.rows[i][size_t(hi)] + "\n";
    }
    atomic_write(plots + "/compare_arms.csv", medians);
    figure(opts.gnuplot, plots, "compare",
           "set termoption noenhanced\nset title 'Arms of the sweep (grokking compare; first arm: baseline)'\n"
           "set ylabel 'grokked epoch (never grokked: last epoch)'\nset xtics (" + labels + ")\n"
           "set xlabel '" + keys + "'\n"
           "set xrange [-0.5:" + std::to_string(arms.rows.size()) + "-0.5]\nset datafile separator ','\n"
           "set key outside bottom center horizontal\nset yrange [0:*]\nset offsets 0, 0, graph 0.06, 0\n"
           "plot '../compare_runs.csv' using ($1 + 0.3*(rand(0)-0.5)):($3 == 0 ? $2 : 1/0) with points pt 7 "
           "lc rgb '#1f77b4' title 'grokked', '' using ($1 + 0.3*(rand(0)-0.5)):($3 == 1 ? $2 : 1/0) "
           "with points pt 8 ps 1.5 lc rgb '#d62728' title 'never grokked', 'compare_arms.csv' using 1:2:3:4 "
           "with yerrorbars pt 5 ps 1.5 lc rgb 'black' title 'median, 95% bootstrap interval'\n");
    figs.push_back("compare");
  }
}

// The n = 2, m = 1 runs of a sparse-feature sweep: the phase diagram (density of feature 2 against
// its importance relative to feature 1), trained beside the numerical optimum, disagreements marked.
void phase_figure(const PlotOptions& opts, const std::string& dir, const std::string& plots,
                  std::vector<std::string>& figs) {
  const auto sp = read_csv(dir + "/superposition.csv");
  const int run = sp.column("run"), feat = sp.column("feature"), imp = sp.column("importance"),
            inv = sp.column("inverse_density"), ph = sp.column("phase"), opt = sp.column("optimum");
  if (run >= 0 && feat >= 0 && imp >= 0 && inv >= 0 && ph >= 0 && opt >= 0) {
    const std::vector<std::pair<std::string, std::string>> classes = {
        {"not represented", "#bdbdbd"}, {"dedicated dimension", "#1f77b4"},
        {"antipodal superposition", "#d62728"}, {"superposition (same sign)", "#ff7f0e"}};
    auto colour = [&](const std::string& c) {
      for (auto& [name, rgb] : classes)
        if (name == c) return std::to_string(std::stol(rgb.substr(1), nullptr, 16));
      return std::string("0");
    };
    std::map<std::string, double> first_importance;
    for (auto& r : sp.rows)
      if (r[size_t(feat)] == "0") first_importance[r[size_t(run)]] = std::strtod(r[size_t(imp)].c_str(), nullptr);
    struct Cell {
      double density, rel;
      std::string trained, optimum;
    };
    std::vector<Cell> found;
    for (auto& r : sp.rows) {
      if (r[size_t(feat)] != "1" || r[size_t(ph)].empty()) continue;
      const auto i0 = first_importance.find(r[size_t(run)]);
      if (i0 == first_importance.end() || !(i0->second > 0)) continue;
      found.push_back({1.0 / std::strtod(r[size_t(inv)].c_str(), nullptr),
                       std::strtod(r[size_t(imp)].c_str(), nullptr) / i0->second, r[size_t(ph)], r[size_t(opt)]});
    }
    // Each cell a tile reaching halfway (on the log scale) to its neighbours in the grid; the
    // outer tiles as wide as their inner neighbours' halves.
    auto tile = [](std::vector<double> grid, double v) {
      std::sort(grid.begin(), grid.end());
      grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
      const size_t i = size_t(std::lower_bound(grid.begin(), grid.end(), v) - grid.begin());
      auto mid = [&](size_t a, size_t b) { return std::sqrt(grid[a] * grid[b]); };
      const double lo = i > 0 ? mid(i - 1, i) : (grid.size() > 1 ? v * v / mid(0, 1) : v / 1.5);
      const double hi = i + 1 < grid.size() ? mid(i, i + 1) : (grid.size() > 1 ? v * v / mid(i - 1, i) : v * 1.5);
      return std::make_pair(lo, hi);
    };
    std::vector<double> densities, rels;
    for (auto& c : found) densities.push_back(c.density), rels.push_back(c.rel);
    std::string cells = "density,relative_importance,trained,optimum,trained_rgb,optimum_rgb,agree,x_lo,x_hi,y_lo,y_hi\n";
    int n = 0, agree = 0;
    for (auto& c : found) {
      const bool same = c.trained == c.optimum;
      const auto [xlo, xhi] = tile(densities, c.density);
      const auto [ylo, yhi] = tile(rels, c.rel);
      cells += sig6(c.density) + "," + sig6(c.rel) + ",\"" + c.trained + "\",\"" + c.optimum + "\"," + colour(c.trained) + "," +
               colour(c.optimum) + "," + (same ? "1" : "0") + "," + sig6(xlo) + "," + sig6(xhi) + "," + sig6(ylo) + "," +
               sig6(yhi) + "\n";
      ++n, agree += same;
    }
    if (n > 0) {
      atomic_write(plots + "/phase.csv", cells);
      std::string legend;
      for (auto& [name, rgb] : classes)
        legend += ", keyentry with points pt 5 ps 2 lc rgb '" + rgb + "' title '" + name + "'";
      auto panel = [&](const std::string& title, const std::string& rgb_column, bool with_key) {
        return "set title '" + title + "'\n" + (with_key ? "set key at screen 0.5, screen 0.01 center bottom horizontal maxcols 5 maxrows 1 reverse Left samplen 1 font ',9'\n"
                         : "unset key\n") +
               "plot 'phase.csv' using 'density':'relative_importance':'x_lo':'x_hi':'y_lo':'y_hi':'" + rgb_column +
               "' with boxxyerror fs solid 1.0 border lc rgb 'white' lc rgb variable notitle, "
               "'' using 'density':(column('agree') == 0 ? column('relative_importance') : 1/0) with points pt 6 ps 2.5 lw 2 "
               "lc rgb 'black' title 'trained differs from the optimum'" +
               (with_key ? legend : std::string()) + "\n";
      };
      figure(opts.gnuplot, plots, "phase",
             "set termoption noenhanced\nset multiplot layout 1,2 title 'Two features in one dimension (n = 2, m = 1): "
             "" + std::to_string(agree) + " of " + std::to_string(n) + " trained cells agree with the optimum'\n"
             "set logscale xy\nset xlabel 'density of feature 2 (1 - S)'\nset ylabel 'importance of feature 2 "
             "relative to feature 1'\nset autoscale fix\nset bmargin 6\n" +
                 panel("trained", "trained_rgb", false) + panel("numerical optimum of the expected loss", "optimum_rgb", true) +
                 "unset multiplot\n");
      figs.push_back("phase");
    }
  }
}

// A sparse-feature sweep after `superposition`: each feature's dimensionality and each run's
// D* against 1/(1 - S) (Elhage et al.'s figure), and the two-feature phase diagram.
void superposition_figures(const PlotOptions& opts, const std::string& dir, const std::string& plots,
                           std::vector<std::string>& figs) {
  if (exists(dir + "/superposition.csv")) {
    // The fractions at which their features stick (1, 3/4, 2/3, 1/2, 2/5, 3/8), as dotted lines.
    std::string sticky;
    for (auto [num, den] : std::vector<std::pair<int, int>>{{1, 1}, {3, 4}, {2, 3}, {1, 2}, {2, 5}, {3, 8}}) {
      const std::string y = sig6(double(num) / den), name = den == 1 ? "1" : std::to_string(num) + "/" + std::to_string(den);
      // 2/5 and 3/8 lie 0.025 apart: their labels are nudged apart.
      const std::string nudge = den == 5 ? "0.5,0.35" : den == 8 ? "0.5,-0.35" : "0.5,0";
      sticky += "set arrow from graph 0, first " + y + " to graph 1, first " + y + " nohead dt 3 lc rgb '#888888'\n"
                "set label '" + name + "' at graph 1, first " + y + " offset " + nudge + " font ',9' tc rgb '#555555'\n";
    }
    // The x range the data spans (log scale), with a margin, so that no point sits on the border.
    // The y range up to the largest value drawn (D* of a run that has not converged exceeds 1).
    double lo = 1e300, hi = 0, top = 1.1;
    {
      const auto sp = read_csv(dir + "/superposition.csv");
      const int c = sp.column("inverse_density"), cd = sp.column("dimensionality"), cs = sp.column("dims_per_feature");
      auto num = [&](const std::vector<std::string>& r, int col) {
        return col >= 0 ? std::strtod(r[size_t(col)].c_str(), nullptr) : 0.0;
      };
      for (auto& r : sp.rows) {
        const double v = num(r, c);
        if (std::isfinite(v) && v > 0) lo = std::min(lo, v), hi = std::max(hi, v);
        for (double y : {num(r, cd), num(r, cs)})
          if (std::isfinite(y)) top = std::max(top, 1.05 * y);
      }
    }
    const std::string xrange = (hi > 0 ? "set xrange [" + sig6(lo / 1.25) + ":" + sig6(hi * 1.25) + "]\n" : "") +
                               "set yrange [-0.05:" + sig6(top) + "]\n";
    figure(opts.gnuplot, plots, "superposition",
           "set title 'Dimensionality per feature, and D* = m/|W|^2, against 1/(1-S)'\nset xlabel '1/(1-S)'\n"
           "set logscale x\nset ylabel 'dimensions per feature'\nset key outside top center horizontal\n"
           "set rmargin 6\n" + xrange + sticky +
           "plot '../superposition.csv' using 'inverse_density':'dimensionality' with points pt 7 ps 0.6 "
           "lc rgb '#1f77b4' title 'a feature', '' using 'inverse_density':'dims_per_feature' with points pt 5 "
           "ps 0.9 lc rgb 'black' title 'D* of a run'\n");
    figs.push_back("superposition");
    phase_figure(opts, dir, plots, figs);
  }
}

void plot_sweep(const PlotOptions& opts, const std::string& dir) {
  if (!exists(dir + "/sweep.csv")) throw UsageError(dir + ": no sweep.csv yet (run grokking sweep --aggregate " + dir + ")");
  auto table = read_csv(dir + "/sweep.csv");
  json plan = read_json_file(dir + "/plan.json");
  const std::string plots = dir + "/plots";
  make_dirs(plots);
  std::vector<std::string> figs;
  grok_vs_key_figures(opts, plots, table, plan, figs);
  if (exists(dir + "/compare.csv") && exists(dir + "/compare_runs.csv")) compare_figure(opts, dir, plots, figs);
  if (opts.analyse) update_sweep_analyses(dir);  // superposition.csv over the sweep, as `analyse` makes it
  if (exists(dir + "/superposition.csv")) superposition_figures(opts, dir, plots, figs);
  std::string h = "<!doctype html><html><head><meta charset=utf-8><title>grokking sweep " + html_escape(dir) +
                  "</title>" + kStyle + "</head><body><h1>Sweep " + html_escape(dir) + "</h1><p>" +
                  std::to_string(table.rows.size()) + " finished runs of " + std::to_string(plan["runs"].size()) + "</p>";
  for (auto& f : figs) h += inline_svg(plots + "/" + f + ".svg");
  h += "<h2>Runs</h2>" + html_table(table, 100000) + "</body></html>\n";
  atomic_write(dir + "/report.html", h);
  spdlog::info("{}: {} figure(s) in plots/ and report.html", dir, figs.size());
}

}  // namespace

int run_plot_command(const PlotOptions& opts) {
  if (!is_dir(opts.path)) throw UsageError(opts.path + ": not a directory; plot takes a run or a sweep directory");
  if (exists(opts.path + "/plan.json")) plot_sweep(opts, opts.path);
  else plot_run(opts, opts.path);
  return 0;
}

std::vector<std::string> run_figure_names() {
  std::vector<std::string> out;
  for (auto& [name, draw] : figure_drawers()) out.push_back(name);
  return out;
}

}  // namespace grokking
