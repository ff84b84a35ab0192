// universeg run: one forward pass on .npy arrays, the embedding-free way to use the model.
#include "cli.hpp"

#include <universeg/universeg.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace cli {

namespace {

const char* kRunUsage =
    "usage: universeg run --weights W --query Q.npy --support-images SI.npy --support-labels SL.npy\n"
    "                     --out LOGITS.npy [--reference R.npy] [--threads N] [--device cpu|cuda]\n"
    "                     [--precision P]\n"
    "\n"
    "  --weights W          PyTorch checkpoint (.pt) or safetensors file\n"
    "  --query Q.npy        (B,1,H,W) or (B,H,W) query images in [0,1]\n"
    "  --support-images     (B,S,1,H,W) support images in [0,1]\n"
    "  --support-labels     (B,S,1,H,W) binary support labels\n"
    "  --out LOGITS.npy     (B,1,H,W) float32 logits (probability = sigmoid(logit))\n"
    "  --reference R.npy    expected logits: report the largest difference and fail beyond\n"
    "                       1e-4 * max(1, max|R|)\n"
    "  --threads N          OpenMP threads (default: all cores)\n"
    "  --device D           cpu (default) or cuda (the current GPU; needs a -DUNIVERSEG_CUDA=ON build)\n"
    "  --precision P        fp32 (default) or bf16 (CPU: needs AVX512_BF16); cuda also tf32.\n"
    "                       fp32 keeps TF32 off on the GPU\n";

// Accepts (B,1,H,W) / (B,S,1,H,W) or the same without the channel axis.
universeg::Tensor load_array(const std::string& path, int rank, const char* expected) {
    universeg::Tensor t = universeg::load_npy(path);
    if (t.dim() == rank - 1) t.shape.insert(t.shape.end() - 2, 1);
    if (t.dim() != rank || t.shape[size_t(rank - 3)] != 1)
        throw Error(path + ": expected shape " + expected + ", got " + universeg::shape_string(t.shape));
    return t;
}

}  // namespace

int cmd_run(int argc, char** argv) {
    Args a("run", kRunUsage, argc, argv,
           {"--weights", "--query", "--support-images", "--support-labels", "--out", "--reference", "--threads", "--device",
            "--precision"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (!a.positional().empty()) throw Error("unexpected argument '" + a.positional()[0] + "'");
    set_threads(a.get_int("--threads", 0, 0, 1024));
    const std::string out_path = a.get("--out"), device = a.get("--device", "cpu"), precision = a.get("--precision", "fp32");
    if (device != "cpu" && device != "cuda") throw Error("--device must be cpu or cuda, got '" + device + "'");
    if (device == "cuda") require_cuda();
    if (device == "cpu" && precision != "fp32" && precision != "bf16")
        throw Error("--precision must be fp32 or bf16 on the CPU, got '" + precision + "'");

    const universeg::Model model = universeg::load_model(a.get("--weights"));
    const universeg::Tensor q = load_array(a.get("--query"), 4, "(B,1,H,W)");
    const universeg::Tensor si = load_array(a.get("--support-images"), 5, "(B,S,1,H,W)");
    const universeg::Tensor sl = load_array(a.get("--support-labels"), 5, "(B,S,1,H,W)");
    const int64_t B = q.shape[0], H = q.shape[2], W = q.shape[3], S = si.shape[1];
    if (si.shape != std::vector<int64_t>{B, S, 1, H, W} || sl.shape != si.shape)
        throw Error("support shapes " + universeg::shape_string(si.shape) + " and " + universeg::shape_string(sl.shape) +
                    " do not match each other and the query " + universeg::shape_string(q.shape));

    universeg::Tensor logits({B, 1, H, W});
    std::string ran_on = "cpu, " + precision;
    if (device == "cuda") {
        ran_on = "cuda: " + cuda_forward(model, precision, q.ptr(), si.ptr(), sl.ptr(), B, S, H, W, logits.ptr()).device +
                 ", " + precision;
    } else {
        universeg::engine::Options opt;
        if (precision == "bf16") opt.precision = universeg::kernels::Precision::bf16;
        model.forward(q.ptr(), si.ptr(), sl.ptr(), B, S, H, W, logits.ptr(), opt);
    }
    universeg::save_npy(out_path, logits);

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
        max_diff = std::max(max_diff, double(std::abs(logits.data[size_t(i)] - ref.data[size_t(i)])));
        max_ref = std::max(max_ref, double(std::abs(ref.data[size_t(i)])));
    }
    const double bound = 1e-4 * std::max(1.0, max_ref);
    std::printf("max |logit - reference| = %.3g (bound %.3g): %s\n", max_diff, bound, max_diff <= bound ? "PASS" : "FAIL");
    return max_diff <= bound ? 0 : 1;
}

}  // namespace cli
