// The trainer: whole-model gradients against finite differences, the split CrossConv algebra
// against the materialised one, losses, the optimiser, determinism and exact resume; a step as
// the sum of its tasks' gradients, and ranks sharing a step's tasks (distributed.hpp, here over
// threads) training what one process trains.
#include "test_util.hpp"

#include <universeg/train/distributed.hpp>
#include <universeg/train/folder_tasks.hpp>
#include <universeg/io/weights.hpp>
#include <universeg/train/synth.hpp>
#include <universeg/train/train.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

using namespace universeg;
using test::same_bits;

namespace {

std::vector<float> random_floats(size_t n, unsigned seed, float lo, float hi) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = u(rng);
    return v;
}

std::vector<float> random_labels(size_t n, unsigned seed) {
    std::vector<float> v = random_floats(n, seed, 0, 1);
    for (auto& x : v) x = x > 0.6f ? 1.0f : 0.0f;
    return v;
}

Batch random_batch(int64_t B, int64_t S, int64_t H, int64_t W, unsigned seed) {
    Batch b;
    b.B = B, b.S = S, b.H = H, b.W = W;
    b.query = random_floats(size_t(B * H * W), seed, 0, 1);
    b.query_labels = random_labels(size_t(B * H * W), seed + 1);
    b.support_images = random_floats(size_t(B * S * H * W), seed + 2, 0, 1);
    b.support_labels = random_labels(size_t(B * S * H * W), seed + 3);
    return b;
}

// A three-level config with unequal cross/conv features, so every channel count differs.
Config tiny_config() { return parse_config("[[3,2],[2,3],[3,2]]"); }

double model_loss(const Config& c, const std::vector<ParamInfo>& layout, const std::vector<double>& p, const Batch& b,
                  Loss loss, bool split, std::vector<double>* grad) {
    Activations<double> act;
    reference_forward(c, layout, p.data(), b.query.data(), b.support_images.data(), b.support_labels.data(), b.B, b.S, b.H,
                  b.W, act, split);
    std::vector<double> d(act.logits.size());
    const double l = loss_and_grad(act.logits.data(), b.query_labels.data(), b.B, b.H * b.W, loss, d.data());
    if (grad) {
        grad->assign(p.size(), 0.0);
        train_backward(c, layout, p.data(), act, d.data(), grad->data(), split);
    }
    return l;
}

}  // namespace

TEST_CASE("parse_config reads the reference's encoder_blocks notation") {
    const Config c = parse_config("[[16,8],[24,16],32]");
    REQUIRE(c.encoder.size() == 3);
    CHECK(c.encoder[0] == BlockFeatures{16, 8});
    CHECK(c.encoder[2] == BlockFeatures{32, 32});
    REQUIRE(c.decoder.size() == 2);
    CHECK(c.decoder[0] == BlockFeatures{24, 16});
    CHECK(parse_config("v1").encoder.size() == 4);
    CHECK_THROWS_AS(parse_config("[32,"), Error);
    CHECK_THROWS_AS(parse_config("[0]"), Error);
    CHECK_THROWS_AS(parse_config("32"), Error);
}

TEST_CASE("param_layout matches the state dict that Model reads, v1 has 1,182,785 parameters") {
    const std::vector<ParamInfo> layout = param_layout(Config::v1());
    CHECK(param_count(layout) == 1182785);
    TrainState s = init_train_state(tiny_config(), 3);
    const Model m = make_model(s);
    CHECK(m.parameter_count() == param_count(s.layout));
    CHECK(m.config().encoder == tiny_config().encoder);
}

TEST_CASE("the training forward gives the model's logits") {
    const TrainState s = init_train_state(tiny_config(), 5);
    const Batch b = random_batch(2, 3, 8, 12, 10);
    const std::vector<double> p(s.params.begin(), s.params.end());
    const Model m = make_model(s);
    const std::vector<double> ref = m.forward_reference<double>(b.query.data(), b.support_images.data(),
                                                                b.support_labels.data(), b.B, b.S, b.H, b.W);
    for (bool split : {true, false}) {
        Activations<double> act;
        reference_forward(s.config, s.layout, p.data(), b.query.data(), b.support_images.data(), b.support_labels.data(),
                      b.B, b.S, b.H, b.W, act, split);
        REQUIRE(act.logits.size() == ref.size());
        for (size_t i = 0; i < ref.size(); ++i) CHECK(act.logits[i] == Approx(ref[i]).margin(1e-12));
    }
}

