// universeg/io/nifti.hpp - NIfTI-1 single-file volumes (.nii, and .nii.gz through zlib):
// reading any scalar voxel type of either byte order, the header and its affine, writing
// a volume with another volume's header (geometry, affine, units, description), and 2-D
// slices along an axis for slice-wise segmentation.
//
//   Volume v = load_nifti("ct.nii.gz");        // voxels as float, x fastest, scl_slope applied
//   Volume v = load_nifti(data, size, what);   // the same from memory (`what` names it in errors)
//   std::array<double, 16> A = nifti_affine(v.header);   // voxel (i,j,k,1) -> world (row-major 4x4)
//   Image s = volume_slice(v, 2, k);           // slice k along axis 2 (z): height ny, width nx
//   set_volume_slice(v, 2, k, s);
//   save_nifti("seg.nii.gz", v, kNiftiUint8);  // v.header supplies geometry; gzip by extension
//
// Slices: of the two axes left, the lower one is the image's width (x before y before z), so
// a slice is contiguous in the file for the last axis. Needs zlib (link ZLIB::ZLIB / -lz).
// Extensions in the header are skipped on reading and not written. Reading refuses volumes of
// more than limits().max_volume_voxels voxels, and volumes whose slices along any axis exceed
// the limits on images (max_image_side, max_image_pixels; io/limits.hpp), on the header, before
// inflating or allocating anything.
#pragma once

#include "bytes.hpp"
#include "image.hpp"

#include <zlib.h>

#include <array>
#include <cmath>

namespace universeg {

// NIfTI-1 datatype codes of the scalar types read and written here.
enum NiftiType : int16_t {
    kNiftiUint8 = 2, kNiftiInt16 = 4, kNiftiInt32 = 8, kNiftiFloat32 = 16, kNiftiFloat64 = 64,
    kNiftiInt8 = 256, kNiftiUint16 = 512, kNiftiUint32 = 768, kNiftiInt64 = 1024, kNiftiUint64 = 1280,
};

// The header fields that describe the volume, as in nifti1.h.
struct NiftiHeader {
    uint8_t dim_info = 0;
    std::array<int16_t, 8> dim{};
    float intent_p1 = 0, intent_p2 = 0, intent_p3 = 0;
    int16_t intent_code = 0, datatype = 0, bitpix = 0, slice_start = 0;
    std::array<float, 8> pixdim{};
    float vox_offset = 352, scl_slope = 0, scl_inter = 0;
    int16_t slice_end = 0;
    uint8_t slice_code = 0, xyzt_units = 0;
    float cal_max = 0, cal_min = 0, slice_duration = 0, toffset = 0;
    std::string descrip, aux_file, intent_name;
    int16_t qform_code = 0, sform_code = 0;
    float quatern_b = 0, quatern_c = 0, quatern_d = 0, qoffset_x = 0, qoffset_y = 0, qoffset_z = 0;
    std::array<float, 4> srow_x{}, srow_y{}, srow_z{};
};

struct Volume {
    NiftiHeader header;
    int64_t nx = 0, ny = 0, nz = 0;
    std::vector<float> voxels;  // x fastest: index = x + nx * (y + ny * z)
};

namespace detail {

inline bool is_gzip(const uint8_t* data, size_t size) { return size >= 2 && data[0] == 0x1F && data[1] == 0x8B; }

// Deflate expands data at most 1032-fold (a 258-byte match coded in 2 bits), so `n` bytes of
// gzip inflate to at most n * kMaxInflation: more than that is not in the file.
constexpr uint64_t kMaxInflation = 1032;

// Up to `max_out` bytes of a gzip file (concatenated members too). Stops early, so a header
// can be read without inflating the whole volume and a gzip bomb cannot fill memory. A
// truncated stream returns what it holds (the caller checks the size it needs); corrupt data
// is an error. The output is allocated once, for what the stream can hold.
inline std::vector<uint8_t> gunzip(const uint8_t* in, size_t in_size, size_t max_out, const std::string& what) {
    std::vector<uint8_t> out;
    const uint64_t most = std::min<uint64_t>(max_out, uint64_t(in_size) * kMaxInflation);
    try {
        out.reserve(size_t(most));
    } catch (const std::bad_alloc&) {
        throw out_of_memory(what, most);
    }
    z_stream s{};
    if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) throw Error(what + ": zlib initialisation failed");
    size_t pos = 0;
    uint8_t buf[1 << 16];
    while (out.size() < max_out) {
        if (s.avail_in == 0) {
            if (pos == in_size) break;
            const size_t n = std::min<size_t>(in_size - pos, size_t(1) << 30);
            s.next_in = const_cast<Bytef*>(in + pos);
            s.avail_in = uInt(n);
            pos += n;
        }
        s.next_out = buf;
        s.avail_out = uInt(std::min(sizeof buf, max_out - out.size()));
        const int rc = inflate(&s, Z_NO_FLUSH);
        out.insert(out.end(), buf, s.next_out);
        if (rc == Z_STREAM_END) {
            // Another member follows only if the next bytes are a gzip header; else trailing padding.
            const size_t left = s.avail_in + (in_size - pos);
            const uint8_t* next = s.next_in;
            if (left < 2 || (s.avail_in >= 2 && (next[0] != 0x1F || next[1] != 0x8B))) break;
            inflateReset(&s);
        } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
            const std::string msg = s.msg ? s.msg : "error " + std::to_string(rc);
            inflateEnd(&s);
            throw Error(what + ": corrupt gzip data: " + msg);
        }
    }
    inflateEnd(&s);
    return out;
}

