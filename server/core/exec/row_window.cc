#include "server/core/exec/row_window.h"

#include <algorithm>
#include <utility>

namespace sessionbroker::core {

RowWindow::RowWindow(size_t window_bytes, absl::AnyInvocable<void()> ready)
    : window_bytes_(std::max<size_t>(window_bytes, 1)),
      chunk_bytes_(std::max<size_t>(window_bytes / 4, 1)),
      ready_(std::move(ready)) {}

size_t RowWindow::HeldLocked() const {
  return published_bytes_ + writing_bytes_ + gathering_.bytes;
}

bool RowWindow::PublishLocked() {
  if (!gathering_.has_columns && gathering_.rows.empty()) return false;
  published_bytes_ += gathering_.bytes;
  published_.push_back(std::exchange(gathering_, Chunk{}));
  if (!consumer_idle_) return false;
  consumer_idle_ = false;
  return true;
}

absl::Status RowWindow::Columns(std::vector<storage::Column> columns) {
  bool wake;
  {
    MutexLock lock(&mu_);
    if (closed_) return why_closed_;
    gathering_.has_columns = true;
    gathering_.columns = std::move(columns);
    // Sent at once: the client learns the shape before the first row.
    wake = PublishLocked();
  }
  if (wake) ready_();
  return absl::OkStatus();
}

absl::Status RowWindow::Row(std::vector<storage::Value> row, size_t bytes) {
  bool wake = false;
  {
    MutexLock lock(&mu_);
    if (closed_) return why_closed_;
    // A chunk never grows past chunk_bytes_ with a row added: a message
    // holds chunk_bytes_ at most, or one row.
    if (!gathering_.rows.empty() && gathering_.bytes + bytes > chunk_bytes_) {
      wake = PublishLocked();
    }
    gathering_.rows.push_back(std::move(row));
    gathering_.bytes += bytes;
    peak_bytes_ = std::max(peak_bytes_, HeldLocked());
    if (gathering_.bytes >= chunk_bytes_) wake = PublishLocked() || wake;
  }
  if (wake) ready_();
  MutexLock lock(&mu_);
  // Back pressure: wait for the consumer while the window is full and it
  // still has something to write.
  while (!closed_ && HeldLocked() > window_bytes_ && published_bytes_ + writing_bytes_ > 0) {
    producer_waiting_ = true;
    room_.Wait(&mu_);
  }
  producer_waiting_ = false;
  if (closed_) return why_closed_;
  return absl::OkStatus();
}

void RowWindow::Flush() {
  bool wake;
  {
    MutexLock lock(&mu_);
    wake = PublishLocked();
  }
  if (wake) ready_();
}

std::optional<RowWindow::Chunk> RowWindow::Take() {
  MutexLock lock(&mu_);
  writing_bytes_ = 0;
  room_.SignalAll();
  if (published_.empty()) {
    consumer_idle_ = true;
    return std::nullopt;
  }
  Chunk next = std::move(published_.front());
  published_.pop_front();
  published_bytes_ -= next.bytes;
  writing_bytes_ = next.bytes;
  return next;
}

void RowWindow::Close(absl::Status why) {
  MutexLock lock(&mu_);
  if (closed_) return;
  closed_ = true;
  why_closed_ = std::move(why);
  published_.clear();
  published_bytes_ = 0;
  room_.SignalAll();
}

size_t RowWindow::peak_bytes() const {
  MutexLock lock(&mu_);
  return peak_bytes_;
}

bool RowWindow::producer_waiting() const {
  MutexLock lock(&mu_);
  return producer_waiting_;
}

}  // namespace sessionbroker::core
