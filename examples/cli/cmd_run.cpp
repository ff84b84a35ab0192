// universeg run: one forward pass on .npy arrays, the embedding-free way to use the model.
#include "cli.hpp"

#include <universeg/universeg.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace cli {

namespace {

const char* kRunUsage =
    "usage: universeg run --weights W --query Q.npy --support-images SI.npy --support-labels SL.npy\n"
    "                     --out LOGITS.npy [--reference R.npy] [--threads N] [--device cpu|cuda]\n"
    "                     [--precision P] [--dump DIR] [--max-memory MB]\n"
    "\n"
    "  --weights W          PyTorch checkpoint (.pt) or safetensors file\n"
    "  --query Q.npy        (B,1,H,W) or (B,H,W) query images in [0,1]\n"
    "  --support-images     (B,S,1,H,W) support images in [0,1]\n"
    "  --support-labels     (B,S,1,H,W) binary support labels\n"
    "  --out LOGITS.npy     (B,1,H,W) float32 logits (probability = sigmoid(logit)); float64\n"
    "                       under --precision fp64\n"
    "  --reference R.npy    expected logits: report the largest difference and fail beyond\n"
    "                       1e-4 * max(1, max|R|)\n"
    "  --threads N          OpenMP threads (default: all cores)\n"
    "  --device D           cpu (default) or cuda (the current GPU; needs a -DUNIVERSEG_CUDA=ON build)\n"
    "  --precision P        fp32 (default) or bf16 (CPU: needs AVX512_BF16); cuda also tf32.\n"
    "                       fp32 keeps TF32 off on the GPU. fp64 (CPU): the oracle, the reference\n"
    "                       forward (ops.hpp, op by op) in double precision; slow, memory-hungry\n"
    "  --dump DIR           also write every CrossBlock's outputs, from the reference forward (not\n"
    "                       the fast engine; in fp32, or fp64 under --precision fp64), as float32\n"
    "                       .npy named after the reference model's modules: DIR/enc_blocks.0.target.npy\n"
    "                       (B,1,C,h,w), DIR/enc_blocks.0.support.npy (B,S,C,h,w), ... dec_blocks.K,\n"
    "                       and DIR/out_conv.npy, that forward's logits (B,1,H,W)\n"
    "  --max-memory MB      keep the engine's memory (packed weights + workspace) under MB MiB:\n"
    "                       supports run in groups, recomputed as needed; the same logits, bit for\n"
    "                       bit, in more time (CPU fp32/bf16). Fails if MB is below the minimum\n";

// Accepts (B,1,H,W) / (B,S,1,H,W) or the same without the channel axis.
universeg::Tensor load_array(const std::string& path, int rank, const char* expected) {
    universeg::Tensor t = universeg::load_npy(path);
    if (t.dim() == rank - 1) t.shape.insert(t.shape.end() - 2, 1);
    if (t.dim() != rank || t.shape[size_t(rank - 3)] != 1)
        throw Error(path + ": expected shape " + expected + ", got " + universeg::shape_string(t.shape));
    // Checked here rather than by the model, so that the error names the file.
    if (t.numel() == 0) throw Error(path + ": empty array of shape " + universeg::shape_string(t.shape));
    for (size_t i = 0; i < t.data.size(); ++i)
        if (!std::isfinite(t.data[i])) throw Error(path + ": holds a non-finite value (NaN or Inf) at index " + std::to_string(i));
    return t;
}

}  // namespace

