// LatestOnlyWriter<T>: the outbound side of one server stream that pushes
// state (WatchPoolStatus), after gRPC's own health Watch reactor: at most one
// write in flight, and at most one value waiting behind it, always the
// newest (a newer value replaces a waiting one). A watcher that reads slowly,
// or not at all, therefore costs two values of memory, never a queue.
//
// The owner (a gRPC reactor) supplies `write`, which starts one write of the
// value and must lead to OnWriteDone() when it completes, and `finish`, which
// ends the stream; `finish` runs exactly once, never while a write is in
// flight. The writer keeps the value being written alive until OnWriteDone.
//
// Thread-safe. `write` and `finish` are called without the writer's lock
// held. `write` must do nothing after starting the write: once the write
// completes, the next one may start on another thread.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_LATEST_ONLY_WRITER_H_
#define SESSIONBROKER_SERVER_CORE_BASE_LATEST_ONLY_WRITER_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::core {

template <typename T>
class LatestOnlyWriter final {
 public:
  using Value = std::shared_ptr<const T>;
  using WriteFn = absl::AnyInvocable<void(const T&)>;
  using FinishFn = absl::AnyInvocable<void()>;

  LatestOnlyWriter(WriteFn write, FinishFn finish)
      : write_(std::move(write)), finish_(std::move(finish)) {}
  LatestOnlyWriter(const LatestOnlyWriter&) = delete;
  LatestOnlyWriter& operator=(const LatestOnlyWriter&) = delete;

  // Writes `value` now if nothing is in flight, else keeps it as the one
  // waiting value (dropping an older one). Ignored once finishing.
  void Offer(Value value) {
    {
      MutexLock lock(&mu_);
      if (finishing_ || value == nullptr) return;
      if (in_flight_ != nullptr) {
        if (pending_ != nullptr) ++superseded_;
        pending_ = std::move(value);
        return;
      }
      in_flight_ = std::move(value);
      ++written_;
    }
    Write();
  }

  // The write in flight completed; `ok` false means the stream is broken,
  // which finishes it.
  void OnWriteDone(bool ok) {
    Value done;  // released outside the lock
    bool write_next = false;
    bool finish_now = false;
    {
      MutexLock lock(&mu_);
      done = std::move(in_flight_);
      if (!ok) finishing_ = true;
      if (finishing_) {
        pending_ = nullptr;
        finish_now = !finish_called_;
        finish_called_ = true;
      } else if (pending_ != nullptr) {
        in_flight_ = std::move(pending_);
        ++written_;
        write_next = true;
      }
    }
    if (write_next) Write();
    if (finish_now) finish_();
  }

  // Ends the stream: at once if no write is in flight, else when it
  // completes. A waiting value is dropped.
  void Finish() {
    bool finish_now = false;
    {
      MutexLock lock(&mu_);
      finishing_ = true;
      pending_ = nullptr;
      if (in_flight_ == nullptr && !finish_called_) {
        finish_called_ = true;
        finish_now = true;
      }
    }
    if (finish_now) finish_();
  }

  bool finishing() const {
    MutexLock lock(&mu_);
    return finishing_;
  }
  bool write_in_flight() const {
    MutexLock lock(&mu_);
    return in_flight_ != nullptr;
  }
  bool has_pending() const {
    MutexLock lock(&mu_);
    return pending_ != nullptr;
  }
  int64_t written() const {
    MutexLock lock(&mu_);
    return written_;
  }
  // Values replaced while waiting, never written.
  int64_t superseded() const {
    MutexLock lock(&mu_);
    return superseded_;
  }

 private:
  // Writes in_flight_. Only the thread that set it gets here, and in_flight_
  // stays set (alive) until OnWriteDone, which cannot precede this write.
  void Write() {
    const T* value;
    {
      MutexLock lock(&mu_);
      value = in_flight_.get();
    }
    write_(*value);
  }

  WriteFn write_;
  FinishFn finish_;
  mutable Mutex mu_;
  Value in_flight_ ABSL_GUARDED_BY(mu_);
  Value pending_ ABSL_GUARDED_BY(mu_);
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  int64_t written_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t superseded_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_LATEST_ONLY_WRITER_H_
