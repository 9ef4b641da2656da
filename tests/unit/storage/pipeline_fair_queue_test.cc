// PipelineFairQueue: the order in which the pipelined engine hands waiting
// calls to its hot connections (weighted round robin across client ids, urgent
// items first, one FIFO with fair queuing off).
#include "server/storage/pipeline_fair_queue.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace sessionbroker::storage {
namespace {

std::vector<std::string> Drain(PipelineFairQueue<std::string>& queue) {
  std::vector<std::string> order;
  while (!queue.empty()) order.push_back(queue.PopFront());
  return order;
}

TEST(PipelineFairQueueTest, OneClientIsServedInSubmissionOrder) {
  PipelineFairQueue<std::string> queue;
  for (const char* item : {"a1", "a2", "a3"}) queue.PushBack("a", 1, item);
  EXPECT_EQ(queue.size(), 3u);
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a1", "a2", "a3"}));
  EXPECT_EQ(queue.clients(), 0u);
}

TEST(PipelineFairQueueTest, AQuietClientWaitsOneTurnNotTheFloodersBacklog) {
  PipelineFairQueue<std::string> queue;
  for (int i = 1; i <= 100; ++i) queue.PushBack("flood", 1, "f" + std::to_string(i));
  // Two of the flood are taken before the quiet client submits.
  EXPECT_EQ(queue.PopFront(), "f1");
  EXPECT_EQ(queue.PopFront(), "f2");
  queue.PushBack("quiet", 1, "q1");
  EXPECT_EQ(queue.PopFront(), "f3");  // the flooder's current turn
  EXPECT_EQ(queue.PopFront(), "q1");
  EXPECT_EQ(queue.PopFront(), "f4");
  EXPECT_EQ(queue.size(), 96u);
}

TEST(PipelineFairQueueTest, ClientsAlternateWithEqualWeights) {
  PipelineFairQueue<std::string> queue;
  for (const char* item : {"a1", "a2", "a3"}) queue.PushBack("a", 1, item);
  for (const char* item : {"b1", "b2"}) queue.PushBack("b", 1, item);
  queue.PushBack("c", 1, "c1");
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a1", "b1", "c1", "a2", "b2", "a3"}));
}

TEST(PipelineFairQueueTest, AWeightTwoClientTakesTwoCallsPerTurn) {
  PipelineFairQueue<std::string> queue;
  for (const char* item : {"h1", "h2", "h3", "h4", "h5"}) queue.PushBack("heavy", 2, item);
  for (const char* item : {"l1", "l2", "l3"}) queue.PushBack("light", 1, item);
  EXPECT_EQ(Drain(queue),
            (std::vector<std::string>{"h1", "h2", "l1", "h3", "h4", "l2", "h5", "l3"}));
}

TEST(PipelineFairQueueTest, AWeightBelowOneCountsAsOne) {
  PipelineFairQueue<std::string> queue;
  for (const char* item : {"a1", "a2"}) queue.PushBack("a", 0, item);
  for (const char* item : {"b1", "b2"}) queue.PushBack("b", -3, item);
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a1", "b1", "a2", "b2"}));
}

TEST(PipelineFairQueueTest, UrgentItemsGoFirstMostRecentFirst) {
  PipelineFairQueue<std::string> queue;
  queue.PushBack("a", 1, "a1");
  queue.PushUrgent("retry");
  queue.PushUrgent("lookup");
  EXPECT_EQ(queue.size(), 3u);
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"lookup", "retry", "a1"}));
}

TEST(PipelineFairQueueTest, WithFairQueuingOffEveryCallSharesOneFifo) {
  PipelineFairQueue<std::string> queue(/*fair=*/false);
  for (const char* item : {"a1", "a2", "a3"}) queue.PushBack("a", 5, item);
  queue.PushBack("b", 1, "b1");
  EXPECT_FALSE(queue.fair());
  EXPECT_EQ(queue.clients(), 1u);
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a1", "a2", "a3", "b1"}));
}

TEST(PipelineFairQueueTest, RemoveIfTakesMatchesAndDropsEmptiedClients) {
  PipelineFairQueue<std::string> queue;
  queue.PushUrgent("u1");
  for (const char* item : {"a1", "a2"}) queue.PushBack("a", 1, item);
  queue.PushBack("b", 1, "b1");
  std::vector<std::string> seen;
  const size_t removed = queue.RemoveIf([&](std::string& item) {
    if (item != "a2" && item != "b1" && item != "u1") return false;
    seen.push_back(item);
    return true;
  });
  EXPECT_EQ(removed, 3u);
  EXPECT_EQ(seen.size(), 3u);
  EXPECT_EQ(queue.size(), 1u);
  EXPECT_EQ(queue.clients(), 1u);
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"a1"}));
}

TEST(PipelineFairQueueTest, AClientThatEmptiesAndReturnsJoinsAtTheBack) {
  PipelineFairQueue<std::string> queue;
  queue.PushBack("a", 1, "a1");
  queue.PushBack("b", 1, "b1");
  queue.PushBack("b", 1, "b2");
  EXPECT_EQ(queue.PopFront(), "a1");  // a leaves the ring
  queue.PushBack("a", 1, "a2");       // and comes back behind b
  EXPECT_EQ(Drain(queue), (std::vector<std::string>{"b1", "a2", "b2"}));
}

TEST(PipelineFairQueueTest, ForEachVisitsEveryItem) {
  PipelineFairQueue<std::unique_ptr<int>> queue;
  queue.PushBack("a", 1, std::make_unique<int>(1));
  queue.PushBack("b", 1, std::make_unique<int>(2));
  queue.PushUrgent(std::make_unique<int>(4));
  int sum = 0;
  queue.ForEach([&](const std::unique_ptr<int>& item) { sum += *item; });
  EXPECT_EQ(sum, 7);
}

}  // namespace
}  // namespace sessionbroker::storage
