#include "sessionbroker/value.h"

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "sessionbroker/result.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker {
namespace {

std::shared_ptr<const v1::Value> Make(const std::function<void(v1::Value&)>& fill) {
  auto v = std::make_shared<v1::Value>();
  fill(*v);
  return v;
}

std::shared_ptr<const v1::Value> Int(int64_t i, absl::string_view type) {
  return Make([&](v1::Value& v) {
    v.set_int64_value(i);
    v.set_type(std::string(type));
  });
}

std::shared_ptr<const v1::Value> Unsigned(uint64_t u) {
  if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Int(static_cast<int64_t>(u), "");
  }
  return Make([&](v1::Value& v) { v.set_numeric_value(std::to_string(u)); });
}

std::shared_ptr<const v1::Value> Text(absl::string_view s) {
  return Make([&](v1::Value& v) { v.set_string_value(std::string(s)); });
}

std::shared_ptr<const v1::Value> NullValue() {
  static const auto* null = new std::shared_ptr<const v1::Value>(
      Make([](v1::Value& v) { v.set_null_value(google::protobuf::NULL_VALUE); }));
  return *null;
}

}  // namespace

Param::Param() : value_(NullValue()) {}
Param::Param(std::nullptr_t) : Param() {}
Param::Param(std::nullopt_t) : Param() {}
// A C++ int fits int4, and int4-only functions (e.g. make_interval) take it.
Param::Param(int v) : value_(Int(v, "int4")) {}
Param::Param(long v) : value_(Int(v, "")) {}
Param::Param(long long v) : value_(Int(v, "")) {}
Param::Param(unsigned int v) : value_(Int(v, "")) {}
Param::Param(unsigned long v) : value_(Unsigned(v)) {}
Param::Param(unsigned long long v) : value_(Unsigned(v)) {}
Param::Param(double v) : value_(Make([&](v1::Value& p) { p.set_double_value(v); })) {}
Param::Param(bool v) : value_(Make([&](v1::Value& p) { p.set_bool_value(v); })) {}
Param::Param(const char* v) : value_(v == nullptr ? NullValue() : Text(v)) {}
Param::Param(const std::string& v) : value_(Text(v)) {}
Param::Param(absl::string_view v) : value_(Text(v)) {}
Param::Param(Bytes v) : value_(Make([&](v1::Value& p) { p.set_bytes_value(std::move(v.data)); })) {}
Param::Param(Json v) : value_(Make([&](v1::Value& p) { p.set_json_value(std::move(v.text)); })) {}
Param::Param(Numeric v)
    : value_(Make([&](v1::Value& p) { p.set_numeric_value(std::move(v.text)); })) {}
Param::Param(Timestamp v)
    : value_(Make([&](v1::Value& p) {
        p.set_string_value(
            absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::FromChrono(v), absl::UTCTimeZone()));
        p.set_type("timestamptz");
      })) {}

Param Param::Null(absl::string_view type) {
  if (type.empty()) return Param();
  return Typed(Param(), type);
}

Param Param::Typed(Param value, absl::string_view type) {
  auto v = std::make_shared<v1::Value>(*value.value_);
  v->set_type(std::string(type));
  return Param(std::shared_ptr<const v1::Value>(std::move(v)));
}

Param Param::Array(std::vector<Param> elements) {
  auto v = std::make_shared<v1::Value>();
  v1::ArrayValue* array = v->mutable_array_value();
  for (const Param& e : elements) {
    v1::Value* element = array->add_values();
    *element = *e.value_;
    // The broker ignores types on elements: the array's type comes from
    // their cases (an int element is int8 there).
    element->clear_type();
  }
  return Param(std::shared_ptr<const v1::Value>(std::move(v)));
}

// ---- Cell ----

Cell::Kind Cell::kind() const {
  switch (value_->kind_case()) {
    case v1::Value::kBoolValue:
      return Kind::kBool;
    case v1::Value::kInt64Value:
      return Kind::kInt64;
    case v1::Value::kDoubleValue:
      return Kind::kDouble;
    case v1::Value::kStringValue:
      return Kind::kString;
    case v1::Value::kBytesValue:
      return Kind::kBytes;
    case v1::Value::kNumericValue:
      return Kind::kNumeric;
    case v1::Value::kJsonValue:
      return Kind::kJson;
    case v1::Value::kArrayValue:
      return Kind::kArray;
    case v1::Value::kNullValue:
    case v1::Value::KIND_NOT_SET:
      break;
  }
  return Kind::kNull;
}

