// The result of one statement: its columns, its rows with typed access
// (row.Get<int64_t>("id"), row.Get<std::optional<std::string>>(2)), the
// command tag and the count of rows affected.
//
// A Result owns the broker's response; Rows and Cells share or point into it
// (a Row stays valid after its Result is gone; a Cell only as long as a Row
// or Result holding it lives). Immutable: thread-safe for concurrent reads.
#ifndef SESSIONBROKER_CLIENT_RESULT_H_
#define SESSIONBROKER_CLIENT_RESULT_H_

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sessionbroker/value.h"

namespace sessionbroker {

namespace v1 {
class ExecuteResponse;
class Row;
}  // namespace v1

// Metadata of one result column.
struct Column {
  std::string name;
  uint32_t type_oid = 0;  // pg_type.oid, e.g. 23 for int4
  std::string type_name;  // pg_type.typname, e.g. "int4", "_text" for text[]
};

namespace internal {
struct ResultData;
}  // namespace internal

// One row of a Result (or of a RowStream, row_stream.h).
class Row {
 public:
  // Number of cells (= columns).
  size_t size() const;

  // The cell at `index` (OUT_OF_RANGE past the end) or of the column named
  // `column` (the first of that name; INVALID_ARGUMENT naming the columns
  // there are if none).
  absl::StatusOr<Cell> cell(size_t index) const;
  absl::StatusOr<Cell> cell(absl::string_view column) const;

  // The cell read as T (CellReader<T> in value.h lists the types): NULL into
  // a non-optional T is FAILED_PRECONDITION, a type that does not fit is
  // INVALID_ARGUMENT, an int32_t/int16_t out of range OUT_OF_RANGE.
  template <typename T>
  absl::StatusOr<T> Get(size_t index) const {
    return Read<T>(cell(index));
  }
  template <typename T>
  absl::StatusOr<T> Get(absl::string_view column) const {
    return Read<T>(cell(column));
  }
  // The cell read as T, or `fallback` if it is NULL or cannot be read as T.
  template <typename T>
  T GetOr(size_t index, T fallback) const {
    absl::StatusOr<T> v = Get<T>(index);
    return v.ok() ? *std::move(v) : std::move(fallback);
  }
  template <typename T>
  T GetOr(absl::string_view column, T fallback) const {
    absl::StatusOr<T> v = Get<T>(column);
    return v.ok() ? *std::move(v) : std::move(fallback);
  }

  // The broker's row as it came.
  const v1::Row& proto() const;

 private:
  friend class Result;
  friend class RowStream;
  Row(std::shared_ptr<const internal::ResultData> data, size_t row)
      : data_(std::move(data)), row_(row) {}
  template <typename T>
  static absl::StatusOr<T> Read(absl::StatusOr<Cell> cell) {
    if (!cell.ok()) return cell.status();
    return CellReader<T>::Read(*cell);
  }

  std::shared_ptr<const internal::ResultData> data_;
  size_t row_;
};

// The result of one statement.
class Result {
 public:
  class const_iterator {
   public:
    using iterator_category = std::forward_iterator_tag;
    using value_type = Row;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = Row;
    Row operator*() const { return (*result_)[i_]; }
    const_iterator& operator++() {
      ++i_;
      return *this;
    }
    const_iterator operator++(int) {
      const_iterator old = *this;
      ++i_;
      return old;
    }
    friend bool operator==(const const_iterator& a, const const_iterator& b) {
      return a.i_ == b.i_ && a.result_ == b.result_;
    }
    friend bool operator!=(const const_iterator& a, const const_iterator& b) { return !(a == b); }

   private:
    friend class Result;
    const_iterator(const Result* result, size_t i) : result_(result), i_(i) {}
    const Result* result_;
    size_t i_;
  };

  // An empty result (no columns, no rows).
  Result();
  // Takes the broker's response.
  explicit Result(v1::ExecuteResponse response);

  // Empty for statements that return no rows (INSERT without RETURNING, DDL).
  const std::vector<Column>& columns() const;
  // The index of the first column named `name`.
  std::optional<size_t> column_index(absl::string_view name) const;
  // Number of rows.
  size_t size() const;
  bool empty() const { return size() == 0; }
  // The row at `i` (< size()).
  Row operator[](size_t i) const { return Row(data_, i); }
  const_iterator begin() const { return const_iterator(this, 0); }
  const_iterator end() const { return const_iterator(this, size()); }

  // PostgreSQL's command tag, e.g. "INSERT 0 1", "SELECT 3".
  const std::string& command_tag() const;
  // Rows inserted, updated, deleted, selected or copied (the tag's count).
  int64_t rows_affected() const;

  // The broker's response as it came.
  const v1::ExecuteResponse& proto() const;

 private:
  std::shared_ptr<const internal::ResultData> data_;
};

}  // namespace sessionbroker

#endif  // SESSIONBROKER_CLIENT_RESULT_H_
