// CondVar's deadline wait: an infinite deadline must block, not spin.
#include "server/core/base/mutex.h"

#include <thread>

#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

// With absl::InfiniteFuture() a timed wait's timeout overflows std::chrono
// and returns at once; the waiter then spins with the mutex held nearly all
// the time, starving the thread that would set the flag (a Shutdown(Infinite)
// hung this way). Counted wake-ups, not time: a real wait wakes a handful of
// times at most, a spin thousands.
TEST(CondVarTest, WaitUntilInfiniteFutureBlocksUntilSignalled) {
  Mutex mu;
  CondVar cv;
  bool done = false;
  int wakeups = 0;
  std::thread waiter([&] {
    MutexLock lock(&mu);
    while (!done) {
      ASSERT_TRUE(cv.WaitUntil(&mu, absl::InfiniteFuture()));
      ++wakeups;
    }
  });
  // Let the waiter go to sleep, then hand it the flag.
  for (int i = 0; i < 200; ++i) {
    MutexLock lock(&mu);
    std::this_thread::yield();
  }
  {
    MutexLock lock(&mu);
    done = true;
    cv.SignalAll();
  }
  waiter.join();
  EXPECT_LE(wakeups, 10);
}

TEST(CondVarTest, WaitUntilAPastDeadlineReturnsFalseWithoutWaiting) {
  Mutex mu;
  CondVar cv;
  MutexLock lock(&mu);
  EXPECT_FALSE(cv.WaitUntil(&mu, absl::Now() - absl::Seconds(1)));
  EXPECT_FALSE(cv.WaitUntil(&mu, absl::InfinitePast()));
}

}  // namespace
}  // namespace sessionbroker::core
