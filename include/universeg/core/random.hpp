// universeg/random.hpp - a small, fast, portable random number generator for training and
// synthetic data, identical on every platform and standard library (std::mt19937 is, but the
// std distributions are not).
//
//   Rng rng(seed_from({seed, step, index}));   // independent stream per (seed, step, index)
//   rng.uniform(), rng.uniform(a, b), rng.normal(), rng.below(n), rng.chance(p)
//
// xoshiro256** seeded through splitmix64. Streams are derived from counters rather than
// carried along, so a training step's data is a pure function of (seed, step): resuming,
// skipping or parallelising cannot change it.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>

namespace universeg {

inline uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// One 64-bit seed from a list of counters (order matters).
inline uint64_t seed_from(std::initializer_list<uint64_t> parts) {
    uint64_t h = 0x243F6A8885A308D3ull;
    for (uint64_t p : parts) {
        h ^= p;
        h = splitmix64(h);
    }
    return h;
}

struct Rng {
    uint64_t s[4];

    explicit Rng(uint64_t seed) {
        for (uint64_t& w : s) w = splitmix64(seed);
    }

    uint64_t next() {
        const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = rotl(s[3], 45);
        return result;
    }

    double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
    double uniform(double a, double b) { return a + (b - a) * uniform(); }
    // log-uniform in [a, b], a > 0: for scales, where halving matters as much as doubling
    double log_uniform(double a, double b) { return a * std::exp(std::log(b / a) * uniform()); }
    int64_t below(int64_t n) { return int64_t(uniform() * double(n)); }  // [0, n)
    int64_t between(int64_t a, int64_t b) { return a + below(b - a + 1); }  // [a, b]
    bool chance(double p) { return uniform() < p; }
    double normal() {  // Box-Muller; one draw per call keeps the stream simple
        const double u = 1.0 - uniform(), v = uniform();
        return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
    }

private:
    static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
};

}  // namespace universeg
