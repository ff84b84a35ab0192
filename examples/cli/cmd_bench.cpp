// universeg bench: time the forward pass on random inputs; universeg bench-chart: draw the
// latency-vs-support-size chart from the comparison script's results (bench/compare.py).
#include "chart.hpp"
#include "cli.hpp"

#include <universeg/universeg.hpp>

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace cli {

namespace {

const char* kBenchUsage =
    "usage: universeg bench --weights W [--support-size S] [--batch B] [--size H] [--repeats N]\n"
    "                       [--threads N] [--precision P] [--arch A] [--algo winograd|direct] [--device cpu|cuda]\n"
    "                       [--max-memory MB] [--json]\n"
    "\n"
    "Times Model::forward on random inputs (one warm-up run, then N timed runs) and prints\n"
    "  median_ms=... min_ms=... cpu_ms=... peak_rss_mb=... gflops=...\n"
    "(medians over the timed runs; cpu_ms: the process's CPU time per run, all threads together)\n"
    "where gflops is the official PyTorch graph's operation count (2 x multiply-adds of every\n"
    "convolution as the official code runs it, computed from the model's config; 667.6 GFLOP for\n"
    "v1 at S=64, B=1, 128x128) divided by the median time.\n"
    "\n"
    "  --weights W          PyTorch checkpoint (.pt) or safetensors file\n"
    "  --support-size S     supports per query (default 64)\n"
    "  --batch B            queries per call (default 1)\n"
    "  --size H             image size H x H (default 128)\n"
    "  --repeats N          timed runs (default 5)\n"
    "  --threads N          OpenMP threads (default: all cores)\n"
    "  --precision P        fp32 (default) or bf16 (CPU: needs AVX512_BF16); cuda also tf32\n"
    "  --arch A             highest instruction set: sse2, avx2, avx512, amx (default: the best this CPU has)\n"
    "  --algo A             winograd (default) or direct convolutions\n"
    "  --max-memory MB      bound the engine's memory (see universeg run --help; CPU only)\n"
    "  --device D           cpu (default) or cuda (times the GPU forward with CUDA events; needs a\n"
    "                       -DUNIVERSEG_CUDA=ON build; --arch, --algo and --threads do not apply)\n"
    "  --json               print one JSON object instead of the key=value line\n";

const char* kChartUsage =
    "usage: universeg bench-chart --in RESULTS.tsv --out CHART.svg [--title T]\n"
    "\n"
    "Draws median latency against support size, one line per engine, from a table with the\n"
    "header 'engine<TAB>support_size<TAB>median_ms' (written by bench/compare.py).\n";

double cpu_ms() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return double(t.tv_sec) * 1e3 + double(t.tv_nsec) / 1e6;
}

double median_of(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Peak resident memory of this process. Linux's VmHWM belongs to this program's address space;
// getrusage's ru_maxrss also survives exec, so it would report a larger parent's peak.
double peak_rss_mb() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
        if (line.rfind("VmHWM:", 0) == 0) return std::strtod(line.c_str() + 6, nullptr) / 1024.0;
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_maxrss) / 1024.0;  // kilobytes on Linux
}

