// Specification of RearmingTimer: one timer kept armed for the earliest of
// its owner's deadlines, with stale firings told apart from current ones.
//
// The tests drive a FakeClock and call TimerQueue::RunDue() on the test
// thread, so every firing is deterministic; the race between a running
// firing and a re-arm is reproduced by re-arming from inside the callback.
// The threaded tests' waits carry a generous bound only as a hang guard.
#include "server/core/base/rearming_timer.h"

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
#include "server/core/base/timer_queue.h"

namespace sessionbroker::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr std::chrono::seconds kHangGuard{60};

class RearmingTimerTest : public ::testing::Test {
 protected:
  // What a typical owner does: ask Fired() first, count only current firings.
  void OnFire(RearmingTimer::Token token) {
    tokens_.push_back(token);
    if (timer_.Fired(token)) current_.push_back(clock_.Now() - start_);
  }

  FakeClock clock_;
  const absl::Time start_ = clock_.Now();
  TimerQueue timers_{clock_};
  std::vector<RearmingTimer::Token> tokens_;
  std::vector<absl::Duration> current_;  // when current firings ran, since start_
  RearmingTimer timer_{timers_, [this](RearmingTimer::Token t) { OnFire(t); }};
};

TEST_F(RearmingTimerTest, FiresWhenDueAndIsDisarmedByTheCurrentFiring) {
  timer_.ArmBy(start_ + absl::Seconds(10));
  EXPECT_EQ(timer_.due(), start_ + absl::Seconds(10));

  clock_.Advance(absl::Seconds(10) - absl::Nanoseconds(1));
  timers_.RunDue();
  EXPECT_THAT(current_, IsEmpty());

  clock_.Advance(absl::Nanoseconds(1));
  timers_.RunDue();
  EXPECT_THAT(current_, ElementsAre(absl::Seconds(10)));
  EXPECT_EQ(timer_.due(), absl::InfiniteFuture());
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(RearmingTimerTest, ArmingForLaterThanThePendingTimeChangesNothing) {
  timer_.ArmBy(start_ + absl::Seconds(10));
  timer_.ArmBy(start_ + absl::Seconds(20));
  timer_.ArmBy(start_ + absl::Seconds(10));

  EXPECT_EQ(timer_.due(), start_ + absl::Seconds(10));
  EXPECT_EQ(timers_.pending(), 1u);
  clock_.Advance(absl::Seconds(30));
  timers_.RunDue();
  EXPECT_THAT(current_, ElementsAre(absl::Seconds(30)));
  EXPECT_EQ(tokens_.size(), 1u);
}

TEST_F(RearmingTimerTest, ArmingEarlierReplacesThePendingFiring) {
  timer_.ArmBy(start_ + absl::Seconds(20));
  timer_.ArmBy(start_ + absl::Seconds(10));

  EXPECT_EQ(timer_.due(), start_ + absl::Seconds(10));
  EXPECT_EQ(timers_.pending(), 1u);
  clock_.Advance(absl::Seconds(10));
  timers_.RunDue();
  clock_.Advance(absl::Seconds(10));
  timers_.RunDue();
  EXPECT_THAT(current_, ElementsAre(absl::Seconds(10)));
  EXPECT_EQ(tokens_.size(), 1u);
}

TEST_F(RearmingTimerTest, DisarmCancelsThePendingFiring) {
  timer_.ArmBy(start_ + absl::Seconds(10));
  timer_.Disarm();

  EXPECT_EQ(timer_.due(), absl::InfiniteFuture());
  EXPECT_EQ(timers_.pending(), 0u);
  clock_.Advance(absl::Seconds(10));
  timers_.RunDue();
  EXPECT_THAT(tokens_, IsEmpty());
}

TEST_F(RearmingTimerTest, AnInfiniteDeadlineArmsNothing) {
  timer_.ArmBy(absl::InfiniteFuture());

  EXPECT_EQ(timer_.due(), absl::InfiniteFuture());
  EXPECT_EQ(timers_.pending(), 0u);
}

TEST_F(RearmingTimerTest, TheOwnerReArmsFromTheCallbackForItsNextDeadline) {
  FakeClock clock;
  TimerQueue timers(clock);
  const absl::Time start = clock.Now();
  std::vector<absl::Duration> fired;
  RearmingTimer* self = nullptr;
  RearmingTimer timer(timers, [&](RearmingTimer::Token token) {
    if (!self->Fired(token)) return;
    fired.push_back(clock.Now() - start);
    if (fired.size() < 3) self->ArmBy(clock.Now() + absl::Seconds(5));
  });
  self = &timer;

  timer.ArmBy(start + absl::Seconds(5));
  for (int i = 0; i < 5; ++i) {
    clock.Advance(absl::Seconds(5));
    timers.RunDue();
  }
  EXPECT_THAT(fired, ElementsAre(absl::Seconds(5), absl::Seconds(10), absl::Seconds(15)));
  EXPECT_EQ(timer.due(), absl::InfiniteFuture());
}

// The race every owner had to settle on its own: a firing is already running
// (out of the queue, before the owner's lock) when the owner arms for an
// earlier time. The running firing must learn it is stale; the new arming
// fires and is current.
TEST_F(RearmingTimerTest, AFiringOvertakenByAnEarlierArmingIsToldItIsStale) {
  FakeClock clock;
  TimerQueue timers(clock);
  const absl::Time start = clock.Now();
  std::vector<std::pair<RearmingTimer::Token, bool>> seen;
  RearmingTimer* self = nullptr;
  bool raced = false;
  RearmingTimer timer(timers, [&](RearmingTimer::Token token) {
    if (!raced) {
      raced = true;
      // The owner, on another thread in real life, arms for a deadline
      // earlier than the one being fired (already due).
      self->ArmBy(start + absl::Seconds(1));
    }
    seen.emplace_back(token, self->Fired(token));
  });
  self = &timer;

  timer.ArmBy(start + absl::Seconds(10));
  clock.Advance(absl::Seconds(10));
  timers.RunDue();

  ASSERT_EQ(seen.size(), 2u);
  EXPECT_FALSE(seen[0].second) << "the overtaken firing must be stale";
  EXPECT_TRUE(seen[1].second) << "the newer arming must be current";
  EXPECT_NE(seen[0].first, seen[1].first);
  EXPECT_EQ(timer.due(), absl::InfiniteFuture());
  EXPECT_EQ(timers.pending(), 0u);
}

TEST_F(RearmingTimerTest, AStaleTokenNeverDisarmsTheCurrentArming) {
  timer_.ArmBy(start_ + absl::Seconds(10));
  EXPECT_FALSE(timer_.Fired(0));
  EXPECT_FALSE(timer_.Fired(12345));
  EXPECT_EQ(timer_.due(), start_ + absl::Seconds(10));
}

TEST_F(RearmingTimerTest, NothingFiresOrArmsAfterStop) {
  timer_.ArmBy(start_ + absl::Seconds(10));
  timer_.Stop();
  timer_.ArmBy(start_ + absl::Seconds(5));

  EXPECT_EQ(timer_.due(), absl::InfiniteFuture());
  clock_.Advance(absl::Seconds(10));
  timers_.RunDue();
  EXPECT_THAT(tokens_, IsEmpty());
  timer_.Stop();  // idempotent
}

TEST(RearmingTimerThreadedTest, StopWaitsForACallbackRunningOnAnotherThread) {
  FakeClock clock;
  TimerQueue timers(clock);
  std::promise<void> started;
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<bool> callback_returned{false};
  RearmingTimer timer(timers, [&](RearmingTimer::Token) {
    started.set_value();
    released.wait();
    callback_returned = true;
  });
  timer.ArmBy(clock.Now());

  std::thread firing([&] { timers.RunDue(); });
  ASSERT_EQ(started.get_future().wait_for(kHangGuard), std::future_status::ready);
  std::atomic<bool> callback_done_when_stop_returned{false};
  std::thread stopper([&] {
    timer.Stop();
    callback_done_when_stop_returned = callback_returned.load();
  });
  // Give a wrong Stop() the chance to return early; the assertion below does
  // not depend on how long this is.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  release.set_value();
  stopper.join();
  firing.join();
  EXPECT_TRUE(callback_done_when_stop_returned);
}

TEST(RearmingTimerThreadedTest, StopFromInsideTheCallbackDoesNotWaitForItself) {
  FakeClock clock;
  TimerQueue timers(clock);
  RearmingTimer* self = nullptr;
  bool stopped = false;
  RearmingTimer timer(timers, [&](RearmingTimer::Token) {
    self->Stop();
    stopped = true;
  });
  self = &timer;
  timer.ArmBy(clock.Now());

  std::thread firing([&] { timers.RunDue(); });
  firing.join();
  EXPECT_TRUE(stopped);
}

// Stop() returning means the timer may be freed: also when a firing was
// taken out of the queue on another thread and has not reached the callback
// yet (it still has to look at the timer). That window is a few instructions
// wide, so the test opens it many times: an earlier timer on the same queue
// says when the firing is about to be taken out, and the timer is destroyed
// at that moment. ThreadSanitizer reports the use after free if Stop()
// returns too early.
TEST(RearmingTimerThreadedTest, TheTimerMayBeDestroyedAsSoonAsStopReturns) {
  FakeClock clock;
  TimerQueue timers(clock);
  for (int i = 0; i < 200; ++i) {
    std::atomic<int> calls{0};
    std::atomic<bool> next_is_ours{false};
    auto timer =
        std::make_unique<RearmingTimer>(timers, [&](RearmingTimer::Token) { calls.fetch_add(1); });
    timers.Schedule(clock.Now() - absl::Nanoseconds(1), [&] { next_is_ours = true; });
    timer->ArmBy(clock.Now());

    std::thread firing([&] { timers.RunDue(); });
    while (!next_is_ours) std::this_thread::yield();
    timer.reset();
    const int calls_when_destroyed = calls.load();
    firing.join();
    EXPECT_EQ(calls.load(), calls_when_destroyed) << "the callback ran after Stop() returned";
    EXPECT_EQ(timers.pending(), 0u);
  }
}

}  // namespace
}  // namespace sessionbroker::core
