#include "server/storage/value_text.h"

#include <charconv>
#include <cmath>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace sessionbroker::storage {
namespace {

struct BuiltinType {
  uint32_t oid;
  const char* name;
  uint32_t array_oid;  // 0 if the type has no array type
  const char* array_name;
};

// The built-in types of PostgreSQL 15's pg_catalog (base, range and
// multirange types, plus the pseudo-types a query can return), from
// `SELECT oid, typname, typarray FROM pg_type` (each array type is named "_"
// followed by its element's name). Sorted by oid.
constexpr BuiltinType kBuiltinTypes[] = {
    {16, "bool", 1000, "_bool"},
    {17, "bytea", 1001, "_bytea"},
    {18, "char", 1002, "_char"},
    {19, "name", 1003, "_name"},
    {20, "int8", 1016, "_int8"},
    {21, "int2", 1005, "_int2"},
    {22, "int2vector", 1006, "_int2vector"},
    {23, "int4", 1007, "_int4"},
    {24, "regproc", 1008, "_regproc"},
    {25, "text", 1009, "_text"},
    {26, "oid", 1028, "_oid"},
    {27, "tid", 1010, "_tid"},
    {28, "xid", 1011, "_xid"},
    {29, "cid", 1012, "_cid"},
    {30, "oidvector", 1013, "_oidvector"},
    {114, "json", 199, "_json"},
    {142, "xml", 143, "_xml"},
    {600, "point", 1017, "_point"},
    {601, "lseg", 1018, "_lseg"},
    {602, "path", 1019, "_path"},
    {603, "box", 1020, "_box"},
    {604, "polygon", 1027, "_polygon"},
    {628, "line", 629, "_line"},
    {650, "cidr", 651, "_cidr"},
    {700, "float4", 1021, "_float4"},
    {701, "float8", 1022, "_float8"},
    {705, "unknown", 0, ""},
    {718, "circle", 719, "_circle"},
    {774, "macaddr8", 775, "_macaddr8"},
    {790, "money", 791, "_money"},
    {829, "macaddr", 1040, "_macaddr"},
    {869, "inet", 1041, "_inet"},
    {1042, "bpchar", 1014, "_bpchar"},
    {1043, "varchar", 1015, "_varchar"},
    {1082, "date", 1182, "_date"},
    {1083, "time", 1183, "_time"},
    {1114, "timestamp", 1115, "_timestamp"},
    {1184, "timestamptz", 1185, "_timestamptz"},
    {1186, "interval", 1187, "_interval"},
    {1266, "timetz", 1270, "_timetz"},
    {1560, "bit", 1561, "_bit"},
    {1562, "varbit", 1563, "_varbit"},
    {1700, "numeric", 1231, "_numeric"},
    {1790, "refcursor", 2201, "_refcursor"},
    {2202, "regprocedure", 2207, "_regprocedure"},
    {2203, "regoper", 2208, "_regoper"},
    {2204, "regoperator", 2209, "_regoperator"},
    {2205, "regclass", 2210, "_regclass"},
    {2206, "regtype", 2211, "_regtype"},
    {2249, "record", 2287, "_record"},
    {2275, "cstring", 1263, "_cstring"},
    {2278, "void", 0, ""},
    {2950, "uuid", 2951, "_uuid"},
    {3220, "pg_lsn", 3221, "_pg_lsn"},
    {3614, "tsvector", 3643, "_tsvector"},
    {3615, "tsquery", 3645, "_tsquery"},
    {3734, "regconfig", 3735, "_regconfig"},
    {3769, "regdictionary", 3770, "_regdictionary"},
    {3802, "jsonb", 3807, "_jsonb"},
    {3904, "int4range", 3905, "_int4range"},
    {3906, "numrange", 3907, "_numrange"},
    {3908, "tsrange", 3909, "_tsrange"},
    {3910, "tstzrange", 3911, "_tstzrange"},
    {3912, "daterange", 3913, "_daterange"},
    {3926, "int8range", 3927, "_int8range"},
    {4072, "jsonpath", 4073, "_jsonpath"},
    {4089, "regnamespace", 4090, "_regnamespace"},
    {4096, "regrole", 4097, "_regrole"},
    {4191, "regcollation", 4192, "_regcollation"},
    {4451, "int4multirange", 6150, "_int4multirange"},
    {4532, "nummultirange", 6151, "_nummultirange"},
    {4533, "tsmultirange", 6152, "_tsmultirange"},
    {4534, "tstzmultirange", 6153, "_tstzmultirange"},
    {4535, "datemultirange", 6155, "_datemultirange"},
    {4536, "int8multirange", 6157, "_int8multirange"},
    {5038, "pg_snapshot", 5039, "_pg_snapshot"},
    {5069, "xid8", 271, "_xid8"},
};

constexpr uint32_t kBoxOid = 603;

// PostgreSQL's MAXDIM: no array has more dimensions, so deeper nesting in the
// text is malformed (and the limit bounds the parser's recursion).
constexpr int kMaxArrayDimensions = 6;

// "int4", or "oid 16384" for a type this file does not know.
std::string TypeLabel(uint32_t type_oid) {
  const absl::string_view name = TypeName(type_oid);
  return name.empty() ? absl::StrCat("oid ", type_oid) : std::string(name);
}

absl::Status Malformed(uint32_t type_oid, absl::string_view text, absl::string_view why) {
  constexpr size_t kShown = 64;
  return absl::InternalError(
      absl::StrCat("cannot decode a ", TypeLabel(type_oid), " value from the server (", why,
                   "): \"", text.substr(0, kShown), text.size() > kShown ? "..." : "", "\""));
}

absl::StatusOr<Value> DecodeBool(absl::string_view text) {
  if (text == "t") return Value::Bool(true);
  if (text == "f") return Value::Bool(false);
  return Malformed(type_oid::kBool, text, "expected t or f");
}

absl::StatusOr<Value> DecodeInt(uint32_t type_oid, absl::string_view text) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) return Malformed(type_oid, text, "not an integer");
  return Value::Int64(v);
}