// 2 x multiply-adds of the official graph: every support runs the cross conv on the
// concatenated (target, support) pair and the support conv; the target conv runs once.
double official_gflop(const universeg::Model& m, int64_t B, int64_t S, int64_t H, int64_t W) {
    double flops = 0;
    const auto& cfg = m.config();
    auto block = [&](const universeg::CrossBlock& b, double hw) {
        const double f = double(b.features.cross), g = double(b.features.conv);
        flops += 2.0 * 9 * hw * (double(S) * double(b.target_in + b.support_in) * f + f * g + double(S) * f * g);
    };
    for (int64_t k = 0; k < cfg.levels(); ++k) block(m.encoder()[size_t(k)], double(H * W) / double(1 << (2 * k)));
    for (size_t d = 0; d < cfg.decoder.size(); ++d)
        block(m.decoder()[d], double(H * W) / double(1 << (2 * (cfg.levels() - 2 - int64_t(d)))));
    flops += 2.0 * double(H * W) * double(cfg.output_in());
    return double(B) * flops / 1e9;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
    Args a("bench", kBenchUsage, argc, argv,
           {"--weights", "--support-size", "--batch", "--size", "--repeats", "--threads", "--precision", "--arch", "--algo",
            "--device", "--max-memory"},
           {"--json"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (!a.positional().empty()) throw Error("unexpected argument '" + a.positional()[0] + "'");
    set_threads(a.get_int("--threads", 0, 0, 1024));
    const int64_t S = a.get_int("--support-size", 64, 1, 4096), B = a.get_int("--batch", 1, 1, 4096);
    const int64_t H = a.get_int("--size", 128, 1, 8192), repeats = a.get_int("--repeats", 5, 1, 100000);
    universeg::engine::Options opt;
    const std::string precision = a.get("--precision", "fp32"), algo = a.get("--algo", "winograd");
    const std::string device = a.get("--device", "cpu");
    if (device != "cpu" && device != "cuda") throw Error("--device must be cpu or cuda, got '" + device + "'");
    if (device == "cuda") require_cuda();
    if (device == "cpu" && precision != "fp32" && precision != "bf16")
        throw Error("--precision must be fp32 or bf16 on the CPU, got '" + precision + "'");
    if (algo != "winograd" && algo != "direct") throw Error("--algo must be winograd or direct, got '" + algo + "'");
    opt.precision = precision == "bf16" ? universeg::kernels::Precision::bf16 : universeg::kernels::Precision::fp32;
    opt.winograd = algo == "winograd";
    opt.max_memory_mb = a.get_double("--max-memory", 0, 1, 1e9);
    if (a.has("--max-memory") && device != "cpu") throw Error("--max-memory applies to the CPU engine only");
    if (a.has("--arch")) opt.isa = universeg::kernels::parse_isa(a.get("--arch"), "--arch");
    std::string arch = "cuda";
    if (device == "cpu") arch = universeg::engine::table_for(opt).name;

    const universeg::Model model(universeg::load_state_dict(a.get("--weights")));
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> q(size_t(B * H * H)), si(size_t(B * S * H * H)), sl(si.size()), logits(q.size());
    for (float& v : q) v = u(rng);
    for (float& v : si) v = u(rng);
    for (float& v : sl) v = u(rng) < 0.3f;

    // Wall time, and the process's CPU time (all threads): on a busy machine the CPU time shows
    // the work done while the wall time also counts waiting for a core.
    std::vector<double> ms, cpu;
    double device_mb = 0;
    if (device == "cuda") {
        const CudaRun r = cuda_bench(model, precision, q.data(), si.data(), sl.data(), B, S, H, H, repeats);
        ms = r.ms;
        cpu.assign(ms.size(), 0.0);
        device_mb = r.device_mb;
        arch = "cuda: " + r.device;
    }
    auto once = [&] {
        const double c0 = cpu_ms();
        const auto t0 = std::chrono::steady_clock::now();
        model.forward(q.data(), si.data(), sl.data(), B, S, H, H, logits.data(), opt);
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        cpu.push_back(cpu_ms() - c0);
    };
    if (device == "cpu") {
        once();  // warm-up: packs the weights, grows the workspace
        ms.clear();
        cpu.clear();
        for (int64_t i = 0; i < repeats; ++i) once();
    }
    const double median = median_of(ms), median_cpu = median_of(cpu), fastest = *std::min_element(ms.begin(), ms.end());
    const double gflop = official_gflop(model, B, S, H, H), rss = peak_rss_mb();
    const std::string algo_used = device == "cuda" ? "im2col-gemm" : algo;  // the GPU path has one algorithm
#ifdef _OPENMP
    const int threads = omp_get_max_threads();
#else
    const int threads = 1;
#endif
    if (a.has("--json")) {
        std::printf("{\"median_ms\": %.3f, \"min_ms\": %.3f, \"cpu_ms\": %.3f, \"peak_rss_mb\": %.1f, \"gflops\": %.1f, \"official_gflop\": %.2f, "
                    "\"support_size\": %lld, \"batch\": %lld, \"size\": %lld, \"threads\": %d, \"precision\": \"%s\", "
                    "\"arch\": \"%s\", \"algo\": \"%s\", \"repeats\": %lld, \"device_mb\": %.1f}\n",
                    median, fastest, median_cpu, rss, gflop / (median / 1e3), gflop, (long long)S, (long long)B, (long long)H,
                    threads, precision.c_str(), arch.c_str(), algo_used.c_str(), (long long)repeats, device_mb);
    } else {
        std::printf("median_ms=%.3f min_ms=%.3f cpu_ms=%.3f peak_rss_mb=%.1f gflops=%.1f official_gflop=%.2f S=%lld B=%lld size=%lld "
                    "threads=%d precision=%s arch='%s' algo=%s repeats=%lld device_mb=%.1f\n",
                    median, fastest, median_cpu, rss, gflop / (median / 1e3), gflop, (long long)S, (long long)B, (long long)H,
                    threads, precision.c_str(), arch.c_str(), algo_used.c_str(), (long long)repeats, device_mb);
    }
    return 0;
}

int cmd_bench_chart(int argc, char** argv) {
    Args a("bench-chart", kChartUsage, argc, argv, {"--in", "--out", "--title"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    const std::string in = a.get("--in"), out = a.get("--out");
    std::ifstream f(in);
    if (!f) throw Error(in + ": cannot open");
    std::string line;
    std::getline(f, line);
    if (line.rfind("engine\tsupport_size\tmedian_ms", 0) != 0)
        throw Error(in + ": expected the header 'engine<TAB>support_size<TAB>median_ms'");
    std::map<std::string, Series> by_engine;
    std::vector<std::string> order;
    for (int row = 2; std::getline(f, line); ++row) {
        if (line.empty()) continue;
        std::istringstream ls(line);
        std::string engine;
        double s = 0, ms = 0;
        if (!std::getline(ls, engine, '\t') || !(ls >> s >> ms)) throw Error(in + ":" + std::to_string(row) + ": bad row");
        if (!by_engine.count(engine)) order.push_back(engine);
        Series& se = by_engine[engine];
        se.name = engine;
        se.x.push_back(s);
        se.y.push_back(ms / 1e3);
    }
    std::vector<Series> series;
    for (const auto& e : order) series.push_back(by_engine[e]);
    if (series.empty()) throw Error(in + ": no rows");
    ChartAxes axes;
    axes.title = a.get("--title", "UniverSeg forward, one 128x128 query, 2 threads");
    axes.x_label = "support size S";
    axes.y_label = "seconds per forward (log)";
    axes.log_y = true;
    const std::string svg = line_chart_svg(axes, series);
    universeg::write_file_atomic(out, std::vector<uint8_t>(svg.begin(), svg.end()));
    std::printf("wrote %s (%zu engines)\n", out.c_str(), series.size());
    return 0;
}

}  // namespace cli
