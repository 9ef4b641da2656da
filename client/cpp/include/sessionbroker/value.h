// Values of the C++ client, both ways:
//  - Param: a statement parameter built from a C++ value, sent as the
//    sessionbroker.v1.Value case (and so the PostgreSQL type) that value
//    implies (docs/types.md), or as any type named with Param::Typed.
//  - Cell: a read-only view of one result cell, and CellReader<T>, the
//    conversions behind Row::Get<T> (result.h), with a clear error for a
//    NULL read into a non-optional T or a type that does not fit.
//
// Params are immutable values (cheap to copy: they share their encoded form);
// a Cell points into the Result it came from. Thread-safe for concurrent
// reads.
#ifndef SESSIONBROKER_CLIENT_VALUE_H_
#define SESSIONBROKER_CLIENT_VALUE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sessionbroker {

namespace v1 {
class Value;
}  // namespace v1

// bytea: raw bytes (any of the 256 byte values).
struct Bytes {
  std::string data;
  friend bool operator==(const Bytes& a, const Bytes& b) { return a.data == b.data; }
};
// A JSON document as text (sent as jsonb; json and jsonb columns read as it).
struct Json {
  std::string text;
  friend bool operator==(const Json& a, const Json& b) { return a.text == b.text; }
};
// An exact decimal as text, e.g. "12.50" or "NaN" (numeric).
struct Numeric {
  std::string text;
  friend bool operator==(const Numeric& a, const Numeric& b) { return a.text == b.text; }
};
// timestamptz, to the microsecond PostgreSQL keeps.
using Timestamp = std::chrono::system_clock::time_point;

// One statement parameter ($1..$n). Implicit from the C++ values below, so
// `client.Execute("... $1, $2", {42, "text"})` reads naturally:
//
//   C++ value                      Value case      PostgreSQL type
//   int (and smaller integers)     int64_value     int4
//   long, long long, unsigned      int64_value     int8 (above INT64_MAX: numeric)
//   double, float                  double_value    float8
//   bool                           bool_value      bool
//   const char*, std::string,      string_value    untyped: PostgreSQL infers it
//     absl::string_view                            from the context ($1 of a
//                                                  uuid column is a uuid)
//   Bytes                          bytes_value     bytea
//   Json                           json_value      jsonb
//   Numeric                        numeric_value   numeric
//   Timestamp (system_clock)       string_value    timestamptz (RFC 3339, UTC)
//   std::optional<T>               nullopt: NULL (untyped), else as T
//   std::nullopt, nullptr, Param() NULL (untyped; Param::Null("int4") typed)
//   std::vector<T>                 array_value     the array of T's type
//
// Param::Typed(value, "uuid") sends any of these as the named type
// (Value.type; docs/types.md).
class Param {
 public:
  // SQL NULL, untyped.
  Param();
  Param(std::nullptr_t);        // NOLINT(google-explicit-constructor): NULL
  Param(std::nullopt_t);        // NOLINT(google-explicit-constructor): NULL
  Param(int v);                 // NOLINT(google-explicit-constructor)
  Param(long v);                // NOLINT(google-explicit-constructor)
  Param(long long v);           // NOLINT(google-explicit-constructor)
  Param(unsigned int v);        // NOLINT(google-explicit-constructor)
  Param(unsigned long v);       // NOLINT(google-explicit-constructor)
  Param(unsigned long long v);  // NOLINT(google-explicit-constructor)
  Param(double v);              // NOLINT(google-explicit-constructor)
  Param(bool v);                // NOLINT(google-explicit-constructor)
  Param(const char* v);         // NOLINT(google-explicit-constructor); null: NULL
  Param(const std::string& v);  // NOLINT(google-explicit-constructor)
  Param(absl::string_view v);   // NOLINT(google-explicit-constructor)
  Param(Bytes v);               // NOLINT(google-explicit-constructor)
  Param(Json v);                // NOLINT(google-explicit-constructor)
  Param(Numeric v);             // NOLINT(google-explicit-constructor)
  Param(Timestamp v);           // NOLINT(google-explicit-constructor)
  template <typename T>
  Param(const std::optional<T>& v)  // NOLINT(google-explicit-constructor)
      : Param(v.has_value() ? Param(*v) : Param()) {}
  template <typename T>
  Param(const std::vector<T>& v)  // NOLINT(google-explicit-constructor)
      : Param(ArrayOf(v)) {}

  // NULL sent as `type` (empty: untyped).
  static Param Null(absl::string_view type = "");
  // `value` sent as the PostgreSQL type `type`, named as SQL spells it
  // ("uuid", "date", "int2", "text[]", "myschema.mood"); the value must be in
  // the type's input form.
  static Param Typed(Param value, absl::string_view type);
  // An array of `elements` (nested arrays for more dimensions).
  static Param Array(std::vector<Param> elements);

  // The encoded form sent to the broker.
  const v1::Value& proto() const { return *value_; }

 private:
  explicit Param(std::shared_ptr<const v1::Value> value) : value_(std::move(value)) {}
  template <typename T>
  static Param ArrayOf(const std::vector<T>& v) {
    std::vector<Param> elements;
    elements.reserve(v.size());
    for (const auto& e : v) elements.push_back(Param(static_cast<const T&>(e)));
    return Array(std::move(elements));
  }