bool Cell::bool_value() const { return value_->bool_value(); }
int64_t Cell::int64_value() const { return value_->int64_value(); }
double Cell::double_value() const { return value_->double_value(); }
const std::string& Cell::text() const {
  switch (value_->kind_case()) {
    case v1::Value::kNumericValue:
      return value_->numeric_value();
    case v1::Value::kJsonValue:
      return value_->json_value();
    default:
      return value_->string_value();
  }
}
const std::string& Cell::bytes_value() const { return value_->bytes_value(); }
size_t Cell::array_size() const { return value_->array_value().values_size(); }
Cell Cell::array_element(size_t i) const {
  return Cell(&value_->array_value().values(static_cast<int>(i)), column_, static_cast<int>(i));
}

std::string Cell::type_name() const {
  if (column_ == nullptr) return "";
  if (element_ >= 0 && absl::StartsWith(column_->type_name, "_")) {
    return column_->type_name.substr(1);
  }
  return column_->type_name;
}

const std::string& Cell::column_name() const {
  static const auto* empty = new std::string();
  return column_ == nullptr ? *empty : column_->name;
}

std::string Cell::Describe() const {
  std::string out = absl::StrCat("column \"", column_name(), "\" (",
                                 column_ == nullptr ? "" : column_->type_name, ")");
  if (element_ >= 0) absl::StrAppend(&out, " element ", element_);
  return out;
}

std::string Cell::ToString() const {
  switch (kind()) {
    case Kind::kNull:
      return "NULL";
    case Kind::kBool:
      return bool_value() ? "true" : "false";
    case Kind::kInt64:
      return std::to_string(int64_value());
    case Kind::kDouble:
      return absl::StrCat(double_value());
    case Kind::kString:
    case Kind::kNumeric:
    case Kind::kJson:
      return text();
    case Kind::kBytes:
      return absl::StrCat("\\x", absl::BytesToHexString(bytes_value()));
    case Kind::kArray: {
      std::vector<std::string> parts;
      for (size_t i = 0; i < array_size(); ++i) parts.push_back(array_element(i).ToString());
      return absl::StrCat("{", absl::StrJoin(parts, ","), "}");
    }
  }
  return "";
}

namespace {

absl::string_view KindName(Cell::Kind kind) {
  switch (kind) {
    case Cell::Kind::kNull:
      return "NULL";
    case Cell::Kind::kBool:
      return "a bool";
    case Cell::Kind::kInt64:
      return "an integer";
    case Cell::Kind::kDouble:
      return "a floating-point number";
    case Cell::Kind::kString:
      return "text";
    case Cell::Kind::kBytes:
      return "bytes";
    case Cell::Kind::kNumeric:
      return "a numeric";
    case Cell::Kind::kJson:
      return "JSON";
    case Cell::Kind::kArray:
      return "an array";
  }
  return "";
}

}  // namespace

namespace internal {

absl::Status NullInto(const Cell& cell, absl::string_view want) {
  return absl::FailedPreconditionError(absl::StrCat(cell.Describe(), " is NULL, which ", want,
                                                    " cannot hold: read it as std::optional<", want,
                                                    ">"));
}

absl::Status Mismatch(const Cell& cell, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat(cell.Describe(), " holds ", KindName(cell.kind()),
                                                 ", which cannot be read as ", want));
}

}  // namespace internal

namespace {

template <typename T>
absl::StatusOr<T> ReadInt(const Cell& cell, absl::string_view name) {
  if (cell.is_null()) return internal::NullInto(cell, name);
  if (cell.kind() != Cell::Kind::kInt64) return internal::Mismatch(cell, name);
  int64_t v = cell.int64_value();
  if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
    return absl::OutOfRangeError(
        absl::StrCat(cell.Describe(), " holds ", v, ", which does not fit ", name));
  }
  return static_cast<T>(v);
}

// PostgreSQL's timestamp output in the ISO DateStyle ("2024-02-29
// 10:34:56.789+00", "+05:30", "2024-02-29" for a date); RFC 3339 too.
absl::StatusOr<Timestamp> ParseTimestamp(const Cell& cell, absl::string_view name) {
  std::string s = cell.text();
  if (s.size() >= 11 && (s[10] == ' ' || s[10] == 'T')) s[10] = 'T';
  std::string err;
  absl::Time t;
  if (s.size() == 10) {
    if (absl::ParseTime("%Y-%m-%d", s, absl::UTCTimeZone(), &t, &err)) return absl::ToChronoTime(t);
  } else {
    size_t sign = s.find_first_of("+-Z", 11);
    if (sign == std::string::npos) {
      if (absl::ParseTime("%Y-%m-%dT%H:%M:%E*S", s, absl::UTCTimeZone(), &t, &err)) {
        return absl::ToChronoTime(t);
      }
    } else {
      // PostgreSQL omits the offset's minutes when they are 0 ("+00").
      if (s[sign] != 'Z' && s.size() - sign == 3) s += ":00";
      if (absl::ParseTime("%Y-%m-%dT%H:%M:%E*S%Ez", s, absl::UTCTimeZone(), &t, &err)) {
        return absl::ToChronoTime(t);
      }
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(cell.Describe(), " holds \"", cell.text(),
                                                 "\", which cannot be read as ", name, ": ", err));
}

}  // namespace

