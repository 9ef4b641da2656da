// Specification of pq_codec: parameters in libpq's form (types, values,
// lengths, formats), the prepared-statement key, and a PGresult made here
// with libpq's own result-building functions (no server) decoded into a
// QueryResult.
#include "server/storage/pq_codec.h"

#include <libpq-fe.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::storage {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(EncodeParamsTest, EachParameterGetsItsImpliedTypeAndItsText) {
  absl::StatusOr<PqParams> p =
      EncodeParams({Value::Int64(41), Value::String("x"), Value::Null(), Value::Bool(true),
                    Value::Bytes(std::string("\x00\xff", 2)), Value::Array({Value::Double(0.5)})});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->count(), 6);
  EXPECT_THAT(p->types, ElementsAre(20u, 0u, 0u, 16u, 17u, 1022u));
  EXPECT_STREQ(p->values[0], "41");
  EXPECT_STREQ(p->values[1], "x");
  EXPECT_EQ(p->values[2], nullptr) << "SQL NULL";
  EXPECT_STREQ(p->values[3], "true");
  EXPECT_STREQ(p->values[4], "\\x00ff");
  EXPECT_STREQ(p->values[5], "{\"0.5\"}");
  EXPECT_THAT(p->lengths, ElementsAre(2, 1, 0, 4, 6, 7));
  EXPECT_THAT(p->formats, ElementsAre(0, 0, 0, 0, 0, 0)) << "all text";
}

TEST(EncodeParamsTest, ThePointersStayValidWhenTheParametersMove) {
  absl::StatusOr<PqParams> p = EncodeParams({Value::String("a short one"), Value::Int64(7)});
  ASSERT_TRUE(p.ok());
  PqParams moved = *std::move(p);
  EXPECT_STREQ(moved.values[0], "a short one");
  EXPECT_STREQ(moved.values[1], "7");
}

TEST(EncodeParamsTest, AValueTextCannotCarryIsRefusedNamingTheParameter) {
  absl::Status s = EncodeParams({Value::Int64(1), Value::String(std::string("a\0b", 3))}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), ::testing::StartsWith("parameter $2: "));
  EXPECT_TRUE(EncodeParams({}).ok());
}

TEST(PreparedStatementKeyTest, TheSameSqlWithOtherTypesHasAnotherKey) {
  const std::string sql = "SELECT $1";
  EXPECT_EQ(PreparedStatementKey(sql, {}), sql);
  EXPECT_EQ(PreparedStatementKey(sql, {0, 0}), sql) << "untyped: the SQL alone";
  EXPECT_NE(PreparedStatementKey(sql, {20}), PreparedStatementKey(sql, {701}));
  EXPECT_NE(PreparedStatementKey(sql, {20}), sql);
  EXPECT_NE(PreparedStatementKey(sql, {20, 0}), PreparedStatementKey(sql, {0, 20}));
  EXPECT_EQ(PreparedStatementKey(sql, {20, 25}), PreparedStatementKey(sql, {20, 25}));
}

// A PGresult built with libpq's own functions: what a server would return.
class ResultBuilder {
 public:
  explicit ResultBuilder(std::vector<std::pair<const char*, Oid>> columns)
      : result_(PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK)) {
    std::vector<PGresAttDesc> attrs(columns.size());
    for (size_t c = 0; c < columns.size(); ++c) {
      std::memset(&attrs[c], 0, sizeof(PGresAttDesc));
      attrs[c].name = const_cast<char*>(columns[c].first);
      attrs[c].typid = columns[c].second;
      attrs[c].typlen = -1;
      attrs[c].atttypmod = -1;
    }
    EXPECT_TRUE(PQsetResultAttrs(result_.get(), static_cast<int>(attrs.size()), attrs.data()));
  }

  // nullopt: NULL.
  ResultBuilder& Row(std::vector<std::optional<std::string>> values) {
    for (size_t c = 0; c < values.size(); ++c) {
      std::optional<std::string>& v = values[c];
      EXPECT_TRUE(PQsetvalue(result_.get(), rows_, static_cast<int>(c),
                             v.has_value() ? v->data() : nullptr,
                             v.has_value() ? static_cast<int>(v->size()) : -1));
    }
    ++rows_;
    return *this;
  }

  const PGresult* get() const { return result_.get(); }

 private:
  PgResult result_;
  int rows_ = 0;
};

TEST(ConvertResultTest, ColumnsAndRowsAreDecodedByTheirTypes) {
  ResultBuilder r({{"id", 20}, {"name", 25}, {"tags", 1009}, {"mood", 16500}});
  r.Row({"1", "ann", "{a,NULL}", "happy"}).Row({"2", std::nullopt, "{}", std::nullopt});
  ResultShape shape = ShapeOf(r.get());
  ASSERT_EQ(shape.columns.size(), 4u);
  EXPECT_EQ(shape.columns[0].name, "id");
  EXPECT_EQ(shape.columns[0].type_name, "int8");
  EXPECT_EQ(shape.columns[2].type_name, "_text");
  EXPECT_THAT(shape.element_oids, ElementsAre(0u, 0u, 25u, 0u));
  EXPECT_EQ(shape.columns[3].type_name, "") << "not built in: the connection names it";
  EXPECT_FALSE(shape.all_named);

  size_t used = 0;
  absl::StatusOr<QueryResult> out = ConvertResult(r.get(), shape, false, 0, &used);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->rows.size(), 2u);
  EXPECT_EQ(out->rows[0][0], Value::Int64(1));
  EXPECT_EQ(out->rows[0][1], Value::String("ann"));
  EXPECT_EQ(out->rows[0][2], Value::Array({Value::String("a"), Value::Null()}));
  EXPECT_EQ(out->rows[0][3], Value::String("happy"));
  EXPECT_EQ(out->rows[1][1], Value::Null());
  EXPECT_EQ(out->rows[1][2], Value::Array({}));
  EXPECT_GT(used, 0u);
}

TEST(ConvertResultTest, AResultOverTheCapIsResourceExhaustedSayingWhatHappenedToIt) {
  ResultBuilder r({{"v", 25}});
  for (int i = 0; i < 10; ++i) r.Row({std::string(100, 'x')});
  size_t used = 0;
  absl::Status autocommit = ConvertResult(r.get(), ShapeOf(r.get()), false, 500, &used).status();
  EXPECT_EQ(autocommit.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(autocommit.message(), HasSubstr("the statement was stopped, in autocommit"));
  used = 0;
  absl::Status in_tx = ConvertResult(r.get(), ShapeOf(r.get()), true, 500, &used).status();
  EXPECT_THAT(in_tx.message(), HasSubstr("rolled back"));
  used = 0;
  EXPECT_TRUE(ConvertResult(r.get(), ShapeOf(r.get()), false, 0, &used).ok()) << "0: no cap";
}

TEST(ConvertResultTest, AValueInAnUnexpectedFormIsInternalNamingTheColumn) {
  ResultBuilder r({{"n", 20}});
  r.Row({"twelve"});
  size_t used = 0;
  absl::Status s = ConvertResult(r.get(), ShapeOf(r.get()), false, 0, &used).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(s.message(), ::testing::StartsWith("column \"n\": "));
}

TEST(StatusOfErrorResultTest, AnErrorWithoutASqlStateIsLibpqsOwnAndCarriesNoFields) {
  PgResult result(PQmakeEmptyPGresult(nullptr, PGRES_FATAL_ERROR));
  const absl::Status s = StatusOfErrorResult(result.get());
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(SqlErrorFieldsOf(s), std::nullopt);
}

}  // namespace
}  // namespace sessionbroker::storage