inline std::vector<uint8_t> gzip(const std::vector<uint8_t>& in, const std::string& what) {
    z_stream s{};
    if (deflateInit2(&s, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        throw Error(what + ": zlib initialisation failed");
    std::vector<uint8_t> out(deflateBound(&s, uLong(in.size())) + 64);
    s.next_in = const_cast<Bytef*>(in.data());
    s.avail_in = uInt(in.size());
    s.next_out = out.data();
    s.avail_out = uInt(out.size());
    const int rc = deflate(&s, Z_FINISH);
    out.resize(s.total_out);
    deflateEnd(&s);
    if (rc != Z_STREAM_END) throw Error(what + ": gzip compression failed");
    return out;
}

inline int nifti_type_size(int16_t t) {
    switch (t) {
        case kNiftiUint8: case kNiftiInt8: return 1;
        case kNiftiInt16: case kNiftiUint16: return 2;
        case kNiftiInt32: case kNiftiUint32: case kNiftiFloat32: return 4;
        case kNiftiInt64: case kNiftiUint64: case kNiftiFloat64: return 8;
        default: return 0;
    }
}

inline float nifti_load_voxel(const uint8_t* p, int16_t t, bool big) {
    const int n = nifti_type_size(t);
    const uint64_t u = load_uint(p, n, big);
    switch (t) {
        case kNiftiUint8: case kNiftiUint16: case kNiftiUint32: case kNiftiUint64: return float(u);
        case kNiftiInt8: return float(int8_t(uint8_t(u)));
        case kNiftiInt16: return float(int16_t(uint16_t(u)));
        case kNiftiInt32: return float(int32_t(uint32_t(u)));
        case kNiftiInt64: return float(int64_t(u));
        case kNiftiFloat32: return load_float(p, DType::F32, big);
        default: return load_float(p, DType::F64, big);
    }
}

inline float header_float(const uint8_t* h, size_t off, bool big) { return load_float(h + off, DType::F32, big); }
inline int16_t header_i16(const uint8_t* h, size_t off, bool big) { return int16_t(uint16_t(load_uint(h + off, 2, big))); }
inline std::string header_string(const uint8_t* h, size_t off, size_t n) {
    const char* p = reinterpret_cast<const char*>(h + off);
    return std::string(p, std::find(p, p + n, '\0'));
}

// The 2-D pipeline takes a volume slice by slice, along any axis (volume_slice): each slice is
// an image, under the same limits as one read from a file (limits().max_image_side and
// max_image_pixels), checked on the header before anything is inflated or allocated.
inline void check_volume_slices(const Volume& v, const std::string& path) {
    const Limits& lim = limits();
    const int64_t n[3] = {v.nx, v.ny, v.nz};
    for (int axis = 0; axis < 3; ++axis) {
        const int64_t a = n[axis == 0 ? 1 : 0], b = n[axis == 2 ? 1 : 2];  // the two other axes
        if (a > lim.max_image_side || b > lim.max_image_side || a * b > lim.max_image_pixels)
            throw Error(path + ": a volume of " + std::to_string(v.nx) + "x" + std::to_string(v.ny) + "x" +
                        std::to_string(v.nz) + " voxels, whose slices along axis " + std::to_string(axis) + " (" +
                        std::to_string(a) + "x" + std::to_string(b) + " pixels) exceed the image limits of " +
                        std::to_string(lim.max_image_side) + " per side and " + std::to_string(lim.max_image_pixels) +
                        " pixels (universeg::limits())");
    }
}

}  // namespace detail

// `path` only names the file in errors.
inline Volume load_nifti(const uint8_t* data, size_t size, const std::string& path) {
    const bool gz = detail::is_gzip(data, size);
    const std::vector<uint8_t> head = gz ? detail::gunzip(data, size, 352, path) : std::vector<uint8_t>();
    const size_t head_size = gz ? head.size() : size;
    if (head_size < 348)
        throw Error(path + ": too short for a NIfTI-1 header of 348 bytes: " +
                    (gz ? "its " + std::to_string(size) + " bytes of gzip data inflate to " + std::to_string(head_size)
                        : "the file has " + std::to_string(size)));
    const uint8_t* h = gz ? head.data() : data;
    bool big = false;
    const uint64_t size_le = detail::load_uint(h, 4, false);
    if (size_le == 540 || detail::load_uint(h, 4, true) == 540) throw Error(path + ": NIfTI-2 files are not supported");
    if (size_le != 348) {
        if (detail::load_uint(h, 4, true) != 348) throw Error(path + ": not a NIfTI-1 file (sizeof_hdr is not 348)");
        big = true;
    }
    const std::string magic(reinterpret_cast<const char*>(h + 344), 4);
    if (magic == std::string("ni1\0", 4))
        throw Error(path + ": a two-file NIfTI header (.hdr/.img); convert it to a single .nii file");
    if (magic != std::string("n+1\0", 4)) throw Error(path + ": not a NIfTI-1 file (bad magic)");

    NiftiHeader hd;
    hd.dim_info = h[39];
    for (size_t k = 0; k < 8; ++k) hd.dim[k] = detail::header_i16(h, 40 + 2 * k, big);
    hd.intent_p1 = detail::header_float(h, 56, big);
    hd.intent_p2 = detail::header_float(h, 60, big);
    hd.intent_p3 = detail::header_float(h, 64, big);
    hd.intent_code = detail::header_i16(h, 68, big);
    hd.datatype = detail::header_i16(h, 70, big);
    hd.bitpix = detail::header_i16(h, 72, big);
    hd.slice_start = detail::header_i16(h, 74, big);
    for (size_t k = 0; k < 8; ++k) hd.pixdim[k] = detail::header_float(h, 76 + 4 * k, big);
    hd.vox_offset = detail::header_float(h, 108, big);
    hd.scl_slope = detail::header_float(h, 112, big);
    hd.scl_inter = detail::header_float(h, 116, big);
    hd.slice_end = detail::header_i16(h, 120, big);
    hd.slice_code = h[122];
    hd.xyzt_units = h[123];
    hd.cal_max = detail::header_float(h, 124, big);
    hd.cal_min = detail::header_float(h, 128, big);
    hd.slice_duration = detail::header_float(h, 132, big);
    hd.toffset = detail::header_float(h, 136, big);
    hd.descrip = detail::header_string(h, 148, 80);
    hd.aux_file = detail::header_string(h, 228, 24);
    hd.qform_code = detail::header_i16(h, 252, big);
    hd.sform_code = detail::header_i16(h, 254, big);
    hd.quatern_b = detail::header_float(h, 256, big);
    hd.quatern_c = detail::header_float(h, 260, big);
    hd.quatern_d = detail::header_float(h, 264, big);
    hd.qoffset_x = detail::header_float(h, 268, big);
    hd.qoffset_y = detail::header_float(h, 272, big);
    hd.qoffset_z = detail::header_float(h, 276, big);
    for (size_t k = 0; k < 4; ++k) {
        hd.srow_x[k] = detail::header_float(h, 280 + 4 * k, big);
        hd.srow_y[k] = detail::header_float(h, 296 + 4 * k, big);
        hd.srow_z[k] = detail::header_float(h, 312 + 4 * k, big);
    }
    hd.intent_name = detail::header_string(h, 328, 16);

    const int rank = hd.dim[0];
    if (rank < 1 || rank > 7) throw Error(path + ": invalid dim[0] = " + std::to_string(rank));
    for (int k = 1; k <= rank; ++k)
        if (hd.dim[size_t(k)] < 1) throw Error(path + ": invalid dim[" + std::to_string(k) + "] = " + std::to_string(hd.dim[size_t(k)]));
    for (int k = 4; k <= rank; ++k)
        if (hd.dim[size_t(k)] != 1)
            throw Error(path + ": a " + std::to_string(rank) + "-D volume (dim[" + std::to_string(k) + "] = " +
                        std::to_string(hd.dim[size_t(k)]) + "); only 2-D and 3-D volumes are supported");
    const int es = detail::nifti_type_size(hd.datatype);
    if (es == 0)
        throw Error(path + ": unsupported NIfTI datatype " + std::to_string(hd.datatype) +
                    " (supported: integer and float scalars; not complex or RGB)");
    Volume v;
    v.nx = hd.dim[1];
    v.ny = rank >= 2 ? hd.dim[2] : 1;
    v.nz = rank >= 3 ? hd.dim[3] : 1;
    const int64_t numel = checked_numel({v.nx, v.ny, v.nz}, limits().max_volume_voxels, path);
    detail::check_volume_slices(v, path);
    if (!(hd.vox_offset >= 348 && hd.vox_offset < 1e15f) || hd.vox_offset != std::floor(hd.vox_offset))
        throw Error(path + ": invalid vox_offset " + std::to_string(hd.vox_offset));
    const uint64_t offset = uint64_t(hd.vox_offset), need = offset + uint64_t(numel) * uint64_t(es);
    // A compressed file is inflated only as far as the header says, never past the cap on files
    // (a gzip bomb costs no more than an uncompressed file would), and not at all when its
    // compressed bytes could not hold that much.
    if (gz && need > limits().max_file_bytes)
        throw Error(path + ": the header declares " + std::to_string(need) + " bytes, more than the limit of " +
                    std::to_string(limits().max_file_bytes) + " (universeg::limits().max_file_bytes)");
    if (gz && need > uint64_t(size) * detail::kMaxInflation)
        throw Error(path + ": truncated: the header declares " + std::to_string(need) + " bytes, more than its " +
                    std::to_string(size) + " bytes of gzip data can hold (deflate inflates at most " +
                    std::to_string(detail::kMaxInflation) + "-fold)");
    const std::vector<uint8_t> inflated = gz ? detail::gunzip(data, size, size_t(need), path) : std::vector<uint8_t>();
    const uint8_t* bytes = gz ? inflated.data() : data;
    const size_t bytes_size = gz ? inflated.size() : size;
    if (bytes_size < need)
        throw Error(path + ": truncated: the header declares " + std::to_string(need) + " bytes of data, the file " +
                    (gz ? "inflates to " : "has ") + std::to_string(bytes_size));
    // scl_slope 0 means "no scaling" (nifti1.h); otherwise value = slope * stored + inter.
    const bool scale = hd.scl_slope != 0 && std::isfinite(hd.scl_slope) && std::isfinite(hd.scl_inter) &&
                       !(hd.scl_slope == 1 && hd.scl_inter == 0);
    v.voxels = detail::allocate<float>(uint64_t(numel), path);
    for (int64_t i = 0; i < numel; ++i) {
        const float x = detail::nifti_load_voxel(bytes + offset + uint64_t(i) * uint64_t(es), hd.datatype, big);
        v.voxels[size_t(i)] = scale ? float(double(hd.scl_slope) * x + hd.scl_inter) : x;
    }
    v.header = hd;
    return v;
}

inline Volume load_nifti(const std::string& path) {
    const std::vector<uint8_t> bytes = read_file(path);
    return load_nifti(bytes.data(), bytes.size(), path);
}

// The voxel-to-world matrix (row-major 4x4) as nibabel and ITK pick it: the sform when
// sform_code > 0, else the qform quaternion when qform_code > 0, else the voxel sizes alone.
inline std::array<double, 16> nifti_affine(const NiftiHeader& h) {
    std::array<double, 16> a{};
    a[15] = 1;
    if (h.sform_code > 0) {
        for (size_t k = 0; k < 4; ++k) a[k] = h.srow_x[k], a[4 + k] = h.srow_y[k], a[8 + k] = h.srow_z[k];
        return a;
    }
    if (h.qform_code > 0) {
        double b = h.quatern_b, c = h.quatern_c, d = h.quatern_d, q = 1.0 - (b * b + c * c + d * d), qa;
        if (q < 1e-7) {  // nifti1_io: a 180-degree rotation; renormalise (b,c,d)
            const double n = std::sqrt(b * b + c * c + d * d);
            b /= n, c /= n, d /= n, qa = 0;
        } else {
            qa = std::sqrt(q);
        }
        const double qfac = h.pixdim[0] < 0 ? -1.0 : 1.0;
        const double sx = h.pixdim[1], sy = h.pixdim[2], sz = qfac * h.pixdim[3];
        const double r[3][3] = {{qa * qa + b * b - c * c - d * d, 2 * (b * c - qa * d), 2 * (b * d + qa * c)},
                                {2 * (b * c + qa * d), qa * qa + c * c - b * b - d * d, 2 * (c * d - qa * b)},
                                {2 * (b * d - qa * c), 2 * (c * d + qa * b), qa * qa + d * d - c * c - b * b}};
        const double off[3] = {h.qoffset_x, h.qoffset_y, h.qoffset_z};
        for (size_t i = 0; i < 3; ++i) {
            a[4 * i + 0] = r[i][0] * sx;
            a[4 * i + 1] = r[i][1] * sy;
            a[4 * i + 2] = r[i][2] * sz;
            a[4 * i + 3] = off[i];
        }
        return a;
    }
    for (size_t i = 0; i < 3; ++i) a[5 * i] = h.pixdim[i + 1] > 0 ? h.pixdim[i + 1] : 1.0;
    return a;
}

// The volume as a little-endian .nii (gzip-compressed when `path` ends in .gz), voxels stored
// as `datatype`: integer types round to nearest and refuse values out of range. The header
// is v.header with this data type, dims from v, no scaling and no extensions; the write is atomic.
inline void save_nifti(const std::string& path, const Volume& v, int16_t datatype) {
    const int es = detail::nifti_type_size(datatype);
    if (es == 0) throw Error(path + ": cannot write NIfTI datatype " + std::to_string(datatype));
    if (v.nx < 1 || v.ny < 1 || v.nz < 1 || v.nx > 32767 || v.ny > 32767 || v.nz > 32767 ||
        int64_t(v.voxels.size()) != v.nx * v.ny * v.nz)
        throw Error(path + ": volume of " + std::to_string(v.nx) + "x" + std::to_string(v.ny) + "x" + std::to_string(v.nz) +
                    " with " + std::to_string(v.voxels.size()) + " voxels");
    const NiftiHeader& h = v.header;
    std::vector<uint8_t> out(352, 0);
    auto put = [&out](size_t off, uint64_t x, int n) {
        for (int k = 0; k < n; ++k) out[off + size_t(k)] = uint8_t(x >> (8 * k));
    };
    auto putf = [&put](size_t off, float f) {
        uint32_t bits;
        std::memcpy(&bits, &f, 4);
        put(off, bits, 4);
    };
    auto put_string = [&out](size_t off, const std::string& s, size_t n) {
        std::copy_n(s.begin(), std::min(s.size(), n - 1), out.begin() + ptrdiff_t(off));
    };
    put(0, 348, 4);
    out[38] = 'r';  // "regular", as nifti1_io writes
    out[39] = h.dim_info;
    std::array<int16_t, 8> dim = h.dim;
    dim[0] = v.nz > 1 ? 3 : std::max<int16_t>(2, std::min<int16_t>(h.dim[0], 3));
    dim[1] = int16_t(v.nx), dim[2] = int16_t(v.ny), dim[3] = int16_t(v.nz);
    for (size_t k = 4; k < 8; ++k) dim[k] = 1;
    for (size_t k = 0; k < 8; ++k) put(40 + 2 * k, uint16_t(dim[k]), 2);
    putf(56, h.intent_p1);
    putf(60, h.intent_p2);
    putf(64, h.intent_p3);
    put(68, uint16_t(h.intent_code), 2);
    put(70, uint16_t(datatype), 2);
    put(72, uint16_t(8 * es), 2);
    put(74, uint16_t(h.slice_start), 2);
    // A header made from scratch has zero voxel sizes, which viewers reject: default to 1.
    putf(76, h.pixdim[0] < 0 ? -1.0f : 1.0f);
    for (size_t k = 1; k < 8; ++k) putf(76 + 4 * k, k <= 3 && !(h.pixdim[k] > 0) ? 1.0f : h.pixdim[k]);
    putf(108, 352.0f);
    putf(112, 1.0f);
    putf(116, 0.0f);
    put(120, uint16_t(h.slice_end), 2);
    out[122] = h.slice_code;
    out[123] = h.xyzt_units;
    putf(132, h.slice_duration);
    putf(136, h.toffset);
    put_string(148, h.descrip, 80);
    put_string(228, h.aux_file, 24);
    put(252, uint16_t(h.qform_code), 2);
    put(254, uint16_t(h.sform_code), 2);
    putf(256, h.quatern_b);
    putf(260, h.quatern_c);
    putf(264, h.quatern_d);
    putf(268, h.qoffset_x);
    putf(272, h.qoffset_y);
    putf(276, h.qoffset_z);
    for (size_t k = 0; k < 4; ++k) {
        putf(280 + 4 * k, h.srow_x[k]);
        putf(296 + 4 * k, h.srow_y[k]);
        putf(312 + 4 * k, h.srow_z[k]);
    }
    put_string(328, h.intent_name, 16);
    std::memcpy(&out[344], "n+1\0", 4);

    const bool is_float = datatype == kNiftiFloat32 || datatype == kNiftiFloat64;
    const bool is_signed = datatype == kNiftiInt8 || datatype == kNiftiInt16 || datatype == kNiftiInt32 || datatype == kNiftiInt64;
    const double lo = is_signed ? -std::ldexp(1.0, 8 * es - 1) : 0.0;
    const double hi = is_signed ? std::ldexp(1.0, 8 * es - 1) - 1 : std::ldexp(1.0, 8 * es) - 1;
    float vmin = INFINITY, vmax = -INFINITY;
    out.reserve(out.size() + v.voxels.size() * size_t(es));
    for (float x : v.voxels) {
        if (datatype == kNiftiFloat32) {
            uint32_t bits;
            std::memcpy(&bits, &x, 4);
            detail::append_uint(out, bits, 4);
        } else if (datatype == kNiftiFloat64) {
            const double d = x;
            uint64_t bits;
            std::memcpy(&bits, &d, 8);
            detail::append_uint(out, bits, 8);
        } else {
            const double r = std::nearbyint(double(x));
            if (!(r >= lo && r <= hi))
                throw Error(path + ": value " + std::to_string(x) + " does not fit NIfTI datatype " + std::to_string(datatype));
            detail::append_uint(out, r < 0 ? uint64_t(int64_t(r)) : uint64_t(r), es);
        }
        if (std::isfinite(x)) vmin = std::min(vmin, x), vmax = std::max(vmax, x);
    }
    if (!is_float && vmin <= vmax) {  // display range for viewers
        putf(124, vmax);
        putf(128, vmin);
    }
    const std::string e = image_extension(path);
    write_file_atomic(path, e == ".gz" || e == ".nii.gz" ? detail::gzip(out, path) : out);
}

// Index of voxel (slice index s along `axis`, row r, column c) for a slice as volume_slice
// lays it out.
inline size_t slice_voxel(const Volume& v, int axis, int64_t s, int64_t r, int64_t c) {
    int64_t x, y, z;
    if (axis == 0) x = s, y = c, z = r;
    else if (axis == 1) x = c, y = s, z = r;
    else x = c, y = r, z = s;
    return size_t(x + v.nx * (y + v.ny * z));
}

inline void slice_shape(const Volume& v, int axis, int64_t& height, int64_t& width, int64_t& count) {
    if (axis < 0 || axis > 2) throw Error("slice axis must be 0, 1 or 2, got " + std::to_string(axis));
    const int64_t n[3] = {v.nx, v.ny, v.nz};
    count = n[axis];
    width = axis == 0 ? v.ny : v.nx;
    height = axis == 2 ? v.ny : v.nz;
}

inline Image volume_slice(const Volume& v, int axis, int64_t index) {
    int64_t H, W, n;
    slice_shape(v, axis, H, W, n);
    if (index < 0 || index >= n) throw Error("slice " + std::to_string(index) + " out of range [0, " + std::to_string(n) + ")");
    Image img{H, W, std::vector<float>(size_t(H * W))};
    for (int64_t r = 0; r < H; ++r)
        for (int64_t c = 0; c < W; ++c) img.pixels[size_t(r * W + c)] = v.voxels[slice_voxel(v, axis, index, r, c)];
    return img;
}

inline void set_volume_slice(Volume& v, int axis, int64_t index, const Image& img) {
    int64_t H, W, n;
    slice_shape(v, axis, H, W, n);
    if (index < 0 || index >= n || img.height != H || img.width != W)
        throw Error("slice " + std::to_string(index) + " of " + std::to_string(img.height) + "x" + std::to_string(img.width) +
                    " does not fit the volume's " + std::to_string(n) + " slices of " + std::to_string(H) + "x" +
                    std::to_string(W));
    for (int64_t r = 0; r < H; ++r)
        for (int64_t c = 0; c < W; ++c) v.voxels[slice_voxel(v, axis, index, r, c)] = img.pixels[size_t(r * W + c)];
}

}  // namespace universeg
