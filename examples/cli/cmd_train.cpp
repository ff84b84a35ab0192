// universeg train / finetune: training UniverSeg from scratch on synthetic (and optionally
// real) tasks, and adapting trained weights to a labelled folder.
#include "chart.hpp"
#include "cli.hpp"
#include "cluster.hpp"

#include <universeg/train/distributed.hpp>
#include <universeg/train/folder_tasks.hpp>
#include <universeg/io/weights.hpp>
#include <universeg/train/synth.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <new>
#include <sstream>
#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace cli {

namespace {

const char* kTrainUsage =
    "usage: universeg train --out W.safetensors [options]\n"
    "       universeg train --init W --eval-only [--size N] [--eval-tasks N]   (held-out Dice only)\n"
    "\n"
    "Trains UniverSeg on synthetic tasks (and/or labelled folders), writing checkpoints that\n"
    "resume exactly, a CSV log of the loss and held-out Dice, and an SVG chart of both.\n"
    "\n"
    "  --out W.safetensors     final weights (also rewritten at every checkpoint)\n"
    "  --config C              encoder blocks, e.g. [32,32,32,32] (default) or [[16,8],[24,16],32] or v1\n"
    "  --steps N               total optimiser steps (default 20000)\n"
    "  --support-size S        supports per task (default 8); --support-min A draws S from [A, S]\n"
    "  --batch B               tasks per step (default 1)\n"
    "  --size N                image size, a multiple of 2^(blocks-1) (default 64)\n"
    "  --final-size N          train the last --final-steps K steps at this size instead (e.g. 64\n"
    "                          for speed, then 128 where the model is used); held-out at this size\n"
    "  --mix-size N            with --mix-fraction P: a random share P of the synthetic steps uses\n"
    "                          size N instead (e.g. 64: four times cheaper steps, more tasks per hour)\n"
    "  --synthetic             train on synthetic tasks (the default without --data)\n"
    "  --data DIR[,DIR...]     labelled folders (DIR/images, DIR/labels), one per data set: each step\n"
    "                          draws a folder, then a label value or the union of its values; pairs\n"
    "                          of one source in DIR/sources.csv (a volume's slices) never support\n"
    "                          each other\n"
    "  --real-fraction P       share of steps on --data tasks when --synthetic is also given (0.5)\n"
    "  --lr X                  peak learning rate (1e-3); --warmup N steps (500); cosine down to\n"
    "  --min-lr-ratio R        lr * R at the last step (0.05)\n"
    "  --weight-decay X        AdamW decoupled decay on conv weights (0)\n"
    "  --clip X                global gradient-norm bound, 0 = off (1.0)\n"
    "  --loss L                dice (the paper's soft Dice), bce or dice+bce (default)\n"
    "  --ema D                 keep a moving average of the weights with decay D (0.999; 0 = off);\n"
    "                          it is what --out holds and what the held-out Dice measures\n"
    "  --seed N                initialisation and data seed (0)\n"
    "  --threads N             OpenMP threads (default: all cores); results depend only on the seed\n"
    "  --resume CKPT           continue a run from its checkpoint (weights, Adam state, step, seed)\n"
    "  --init W                start from trained weights (.pt, .safetensors, or a checkpoint's\n"
    "                          moving average) with a fresh optimiser at step 0: a new schedule\n"
    "                          on top of a finished run; use another --seed for new tasks\n"
    "  --checkpoint PATH       checkpoint file (default OUT with .ckpt.safetensors)\n"
    "  --checkpoint-every N    steps between checkpoints (500)\n"
    "  --keep-every N          also keep the weights of every N-th step as OUT-stepN.safetensors (0 = off)\n"
    "  --log PATH              CSV log (default OUT with .log.csv); --chart PATH SVG (OUT .svg)\n"
    "  --log-every N           steps per log row (50)\n"
    "  --eval-every N          steps between held-out evaluations (1000)\n"
    "  --eval-tasks N          held-out synthetic tasks (24), each with --eval-support supports (16)\n"
    "                          and --eval-queries queries (2), the same set for every run and seed\n"
    "  --eval-only             evaluate the --init or --resume weights on the held-out set (at\n"
    "                          --final-size, by default --size) next to the histogram classifier,\n"
    "                          and exit without training or writing anything\n"
    "\n"
    "Under mpirun or srun (a build with -DUNIVERSEG_MPI=ON) the B tasks of each step are shared by\n"
    "the processes, at least one each, and the weights are those one process would train, bit for\n"
    "bit; rank 0 alone prints and writes. docs/cluster.md.\n";

const char* kFinetuneUsage =
    "usage: universeg finetune [--weights W] --support DIR --out W2 [options]\n"
    "       universeg finetune [--weights W] --support DIR --steps 0     (held-out evaluation only)\n"
    "\n"
    "Adapts trained weights to a labelled folder (DIR/images, DIR/labels; every label value is a\n"
    "task). Part of the folder is held out; its Dice is reported before and after, next to a\n"
    "per-task intensity-histogram classifier built from the same supports.\n"
    "\n"
    "  --weights W             weights to start from (.pt or .safetensors); default: the bundled weights\n"
    "  --steps N               optimiser steps (200; 0 only evaluates the weights)\n"
    "  --holdout F             fraction of the images held out for evaluation (0.25, at least one)\n"
    "  --support-size S        supports per held-out prediction (16, capped by the training images)\n"
    "  --train-support S       supports per training step (8)\n"
    "  --size N                image size (128)\n"
    "  --lr X                  peak learning rate (1e-3); --loss L as for train (dice+bce)\n"
    "  --seed N                split, sampling and augmentation seed (0)\n"
    "  --batch B               tasks per step (1); under mpirun shared by the processes, as for train\n"
    "  --threads N             OpenMP threads\n";

// Training allocates the same large buffers every step; keeping freed memory in the heap
// (instead of returning it to the system) saves the page faults of touching it again.
void keep_freed_memory() {
#ifdef __GLIBC__
    mallopt(M_MMAP_THRESHOLD, 1 << 30);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop = true; }

std::string with_suffix(const std::string& out, const std::string& suffix) {
    const std::string ext = ".safetensors";
    const bool has = out.size() > ext.size() && out.compare(out.size() - ext.size(), ext.size(), ext) == 0;
    return (has ? out.substr(0, out.size() - ext.size()) : out) + suffix;
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    std::string part;
    while (std::getline(ss, part, ','))
        if (!part.empty()) out.push_back(part);
    return out;
}

// Mean Dice of the model and of the histogram baseline on problems (query i of batch b sees
// batch b's supports of query i).
struct EvalResult {
    double dice = 0, baseline = 0;
    int64_t count = 0;
};

void evaluate_batch(const universeg::Model& model, const universeg::Batch& b, EvalResult& r) {
    const int64_t N = b.H * b.W;
    std::vector<float> logits(static_cast<size_t>(b.B * N)), base(static_cast<size_t>(N));
    model.forward(b.query.data(), b.support_images.data(), b.support_labels.data(), b.B, b.S, b.H, b.W, logits.data());
    for (int64_t q = 0; q < b.B; ++q) {
        const double d = universeg::dice_score(logits.data() + q * N, b.query_labels.data() + q * N, N);
        universeg::histogram_baseline(b.support_images.data() + q * b.S * N, b.support_labels.data() + q * b.S * N, b.S, N,
                                      b.query.data() + q * N, N, base.data());
        const double h = universeg::dice_score(base.data(), b.query_labels.data() + q * N, N);
        r.dice += d, r.baseline += h, ++r.count;
    }
}

// The fixed held-out set: synthetic tasks from a seed family no training step draws from.
struct HeldOut {
    std::vector<universeg::Batch> batches;
    std::vector<universeg::SynthFamily> families;
};

HeldOut make_held_out(int64_t tasks, int64_t S, int64_t Q, int64_t size) {
    HeldOut h;
    for (int64_t t = 0; t < tasks; ++t) {
        const universeg::SynthTask task = universeg::synthetic_task(universeg::seed_from({0xE7A1D0ull, uint64_t(t)}), S + Q, size);
        universeg::Batch b;
        const int64_t N = size * size;
        b.B = Q, b.S = S, b.H = b.W = size;
        for (int64_t q = 0; q < Q; ++q) {
            b.query.insert(b.query.end(), task.images.begin() + (S + q) * N, task.images.begin() + (S + q + 1) * N);
            b.query_labels.insert(b.query_labels.end(), task.labels.begin() + (S + q) * N, task.labels.begin() + (S + q + 1) * N);
            b.support_images.insert(b.support_images.end(), task.images.begin(), task.images.begin() + S * N);
            b.support_labels.insert(b.support_labels.end(), task.labels.begin(), task.labels.begin() + S * N);
        }
        h.batches.push_back(std::move(b));
        h.families.push_back(task.params.family);
    }
    return h;
}

std::string evaluate_held_out(const universeg::Model& model, const HeldOut& h, EvalResult& total) {
    std::vector<EvalResult> fam(universeg::kSynthFamilies);
    for (size_t i = 0; i < h.batches.size(); ++i) {
        EvalResult r;
        evaluate_batch(model, h.batches[i], r);
        EvalResult& f = fam[size_t(h.families[i])];
        f.dice += r.dice, f.baseline += r.baseline, f.count += r.count;
        total.dice += r.dice, total.baseline += r.baseline, total.count += r.count;
    }
    total.dice /= double(std::max<int64_t>(1, total.count));
    total.baseline /= double(std::max<int64_t>(1, total.count));
    std::string s;
    char buf[96];
    for (int f = 0; f < universeg::kSynthFamilies; ++f) {
        if (!fam[size_t(f)].count) continue;
        std::snprintf(buf, sizeof buf, " %s %.3f/%.3f", universeg::synth_family_name(universeg::SynthFamily(f)),
                      fam[size_t(f)].dice / double(fam[size_t(f)].count), fam[size_t(f)].baseline / double(fam[size_t(f)].count));
        s += buf;
    }
    return s;
}

struct LogRow {
    int64_t step = 0;
    double elapsed = 0, lr = 0, loss = 0, grad_norm = 0, dice = -1, baseline = -1;
};

// heldout_dice is the moving average's when one is kept.
const char* kLogHeader = "step,elapsed_s,lr,loss,grad_norm,heldout_dice,baseline_dice";

std::string log_line(const LogRow& r) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%lld,%.1f,%.6g,%.6f,%.4f,", (long long)r.step, r.elapsed, r.lr, r.loss, r.grad_norm);
    std::string s = buf;
    if (r.dice >= 0) {
        std::snprintf(buf, sizeof buf, "%.4f,%.4f", r.dice, r.baseline);
        s += buf;
    } else {
        s += ",";
    }
    return s;
}

