// --device cuda: the CLI's way to the CUDA backend (include/universeg/cuda.cuh). Compiled by the
// host compiler in every build: with -DUNIVERSEG_CUDA=ON it hands the model's description to
// cuda_device.cu; otherwise it says how to get a build that has CUDA.
#include "cli.hpp"
#include "cuda_device.hpp"

#include <universeg/core/model.hpp>

namespace cli {

#ifdef UNIVERSEG_CUDA

void require_cuda() {}

CudaRun cuda_forward(const universeg::Model& model, const std::string& precision, const float* query,
                     const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                     int64_t W, float* logits) {
    return cuda_forward_net(model.network(), universeg::cuda::parse_precision(precision, "--precision"),
                            query, support_images, support_labels, B, S, H, W, logits);
}

CudaRun cuda_bench(const universeg::Model& model, const std::string& precision, const float* query,
                   const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                   int64_t W, int64_t repeats) {
    return cuda_bench_net(model.network(), universeg::cuda::parse_precision(precision, "--precision"),
                          query, support_images, support_labels, B, S, H, W, repeats);
}

#else

void require_cuda() { throw Error("this build has no CUDA support; configure with -DUNIVERSEG_CUDA=ON"); }

CudaRun cuda_forward(const universeg::Model&, const std::string&, const float*, const float*, const float*, int64_t,
                     int64_t, int64_t, int64_t, float*) {
    require_cuda();
    return {};
}

CudaRun cuda_bench(const universeg::Model&, const std::string&, const float*, const float*, const float*, int64_t,
                   int64_t, int64_t, int64_t, int64_t) {
    require_cuda();
    return {};
}

#endif

}  // namespace cli