TEST_CASE("whole-model gradient matches finite differences (split CrossConv, dice+bce)") {
    const TrainState s = init_train_state(tiny_config(), 7);
    const Batch b = random_batch(2, 3, 8, 4, 20);
    std::vector<double> p(s.params.begin(), s.params.end()), g;
    // Non-zero biases so that LeakyReLU sees both signs everywhere.
    for (size_t i = 0; i < p.size(); ++i) p[i] += 0.05 * std::sin(double(i));
    model_loss(s.config, s.layout, p, b, Loss::DiceBce, true, &g);
    const double h = 1e-6;
    double scale = 0;
    for (double v : g) scale = std::max(scale, std::abs(v));
    REQUIRE(scale > 0);
    // Every tensor: its first and last elements and every 4th in between (all of a small one).
    std::vector<size_t> checked;
    for (const ParamInfo& info : s.layout)
        for (int64_t k = 0; k < info.numel; ++k)
            if (k % 4 == 0 || k == info.numel - 1) checked.push_back(size_t(info.offset + k));
    for (size_t i : checked) {
        const double keep = p[i];
        p[i] = keep + h;
        const double up = model_loss(s.config, s.layout, p, b, Loss::DiceBce, true, nullptr);
        p[i] = keep - h;
        const double down = model_loss(s.config, s.layout, p, b, Loss::DiceBce, true, nullptr);
        p[i] = keep;
        INFO("parameter " << i);
        CHECK(std::abs((up - down) / (2 * h) - g[i]) <= 1e-6 * scale);
    }
}

TEST_CASE("split CrossConv gradients equal the materialised concatenation's") {
    const TrainState s = init_train_state(tiny_config(), 9);
    const Batch b = random_batch(2, 4, 8, 8, 30);
    const std::vector<double> p(s.params.begin(), s.params.end());
    std::vector<double> g_split, g_full;
    const double l_split = model_loss(s.config, s.layout, p, b, Loss::Dice, true, &g_split);
    const double l_full = model_loss(s.config, s.layout, p, b, Loss::Dice, false, &g_full);
    CHECK(l_split == Approx(l_full).epsilon(1e-12));
    double scale = 0;
    for (double v : g_full) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < g_full.size(); ++i) CHECK(std::abs(g_split[i] - g_full[i]) <= 1e-12 * scale);
}

TEST_CASE("losses and their gradients") {
    // Hand values: logits 0 -> p = 1/2. Labels (1, 0): soft Dice = (2*0.5 + 1)/(1 + 1 + 1) = 2/3,
    // BCE = log 2 per pixel.
    const std::vector<double> x{0.0, 0.0};
    const std::vector<float> y{1.0f, 0.0f};
    std::vector<double> d(2);
    CHECK(loss_and_grad(x.data(), y.data(), 1, 2, Loss::Dice, d.data()) == Approx(1.0 / 3.0));
    CHECK(loss_and_grad(x.data(), y.data(), 1, 2, Loss::Bce, d.data()) == Approx(std::log(2.0)));
    CHECK(d[0] == Approx(-0.25));  // (p - y) / n
    CHECK(d[1] == Approx(0.25));
    CHECK(loss_and_grad(x.data(), y.data(), 1, 2, Loss::DiceBce, d.data()) == Approx(1.0 / 3.0 + std::log(2.0)));
    // Finite differences of every loss on random logits.
    const std::vector<float> labels = random_labels(24, 40);
    for (Loss loss : {Loss::Dice, Loss::Bce, Loss::DiceBce}) {
        std::vector<double> z(24), dz(24), tmp(24);
        for (size_t i = 0; i < z.size(); ++i) z[i] = 3 * std::sin(double(i) * 1.7);
        loss_and_grad(z.data(), labels.data(), 2, 12, loss, dz.data());
        for (size_t i = 0; i < z.size(); ++i) {
            const double keep = z[i];
            z[i] = keep + 1e-6;
            const double up = loss_and_grad(z.data(), labels.data(), 2, 12, loss, tmp.data());
            z[i] = keep - 1e-6;
            const double down = loss_and_grad(z.data(), labels.data(), 2, 12, loss, tmp.data());
            z[i] = keep;
            CHECK((up - down) / 2e-6 == Approx(dz[i]).margin(1e-8));
        }
    }
}

TEST_CASE("learning-rate schedule: linear warmup, cosine to the floor") {
    TrainOptions o;
    o.lr = 1e-3, o.warmup = 10, o.steps = 110, o.min_lr_ratio = 0.1;
    CHECK(learning_rate(o, 0) == Approx(1e-4));
    CHECK(learning_rate(o, 9) == Approx(1e-3));
    CHECK(learning_rate(o, 10) == Approx(1e-3));
    CHECK(learning_rate(o, 60) == Approx(1e-3 * (0.1 + 0.9 * 0.5)));
    CHECK(learning_rate(o, 110) == Approx(1e-4));
    CHECK(learning_rate(o, 500) == Approx(1e-4));
}

