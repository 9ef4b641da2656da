#include "server/core/exec/outcome_pruner.h"

#include <algorithm>
#include <utility>

#include "server/core/base/mutex.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {

struct OutcomePruner::State : std::enable_shared_from_this<State> {
  State(StatementRunner& r, TimerQueue& t, const Clock& c, RequestOutcomes& o)
      : runner(r), timers(t), clock(c), outcomes(o) {}

  absl::Duration Interval() const {
    return std::clamp(outcomes.options().window / 2, absl::Seconds(1), absl::Hours(1));
  }

  void ScheduleNext() {
    MutexLock lock(&mu);
    if (stopped) return;
    auto self = shared_from_this();
    timer = timers.Schedule(clock.Now() + Interval(), [self] { self->RunOnce(); });
  }

  // Runs first_run_done, once.
  void FirstRunDone() {
    absl::AnyInvocable<void() &&> done;
    {
      MutexLock lock(&mu);
      done = std::move(first_run_done);
      first_run_done = nullptr;
    }
    if (done != nullptr) std::move(done)();
  }

  void RunOnce() {
    {
      MutexLock lock(&mu);
      if (stopped) return;
      timer = 0;
    }
    auto self = shared_from_this();
    RunRequest request;
    request.client_id = "sessionbroker-pruner";
    if (!outcomes.created()) {
      for (storage::Statement& s : outcomes.CreateStatements()) {
        request.statements.push_back(std::move(s));
      }
      request.op = RunRequest::Op::kBatch;
      runner.Run(std::move(request), [self](absl::StatusOr<StatementRunner::Results> done) {
        if (done.ok()) {
          self->outcomes.MarkCreated();
        } else {
          spdlog::warn("could not create the request outcomes table {} (retrying in {}): {}",
                       self->outcomes.options().table, absl::FormatDuration(self->Interval()),
                       done.status().ToString());
        }
        self->FirstRunDone();
        self->ScheduleNext();
      });
      return;
    }
    request.statements.push_back(outcomes.Prune(clock.Now()));
    runner.Run(std::move(request), [self](absl::StatusOr<StatementRunner::Results> done) {
      if (done.ok()) {
        if (!done->empty() && done->front().rows_affected > 0) {
          spdlog::debug("pruned {} expired request outcomes", done->front().rows_affected);
        }
      } else {
        spdlog::warn("pruning request outcomes failed: {}", done.status().ToString());
      }
      self->FirstRunDone();
      self->ScheduleNext();
    });
  }

  StatementRunner& runner;
  TimerQueue& timers;
  const Clock& clock;
  RequestOutcomes& outcomes;
  Mutex mu;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  TimerQueue::TimerId timer ABSL_GUARDED_BY(mu) = 0;
  absl::AnyInvocable<void() &&> first_run_done ABSL_GUARDED_BY(mu);
};

OutcomePruner::OutcomePruner(StatementRunner& runner, TimerQueue& timers, const Clock& clock,
                             RequestOutcomes& outcomes)
    : state_(std::make_shared<State>(runner, timers, clock, outcomes)) {}

OutcomePruner::~OutcomePruner() { Stop(); }

void OutcomePruner::Start(absl::AnyInvocable<void() &&> first_run_done) {
  auto state = state_;
  MutexLock lock(&state->mu);
  if (state->stopped) return;
  state->first_run_done = std::move(first_run_done);
  state->timer = state->timers.Schedule(state->clock.Now(), [state] { state->RunOnce(); });
}

void OutcomePruner::Stop() {
  TimerQueue::TimerId timer;
  {
    MutexLock lock(&state_->mu);
    state_->stopped = true;
    timer = std::exchange(state_->timer, 0);
    // A run still under way must not call back into a broker shutting down.
    state_->first_run_done = nullptr;
  }
  if (timer != 0) state_->timers.Cancel(timer);
}

absl::Duration OutcomePruner::interval() const { return state_->Interval(); }

}  // namespace sessionbroker::core
