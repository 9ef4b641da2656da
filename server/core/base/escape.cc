#include "server/core/base/escape.h"

#include <cstddef>

#include "absl/strings/str_cat.h"

namespace sessionbroker::core {
namespace {

constexpr absl::string_view kReplacementCharacter = "\xEF\xBF\xBD";  // U+FFFD

// The length of the well-formed UTF-8 sequence (Unicode table 3-7: no
// overlong forms, no surrogates, nothing above U+10FFFF) that starts at
// s[i], a byte of 0x80 or above; 0 if there is none.
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;  // bounds of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

// Calls `ascii(c)` for each byte below 0x80 and appends well-formed UTF-8
// sequences as they are and U+FFFD for each byte that starts none.
template <class Ascii>
void EscapeUtf8(absl::string_view in, std::string* out, Ascii ascii) {
  for (size_t i = 0; i < in.size();) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c < 0x80) {
      ascii(static_cast<char>(c));
      ++i;
    } else if (const size_t n = Utf8SequenceLength(in, i); n > 0) {
      out->append(in.data() + i, n);
      i += n;
    } else {
      out->append(kReplacementCharacter.data(), kReplacementCharacter.size());
      ++i;
    }
  }
}

}  // namespace

std::string EscapeForLogText(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  EscapeUtf8(value, &out, [&out](char c) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out.push_back(static_cast<unsigned char>(c) < 0x20 ? '?' : c);
    }
  });
  return out;
}

void AppendJsonString(absl::string_view value, std::string* out) {
  out->push_back('"');
  EscapeUtf8(value, out, [out](char c) {
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          static constexpr char kHex[] = "0123456789abcdef";
          const char escaped[] = {'\\', 'u', '0', '0', kHex[(c >> 4) & 15], kHex[c & 15]};
          out->append(escaped, sizeof(escaped));
        } else {
          out->push_back(c);
        }
    }
  });
  out->push_back('"');
}

std::string EscapePrometheusLabel(absl::string_view value) {
  std::string out;
  out.reserve(value.size());
  EscapeUtf8(value, &out, [&out](char c) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  });
  return out;
}

std::string Abbreviated(absl::string_view text) {
  if (text.size() <= kMaxEchoedChars) return std::string(text);
  size_t cut = kMaxEchoedChars;
  // Back up over UTF-8 continuation bytes (10xxxxxx) to a character start.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(text.substr(0, cut), "...");
}

}  // namespace sessionbroker::core
