// SubscriberQueue (a Listen stream's bounded queue, drop-oldest with an
// overflow gap) and NormalizeChannels (the ListenRequest's bounds).
#include "server/core/notify/subscriber_queue.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/notify/notification_hub.h"

namespace sessionbroker::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Kind = ListenEvent::Kind;

ListenEvent Note(const std::string& payload) {
  return ListenEvent::Notify(storage::Notification{"ch", payload, 7});
}

TEST(SubscriberQueueTest, PopsInOrderAndWakesAWaitingReaderOncePerWait) {
  int wakes = 0;
  SubscriberQueue q(10, [&] { ++wakes; });
  q.Push(Note("before anyone waits"));
  EXPECT_EQ(wakes, 0);
  EXPECT_EQ(q.Pop()->notification.payload, "before anyone waits");
  EXPECT_FALSE(q.Pop().has_value());  // the reader now waits
  q.Push(Note("a"));
  q.Push(Note("b"));
  EXPECT_EQ(wakes, 1);
  EXPECT_EQ(q.Pop()->notification.payload, "a");
  EXPECT_EQ(q.Pop()->notification.payload, "b");
}

TEST(SubscriberQueueTest, AFullQueueDropsTheOldestAndReportsHowManyInAGap) {
  SubscriberQueue q(2, [] {});
  q.Push(ListenEvent::Listening({"ch"}, 42));
  EXPECT_EQ(q.Push(Note("1")), 0);
  EXPECT_EQ(q.Push(Note("2")), 0);
  EXPECT_EQ(q.Push(Note("3")), 1);
  EXPECT_EQ(q.Push(Note("4")), 1);
  // The confirmation stays first; then the gap where 1 and 2 were.
  std::optional<ListenEvent> e = q.Pop();
  EXPECT_EQ(e->kind, Kind::kListening);
  e = q.Pop();
  ASSERT_EQ(e->kind, Kind::kGap);
  EXPECT_EQ(e->gap_reason, ListenEvent::GapReason::kOverflow);
  EXPECT_EQ(e->dropped, 2);
  EXPECT_EQ(e->listener_pid, 42);
  EXPECT_EQ(q.Pop()->notification.payload, "3");
  EXPECT_EQ(q.Pop()->notification.payload, "4");
  EXPECT_FALSE(q.Pop().has_value());
}

TEST(SubscriberQueueTest, EndComesAfterWhatWaitsAndLaterPushesAreIgnored) {
  int wakes = 0;
  SubscriberQueue q(5, [&] { ++wakes; });
  EXPECT_FALSE(q.Pop().has_value());
  q.Push(Note("last"));
  q.End(absl::UnavailableError("draining"));
  q.End(absl::InternalError("second end ignored"));
  q.Push(Note("too late"));
  EXPECT_EQ(wakes, 1);
  EXPECT_EQ(q.Pop()->notification.payload, "last");
  std::optional<ListenEvent> end = q.Pop();
  ASSERT_EQ(end->kind, Kind::kEnd);
  EXPECT_EQ(end->status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(q.Pop().has_value());
}

TEST(NormalizeChannelsTest, DeduplicatesKeepingFirstOrderAndCaseAsGiven) {
  absl::StatusOr<std::vector<std::string>> c = NormalizeChannels({"b", "A", "b", "a"});
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_THAT(*c, ElementsAre("b", "A", "a"));
}

TEST(NormalizeChannelsTest, RefusesEmptyListsEmptyNamesLongNamesNulAndTooMany) {
  EXPECT_THAT(NormalizeChannels({}).status().message(), HasSubstr("at least one channel"));
  EXPECT_THAT(NormalizeChannels({"x", ""}).status().message(), HasSubstr("channels[1] is empty"));
  EXPECT_THAT(NormalizeChannels({std::string("a\0b", 3)}).status().message(), HasSubstr("NUL"));
  EXPECT_TRUE(NormalizeChannels({std::string(kMaxChannelBytes, 'x')}).ok());
  EXPECT_THAT(NormalizeChannels({std::string(kMaxChannelBytes + 1, 'x')}).status().message(),
              HasSubstr("at most 63 bytes"));
  std::vector<std::string> many;
  for (int i = 0; i <= kMaxListenChannels; ++i) many.push_back("c" + std::to_string(i));
  absl::Status s = NormalizeChannels(many).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("at most 64"));
  many.pop_back();
  EXPECT_TRUE(NormalizeChannels(many).ok());
}

}  // namespace
}  // namespace sessionbroker::core