// float4/float8 output: with extra_float_digits > 0 (the broker sets 3) the
// server prints the shortest text that reads back as the same value, so a
// correctly rounded parse (from_chars) restores the exact double.
absl::StatusOr<Value> DecodeFloat(uint32_t type_oid, absl::string_view text) {
  if (text == "NaN") return Value::Double(std::nan(""));
  if (text == "Infinity") return Value::Double(HUGE_VAL);
  if (text == "-Infinity") return Value::Double(-HUGE_VAL);
  double v = 0;
  const char* end = text.data() + text.size();
  const std::from_chars_result r = std::from_chars(text.data(), end, v);
  if (r.ec != std::errc() || r.ptr != end) {
    return Malformed(type_oid, text, "not a floating-point number");
  }
  return Value::Double(v);
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool IsOctal(char c) { return c >= '0' && c <= '7'; }

// bytea output: "\x" + hex by default (bytea_output = hex); the legacy escape
// format (bytea_output = escape) prints printable bytes as they are, "\\" for
// a backslash and "\ooo" (octal) for everything else.
absl::StatusOr<Value> DecodeBytea(absl::string_view text) {
  std::string bytes;
  if (absl::StartsWith(text, "\\x")) {
    const absl::string_view hex = text.substr(2);
    if (hex.size() % 2 != 0) return Malformed(type_oid::kBytea, text, "odd number of hex digits");
    bytes.reserve(hex.size() / 2);
    for (size_t i = 0; i < hex.size(); i += 2) {
      const int hi = HexDigit(hex[i]);
      const int lo = HexDigit(hex[i + 1]);
      if (hi < 0 || lo < 0) return Malformed(type_oid::kBytea, text, "invalid hex digit");
      bytes.push_back(static_cast<char>(hi * 16 + lo));
    }
    return Value::Bytes(std::move(bytes));
  }
  bytes.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      bytes.push_back(text[i]);
    } else if (i + 1 < text.size() && text[i + 1] == '\\') {
      bytes.push_back('\\');
      ++i;
    } else if (i + 3 < text.size() && IsOctal(text[i + 1]) && IsOctal(text[i + 2]) &&
               IsOctal(text[i + 3])) {
      bytes.push_back(static_cast<char>((text[i + 1] - '0') * 64 + (text[i + 2] - '0') * 8 +
                                        (text[i + 3] - '0')));
      i += 3;
    } else {
      return Malformed(type_oid::kBytea, text, "invalid escape");
    }
  }
  return Value::Bytes(std::move(bytes));
}

