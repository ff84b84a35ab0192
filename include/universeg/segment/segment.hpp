// universeg/segment/segment.hpp - few-shot segmentation of images and volumes with a Model and
// a support set of labelled examples: any size and intensity range in, label maps (any integer
// values; each non-zero value is its own task) and probabilities at the query's size out.
//
//   universeg::Model model = universeg::load_model("weights.safetensors");
//   universeg::SegmenterOptions options;                           // defaults as `universeg segment`
//   options.size = universeg::weights_image_size("weights.safetensors");   // the size it was trained at
//   universeg::Segmenter seg(model, universeg::Support::folder("support/"), options);  // calibrates once
//   universeg::Segmentation out = seg.segment(universeg::load_image("query.png"));
//   universeg::save_label_png("query_labels.png", out.labels);      // out.probabilities: per label value
//   universeg::VolumeSegmentation v = seg.segment(universeg::load_nifti("ct.nii.gz"));  // slice by slice
//
// Needs zlib and stb_image (CMake target universeg::io). How it works (calibration, tiles,
// volumes, the histogram baseline): docs/segment.md. The headers by role:
//   segmenter.hpp    Segmenter, Support (folders, images and volumes in memory), SegmenterOptions
//   calibration.hpp  make_task and its leave-one-out calibration
//   task.hpp         Task, SegmentOptions, predict_probabilities, predict_tiled, label maps
//   support.hpp      SupportSet: examples at the model size and sampled at their own; windows
//   metrics.hpp      Dice, IoU, the histogram classifier
#pragma once

#include "calibration.hpp"
#include "metrics.hpp"
#include "segmenter.hpp"
#include "support.hpp"
#include "task.hpp"