std::string CellReader<int64_t>::Name() { return "int64_t"; }
absl::StatusOr<int64_t> CellReader<int64_t>::Read(const Cell& cell) {
  return ReadInt<int64_t>(cell, Name());
}
std::string CellReader<int32_t>::Name() { return "int32_t"; }
absl::StatusOr<int32_t> CellReader<int32_t>::Read(const Cell& cell) {
  return ReadInt<int32_t>(cell, Name());
}
std::string CellReader<int16_t>::Name() { return "int16_t"; }
absl::StatusOr<int16_t> CellReader<int16_t>::Read(const Cell& cell) {
  return ReadInt<int16_t>(cell, Name());
}

std::string CellReader<double>::Name() { return "double"; }
absl::StatusOr<double> CellReader<double>::Read(const Cell& cell) {
  if (cell.is_null()) return internal::NullInto(cell, Name());
  if (cell.kind() == Cell::Kind::kDouble) return cell.double_value();
  if (cell.kind() == Cell::Kind::kInt64) return static_cast<double>(cell.int64_value());
  return internal::Mismatch(cell, Name());
}

std::string CellReader<bool>::Name() { return "bool"; }
absl::StatusOr<bool> CellReader<bool>::Read(const Cell& cell) {
  if (cell.is_null()) return internal::NullInto(cell, Name());
  if (cell.kind() == Cell::Kind::kBool) return cell.bool_value();
  return internal::Mismatch(cell, Name());
}

std::string CellReader<std::string>::Name() { return "std::string"; }
absl::StatusOr<std::string> CellReader<std::string>::Read(const Cell& cell) {
  if (cell.is_null()) return internal::NullInto(cell, Name());
  switch (cell.kind()) {
    case Cell::Kind::kString:
    case Cell::Kind::kNumeric:
    case Cell::Kind::kJson:
      return cell.text();
    default:
      return internal::Mismatch(cell, Name());
  }
}

std::string CellReader<Bytes>::Name() { return "sessionbroker::Bytes"; }
absl::StatusOr<Bytes> CellReader<Bytes>::Read(const Cell& cell) {
  if (cell.is_null()) return internal::NullInto(cell, Name());
  if (cell.kind() == Cell::Kind::kBytes) return Bytes{cell.bytes_value()};
  return internal::Mismatch(cell, Name());
}

std::string CellReader<Json>::Name() { return "sessionbroker::Json"; }
absl::StatusOr<Json> CellReader<Json>::Read(const Cell& cell) {
  if (cell.is_null()) return internal::NullInto(cell, Name());
  if (cell.kind() == Cell::Kind::kJson) return Json{cell.text()};
  return internal::Mismatch(cell, Name());
}

std::string CellReader<Numeric>::Name() { return "sessionbroker::Numeric"; }
absl::StatusOr<Numeric> CellReader<Numeric>::Read(const Cell& cell) {
  if (cell.is_null()) return internal::NullInto(cell, Name());
  if (cell.kind() == Cell::Kind::kNumeric) return Numeric{cell.text()};
  if (cell.kind() == Cell::Kind::kInt64) return Numeric{std::to_string(cell.int64_value())};
  return internal::Mismatch(cell, Name());
}

std::string CellReader<Timestamp>::Name() { return "sessionbroker::Timestamp"; }
absl::StatusOr<Timestamp> CellReader<Timestamp>::Read(const Cell& cell) {
  if (cell.is_null()) return internal::NullInto(cell, Name());
  std::string type = cell.type_name();
  if (cell.kind() != Cell::Kind::kString ||
      (type != "timestamptz" && type != "timestamp" && type != "date")) {
    return internal::Mismatch(cell, Name());
  }
  return ParseTimestamp(cell, Name());
}

std::string CellReader<Cell>::Name() { return "sessionbroker::Cell"; }
absl::StatusOr<Cell> CellReader<Cell>::Read(const Cell& cell) { return cell; }

}  // namespace sessionbroker