TEST_CASE("gradient clipping bounds the global norm") {
    std::vector<float> g{3.0f, 4.0f};
    CHECK(clip_grad_norm(g, 1.0) == Approx(5.0));
    CHECK(g[0] == Approx(0.6f));
    CHECK(g[1] == Approx(0.8f));
    std::vector<float> small{0.3f, 0.4f};
    clip_grad_norm(small, 1.0);
    CHECK(small[1] == 0.4f);
}

TEST_CASE("Adam's first step moves every parameter by lr against the gradient's sign") {
    TrainState s = init_train_state(parse_config("[2]"), 1);
    const std::vector<float> before = s.params;
    std::vector<float> g(s.params.size());
    for (size_t i = 0; i < g.size(); ++i) g[i] = (i % 2 ? 1.0f : -2.0f);
    TrainOptions o;
    adam_update(s, g, o, 0.01);
    for (size_t i = 0; i < g.size(); ++i) CHECK(s.params[i] - before[i] == Approx(g[i] > 0 ? -0.01 : 0.01).epsilon(1e-4));
}

TEST_CASE("dice_score and the histogram baseline on hand-made cases") {
    const std::vector<float> logits{1, 1, -1, -1}, labels{1, 0, 1, 0};
    CHECK(dice_score(logits.data(), labels.data(), 4) == Approx(0.5));
    const std::vector<float> none{-1, -1}, empty{0, 0};
    CHECK(dice_score(none.data(), empty.data(), 2) == 1.0);
    // Supports: bright pixels (0.9) are foreground, dark ones (0.1) background, one bright
    // background pixel. Foreground share of the bright bin is 2/3: the best support Dice keeps it.
    const std::vector<float> si{0.9f, 0.9f, 0.1f, 0.1f, 0.9f, 0.1f}, sl{1, 1, 0, 0, 0, 0};
    const std::vector<float> q{0.1f, 0.9f, 0.5f};  // 0.5: a bin no support pixel fell in
    std::vector<float> out(3);
    histogram_baseline(si.data(), sl.data(), 2, 3, q.data(), 3, out.data());
    CHECK(out == std::vector<float>{-1, 1, -1});
}

namespace {

// Runs `steps` training steps on synthetic batches of the tiny config from state s.
void run_steps(TrainState& s, int64_t steps, const TrainOptions& o) {
    TrainWorkspace ws;
    for (int64_t k = 0; k < steps; ++k) train_step(s, synthetic_batch(s.seed, s.step, 2, 3, 16), o, ws);
}

TrainOptions small_options() {
    TrainOptions o;
    o.steps = 20, o.warmup = 2, o.lr = 3e-3, o.ema_decay = 0.9;
    return o;
}

}  // namespace

TEST_CASE("training lowers the loss on a fixed problem") {
    TrainState s = init_train_state(parse_config("[8,8]"), 11);
    const Batch b = synthetic_batch(5, 0, 2, 3, 16);
    TrainOptions o;
    o.steps = 60, o.warmup = 5, o.lr = 3e-3;
    TrainWorkspace ws;
    const double first = train_step(s, b, o, ws).loss;
    double last = first;
    for (int k = 1; k < 60; ++k) last = train_step(s, b, o, ws).loss;
    CHECK(last < 0.6 * first);
}

TEST_CASE("a run is deterministic, whatever the thread count") {
    TrainState a = init_train_state(tiny_config(), 21), b = init_train_state(tiny_config(), 21);
    const TrainOptions o = small_options();
#ifdef _OPENMP
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    run_steps(a, 4, o);
    omp_set_num_threads(std::max(2, threads));
    run_steps(b, 4, o);
    omp_set_num_threads(threads);
#else
    run_steps(a, 4, o);
    run_steps(b, 4, o);
#endif
    CHECK(a.params == b.params);
    CHECK(a.m == b.m);
    CHECK(a.v == b.v);
    TrainState c = init_train_state(tiny_config(), 22);
    run_steps(c, 4, o);
    CHECK(c.params != a.params);
}

#ifdef UNIVERSEG_HAS_MXCSR
// Halves the smallest normal float on every thread of the team: 0 where subnormal results
// are flushed, a subnormal where they are not. Counts the threads that saw each.
std::pair<int, int> halve_smallest_normal() {
    int flushed = 0, kept = 0;
#pragma omp parallel reduction(+ : flushed, kept)
    {
        volatile float smallest = 1.17549435e-38f;
        const float half = smallest * 0.5f;
        (half == 0.0f ? flushed : kept) += 1;
    }
    return {flushed, kept};
}

TEST_CASE("FlushSubnormals flushes on the caller and every OpenMP thread, then restores") {
    const auto [flushed_before, kept_before] = halve_smallest_normal();
    REQUIRE(flushed_before == 0);
    REQUIRE(kept_before >= 1);
    {
        const FlushSubnormals flush;
        const auto [flushed, kept] = halve_smallest_normal();
        CHECK(kept == 0);
        CHECK(flushed == kept_before);
    }
    const auto [flushed_after, kept_after] = halve_smallest_normal();
    CHECK(flushed_after == 0);
    CHECK(kept_after == kept_before);
}
#endif

