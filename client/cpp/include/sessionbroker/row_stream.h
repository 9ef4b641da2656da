// RowStream: the result of one statement read as it arrives (StreamExecute,
// docs/streaming.md), from Client::Stream or Session::Stream.
//
//   auto rows = client->Stream("SELECT id, body FROM events", {});  // StatusOr
//   while (std::optional<Row> row = (*rows)->Next()) { ... }
//   if (!(*rows)->status().ok()) ...;  // the result is complete only if OK
//
// Memory stays bounded whatever the result's size: Next() reads the next
// message of the gRPC stream only when the rows already read are used up,
// so at most one message of rows (the broker sends at most
// BROKER_STREAM_WINDOW_BYTES / 4 bytes per message) is held here, plus what
// gRPC's flow-control window buffers. A caller that reads slowly slows the
// broker, which then stops reading from PostgreSQL. A Row returned by Next()
// keeps the message it came from alive (as a Row keeps its Result).
//
// The columns are known when Stream() returns; command_tag() and
// rows_affected() once Next() has returned nullopt with status() OK. An
// error (a failed statement, mid-result too, a deadline, a lost connection)
// is status(): an absl::Status read with SqlStateOf/SqlErrorOf (status.h) as
// Execute's are; the rows read before it are not a complete result.
//
// Destroying a RowStream before its end cancels the call, which cancels the
// statement in PostgreSQL and frees the broker's connection. One thread at a
// time, except Cancel(), which any thread may call.
#ifndef SESSIONBROKER_CLIENT_ROW_STREAM_H_
#define SESSIONBROKER_CLIENT_ROW_STREAM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "sessionbroker/result.h"

namespace sessionbroker {

namespace internal {
class ClientCore;
struct RowStreamState;
}  // namespace internal

class RowStream {
 public:
  // Cancels the call unless the stream has ended.
  ~RowStream();
  RowStream(const RowStream&) = delete;
  RowStream& operator=(const RowStream&) = delete;

  // The result's columns (empty for a statement that returns no rows).
  const std::vector<Column>& columns() const;
  // The index of the first column named `name`.
  std::optional<size_t> column_index(absl::string_view name) const;

  // The next row, reading from the stream when needed (blocks until the
  // broker sends it); nullopt at the end of the result or on an error, told
  // apart by status().
  std::optional<Row> Next();

  // OK while the stream is open or after a complete result; otherwise why it
  // ended (CANCELLED after Cancel() or destruction mid-stream).
  const absl::Status& status() const;
  // Next() has returned nullopt.
  bool done() const;
  // Rows returned by Next() so far.
  int64_t rows_read() const;
  // After a complete result: PostgreSQL's command tag ("SELECT 3",
  // "INSERT 0 2") and its row count ("" and 0 before).
  const std::string& command_tag() const;
  int64_t rows_affected() const;

  // Cancels the call (and the statement in PostgreSQL); Next() then returns
  // nullopt with status() CANCELLED. Thread-safe, idempotent.
  void Cancel();

 private:
  friend class internal::ClientCore;
  explicit RowStream(std::unique_ptr<internal::RowStreamState> state);
  // Reads one message; false when the stream has ended (status_ set).
  bool ReadMessage();
  void Finish();

  std::unique_ptr<internal::RowStreamState> state_;
};

}  // namespace sessionbroker

#endif  // SESSIONBROKER_CLIENT_ROW_STREAM_H_
