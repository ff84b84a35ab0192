// universeg/train/batch.hpp - what one training or evaluation step consumes: B tasks, each a
// query with its label map and S support pairs. The synthetic generator, labelled folders and
// the trainer share it.
#pragma once

#include <cstdint>
#include <vector>

namespace universeg {

// A batch of B tasks, each one query and S supports; row-major, labels 0/1.
struct Batch {
    int64_t B = 0, S = 0, H = 0, W = 0;
    std::vector<float> query, query_labels;              // (B, 1, H, W)
    std::vector<float> support_images, support_labels;  // (B, S, 1, H, W)

    static Batch zeros(int64_t B, int64_t S, int64_t H, int64_t W) {
        Batch b;
        b.B = B, b.S = S, b.H = H, b.W = W;
        b.query.resize(size_t(B * H * W));
        b.query_labels.resize(size_t(B * H * W));
        b.support_images.resize(size_t(B * S * H * W));
        b.support_labels.resize(size_t(B * S * H * W));
        return b;
    }
};

}  // namespace universeg