TEST_CASE("resuming from a safetensors checkpoint continues bit for bit") {
    const TrainOptions o = small_options();
    TrainState straight = init_train_state(tiny_config(), 31), first = init_train_state(tiny_config(), 31);
    run_steps(straight, 6, o);
    run_steps(first, 3, o);
    const std::string path = "test_train_resume.ckpt.safetensors";
    save_safetensors(path, checkpoint_dict(first));
    TrainState resumed = train_state_from(load_safetensors(path));
    std::remove(path.c_str());
    CHECK(resumed.step == 3);
    CHECK(resumed.seed == 31);
    run_steps(resumed, 3, o);
    CHECK(resumed.params == straight.params);
    CHECK(resumed.m == straight.m);
    CHECK(resumed.v == straight.v);
    CHECK(resumed.ema == straight.ema);
    // Plain weights start a fresh optimiser at step 0 (fine-tuning).
    const TrainState fresh = train_state_from(weights_dict(straight), 5);
    CHECK(fresh.step == 0);
    CHECK(fresh.params == straight.params);
    CHECK(fresh.m == std::vector<float>(fresh.m.size(), 0.0f));
}

namespace {

// The step train_step took before it summed per-task gradients: one forward and one backward
// of the whole batch.
StepResult batched_step(TrainState& s, const Batch& b, const TrainOptions& o, TrainWorkspace& ws) {
    const FlushSubnormals flush;
    reference_forward(s.config, s.layout, s.params.data(), b.query.data(), b.support_images.data(), b.support_labels.data(),
                      b.B, b.S, b.H, b.W, ws.act, true, ws.gemm_kernels);
    ws.dlogits.resize(ws.act.logits.size());
    const double loss = loss_and_grad(ws.act.logits.data(), b.query_labels.data(), b.B, b.H * b.W, o.loss, ws.dlogits.data());
    ws.grad.assign(s.params.size(), 0.0f);
    train_backward(s.config, s.layout, s.params.data(), ws.act, ws.dlogits.data(), ws.grad.data(), true, ws.gemm_kernels);
    return apply_gradient(s, ws.grad, loss, o);
}

}  // namespace

TEST_CASE("a step's gradient is the sum of its tasks': one task as before, bit for bit; several within rounding") {
    TrainOptions o = small_options();
    o.clip = 0;  // ws.grad is then the gradient itself
    for (int64_t B : {1, 3}) {
        INFO("batch " << B);
        TrainState a = init_train_state(tiny_config(), 41), b = a;
        TrainWorkspace wa, wb;
        for (int k = 0; k < 3; ++k) {
            const Batch batch = synthetic_batch(a.seed, a.step, B, 3, 16);
            const StepResult ra = train_step(a, batch, o, wa), rb = batched_step(b, batch, o, wb);
            double scale = 0, worst = 0;
            for (size_t i = 0; i < wa.grad.size(); ++i)
                scale = std::max(scale, double(std::abs(wb.grad[i]))), worst = std::max(worst, double(std::abs(wa.grad[i] - wb.grad[i])));
            REQUIRE(scale > 0);
            if (B == 1) {
                REQUIRE(same_bits(wa.grad, wb.grad));
                REQUIRE(ra.loss == rb.loss);
                REQUIRE(same_bits(a.params, b.params));
            } else {
                CHECK(worst <= 1e-5 * scale);
                CHECK(ra.loss == Approx(rb.loss).epsilon(1e-12));
                b = a;  // compare the next step's gradients at the same weights
            }
        }
    }
}

namespace {

// An allgather between threads, one per rank: each deposits a pointer to its floats, copies
// everyone's once all have arrived, and returns once all have copied (its buffer is then free).
struct ThreadAllgather {
    std::mutex mutex;
    std::condition_variable cv;
    std::vector<const float*> sent;
    int arrived = 0, copied = 0;
    int64_t gathered = 0, done = 0;  // rounds

    explicit ThreadAllgather(int size) : sent(size_t(size), nullptr) {}
    void operator()(int rank, const float* mine, float* all, size_t count) {
        std::unique_lock<std::mutex> lock(mutex);
        const int64_t round = gathered;
        sent[size_t(rank)] = mine;
        if (++arrived == int(sent.size())) arrived = 0, ++gathered, cv.notify_all();
        cv.wait(lock, [&] { return gathered > round; });
        for (size_t r = 0; r < sent.size(); ++r) std::memcpy(all + r * count, sent[r], count * sizeof(float));
        if (++copied == int(sent.size())) copied = 0, ++done, cv.notify_all();
        cv.wait(lock, [&] { return done > round; });
    }
};

}  // namespace

