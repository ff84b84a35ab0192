// The official v1 golden case through the installed headers: the logits of the official
// PyTorch code (tests/data/golden/v1_b2_s4_128) within 1e-4. Also compiled by .ci/run as a
// drop-in program (plain g++/clang++ -O2, -Wall -Wextra -Wshadow -Werror).
#include <universeg/universeg.hpp>

#include <cmath>
#include <cstdio>
#include <string>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer GOLDEN_DIR\n");
        return 2;
    }
    const std::string dir = argv[1];
    try {
        const universeg::Model model = universeg::load_model(dir + "/weights.pt");
        const universeg::Tensor q = universeg::load_npy(dir + "/query.npy");
        const universeg::Tensor si = universeg::load_npy(dir + "/support_images.npy");
        const universeg::Tensor sl = universeg::load_npy(dir + "/support_labels.npy");
        const universeg::Tensor expected = universeg::load_npy(dir + "/logits.npy");
        const int64_t B = si.size(0), S = si.size(1), H = si.size(3), W = si.size(4);
        std::vector<float> logits(size_t(B * H * W));
        model.forward(q.ptr(), si.ptr(), sl.ptr(), B, S, H, W, logits.data());
        double diff = 0;
        for (size_t i = 0; i < logits.size(); ++i) diff = std::max(diff, double(std::fabs(logits[i] - expected.data[i])));
        std::printf("universeg %s, kernels %s: max |logit - official| = %.2e\n", universeg::kVersion,
                    universeg::kernels::select().name, diff);
        return diff <= 1e-4 ? 0 : 1;
    } catch (const universeg::Error& e) {
        std::fprintf(stderr, "consumer: %s\n", e.what());
        return 1;
    }
}
