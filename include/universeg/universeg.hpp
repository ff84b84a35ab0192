// universeg.hpp - UniverSeg (Butoi et al., ICCV 2023) in header-only C++17.
//
// Few-shot segmentation: given a query image and a support set of (image, label) pairs that
// define a task, predict the query's label map with no retraining.
//
//   #include <universeg/universeg.hpp>      // compile with -O2 (-fopenmp for threads), -I include
//                                           // and Eigen's include path; nothing else
//   universeg::Model model = universeg::load_model("weights.safetensors");   // or a PyTorch .pt
//   // query (B,1,H,W), support images and labels (B,S,1,H,W): row-major float32, images in [0,1]
//   std::vector<float> logits(B * H * W);
//   model.forward(query, support_images, support_labels, B, S, H, W, logits.data());
//   // probability = 1 / (1 + exp(-logit)); mask = logit > 0
//
// To segment image files with a folder of labelled examples, see universeg/segment/segment.hpp (it
// also needs zlib and stb: CMake target universeg::io). Bad input throws universeg::Error with
// a message naming the file, tensor or argument at fault.
//
// The forward pass runs the best CPU kernels this machine has (AVX-512, AVX2, SSE2, NEON),
// chosen at run time: a binary built with plain -O2 is portable and fast. Programs of many
// translation units can compile the heavy part once: see universeg/core/api.hpp.
//
// Where things are: core/ (tensor, network description, model, reference ops and forward),
// cpu/ (the engine: one schedule, its memory plan, the kernels), io/ (checkpoints, safetensors,
// .npy, images, NIfTI), segment/ (segmentation of images and volumes), train/ (training),
// cuda/ (the CUDA backend, compiled by nvcc).
#pragma once

#include "core/model.hpp"
#include "core/network.hpp"
#include "core/ops.hpp"
#include "core/tensor.hpp"
#include "cpu/engine.hpp"
#include "io/weights.hpp"
#include "version.hpp"
