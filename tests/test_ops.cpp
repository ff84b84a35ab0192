// Reference operators against values worked out by hand, and the im2col convolution against
// a direct six-loop convolution written here independently.
#include <catch2/catch.hpp>
#include <universeg/core/ops.hpp>

#include <random>
#include <vector>

using namespace universeg;

namespace {

std::vector<double> random_vector(size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    std::vector<double> v(n);
    for (auto& x : v) x = u(rng);
    return v;
}

// out[n][o][y][x] = b[o] + sum_{c,ky,kx} w[o][c][ky][kx] * in[n][c][y+ky-p][x+kx-p], zero outside.
std::vector<double> direct_conv(const std::vector<double>& in, const std::vector<double>& w, const std::vector<double>& b,
                                int N, int Cin, int Cout, int H, int W, int K) {
    std::vector<double> out(size_t(N * Cout * H * W));
    const int p = K / 2;
    for (int n = 0; n < N; ++n)
        for (int o = 0; o < Cout; ++o)
            for (int y = 0; y < H; ++y)
                for (int x = 0; x < W; ++x) {
                    double s = b[size_t(o)];
                    for (int c = 0; c < Cin; ++c)
                        for (int ky = 0; ky < K; ++ky)
                            for (int kx = 0; kx < K; ++kx) {
                                const int yy = y + ky - p, xx = x + kx - p;
                                if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
                                s += w[size_t(((o * Cin + c) * K + ky) * K + kx)] * in[size_t(((n * Cin + c) * H + yy) * W + xx)];
                            }
                    out[size_t(((n * Cout + o) * H + y) * W + x)] = s;
                }
    return out;
}

}  // namespace

TEST_CASE("conv2d: a 3x3 box filter counts the in-image neighbours") {
    const std::vector<float> in(12, 1.0f), w(9, 1.0f), b{0.5f};
    std::vector<float> out(12);
    conv2d_forward(out.data(), in.data(), w.data(), b.data(), 1, 1, 1, 3, 4, 3);
    // corners see 4 pixels, edges 6, interior 9; plus the bias
    const std::vector<float> expected{4.5f, 6.5f, 6.5f, 4.5f, 6.5f, 9.5f, 9.5f, 6.5f, 4.5f, 6.5f, 6.5f, 4.5f};
    CHECK(out == expected);
}

TEST_CASE("conv2d: a kernel with one tap shifts the image") {
    // weight 1 at (ky, kx) = (0, 2): out[y][x] = in[y-1][x+1]
    std::vector<float> in(16), w(9, 0.0f), b{0.0f}, out(16);
    for (int i = 0; i < 16; ++i) in[size_t(i)] = float(i + 1);
    w[2] = 1.0f;
    conv2d_forward(out.data(), in.data(), w.data(), b.data(), 1, 1, 1, 4, 4, 3);
    const std::vector<float> expected{0, 0, 0, 0, 2, 3, 4, 0, 6, 7, 8, 0, 10, 11, 12, 0};
    CHECK(out == expected);
}

TEST_CASE("conv2d matches a direct convolution on odd shapes and kernel sizes") {
    struct Case {
        int N, Cin, Cout, H, W, K;
    };
    // 45x50 = 2250 pixels crosses the 2048-pixel im2col chunk boundary.
    for (Case c : {Case{2, 3, 5, 7, 9, 3}, Case{1, 1, 1, 1, 1, 3}, Case{3, 2, 4, 5, 3, 1}, Case{1, 4, 3, 6, 7, 5},
                   Case{1, 2, 3, 45, 50, 3}}) {
        const auto in = random_vector(size_t(c.N * c.Cin * c.H * c.W), 1);
        const auto w = random_vector(size_t(c.Cout * c.Cin * c.K * c.K), 2);
        const auto b = random_vector(size_t(c.Cout), 3);
        std::vector<double> out(size_t(c.N * c.Cout * c.H * c.W));
        conv2d_forward(out.data(), in.data(), w.data(), b.data(), c.N, c.Cin, c.Cout, c.H, c.W, c.K);
        const auto ref = direct_conv(in, w, b, c.N, c.Cin, c.Cout, c.H, c.W, c.K);
        for (size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == Approx(ref[i]).margin(1e-12));
    }
}

