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