int cmd_run(int argc, char** argv) {
    Args a("run", kRunUsage, argc, argv,
           {"--weights", "--query", "--support-images", "--support-labels", "--out", "--reference", "--threads", "--device",
            "--precision", "--dump", "--max-memory"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (!a.positional().empty()) throw Error("unexpected argument '" + a.positional()[0] + "'");
    set_threads(a.get_int("--threads", 0, 0, 1024));
    const std::string out_path = a.get("--out"), device = a.get("--device", "cpu"), precision = a.get("--precision", "fp32");
    if (device != "cpu" && device != "cuda") throw Error("--device must be cpu or cuda, got '" + device + "'");
    if (device == "cuda") require_cuda();
    if (device == "cpu" && precision != "fp32" && precision != "bf16" && precision != "fp64")
        throw Error("--precision must be fp32, bf16 or fp64 on the CPU, got '" + precision + "'");
    if (device != "cpu" && precision == "fp64") throw Error("--precision fp64 (the reference forward) runs on the CPU only");
    const double max_memory = a.get_double("--max-memory", 0, 1, 1e9);
    if (a.has("--max-memory") && (device != "cpu" || precision == "fp64"))
        throw Error("--max-memory applies to the CPU engine (fp32, bf16), not to " +
                    (precision == "fp64" ? std::string("the fp64 reference forward") : device));

    const universeg::Model model = universeg::load_model(a.get("--weights"));
    const universeg::Tensor q = load_array(a.get("--query"), 4, "(B,1,H,W)");
    const universeg::Tensor si = load_array(a.get("--support-images"), 5, "(B,S,1,H,W)");
    const universeg::Tensor sl = load_array(a.get("--support-labels"), 5, "(B,S,1,H,W)");
    const int64_t B = q.shape[0], H = q.shape[2], W = q.shape[3], S = si.shape[1];
    if (si.shape != std::vector<int64_t>{B, S, 1, H, W} || sl.shape != si.shape)
        throw Error(a.get("--support-images") + " and " + a.get("--support-labels") + ": support shapes " +
                    universeg::shape_string(si.shape) + " and " + universeg::shape_string(sl.shape) +
                    " do not match each other and the query " + universeg::shape_string(q.shape));
    if (const int64_t m = model.config().size_multiple(); H % m || W % m)
        throw Error(a.get("--query") + ": image size " + std::to_string(H) + "x" + std::to_string(W) +
                    " is not a multiple of " + std::to_string(m) + ", as the weights " + a.get("--weights") + " need");

    // --dump: the reference forward's block outputs, named after the reference modules.
    universeg::BlockObserver dump;
    const std::string dump_dir = a.get("--dump", "");
    if (!dump_dir.empty()) {
        std::filesystem::create_directories(dump_dir);
        dump = [&dump_dir](const std::string& module, const universeg::Tensor& target, const universeg::Tensor& support) {
            universeg::save_npy(dump_dir + "/" + module + ".target.npy", target);
            universeg::save_npy(dump_dir + "/" + module + ".support.npy", support);
        };
    }
    auto dump_logits = [&](const std::vector<float>& v) {
        universeg::Tensor t({B, 1, H, W});
        t.data = v;
        universeg::save_npy(dump_dir + "/out_conv.npy", t);
    };

    universeg::Tensor logits({B, 1, H, W});
    std::vector<double> oracle;  // --precision fp64
    std::string ran_on = "cpu, " + precision;
    if (precision == "fp64") {
        oracle = model.forward_reference<double>(q.ptr(), si.ptr(), sl.ptr(), B, S, H, W, dump);
        for (size_t i = 0; i < oracle.size(); ++i) logits.data[i] = float(oracle[i]);
        if (dump) dump_logits(logits.data);
        ran_on = "cpu, fp64 reference forward";
    } else if (device == "cuda") {
        ran_on = "cuda: " + cuda_forward(model, precision, q.ptr(), si.ptr(), sl.ptr(), B, S, H, W, logits.ptr()).device +
                 ", " + precision;
    } else {
        universeg::engine::Options opt;
        if (precision == "bf16") opt.precision = universeg::kernels::Precision::bf16;
        opt.max_memory_mb = max_memory;
        model.forward(q.ptr(), si.ptr(), sl.ptr(), B, S, H, W, logits.ptr(), opt);
        if (max_memory > 0) ran_on += ", memory bound " + std::to_string(int64_t(max_memory)) + " MB";
    }
    if (dump && precision != "fp64")
        dump_logits(model.forward_reference<float>(q.ptr(), si.ptr(), sl.ptr(), B, S, H, W, dump));
    if (oracle.empty()) universeg::save_npy(out_path, logits);
    else universeg::save_npy_f64(out_path, logits.shape, oracle.data());

    int64_t positive = 0;
    for (float v : logits.data) positive += v > 0.0f;
    std::printf("wrote %s: logits %s, %.2f%% of pixels in the mask (%s)\n", out_path.c_str(),
                universeg::shape_string(logits.shape).c_str(), 100.0 * double(positive) / double(logits.numel()),
                ran_on.c_str());
    if (!a.has("--reference")) return 0;

    const universeg::Tensor ref = universeg::load_npy(a.get("--reference"));
    if (ref.numel() != logits.numel())
        throw Error(a.get("--reference") + ": shape " + universeg::shape_string(ref.shape) + " does not match the logits " +
                    universeg::shape_string(logits.shape));
    double max_diff = 0, max_ref = 0;
    for (int64_t i = 0; i < ref.numel(); ++i) {
        const double v = oracle.empty() ? double(logits.data[size_t(i)]) : oracle[size_t(i)];
        max_diff = std::max(max_diff, std::abs(v - double(ref.data[size_t(i)])));
        max_ref = std::max(max_ref, double(std::abs(ref.data[size_t(i)])));
    }
    const double bound = 1e-4 * std::max(1.0, max_ref);
    std::printf("max |logit - reference| = %.3g (bound %.3g): %s\n", max_diff, bound, max_diff <= bound ? "PASS" : "FAIL");
    return max_diff <= bound ? 0 : 1;
}

}  // namespace cli
