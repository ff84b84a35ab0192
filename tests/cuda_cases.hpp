// cuda_cases.hpp - problems for the CUDA backend's tests, built by the host compiler
// (cuda_cases.cpp includes the whole library) and used by test_cuda_plan.cpp and test_cuda.cu
// (which nvcc compiles without model.hpp or Eigen).
#pragma once

#include <universeg/cuda/plan.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

struct CudaCase {
    std::string name;
    universeg::Network net;
    std::vector<float> query, images, labels;
    std::vector<float> golden;  // the official model's logits (golden cases only)
    std::vector<float> cpu;     // universeg::Model::forward_reference<double>, the CPU reference
    int64_t B = 0, S = 0, H = 0, W = 0;
};

// tests/data/golden/<name>: "v1_b2_s4_128" or "custom_b1_s3_48x80".
CudaCase golden_case(const std::string& name);

// Random weights for encoder blocks (cross, conv) and random inputs.
CudaCase random_case(const std::vector<std::pair<int64_t, int64_t>>& encoder, int64_t B, int64_t S, int64_t H, int64_t W,
                     uint32_t seed);

// 1e-4 * max(1, max|reference|): the project's parity bound.
double parity_bound(const std::vector<float>& reference);
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);
// Fraction of pixels where (a > 0) == (b > 0).
double mask_agreement(const std::vector<float>& a, const std::vector<float>& b);
