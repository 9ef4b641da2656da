// A gRPC MessageAllocator that puts a unary call's request and response on
// one protobuf Arena, for the hot unary methods (Execute, ExecuteBatch).
// A result's rows, values and strings then cost bump allocations instead of
// one malloc (and one free) each, and are freed all at once after the
// response was sent (docs/benchmarks.md "Protobuf arenas").
//
// Ownership and lifetime: gRPC takes a Holder from AllocateMessages() when a
// request arrives and calls Holder::Release() after the call's OnDone, i.e.
// after the response was serialized and sent. Everything on the arena is
// gone from that moment: code that keeps any part of a request or response
// beyond the call must copy it out (the request ledger and the one-shot
// request records keep serialized bytes, which is why replayed answers do
// not depend on the first call's arena). A message built on the arena and
// Swap()ed with a heap message is deep-copied by protobuf, so arena messages
// stay where they are.
//
// Reuse: a released Holder is Reset() (its arena keeps only the initial
// block, which lives inside the Holder) and kept on a bounded free list, so
// a steady load allocates no Holder and no first block per call. At most
// `max_free` Holders are kept; the others are deleted. Protobuf arenas give
// each thread that allocates on them its own block, so a response filled on
// an executor thread starts a block of kStartBlockBytes there; those blocks
// go back to malloc at Release.
//
// Thread-safe: AllocateMessages() and Release() may run on any threads.
// The allocator must outlive every Holder it handed out (register it with a
// service that outlives its grpc::Server).
#ifndef SESSIONBROKER_SERVER_TRANSPORT_ARENA_MESSAGE_ALLOCATOR_H_
#define SESSIONBROKER_SERVER_TRANSPORT_ARENA_MESSAGE_ALLOCATOR_H_

#include <cstddef>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "google/protobuf/arena.h"
#include "grpcpp/support/message_allocator.h"
#include "server/core/base/mutex.h"

namespace sessionbroker::transport {

template <typename Request, typename Response>
class ArenaMessageAllocator final : public grpc::MessageAllocator<Request, Response> {
 public:
  // The first block of each arena, inside the Holder: room for a typical
  // request and a small result (a few rows) without another allocation.
  static constexpr size_t kInitialBlockBytes = 4096;
  // Blocks after the first (and on other threads) start at this size and
  // double up to kMaxBlockBytes: a 100-row result needs two or three.
  static constexpr size_t kStartBlockBytes = 4096;
  static constexpr size_t kMaxBlockBytes = 64 * 1024;

  explicit ArenaMessageAllocator(size_t max_free = 64) : max_free_(max_free) {}
  ~ArenaMessageAllocator() override {
    core::MutexLock lock(&mu_);
    for (Holder* holder : free_) delete holder;
  }
  ArenaMessageAllocator(const ArenaMessageAllocator&) = delete;
  ArenaMessageAllocator& operator=(const ArenaMessageAllocator&) = delete;

  grpc::MessageHolder<Request, Response>* AllocateMessages() override {
    Holder* holder = nullptr;
    {
      core::MutexLock lock(&mu_);
      if (!free_.empty()) {
        holder = free_.back();
        free_.pop_back();
      }
    }
    if (holder == nullptr) {
      holder = new Holder(this);
      core::MutexLock lock(&mu_);
      ++created_;
    }
    holder->Start();
    return holder;
  }

  // Holders made so far (reused ones count once); Holders waiting for reuse.
  size_t created() const {
    core::MutexLock lock(&mu_);
    return created_;
  }
  size_t free_count() const {
    core::MutexLock lock(&mu_);
    return free_.size();
  }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    explicit Holder(ArenaMessageAllocator* owner) : owner_(owner), arena_(Options(block_)) {}

    // A fresh request and response on the (empty) arena.
    void Start() {
      this->set_request(google::protobuf::Arena::CreateMessage<Request>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Response>(&arena_));
    }

    void Release() override {
      // Runs the messages' cleanups and frees every block but block_.
      arena_.Reset();
      owner_->Recycle(this);
    }

   private:
    static google::protobuf::ArenaOptions Options(char* block) {
      google::protobuf::ArenaOptions options;
      options.initial_block = block;
      options.initial_block_size = kInitialBlockBytes;
      options.start_block_size = kStartBlockBytes;
      options.max_block_size = kMaxBlockBytes;
      return options;
    }

    ArenaMessageAllocator* const owner_;
    alignas(std::max_align_t) char block_[kInitialBlockBytes];
    google::protobuf::Arena arena_;  // after block_, which it uses
  };

  void Recycle(Holder* holder) {
    {
      core::MutexLock lock(&mu_);
      if (free_.size() < max_free_) {
        free_.push_back(holder);
        return;
      }
    }
    delete holder;
  }

  const size_t max_free_;
  mutable core::Mutex mu_;
  std::vector<Holder*> free_ ABSL_GUARDED_BY(mu_);
  size_t created_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_ARENA_MESSAGE_ALLOCATOR_H_
