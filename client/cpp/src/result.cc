#include "sessionbroker/result.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cpp/src/internal.h"
#include "sessionbroker/v1/broker.pb.h"

namespace sessionbroker {
namespace {

std::shared_ptr<const internal::ResultData> Build(v1::ExecuteResponse response) {
  auto data = std::make_shared<internal::ResultData>();
  data->response = std::move(response);
  data->columns.reserve(data->response.columns_size());
  for (const v1::Column& c : data->response.columns()) {
    data->columns.push_back(Column{c.name(), c.type_oid(), c.type_name()});
  }
  return data;
}

}  // namespace

Result::Result() : Result(v1::ExecuteResponse()) {}
Result::Result(v1::ExecuteResponse response) : data_(Build(std::move(response))) {}

const std::vector<Column>& Result::columns() const { return data_->columns; }

std::optional<size_t> Result::column_index(absl::string_view name) const {
  for (size_t i = 0; i < data_->columns.size(); ++i) {
    if (data_->columns[i].name == name) return i;
  }
  return std::nullopt;
}

size_t Result::size() const { return static_cast<size_t>(data_->response.rows_size()); }
const std::string& Result::command_tag() const { return data_->response.command_tag(); }
int64_t Result::rows_affected() const { return data_->response.rows_affected(); }
const v1::ExecuteResponse& Result::proto() const { return data_->response; }

size_t Row::size() const { return data_->columns.size(); }
const v1::Row& Row::proto() const { return data_->response.rows(static_cast<int>(row_)); }

absl::StatusOr<Cell> Row::cell(size_t index) const {
  const v1::Row& row = data_->response.rows(static_cast<int>(row_));
  if (index >= static_cast<size_t>(row.values_size()) || index >= data_->columns.size()) {
    return absl::OutOfRangeError(absl::StrCat("column index ", index,
                                              " is past the last column (the row has ",
                                              data_->columns.size(), ")"));
  }
  return Cell(&row.values(static_cast<int>(index)), &data_->columns[index]);
}

absl::StatusOr<Cell> Row::cell(absl::string_view column) const {
  for (size_t i = 0; i < data_->columns.size(); ++i) {
    if (data_->columns[i].name == column) return cell(i);
  }
  std::vector<std::string> names;
  for (const Column& c : data_->columns) names.push_back(absl::StrCat("\"", c.name, "\""));
  return absl::InvalidArgumentError(
      absl::StrCat("no column \"", column, "\" in the result (it has ",
                   names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

}  // namespace sessionbroker
