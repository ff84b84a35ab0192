// universeg/cuda/cuda.cuh - UniverSeg on an NVIDIA GPU: cuBLAS GEMMs for the convolutions, small
// kernels of its own for the rest. Compiled by nvcc only; the CPU headers never include it.
//
//   #include <universeg/universeg.hpp>   // for universeg::Model (nvcc parses Eigen: slow, noisy),
//   #include <universeg/cuda/cuda.cuh>     // or pass model.network() from a .cpp (core/network.hpp)
//
//   universeg::cuda::CudaModel gpu(model);                                   // weights to the current GPU
//   gpu.forward(query, images, labels, B, S, H, W, logits);                  // host arrays, synchronous
//   gpu.forward_device(d_query, d_images, d_labels, B, S, H, W, d_logits);   // device arrays, async
//   universeg::cuda::Options o;
//   o.precision = universeg::cuda::Precision::tf32;                           // or bf16; default fp32
//   universeg::cuda::CudaModel fast(model, o, stream);                        // queue on a caller's stream
//
// What runs is planned by cuda_plan.hpp (the CPU engine's exact algebra: the target half of
// each cross conv once per query, the new target from W_V * mean_i V_i, supports in chunks)
// and sequenced by cuda_ops.hpp's run_plan; this header is its CUDA backend. Per 3x3
// convolution: im2col into the workspace's "col" buffer, then one cublasGemmStridedBatchedEx
// over the chunk's images. Kernels of its own (one thread per output element, the element
// arithmetic shared with the CPU tests through cuda_ops.hpp) do bias + LeakyReLU, 2x2 max pool,
// bilinear x2 (align_corners=True) + concat, (image, label) packing, the mean over supports
// (summed in support order: deterministic) and the 1x1 output conv.
//
// Memory: the weights go to the device once (constructor). The workspace is one allocation
// that grows to the largest shape seen (cuda::Workspace) and holds cuBLAS's workspace too, so
// after a first call of the largest shape no call allocates. All work runs on one stream.
//
// Precision: fp32 by default with TF32 off (CUBLAS_DEFAULT_MATH and CUBLAS_COMPUTE_32F, which
// does not let cuBLAS lower fp32 inputs), matching the CPU path to 1e-4. Precision::tf32 uses
// CUBLAS_COMPUTE_32F_FAST_TF32 for every GEMM; Precision::bf16 feeds the per-support GEMMs
// bf16 col matrices and weights (fp32 accumulation) and keeps the target path in fp32.
//
// Errors: every failing CUDA or cuBLAS call throws universeg::Error naming the call (and, for a
// GEMM, the block and convolution). A CudaModel is not thread-safe: one per host thread.
#pragma once

#include "ops.hpp"
#include "plan.hpp"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

