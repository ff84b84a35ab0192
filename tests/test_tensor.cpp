// Float conversions and shape checks from tensor.hpp, against values worked out by hand
// from the IEEE 754 binary16 and bfloat16 bit layouts.
#include <catch2/catch.hpp>
#include <universeg/core/tensor.hpp>

#include <cmath>
#include <limits>

using namespace universeg;

TEST_CASE("half <-> float on hand-picked values") {
    CHECK(half_to_float(0x3C00) == 1.0f);
    CHECK(half_to_float(0xC000) == -2.0f);
    CHECK(half_to_float(0x7BFF) == 65504.0f);
    CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
    CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
    CHECK(half_to_float(0x3555) == 0.333251953125f);
    CHECK(std::isinf(half_to_float(0x7C00)));
    CHECK(std::isnan(half_to_float(0x7E00)));
    CHECK(std::signbit(half_to_float(0x8000)));

    CHECK(float_to_half(1.0f) == 0x3C00);
    CHECK(float_to_half(65504.0f) == 0x7BFF);
    CHECK(float_to_half(65520.0f) == 0x7C00);                  // ties to even rounds up to inf
    CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);  // tie, even stays
    CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);  // tie, odd rounds up
    CHECK(float_to_half(std::ldexp(1.0f, -24)) == 0x0001);
    CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0x0000);     // tie to even zero
    CHECK(float_to_half(std::ldexp(1.5f, -25)) == 0x0001);
    CHECK(float_to_half(std::numeric_limits<float>::infinity()) == 0x7C00);
    CHECK((float_to_half(std::nanf("")) & 0x7C00) == 0x7C00);
}

TEST_CASE("every finite half survives a round trip through float") {
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if ((h & 0x7C00) == 0x7C00) continue;
        REQUIRE(float_to_half(half_to_float(uint16_t(h))) == h);
    }
}

TEST_CASE("bfloat16 <-> float") {
    CHECK(bf16_to_float(0x3F80) == 1.0f);
    CHECK(bf16_to_float(0xC040) == -3.0f);
    CHECK(float_to_bf16(1.0f) == 0x3F80);
    CHECK(float_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3F80);      // tie, even stays
    CHECK(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3F82);  // tie, odd rounds up
    CHECK(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

TEST_CASE("checked_numel refuses overflow and negative sizes") {
    CHECK(checked_numel({2, 3, 4}, 100, "x") == 24);
    CHECK(checked_numel({}, 100, "x") == 1);
    CHECK(checked_numel({0, INT64_MAX}, 100, "x") == 0);
    CHECK_THROWS_AS(checked_numel({1 << 22, 1 << 22, 1 << 22}, INT64_MAX, "x"), Error);
    CHECK_THROWS_AS(checked_numel({-1}, 100, "x"), Error);
    CHECK_THROWS_WITH(checked_numel({11, 10}, 100, "weights.pt"), Catch::Contains("weights.pt"));
}
