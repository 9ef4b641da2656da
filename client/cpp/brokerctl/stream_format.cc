#include "client/cpp/brokerctl/stream_format.h"

#include <algorithm>
#include <string>

namespace brokerctl {

namespace v1 = sessionbroker::v1;

StreamFormatter::StreamFormatter(OutputFormat format, size_t table_batch_rows)
    : format_(format), batch_rows_(std::max<size_t>(1, table_batch_rows)) {}

std::string StreamFormatter::Begin(const google::protobuf::RepeatedPtrField<v1::Column>& columns) {
  *batch_.mutable_columns() = columns;
  switch (format_) {
    case OutputFormat::kCsv:
      return CsvHeader(columns);
    case OutputFormat::kJson:
      return JsonOpening(columns);
    case OutputFormat::kTable:
      break;
  }
  return "";
}

std::string StreamFormatter::Add(const v1::Row& row) {
  ++rows_;
  switch (format_) {
    case OutputFormat::kCsv:
      return CsvRow(row, batch_.columns_size());
    case OutputFormat::kJson:
      return (rows_ > 1 ? "," : "") + JsonRow(row);
    case OutputFormat::kTable:
      break;
  }
  *batch_.add_rows() = row;
  if (static_cast<size_t>(batch_.rows_size()) < batch_rows_) return "";
  return FlushTable();
}

std::string StreamFormatter::FlushTable() {
  // FormatTable's text without its count line, and after the first batch
  // without the header and rule lines.
  std::string text = FormatTable(batch_);
  batch_.clear_rows();
  text.erase(text.rfind('\n', text.size() - 2) + 1);
  if (header_printed_) {
    const size_t rule_end = text.find('\n', text.find('\n') + 1);
    text.erase(0, rule_end + 1);
  }
  header_printed_ = true;
  return text;
}

std::string StreamFormatter::End(const std::string& command_tag, int64_t rows_affected) {
  switch (format_) {
    case OutputFormat::kCsv:
      return "";
    case OutputFormat::kJson:
      return JsonClosing(command_tag, rows_affected);
    case OutputFormat::kTable:
      break;
  }
  if (batch_.columns_size() == 0) return command_tag + "\n";
  std::string out;
  if (batch_.rows_size() > 0 || !header_printed_) out = FlushTable();
  out += "(" + std::to_string(rows_) + (rows_ == 1 ? " row)\n" : " rows)\n");
  return out;
}

std::string StreamFormatter::Abort() {
  if (format_ != OutputFormat::kTable || batch_.columns_size() == 0) return "";
  if (batch_.rows_size() == 0 && header_printed_) return "";
  return FlushTable();
}

}  // namespace brokerctl
