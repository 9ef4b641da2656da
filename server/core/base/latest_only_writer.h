// LatestOnlyWriter<T, Merge>: the outbound side of one server stream that
// pushes state, after gRPC's own health Watch reactor: at most one write in
// flight, and at most one value waiting behind it. A value offered while one
// already waits is merged into it by the rule `Merge`, so a reader that reads
// slowly, or not at all, costs the value being written and one waiting value,
// never a queue. Two rules are in use:
//  * NewestReplacesWaiting (the default; WatchPoolStatus): the newer value
//    replaces the waiting one.
//  * KeepAlive's (transport/keep_alive_reactor.cc): the waiting update keeps
//    the newest state of each session either one names.
//
// Values are shared, immutable `std::shared_ptr<const T>` (one snapshot goes
// to many streams without a copy); a merge builds a new value or picks one.
// `Merge` is a default-constructible function object:
//   void operator()(std::shared_ptr<const T>& waiting,
//                   std::shared_ptr<const T> newer) const;
// which leaves in `waiting` the value that goes out in their place (never
// null). It runs under the writer's lock: it must not block or call back.
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

// The default merge rule: only the newest value matters.
struct NewestReplacesWaiting {
  template <typename Value>
  void operator()(Value& waiting, Value newer) const {
    waiting = std::move(newer);
  }
};

template <typename T, typename Merge = NewestReplacesWaiting>
class LatestOnlyWriter final {
 public:
  using Value = std::shared_ptr<const T>;
  using WriteFn = absl::AnyInvocable<void(const T&)>;
  using FinishFn = absl::AnyInvocable<void()>;

  LatestOnlyWriter(WriteFn write, FinishFn finish)
      : write_(std::move(write)), finish_(std::move(finish)) {}
  LatestOnlyWriter(const LatestOnlyWriter&) = delete;
  LatestOnlyWriter& operator=(const LatestOnlyWriter&) = delete;

  // Writes `value` now if nothing is in flight, else makes it the waiting
  // value (merging it into one already waiting). Ignored once finishing.
  void Offer(Value value) {
    {
      MutexLock lock(&mu_);
      if (finishing_ || value == nullptr) return;
      if (in_flight_ != nullptr) {
        if (pending_ == nullptr) {
          pending_ = std::move(value);
        } else {
          merge_(pending_, std::move(value));
          ++superseded_;
        }
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
  // Values merged into a waiting one rather than written on their own.
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
  const Merge merge_{};
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
