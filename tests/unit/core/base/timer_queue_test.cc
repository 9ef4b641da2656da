// Specification of TimerQueue: one-shot timers on an injected Clock.
//
// Most tests use a FakeClock and call RunDue() on the test thread, so every
// firing is deterministic. The threaded tests use real threads and
// std::promise/std::future for hand-offs; their waits carry a generous bound
// only as a hang guard, never as a performance assertion.
#include "server/core/base/timer_queue.h"

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/base/clock.h"

namespace sessionbroker::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

// A hang guard for waits on other threads: far longer than anything should
// take, so it only turns a deadlock into a failure instead of a stuck test.
constexpr std::chrono::seconds kHangGuard{60};

class TimerQueueTest : public ::testing::Test {
 protected:
  // Schedules a timer at `when` that appends `tag` to fired_.
  TimerQueue::TimerId ScheduleTagged(absl::Time when, int tag) {
    return timers_.Schedule(when, [this, tag] { fired_.push_back(tag); });
  }

  absl::Time Start() const { return start_; }

  FakeClock clock_;
  const absl::Time start_ = clock_.Now();
  TimerQueue timers_{clock_};
  std::vector<int> fired_;
};

TEST_F(TimerQueueTest, TimerFiresExactlyWhenDueAndNotBefore) {
  ScheduleTagged(Start() + absl::Seconds(10), 1);

  clock_.Advance(absl::Seconds(10) - absl::Nanoseconds(1));
  timers_.RunDue();
  EXPECT_THAT(fired_, IsEmpty());
  EXPECT_EQ(timers_.pending(), 1u);

  clock_.Advance(absl::Nanoseconds(1));
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1));
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(TimerQueueTest, TimerDueInThePastFiresOnTheNextRunDue) {
  ScheduleTagged(Start() - absl::Seconds(1), 1);
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1));
}

TEST_F(TimerQueueTest, TimerFiresOnlyOnce) {
  ScheduleTagged(Start(), 1);
  timers_.RunDue();
  timers_.RunDue();
  clock_.Advance(absl::Hours(1));
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1));
}

TEST_F(TimerQueueTest, TimersFireInDeadlineOrder) {
  ScheduleTagged(Start() + absl::Seconds(3), 3);
  ScheduleTagged(Start() + absl::Seconds(1), 1);
  ScheduleTagged(Start() + absl::Seconds(2), 2);

  clock_.Advance(absl::Seconds(3));
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1, 2, 3));
}

TEST_F(TimerQueueTest, TimersWithTheSameDeadlineFireInSchedulingOrder) {
  const absl::Time when = Start() + absl::Seconds(1);
  ScheduleTagged(when, 1);
  ScheduleTagged(when, 2);
  ScheduleTagged(when, 3);

  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1, 2, 3));
}

TEST_F(TimerQueueTest, RunDueFiresOnlyWhatIsDue) {
  ScheduleTagged(Start() + absl::Seconds(1), 1);
  ScheduleTagged(Start() + absl::Seconds(5), 5);

  clock_.Advance(absl::Seconds(2));
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1));
  EXPECT_EQ(timers_.pending(), 1u);
}

TEST_F(TimerQueueTest, RunDueReturnsWhenTheNextTimerIsDue) {
  EXPECT_EQ(timers_.RunDue(), absl::InfiniteFuture());

  ScheduleTagged(Start() + absl::Seconds(5), 5);
  ScheduleTagged(Start() + absl::Seconds(2), 2);
  EXPECT_EQ(timers_.RunDue(), Start() + absl::Seconds(2));

  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(timers_.RunDue(), Start() + absl::Seconds(5));

  clock_.Advance(absl::Seconds(3));
  EXPECT_EQ(timers_.RunDue(), absl::InfiniteFuture());
  EXPECT_THAT(fired_, ElementsAre(2, 5));
}

TEST_F(TimerQueueTest, TimerIdsAreNeverZero) {
  EXPECT_NE(ScheduleTagged(Start(), 1), 0u);
  EXPECT_NE(ScheduleTagged(Start(), 2), 0u);
}

TEST_F(TimerQueueTest, CancelBeforeDuePreventsTheTimerFromFiring) {
  const TimerQueue::TimerId id = ScheduleTagged(Start() + absl::Seconds(1), 1);
  ScheduleTagged(Start() + absl::Seconds(1), 2);

  EXPECT_TRUE(timers_.Cancel(id));
  EXPECT_EQ(timers_.pending(), 1u);

  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(2));
}

