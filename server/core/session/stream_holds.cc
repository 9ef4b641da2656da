#include "server/core/session/stream_holds.h"

#include <algorithm>
#include <utility>

namespace sessionbroker::core {
namespace {

template <typename Container, typename T>
bool EraseOne(Container& c, const T& value) {
  auto it = std::find(c.begin(), c.end(), value);
  if (it == c.end()) return false;
  c.erase(it);
  return true;
}

}  // namespace

StreamHolds::StreamId StreamHolds::Open() {
  const StreamId id = next_++;
  streams_[id];
  return id;
}

bool StreamHolds::Hold(StreamId stream, absl::string_view session) {
  auto st = streams_.find(stream);
  if (st == streams_.end()) return false;
  absl::InlinedVector<StreamId, 1>& holders = holders_[session];
  if (std::find(holders.begin(), holders.end(), stream) != holders.end()) return false;
  holders.push_back(stream);
  st->second.emplace(session);
  return true;
}

bool StreamHolds::Release(StreamId stream, absl::string_view session) {
  auto holders = holders_.find(session);
  if (holders == holders_.end() || !EraseOne(holders->second, stream)) return false;
  if (holders->second.empty()) holders_.erase(holders);
  auto st = streams_.find(stream);
  if (st != streams_.end()) st->second.erase(session);
  return true;
}

std::vector<std::string> StreamHolds::Close(StreamId stream) {
  std::vector<std::string> orphans;
  auto st = streams_.find(stream);
  if (st == streams_.end()) return orphans;
  for (const std::string& session : st->second) {
    auto holders = holders_.find(session);
    if (holders == holders_.end() || !EraseOne(holders->second, stream)) continue;
    if (!holders->second.empty()) continue;
    holders_.erase(holders);
    orphans.push_back(session);
  }
  streams_.erase(st);
  return orphans;
}

absl::InlinedVector<StreamHolds::StreamId, 1> StreamHolds::Forget(absl::string_view session) {
  auto holders = holders_.find(session);
  if (holders == holders_.end()) return {};
  absl::InlinedVector<StreamId, 1> out = std::move(holders->second);
  holders_.erase(holders);
  for (const StreamId id : out) {
    auto st = streams_.find(id);
    if (st != streams_.end()) st->second.erase(session);
  }
  return out;
}

}  // namespace sessionbroker::core
