// The Cluster of cluster.hpp: over MPI where the build has it (-DUNIVERSEG_MPI=ON, which defines
// UNIVERSEG_WITH_MPI for this file), else one process.
#include "cluster.hpp"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>

#ifdef UNIVERSEG_WITH_MPI
#include <mpi.h>
#endif

namespace cli {

#ifdef UNIVERSEG_WITH_MPI

Cluster::Cluster(const std::string& command) : command_(command) {
    int ready = 0;
    MPI_Initialized(&ready);
    if (!ready) {
        // OpenMP threads compute; only this thread talks to MPI.
        int provided = 0;
        MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    // One log per job: rank 0's.
    if (rank_ != 0 && !std::freopen("/dev/null", "w", stdout))
        std::fprintf(stderr, "universeg %s: rank %d: cannot silence stdout\n", command.c_str(), rank_);
}

Cluster::~Cluster() {
    int done = 0;
    MPI_Finalized(&done);
    if (!done) MPI_Finalize();
}

universeg::Collective Cluster::collective() const {
    universeg::Collective c;
    c.rank = rank_, c.size = size_;
    c.allgather = [this](const float* mine, float* all, size_t count) {
        if (count > size_t(INT_MAX)) throw Error("a step's gradients exceed MPI's count limit: use a smaller --batch or more ranks");
        const auto t0 = std::chrono::steady_clock::now();
        MPI_Allgather(mine, int(count), MPI_FLOAT, all, int(count), MPI_FLOAT, MPI_COMM_WORLD);
        gather_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++gathers_;
    };
    return c;
}

bool Cluster::any(bool flag) const {
    int mine = flag ? 1 : 0, any = 0;
    MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any != 0;
}

void Cluster::abort_if_several(const std::string& message) const {
    if (size_ < 2) return;
    std::fprintf(stderr, "universeg %s: error: rank %d of %d: %s\n", command_.c_str(), rank_, size_, one_line(message).c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::exit(1);  // MPI_Abort does not return; in case an implementation does
}

#else

Cluster::Cluster(const std::string& command) : command_(command) {
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
        const char* value = std::getenv(var);
        if (value && std::atoi(value) > 1)
            throw Error(std::string("started as one of ") + value + " processes (" + var + "=" + value +
                        "), but this build has no MPI support: each would train alone and write the same files; "
                        "configure with -DUNIVERSEG_MPI=ON (docs/cluster.md), or run one process");
    }
}

Cluster::~Cluster() = default;

universeg::Collective Cluster::collective() const { return {}; }

bool Cluster::any(bool flag) const { return flag; }

void Cluster::abort_if_several(const std::string&) const {}

#endif

}  // namespace cli