// Rows of an existing log up to `step` (a resumed run continues the same file).
std::vector<LogRow> read_log(const std::string& path, int64_t step) {
    std::vector<LogRow> rows;
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] < '0' || line[0] > '9') continue;
        std::vector<std::string> f;
        std::stringstream ss(line);
        std::string cell;
        while (std::getline(ss, cell, ',')) f.push_back(cell);
        if (f.size() < 5) continue;
        LogRow r;
        r.step = std::stoll(f[0]), r.elapsed = std::stod(f[1]), r.lr = std::stod(f[2]), r.loss = std::stod(f[3]);
        r.grad_norm = std::stod(f[4]);
        if (f.size() >= 7 && !f[5].empty()) r.dice = std::stod(f[5]), r.baseline = std::stod(f[6]);
        if (r.step <= step) rows.push_back(r);
    }
    return rows;
}

void write_log(const std::string& path, const std::vector<LogRow>& rows) {
    std::string s = std::string(kLogHeader) + "\n";
    for (const LogRow& r : rows) s += log_line(r) + "\n";
    universeg::write_file_atomic(path, std::vector<uint8_t>(s.begin(), s.end()));
}

void write_chart(const std::string& path, const std::vector<LogRow>& rows, const std::string& title) {
    Series loss{"train loss", {}, {}}, dice{"held-out Dice", {}, {}}, base{"histogram baseline", {}, {}};
    for (const LogRow& r : rows) {
        if (std::isfinite(r.loss)) loss.x.push_back(double(r.step)), loss.y.push_back(r.loss);
        if (r.dice >= 0) dice.x.push_back(double(r.step)), dice.y.push_back(r.dice), base.x.push_back(double(r.step)),
            base.y.push_back(r.baseline);
    }
    const std::string svg = line_chart_svg({title, "step", "loss / Dice", false}, {loss, dice, base});
    universeg::write_file_atomic(path, std::vector<uint8_t>(svg.begin(), svg.end()));
}

