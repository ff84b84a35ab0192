// bench_cuda - the CUDA backend's speed on this machine's GPU (v1 architecture, random weights):
//
//   bench_cuda [--size H] [--batch B] [--repeats N] [--supports 1,2,4,...]
//
// 1. Forward pass per precision (fp32 with TF32 off, tf32, bf16) and support size: median ms
//    (CUDA events, inputs already on the GPU), ms per support (the cost should be linear in S),
//    and TFLOP/s of the GEMMs the exact algebra runs (cuda::Plan::gemm_flops).
// 2. Each v1 support-path GEMM shape alone (cublasGemmStridedBatchedEx at the plan's chunk):
//    how far each layer's GEMM is from the GPU's peak.
// `universeg bench --device cuda` times a real checkpoint; bench/compare_cuda.py adds PyTorch.
#include <universeg/cuda/cuda.cuh>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

using namespace universeg;

namespace {

struct Event {
    cudaEvent_t e = nullptr;
    Event() { cuda::check(cudaEventCreate(&e), "cudaEventCreate"); }
    ~Event() { cudaEventDestroy(e); }
};

Network random_v1(uint32_t seed) {
    std::mt19937 rng(seed);
    Network net = Network::shaped(Config::v1());
    for (Conv* c : net.convs()) {
        std::normal_distribution<float> w(0.0f, std::sqrt(2.0f / float(c->in * c->k * c->k))), b(0.0f, 0.05f);
        for (float& v : c->weight) v = w(rng);
        for (float& v : c->bias) v = b(rng);
    }
    return net;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int64_t arg_int(const char* value, const char* name) {
    char* end = nullptr;
    const long long v = std::strtoll(value, &end, 10);
    if (*end || v < 1) throw Error(std::string(name) + " must be a positive integer, got '" + value + "'");
    return v;
}

// Forward passes of `net` at each support size, per precision.
void bench_forward(const Network& net, int64_t B, int64_t H, int64_t repeats, const std::vector<int64_t>& supports) {
    std::printf("%-6s %6s %10s %12s %10s %10s\n", "prec", "S", "median_ms", "ms_per_supp", "TFLOP/s", "device_MB");
    const int64_t max_s = *std::max_element(supports.begin(), supports.end());
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> q(size_t(B * H * H)), s(size_t(B * max_s * H * H)), l(s.size());
    for (float& v : q) v = u(rng);
    for (float& v : s) v = u(rng);
    for (float& v : l) v = u(rng) < 0.3f ? 1.0f : 0.0f;
    cuda::DeviceBuffer dq, ds, dl, dout;
    dq.allocate(int64_t(q.size()) * 4, "query");
    ds.allocate(int64_t(s.size()) * 4, "support images");
    dl.allocate(int64_t(l.size()) * 4, "support labels");
    dout.allocate(int64_t(q.size()) * 4, "logits");
    cuda::check(cudaMemcpy(dq.data(), q.data(), q.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda::check(cudaMemcpy(ds.data(), s.data(), s.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    cuda::check(cudaMemcpy(dl.data(), l.data(), l.size() * 4, cudaMemcpyHostToDevice), "cudaMemcpy");
    auto f = [](const cuda::DeviceBuffer& b) { return reinterpret_cast<float*>(b.data()); };
    for (cuda::Precision p : {cuda::Precision::fp32, cuda::Precision::tf32, cuda::Precision::bf16}) {
        cuda::Options o;
        o.precision = p;
        cuda::CudaModel gpu(net, o);
        for (int64_t S : supports) {
            // Inputs are (B, S, ...) views of the max_s buffers: B = 1 uses a prefix; B > 1 would
            // interleave, which changes values only, not the work.
            gpu.forward_device(f(dq), f(ds), f(dl), B, S, H, H, f(dout));
            gpu.synchronize();
            const Event start, stop;
            std::vector<double> ms;
            for (int64_t i = 0; i < repeats; ++i) {
                cuda::check(cudaEventRecord(start.e, gpu.stream()), "cudaEventRecord");
                gpu.forward_device(f(dq), f(ds), f(dl), B, S, H, H, f(dout));
                cuda::check(cudaEventRecord(stop.e, gpu.stream()), "cudaEventRecord");
                cuda::check(cudaEventSynchronize(stop.e), "cudaEventSynchronize");
                float t = 0;
                cuda::check(cudaEventElapsedTime(&t, start.e, stop.e), "cudaEventElapsedTime");
                ms.push_back(double(t));
            }
            const double m = median(ms);
            std::printf("%-6s %6lld %10.3f %12.4f %10.2f %10.1f\n", cuda::precision_name(p), (long long)S, m,
                        m / double(S), gpu.workspace().plan.gemm_flops / (m * 1e9), double(gpu.device_bytes()) / 1048576.0);
        }
    }
}

// Each support-path GEMM of v1 at S=64 alone, at its planned chunk.
void bench_gemms(const Network& net, int64_t H, int64_t repeats) {
    std::printf("\n%-14s %-8s %6s %6s %6s %6s %6s %10s %9s\n", "block", "conv", "prec", "m", "n", "k", "batch", "ms",
                "TFLOP/s");
    cublasHandle_t h = nullptr;
    cuda::check(cublasCreate(&h), "cublasCreate");
    for (cuda::Precision p : {cuda::Precision::fp32, cuda::Precision::tf32, cuda::Precision::bf16}) {
        cuda::Options o;
        o.precision = p;
        const cuda::Plan plan = cuda::make_plan(net, o, 1, 64, H, H);
        for (const auto* blocks : {&plan.encoder, &plan.decoder})
            for (const cuda::BlockPlan& b : *blocks) {
                if (!b.support_path()) continue;
                for (const cuda::Gemm* g : {&b.cross_v, &b.support}) {
                    const bool bf16 = p == cuda::Precision::bf16;
                    const int64_t esize = bf16 ? 2 : 4;
                    cuda::DeviceBuffer a, w, c;
                    a.allocate(g->batch * g->stride_a * esize, "A");
                    w.allocate(int64_t(g->k) * g->n * esize, "B");
                    c.allocate(g->batch * g->stride_c * 4, "C");
                    cuda::check(cudaMemset(a.data(), 0, size_t(a.bytes())), "cudaMemset");
                    cuda::check(cudaMemset(w.data(), 0, size_t(w.bytes())), "cudaMemset");
                    const float one = 1.0f, zero = 0.0f;
                    const cudaDataType type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
                    const cublasComputeType_t compute =
                        p == cuda::Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
                    auto once = [&] {
                        cuda::check(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, g->m, g->n, g->k, &one, a.data(),
                                                               type, g->m, g->stride_a, w.data(), type, g->k, 0, &zero,
                                                               c.data(), CUDA_R_32F, g->m, g->stride_c, g->batch, compute,
                                                               CUBLAS_GEMM_DEFAULT),
                                    "cublasGemmStridedBatchedEx");
                    };
                    once();
                    const Event start, stop;
                    std::vector<double> ms;
                    for (int64_t i = 0; i < repeats; ++i) {
                        cuda::check(cudaEventRecord(start.e, nullptr), "cudaEventRecord");
                        once();
                        cuda::check(cudaEventRecord(stop.e, nullptr), "cudaEventRecord");
                        cuda::check(cudaEventSynchronize(stop.e), "cudaEventSynchronize");
                        float t = 0;
                        cuda::check(cudaEventElapsedTime(&t, start.e, stop.e), "cudaEventElapsedTime");
                        ms.push_back(double(t));
                    }
                    const double m = median(ms);
                    std::printf("%-14s %-8s %6s %6d %6d %6d %6d %10.4f %9.2f\n", b.name.c_str(),
                                g == &b.cross_v ? "cross_v" : "support", cuda::precision_name(p), g->m, g->n, g->k,
                                g->batch, m, g->flops() / (m * 1e9));
                }
            }
    }
    cublasDestroy(h);
}

}  // namespace

int main(int argc, char** argv) {
    try {
        int64_t H = 128, B = 1, repeats = 10;
        std::vector<int64_t> supports = {1, 2, 4, 8, 16, 32, 64, 128, 256};
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            if (i + 1 >= argc) throw Error("usage: bench_cuda [--size H] [--batch B] [--repeats N] [--supports 1,8,64]");
            const char* v = argv[++i];
            if (a == "--size") H = arg_int(v, "--size");
            else if (a == "--batch") B = arg_int(v, "--batch");
            else if (a == "--repeats") repeats = arg_int(v, "--repeats");
            else if (a == "--supports") {
                supports.clear();
                std::stringstream ss(v);
                for (std::string s; std::getline(ss, s, ',');) supports.push_back(arg_int(s.c_str(), "--supports"));
            } else {
                throw Error("unknown option " + a);
            }
        }
        if (cuda::visible_devices() == 0) throw Error("no CUDA device is visible");
        std::printf("GPU: %s; v1 (random weights), %lldx%lld, B=%lld, %lld timed runs each\n\n",
                    cuda::device_name(0).c_str(), (long long)H, (long long)H, (long long)B, (long long)repeats);
        const Network net = random_v1(1);
        bench_forward(net, B, H, repeats, supports);
        bench_gemms(net, H, repeats);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_cuda: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
