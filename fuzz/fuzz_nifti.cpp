// libFuzzer target: NIfTI-1 volumes, plain and gzip-compressed (header, byte order, dims,
// datatypes, vox_offset, scaling), then the affine and a slice along every axis.
#include <universeg/io/nifti.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace universeg;
    try {
        const Volume v = load_nifti(data, size, "fuzz.nii");
        if (int64_t(v.voxels.size()) != v.nx * v.ny * v.nz) __builtin_trap();
        // A branch on every voxel's value, for valgrind (as in fuzz_image.cpp).
        size_t nans = 0;
        for (float x : v.voxels) nans += x != x;
        if (nans > v.voxels.size()) __builtin_trap();
        (void)nifti_affine(v.header);
        for (int axis = 0; axis < 3; ++axis) {
            int64_t h, w, n;
            slice_shape(v, axis, h, w, n);
            (void)volume_slice(v, axis, n - 1);
        }
    } catch (const Error&) {
    }
    return 0;
}