// Parses the array output format: "{" elements separated by the element
// type's delimiter "}", an element being a nested array, NULL, a bare word or
// a double-quoted string in which a backslash escapes the next character.
class ArrayTextParser final {
 public:
  ArrayTextParser(uint32_t element_oid, absl::string_view text)
      : element_oid_(element_oid), delimiter_(element_oid == kBoxOid ? ';' : ','), text_(text) {}

  absl::StatusOr<Value> Parse() {
    // Arrays whose lower bounds are not 1 start with their bounds, e.g.
    // "[0:2]={a,b,c}"; a Value has no bounds, so they are dropped.
    if (!text_.empty() && text_[0] == '[') {
      const size_t eq = text_.find('=');
      if (eq == absl::string_view::npos) return Error("dimension bounds without '='");
      pos_ = eq + 1;
    }
    absl::StatusOr<Value> array = ParseArray(1);
    if (!array.ok()) return array;
    SkipSpace();
    if (pos_ != text_.size()) return Error("trailing characters after the array");
    return array;
  }

 private:
  absl::StatusOr<Value> ParseArray(int depth) {
    if (depth > kMaxArrayDimensions) return Error("too many dimensions");
    SkipSpace();
    if (!Consume('{')) return Error("expected '{'");
    std::vector<Value> elements;
    SkipSpace();
    if (Consume('}')) return Value::Array(std::move(elements));
    while (true) {
      SkipSpace();
      absl::StatusOr<Value> element = Peek() == '{' ? ParseArray(depth + 1) : ParseElement();
      if (!element.ok()) return element;
      elements.push_back(*std::move(element));
      SkipSpace();
      if (Consume(delimiter_)) continue;
      if (Consume('}')) return Value::Array(std::move(elements));
      return Error("expected a delimiter or '}'");
    }
  }

  absl::StatusOr<Value> ParseElement() {
    std::string raw;
    if (Consume('"')) {
      while (true) {
        if (pos_ >= text_.size()) return Error("unterminated quoted element");
        char c = text_[pos_++];
        if (c == '"') break;
        if (c == '\\') {
          if (pos_ >= text_.size()) return Error("unterminated quoted element");
          c = text_[pos_++];
        }
        raw.push_back(c);
      }
      return ScalarFromText(element_oid_, raw);
    }
    // A bare element ends at the delimiter or '}'; the server quotes any
    // element that contains those, quotes, backslashes or white space, so
    // only trailing white space (from hand-written input) needs trimming.
    while (pos_ < text_.size() && text_[pos_] != delimiter_ && text_[pos_] != '}') {
      char c = text_[pos_++];
      if (c == '"' || c == '{') return Error("unexpected character in an unquoted element");
      if (c == '\\') {
        if (pos_ >= text_.size()) return Error("dangling backslash");
        c = text_[pos_++];
      }
      raw.push_back(c);
    }
    absl::StripTrailingAsciiWhitespace(&raw);
    if (raw.empty()) return Error("empty unquoted element");
    // Only an unquoted NULL is a null; "NULL" in quotes is the string.
    if (absl::EqualsIgnoreCase(raw, "NULL")) return Value::Null();
    return ScalarFromText(element_oid_, raw);
  }

  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Consume(char c) {
    if (pos_ >= text_.size() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() && absl::ascii_isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
  }
  absl::Status Error(absl::string_view why) const {
    return absl::InternalError(absl::StrCat("cannot decode an array of ", TypeLabel(element_oid_),
                                            " from the server (", why, " at offset ", pos_, ")"));
  }

  const uint32_t element_oid_;
  const char delimiter_;
  const absl::string_view text_;
  size_t pos_ = 0;
};

std::string FormatDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  // The shortest text that reads back as exactly `v` (what float8out prints
  // with extra_float_digits > 0).
  char buf[32];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

void AppendHex(absl::string_view bytes, std::string* out) {
  static constexpr char kDigits[] = "0123456789abcdef";
  out->reserve(out->size() + 2 * bytes.size());
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out->push_back(kDigits[b >> 4]);
    out->push_back(kDigits[b & 0xf]);
  }
}

