// Specification of ArenaMessageAllocator: each holder's request and response
// are fresh, empty messages on one arena of their own, which holds a result
// far larger than its first block, and Release frees them (AddressSanitizer
// reports a leak or a use after free otherwise).
#include "server/transport/arena_message_allocator.h"

#include <string>

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

TEST(ArenaMessageAllocatorTest, EachHolderHasAnArenaOfItsOwn) {
  Allocator allocator;
  Holder* first = allocator.AllocateMessages();
  Holder* second = allocator.AllocateMessages();
  EXPECT_NE(first->response()->GetArena(), second->response()->GetArena());
  first->response()->set_command_tag("first");
  EXPECT_EQ(second->response()->command_tag(), "");
  first->Release();
  second->Release();
}

TEST(ArenaMessageAllocatorTest, AResultLargerThanTheFirstBlockIsHeldWhole) {
  Allocator allocator;
  Holder* holder = allocator.AllocateMessages();
  holder->request()->set_sql("SELECT v FROM t");
  FillRows(holder->response(), 1000, 100);
  ASSERT_EQ(holder->response()->rows_size(), 1000);
  EXPECT_EQ(holder->response()->rows(999).values(0).string_value(), std::string(100, 'x'));
  EXPECT_GT(holder->response()->ByteSizeLong(), 100u * 1000u);
  // What is serialized parses back into a heap message unchanged.
  v1::ExecuteResponse copy;
  ASSERT_TRUE(copy.ParseFromString(holder->response()->SerializeAsString()));
  EXPECT_EQ(copy.rows(0).values(0).string_value(), std::string(100, 'x'));
  holder->Release();
}

}  // namespace
}  // namespace sessionbroker::transport
