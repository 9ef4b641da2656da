#include "server/transport/client_id.h"

namespace sessionbroker::transport {
namespace {

constexpr absl::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The length of the well-formed UTF-8 sequence `s` starts with (Unicode
// table 3-7: no overlong forms, surrogates or code points above U+10FFFF),
// or 0 if it does not start with one.
size_t Utf8SequenceLength(absl::string_view s) {
  const auto byte = [s](size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return 1;
  size_t n;
  unsigned char low = 0x80;  // the second byte's range
  unsigned char high = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    n = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (s.size() < n || byte(1) < low || byte(1) > high) return 0;
  for (size_t i = 2; i < n; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

std::string ClientIdOf(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kClientIdHeader);
  if (it == metadata.end()) return "";
  return ClientIdFromHeader(absl::string_view(it->second.data(), it->second.size()));
}

std::string ClientIdFromHeader(absl::string_view value) {
  std::string id;
  while (!value.empty()) {
    const size_t n = Utf8SequenceLength(value);
    const absl::string_view character = n > 0 ? value.substr(0, n) : kReplacement;
    if (id.size() + character.size() > kMaxClientIdBytes) break;
    id.append(character.data(), character.size());
    value.remove_prefix(n > 0 ? n : 1);
  }
  return id;
}

}  // namespace sessionbroker::transport
