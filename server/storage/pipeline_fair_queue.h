// The pipelined engine's queue of calls waiting for a hot connection, fair
// across clients (issue 14; used by pq_pipeline_loop.cc, unit-tested with
// made-up items).
//
// Why: the hot connections take only depth x connections statements at once;
// what is submitted beyond that waits here. With one FIFO a client that
// floods the engine puts every other client's short statement behind its
// whole backlog. So each client id has a lane of its own, and the lanes are
// served by weighted round robin (deficit round robin with a unit cost per
// call: a statement's cost is not known before it runs): the client at the
// head of the ring takes up to `weight` calls, then goes to the back. A
// newcomer joins at the back of the ring, so it waits for at most one turn of
// each other active client, never for their backlogs. This is the pool's
// weighted fair queuing (BROKER_FAIR_QUEUING, ClientQuota::weight) applied to
// the engine; with `fair` false every call shares one lane (a FIFO).
//
// Urgent items (a call sent again after a stray cancel or a stale prepared
// copy, the engine's own catalog lookups that parked results wait for) go
// before every lane, in LIFO order, as the engine's old push_front did.
//
// Owned by one thread (the engine's loop): thread-compatible, no locking.
#ifndef SESSIONBROKER_SERVER_STORAGE_PIPELINE_FAIR_QUEUE_H_
#define SESSIONBROKER_SERVER_STORAGE_PIPELINE_FAIR_QUEUE_H_

#include <algorithm>
#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace sessionbroker::storage {

template <typename T>
class PipelineFairQueue {
 public:
  explicit PipelineFairQueue(bool fair = true) : fair_(fair) {}

  PipelineFairQueue(const PipelineFairQueue&) = delete;
  PipelineFairQueue& operator=(const PipelineFairQueue&) = delete;

  bool fair() const { return fair_; }
  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // Clients with calls waiting (for status and tests).
  size_t clients() const { return ring_.size(); }

  // Queues `item` behind `client`'s earlier ones. `weight` (at least 1) is
  // how many of its calls are taken per turn; the latest one given counts.
  void PushBack(std::string_view client, int weight, T item) {
    const std::string key = fair_ ? std::string(client) : std::string();
    auto [it, added] = lanes_.try_emplace(key);
    Lane& lane = it->second;
    lane.weight = std::max(1, weight);
    if (added) {
      lane.key = &it->first;
      ring_.push_back(&lane);
    }
    lane.items.push_back(std::move(item));
    ++size_;
  }

  // Queues `item` ahead of everything.
  void PushUrgent(T item) {
    urgent_.push_front(std::move(item));
    ++size_;
  }

  // The next item by the order above; the queue must not be empty.
  T PopFront() {
    --size_;
    if (!urgent_.empty()) {
      T item = std::move(urgent_.front());
      urgent_.pop_front();
      return item;
    }
    Lane* lane = ring_.front();
    if (lane->credit == 0) lane->credit = lane->weight;
    T item = std::move(lane->items.front());
    lane->items.pop_front();
    --lane->credit;
    if (lane->items.empty()) {
      ring_.pop_front();
      lanes_.erase(*lane->key);
    } else if (lane->credit == 0) {
      ring_.pop_front();
      ring_.push_back(lane);
    }
    return item;
  }

  // Calls `f(const T&)` on every item (in no particular order).
  template <typename F>
  void ForEach(F&& f) const {
    for (const T& item : urgent_) f(item);
    for (const Lane* lane : ring_) {
      for (const T& item : lane->items) f(item);
    }
  }

  // Removes every item for which `pred(T&)` returns true (it may consume the
  // item it accepts); returns how many went. A client left with nothing
  // leaves the ring, its turn forgotten.
  template <typename Pred>
  size_t RemoveIf(Pred&& pred) {
    size_t removed = RemoveFrom(urgent_, pred);
    for (auto r = ring_.begin(); r != ring_.end();) {
      Lane* lane = *r;
      removed += RemoveFrom(lane->items, pred);
      if (lane->items.empty()) {
        r = ring_.erase(r);
        lanes_.erase(*lane->key);
      } else {
        ++r;
      }
    }
    size_ -= removed;
    return removed;
  }

 private:
  struct Lane {
    const std::string* key = nullptr;  // its key in lanes_ (stable: node-based map)
    int weight = 1;
    int credit = 0;  // calls it may still take in its current turn
    std::deque<T> items;
  };

  template <typename Pred>
  static size_t RemoveFrom(std::deque<T>& items, Pred& pred) {
    size_t removed = 0;
    for (auto it = items.begin(); it != items.end();) {
      if (pred(*it)) {
        it = items.erase(it);
        ++removed;
      } else {
        ++it;
      }
    }
    return removed;
  }

  const bool fair_;
  std::deque<T> urgent_;
  std::unordered_map<std::string, Lane> lanes_;
  std::deque<Lane*> ring_;  // clients with calls waiting, the next to serve first
  size_t size_ = 0;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_PIPELINE_FAIR_QUEUE_H_