TEST_CASE("ranks sharing a step's tasks train the weights one process trains, bit for bit") {
    // Consecutive blocks in rank order, sizes differing by at most one.
    CHECK(rank_tasks(7, 0, 3).first == 0);
    CHECK(rank_tasks(7, 0, 3).count == 3);
    CHECK(rank_tasks(7, 1, 3).first == 3);
    CHECK(rank_tasks(7, 2, 3).first == 5);
    CHECK(rank_tasks(7, 2, 3).count == 2);
    CHECK(rank_tasks(2, 2, 3).count == 0);
    CHECK_THROWS_AS(rank_tasks(2, 3, 3), Error);

    // A synthetic batch of tasks first.. is those tasks of the whole batch.
    const Batch whole = synthetic_batch(8, 5, 3, 2, 16), last = synthetic_batch(8, 5, 2, 2, 16, 1);
    CHECK(last.query == std::vector<float>(whole.query.begin() + 256, whole.query.end()));
    CHECK(last.support_labels == std::vector<float>(whole.support_labels.begin() + 2 * 256, whole.support_labels.end()));

    const TrainOptions o = small_options();
    const int64_t B = 3, steps = 3;
    TrainState single = init_train_state(tiny_config(), 51);
    std::vector<double> single_loss;
    {
        TrainWorkspace ws;
        for (int64_t k = 0; k < steps; ++k) single_loss.push_back(train_step(single, synthetic_batch(51, k, B, 3, 16), o, ws).loss);
    }
    for (int size : {2, 3}) {
        INFO(size << " ranks");
        ThreadAllgather gather(size);
        std::vector<TrainState> states(size_t(size), init_train_state(tiny_config(), 51));
        std::vector<std::vector<double>> losses(static_cast<size_t>(size));
        std::vector<std::thread> ranks;
        for (int r = 0; r < size; ++r)
            ranks.emplace_back([&, r] {
                Collective comm;
                comm.rank = r, comm.size = size;
                comm.allgather = [&gather, r](const float* mine, float* all, size_t count) { gather(r, mine, all, count); };
                const TaskRange mine = rank_tasks(B, r, size);
                TrainWorkspace ws;
                TrainState& s = states[size_t(r)];
                for (int64_t k = 0; k < steps; ++k)
                    losses[size_t(r)].push_back(
                        train_step(s, synthetic_batch(51, k, mine.count, 3, 16, mine.first), B, o, ws, comm).loss);
            });
        for (std::thread& t : ranks) t.join();
        for (int r = 0; r < size; ++r) {
            const TrainState& s = states[size_t(r)];
            CHECK(same_bits(s.params, single.params));
            CHECK(same_bits(s.m, single.m));
            CHECK(same_bits(s.v, single.v));
            CHECK(same_bits(s.ema, single.ema));
            CHECK(s.step == single.step);
            CHECK(losses[size_t(r)] == single_loss);
        }
    }
    // A rank given other than its share of the tasks is refused.
    TrainState s = init_train_state(tiny_config(), 51);
    TrainWorkspace ws;
    Collective two;
    two.size = 2;
    two.allgather = [](const float*, float*, size_t) {};
    CHECK_THROWS_AS(train_step(s, synthetic_batch(51, 0, 1, 3, 16), 3, o, ws, two), Error);
}

TEST_CASE("synthetic images are in [0,1], min-max normalised, labels binary, target present") {
    int64_t with_target = 0, total = 0;
    for (uint64_t seed = 0; seed < 40; ++seed) {
        const SynthTask t = synthetic_task(seed, 3, 32);
        for (int64_t i = 0; i < t.n; ++i) {
            const float* img = t.images.data() + i * 32 * 32;
            const float* lab = t.labels.data() + i * 32 * 32;
            float lo = 1, hi = 0;
            int64_t area = 0;
            bool binary = true;
            for (int64_t p = 0; p < 32 * 32; ++p) {
                lo = std::min(lo, img[p]), hi = std::max(hi, img[p]);
                binary = binary && (lab[p] == 0.0f || lab[p] == 1.0f);
                area += lab[p] > 0;
            }
            INFO("seed " << seed << " image " << i << " family " << synth_family_name(t.params.family));
            CHECK(lo >= 0.0f);
            CHECK(hi <= 1.0f);
            CHECK(hi - lo > 0.5f);
            CHECK(binary);
            with_target += area > 0, ++total;
        }
    }
    CHECK(with_target >= total * 9 / 10);
}

