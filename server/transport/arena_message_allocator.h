// A gRPC MessageAllocator that puts a unary call's request and response on
// one protobuf Arena, for the unary methods that return rows (Execute,
// ExecuteBatch). A result's rows, values and strings then cost bump
// allocations instead of one malloc (and one free) each, and are freed all
// at once after the response was sent (docs/benchmarks.md "Protobuf
// arenas": 19 % fewer broker instructions per call for a 100-row result).
//
// Ownership and lifetime: gRPC takes a Holder from AllocateMessages() when a
// request arrives and calls Holder::Release() after the call's OnDone, i.e.
// after the response was serialized and sent; Release deletes the Holder
// and its arena. Everything on the arena is gone from that moment: code
// that keeps any part of a request or response beyond the call must copy it
// out (the request ledger and the one-shot request records keep serialized
// bytes, which is why a retry's answer does not depend on the first call's
// arena). A message built on the arena and Swap()ed with a heap message is
// deep-copied by protobuf, so arena messages stay where they are.
//
// Each Holder is one allocation that carries the arena's first block, so a
// typical request and a small result need no further malloc on the thread
// that parsed the request. Protobuf arenas give every other thread that
// allocates on them a block of their own (a result is filled on an executor
// thread), starting at kStartBlockBytes. Reusing Holders through a free list
// was measured and did not pay (the same instructions per call within 1 %):
// the reused first block serves one thread only.
//
// Thread-safe: AllocateMessages() and Release() may run on any threads.
// The allocator must outlive every Holder it handed out (register it with a
// service that outlives its grpc::Server).
#ifndef SESSIONBROKER_SERVER_TRANSPORT_ARENA_MESSAGE_ALLOCATOR_H_
#define SESSIONBROKER_SERVER_TRANSPORT_ARENA_MESSAGE_ALLOCATOR_H_

#include <cstddef>

#include "google/protobuf/arena.h"
#include "grpcpp/support/message_allocator.h"

namespace sessionbroker::transport {

template <typename Request, typename Response>
class ArenaMessageAllocator final : public grpc::MessageAllocator<Request, Response> {
 public:
  // The first block of each arena, inside the Holder: room for a typical
  // request and a small result without another allocation.
  static constexpr size_t kInitialBlockBytes = 4096;
  // Blocks after the first (and on other threads) start at this size and
  // double up to kMaxBlockBytes: a 100-row result needs two or three.
  static constexpr size_t kStartBlockBytes = 4096;
  static constexpr size_t kMaxBlockBytes = 64 * 1024;

  ArenaMessageAllocator() = default;
  ArenaMessageAllocator(const ArenaMessageAllocator&) = delete;
  ArenaMessageAllocator& operator=(const ArenaMessageAllocator&) = delete;

  grpc::MessageHolder<Request, Response>* AllocateMessages() override { return new Holder(); }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    Holder() : arena_(Options(block_)) {
      this->set_request(google::protobuf::Arena::CreateMessage<Request>(&arena_));
      this->set_response(google::protobuf::Arena::CreateMessage<Response>(&arena_));
    }

    // The messages' cleanups run and every block is freed with the arena.
    void Release() override { delete this; }

   private:
    static google::protobuf::ArenaOptions Options(char* block) {
      google::protobuf::ArenaOptions options;
      options.initial_block = block;
      options.initial_block_size = kInitialBlockBytes;
      options.start_block_size = kStartBlockBytes;
      options.max_block_size = kMaxBlockBytes;
      return options;
    }

    alignas(std::max_align_t) char block_[kInitialBlockBytes];
    google::protobuf::Arena arena_;  // after block_, which it uses
  };
};

}  // namespace sessionbroker::transport

#endif  // SESSIONBROKER_SERVER_TRANSPORT_ARENA_MESSAGE_ALLOCATOR_H_
