// The README's example: segment one image like a folder of labelled examples, with the library's
// segmentation API (what `universeg segment` does for many queries).
//   segment_image WEIGHTS SUPPORT_DIR QUERY OUT.png
#include <universeg/segment/segment.hpp>
#include <universeg/universeg.hpp>

#include <cstdio>

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: segment_image WEIGHTS SUPPORT_DIR QUERY OUT.png\n");
        return 2;
    }
    try {
        universeg::Model model = universeg::load_model(argv[1]);
        universeg::SegmenterOptions options;
        options.size = universeg::weights_image_size(argv[1]);  // the size the weights were trained at
        universeg::Segmenter seg(model, universeg::Support::folder(argv[2]), options);  // calibrates once
        universeg::Segmentation out = seg.segment(universeg::load_image(argv[3]));
        universeg::save_label_png(argv[4], out.labels);  // out.probabilities: one image per label value
        return 0;
    } catch (const universeg::Error& e) {
        std::fprintf(stderr, "segment_image: %s\n", e.what());
        return 1;
    }
}
