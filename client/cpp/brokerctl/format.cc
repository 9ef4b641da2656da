#include "client/cpp/brokerctl/format.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

namespace brokerctl {
namespace {

using sessionbroker::v1::ArrayValue;
using sessionbroker::v1::Column;
using sessionbroker::v1::ExecuteResponse;
using sessionbroker::v1::Value;

// Decodes one UTF-8 code point at `i`; advances `i`. -1 for an invalid byte
// (one byte consumed).
int32_t NextCodePoint(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  int len = b0 < 0x80 ? 1 : (b0 >> 5) == 0x6 ? 2 : (b0 >> 4) == 0xE ? 3 : (b0 >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) {
    ++i;
    return -1;
  }
  int32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
  for (int k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b >> 6) != 0x2) {
      ++i;
      return -1;
    }
    cp = (cp << 6) | (b & 0x3F);
  }
  i += len;
  return cp;
}

int CodePointWidth(int32_t cp) {
  if (cp < 0) return 1;
  if ((cp >= 0x0300 && cp <= 0x036F) || (cp >= 0x1AB0 && cp <= 0x1AFF) ||
      (cp >= 0x20D0 && cp <= 0x20FF) || (cp >= 0xFE20 && cp <= 0xFE2F) || cp == 0x200B ||
      cp == 0x200D || (cp >= 0xFE00 && cp <= 0xFE0F)) {
    return 0;
  }
  if ((cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0x303E) ||
      (cp >= 0x3041 && cp <= 0x33FF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
      (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xA000 && cp <= 0xA4CF) ||
      (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) ||
      (cp >= 0xFE30 && cp <= 0xFE4F) || (cp >= 0xFF00 && cp <= 0xFF60) ||
      (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
      (cp >= 0x1F900 && cp <= 0x1F9FF) || (cp >= 0x20000 && cp <= 0x3FFFD)) {
    return 2;
  }
  return 1;
}

std::string DoubleText(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d);
  return std::string(buf, end);
}

std::string HexBytes(const std::string& bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\\x";
  for (unsigned char c : bytes) {
    out += kHex[c >> 4];
    out += kHex[c & 0xF];
  }
  return out;
}

// An array element as PostgreSQL's array output quotes it: double quotes
// around empty strings, "NULL", and text holding delimiters, quotes,
// backslashes or white space.
void AppendArrayElement(const Value& v, std::string& out) {
  if (v.kind_case() == Value::kArrayValue) {
    out += '{';
    bool first = true;
    for (const Value& e : v.array_value().values()) {
      if (!first) out += ',';
      first = false;
      AppendArrayElement(e, out);
    }
    out += '}';
    return;
  }
  std::optional<std::string> text = ValueText(v);
  if (!text) {
    out += "NULL";
    return;
  }
  bool quote = text->empty() || *text == "NULL" ||
               text->find_first_of("{},\"\\ \t\n\r") != std::string::npos;
  if (!quote) {
    out += *text;
    return;
  }
  out += '"';
  for (char c : *text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

// Control characters escaped so that a cell stays on one line.
std::string OneLine(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

bool IsNumericType(const std::string& type_name) {
  static const char* const kNumeric[] = {"int2",    "int4", "int8",  "float4", "float8",
                                         "numeric", "oid",  "money", "xid"};
  for (const char* t : kNumeric) {
    if (type_name == t) return true;
  }
  return false;
}

std::string Pad(const std::string& s, int width, char align) {
  const int gap = width - DisplayWidth(s);
  if (gap <= 0) return s;
  if (align == 'r') return std::string(gap, ' ') + s;
  if (align == 'c') return std::string(gap / 2, ' ') + s + std::string(gap - gap / 2, ' ');
  return s + std::string(gap, ' ');
}

std::string CsvField(const std::string& s) {
  if (!s.empty() && s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace

int DisplayWidth(std::string_view utf8) {
  int width = 0;
  for (size_t i = 0; i < utf8.size();) width += CodePointWidth(NextCodePoint(utf8, i));
  return width;
}

std::string TruncateToWidth(std::string_view utf8, int width) {
  int used = 0;
  size_t i = 0;
  while (i < utf8.size()) {
    size_t next = i;
    const int w = CodePointWidth(NextCodePoint(utf8, next));
    if (used + w > width) break;
    used += w;
    i = next;
  }
  return std::string(utf8.substr(0, i));
}

std::string WrapText(std::string_view text, int width, const std::string& indent) {
  std::string out;
  std::string line;
  int line_width = 0;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && text[i] == ' ') ++i;
    if (i >= text.size()) break;
    size_t end = text.find(' ', i);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view word = text.substr(i, end - i);
    const int w = DisplayWidth(word);
    if (line_width > 0 && DisplayWidth(indent) + line_width + 1 + w > width) {
      out += indent + line + "\n";
      line.clear();
      line_width = 0;
    }
    if (line_width > 0) {
      line += ' ';
      ++line_width;
    }
    line += word;
    line_width += w;
    i = end;
  }
  if (line_width > 0) out += indent + line + "\n";
  return out;
}

std::optional<std::string> ValueText(const Value& value) {
  switch (value.kind_case()) {
    case Value::kBoolValue:
      return std::string(value.bool_value() ? "t" : "f");
    case Value::kInt64Value:
      return std::to_string(value.int64_value());
    case Value::kDoubleValue:
      return DoubleText(value.double_value());
    case Value::kStringValue:
      return value.string_value();
    case Value::kBytesValue:
      return HexBytes(value.bytes_value());
    case Value::kNumericValue:
      return value.numeric_value();
    case Value::kJsonValue:
      return value.json_value();
    case Value::kArrayValue: {
      std::string out;
      AppendArrayElement(value, out);
      return out;
    }
    case Value::kNullValue:
    case Value::KIND_NOT_SET:
      break;
  }
  return std::nullopt;
}

std::string JsonEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
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
        if (u < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", u);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string ValueJson(const Value& value) {
  switch (value.kind_case()) {
    case Value::kBoolValue:
      return value.bool_value() ? "true" : "false";
    case Value::kInt64Value:
      return std::to_string(value.int64_value());
    case Value::kDoubleValue: {
      const double d = value.double_value();
      if (!std::isfinite(d)) return "\"" + DoubleText(d) + "\"";
      return DoubleText(d);
    }
    case Value::kJsonValue:
      return value.json_value().empty() ? "null" : value.json_value();
    case Value::kArrayValue: {
      std::string out = "[";
      bool first = true;
      for (const Value& e : value.array_value().values()) {
        if (!first) out += ',';
        first = false;
        out += ValueJson(e);
      }
      return out + "]";
    }
    case Value::kStringValue:
    case Value::kBytesValue:
    case Value::kNumericValue:
      return "\"" + JsonEscape(*ValueText(value)) + "\"";
    case Value::kNullValue:
    case Value::KIND_NOT_SET:
      break;
  }
  return "null";
}

std::string FormatTable(const ExecuteResponse& response) {
  if (response.columns_size() == 0) return response.command_tag() + "\n";
  const int ncols = response.columns_size();
  std::vector<std::vector<std::string>> cells;
  cells.reserve(response.rows_size());
  std::vector<int> widths(ncols);
  std::vector<char> align(ncols);
  for (int c = 0; c < ncols; ++c) {
    widths[c] = DisplayWidth(OneLine(response.columns(c).name()));
    align[c] = IsNumericType(response.columns(c).type_name()) ? 'r' : 'l';
  }
  for (const auto& row : response.rows()) {
    std::vector<std::string>& line = cells.emplace_back(ncols);
    for (int c = 0; c < ncols && c < row.values_size(); ++c) {
      line[c] = OneLine(ValueText(row.values(c)).value_or(""));
      widths[c] = std::max(widths[c], DisplayWidth(line[c]));
    }
  }
  auto emit = [&](const std::vector<std::string>& line, bool header, std::string& out) {
    std::string text;
    for (int c = 0; c < ncols; ++c) {
      if (c > 0) text += "|";
      text += ' ';
      text += Pad(line[c], widths[c], header ? 'c' : align[c]);
      text += ' ';
    }
    // psql leaves no trailing blanks.
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text;
    out += '\n';
  };
  std::string out;
  std::vector<std::string> header(ncols);
  for (int c = 0; c < ncols; ++c) header[c] = OneLine(response.columns(c).name());
  emit(header, true, out);
  for (int c = 0; c < ncols; ++c) {
    if (c > 0) out += '+';
    out += std::string(widths[c] + 2, '-');
  }
  out += '\n';
  for (const auto& line : cells) emit(line, false, out);
  const int n = response.rows_size();
  out += "(" + std::to_string(n) + (n == 1 ? " row)\n" : " rows)\n");
  return out;
}

std::string CsvHeader(const google::protobuf::RepeatedPtrField<Column>& columns) {
  if (columns.empty()) return "";
  std::string out;
  for (int c = 0; c < columns.size(); ++c) {
    if (c > 0) out += ',';
    out += CsvField(columns[c].name());
  }
  out += '\n';
  return out;
}

std::string CsvRow(const sessionbroker::v1::Row& row, int ncols) {
  std::string out;
  for (int c = 0; c < ncols; ++c) {
    if (c > 0) out += ',';
    std::optional<std::string> text;
    if (c < row.values_size()) text = ValueText(row.values(c));
    if (text) out += CsvField(*text);
  }
  out += '\n';
  return out;
}

std::string FormatCsv(const ExecuteResponse& response) {
  if (response.columns_size() == 0) return "";
  std::string out = CsvHeader(response.columns());
  for (const auto& row : response.rows()) out += CsvRow(row, response.columns_size());
  return out;
}

std::string JsonOpening(const google::protobuf::RepeatedPtrField<Column>& columns) {
  std::string out = "{\"columns\":[";
  for (int c = 0; c < columns.size(); ++c) {
    const Column& col = columns[c];
    if (c > 0) out += ',';
    out += "{\"name\":\"" + JsonEscape(col.name()) + "\",\"type\":\"" +
           JsonEscape(col.type_name()) + "\"}";
  }
  out += "],\"rows\":[";
  return out;
}

std::string JsonRow(const sessionbroker::v1::Row& row) {
  std::string out = "[";
  for (int c = 0; c < row.values_size(); ++c) {
    if (c > 0) out += ',';
    out += ValueJson(row.values(c));
  }
  out += ']';
  return out;
}

std::string JsonClosing(const std::string& command_tag, int64_t rows_affected) {
  return "],\"command\":\"" + JsonEscape(command_tag) +
         "\",\"rows_affected\":" + std::to_string(rows_affected) + "}\n";
}

std::string FormatJson(const ExecuteResponse& response) {
  std::string out = JsonOpening(response.columns());
  bool first_row = true;
  for (const auto& row : response.rows()) {
    if (!first_row) out += ',';
    first_row = false;
    out += JsonRow(row);
  }
  out += JsonClosing(response.command_tag(), response.rows_affected());
  return out;
}

std::string FormatResult(const ExecuteResponse& response, OutputFormat format) {
  switch (format) {
    case OutputFormat::kCsv:
      return FormatCsv(response);
    case OutputFormat::kJson:
      return FormatJson(response);
    case OutputFormat::kTable:
      break;
  }
  return FormatTable(response);
}

std::string FormatError(const ErrorReport& r) {
  std::string out;
  if (r.sqlstate.empty() && r.primary.empty()) {
    out = "error: " + r.grpc_code + ": " + r.message + "\n";
    if (!r.reason.empty()) out += "reason:  " + r.reason + "\n";
    return out;
  }
  out = (r.severity.empty() ? std::string("ERROR") : r.severity) + ":  " +
        (r.primary.empty() ? r.message : r.primary) + "\n";
  if (!r.detail.empty()) out += "DETAIL:  " + r.detail + "\n";
  if (!r.hint.empty()) out += "HINT:  " + r.hint + "\n";
  if (r.position > 0) out += "POSITION:  " + std::to_string(r.position) + "\n";
  if (!r.sqlstate.empty()) out += "SQLSTATE:  " + r.sqlstate + "\n";
  out += "gRPC status:  " + r.grpc_code;
  if (!r.reason.empty()) out += " (reason " + r.reason + ")";
  out += "\n";
  return out;
}

}  // namespace brokerctl
