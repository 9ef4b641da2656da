// Domain values, statements and results exchanged between the core and the
// storage layer. Plain data: no gRPC, no libpq. Thread-compatible.
#ifndef SESSIONBROKER_SERVER_STORAGE_VALUE_H_
#define SESSIONBROKER_SERVER_STORAGE_VALUE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sessionbroker::storage {

// One SQL value. `kind` says which member is meaningful; `text` holds the
// payload of every string-like kind (text, bytes, numeric, json).
struct Value {
  enum class Kind { kNull, kBool, kInt64, kDouble, kString, kBytes, kNumeric, kJson, kArray };

  Kind kind = Kind::kNull;
  bool bool_value = false;
  int64_t int64_value = 0;
  double double_value = 0;
  std::string text;             // kString, kBytes (raw bytes), kNumeric, kJson
  std::vector<Value> elements;  // kArray

  static Value Null() { return Value{}; }
  static Value Bool(bool v) {
    Value out;
    out.kind = Kind::kBool;
    out.bool_value = v;
    return out;
  }
  static Value Int64(int64_t v) {
    Value out;
    out.kind = Kind::kInt64;
    out.int64_value = v;
    return out;
  }
  static Value Double(double v) {
    Value out;
    out.kind = Kind::kDouble;
    out.double_value = v;
    return out;
  }
  static Value String(std::string v) { return WithText(Kind::kString, std::move(v)); }
  static Value Bytes(std::string v) { return WithText(Kind::kBytes, std::move(v)); }
  static Value Numeric(std::string v) { return WithText(Kind::kNumeric, std::move(v)); }
  static Value Json(std::string v) { return WithText(Kind::kJson, std::move(v)); }
  static Value Array(std::vector<Value> v) {
    Value out;
    out.kind = Kind::kArray;
    out.elements = std::move(v);
    return out;
  }

  bool is_null() const { return kind == Kind::kNull; }

 private:
  static Value WithText(Kind kind, std::string v) {
    Value out;
    out.kind = kind;
    out.text = std::move(v);
    return out;
  }
};

bool operator==(const Value& a, const Value& b);
inline bool operator!=(const Value& a, const Value& b) { return !(a == b); }

// A readable rendering for logs and test failure messages (never used to build SQL).
std::string DebugString(const Value& v);

// One SQL statement with its positional parameters ($1 is params[0]).
struct Statement {
  std::string sql;
  std::vector<Value> params;
  // The connection may prepare the statement and keep it for the next
  // execution of the same SQL (a plain query or DML that leaves no session
  // state behind; the statement runner decides).
  bool cacheable = false;
  // The PostgreSQL type each parameter is sent as, named as SQL spells it
  // ("int4", "uuid", "text[]", "myschema.mood"; sessionbroker.v1 Value.type);
  // "" for the type its kind implies (ImpliedTypeOid in value_text.h). Empty,
  // or one per parameter.
  std::vector<std::string> param_types = {};
};

struct Column {
  std::string name;
  uint32_t type_oid = 0;
  std::string type_name;
};

struct QueryResult {
  std::vector<Column> columns;
  std::vector<std::vector<Value>> rows;
  int64_t rows_affected = 0;
  std::string command_tag;
};

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_VALUE_H_
