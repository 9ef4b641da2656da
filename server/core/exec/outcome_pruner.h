// OutcomePruner: keeps the request outcomes table (request_outcomes.h) in
// shape: creates it at start (CREATE ... IF NOT EXISTS; retried until it
// succeeds), then deletes the rows older than BROKER_REQUEST_ID_WINDOW every
// interval, through the StatementRunner like any call (one pooled
// connection for one short statement; client id "sessionbroker-pruner").
// Every replica prunes; the DELETEs are idempotent.
//
// Thread-safe. Stop() before the runner and timers go away; a run already
// started finishes on its own and reschedules nothing.
#ifndef SESSIONBROKER_SERVER_CORE_EXEC_OUTCOME_PRUNER_H_
#define SESSIONBROKER_SERVER_CORE_EXEC_OUTCOME_PRUNER_H_

#include <memory>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "server/core/base/clock.h"
#include "server/core/base/timer_queue.h"
#include "server/core/exec/request_outcomes.h"
#include "server/core/exec/statement_runner.h"

namespace sessionbroker::core {

class OutcomePruner final {
 public:
  OutcomePruner(StatementRunner& runner, TimerQueue& timers, const Clock& clock,
                RequestOutcomes& outcomes);
  ~OutcomePruner();  // Stop()
  OutcomePruner(const OutcomePruner&) = delete;
  OutcomePruner& operator=(const OutcomePruner&) = delete;

  // The first run now, then every interval(). `first_run_done` (optional)
  // runs once, on any thread, when the first run has finished, whether it
  // succeeded or not (a failure is logged and retried every interval()).
  void Start(absl::AnyInvocable<void() &&> first_run_done = nullptr);
  void Stop();
  // Half the window, between 1 s and 1 h: an expired row lives at most that
  // long past its window (a retry never sees it: the claim ignores it).
  absl::Duration interval() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_EXEC_OUTCOME_PRUNER_H_
