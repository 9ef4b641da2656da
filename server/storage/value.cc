#include "server/storage/value.h"

#include <charconv>
#include <cmath>
#include <cstddef>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace sessionbroker::storage {
namespace {

// Equality is "same data": a NaN read back from the database must compare equal
// to the NaN that was sent, and -0 must not hide behind 0 in round-trip tests.
bool SameDouble(double a, double b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return a == b && std::signbit(a) == std::signbit(b);
}

std::string ShortestDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  char buf[32];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

void AppendDebugString(const Value& v, std::string* out) {
  switch (v.kind) {
    case Value::Kind::kNull:
      out->append("NULL");
      return;
    case Value::Kind::kBool:
      out->append(v.bool_value ? "true" : "false");
      return;
    case Value::Kind::kInt64:
      absl::StrAppend(out, v.int64_value);
      return;
    case Value::Kind::kDouble:
      out->append(ShortestDouble(v.double_value));
      return;
    case Value::Kind::kString:
      absl::StrAppend(out, "\"", absl::CHexEscape(v.text), "\"");
      return;
    case Value::Kind::kBytes:
      absl::StrAppend(out, "bytes(", absl::BytesToHexString(v.text), ")");
      return;
    case Value::Kind::kNumeric:
      absl::StrAppend(out, "numeric(", v.text, ")");
      return;
    case Value::Kind::kJson:
      absl::StrAppend(out, "json(", absl::CHexEscape(v.text), ")");
      return;
    case Value::Kind::kArray:
      out->push_back('[');
      for (size_t i = 0; i < v.elements.size(); ++i) {
        if (i > 0) out->append(", ");
        AppendDebugString(v.elements[i], out);
      }
      out->push_back(']');
      return;
  }
  out->append("<invalid kind>");
}

}  // namespace

bool operator==(const Value& a, const Value& b) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kNull:
      return true;
    case Value::Kind::kBool:
      return a.bool_value == b.bool_value;
    case Value::Kind::kInt64:
      return a.int64_value == b.int64_value;
    case Value::Kind::kDouble:
      return SameDouble(a.double_value, b.double_value);
    case Value::Kind::kString:
    case Value::Kind::kBytes:
    case Value::Kind::kNumeric:
    case Value::Kind::kJson:
      return a.text == b.text;
    case Value::Kind::kArray:
      return a.elements == b.elements;
  }
  return false;
}

std::string DebugString(const Value& v) {
  std::string out;
  AppendDebugString(v, &out);
  return out;
}

}  // namespace sessionbroker::storage