universeg::TrainOptions parse_train_options(const Args& a, int64_t steps_default, double lr_default,
                                            int64_t warmup_default, int64_t min_steps, double ema_default) {
    universeg::TrainOptions o;
    o.steps = a.get_int("--steps", steps_default, min_steps, int64_t(1) << 40);
    o.warmup = a.get_int("--warmup", std::max<int64_t>(1, std::min(warmup_default, o.steps)), 1, int64_t(1) << 40);
    o.lr = a.get_double("--lr", lr_default, 0, 1);
    o.min_lr_ratio = a.get_double("--min-lr-ratio", o.min_lr_ratio, 0, 1);
    o.weight_decay = a.get_double("--weight-decay", 0.0, 0, 1);
    o.clip = a.get_double("--clip", 1.0, 0, 1e9);
    o.loss = universeg::parse_loss(a.get("--loss", "dice+bce"));
    o.ema_decay = a.get_double("--ema", ema_default, 0, 0.999999);
    return o;
}

// Weights to start a new run from: a weights file, or a training checkpoint's shipped weights
// (its moving average).
universeg::StateDict starting_weights(const std::string& path) {
    universeg::StateDict weights = universeg::load_state_dict(path);
    if (weights.count("train.step")) weights = universeg::weights_dict(universeg::train_state_from(weights), true);
    return weights;
}

