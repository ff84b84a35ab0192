// universeg - few-shot medical image segmentation from the command line.
#include "cli.hpp"

#include <universeg/io/bytes.hpp>
#include <universeg/version.hpp>

#include <Eigen/Core>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fs = std::filesystem;

namespace cli {

Args::Args(const std::string& command, const std::string& usage, int argc, char** argv,
           const std::vector<std::string>& value_options, const std::vector<std::string>& switches)
    : command_(command), usage_(usage) {
    for (int i = 0; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "-h" || a == "--help") {
            help_ = true;
        } else if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
            const size_t eq = a.find('=');
            const std::string name = a.substr(0, eq);
            bool takes_value = false;
            for (const auto& o : value_options) takes_value |= o == name;
            bool is_switch = false;
            for (const auto& s : switches) is_switch |= s == name;
            if (takes_value) {
                if (eq != std::string::npos) {
                    values_[name] = a.substr(eq + 1);
                } else {
                    if (i + 1 >= argc) throw Error(name + " needs a value");
                    values_[name] = argv[++i];
                }
            } else if (is_switch && eq == std::string::npos) {
                switches_.insert(name);
            } else {
                throw Error("unknown option " + name + " (see universeg " + command + " --help)");
            }
        } else {
            positional_.push_back(a);
        }
    }
}

std::string Args::get(const std::string& name) const {
    auto it = values_.find(name);
    if (it == values_.end()) throw Error("missing " + name + " (see universeg " + command_ + " --help)");
    return it->second;
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
    auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
}

// Decimal digits only, with an optional sign: no leading spaces, hex or octal as strtoll would
// take. Each digit is checked before it is added (detail::append_digit), so no value wraps.
int64_t Args::get_int(const std::string& name, int64_t fallback, int64_t min, int64_t max) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    const std::string& s = it->second;
    const bool negative = !s.empty() && s[0] == '-';
    const size_t first = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    uint64_t magnitude = 0;
    bool ok = s.size() > first;
    for (size_t i = first; ok && i < s.size(); ++i)
        ok = s[i] >= '0' && s[i] <= '9' && universeg::detail::append_digit(magnitude, s[i], uint64_t(INT64_MAX));
    const int64_t v = negative ? -int64_t(magnitude) : int64_t(magnitude);
    if (!ok || v < min || v > max)
        throw Error(name + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "], got '" +
                    s + "'");
    return v;
}

// A decimal number: [sign] digits [. digits] [e [sign] digits], checked before strtod reads it,
// which would also take leading spaces, hex, "inf" and "nan"; one beyond double's range is refused.
double Args::get_double(const std::string& name, double fallback, double min, double max) const {
    auto it = values_.find(name);
    if (it == values_.end()) return fallback;
    const std::string& s = it->second;
    size_t i = 0;
    auto digits = [&] {
        const size_t start = i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        return i - start;
    };
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    size_t mantissa = digits();
    if (i < s.size() && s[i] == '.') ++i, mantissa += digits();
    bool ok = mantissa > 0;
    if (ok && i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
        ok = digits() > 0;
    }
    errno = 0;
    const double v = ok && i == s.size() ? std::strtod(s.c_str(), nullptr) : NAN;
    if (errno == ERANGE || !(v >= min && v <= max)) {
        char range[64];
        std::snprintf(range, sizeof range, "[%g, %g]", min, max);
        throw Error(name + " must be a number in " + range + ", got '" + s + "'");
    }
    return v;
}

std::string one_line(const std::string& message) {
    std::string out;
    for (unsigned char c : message) {
        if (c >= 0x20 && c != 0x7F) {
            out += char(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, c == '\n' ? "\\n" : "\\x%02x", unsigned(c));
            out += buf;
        }
    }
    return out;
}

namespace {

// The bundled weights: a directory's universeg.safetensors, else its only .safetensors or .pt
// (training checkpoints, *.ckpt.safetensors, are not weights files).
std::string weights_in(const fs::path& dir) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return "";
    if (fs::is_regular_file(dir / "universeg.safetensors", ec)) return (dir / "universeg.safetensors").string();
    std::vector<std::string> found;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string(), e = it->path().extension().string();
        const bool checkpoint = name.size() > 17 && name.compare(name.size() - 17, 17, ".ckpt.safetensors") == 0;
        if ((e == ".safetensors" || e == ".pt") && !checkpoint && it->is_regular_file(ec)) found.push_back(it->path().string());
    }
    if (found.size() > 1)
        throw Error(dir.string() + " holds several weights files and no universeg.safetensors; choose one with --weights");
    return found.empty() ? "" : found[0];
}

