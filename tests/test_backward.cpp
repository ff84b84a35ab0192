// Every operator's backward pass against central finite differences of its forward, in double,
// on small odd shapes. Each check takes L = sum(out * R) for a fixed random R, so dL/dout = R,
// and compares the analytic gradient of every input and parameter with (L(x+h) - L(x-h)) / 2h.
#include <catch2/catch.hpp>
#include <universeg/core/ops.hpp>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

using namespace universeg;

namespace {

using Vec = std::vector<double>;

Vec random_vector(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    Vec v(n);
    for (auto& x : v) x = u(rng);
    return v;
}

double dot(const Vec& a, const Vec& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
    return s;
}

// Checks `analytic` (the gradient of loss() with respect to x) against central differences,
// perturbing x in place. Tolerance is relative to the gradient's scale.
void check_gradient(Vec& x, const Vec& analytic, const std::function<double()>& loss, const char* what) {
    INFO(what);
    REQUIRE(analytic.size() == x.size());
    const double h = 1e-6;
    double scale = 1e-3;
    for (double g : analytic) scale = std::max(scale, std::abs(g));
    for (size_t i = 0; i < x.size(); ++i) {
        const double keep = x[i];
        x[i] = keep + h;
        const double up = loss();
        x[i] = keep - h;
        const double down = loss();
        x[i] = keep;
        INFO("element " << i);
        CHECK(std::abs((up - down) / (2 * h) - analytic[i]) <= 1e-7 * scale);
    }
}

}  // namespace

TEST_CASE("conv2d_backward matches finite differences for K = 1, 3, 5") {
    for (int K : {1, 3, 5}) {
        const int N = 2, Cin = 3, Cout = 2, H = 5, W = 7;
        Vec in = random_vector(size_t(N * Cin * H * W), 1), w = random_vector(size_t(Cout * Cin * K * K), 2),
            b = random_vector(size_t(Cout), 3), R = random_vector(size_t(N * Cout * H * W), 4);
        auto loss = [&] {
            Vec out(R.size());
            conv2d_forward(out.data(), in.data(), w.data(), b.data(), N, Cin, Cout, H, W, K);
            return dot(out, R);
        };
        // Start from non-zero buffers: the backward must add, not overwrite.
        Vec din(in.size(), 0.5), dw(w.size(), -0.25), db(b.size(), 1.0);
        conv2d_backward(din.data(), dw.data(), db.data(), R.data(), in.data(), w.data(), N, Cin, Cout, H, W, K);
        for (auto& v : din) v -= 0.5;
        for (auto& v : dw) v += 0.25;
        for (auto& v : db) v -= 1.0;
        INFO("K = " << K);
        check_gradient(in, din, loss, "d input");
        check_gradient(w, dw, loss, "d weight");
        check_gradient(b, db, loss, "d bias");
    }
}

TEST_CASE("conv2d_backward sums chunks and groups exactly on images larger than one chunk") {
    // 3 x 47 x 53 = 2491 pixels per image: two im2col chunks, so partial sums are combined.
    const int N = 3, Cin = 2, Cout = 2, H = 47, W = 53, K = 3;
    Vec in = random_vector(size_t(N * Cin * H * W), 5), w = random_vector(size_t(Cout * Cin * K * K), 6),
        b = random_vector(size_t(Cout), 7), R = random_vector(size_t(N * Cout * H * W), 8);
    Vec din(in.size()), dw(w.size()), db(b.size());
    conv2d_backward(din.data(), dw.data(), db.data(), R.data(), in.data(), w.data(), N, Cin, Cout, H, W, K);
    // Independent sums: dw[o][c][ky][kx] = sum_n,y,x R[n][o][y][x] in[n][c][y+ky-1][x+kx-1].
    for (int o = 0; o < Cout; ++o) {
        double sb = 0;
        for (int n = 0; n < N; ++n)
            for (int p = 0; p < H * W; ++p) sb += R[size_t((n * Cout + o) * H * W + p)];
        CHECK(db[size_t(o)] == Approx(sb).epsilon(1e-12));
        for (int c = 0; c < Cin; ++c)
            for (int ky = 0; ky < K; ++ky)
                for (int kx = 0; kx < K; ++kx) {
                    double s = 0;
                    for (int n = 0; n < N; ++n)
                        for (int y = 0; y < H; ++y)
                            for (int x = 0; x < W; ++x) {
                                const int yy = y + ky - 1, xx = x + kx - 1;
                                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                                s += R[size_t(((n * Cout + o) * H + y) * W + x)] * in[size_t(((n * Cin + c) * H + yy) * W + xx)];
                            }
                    CHECK(dw[size_t(((o * Cin + c) * K + ky) * K + kx)] == Approx(s).epsilon(1e-12));
                }
    }
}

