#include "server/storage/pq_listen_connection.h"

#include <libpq-fe.h>

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "server/storage/conninfo.h"

namespace sessionbroker::storage {
namespace {

std::string Scrub(std::string text, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (!secret.empty()) absl::StrReplaceAll({{secret, "***"}}, &text);
  }
  return text;
}

std::string ErrorOf(PGconn* conn) {
  return std::string(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn)));
}

void IgnoreNotice(void*, const char*) {}

class PqListenConnection final : public ListenConnection {
 public:
  explicit PqListenConnection(PGconn* conn) : conn_(conn) {}
  ~PqListenConnection() override { PQfinish(conn_); }
  PqListenConnection(const PqListenConnection&) = delete;
  PqListenConnection& operator=(const PqListenConnection&) = delete;

  absl::Status Listen(absl::string_view channel) override { return Run("LISTEN ", channel); }
  absl::Status Unlisten(absl::string_view channel) override { return Run("UNLISTEN ", channel); }

  absl::Status Consume(std::vector<Notification>* out) override {
    if (broken_) return Lost();
    // 0: the server closed the connection (pg_terminate_backend, a
    // restart) or the socket failed.
    const bool read = PQconsumeInput(conn_) == 1;
    Drain(out);
    if (!read || PQstatus(conn_) == CONNECTION_BAD) {
      broken_ = true;
      error_ = ErrorOf(conn_);
      return Lost();
    }
    return absl::OkStatus();
  }

  int Socket() const override { return broken_ ? -1 : PQsocket(conn_); }
  bool IsBroken() const override { return broken_; }
  int BackendPid() const override { return PQbackendPID(conn_); }

 private:
  absl::Status Lost() const {
    return absl::UnavailableError(
        absl::StrCat("the listener connection to PostgreSQL was lost: ", error_));
  }

  void Drain(std::vector<Notification>* out) {
    while (PGnotify* n = PQnotifies(conn_)) {
      out->push_back(Notification{n->relname, n->extra == nullptr ? "" : n->extra, n->be_pid});
      PQfreemem(n);
    }
  }

  absl::Status Run(absl::string_view command, absl::string_view channel) {
    if (broken_) return Lost();
    char* quoted = PQescapeIdentifier(conn_, channel.data(), channel.size());
    if (quoted == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("channel name cannot be quoted: ", ErrorOf(conn_)));
    }
    const std::string sql = absl::StrCat(command, quoted);
    PQfreemem(quoted);
    PGresult* result = PQexec(conn_, sql.c_str());
    const bool ok = result != nullptr && PQresultStatus(result) == PGRES_COMMAND_OK;
    const std::string error =
        result == nullptr
            ? ErrorOf(conn_)
            : std::string(absl::StripTrailingAsciiWhitespace(PQresultErrorMessage(result)));
    PQclear(result);
    if (ok) return absl::OkStatus();
    if (PQstatus(conn_) == CONNECTION_BAD) {
      broken_ = true;
      error_ = error;
      return Lost();
    }
    return absl::InternalError(absl::StrCat(sql, " failed: ", error));
  }

  PGconn* const conn_;
  bool broken_ = false;
  std::string error_;
};

}  // namespace

PqListenConnector::PqListenConnector(std::string conninfo) : conninfo_(std::move(conninfo)) {
  if (absl::StatusOr<Conninfo> parsed = Conninfo::Parse(conninfo_); parsed.ok()) {
    redacted_ = parsed->Redacted();
    secrets_ = parsed->SecretValues();
  }
}

absl::StatusOr<std::unique_ptr<ListenConnection>> PqListenConnector::ConnectListener() {
  PGconn* conn = PQconnectdb(conninfo_.c_str());
  if (conn == nullptr) return absl::ResourceExhaustedError("libpq could not allocate a connection");
  if (PQstatus(conn) != CONNECTION_OK) {
    const std::string error = ErrorOf(conn);
    PQfinish(conn);
    return absl::UnavailableError(
        Scrub(absl::StrCat("the listener connection cannot connect to PostgreSQL at ",
                           redacted_.empty() ? "the default address" : redacted_, ": ", error),
              secrets_));
  }
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  return std::unique_ptr<ListenConnection>(std::make_unique<PqListenConnection>(conn));
}

}  // namespace sessionbroker::storage