namespace universeg {
namespace cuda {

inline void check(cudaError_t e, const std::string& call) {
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();  // clear a non-sticky error so later checks report their own
    throw Error(call + " failed: " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}

inline void check(cublasStatus_t s, const std::string& call) {
    if (s == CUBLAS_STATUS_SUCCESS) return;
    throw Error(call + " failed: " + cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

// Number of CUDA devices this process sees; 0 without a driver or a device.
inline int visible_devices() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

inline std::string device_name(int device) {
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties(device " + std::to_string(device) + ")");
    return prop.name;
}

namespace gpu {

constexpr int kThreads = 256;

inline dim3 grid(int64_t pixels, int64_t y = 1, int64_t z = 1) {
    return dim3(unsigned((pixels + kThreads - 1) / kThreads), unsigned(y), unsigned(z));
}

inline dim3 grid_1d(int64_t n) { return dim3(unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxGrid))); }

inline void launched(const char* kernel) { check(cudaGetLastError(), std::string("kernel launch ") + kernel); }

// Each kernel computes one output element per thread with cuda_ops.hpp's op:: functions (but
// im2col3x3_x4, below): blockIdx.x/threadIdx.x walk the pixels, blockIdx.y the channels,
// blockIdx.z the images.

__device__ inline int pixel() { return int(blockIdx.x * blockDim.x + threadIdx.x); }

template <class T>
__device__ inline T from_float(float v);
template <>
__device__ inline float from_float<float>(float v) { return v; }
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <class T>
__global__ void im2col3x3(T* __restrict__ col, const float* __restrict__ in, const float* __restrict__ addend, int C,
                          int H, int W) {
    const int p = pixel();
    if (p >= H * W) return;
    const int64_t img = blockIdx.z;
    const int row = int(blockIdx.y);
    col[op::im2col_index(C, H * W, img, row, p)] = from_float<T>(op::im2col_value(in, addend, C, H, W, img, row, p));
}

// The fast im2col where W % 4 == 0 (every v1 layer): one thread takes 4 neighbouring pixels of
// one channel, loads their 3x6 neighbourhood once (op::im2col_neighbourhood) and writes all 9
// taps with vector stores; the one-element-per-thread kernel above ran at a quarter of the
// memory bandwidth.
template <class T>
struct Store4;
template <>
struct Store4<float> {
    __device__ static void at(float* dst, float a, float b, float c, float d) {
        *reinterpret_cast<float4*>(dst) = make_float4(a, b, c, d);
    }
};
template <>
struct Store4<__nv_bfloat16> {
    __device__ static void at(__nv_bfloat16* dst, float a, float b, float c, float d) {
        __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
        uint2 u;
        u.x = *reinterpret_cast<const unsigned*>(&lo);
        u.y = *reinterpret_cast<const unsigned*>(&hi);
        *reinterpret_cast<uint2*>(dst) = u;
    }
};

template <class T>
__global__ void im2col3x3_x4(T* __restrict__ col, const float* __restrict__ in, const float* __restrict__ addend, int C,
                             int H, int W) {
    const int q = pixel(), HW = H * W;
    if (q >= HW / 4) return;
    const int c = int(blockIdx.y);
    const int64_t img = blockIdx.z;
    float v[3][6];
    op::im2col_neighbourhood(in, addend, C, H, W, img, c, q, v);
    T* out = col + op::im2col_index(C, HW, img, c * 9, 4 * q);
#pragma unroll
    for (int ky = 0; ky < 3; ++ky)
#pragma unroll
        for (int kx = 0; kx < 3; ++kx)
            Store4<T>::at(out + int64_t(ky * 3 + kx) * HW, v[ky][kx], v[ky][kx + 1], v[ky][kx + 2], v[ky][kx + 3]);
}

__global__ void bias_act(float* __restrict__ x, const float* __restrict__ bias, int C, int HW, bool leaky) {
    const int p = pixel();
    if (p >= HW) return;
    float* v = x + (int64_t(blockIdx.z) * C + blockIdx.y) * HW + p;
    *v = op::bias_act_value(*v, bias[blockIdx.y], leaky);
}

__global__ void maxpool2x2(float* __restrict__ dst, const float* __restrict__ src, int C, int H, int W) {
    const int p = pixel(), HWo = H / 2 * (W / 2);
    if (p >= HWo) return;
    const int64_t plane = int64_t(blockIdx.z) * C + blockIdx.y;
    dst[plane * HWo + p] = op::maxpool_value(src, H, W, plane, p);
}

__global__ void up_concat(float* __restrict__ dst, const float* __restrict__ low, const float* __restrict__ skip, int c,
                          int cs, int h, int w) {
    const int p = pixel();
    if (p >= 4 * h * w) return;
    const int64_t img = blockIdx.z;
    const int ch = int(blockIdx.y);
    dst[(img * (c + cs) + ch) * 4 * h * w + p] = op::up_concat_value(low, skip, c, cs, h, w, img, ch, p);
}

__global__ void pack_pairs(float* __restrict__ v, const float* __restrict__ images, const float* __restrict__ labels,
                           int HW) {
    const int p = pixel();
    if (p >= HW) return;
    const int64_t i = blockIdx.z;
    v[2 * i * HW + p] = images[i * HW + p];
    v[(2 * i + 1) * HW + p] = labels[i * HW + p];
}

__global__ void accumulate(float* __restrict__ sum, const float* __restrict__ src, int n, int64_t floats, bool first,
                           float divide_by) {
    for (int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; j < floats; j += int64_t(gridDim.x) * blockDim.x)
        sum[j] = op::accumulate_value(sum, src, n, floats, first, divide_by, j);
}

__global__ void conv1x1_out(float* __restrict__ logits, const float* __restrict__ t, const float* __restrict__ w,
                            const float* __restrict__ bias, int C, int HW) {
    const int p = pixel();
    if (p < HW) logits[p] = op::conv1x1_value(t, w, bias, C, HW, p);
}

// The backend of cuda::run_plan that queues kernels and GEMMs on one stream.
struct Backend {
    cudaStream_t stream;
    cublasHandle_t blas;
    char* workspace;
    const float* weights;
    const __nv_bfloat16* weights_bf16;
    bool tf32;

    char* arena() { return workspace; }
    const float* weight(int64_t offset) const { return weights + offset; }

    void pack_pairs(float* v, const float* images, const float* labels, int64_t S, int64_t HW) {
        gpu::pack_pairs<<<grid(HW, 1, S), kThreads, 0, stream>>>(v, images, labels, int(HW));
        launched("pack_pairs");
    }
    // Buffers are kAlign-aligned and each image's rows hold h*w (a multiple of 4 where the
    // 4-pixel form runs) elements, so every 4-pixel group starts on a vector boundary.
    template <class T>
    void im2col_as(T* col, const float* in, const float* addend, int64_t C, int64_t h, int64_t w, int64_t n) {
        if (w % 4 == 0)
            im2col3x3_x4<<<grid(h * w / 4, C, n), kThreads, 0, stream>>>(col, in, addend, int(C), int(h), int(w));
        else
            im2col3x3<<<grid(h * w, 9 * C, n), kThreads, 0, stream>>>(col, in, addend, int(C), int(h), int(w));
        launched("im2col3x3");
    }
    void im2col(void* col, const float* in, const float* addend, int64_t C, int64_t h, int64_t w, int64_t n, bool bf16) {
        if (bf16) im2col_as(static_cast<__nv_bfloat16*>(col), in, addend, C, h, w, n);
        else im2col_as(static_cast<float*>(col), in, addend, C, h, w, n);
    }
    // C = col * weights as planned by g (column-major, see cuda_plan.hpp), for `batch` images.
    void gemm(const Gemm& g, int64_t batch, const void* col, bool bf16, const ConvSlot& w, float* c, const std::string& block,
              const char* conv) {
        const float one = 1.0f, zero = 0.0f;
        const cudaDataType type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
        const void* b = bf16 ? static_cast<const void*>(weights_bf16 + w.weight_bf16) : weights + w.weight;
        const cublasComputeType_t compute = !bf16 && tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        const cublasStatus_t s = cublasGemmStridedBatchedEx(blas, CUBLAS_OP_N, CUBLAS_OP_N, g.m, g.n, g.k, &one, col, type, g.m,
                                                            g.stride_a, b, type, g.k, 0, &zero, c, CUDA_R_32F, g.m, g.stride_c,
                                                            int(batch), compute, CUBLAS_GEMM_DEFAULT);
        if (s != CUBLAS_STATUS_SUCCESS)
            check(s, "cublasGemmStridedBatchedEx (" + block + " " + conv + ", m=" + std::to_string(g.m) + " n=" +
                         std::to_string(g.n) + " k=" + std::to_string(g.k) + " batch=" + std::to_string(batch) + ")");
    }
    void bias_act(float* x, const float* bias, int64_t C, int64_t hw, int64_t n, bool leaky) {
        gpu::bias_act<<<grid(hw, C, n), kThreads, 0, stream>>>(x, bias, int(C), int(hw), leaky);
        launched("bias_act");
    }
    void maxpool(float* dst, const float* src, int64_t C, int64_t h, int64_t w, int64_t n) {
        maxpool2x2<<<grid(h * w / 4, C, n), kThreads, 0, stream>>>(dst, src, int(C), int(h), int(w));
        launched("maxpool2x2");
    }
    void up_concat(float* dst, const float* low, const float* skip, int64_t c, int64_t cs, int64_t h, int64_t w, int64_t n) {
        gpu::up_concat<<<grid(4 * h * w, c + cs, n), kThreads, 0, stream>>>(dst, low, skip, int(c), int(cs), int(h), int(w));
        launched("up_concat");
    }
    void accumulate(float* sum, const float* src, int64_t n, int64_t floats, bool first, int64_t divide_by) {
        gpu::accumulate<<<grid_1d(floats), kThreads, 0, stream>>>(sum, src, int(n), floats, first, float(divide_by));
        launched("accumulate");
    }
    void conv1x1_out(float* logits, const float* t, const ConvSlot& w, int64_t C, int64_t HW) {
        gpu::conv1x1_out<<<grid(HW), kThreads, 0, stream>>>(logits, t, weights + w.weight, weights + w.bias, int(C), int(HW));
        launched("conv1x1_out");
    }
};

}  // namespace gpu

// Device memory owned by one object; reallocation frees first and does not copy.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() {
        if (p_) cudaFree(p_);
    }