TEST_F(TimerQueueTest, CancelAfterTheTimerFiredReturnsFalse) {
  const TimerQueue::TimerId id = ScheduleTagged(Start(), 1);
  timers_.RunDue();
  EXPECT_FALSE(timers_.Cancel(id));
  EXPECT_THAT(fired_, ElementsAre(1));
}

TEST_F(TimerQueueTest, CancelTwiceReturnsFalseTheSecondTime) {
  const TimerQueue::TimerId id = ScheduleTagged(Start() + absl::Seconds(1), 1);
  EXPECT_TRUE(timers_.Cancel(id));
  EXPECT_FALSE(timers_.Cancel(id));
}

TEST_F(TimerQueueTest, CancelOfAnUnknownIdReturnsFalse) {
  EXPECT_FALSE(timers_.Cancel(12345));
  EXPECT_FALSE(timers_.CancelAndWait(12345));
}

TEST_F(TimerQueueTest, CancelledTimerNoLongerDecidesWhenTheNextTimerIsDue) {
  const TimerQueue::TimerId early = ScheduleTagged(Start() + absl::Seconds(1), 1);
  ScheduleTagged(Start() + absl::Seconds(9), 9);
  timers_.Cancel(early);
  EXPECT_EQ(timers_.RunDue(), Start() + absl::Seconds(9));
}

TEST_F(TimerQueueTest, CancelAndWaitOnAPendingTimerCancelsIt) {
  const TimerQueue::TimerId id = ScheduleTagged(Start() + absl::Seconds(1), 1);
  EXPECT_TRUE(timers_.CancelAndWait(id));
  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();
  EXPECT_THAT(fired_, IsEmpty());
}

TEST_F(TimerQueueTest, CallbackMayScheduleAnotherTimer) {
  timers_.Schedule(Start(), [this] {
    fired_.push_back(1);
    ScheduleTagged(Start() + absl::Seconds(5), 5);
    ScheduleTagged(Start(), 2);  // already due: runs in this same RunDue()
  });

  EXPECT_EQ(timers_.RunDue(), Start() + absl::Seconds(5));
  EXPECT_THAT(fired_, ElementsAre(1, 2));

  clock_.Advance(absl::Seconds(5));
  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1, 2, 5));
}

TEST_F(TimerQueueTest, CallbackMayCancelItsOwnTimerWithoutDeadlock) {
  TimerQueue::TimerId id = 0;
  bool cancel_result = true;
  bool cancel_and_wait_result = true;
  id = timers_.Schedule(Start(), [&] {
    // It is running, so neither can cancel it; CancelAndWait must not wait for
    // the very callback that calls it.
    cancel_result = timers_.Cancel(id);
    cancel_and_wait_result = timers_.CancelAndWait(id);
    fired_.push_back(1);
  });

  timers_.RunDue();
  EXPECT_THAT(fired_, ElementsAre(1));
  EXPECT_FALSE(cancel_result);
  EXPECT_FALSE(cancel_and_wait_result);
}

TEST_F(TimerQueueTest, CallbackMayCancelAnotherPendingTimer) {
  const TimerQueue::TimerId victim = ScheduleTagged(Start() + absl::Seconds(1), 2);
  bool cancelled = false;
  timers_.Schedule(Start(), [&] {
    cancelled = timers_.Cancel(victim);
    fired_.push_back(1);
  });

  timers_.RunDue();
  clock_.Advance(absl::Seconds(1));
  timers_.RunDue();
  EXPECT_TRUE(cancelled);
  EXPECT_THAT(fired_, ElementsAre(1));
}

TEST_F(TimerQueueTest, CancelAndWaitWaitsForACallbackRunningOnAnotherThread) {
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> release_future = release.get_future().share();
  std::atomic<bool> callback_returned{false};

  const TimerQueue::TimerId id = timers_.Schedule(Start(), [&] {
    started.set_value();
    release_future.wait();
    callback_returned.store(true);
  });
  std::thread runner([this] { timers_.RunDue(); });
  ASSERT_EQ(started.get_future().wait_for(kHangGuard), std::future_status::ready);

  // The callback is blocked until `release`. Let it go from another thread a
  // moment from now; the short sleep only makes it likely that CancelAndWait is
  // already waiting when the callback finishes. The assertion below holds for
  // any interleaving.
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release.set_value();
  });

  EXPECT_FALSE(timers_.CancelAndWait(id));  // it had already started
  EXPECT_TRUE(callback_returned.load()) << "CancelAndWait returned while the callback still ran";

  releaser.join();
  runner.join();
}

