// universeg/train/distributed.hpp - data-parallel training: the B tasks of a step shared by
// several processes (ranks), with the same weights after every step as one process training on
// all B (train.hpp's train_step), bit for bit.
//
//   Collective comm{rank, size, allgather};                  // e.g. over MPI (examples/cli/cluster.cpp)
//   const TaskRange mine = rank_tasks(B, comm.rank, comm.size);
//   Batch b = synthetic_batch(seed, step, mine.count, S, size, mine.first);  // this rank's tasks only
//   StepResult r = train_step(st, b, B, options, ws, comm);
//
// Each rank computes the gradient of each of its tasks alone (task_gradient), the ranks gather
// all of them (an allgather, not a sum: the order in which a reduction adds is unspecified), and
// every rank adds them up in task order and applies the same update. The library has no MPI in
// it: the collective is a function that the caller provides.
#pragma once

#include "train.hpp"

#include <cstring>
#include <functional>

namespace universeg {

// The processes a step is shared by, and how they exchange data. For one process, the default.
struct Collective {
    int rank = 0, size = 1;
    // Called by every rank at once with `count` floats of its own; fills `all` with size * count
    // floats, rank r's at r * count. Needed where size > 1.
    std::function<void(const float* mine, float* all, size_t count)> allgather;
};

// A block of consecutive tasks of a step: tasks first .. first + count - 1.
struct TaskRange {
    int64_t first = 0, count = 0;
};

// The tasks of a B-task step that `rank` of `size` computes: consecutive blocks in rank order,
// their sizes differing by at most one (the first B % size ranks take one more).
inline TaskRange rank_tasks(int64_t B, int rank, int size) {
    if (B < 0 || size < 1 || rank < 0 || rank >= size)
        throw Error("rank_tasks: rank " + std::to_string(rank) + " of " + std::to_string(size) + ", " + std::to_string(B) +
                    " tasks");
    const int64_t base = B / size, extra = B % size;
    return {rank * base + std::min<int64_t>(rank, extra), base + (rank < extra ? 1 : 0)};
}

// One step of B tasks over the ranks of `comm`, `mine` holding this rank's tasks
// (rank_tasks(B, ...)): each task's gradient and loss, gathered from every rank, summed in task
// order, then clipping and one Adam step, as train_step(s, all B tasks) does. Every rank must
// call it with the same state. With comm.size 1 it is train_step(s, mine).
inline StepResult train_step(TrainState& s, const Batch& mine, int64_t B, const TrainOptions& o, TrainWorkspace& ws,
                             const Collective& comm) {
    const TaskRange range = rank_tasks(B, comm.rank, comm.size);
    if (mine.B != range.count)
        throw Error("train_step: rank " + std::to_string(comm.rank) + " of " + std::to_string(comm.size) + " holds " +
                    std::to_string(mine.B) + " tasks of " + std::to_string(B) + ", not " + std::to_string(range.count));
    if (comm.size == 1) return train_step(s, mine, o, ws);
    if (!comm.allgather) throw Error("train_step: a collective of " + std::to_string(comm.size) + " ranks without an allgather");
    // Each rank sends the same number of records (the largest block), one per task: its gradient,
    // then its loss's 8 bytes in two floats.
    const size_t P = s.params.size(), record = P + 2;
    const int64_t slots = (B + comm.size - 1) / comm.size;
    const FlushSubnormals flush;
    ws.task_grad.assign(size_t(slots) * record, 0.0f);
    for (int64_t k = 0; k < range.count; ++k) {
        float* rec = ws.task_grad.data() + size_t(k) * record;
        const double loss = task_gradient(s, mine, k, B, o, ws, rec);
        std::memcpy(rec + P, &loss, sizeof loss);
    }
    ws.gathered.resize(size_t(comm.size) * ws.task_grad.size());
    comm.allgather(ws.task_grad.data(), ws.gathered.data(), ws.task_grad.size());
    // Rank by rank, each rank's tasks in order: task order, summed as train_step sums them.
    ws.grad.resize(P);
    double loss = 0;
    for (int q = 0; q < comm.size; ++q) {
        const TaskRange theirs = rank_tasks(B, q, comm.size);
        for (int64_t k = 0; k < theirs.count; ++k) {
            const float* rec = ws.gathered.data() + (size_t(q) * size_t(slots) + size_t(k)) * record;
            double task_loss;
            std::memcpy(&task_loss, rec + P, sizeof task_loss);
            if (theirs.first + k == 0) {
                std::copy(rec, rec + P, ws.grad.begin());
                loss = task_loss;
            } else {
                for (size_t i = 0; i < P; ++i) ws.grad[i] += rec[i];
                loss += task_loss;
            }
        }
    }
    return apply_gradient(s, ws.grad, loss, o);
}

}  // namespace universeg