    void allocate(int64_t bytes, const char* what) {
        if (p_) {
            void* old = p_;
            p_ = nullptr;
            bytes_ = 0;
            check(cudaFree(old), std::string("cudaFree (") + what + ")");
        }
        if (bytes <= 0) return;
        check(cudaMalloc(&p_, size_t(bytes)), "cudaMalloc (" + std::to_string(bytes) + " bytes for the " + what + ")");
        bytes_ = bytes;
    }
    char* data() const { return static_cast<char*>(p_); }
    int64_t bytes() const { return bytes_; }

private:
    void* p_ = nullptr;
    int64_t bytes_ = 0;
};

class CudaModel {
public:
    // The model on the current CUDA device. `stream` (default: the legacy default stream) is
    // where every call queues its work; see set_stream.
    explicit CudaModel(Network net, Options options = {}, cudaStream_t stream = nullptr)
        : net_(std::move(net)), opt_(options), stream_(stream) {
        check_network(net_);
        int count = 0;
        check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
        if (count < 1) throw Error("no CUDA device is visible (cudaGetDeviceCount found none)");
        check(cudaGetDevice(&device_), "cudaGetDevice");
        layout_ = weight_layout(net_, opt_.precision == Precision::bf16);
        std::vector<float> floats;
        std::vector<uint16_t> halves;
        pack_weights(net_, layout_, floats, halves);
        weights_.allocate(layout_.floats * 4, "weights");
        check(cudaMemcpy(weights_.data(), floats.data(), floats.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy (weights)");
        if (!halves.empty()) {
            weights_bf16_.allocate(layout_.halves * 2, "bf16 weights");
            check(cudaMemcpy(weights_bf16_.data(), halves.data(), halves.size() * 2, cudaMemcpyHostToDevice),
                  "cudaMemcpy (bf16 weights)");
        }
        check(cublasCreate(&blas_.h), "cublasCreate");
        check(cublasSetMathMode(blas_.h, CUBLAS_DEFAULT_MATH), "cublasSetMathMode (CUBLAS_DEFAULT_MATH)");
    }

    // From a universeg::Model (any type with a network() accessor: this header needs neither
    // core/model.hpp nor Eigen).
    template <class ModelT, class = decltype(std::declval<const ModelT&>().network())>
    explicit CudaModel(const ModelT& model, Options options = {}, cudaStream_t stream = nullptr)
        : CudaModel(model.network(), options, stream) {}

    CudaModel(const CudaModel&) = delete;
    CudaModel& operator=(const CudaModel&) = delete;

    // logits (B,1,H,W) for host arrays: query (B,1,H,W), supports (B,S,1,H,W). Checks the
    // inputs like Model::forward, copies them in, runs, copies the logits back and waits.
    void forward(const float* query, const float* support_images, const float* support_labels, int64_t B, int64_t S,
                 int64_t H, int64_t W, float* logits) {
        const Guard guard(device_);
        const Plan& p = prepare(B, S, H, W);
        const int64_t HW = H * W;
        check_finite(query, B * HW, "query");
        check_finite(support_images, B * S * HW, "support images");
        check_finite(support_labels, B * S * HW, "support labels");
        float *q = at("query"), *si = at("support_images"), *sl = at("support_labels"), *out = at("logits");
        check(cudaMemcpyAsync(q, query, size_t(B * HW) * 4, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync (query)");
        check(cudaMemcpyAsync(si, support_images, size_t(B * S * HW) * 4, cudaMemcpyHostToDevice, stream_),
              "cudaMemcpyAsync (support images)");
        check(cudaMemcpyAsync(sl, support_labels, size_t(B * S * HW) * 4, cudaMemcpyHostToDevice, stream_),
              "cudaMemcpyAsync (support labels)");
        run(p, q, si, sl, out);
        check(cudaMemcpyAsync(logits, out, size_t(B * HW) * 4, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync (logits)");
        check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize (forward)");
    }

    // The same on device arrays, queued on stream() without waiting; the values are not checked
    // (the host would have to read them). The workspace is shared: one call at a time per model.
    void forward_device(const float* query, const float* support_images, const float* support_labels, int64_t B, int64_t S,
                        int64_t H, int64_t W, float* logits) {
        const Guard guard(device_);
        const Plan& p = prepare(B, S, H, W);
        expect_device(query, "query");
        expect_device(support_images, "support images");
        expect_device(support_labels, "support labels");
        expect_device(logits, "logits");
        run(p, query, support_images, support_labels, logits);
    }

    void synchronize() const { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

    void set_stream(cudaStream_t stream) { stream_ = stream; }
    cudaStream_t stream() const { return stream_; }
    int device() const { return device_; }
    const Network& net() const { return net_; }
    const Options& options() const { return opt_; }
    const Workspace& workspace() const { return ws_; }  // the last call's plan and the arena's capacity
    int64_t device_bytes() const { return weights_.bytes() + weights_bf16_.bytes() + arena_.bytes(); }

private:
    struct Guard {  // makes the model's device current for one call, then restores the caller's
        int previous = -1;
        explicit Guard(int device) {
            check(cudaGetDevice(&previous), "cudaGetDevice");
            if (previous == device) previous = -1;
            else check(cudaSetDevice(device), "cudaSetDevice (" + std::to_string(device) + ")");
        }
        ~Guard() {
            if (previous >= 0) cudaSetDevice(previous);
        }
    };
    struct Blas {
        cublasHandle_t h = nullptr;
        ~Blas() {
            if (h) cublasDestroy(h);
        }
    };

    static void expect_device(const void* p, const char* what) {
        cudaPointerAttributes a{};
        check(cudaPointerGetAttributes(&a, p), std::string("cudaPointerGetAttributes (") + what + ")");
        if (a.type != cudaMemoryTypeDevice && a.type != cudaMemoryTypeManaged)
            throw Error(std::string("forward_device: ") + what +
                        " is not device memory (forward_device takes device arrays, forward takes host arrays)");
    }

    const Plan& prepare(int64_t B, int64_t S, int64_t H, int64_t W) {
        if (const int64_t grow = ws_.prepare(net_, opt_, B, S, H, W)) {
            ws_.capacity = 0;
            arena_.allocate(grow, "workspace");
            ws_.capacity = grow;
        }
        return ws_.plan;
    }

    float* at(const char* region) const { return reinterpret_cast<float*>(arena_.data() + ws_.plan.region(region).offset); }

    void run(const Plan& p, const float* query, const float* support_images, const float* support_labels, float* logits) {
        check(cublasSetStream(blas_.h, stream_), "cublasSetStream");
        // After cublasSetStream, which resets cuBLAS to its own workspace pool.
        const Region& cw = p.region("cublas");
        if (cw.bytes > 0)
            check(cublasSetWorkspace(blas_.h, arena_.data() + cw.offset, size_t(cw.bytes)), "cublasSetWorkspace");
        gpu::Backend be{stream_,
                        blas_.h,
                        arena_.data(),
                        reinterpret_cast<const float*>(weights_.data()),
                        reinterpret_cast<const __nv_bfloat16*>(weights_bf16_.data()),
                        opt_.precision == Precision::tf32};
        run_plan(be, p, layout_, query, support_images, support_labels, logits);
    }

    Network net_;
    Options opt_;
    WeightLayout layout_;
    int device_ = 0;
    cudaStream_t stream_ = nullptr;
    DeviceBuffer weights_, weights_bf16_, arena_;
    Blas blas_;
    Workspace ws_;
};

}  // namespace cuda
}  // namespace universeg
