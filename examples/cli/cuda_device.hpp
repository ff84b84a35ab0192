// cuda_device.hpp - between cuda_device.cpp (host compiler, every build) and cuda_device.cu
// (nvcc, -DUNIVERSEG_CUDA=ON builds): the CLI's CUDA calls on a Network, which, unlike
// universeg::Model, an nvcc translation unit can use without parsing Eigen.
#pragma once

#include "cli.hpp"

#include <universeg/cuda/plan.hpp>

namespace cli {

CudaRun cuda_forward_net(const universeg::Network& net, universeg::cuda::Precision precision, const float* query,
                         const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                         int64_t W, float* logits);
CudaRun cuda_bench_net(const universeg::Network& net, universeg::cuda::Precision precision, const float* query,
                       const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                       int64_t W, int64_t repeats);

}  // namespace cli