TEST_F(TimerQueueTest, CancelDoesNotWaitForARunningCallback) {
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> release_future = release.get_future().share();

  const TimerQueue::TimerId id = timers_.Schedule(Start(), [&] {
    started.set_value();
    release_future.wait();
  });
  std::thread runner([this] { timers_.RunDue(); });
  ASSERT_EQ(started.get_future().wait_for(kHangGuard), std::future_status::ready);

  // Returns although the callback cannot finish until after it returns.
  EXPECT_FALSE(timers_.Cancel(id));

  release.set_value();
  runner.join();
}

// ---- With a real clock and the queue's own thread ----

class StartedTimerQueueTest : public ::testing::Test {
 protected:
  Clock& clock_ = RealClock::Get();
  TimerQueue timers_{clock_};
};

TEST_F(StartedTimerQueueTest, TimerDueNowRunsOnTheQueuesThread) {
  timers_.Start();
  std::promise<std::thread::id> ran_on;
  std::future<std::thread::id> ran_on_future = ran_on.get_future();
  timers_.Schedule(clock_.Now(), [&] { ran_on.set_value(std::this_thread::get_id()); });

  ASSERT_EQ(ran_on_future.wait_for(kHangGuard), std::future_status::ready);
  EXPECT_NE(ran_on_future.get(), std::this_thread::get_id());
  timers_.Stop();
}

TEST_F(StartedTimerQueueTest, EarlierTimerScheduledWhileTheThreadSleepsStillRuns) {
  timers_.Start();
  timers_.Schedule(clock_.Now() + absl::Hours(1), [] {});
  std::promise<void> ran;
  std::future<void> ran_future = ran.get_future();
  timers_.Schedule(clock_.Now() + absl::Milliseconds(1), [&] { ran.set_value(); });

  ASSERT_EQ(ran_future.wait_for(kHangGuard), std::future_status::ready);
  EXPECT_EQ(timers_.pending(), 1u);  // the one an hour away
  timers_.Stop();
}

TEST_F(StartedTimerQueueTest, StopJoinsTheThreadAndNothingRunsAfterwards) {
  timers_.Start();
  // Stop() must not wait for a timer an hour away.
  timers_.Schedule(clock_.Now() + absl::Hours(1), [] { ADD_FAILURE() << "ran after Stop"; });
  timers_.Stop();

  // The thread is joined, so nothing runs a timer that becomes due now.
  std::atomic<bool> ran{false};
  timers_.Schedule(clock_.Now(), [&] { ran.store(true); });
  EXPECT_FALSE(ran.load());
  EXPECT_EQ(timers_.pending(), 2u);
}

TEST_F(StartedTimerQueueTest, StopWaitsForACallbackThatIsRunning) {
  timers_.Start();
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> release_future = release.get_future().share();
  std::atomic<bool> callback_returned{false};
  timers_.Schedule(clock_.Now(), [&] {
    started.set_value();
    release_future.wait();
    callback_returned.store(true);
  });
  ASSERT_EQ(started.get_future().wait_for(kHangGuard), std::future_status::ready);

  // As in CancelAndWaitWaitsForACallbackRunningOnAnotherThread: the sleep only
  // makes it likely that Stop() is already joining; the assertion holds for
  // any interleaving.
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    release.set_value();
  });
  timers_.Stop();
  EXPECT_TRUE(callback_returned.load()) << "Stop() returned while a callback still ran";
  releaser.join();
}

TEST(TimerQueueDestructionTest, DestroyingTheQueueDropsPendingTimersWithoutRunningThem) {
  auto owned_by_callback = std::make_shared<int>(0);
  std::weak_ptr<int> watch = owned_by_callback;
  bool ran = false;
  {
    TimerQueue timers(RealClock::Get());
    timers.Start();
    timers.Schedule(RealClock::Get().Now() + absl::Hours(1),
                    [&ran, state = std::move(owned_by_callback)] { ran = true; });
  }
  EXPECT_FALSE(ran);
  EXPECT_TRUE(watch.expired()) << "the dropped callback (and what it owns) was not destroyed";
}

TEST(TimerQueueDestructionTest, StopWithoutStartIsHarmless) {
  FakeClock clock;
  TimerQueue timers(clock);
  timers.Stop();
  timers.Stop();
}

}  // namespace
}  // namespace sessionbroker::core