TEST_CASE("synthetic tasks are reproducible and every family occurs") {
    const SynthTask a = synthetic_task(7, 2, 32), b = synthetic_task(7, 2, 32), c = synthetic_task(8, 2, 32);
    CHECK(a.images == b.images);
    CHECK(a.labels == b.labels);
    CHECK(a.images != c.images);
    std::vector<int> seen(kSynthFamilies, 0);
    for (uint64_t seed = 0; seed < 100; ++seed) {
        Rng rng(seed);
        seen[size_t(sample_task(rng, 32).family)]++;
    }
    for (int f = 0; f < kSynthFamilies; ++f) CHECK(seen[size_t(f)] > 0);
}

TEST_CASE("supports and query of a synthetic batch share their task") {
    // Plumbing: every image of task t is sample_image of the same recipe.
    const int64_t B = 2, S = 3, n = 32, N = n * n;
    const Batch b = synthetic_batch(9, 4, B, S, n);
    for (int64_t t = 0; t < B; ++t) {
        Rng task_rng(seed_from({9, 4, uint64_t(t), 0x7A5Cull}));
        const TaskParams p = sample_task(task_rng, n);
        for (int64_t i = 0; i <= S; ++i) {
            Rng rng(seed_from({9, 4, uint64_t(t), uint64_t(i)}));
            std::vector<float> img(static_cast<size_t>(N)), lab(static_cast<size_t>(N));
            sample_image(p, rng, img.data(), lab.data());
            const float* want = i == S ? b.query.data() + t * N : b.support_images.data() + (t * S + i) * N;
            CHECK(std::equal(img.begin(), img.end(), want));
        }
    }
    // Statistics: within a task whose target is told apart by intensity, the target is brighter
    // than the rest in every image or darker in every image.
    int64_t consistent = 0, tasks = 0;
    for (uint64_t seed = 100; tasks < 30; ++seed) {
        const SynthTask t = synthetic_task(seed, 5, 48);
        if (t.params.family == SynthFamily::Texture || t.params.edges || t.params.outline) continue;
        int brighter = 0, counted = 0;
        for (int64_t i = 0; i < t.n; ++i) {
            double in = 0, out = 0;
            int64_t nin = 0;
            for (int64_t p = 0; p < 48 * 48; ++p) {
                const float v = t.images[size_t(i * 48 * 48 + p)];
                if (t.labels[size_t(i * 48 * 48 + p)] > 0) in += v, ++nin;
                else out += v;
            }
            if (nin == 0 || nin == 48 * 48) continue;
            brighter += in / double(nin) > out / double(48 * 48 - nin);
            ++counted;
        }
        ++tasks;
        consistent += brighter == 0 || brighter == counted;
    }
    CHECK(consistent >= 24);
}

TEST_CASE("outside a synthetic field of view the label is background and the image dark") {
    int64_t checked = 0;
    for (uint64_t seed = 0; checked < 3 && seed < 400; ++seed) {
        Rng rng(seed_from({seed, 0x7A5Cull}));
        const TaskParams p = sample_task(rng, 32);
        if (p.fov <= 0 || p.invert || p.edges || p.noise > 0.01) continue;
        const SynthTask t = synthetic_task(seed, 2, 32);
        for (int64_t i = 0; i < t.n; ++i)
            for (int64_t y = 0; y < 32; ++y)
                for (int64_t x = 0; x < 32; ++x) {
                    const double dy = double(y) - 15.5, dx = double(x) - 15.5, r = p.fov * 32;
                    if (dy * dy + dx * dx <= r * r) continue;
                    INFO("seed " << seed << " pixel " << y << "," << x);
                    CHECK(t.labels[size_t((i * 32 + y) * 32 + x)] == 0.0f);
                    CHECK(t.images[size_t((i * 32 + y) * 32 + x)] < 0.2f);  // 0 before noise of sd <= 0.014
                }
        ++checked;
    }
    CHECK(checked == 3);
}

