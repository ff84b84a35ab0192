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
// Included by the above: engine.hpp + kernels.hpp (the fast CPU forward that Model::forward
// runs), io/limits.hpp (caps on untrusted files). Opt-in, include them yourself:
//   io/image.hpp, io/nifti.hpp   images (stb, define UNIVERSEG_STB_IMPLEMENTATION once) and NIfTI-1
//   segment.hpp                  whole-image few-shot segmentation, as `universeg segment` runs it
//   train.hpp, synth.hpp         training: losses, AdamW, synthetic tasks
//   io/torch_writer.hpp          writing PyTorch checkpoints that torch.load reads
//   cuda.cuh                     the CUDA backend (nvcc + cuBLAS)
//
// Dependencies: Eigen 3.4. OpenMP (threads) and xsimd (SIMD kernels) are used when the
// compiler provides them. Every failure on bad input throws universeg::Error with a message
// naming the file, tensor or argument at fault.
#pragma once

#include "io/weights.hpp"
#include "core/model.hpp"
#include "core/ops.hpp"
#include "core/tensor.hpp"
