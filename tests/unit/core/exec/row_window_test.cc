// RowWindow: chunks, back pressure and closing, with the producer on its own
// thread and the test as the consumer.
#include "server/core/exec/row_window.h"

#include <atomic>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace sessionbroker::core {
namespace {

using storage::Value;

std::vector<Value> OneCell(int64_t v) { return {Value::Int64(v)}; }

TEST(RowWindowTest, ColumnsArePublishedAtOnceAndWakeTheIdleConsumer) {
  int wakes = 0;
  RowWindow window(1000, [&] { ++wakes; });
  ASSERT_TRUE(window.Columns({storage::Column{"n", 23, "int4"}}).ok());
  EXPECT_EQ(wakes, 1);
  std::optional<RowWindow::Chunk> first = window.Take();
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->has_columns);
  ASSERT_EQ(first->columns.size(), 1u);
  EXPECT_EQ(first->columns[0].name, "n");
  EXPECT_FALSE(window.Take().has_value());
}

TEST(RowWindowTest, RowsAreGroupedIntoChunksOfAQuarterWindow) {
  int wakes = 0;
  RowWindow window(400, [&] { ++wakes; });
  // 100 bytes a chunk: rows of 30 bytes, three to a chunk.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(window.Row(OneCell(i), 30).ok());
  EXPECT_EQ(wakes, 0);  // 90 bytes: still gathering
  ASSERT_TRUE(window.Row(OneCell(3), 30).ok());
  EXPECT_EQ(wakes, 1);
  std::optional<RowWindow::Chunk> chunk = window.Take();
  ASSERT_TRUE(chunk.has_value());
  EXPECT_EQ(chunk->rows.size(), 3u);
  EXPECT_EQ(chunk->bytes, 90u);
  EXPECT_FALSE(window.Take().has_value());
  window.Flush();
  EXPECT_EQ(wakes, 2);
  chunk = window.Take();
  ASSERT_TRUE(chunk.has_value());
  ASSERT_EQ(chunk->rows.size(), 1u);
  EXPECT_EQ(chunk->rows[0][0], Value::Int64(3));
}

TEST(RowWindowTest, ARowLargerThanAChunkTravelsAlone) {
  RowWindow window(400, [] {});
  ASSERT_TRUE(window.Row(OneCell(1), 10).ok());
  ASSERT_TRUE(window.Row(OneCell(2), 350).ok());  // larger than the window too
  std::optional<RowWindow::Chunk> small = window.Take();
  ASSERT_TRUE(small.has_value());
  EXPECT_EQ(small->rows.size(), 1u);
  std::optional<RowWindow::Chunk> big = window.Take();
  ASSERT_TRUE(big.has_value());
  EXPECT_EQ(big->bytes, 350u);
}

TEST(RowWindowTest, ProducerWaitsWhileTheWindowIsFullAndHoldsNoMoreThanIt) {
  std::atomic<int> produced{0};
  RowWindow window(400, [] {});
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i) {
      if (!window.Row(OneCell(i), 50).ok()) return;
      produced.fetch_add(1);
    }
    window.Flush();
  });
  // The consumer reads nothing until the producer waits: after at most
  // 400 bytes plus one row.
  while (!window.producer_waiting()) std::this_thread::yield();
  EXPECT_LE(window.peak_bytes(), 450u);
  EXPECT_LT(produced.load(), 10);
  // Reading everything lets it finish, in order.
  std::vector<int64_t> seen;
  while (seen.size() < 100) {
    std::optional<RowWindow::Chunk> chunk = window.Take();
    if (!chunk.has_value()) {
      std::this_thread::yield();
      continue;
    }
    for (const std::vector<Value>& row : chunk->rows) seen.push_back(row[0].int64_value);
  }
  producer.join();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(seen[static_cast<size_t>(i)], i);
  EXPECT_LE(window.peak_bytes(), 450u);
}

TEST(RowWindowTest, CloseReleasesABlockedProducerWithTheReason) {
  RowWindow window(100, [] {});
  absl::Status last;
  std::thread producer([&] {
    for (int i = 0; i < 1000; ++i) {
      last = window.Row(OneCell(i), 40);
      if (!last.ok()) return;
    }
  });
  window.Close(absl::CancelledError("the client went away"));
  producer.join();
  EXPECT_EQ(last.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(last.message(), "the client went away");
  EXPECT_EQ(window.Columns({}).code(), absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace sessionbroker::core