TEST_CASE("labelled folders become one task per label value shown in two or more images") {
    namespace fs = std::filesystem;
    const fs::path dir = fs::temp_directory_path() / "universeg_test_folder_tasks";
    fs::remove_all(dir);
    fs::create_directories(dir / "images");
    fs::create_directories(dir / "labels");
    // Three 8x8 images: a horizontal ramp; labels: value 3 in a 4x4 corner of images 0 and 1,
    // value 1 only in image 2 (one image: no task).
    for (int k = 0; k < 3; ++k) {
        std::vector<uint16_t> img(64), lab(64, 0);
        for (int y = 0; y < 8; ++y)
            for (int x = 0; x < 8; ++x) {
                img[size_t(y * 8 + x)] = uint16_t(x * 30 + k);
                if (y < 4 && x < 4) lab[size_t(y * 8 + x)] = k < 2 ? 3 : 1;
            }
        const std::string name = "im" + std::to_string(k) + ".png";
        save_png((dir / "images" / name).string(), img, 8, 8, 1, 8);
        save_png((dir / "labels" / name).string(), lab, 8, 8, 1, 8);
    }
    const FolderTasks d = load_folder_tasks({dir.string()}, 8);
    REQUIRE(d.tasks.size() == 1);
    CHECK(d.tasks[0].value == 3);
    CHECK(d.tasks[0].images == std::vector<int64_t>{0, 1});
    // Without augmentation: the normalised image (ramp 0..1) and the binary label, unchanged.
    const Batch e = folder_split_batch(d, 3, {0}, {1});
    CHECK(e.query[0] == 0.0f);
    CHECK(e.query[7] == 1.0f);
    CHECK(e.query_labels[0] == 1.0f);
    CHECK(e.query_labels[4] == 0.0f);
    CHECK(e.support_labels[9] == 1.0f);
    // Augmented batches: shapes, binary labels, images in [0,1], reproducible.
    const Batch b = folder_batch(d, 1, 0, 2, 3), b2 = folder_batch(d, 1, 0, 2, 3);
    CHECK(b.support_images.size() == size_t(2 * 3 * 64));
    CHECK(b.query == b2.query);
    // Task t depends on (seed, step, t) alone: a batch of task 1 only is task 1 of the batch.
    const Batch second = folder_batch(d, 1, 0, 1, 3, true, 1);
    CHECK(second.query == std::vector<float>(b.query.begin() + 64, b.query.end()));
    CHECK(second.support_images == std::vector<float>(b.support_images.begin() + 3 * 64, b.support_images.end()));
    for (float v : b.support_labels) CHECK((v == 0.0f || v == 1.0f));
    for (float v : b.support_images) CHECK((v >= 0.0f && v <= 1.0f));
    fs::remove_all(dir);
}

namespace {

// An 8x8 pair NAME in DIR (images/ and labels/): a constant image of grey `grey` and a label
// map holding value v in its top row for each v of `values`, one column per value.
void write_pair(const std::filesystem::path& dir, const std::string& name, int grey, const std::vector<int>& values) {
    std::vector<uint16_t> img(64, uint16_t(grey)), lab(64, 0);
    img[63] = 255;  // not constant: normalisation keeps the grey apart
    for (size_t k = 0; k < values.size(); ++k) lab[k] = uint16_t(values[k]);
    save_png((dir / "images" / (name + ".png")).string(), img, 8, 8, 1, 8);
    save_png((dir / "labels" / (name + ".png")).string(), lab, 8, 8, 1, 8);
}

}  // namespace

TEST_CASE("multi-data-set sampling: folders drawn uniformly, label unions, a query's source never supports it") {
    namespace fs = std::filesystem;
    const fs::path root = fs::temp_directory_path() / "universeg_test_multi_folder";
    fs::remove_all(root);
    // "vol": three volumes of two slices each (sources.csv); value 1 in every slice, value 2 in
    // volume 0 only (one source: no task), value 3 in one slice each of volumes 1 and 2.
    // "flat": four images without sources.csv (each its own source), value 1 in all.
    const fs::path vol = root / "vol", flat = root / "flat";
    for (const fs::path& d : {vol, flat}) fs::create_directories(d / "images"), fs::create_directories(d / "labels");
    std::string csv = "id,source,note\n";
    for (int v = 0; v < 3; ++v)
        for (int z = 0; z < 2; ++z) {
            const std::string name = "v" + std::to_string(v) + "_z" + std::to_string(z);
            std::vector<int> values{1};
            if (v == 0) values.push_back(2);
            if (v > 0 && z == 0) values.push_back(3);
            write_pair(vol, name, 10 * (2 * v + z), values);
            csv += name + ",volume" + std::to_string(v) + ".nii | labels" + std::to_string(v) + ".nii,slice " + std::to_string(z) + "\n";
        }
    std::ofstream(vol / "sources.csv") << csv;
    for (int k = 0; k < 4; ++k) write_pair(flat, "f" + std::to_string(k), 100 + 10 * k, {1});

    const FolderTasks d = load_folder_tasks({vol.string(), flat.string()}, 8);
    REQUIRE(d.images.size() == 10);
    // Slices of one volume share a source; the flat folder's images have one each.
    CHECK(d.sources[0] == d.sources[1]);
    CHECK(d.sources[2] == d.sources[3]);
    CHECK(d.sources[0] != d.sources[2]);
    std::set<int64_t> flat_sources(d.sources.begin() + 6, d.sources.end());
    CHECK(flat_sources.size() == 4);
    CHECK(flat_sources.count(d.sources[0]) == 0);
    REQUIRE(d.tasks.size() == 3);
    CHECK((d.tasks[0].value == 1 && d.tasks[1].value == 3 && d.tasks[2].value == 1));
    CHECK(d.tasks[1].images == std::vector<int64_t>{2, 4});

    // Folders are drawn uniformly, not labels (which would give "vol" two thirds of the draws);
    // "vol" draws its union {1, 3} half the time.
    int64_t from_vol = 0, unions = 0, value3 = 0, repeats = 0;
    const int64_t draws = 2000, S = 5;
    for (int64_t k = 0; k < draws; ++k) {
        Rng rng(seed_from({17, uint64_t(k)}));
        const FolderDraw t = draw_folder_task(d, rng, S);
        Rng again(seed_from({17, uint64_t(k)}));
        const FolderDraw u = draw_folder_task(d, again, S);
        REQUIRE((t.values == u.values && t.query == u.query && t.supports == u.supports));
        REQUIRE(int64_t(t.supports.size()) == S);
        const bool in_vol = t.query < 6;
        from_vol += in_vol;
        unions += t.values.size() == 2;
        value3 += t.values == std::vector<int64_t>{3};
        if (t.values.size() == 2) CHECK(t.values == std::vector<int64_t>{1, 3});
        for (int64_t i : t.supports) {
            CHECK(d.sources[size_t(i)] != d.sources[size_t(t.query)]);
            CHECK((i < 6) == in_vol);
        }
        if (t.values == std::vector<int64_t>{3}) CHECK(t.supports == std::vector<int64_t>(5, t.query == 2 ? 4 : 2));
        // The flat folder has 3 candidates for 5 supports: the first 3 differ.
        if (!in_vol) repeats += t.supports[0] == t.supports[1] || t.supports[0] == t.supports[2] || t.supports[1] == t.supports[2];
    }
    CHECK(from_vol > draws * 45 / 100);
    CHECK(from_vol < draws * 55 / 100);
    CHECK(unions > from_vol * 45 / 100);
    CHECK(unions < from_vol * 55 / 100);
    CHECK(value3 > 0);
    CHECK(repeats == 0);

    // Batches: binary labels, reproducible from (seed, step), other steps other tasks.
    const Batch b = folder_batch(d, 3, 7, 2, 4), b2 = folder_batch(d, 3, 7, 2, 4), b3 = folder_batch(d, 3, 8, 2, 4);
    CHECK(b.support_images == b2.support_images);
    CHECK(b.query_labels == b2.query_labels);
    CHECK(b.support_images != b3.support_images);
    for (float v : b.support_labels) CHECK((v == 0.0f || v == 1.0f));
    fs::remove_all(root);
}