TEST_CASE("cross_conv_backward matches finite differences") {
    const int B = 2, S = 3, Ct = 2, Cs = 3, Cout = 2, H = 5, W = 3, K = 3;
    Vec t = random_vector(size_t(B * Ct * H * W), 11), v = random_vector(size_t(B * S * Cs * H * W), 12),
        w = random_vector(size_t(Cout * (Ct + Cs) * K * K), 13), b = random_vector(size_t(Cout), 14),
        R = random_vector(size_t(B * S * Cout * H * W), 15);
    auto loss = [&] {
        Vec out(R.size());
        cross_conv_forward(out.data(), t.data(), v.data(), w.data(), b.data(), B, S, Ct, Cs, Cout, H, W, K);
        return dot(out, R);
    };
    Vec dt(t.size()), dv(v.size()), dw(w.size()), db(b.size());
    cross_conv_backward(dt.data(), dv.data(), dw.data(), db.data(), R.data(), t.data(), v.data(), w.data(), B, S, Ct,
                        Cs, Cout, H, W, K);
    check_gradient(t, dt, loss, "d target");
    check_gradient(v, dv, loss, "d support");
    check_gradient(w, dw, loss, "d weight");
    check_gradient(b, db, loss, "d bias");
}

TEST_CASE("leaky_relu_backward matches finite differences and accepts the output for the sign") {
    const int n = 37;
    Vec x = random_vector(n, 21), R = random_vector(n, 22);
    auto loss = [&] {
        Vec out(x.size());
        leaky_relu_forward(out.data(), x.data(), n);
        return dot(out, R);
    };
    Vec dx(x.size()), dx_from_out(x.size()), y(x.size());
    leaky_relu_backward(dx.data(), R.data(), x.data(), n);
    leaky_relu_forward(y.data(), x.data(), n);
    leaky_relu_backward(dx_from_out.data(), R.data(), y.data(), n);
    CHECK(dx == dx_from_out);
    check_gradient(x, dx, loss, "d input");
}

TEST_CASE("maxpool2x2_backward matches finite differences and routes ties to the first maximum") {
    const int N = 3, H = 6, W = 10;
    Vec x = random_vector(size_t(N * H * W), 31), R = random_vector(size_t(N * H * W / 4), 32);
    auto loss = [&] {
        Vec out(R.size());
        maxpool2x2_forward(out.data(), x.data(), N, H, W);
        return dot(out, R);
    };
    Vec dx(x.size());
    maxpool2x2_backward(dx.data(), R.data(), x.data(), N, H, W);
    check_gradient(x, dx, loss, "d input");

    const Vec tie{1, 2, 2, 0}, d{5};  // window [[1, 2], [2, 0]]: the top-right 2 comes first
    Vec dtie(4);
    maxpool2x2_backward(dtie.data(), d.data(), tie.data(), 1, 2, 2);
    CHECK(dtie == Vec{0, 5, 0, 0});
}

TEST_CASE("upsample2x_backward matches finite differences") {
    for (int H : {1, 3}) {
        const int N = 2, W = 5;
        Vec x = random_vector(size_t(N * H * W), 41), R = random_vector(size_t(N * 4 * H * W), 42);
        auto loss = [&] {
            Vec out(R.size());
            upsample2x_forward(out.data(), x.data(), N, H, W);
            return dot(out, R);
        };
        Vec dx(x.size());
        upsample2x_backward(dx.data(), R.data(), N, H, W);
        INFO("H = " << H);
        check_gradient(x, dx, loss, "d input");
    }
}

TEST_CASE("concat_channels_backward and mean_supports_backward match finite differences") {
    const int N = 3, Ca = 2, Cb = 3, HW = 5;
    Vec a = random_vector(size_t(N * Ca * HW), 51), b = random_vector(size_t(N * Cb * HW), 52),
        R = random_vector(size_t(N * (Ca + Cb) * HW), 53);
    auto cat_loss = [&] {
        Vec out(R.size());
        concat_channels_forward(out.data(), a.data(), b.data(), N, Ca, Cb, HW);
        return dot(out, R);
    };
    Vec da(a.size()), dbb(b.size());
    concat_channels_backward(da.data(), dbb.data(), R.data(), N, Ca, Cb, HW);
    check_gradient(a, da, cat_loss, "d a");
    check_gradient(b, dbb, cat_loss, "d b");

    const int B = 2, S = 3, inner = 7;
    Vec x = random_vector(size_t(B * S * inner), 54), Rm = random_vector(size_t(B * inner), 55);
    auto mean_loss = [&] {
        Vec out(Rm.size());
        mean_supports_forward(out.data(), x.data(), B, S, inner);
        return dot(out, Rm);
    };
    Vec dx(x.size());
    mean_supports_backward(dx.data(), Rm.data(), B, S, inner);
    check_gradient(x, dx, mean_loss, "d input");
}
