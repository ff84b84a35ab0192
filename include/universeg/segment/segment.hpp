// universeg/segment/segment.hpp - few-shot segmentation of whole images with a Model: images of
// any size and label maps with any integer values in, label maps at the query's size out. Needs
// zlib and stb_image (CMake target universeg::io). The headers by role:
//   calibration.hpp  make_task and its leave-one-out calibration
//   task.hpp         Task, SegmentOptions, predict_probabilities, predict_tiled, label maps
//   support.hpp      SupportSet: examples at the model size and sampled at their own; windows
//   metrics.hpp      Dice, IoU, the histogram classifier
#pragma once

#include "calibration.hpp"
#include "metrics.hpp"
#include "support.hpp"
#include "task.hpp"
