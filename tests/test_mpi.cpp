// `universeg train` and `finetune` over MPI (built with -DUNIVERSEG_MPI=ON; the ctest entry
// test_mpi): two ranks under mpirun train the weights one process trains, bit for bit; a run
// resumes under another number of ranks; a rank that fails ends the job with a non-zero exit
// code and a message naming the rank.
#include "test_util.hpp"

#include <universeg/io/safetensors.hpp>

#include <filesystem>
#include <sstream>

using namespace universeg;
using namespace test;
namespace fs = std::filesystem;

#if defined(UNIVERSEG_CLI) && defined(UNIVERSEG_MPIEXEC)

namespace {

const std::string kData = std::string(UNIVERSEG_TEST_DATA) + "/";

// `universeg ARGS`, alone or under `mpirun -np 2`, one thread per process.
Run cli(const TempDir& dir, const std::string& args, bool two_ranks) {
    const std::string cmd = std::string(two_ranks ? UNIVERSEG_MPIEXEC " " : "") + quote(UNIVERSEG_CLI) + " " + args;
    const Run r = run_shell("OMP_NUM_THREADS=1 " + cmd, dir);
    INFO(cmd << "\nstdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.rc >= 0);
    return r;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// A training log without its elapsed_s column, the one thing that differs between runs.
std::string without_elapsed(const std::string& log) {
    std::stringstream in(log);
    std::string out, line;
    while (std::getline(in, line)) {
        const size_t a = line.find(','), b = line.find(',', a + 1);
        out += line.substr(0, a) + line.substr(b) + "\n";
    }
    return out;
}

// Every tensor of the two files, bit for bit, but the elapsed time a checkpoint keeps.
void require_same_tensors(const std::string& a, const std::string& b) {
    StateDict x = load_safetensors(a), y = load_safetensors(b);
    x.erase("train.elapsed_s"), y.erase("train.elapsed_s");
    REQUIRE(x.size() == y.size());
    for (const auto& kv : x) {
        INFO(kv.first);
        REQUIRE(y.count(kv.first));
        REQUIRE(y.at(kv.first).shape == kv.second.shape);
        REQUIRE(same_bits(y.at(kv.first).data, kv.second.data));
    }
}

}  // namespace

TEST_CASE("train over 2 MPI ranks: the weights of one process, bit for bit; resume under any number of ranks", "[mpi]") {
    TempDir dir("mpitrain");
    const std::string common = "train --threads 1 --config '[8,8]' --size 16 --support-min 2 --support-size 3 --eval-tasks 2 "
                               "--eval-support 2 --eval-queries 1 --eval-every 10 --checkpoint-every 10 --seed 5 ";
    for (const char* batch : {"2", "3"}) {  // 3: one rank takes two tasks, the other one
        INFO("--batch " << batch);
        const std::string args = common + "--batch " + batch + " --steps 20 ";
        const Run one = cli(dir, args + "--out '" + dir / "one.safetensors" + "'", false);
        REQUIRE(one.rc == 0);
        const Run two = cli(dir, args + "--out '" + dir / "two.safetensors" + "'", true);
        REQUIRE(two.rc == 0);
        REQUIRE(contains(two.out, "2 processes (MPI) share each step's " + std::string(batch) + " tasks"));
        REQUIRE(read_file(dir / "two.safetensors") == read_file(dir / "one.safetensors"));
        require_same_tensors(dir / "one.ckpt.safetensors", dir / "two.ckpt.safetensors");
        // Rank 0 alone speaks: one log line per step logged, as one process prints it.
        REQUIRE(two.out.find("step 20 loss") == two.out.rfind("step 20 loss"));
        REQUIRE(without_elapsed(slurp(dir / "two.log.csv")) == without_elapsed(slurp(dir / "one.log.csv")));
    }
    // From step 20 of the --batch 3 run, 10 more steps by two ranks and by one process.
    fs::copy_file(dir / "one.ckpt.safetensors", dir / "step20.ckpt.safetensors");
    for (const char* who : {"one", "two"}) {
        const std::string ckpt = dir / (std::string(who) + ".ckpt.safetensors");
        fs::copy_file(dir / "step20.ckpt.safetensors", ckpt, fs::copy_options::overwrite_existing);
        const Run r = cli(dir, common + "--batch 3 --steps 30 --resume '" + ckpt + "' --out '" + dir / (std::string(who) + ".safetensors") + "'",
                                std::string(who) == "two");
        REQUIRE(r.rc == 0);
        REQUIRE(contains(r.out, "resumed"));
    }
    REQUIRE(read_file(dir / "two.safetensors") == read_file(dir / "one.safetensors"));

    // More ranks than tasks: refused, naming --batch, with a non-zero exit code.
    Run r = cli(dir, common + "--batch 1 --steps 2 --out '" + dir / "x.safetensors" + "'", true);
    REQUIRE(r.rc != 0);
    REQUIRE(contains(r.err, "--batch must be at least 2"));
    // Rank 0 fails alone (it writes, into a folder that is not there) while rank 1 waits for it
    // in the next step: the job ends, the message names the rank and the file.
    r = cli(dir, common + "--batch 2 --steps 20 --out '" + dir / "nowhere/x.safetensors" + "'", true);
    REQUIRE(r.rc != 0);
    REQUIRE(contains(r.err, "universeg train: error: rank 0 of 2: "));
    REQUIRE(contains(r.err, dir / "nowhere/x"));
}

TEST_CASE("finetune over 2 MPI ranks: the weights of one process, bit for bit", "[mpi]") {
    TempDir dir("mpifinetune");
    const std::string args = "finetune --threads 1 --weights '" + kData + "golden/custom_b1_s3_48x80/weights.pt' --size 16 "
                             "--support '" + kData + "../../examples/data/cells/support' --steps 6 --batch 2 --train-support 3 ";
    REQUIRE(cli(dir, args + "--out '" + dir / "one.safetensors" + "'", false).rc == 0);
    const Run two = cli(dir, args + "--out '" + dir / "two.safetensors" + "'", true);
    REQUIRE(two.rc == 0);
    REQUIRE(contains(two.out, "held-out Dice after 6 steps"));
    REQUIRE(read_file(dir / "two.safetensors") == read_file(dir / "one.safetensors"));
}

#endif