// The text of a non-null scalar, before any array quoting.
absl::StatusOr<std::string> ScalarText(const Value& value) {
  switch (value.kind) {
    case Value::Kind::kBool:
      return std::string(value.bool_value ? "true" : "false");
    case Value::Kind::kInt64:
      return absl::StrCat(value.int64_value);
    case Value::Kind::kDouble:
      return FormatDouble(value.double_value);
    case Value::Kind::kString:
    case Value::Kind::kNumeric:
    case Value::Kind::kJson:
      // Text parameters travel as C strings, and PostgreSQL's text types
      // cannot hold NUL anyway: refuse rather than let the value be cut short.
      if (value.text.find('\0') != std::string::npos) {
        return absl::InvalidArgumentError(
            "a string, numeric or json parameter contains a NUL (0x00) byte, which PostgreSQL "
            "text cannot hold; send binary data as bytes (bytea)");
      }
      return value.text;
    case Value::Kind::kBytes: {
      std::string out = "\\x";
      AppendHex(value.text, &out);
      return out;
    }
    case Value::Kind::kNull:
    case Value::Kind::kArray:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("a parameter has a kind the broker cannot send (",
                                                 static_cast<int>(value.kind), ")"));
}

// Appends an array literal. Every element is double-quoted (so commas,
// braces, spaces, the word NULL and empty strings need no special cases) with
// '"' and '\' backslash-escaped; array_in undoes that before the element type
// parses the text, so a bytes element "\x00" is written "\\x00".
absl::Status AppendArrayLiteral(const Value& array, std::string* out) {
  out->push_back('{');
  bool first = true;
  for (const Value& element : array.elements) {
    if (!first) out->push_back(',');
    first = false;
    if (element.kind == Value::Kind::kNull) {
      out->append("NULL");
      continue;
    }
    if (element.kind == Value::Kind::kArray) {
      if (absl::Status s = AppendArrayLiteral(element, out); !s.ok()) return s;
      continue;
    }
    absl::StatusOr<std::string> text = ScalarText(element);
    if (!text.ok()) return text.status();
    out->push_back('"');
    for (const char c : *text) {
      if (c == '"' || c == '\\') out->push_back('\\');
      out->push_back(c);
    }
    out->push_back('"');
  }
  out->push_back('}');
  return absl::OkStatus();
}

// SQL's spellings of built-in types that differ from their typname. Bare
// "char" is SQL's character(1), bpchar; the one-byte type typnamed char is
// spelled "char" with the quotes, which the server resolves.
struct TypeAlias {
  const char* spelling;
  const char* type_name;
};
constexpr TypeAlias kTypeAliases[] = {
    {"boolean", "bool"},
    {"smallint", "int2"},
    {"integer", "int4"},
    {"int", "int4"},
    {"bigint", "int8"},
    {"real", "float4"},
    {"float", "float8"},
    {"double precision", "float8"},
    {"decimal", "numeric"},
    {"dec", "numeric"},
    {"char", "bpchar"},
    {"character", "bpchar"},
    {"character varying", "varchar"},
    {"char varying", "varchar"},
    {"time without time zone", "time"},
    {"time with time zone", "timetz"},
    {"timestamp without time zone", "timestamp"},
    {"timestamp with time zone", "timestamptz"},
    {"bit varying", "varbit"},
};