  std::shared_ptr<const v1::Value> value_;
};

struct Column;

// A read-only view of one result cell (or of an array element), pointing
// into its Result; used by CellReader and for inspecting untyped results.
class Cell {
 public:
  enum class Kind { kNull, kBool, kInt64, kDouble, kString, kBytes, kNumeric, kJson, kArray };

  Cell(const v1::Value* value, const Column* column, int element = -1)
      : value_(value), column_(column), element_(element) {}

  Kind kind() const;
  bool is_null() const { return kind() == Kind::kNull; }
  // The accessors below return the cell's value of that kind (a default for
  // another kind).
  bool bool_value() const;
  int64_t int64_value() const;
  double double_value() const;
  // string_value, numeric_value or json_value: the text.
  const std::string& text() const;
  const std::string& bytes_value() const;
  size_t array_size() const;
  Cell array_element(size_t i) const;

  // The column's PostgreSQL type name (for an array element, the element
  // type: "int4" for an "_int4" column) and name.
  std::string type_name() const;
  const std::string& column_name() const;
  // "column \"id\" (int4)", or "column \"tags\" (_text) element 2": how
  // errors name the cell.
  std::string Describe() const;
  // The value in a short readable form (NULL, 42, "text", {1,2}, \x00ff).
  std::string ToString() const;

  const v1::Value& proto() const { return *value_; }

 private:
  const v1::Value* value_;
  const Column* column_;
  int element_;
};

namespace internal {
// FAILED_PRECONDITION: a NULL cell read into a non-optional `want`.
absl::Status NullInto(const Cell& cell, absl::string_view want);
// INVALID_ARGUMENT: the cell's type cannot be read as `want`.
absl::Status Mismatch(const Cell& cell, absl::string_view want);
template <typename T>
struct AlwaysFalse : std::false_type {};
}  // namespace internal

// Reads a cell as T: Row::Get<T> uses it. Specialized for
//   int64_t                int2/int4/int8/oid
//   int32_t, int16_t       the same, range-checked (OUT_OF_RANGE)
//   double                 float4/float8; int columns too (exact up to 2^53)
//   bool                   bool
//   std::string            text-like columns, and the text of numeric, json
//                          and of every type without a case of its own (uuid,
//                          date, interval, enums, ...)
//   Bytes, Json, Numeric   bytea; json/jsonb; numeric
//   Timestamp              timestamptz (and timestamp, taken as UTC)
//   Cell                   the raw cell
//   std::optional<T>       NULL -> nullopt, else as T
//   std::vector<T>         arrays, element by element as T
// A NULL read into anything but std::optional (or Cell) is
// FAILED_PRECONDITION; a type that does not fit is INVALID_ARGUMENT; both
// name the column and both types.
template <typename T, typename = void>
struct CellReader {
  static_assert(internal::AlwaysFalse<T>::value,
                "Row::Get<T>: T must be one of int64_t, int32_t, int16_t, double, bool, "
                "std::string, Bytes, Json, Numeric, Timestamp, Cell, std::optional<T>, "
                "std::vector<T>");
};

#define SESSIONBROKER_CELL_READER(T)                 \
  template <>                                        \
  struct CellReader<T> {                             \
    static std::string Name();                       \
    static absl::StatusOr<T> Read(const Cell& cell); \
  }
SESSIONBROKER_CELL_READER(int64_t);
SESSIONBROKER_CELL_READER(int32_t);
SESSIONBROKER_CELL_READER(int16_t);
SESSIONBROKER_CELL_READER(double);
SESSIONBROKER_CELL_READER(bool);
SESSIONBROKER_CELL_READER(std::string);
SESSIONBROKER_CELL_READER(Bytes);
SESSIONBROKER_CELL_READER(Json);
SESSIONBROKER_CELL_READER(Numeric);
SESSIONBROKER_CELL_READER(Timestamp);
SESSIONBROKER_CELL_READER(Cell);
#undef SESSIONBROKER_CELL_READER

template <typename T>
struct CellReader<std::optional<T>> {
  static std::string Name() { return "std::optional<" + CellReader<T>::Name() + ">"; }
  static absl::StatusOr<std::optional<T>> Read(const Cell& cell) {
    if (cell.is_null()) return std::optional<T>();
    absl::StatusOr<T> v = CellReader<T>::Read(cell);
    if (!v.ok()) return v.status();
    return std::optional<T>(*std::move(v));
  }
};

template <typename T>
struct CellReader<std::vector<T>> {
  static std::string Name() { return "std::vector<" + CellReader<T>::Name() + ">"; }
  static absl::StatusOr<std::vector<T>> Read(const Cell& cell) {
    if (cell.is_null()) return internal::NullInto(cell, Name());
    if (cell.kind() != Cell::Kind::kArray) return internal::Mismatch(cell, Name());
    std::vector<T> out;
    out.reserve(cell.array_size());
    for (size_t i = 0; i < cell.array_size(); ++i) {
      absl::StatusOr<T> v = CellReader<T>::Read(cell.array_element(i));
      if (!v.ok()) return v.status();
      out.push_back(*std::move(v));
    }
    return out;
  }
};

}  // namespace sessionbroker

#endif  // SESSIONBROKER_CLIENT_VALUE_H_
