// The allgather of data-parallel training (include/universeg/train/distributed.hpp) alone: per
// step every rank sends one record per task it computed (the task's gradient, P floats, and its
// loss in two), padded to the largest share, and receives every rank's. Median and minimum over
// repeats of one allgather between barriers, for the v1 width and the half width, 1 and 2 tasks
// per rank. Built with -DUNIVERSEG_MPI=ON:
//   mpirun -np N build-mpi/bench/bench_mpi_allgather [REPEATS=20]
#include <universeg/core/network.hpp>

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    const int repeats = argc > 1 ? std::max(1, std::atoi(argv[1])) : 20;
    if (rank == 0) std::printf("config\tparameters\tranks\ttasks_per_rank\treceived_mb\tmedian_ms\tmin_ms\n");
    for (const char* config : {"v1", "[32,32,32,32]"}) {
        const size_t P = size_t(universeg::param_count(universeg::param_layout(universeg::parse_config(config))));
        for (size_t tasks : {1, 2}) {
            const size_t count = tasks * (P + 2);
            std::vector<float> mine(count, float(rank)), all(count * size_t(size));
            std::vector<double> ms;
            for (int r = -2; r < repeats; ++r) {  // two warm-up rounds
                MPI_Barrier(MPI_COMM_WORLD);
                const auto t0 = std::chrono::steady_clock::now();
                MPI_Allgather(mine.data(), int(count), MPI_FLOAT, all.data(), int(count), MPI_FLOAT, MPI_COMM_WORLD);
                const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
                if (r >= 0) ms.push_back(t);
            }
            std::sort(ms.begin(), ms.end());
            if (rank == 0)
                std::printf("%s\t%zu\t%d\t%zu\t%.1f\t%.2f\t%.2f\n", config, P, size, tasks,
                            double(count) * 4 * double(size - 1) / 1e6, ms[ms.size() / 2], ms[0]);
        }
    }
    MPI_Finalize();
    return 0;
}
