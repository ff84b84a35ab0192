// Micro-benchmark of the convolution kernels on every 3x3 layer shape of the v1 model, for
// every instruction set this program carries and this CPU runs, on one thread:
// GFLOP/s (2 x multiply-adds of the direct convolution, so Winograd's figure is an effective
// rate and may exceed the peak) and the share of the machine's peak, measured here with a
// pure-FMA loop of the same instruction set.
//
//   bench_kernels [--seconds T] [--arch A]
#include <universeg/cpu/kernels.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace universeg;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Shape {
    const char* layer;
    int64_t cin, cout, size;
};

// The v1 model's 3x3 convolutions as the engine runs them (cross conv split in halves).
const Shape kShapes[] = {
    {"enc0 cross, support half", 2, 64, 128}, {"enc0 target/support conv", 64, 64, 128},
    {"enc1 cross half + convs", 64, 64, 64},  {"enc2 cross half + convs", 64, 64, 32},
    {"enc3 cross half + convs", 64, 64, 16},  {"dec0 cross half", 128, 64, 32},
    {"dec1 cross half", 128, 64, 64},         {"dec2 cross (target only)", 128, 64, 128},
};

enum class Algo { direct, winograd, bf16 };

// Runs one kernel over a whole image repeatedly for about `seconds`; returns GFLOP/s.
double time_conv(const kernels::Table& t, Algo algo, const Shape& s, double seconds) {
    const kernels::Geom g = kernels::geom(s.size, s.size);
    const int64_t in_cp = s.cin < 16 ? s.cin : kernels::channel_stride(s.cin), out_cp = kernels::channel_stride(s.cout);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> in(size_t(g.pixels() * in_cp), 0.0f), out(size_t(g.pixels() * out_cp)), w(size_t(s.cout * s.cin * 9)),
        bias(size_t(out_cp), 0.1f);
    for (int64_t y = 0; y < s.size; ++y)
        for (int64_t x = 0; x < s.size; ++x)
            for (int64_t c = 0; c < s.cin; ++c) in[size_t(((y + 1) * g.wp + x + 1) * in_cp + c)] = u(rng);
    for (float& v : w) v = 0.1f * u(rng);
    kernels::ConvArgs a;
    a.in = in.data();
    a.in_cp = in_cp;
    a.cin = s.cin;
    a.out = out.data();
    a.out_cp = out_cp;
    a.cout = out_cp;
    a.h = a.w = s.size;
    a.wp = g.wp;
    a.bias = bias.data();
    a.leaky = true;
    std::vector<float> packed;
    std::vector<uint16_t> packed16;
    std::vector<float> scratch(size_t(kernels::winograd_scratch_floats(t.tile_group, in_cp, out_cp)));
    if (algo == Algo::direct) packed = kernels::pack_direct(w, s.cout, s.cin, 0, s.cin, out_cp, t.nb);
    else if (algo == Algo::winograd) packed = kernels::pack_winograd(w, s.cout, s.cin, 0, s.cin, out_cp, t.nb);
    else packed16 = kernels::pack_winograd_bf16(w, s.cout, s.cin, 0, s.cin, out_cp, t.nb);
    a.weight = packed.data();
    a.weight_bf16 = packed16.data();
    auto once = [&] {
        if (algo == Algo::direct) {
            t.conv3x3_direct(a, 0, s.size);
            return;
        }
        const int64_t tiles = g.tiles();
        for (int64_t t0 = 0; t0 < tiles; t0 += t.tile_group)
            (algo == Algo::winograd ? t.conv3x3_winograd : t.conv3x3_winograd_bf16)(a, t0, std::min(tiles, t0 + t.tile_group),
                                                                                   scratch.data());
    };
    once();
    int64_t runs = 0;
    const double t0 = now();
    double t1 = t0;
    while (t1 - t0 < seconds) {
        once();
        ++runs;
        t1 = now();
    }
    return 2.0 * 9 * double(s.cin * s.cout * s.size * s.size) * double(runs) / (t1 - t0) / 1e9;
}

double peak(const kernels::Table& t) {
    t.fma_probe(1 << 20);
    const double t0 = now();
    const double flops = t.fma_probe(int64_t(1) << 26);
    return flops / (now() - t0) / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = 0.3;
    kernels::Isa cap = kernels::Isa::amx;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) seconds = std::atof(argv[++i]);
        else if (!std::strcmp(argv[i], "--arch") && i + 1 < argc) cap = kernels::parse_isa(argv[++i], "--arch");
        else return std::fprintf(stderr, "usage: bench_kernels [--seconds T] [--arch sse2|avx2|avx512|amx]\n"), 1;
    }
    std::printf("one thread; GFLOP/s = 2 x multiply-adds of the direct convolution / time\n");
    for (const kernels::Table* t : kernels::available_tables()) {
        if (t->isa > int(cap)) continue;
        const double p = peak(*t);
        std::printf("\n%s: FMA peak %.1f GFLOP/s per core\n", t->name, p);
        std::printf("  %-26s %5s %5s %5s  %16s  %16s  %16s\n", "layer", "cin", "cout", "size", "direct", "winograd",
                    "winograd bf16");
        for (const Shape& s : kShapes) {
            const double d = time_conv(*t, Algo::direct, s, seconds);
            std::printf("  %-26s %5lld %5lld %5lld  %7.1f (%4.0f%%)", s.layer, (long long)s.cin, (long long)s.cout,
                        (long long)s.size, d, 100 * d / p);
            if (s.cin >= 16) {
                const double wf = time_conv(*t, Algo::winograd, s, seconds);
                std::printf("  %7.1f (%4.0f%%)", wf, 100 * wf / p);
                if (t->conv3x3_winograd_bf16 && kernels::cpu_has_bf16()) {
                    const double wb = time_conv(*t, Algo::bf16, s, seconds);
                    std::printf("  %7.1f (%4.0f%%)", wb, 100 * wb / p);
                }
            }
            std::printf("\n");
            std::fflush(stdout);
        }
    }
    return 0;
}
