// universeg.hpp - UniverSeg (Butoi et al., ICCV 2023) in header-only C++17.
//
// Few-shot segmentation: given a query image and a support set of (image, label) pairs that
// define a task, predict the query's label map with no retraining.
//
//   #include <universeg/universeg.hpp>
//
//   universeg::Model model = universeg::load_model("universeg_v1.safetensors");  // or a .pt
//   // query (B,1,H,W), support images/labels (B,S,1,H,W), row-major float32 in [0,1]
//   std::vector<float> logits(B * H * W);
//   model.forward(query, support_images, support_labels, B, S, H, W, logits.data());
//   // probability = 1 / (1 + exp(-logit)); mask = logit > 0
//
// Headers, each usable on its own:
//   tensor.hpp  Error, Tensor (shape + float data), StateDict, fp16/bf16 conversion
//   ops.hpp     the operators as plain functions over explicit shapes (reference forms)
//   model.hpp   Config (architecture), Model (weights + forward), built from a StateDict
//   io.hpp      load_state_dict / load_model (PyTorch .pt, safetensors), .npy, safetensors writer
//
// Dependencies: Eigen 3.4. OpenMP (threads) and xsimd (SIMD kernels) are used when the
// compiler provides them. Every failure on bad input throws universeg::Error with a message
// naming the file, tensor or argument at fault.
#pragma once

#include "io.hpp"
#include "model.hpp"
#include "ops.hpp"
#include "tensor.hpp"
