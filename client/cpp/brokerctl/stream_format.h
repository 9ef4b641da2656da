// StreamFormatter: a query result printed as it streams (brokerctl query
// over StreamExecute), in the same formats as FormatResult (format.h) and,
// for CSV and JSON, byte for byte the same text. CSV and JSON are printed
// row by row. The table is aligned per batch of `table_batch_rows` rows, as
// psql does with FETCH_COUNT: the header comes with the first batch, the
// columns' widths are those of each batch, "(N rows)" counts them all; a
// result within one batch prints exactly as FormatTable.
//
// Feed it Begin (the columns), Add (each row), then End or Abort; print
// what each returns. Holds at most one batch of rows. Not thread-safe (one
// query, one thread).
#ifndef SESSIONBROKER_CLIENT_CPP_BROKERCTL_STREAM_FORMAT_H_
#define SESSIONBROKER_CLIENT_CPP_BROKERCTL_STREAM_FORMAT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "client/cpp/brokerctl/format.h"
#include "sessionbroker/v1/broker.pb.h"

namespace brokerctl {

class StreamFormatter final {
 public:
  StreamFormatter(OutputFormat format, size_t table_batch_rows);

  // The text to print once the columns are known (may be empty).
  std::string Begin(const google::protobuf::RepeatedPtrField<sessionbroker::v1::Column>& columns);
  // The text to print for one more row (the table: "" until a batch is full).
  std::string Add(const sessionbroker::v1::Row& row);
  // The text after the last row: the table's rest and "(N rows)" (or the
  // command tag of a statement without columns), JSON's closing.
  std::string End(const std::string& command_tag, int64_t rows_affected);
  // After an error mid-result: the table's rows held for alignment, without
  // a count (the result is incomplete); nothing for CSV and JSON.
  std::string Abort();

 private:
  // The held table rows, aligned; with the header only for the first batch.
  std::string FlushTable();

  const OutputFormat format_;
  const size_t batch_rows_;
  sessionbroker::v1::ExecuteResponse batch_;  // the table's columns and held rows
  bool header_printed_ = false;
  int64_t rows_ = 0;
};

}  // namespace brokerctl

#endif  // SESSIONBROKER_CLIENT_CPP_BROKERCTL_STREAM_FORMAT_H_
