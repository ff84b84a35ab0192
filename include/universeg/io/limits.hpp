// universeg/io/limits.hpp - caps on what the readers accept, so that a hostile or broken file
// (a header declaring terabytes, a gzip or PNG bomb, a pickle of millions of tiny objects)
// is refused with an Error naming the file instead of exhausting memory.
//
// Every reader also checks sizes against the bytes it was given, and allocates nothing a
// file's contents cannot justify; these caps bound what a large but well-formed file may
// ask for. One process-wide set, read by every reader:
//
//   universeg::Limits& universeg::limits();      // change fields before reading any file
//
//   field                 default             applies to
//   max_file_bytes        4 GiB               any one input file, and a .nii.gz once inflated
//   max_tensor_elements   2^30                one tensor of a checkpoint, safetensors or .npy file
//   max_rank              32                  dimensions of one tensor (numpy's own limit)
//   max_pickle_values     2^22                objects, memo entries and stack slots of a data.pkl
//   max_header_values     2^20                JSON values in a safetensors header
//   max_image_side        32768               width and height of a 2-D image (PNG, JPEG, ...),
//                                             and of a NIfTI volume's slices along every axis
//   max_image_pixels      2^26                width * height of the same (8192 x 8192)
//   max_volume_voxels     2^30                voxels of a NIfTI volume (1024^3)
//
// The defaults take any real UniverSeg checkpoint, medical image or CT volume; raise them for
// larger data. Not synchronised: set them before other threads read files.
#pragma once

#include <cstdint>

namespace universeg {

struct Limits {
    uint64_t max_file_bytes = uint64_t(1) << 32;
    int64_t max_tensor_elements = int64_t(1) << 30;
    int max_rank = 32;
    int64_t max_pickle_values = int64_t(1) << 22;
    int64_t max_header_values = int64_t(1) << 20;
    int64_t max_image_side = 32768;
    int64_t max_image_pixels = int64_t(1) << 26;
    int64_t max_volume_voxels = int64_t(1) << 30;
};

inline Limits& limits() {
    static Limits l;
    return l;
}

}  // namespace universeg
