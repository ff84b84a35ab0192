// --device cuda, the nvcc side (built with -DUNIVERSEG_CUDA=ON): a CudaModel per call.
#include "cuda_device.hpp"

#include <universeg/cuda/cuda.cuh>

namespace cli {

namespace {

using universeg::cuda::check;

struct Stream {
    cudaStream_t s = nullptr;
    Stream() { check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
    ~Stream() { cudaStreamDestroy(s); }
};

struct Event {
    cudaEvent_t e = nullptr;
    Event() { check(cudaEventCreate(&e), "cudaEventCreate"); }
    ~Event() { cudaEventDestroy(e); }
};

universeg::cuda::Options options(universeg::cuda::Precision precision) {
    universeg::cuda::Options o;
    o.precision = precision;
    return o;
}

}  // namespace

CudaRun cuda_forward_net(const universeg::Network& net, universeg::cuda::Precision precision, const float* query,
                         const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                         int64_t W, float* logits) {
    universeg::cuda::CudaModel gpu(net, options(precision));
    gpu.forward(query, support_images, support_labels, B, S, H, W, logits);
    return {universeg::cuda::device_name(gpu.device()), {}, double(gpu.device_bytes()) / 1048576.0};
}

CudaRun cuda_bench_net(const universeg::Network& net, universeg::cuda::Precision precision, const float* query,
                       const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                       int64_t W, int64_t repeats) {
    const Stream stream;
    universeg::cuda::CudaModel gpu(net, options(precision), stream.s);
    universeg::cuda::check_shape(net, B, S, H, W);
    const int64_t q_bytes = B * H * W * 4, s_bytes = q_bytes * S;
    universeg::cuda::DeviceBuffer q, si, sl, out;
    q.allocate(q_bytes, "benchmark query");
    si.allocate(s_bytes, "benchmark support images");
    sl.allocate(s_bytes, "benchmark support labels");
    out.allocate(q_bytes, "benchmark logits");
    check(cudaMemcpy(q.data(), query, size_t(q_bytes), cudaMemcpyHostToDevice), "cudaMemcpy (benchmark query)");
    check(cudaMemcpy(si.data(), support_images, size_t(s_bytes), cudaMemcpyHostToDevice), "cudaMemcpy (benchmark images)");
    check(cudaMemcpy(sl.data(), support_labels, size_t(s_bytes), cudaMemcpyHostToDevice), "cudaMemcpy (benchmark labels)");
    auto f = [](const universeg::cuda::DeviceBuffer& b) { return reinterpret_cast<float*>(b.data()); };
    gpu.forward_device(f(q), f(si), f(sl), B, S, H, W, f(out));  // warm-up: plans, allocates, picks GEMM kernels
    gpu.synchronize();
    const Event start, stop;
    CudaRun r{universeg::cuda::device_name(gpu.device()), {}, double(gpu.device_bytes()) / 1048576.0};
    for (int64_t i = 0; i < repeats; ++i) {
        check(cudaEventRecord(start.e, stream.s), "cudaEventRecord");
        gpu.forward_device(f(q), f(si), f(sl), B, S, H, W, f(out));
        check(cudaEventRecord(stop.e, stream.s), "cudaEventRecord");
        check(cudaEventSynchronize(stop.e), "cudaEventSynchronize");
        float ms = 0;
        check(cudaEventElapsedTime(&ms, start.e, stop.e), "cudaEventElapsedTime");
        r.ms.push_back(double(ms));
    }
    return r;
}

}  // namespace cli