// `name` lowercased, without type modifiers, with single spaces; empty if it
// holds anything a built-in name cannot ('"' quoting, '.' qualification, ...).
std::string NormalizedTypeName(absl::string_view name) {
  std::string out;
  out.reserve(name.size());
  int depth = 0;
  bool space = false;
  for (const char c : name) {
    if (c == '(') {
      ++depth;
    } else if (c == ')') {
      if (--depth < 0) return "";
    } else if (depth > 0) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c)) && c != ',' && c != ' ') return "";
    } else if (c == ' ' || c == '\t' || c == '\n') {
      space = !out.empty();
    } else if (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_') {
      if (space) out.push_back(' ');
      space = false;
      out.push_back(absl::ascii_tolower(static_cast<unsigned char>(c)));
    } else {
      return "";
    }
  }
  return depth == 0 ? out : "";
}

uint32_t BuiltinScalarOid(absl::string_view name, bool array) {
  for (const TypeAlias& alias : kTypeAliases) {
    if (name == alias.spelling) {
      name = alias.type_name;
      break;
    }
  }
  for (const BuiltinType& t : kBuiltinTypes) {
    if (name == t.name) return array ? t.array_oid : t.oid;
    if (t.array_oid != 0 && name == t.array_name) return t.array_oid;
  }
  return 0;
}

// The kind every non-NULL leaf of `array` has; kNull if none has one, kArray
// if they differ.
Value::Kind CommonLeafKind(const Value& array) {
  Value::Kind common = Value::Kind::kNull;
  for (const Value& element : array.elements) {
    const Value::Kind kind =
        element.kind == Value::Kind::kArray ? CommonLeafKind(element) : element.kind;
    if (kind == Value::Kind::kNull) continue;
    if (kind == Value::Kind::kArray || (common != Value::Kind::kNull && common != kind)) {
      return Value::Kind::kArray;
    }
    common = kind;
  }
  return common;
}

}  // namespace

uint32_t BuiltinTypeOid(absl::string_view name) {
  absl::string_view base = absl::StripAsciiWhitespace(name);
  bool array = false;
  // "[]" or "[n]" suffixes, each possibly after spaces: one array type
  // whatever the number of dimensions.
  while (absl::EndsWith(base, "]")) {
    const size_t open = base.rfind('[');
    if (open == absl::string_view::npos) return 0;
    for (const char c : base.substr(open + 1, base.size() - open - 2)) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return 0;
    }
    array = true;
    base = absl::StripTrailingAsciiWhitespace(base.substr(0, open));
  }
  const std::string normalized = NormalizedTypeName(base);
  if (normalized.empty()) return 0;
  const uint32_t oid = BuiltinScalarOid(normalized, array);
  // "_int4[]" is no type.
  if (array && oid != 0 && ArrayElementType(oid) != 0 && normalized[0] == '_') return 0;
  return oid;
}

uint32_t ImpliedTypeOid(const Value& value) {
  const bool array = value.kind == Value::Kind::kArray;
  switch (array ? CommonLeafKind(value) : value.kind) {
    case Value::Kind::kBool:
      return array ? type_oid::kBoolArray : type_oid::kBool;
    case Value::Kind::kInt64:
      return array ? type_oid::kInt8Array : type_oid::kInt8;
    case Value::Kind::kDouble:
      return array ? type_oid::kFloat8Array : type_oid::kFloat8;
    case Value::Kind::kBytes:
      return array ? type_oid::kByteaArray : type_oid::kBytea;
    case Value::Kind::kNumeric:
      return array ? type_oid::kNumericArray : type_oid::kNumeric;
    case Value::Kind::kJson:
      return array ? type_oid::kJsonbArray : type_oid::kJsonb;
    case Value::Kind::kNull:
    case Value::Kind::kString:
    case Value::Kind::kArray:
      return 0;
  }
  return 0;
}

