// StreamHolds: which KeepAlive streams hold which sessions. A session held by
// at least one stream has its lease suspended; when the last stream holding
// it goes away, its owner starts the orphan grace. This class only keeps the
// relation (both ways, so that each question costs one hash lookup, whatever
// the number of sessions a stream holds); the leases,
// listeners and what an orphan means stay with SessionManager.
//
// Sessions are named by their session name. Thread-compatible:
// SessionManager guards it with its own mutex.
#ifndef SESSIONBROKER_SERVER_CORE_SESSION_STREAM_HOLDS_H_
#define SESSIONBROKER_SERVER_CORE_SESSION_STREAM_HOLDS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::core {

class StreamHolds final {
 public:
  using StreamId = uint64_t;  // never 0

  StreamHolds() = default;
  StreamHolds(const StreamHolds&) = delete;
  StreamHolds& operator=(const StreamHolds&) = delete;

  // A new stream, holding nothing; ids are never reused.
  StreamId Open();
  bool IsOpen(StreamId stream) const { return streams_.contains(stream); }

  // `stream` (open) holds `session` from now on; false if it already did, or
  // if the stream is not open (then nothing changes).
  bool Hold(StreamId stream, absl::string_view session);
  // `stream` no longer holds `session`; false if it did not.
  bool Release(StreamId stream, absl::string_view session);
  // The stream is gone: it holds nothing any more. Returns the sessions it
  // held that no other stream holds now (the orphans), in no particular
  // order. Does nothing for a stream that is not open.
  std::vector<std::string> Close(StreamId stream);
  // The session ended: no stream holds it any more. Returns the streams that
  // held it (to be told), in the order they took hold.
  absl::InlinedVector<StreamId, 1> Forget(absl::string_view session);

  // Whether any stream holds `session`.
  bool Held(absl::string_view session) const { return holders_.contains(session); }
  // How many sessions are held by at least one stream.
  size_t held_sessions() const { return holders_.size(); }

 private:
  StreamId next_ = 1;
  // Stream -> the sessions it holds. A set: one request may name thousands,
  // and releasing each from a list would cost O(N^2).
  absl::flat_hash_map<StreamId, absl::flat_hash_set<std::string>> streams_;
  // Session -> the streams holding it (usually one); no empty entries.
  absl::flat_hash_map<std::string, absl::InlinedVector<StreamId, 1>> holders_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_SESSION_STREAM_HOLDS_H_
