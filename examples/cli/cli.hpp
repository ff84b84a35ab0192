// cli.hpp - what every `universeg` subcommand shares: argument parsing, thread setup and
// the one-line error convention (message on stderr, exit code 1).
#pragma once

#include <universeg/core/tensor.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace universeg {
class Model;
}

namespace cli {

using universeg::Error;

// `--name value` options, `--name` switches and positional arguments of one subcommand.
// Unknown options and missing values are errors naming the option; `--help` prints usage.
class Args {
public:
    Args(const std::string& command, const std::string& usage, int argc, char** argv,
         const std::vector<std::string>& value_options, const std::vector<std::string>& switches = {});

    bool help() const { return help_; }
    bool has(const std::string& name) const { return values_.count(name) || switches_.count(name); }
    const std::vector<std::string>& positional() const { return positional_; }

    std::string get(const std::string& name) const;  // required
    std::string get(const std::string& name, const std::string& fallback) const;
    int64_t get_int(const std::string& name, int64_t fallback, int64_t min, int64_t max) const;
    double get_double(const std::string& name, double fallback, double min, double max) const;

    const std::string& command() const { return command_; }
    const std::string& usage() const { return usage_; }

private:
    std::string command_, usage_;
    std::map<std::string, std::string> values_;
    std::set<std::string> switches_;
    std::vector<std::string> positional_;
    bool help_ = false;
};

// The weights file of --weights, else the default: $UNIVERSEG_WEIGHTS (a file, or a folder
// holding one), then weights/ next to the executable, the install prefix's
// share/universeg/weights, and the source tree's weights/. Throws when none is found.
std::string weights_option(const Args& a);

// Applies --threads N (0 = the OpenMP default) to OpenMP and Eigen.
void set_threads(int64_t n);

// An error message fit for one line of stderr: control characters (which a hostile file can
// put into the names a message quotes) escaped as \n or \xNN.
std::string one_line(const std::string& message);

// --device cuda for run and bench (cuda_device.cpp): the forward pass on the current CUDA
// device, precision fp32 (TF32 off), tf32 or bf16. In a build without -DUNIVERSEG_CUDA=ON,
// require_cuda() and both calls throw "this build has no CUDA support; ...".
struct CudaRun {
    std::string device;      // the GPU's name
    std::vector<double> ms;  // cuda_bench: each timed forward pass (CUDA events, inputs already on the GPU)
    double device_mb = 0;    // weights + workspace on the GPU
};
void require_cuda();
CudaRun cuda_forward(const universeg::Model& model, const std::string& precision, const float* query,
                     const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                     int64_t W, float* logits);
// One warm-up, then `repeats` timed forward passes.
CudaRun cuda_bench(const universeg::Model& model, const std::string& precision, const float* query,
                   const float* support_images, const float* support_labels, int64_t B, int64_t S, int64_t H,
                   int64_t W, int64_t repeats);

// Subcommands: each takes the arguments after its name, returns the exit code.
int cmd_run(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_segment(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_finetune(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_bench_chart(int argc, char** argv);
int cmd_compare(int argc, char** argv);
int cmd_make_case(int argc, char** argv);

}  // namespace cli