// Several processes share each step's tasks, at least one each: more would idle.
void check_ranks(const Cluster& cluster, int64_t B) {
    if (cluster.size() > B)
        throw Error("--batch " + std::to_string(B) + ": the " + std::to_string(cluster.size()) +
                    " processes share each step's tasks, so --batch must be at least " + std::to_string(cluster.size()));
}

int train(const Cluster& cluster, int argc, char** argv) {
    Args a("train", kTrainUsage, argc, argv,
           {"--out", "--config", "--steps", "--support-size", "--support-min", "--batch", "--size", "--final-size", "--final-steps", "--mix-size",
            "--mix-fraction", "--data",
            "--real-fraction", "--lr", "--warmup", "--min-lr-ratio", "--weight-decay", "--clip", "--loss", "--ema", "--seed",
            "--threads", "--resume", "--init", "--checkpoint", "--checkpoint-every", "--keep-every", "--log", "--chart", "--log-every",
            "--eval-every", "--eval-tasks", "--eval-support", "--eval-queries"},
           {"--synthetic", "--eval-only"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    const bool eval_only = a.has("--eval-only");
    if (eval_only && !a.has("--init") && !a.has("--resume"))
        throw Error("--eval-only evaluates trained weights: give them with --init W or --resume CKPT");
    if (eval_only && a.has("--data"))
        throw Error("--eval-only evaluates on the synthetic held-out tasks; for a labelled folder use finetune --steps 0");
    std::vector<std::string> data_dirs;
    if (a.has("--data")) {
        data_dirs = split_commas(a.get("--data"));
        for (const std::string& p : a.positional()) data_dirs.push_back(p);  // --data a b c
    } else if (!a.positional().empty()) {
        throw Error("unexpected argument '" + a.positional()[0] + "'");
    }
    set_threads(a.get_int("--threads", 0, 0, 1024));
    keep_freed_memory();
    const std::string out = eval_only ? a.get("--out", "") : a.get("--out");
    const std::string ckpt_path = a.get("--checkpoint", with_suffix(out, ".ckpt.safetensors"));
    const std::string log_path = a.get("--log", with_suffix(out, ".log.csv"));
    const std::string chart_path = a.get("--chart", with_suffix(out, ".svg"));
    const universeg::TrainOptions opt = parse_train_options(a, 20000, 1e-3, 500, 1, 0.999);
    const int64_t S_max = a.get_int("--support-size", 8, 1, 64);
    const int64_t S_min = a.get_int("--support-min", S_max, 1, S_max);
    const int64_t B = a.get_int("--batch", 1, 1, 64);
    if (!eval_only) check_ranks(cluster, B);
    const int64_t size = a.get_int("--size", 64, 8, 1024);
    const int64_t final_size = a.get_int("--final-size", size, 8, 1024);
    const int64_t final_steps = a.get_int("--final-steps", 0, 0, opt.steps);
    const int64_t mix_size = a.get_int("--mix-size", size, 8, 1024);
    const double mix_fraction = a.get_double("--mix-fraction", 0.0, 0, 1);
    const int64_t ckpt_every = a.get_int("--checkpoint-every", 500, 1, int64_t(1) << 40);
    const int64_t keep_every = a.get_int("--keep-every", 0, 0, int64_t(1) << 40);
    const int64_t log_every = a.get_int("--log-every", 50, 1, int64_t(1) << 40);
    const int64_t eval_every = a.get_int("--eval-every", 1000, 1, int64_t(1) << 40);
    const int64_t eval_tasks = a.get_int("--eval-tasks", 24, eval_only ? 1 : 0, 10000);
    const int64_t eval_S = a.get_int("--eval-support", 16, 1, 64);
    const int64_t eval_Q = a.get_int("--eval-queries", 2, 1, 64);
    const bool synthetic = a.has("--synthetic") || data_dirs.empty();
    const double real_fraction = data_dirs.empty() ? 0.0 : synthetic ? a.get_double("--real-fraction", 0.5, 0, 1) : 1.0;

    universeg::TrainState st;
    std::vector<LogRow> rows;
    double elapsed_before = 0;
    const uint64_t seed = uint64_t(a.get_int("--seed", 0, 0, INT64_MAX));
    if (a.has("--resume") && a.has("--init"))
        throw Error("--resume and --init exclude each other: --resume continues a run, --init starts a new one from weights");
    if (a.has("--resume")) {
        const universeg::StateDict sd = universeg::load_safetensors(a.get("--resume"));
        if (!sd.count("train.step"))
            throw Error(a.get("--resume") + ": not a training checkpoint (no train.step); to start from weights use finetune");
        st = universeg::train_state_from(sd);
        if (a.has("--config") && universeg::parse_config(a.get("--config"), "--config").encoder != st.config.encoder)
            throw Error("--config " + a.get("--config") + " differs from the checkpoint's " + st.config.to_string());
        if (a.has("--seed") && seed != st.seed)
            throw Error("--seed differs from the checkpoint's seed " + std::to_string(st.seed));
        auto it = sd.find("train.elapsed_s");
        if (it != sd.end() && it->second.numel() == 1) elapsed_before = double(it->second.data[0]);
        if (!eval_only) rows = read_log(log_path, st.step);
        std::printf("%s %s at step %lld\n", eval_only ? "evaluating" : "resumed", a.get("--resume").c_str(), (long long)st.step);
    } else if (a.has("--init")) {
        st = universeg::train_state_from(starting_weights(a.get("--init")), seed);
        if (a.has("--config") && universeg::parse_config(a.get("--config"), "--config").encoder != st.config.encoder)
            throw Error("--config " + a.get("--config") + " differs from " + a.get("--init") + "'s " + st.config.to_string());
        std::printf("%s the weights in %s\n", eval_only ? "evaluating" : "starting from", a.get("--init").c_str());
    } else {
        const universeg::Config config = universeg::parse_config(a.get("--config", "[32,32,32,32]"), "--config");
        st = universeg::init_train_state(config, seed);
    }
    for (int64_t s : {size, final_size, mix_size})
        if (s % st.config.size_multiple())
            throw Error("size " + std::to_string(s) + " is not a multiple of " + std::to_string(st.config.size_multiple()));
    const int64_t switch_step = opt.steps - final_steps;  // steps from here on use final_size
    std::map<int64_t, universeg::FolderTasks> folders;   // by size
    if (!data_dirs.empty()) {
        for (int64_t s : {size, final_size})
            if (!folders.count(s)) folders[s] = universeg::load_folder_tasks(data_dirs, s);
        const universeg::FolderTasks& f = folders.begin()->second;
        std::printf("data: %zu images, %zu tasks from %zu folders\n", f.images.size(), f.tasks.size(), data_dirs.size());
    }
    if (eval_only && !cluster.root()) return 0;  // rank 0 evaluates
    if (cluster.size() > 1)
        std::printf("%d processes (MPI) share each step's %lld tasks\n", cluster.size(), (long long)B);
    if (eval_only)
        std::printf("model %s, %lld parameters; held-out: %lld tasks at %lldx%lld, %lld supports and %lld queries each\n",
                    st.config.to_string().c_str(), (long long)universeg::param_count(st.layout), (long long)eval_tasks,
                    (long long)final_size, (long long)final_size, (long long)eval_S, (long long)eval_Q);
    else
        std::printf("model %s, %lld parameters; size %lld (%lld from step %lld; %lld on a share %g of the steps), supports "
                    "%lld..%lld, batch %lld, %lld steps, lr %g\n",
                    st.config.to_string().c_str(), (long long)universeg::param_count(st.layout), (long long)size,
                    (long long)final_size, (long long)switch_step, (long long)mix_size, mix_fraction, (long long)S_min,
                    (long long)S_max, (long long)B, (long long)opt.steps, opt.lr);
    // Rank 0 evaluates; the others have nothing to evaluate on.
    const HeldOut held_out = make_held_out(cluster.root() ? eval_tasks : 0, eval_S, eval_Q, final_size);
    std::fflush(stdout);

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    const auto t0 = std::chrono::steady_clock::now();
    auto elapsed = [&] { return elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
    auto save = [&](bool final) {
        if (!cluster.root()) return;
        universeg::StateDict ck = universeg::checkpoint_dict(st);
        ck["train.elapsed_s"] = universeg::Tensor({1}, float(elapsed()));
        const std::map<std::string, std::string> meta{{"format", "universeg training checkpoint"},
                                                      {"universeg_config", st.config.to_string()},
                                                      {"step", std::to_string(st.step)}};
        universeg::save_safetensors(ckpt_path, ck, meta);
        const std::map<std::string, std::string> weights_meta{
            {"universeg_config", st.config.to_string()}, {"step", std::to_string(st.step)},
            {"weights", st.ema.empty() ? "raw" : "moving average"}, {"image_size", std::to_string(final_size)},
            {"trainer", "universeg train (this project)"}};
        universeg::save_safetensors(out, universeg::weights_dict(st, true), weights_meta);
        if (keep_every && st.step % keep_every == 0)
            universeg::save_safetensors(with_suffix(out, "-step" + std::to_string(st.step) + ".safetensors"),
                                        universeg::weights_dict(st, true), weights_meta);
        write_log(log_path, rows);
        write_chart(chart_path, rows, "UniverSeg training " + st.config.to_string());
        std::printf("%s checkpoint at step %lld -> %s\n", final ? "final" : "saved", (long long)st.step, ckpt_path.c_str());
    };
    auto eval = [&](LogRow& row) {
        if (held_out.batches.empty()) return;
        EvalResult r;
        const std::string fam = evaluate_held_out(universeg::make_model(st), held_out, r);
        row.dice = r.dice, row.baseline = r.baseline;
        std::printf("step %lld held-out Dice %.4f (histogram baseline %.4f) by family model/baseline:%s\n",
                    (long long)st.step, r.dice, r.baseline, fam.c_str());
        if (st.ema.empty()) return;
        EvalResult e;
        const std::string efam = evaluate_held_out(universeg::make_model(st, true), held_out, e);
        row.dice = e.dice;
        std::printf("step %lld held-out Dice of the moving average %.4f by family:%s\n", (long long)st.step, e.dice,
                    efam.c_str());
    };
    if (eval_only) {
        LogRow row;
        eval(row);
        return 0;
    }
    if (st.step == 0) {  // the untrained model's Dice (no loss yet)
        LogRow row;
        row.loss = row.grad_norm = row.lr = std::nan("");
        eval(row);
        if (row.dice >= 0) rows.push_back(row);
    }

    universeg::TrainWorkspace ws;
    const universeg::Collective comm = cluster.collective();
    const universeg::TaskRange mine = universeg::rank_tasks(B, cluster.rank(), cluster.size());
    double loss_sum = 0, norm_sum = 0, lr = 0;
    int64_t since = 0;
    // A signal reaches each rank on its own: all stop after the same step.
    while (st.step < opt.steps && !cluster.any(g_stop)) {
        const int64_t step = st.step;
        universeg::Rng pick(universeg::seed_from({st.seed, uint64_t(step), 0x5E1Eull}));
        const int64_t S = S_min + pick.below(S_max - S_min + 1);
        const bool real = pick.uniform() < real_fraction;
        const bool mixed = pick.uniform() < mix_fraction;  // drawn last: S and real do not depend on it
        // Real tasks keep the size: their finest structures (vessels a pixel wide) do not survive halving.
        const int64_t n = mixed && !real ? mix_size : step < switch_step ? size : final_size;
        // This process's tasks of the step only.
        const universeg::Batch batch =
            real ? universeg::folder_batch(folders.at(n), st.seed, step, mine.count, S, true, mine.first)
                 : universeg::synthetic_batch(st.seed, step, mine.count, S, n, mine.first);
        const universeg::StepResult r = universeg::train_step(st, batch, B, opt, ws, comm);
        loss_sum += r.loss, norm_sum += r.grad_norm, lr = r.lr, ++since;
        const bool log_now = st.step % log_every == 0 || st.step == opt.steps;
        const bool eval_now = st.step % eval_every == 0 || st.step == opt.steps;
        if (log_now || eval_now) {
            LogRow row;
            row.step = st.step, row.elapsed = elapsed(), row.lr = lr, row.loss = loss_sum / double(since);
            row.grad_norm = norm_sum / double(since);
            loss_sum = norm_sum = 0, since = 0;
            if (eval_now) eval(row);
            rows.push_back(row);
            std::printf("step %lld loss %.4f grad-norm %.3f lr %.3g elapsed %.0f s\n", (long long)row.step, row.loss,
                        row.grad_norm, row.lr, row.elapsed);
            std::fflush(stdout);
        }
        if (st.step % ckpt_every == 0 && st.step < opt.steps) save(false);
        std::fflush(stdout);
    }
    save(true);
    if (cluster.gathers())
        std::printf("allgather of the tasks' gradients: %.1f ms per step (communication, and waiting for the slowest rank)\n",
                    1e3 * cluster.gather_seconds() / double(cluster.gathers()));
    if (st.step < opt.steps) std::printf("stopped by a signal at step %lld; resume with --resume %s\n", (long long)st.step, ckpt_path.c_str());
    return 0;
}

int finetune(const Cluster& cluster, int argc, char** argv) {
    Args a("finetune", kFinetuneUsage, argc, argv,
           {"--weights", "--support", "--out", "--steps", "--holdout", "--support-size", "--train-support", "--size",
            "--lr", "--warmup", "--min-lr-ratio", "--weight-decay", "--clip", "--loss", "--seed", "--threads", "--batch"});
    if (a.help()) return std::fputs(a.usage().c_str(), stdout), 0;
    if (!a.positional().empty()) throw Error("unexpected argument '" + a.positional()[0] + "'");
    set_threads(a.get_int("--threads", 0, 0, 1024));
    keep_freed_memory();
    const std::string dir = a.get("--support");
    const universeg::TrainOptions opt = parse_train_options(a, 200, 1e-3, 20, 0, 0.0);
    const std::string out = opt.steps ? a.get("--out") : a.get("--out", "");
    const double holdout = a.get_double("--holdout", 0.25, 0, 0.9);
    const int64_t eval_S = a.get_int("--support-size", 16, 1, 64);
    const int64_t train_S = a.get_int("--train-support", 8, 1, 64);
    const int64_t size = a.get_int("--size", 128, 8, 1024);
    const int64_t B = a.get_int("--batch", 1, 1, 64);
    if (opt.steps) check_ranks(cluster, B);
    const uint64_t seed = uint64_t(a.get_int("--seed", 0, 0, INT64_MAX));

    universeg::TrainState st = universeg::train_state_from(starting_weights(weights_option(a)), seed);  // fresh optimiser
    if (size % st.config.size_multiple())
        throw Error("--size " + std::to_string(size) + " is not a multiple of " + std::to_string(st.config.size_multiple()));
    const universeg::FolderTasks data = universeg::load_folder_tasks({dir}, size);
    const int64_t n = int64_t(data.images.size());
    if (n < 3) throw Error(dir + ": fine-tuning needs at least 3 labelled images (some are held out), found " + std::to_string(n));

    // Held-out split: a seeded shuffle, at least one image out and (without sources.csv) two in.
    std::vector<int64_t> order(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[size_t(i)] = i;
    universeg::Rng rng(universeg::seed_from({seed, 0x5B117ull}));
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[size_t(rng.below(i + 1))]);
    const int64_t n_out = std::min(n - 2, std::max<int64_t>(1, int64_t(std::lround(holdout * double(n)))));
    // A held-out image takes the other images of its source (the slices of its volume) along,
    // so that no held-out query is predicted from its neighbours.
    std::vector<bool> held(size_t(n), false);
    int64_t n_held = 0;
    for (int64_t k = 0; k < n && n_held < n_out; ++k) {
        const int64_t source = data.sources[size_t(order[size_t(k)])];
        for (int64_t i = 0; i < n; ++i)
            if (!held[size_t(i)] && data.sources[size_t(i)] == source) held[size_t(i)] = true, ++n_held;
    }

    universeg::FolderTasks train = data;
    train.tasks.clear();
    for (const universeg::FolderTask& t : data.tasks) {
        universeg::FolderTask u = t;
        u.images.clear();
        for (int64_t i : t.images)
            if (!held[size_t(i)]) u.images.push_back(i);
        if (universeg::spans_two_sources(data, u.images)) train.tasks.push_back(u);
    }
    if (train.tasks.empty()) throw Error(dir + ": no label value appears in training images of two or more sources");

    // Held-out evaluation: every task, every held-out image showing its label, supports = the
    // first eval_S training images showing it (a fixed choice, the same before and after).
    auto evaluate = [&](const universeg::Model& model, double& baseline, std::string& detail) {
        EvalResult total;
        detail.clear();
        for (const universeg::FolderTask& t : train.tasks) {
            std::vector<int64_t> queries;
            for (const universeg::FolderTask& full : data.tasks)
                if (full.value == t.value)
                    for (int64_t i : full.images)
                        if (held[size_t(i)]) queries.push_back(i);
            if (queries.empty()) continue;
            std::vector<int64_t> supports(t.images.begin(), t.images.begin() + std::min<int64_t>(eval_S, int64_t(t.images.size())));
            EvalResult r;
            evaluate_batch(model, universeg::folder_split_batch(data, t.value, supports, queries), r);
            char buf[128];
            std::snprintf(buf, sizeof buf, "  label %lld: Dice %.4f, histogram baseline %.4f (%lld queries, %zu supports)\n",
                          (long long)t.value, r.dice / double(r.count), r.baseline / double(r.count), (long long)r.count,
                          supports.size());
            detail += buf;
            total.dice += r.dice, total.baseline += r.baseline, total.count += r.count;
        }
        if (!total.count) throw Error(dir + ": no held-out image shows a label of the training images; use more images");
        baseline = total.baseline / double(total.count);
        return total.dice / double(total.count);
    };

    std::printf("%s: %lld images (%lld held out), %zu tasks; model %s\n", dir.c_str(), (long long)n, (long long)n_held,
                train.tasks.size(), st.config.to_string().c_str());
    if (cluster.size() > 1 && opt.steps)
        std::printf("%d processes (MPI) share each step's %lld tasks\n", cluster.size(), (long long)B);
    // Rank 0 evaluates, before and after.
    double base = 0, before = 0;
    std::string detail;
    if (cluster.root()) {
        before = evaluate(universeg::make_model(st), base, detail);
        std::printf("held-out Dice before: %.4f (histogram baseline %.4f)\n%s", before, base, detail.c_str());
        std::fflush(stdout);
    }
    if (opt.steps == 0) return 0;

    universeg::TrainWorkspace ws;
    const universeg::Collective comm = cluster.collective();
    const universeg::TaskRange mine = universeg::rank_tasks(B, cluster.rank(), cluster.size());
    const auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    int64_t since = 0;
    while (st.step < opt.steps) {
        const universeg::Batch batch = universeg::folder_batch(train, seed, st.step, mine.count, train_S, false, mine.first);
        loss_sum += universeg::train_step(st, batch, B, opt, ws, comm).loss, ++since;
        if (st.step % 20 == 0 || st.step == opt.steps) {
            std::printf("step %lld loss %.4f (%.0f s)\n", (long long)st.step, loss_sum / double(since),
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            std::fflush(stdout);
            loss_sum = 0, since = 0;
        }
    }
    if (!cluster.root()) return 0;
    const double after = evaluate(universeg::make_model(st), base, detail);
    std::printf("held-out Dice after %lld steps: %.4f (before %.4f, histogram baseline %.4f)\n%s", (long long)opt.steps,
                after, before, base, detail.c_str());
    universeg::save_safetensors(out, universeg::weights_dict(st, true),
                                {{"universeg_config", st.config.to_string()},
                                 {"finetuned_on", dir},
                                 {"image_size", std::to_string(size)},
                                 {"steps", std::to_string(opt.steps)}});
    std::printf("wrote %s\n", out.c_str());
    return 0;
}

// A failing rank ends the whole job (the others would wait for it forever); one process reports
// as every command does.
int run_on(const char* command, int (*body)(const Cluster&, int, char**), int argc, char** argv) {
    const Cluster cluster(command);
    try {
        return body(cluster, argc, argv);
    } catch (const std::bad_alloc&) {
        cluster.abort_if_several("out of memory");
        throw;
    } catch (const std::exception& e) {
        cluster.abort_if_several(e.what());
        throw;
    }
}

}  // namespace

int cmd_train(int argc, char** argv) { return run_on("train", train, argc, argv); }
int cmd_finetune(int argc, char** argv) { return run_on("finetune", finetune, argc, argv); }

}  // namespace cli
