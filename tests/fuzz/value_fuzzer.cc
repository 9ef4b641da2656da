// libFuzzer target: value conversion without a database. The first byte
// picks what the rest is:
//   0: the text PostgreSQL prints for a type (the second byte picks the
//      type) decoded by ValueFromText, the result re-encoded as a parameter;
//   1: a type name as a caller spells it (BuiltinTypeOid, TypeName,
//      ArrayElementType);
//   2: a tree of Values built from the bytes, encoded as parameter text
//      (ParameterText) and in libpq's arrays (EncodeParams, when built with
//      libpq), sized (ResultBytes); a flat array of strings must decode back
//      from its parameter text to itself (ArrayFromText).
// Nothing may crash, read out of bounds or hit undefined behaviour.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "server/storage/value.h"
#include "server/storage/value_text.h"
#ifdef SB_FUZZ_WITH_LIBPQ
#include "server/storage/pq_codec.h"
#endif

namespace {

using sessionbroker::storage::Value;

void Check(bool condition) {
  if (!condition) std::abort();
}

// The types whose text the decoder knows, and some it does not.
constexpr uint32_t kTypes[] = {16,   17,   18,   19,   20,   21,   23,   25,   26,   114,  700,
                               701,  1000, 1001, 1005, 1007, 1009, 1016, 1021, 1022, 1042, 1043,
                               1082, 1114, 1184, 1231, 1700, 2950, 3802, 3807, 0,    99999};

// Reads the input front to back; past the end every read is 0 / empty.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  std::string Text() {
    const size_t n = std::min<size_t>(Byte(), size_ - pos_);
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }
  bool done() const { return pos_ >= size_; }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// A Value from the reader; arrays at most 7 deep and 16 wide, so that a
// small input cannot ask for unbounded work.
Value ReadValue(Reader& in, int depth) {
  const uint8_t kind = in.Byte() % 9;
  switch (kind) {
    case 0:
      return Value::Null();
    case 1:
      return Value::Bool(in.Byte() & 1);
    case 2: {
      uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v = (v << 8) | in.Byte();
      return Value::Int64(static_cast<int64_t>(v));
    }
    case 3: {
      uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | in.Byte();
      double d;
      static_assert(sizeof(d) == sizeof(bits));
      __builtin_memcpy(&d, &bits, sizeof(d));
      return Value::Double(d);
    }
    case 4:
      return Value::String(in.Text());
    case 5:
      return Value::Bytes(in.Text());
    case 6:
      return Value::Numeric(in.Text());
    case 7:
      return Value::Json(in.Text());
    default: {
      std::vector<Value> elements;
      if (depth < 7) {
        const int n = in.Byte() % 17;
        for (int i = 0; i < n && !in.done(); ++i) elements.push_back(ReadValue(in, depth + 1));
      }
      return Value::Array(std::move(elements));
    }
  }
}

void Encode(const Value& value) {
  (void)sessionbroker::storage::ImpliedTypeOid(value);
  (void)sessionbroker::storage::ResultBytes(value);
  (void)sessionbroker::storage::DebugString(value);
  auto text = sessionbroker::storage::ParameterText(value);
#ifdef SB_FUZZ_WITH_LIBPQ
  const std::vector<Value> params = {value};
  auto encoded = sessionbroker::storage::EncodeParams(params);
  Check(encoded.ok() == text.ok());
#endif
  if (!text.ok() || !text->has_value() || value.kind != Value::Kind::kArray) return;
  for (const Value& e : value.elements) {
    if (e.kind != Value::Kind::kString) return;
  }
  auto decoded = sessionbroker::storage::ArrayFromText(25, **text);  // text[]
  Check(decoded.ok());
  Check(*decoded == value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Reader in(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      const uint32_t oid = kTypes[in.Byte() % (sizeof(kTypes) / sizeof(kTypes[0]))];
      const absl::string_view text(reinterpret_cast<const char*>(data) + 2,
                                   size >= 2 ? size - 2 : 0);
      auto value = sessionbroker::storage::ValueFromText(oid, text);
      if (value.ok()) Encode(*value);
      (void)sessionbroker::storage::ArrayFromText(oid, text);
      break;
    }
    case 1: {
      const absl::string_view name(reinterpret_cast<const char*>(data) + 1, size - 1);
      const uint32_t oid = sessionbroker::storage::BuiltinTypeOid(name);
      (void)sessionbroker::storage::TypeName(oid);
      (void)sessionbroker::storage::ArrayElementType(oid);
      break;
    }
    default:
      Encode(ReadValue(in, 0));
      break;
  }
  return 0;
}