TEST_CASE("cross conv is the conv of [target, support_i] for every support") {
    const int B = 2, S = 3, Ct = 2, Cs = 3, F = 4, H = 5, W = 6, HW = H * W;
    const auto t = random_vector(B * Ct * HW, 4), v = random_vector(B * S * Cs * HW, 5);
    const auto w = random_vector(F * (Ct + Cs) * 9, 6), b = random_vector(F, 7);
    std::vector<double> z(B * S * F * HW);
    cross_conv_forward(z.data(), t.data(), v.data(), w.data(), b.data(), B, S, Ct, Cs, F, H, W, 3);
    for (int bi = 0; bi < B; ++bi)
        for (int i = 0; i < S; ++i) {
            std::vector<double> pair(t.begin() + bi * Ct * HW, t.begin() + (bi + 1) * Ct * HW);
            pair.insert(pair.end(), v.begin() + (bi * S + i) * Cs * HW, v.begin() + (bi * S + i + 1) * Cs * HW);
            const auto ref = direct_conv(pair, w, b, 1, Ct + Cs, F, H, W, 3);
            for (int j = 0; j < F * HW; ++j) REQUIRE(z[size_t((bi * S + i) * F * HW + j)] == Approx(ref[size_t(j)]).margin(1e-12));
        }
}

TEST_CASE("leaky relu") {
    const std::vector<float> in{-2.0f, -0.0f, 0.0f, 3.0f};
    std::vector<float> out(4);
    leaky_relu_forward(out.data(), in.data(), 4);
    CHECK(out[0] == Approx(-0.02f));
    CHECK(out[1] == 0.0f);
    CHECK(out[3] == 3.0f);
}

TEST_CASE("max pool 2x2 keeps the largest of each block") {
    const std::vector<float> in{1, 5, 2, 0,   //
                                3, 4, -1, -7,  //
                                -9, -8, 6, 6,  //
                                -6, -5, 6, 7};
    std::vector<float> out(4);
    maxpool2x2_forward(out.data(), in.data(), 1, 4, 4);
    CHECK(out == std::vector<float>{5, 2, -5, 7});
}

TEST_CASE("bilinear x2 with align_corners reproduces linear ramps and corner values") {
    // in[y][x] = 2y + x is linear, so the output is exact: out[y][x] = 2(y/3) + x/3.
    const std::vector<double> ramp{0, 1, 2, 3};
    std::vector<double> out(16);
    upsample2x_forward(out.data(), ramp.data(), 1, 2, 2);
    for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 4; ++x) CHECK(out[size_t(y * 4 + x)] == Approx(2.0 * y / 3.0 + x / 3.0).margin(1e-15));
    // A single hot corner: out = (1 - y/3)(1 - x/3), a product of two tents.
    const std::vector<double> hot{1, 0, 0, 0};
    upsample2x_forward(out.data(), hot.data(), 1, 2, 2);
    for (int y = 0; y < 4; ++y)
        for (int x = 0; x < 4; ++x) CHECK(out[size_t(y * 4 + x)] == Approx((1 - y / 3.0) * (1 - x / 3.0)).margin(1e-15));
    // 1x1 input: every output pixel is that value; 3x1 -> 6x2 keeps the corners.
    const std::vector<double> one{7};
    std::vector<double> four(4);
    upsample2x_forward(four.data(), one.data(), 1, 1, 1);
    CHECK(four == std::vector<double>{7, 7, 7, 7});
    const std::vector<double> col{1, 4, 10};
    std::vector<double> up(12);
    upsample2x_forward(up.data(), col.data(), 1, 3, 1);
    CHECK(up[0] == 1);
    CHECK(up[11] == 10);
    CHECK(up[2] == Approx(1 + 3 * 0.4));  // y=1 -> src 0.4 between rows 0 and 1
}

TEST_CASE("concat puts the first operand's channels first, per image") {
    const std::vector<int> a{1, 2, 3, 4}, b{5, 6, 7, 8};  // N=2 images, one channel of 2 pixels each
    std::vector<int> out(8);
    concat_channels_forward(out.data(), a.data(), b.data(), 2, 1, 1, 2);
    CHECK(out == std::vector<int>{1, 2, 5, 6, 3, 4, 7, 8});
}

TEST_CASE("mean over supports") {
    const std::vector<double> in{1, 2, 3, 4, 5, 6,  //  b=0: supports (1,2) (3,4) (5,6)
                                 0, 0, 0, 3, 3, 3};
    std::vector<double> out(4);
    mean_supports_forward(out.data(), in.data(), 2, 3, 2);
    CHECK(out == std::vector<double>{3, 4, 1, 2});
}

// ---- backward: every gradient against finite differences ----

namespace {

using Vec = std::vector<double>;

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