// Default weights: $UNIVERSEG_WEIGHTS, then weights/ next to the executable, the install
// prefix's share/universeg/weights (relative to the executable, then as configured), and the
// source tree's weights/.
std::string default_weights() {
    if (const char* env = std::getenv("UNIVERSEG_WEIGHTS")) {
        if (fs::is_directory(env)) {
            const std::string w = weights_in(env);
            if (w.empty()) throw Error(std::string("UNIVERSEG_WEIGHTS=") + env + " holds no .safetensors or .pt file");
            return w;
        }
        return env;
    }
    std::vector<fs::path> dirs;
    std::error_code ec;
    const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
    if (!ec) {
        dirs.push_back(exe.parent_path() / "weights");
        dirs.push_back(exe.parent_path().parent_path() / "share" / "universeg" / "weights");
    }
#ifdef UNIVERSEG_INSTALL_DATADIR
    dirs.push_back(fs::path(UNIVERSEG_INSTALL_DATADIR) / "weights");
#endif
#ifdef UNIVERSEG_SOURCE_DIR
    dirs.push_back(fs::path(UNIVERSEG_SOURCE_DIR) / "weights");
#endif
    std::string looked;
    for (const fs::path& d : dirs) {
        const std::string w = weights_in(d);
        if (!w.empty()) return w;
        looked += (looked.empty() ? "" : ", ") + d.string();
    }
    throw Error("no default weights are bundled yet (looked in " + looked +
                "); pass --weights FILE, e.g. the official universeg_v1_nf64_ss64_STA.pt");
}

}  // namespace

std::string weights_option(const Args& a) { return a.has("--weights") ? a.get("--weights") : default_weights(); }

void set_threads(int64_t n) {
    if (n <= 0) return;
#ifdef _OPENMP
    omp_set_num_threads(int(n));
#endif
    Eigen::setNbThreads(int(n));
}

}  // namespace cli

namespace {

struct Command {
    const char* name;
    int (*run)(int, char**);
    const char* summary;
};

const Command kCommands[] = {
    {"segment", cli::cmd_segment, "segment images or volumes like a folder of labelled examples"},
    {"eval", cli::cmd_eval, "Dice and IoU of predicted label maps against ground truth"},
    {"train", cli::cmd_train, "train UniverSeg on synthetic tasks and/or labelled folders"},
    {"finetune", cli::cmd_finetune, "adapt weights to a labelled folder, with held-out Dice"},
    {"run", cli::cmd_run, "segment .npy arrays: query + support set -> logits"},
    {"convert", cli::cmd_convert, "convert a PyTorch checkpoint to safetensors"},
    {"info", cli::cmd_info, "describe a weights file: architecture, parameters, dtype"},
    {"compare", cli::cmd_compare, "compare two .npy arrays: errors, mask agreement, tolerance check"},
    {"make-case", cli::cmd_make_case, "write a test vector: random weights, inputs, fp64 oracle logits"},
    {"bench", cli::cmd_bench, "time the forward pass: median ms, peak memory, GFLOP/s"},
    {"bench-chart", cli::cmd_bench_chart, "draw bench/compare.py's latency-vs-support-size chart (SVG)"},
};

// Ctrl-C or a kill while an output is being written: remove its temporary file (the output
// itself is renamed into place only when complete), then die of the signal as usual.
extern "C" void on_fatal_signal(int sig) {
    universeg::remove_pending_temporaries();
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

void print_usage(std::FILE* out) {
    std::fprintf(out, "usage: universeg <command> [options]   (universeg <command> --help for details)\n"
                      "       universeg --version\n\ncommands:\n");
    for (const Command& c : kCommands) std::fprintf(out, "  %-11s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
        print_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    if (!std::strcmp(argv[1], "--version")) {
        std::printf("universeg %s\n", universeg::kVersion);
        return 0;
    }
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, on_fatal_signal);
    for (const Command& c : kCommands) {
        if (std::strcmp(argv[1], c.name) != 0) continue;
        try {
            return c.run(argc - 2, argv + 2);
        } catch (const std::bad_alloc&) {
            std::fprintf(stderr, "universeg %s: error: out of memory\n", c.name);
        } catch (const std::exception& e) {
            // One line, whatever a hostile file put into the names the message quotes.
            std::fprintf(stderr, "universeg %s: error: %s\n", c.name, cli::one_line(e.what()).c_str());
        }
        return 1;
    }
    std::fprintf(stderr, "universeg: unknown command '%s'\n\n", argv[1]);
    print_usage(stderr);
    return 1;
}
