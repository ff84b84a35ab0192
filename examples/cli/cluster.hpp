// cluster.hpp - the processes `universeg train` and `finetune` run as: one, or the ranks of an
// MPI job in a build with -DUNIVERSEG_MPI=ON (started by mpirun or srun). Rank 0 alone speaks
// and writes; the others' stdout goes nowhere. docs/cluster.md.
#pragma once

#include "cli.hpp"

#include <universeg/train/distributed.hpp>

namespace cli {

class Cluster {
public:
    // Joins the job (MPI_Init) in an MPI build. A build without MPI started as one of several
    // processes (mpirun or srun set OMPI_COMM_WORLD_SIZE or PMI_SIZE) refuses to run: N
    // independent trainings writing the same files would be the result.
    explicit Cluster(const std::string& command);
    ~Cluster();  // MPI_Finalize
    Cluster(const Cluster&) = delete;
    Cluster& operator=(const Cluster&) = delete;

    int rank() const { return rank_; }
    int size() const { return size_; }
    bool root() const { return rank_ == 0; }
    // The library's view of the job: an allgather over every rank, or one process.
    universeg::Collective collective() const;
    // Whether any rank passes true (every rank calls it, at the same point).
    bool any(bool flag) const;
    // The collective's calls so far and the seconds spent in them (communication and waiting for
    // the slowest rank).
    int64_t gathers() const { return gathers_; }
    double gather_seconds() const { return gather_seconds_; }
    // Where several ranks run: "universeg COMMAND: error: rank R of N: MESSAGE" on stderr, and
    // the whole job ends with exit code 1 (MPI_Abort), where the other ranks would wait forever
    // for this one. A single process returns, and the caller reports as usual.
    void abort_if_several(const std::string& message) const;

private:
    std::string command_;
    int rank_ = 0, size_ = 1;
    mutable int64_t gathers_ = 0;
    mutable double gather_seconds_ = 0;
};

}  // namespace cli
