// Specification of ArenaMessageAllocator: each holder's request and response
// are fresh messages on one arena, released holders are reused up to the
// bound, and nothing of a released call survives into the next one.
#include "server/transport/arena_message_allocator.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker::transport {
namespace {

using Allocator = ArenaMessageAllocator<v1::ExecuteRequest, v1::ExecuteResponse>;
using Holder = grpc::MessageHolder<v1::ExecuteRequest, v1::ExecuteResponse>;

// Fills `response` with `rows` rows of a text value of `width` bytes.
void FillRows(v1::ExecuteResponse* response, int rows, size_t width) {
  response->add_columns()->set_name("v");
  for (int i = 0; i < rows; ++i) {
    response->add_rows()->add_values()->set_string_value(std::string(width, 'x'));
  }
  response->set_command_tag("SELECT");
}

TEST(ArenaMessageAllocatorTest, RequestAndResponseAreEmptyMessagesOnOneArena) {
  Allocator allocator;
  Holder* holder = allocator.AllocateMessages();
  ASSERT_NE(holder->request(), nullptr);
  ASSERT_NE(holder->response(), nullptr);
  EXPECT_NE(holder->request()->GetArena(), nullptr);
  EXPECT_EQ(holder->request()->GetArena(), holder->response()->GetArena());
  EXPECT_EQ(holder->request()->ByteSizeLong(), 0u);
  EXPECT_EQ(holder->response()->ByteSizeLong(), 0u);
  holder->Release();
}

TEST(ArenaMessageAllocatorTest, AReleasedHolderIsReusedWithFreshMessages) {
  Allocator allocator;
  Holder* first = allocator.AllocateMessages();
  first->request()->set_sql("SELECT 1");
  // Far past the initial block: the arena grows and gives it back at Reset.
  FillRows(first->response(), 1000, 100);
  first->Release();
  EXPECT_EQ(allocator.free_count(), 1u);

  Holder* second = allocator.AllocateMessages();
  EXPECT_EQ(allocator.created(), 1u) << "the released holder was taken again";
  EXPECT_EQ(second->request()->sql(), "");
  EXPECT_EQ(second->response()->rows_size(), 0);
  FillRows(second->response(), 3, 10);
  EXPECT_EQ(second->response()->rows(2).values(0).string_value(), "xxxxxxxxxx");
  second->Release();
}

TEST(ArenaMessageAllocatorTest, AtMostMaxFreeHoldersAreKept) {
  Allocator allocator(/*max_free=*/2);
  std::vector<Holder*> holders;
  for (int i = 0; i < 5; ++i) holders.push_back(allocator.AllocateMessages());
  EXPECT_EQ(allocator.created(), 5u);
  for (Holder* holder : holders) holder->Release();
  EXPECT_EQ(allocator.free_count(), 2u);
}

TEST(ArenaMessageAllocatorTest, WithoutAFreeListEveryHolderIsNew) {
  Allocator allocator(/*max_free=*/0);
  allocator.AllocateMessages()->Release();
  allocator.AllocateMessages()->Release();
  EXPECT_EQ(allocator.created(), 2u);
  EXPECT_EQ(allocator.free_count(), 0u);
}

}  // namespace
}  // namespace sessionbroker::transport