absl::string_view TypeName(uint32_t type_oid) {
  for (const BuiltinType& t : kBuiltinTypes) {
    if (t.oid == type_oid) return t.name;
  }
  for (const BuiltinType& t : kBuiltinTypes) {
    if (t.array_oid == type_oid && type_oid != 0) return t.array_name;
  }
  return {};
}

uint32_t ArrayElementType(uint32_t type_oid) {
  if (type_oid == 0) return 0;
  for (const BuiltinType& t : kBuiltinTypes) {
    if (t.array_oid == type_oid) return t.oid;
  }
  return 0;
}

absl::StatusOr<Value> ValueFromText(uint32_t type_oid, absl::string_view text) {
  const uint32_t element_oid = ArrayElementType(type_oid);
  if (element_oid != 0) return ArrayFromText(element_oid, text);
  return ScalarFromText(type_oid, text);
}

absl::StatusOr<Value> ScalarFromText(uint32_t type_oid, absl::string_view text) {
  switch (type_oid) {
    case type_oid::kBool:
      return DecodeBool(text);
    case type_oid::kInt2:
    case type_oid::kInt4:
    case type_oid::kInt8:
    case type_oid::kOid:
      return DecodeInt(type_oid, text);
    case type_oid::kFloat4:
    case type_oid::kFloat8:
      return DecodeFloat(type_oid, text);
    case type_oid::kNumeric:
      return Value::Numeric(std::string(text));
    case type_oid::kBytea:
      return DecodeBytea(text);
    case type_oid::kJson:
    case type_oid::kJsonb:
      return Value::Json(std::string(text));
    default:
      // text, varchar, bpchar, name, "char", and every type without a kind
      // of its own (uuid, date/time types, interval, inet, ranges, enums, ...):
      // the server's text is the value.
      return Value::String(std::string(text));
  }
}

absl::StatusOr<Value> ArrayFromText(uint32_t element_oid, absl::string_view text) {
  return ArrayTextParser(element_oid, text).Parse();
}

absl::StatusOr<std::optional<std::string>> ParameterText(const Value& value) {
  if (value.kind == Value::Kind::kNull) return std::optional<std::string>();
  if (value.kind == Value::Kind::kArray) {
    std::string out;
    if (absl::Status s = AppendArrayLiteral(value, &out); !s.ok()) return s;
    return std::optional<std::string>(std::move(out));
  }
  absl::StatusOr<std::string> text = ScalarText(value);
  if (!text.ok()) return text.status();
  return std::optional<std::string>(*std::move(text));
}

size_t ResultBytes(const Value& value) {
  size_t payload = 0;
  switch (value.kind) {
    case Value::Kind::kNull:
      break;
    case Value::Kind::kBool:
      payload = 1;
      break;
    case Value::Kind::kInt64:
    case Value::Kind::kDouble:
      payload = 8;
      break;
    case Value::Kind::kString:
    case Value::Kind::kBytes:
    case Value::Kind::kNumeric:
    case Value::Kind::kJson:
      payload = value.text.size();
      break;
    case Value::Kind::kArray:
      for (const Value& element : value.elements) payload += ResultBytes(element);
      break;
  }
  return kResultCellOverheadBytes + payload;
}

size_t ResultHeaderBytes(const QueryResult& result) {
  size_t bytes = kResultOverheadBytes + result.command_tag.size();
  for (const Column& column : result.columns) {
    bytes += kResultColumnOverheadBytes + column.name.size() + column.type_name.size();
  }
  return bytes;
}

}  // namespace sessionbroker::storage
