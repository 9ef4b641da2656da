#include "sessionbroker/row_stream.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "client/cpp/src/internal.h"

namespace sessionbroker {

RowStream::RowStream(std::unique_ptr<internal::RowStreamState> state) : state_(std::move(state)) {}

RowStream::~RowStream() {
  if (state_->finished) return;
  state_->context.TryCancel();
  Finish();
}

const std::vector<Column>& RowStream::columns() const { return state_->columns; }

std::optional<size_t> RowStream::column_index(absl::string_view name) const {
  for (size_t i = 0; i < state_->columns.size(); ++i) {
    if (state_->columns[i].name == name) return i;
  }
  return std::nullopt;
}

std::optional<Row> RowStream::Next() {
  internal::RowStreamState& s = *state_;
  while (s.chunk == nullptr || s.next >= s.chunk->response.rows_size()) {
    // The rows read so far are used up: only now is the next message read,
    // which is what lets a slow caller hold the broker back.
    s.chunk = nullptr;
    if (s.finished || !ReadMessage()) return std::nullopt;
  }
  ++s.rows_read;
  return Row(s.chunk, static_cast<size_t>(s.next++));
}

bool RowStream::ReadMessage() {
  internal::RowStreamState& s = *state_;
  v1::StreamExecuteResponse message;
  if (!s.reader->Read(&message)) {
    Finish();
    return false;
  }
  switch (message.kind_case()) {
    case v1::StreamExecuteResponse::kColumns:
      s.columns.clear();
      for (const v1::Column& c : message.columns().columns()) {
        s.columns.push_back(Column{c.name(), c.type_oid(), c.type_name()});
      }
      break;
    case v1::StreamExecuteResponse::kRows: {
      auto chunk = std::make_shared<internal::ResultData>();
      chunk->response.mutable_rows()->Swap(message.mutable_rows()->mutable_rows());
      chunk->columns = s.columns;
      s.chunk = std::move(chunk);
      s.next = 0;
      break;
    }
    case v1::StreamExecuteResponse::kEnd:
      s.ended = true;
      s.command_tag = message.end().command_tag();
      s.rows_affected = message.end().rows_affected();
      break;
    case v1::StreamExecuteResponse::KIND_NOT_SET:
      break;
  }
  return true;
}

void RowStream::Finish() {
  internal::RowStreamState& s = *state_;
  if (s.finished) return;
  // Finish may only follow the last message: after a cancel, what is still
  // in flight is read and dropped.
  v1::StreamExecuteResponse rest;
  while (s.reader->Read(&rest)) {
  }
  s.status = internal::FromGrpc(s.reader->Finish(), s.context);
  s.finished = true;
  s.chunk = nullptr;
  if (s.status.ok() && !s.ended) {
    s.status = absl::DataLossError(
        "the broker ended the stream without its end message: the rows read are not the whole "
        "result");
  }
  if (!s.status.ok()) {
    s.command_tag.clear();
    s.rows_affected = 0;
  }
}

const absl::Status& RowStream::status() const { return state_->status; }
bool RowStream::done() const { return state_->finished; }
int64_t RowStream::rows_read() const { return state_->rows_read; }
const std::string& RowStream::command_tag() const { return state_->command_tag; }
int64_t RowStream::rows_affected() const { return state_->rows_affected; }
void RowStream::Cancel() { state_->context.TryCancel(); }

}  // namespace sessionbroker