TEST_CASE("the moving average of the weights starts at the weights and follows them") {
    TrainState s = init_train_state(tiny_config(), 41);
    TrainOptions o = small_options();
    o.ema_decay = 0.75;
    run_steps(s, 1, o);
    CHECK(s.ema == s.params);  // the first step sets it to the weights
    const std::vector<float> before = s.ema;
    run_steps(s, 1, o);
    for (size_t i = 0; i < s.ema.size(); ++i) CHECK(s.ema[i] == Approx(0.75 * before[i] + 0.25 * s.params[i]).margin(1e-7));
    CHECK(weights_dict(s, true).at("out_conv.conv.bias").data[0] == s.ema[s.ema.size() - 1]);
    CHECK(weights_dict(s, false).at("out_conv.conv.bias").data[0] == s.params[s.params.size() - 1]);
}

// The generator the bundled weights were trained on, locked: tests/data/train/synthetic_*.npy were
// written by synthetic_batch(777, step, 1, 2, 32) for steps 0-15 before sample_task was split
// into its parts (see tests/data/train/README.md). Any change to what it draws shows here.
TEST_CASE("synthetic tasks are those the bundled weights were trained on") {
    const std::string dir = std::string(UNIVERSEG_TEST_DATA) + "/train/";
    const Tensor images = load_npy(dir + "synthetic_images.npy"), labels = load_npy(dir + "synthetic_labels.npy");
    const int64_t steps = images.size(0), S = images.size(1) - 1, n = images.size(2), N = n * n;
    for (int64_t s = 0; s < steps; ++s) {
        INFO("step " << s);
        const Batch b = synthetic_batch(777, s, 1, S, n);
        double diff = 0;
        int64_t label_diff = 0;
        for (int64_t i = 0; i <= S; ++i) {
            const float* si = i == S ? b.query.data() : b.support_images.data() + i * N;
            const float* sl = i == S ? b.query_labels.data() : b.support_labels.data() + i * N;
            for (int64_t p = 0; p < N; ++p) {
                diff = std::max(diff, double(std::abs(si[p] - images.data[size_t((s * (S + 1) + i) * N + p)])));
                label_diff += sl[p] != labels.data[size_t((s * (S + 1) + i) * N + p)];
            }
        }
        // Exact on the machine that wrote them; the bound leaves room for another libm or FMA contraction.
        CHECK(diff <= 1e-4);
        CHECK(label_diff <= 2);
    }
}
