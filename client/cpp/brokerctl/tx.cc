// brokerctl tx: an interactive transaction. Begins a session (held by the
// client library's KeepAlive stream) and a transaction, then reads one
// statement per line from stdin, printing results as `query` does. Knows
// the broker's transaction idle limit (BROKER_TX_IDLE_TIMEOUT, from
// --idle-limit: the broker does not publish it), warns before it passes,
// and says so clearly when the broker has rolled the transaction back.
// Single-threaded: waits on stdin with poll() so that the warnings come on
// time while nobody types.
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "client/cpp/brokerctl/commands.h"
#include "client/cpp/brokerctl/watch_view.h"
#include "sessionbroker/status.h"

namespace brokerctl {
namespace {

using sessionbroker::Session;

struct TxOptions {
  absl::Duration idle_limit = absl::Seconds(10);
  absl::Duration warn_before = absl::Seconds(3);
  OutputFormat format = OutputFormat::kTable;
  sessionbroker::TransactionOptions transaction;
};

class TxShell {
 public:
  TxShell(std::unique_ptr<Session> session, TxOptions options)
      : session_(std::move(session)), options_(std::move(options)) {
    interactive_ = isatty(STDIN_FILENO);
  }

  int Run() {
    if (!Begin()) return exit_code_;
    std::cout << "session " << session_->name()
              << ": transaction open.\nOne statement per line; commit, rollback, \\q quits.\n"
              << "The broker rolls back a transaction idle for "
              << HumanDuration(options_.idle_limit)
              << " (BROKER_TX_IDLE_TIMEOUT, --idle-limit);\nyou are warned "
              << HumanDuration(options_.warn_before) << " before.\n";
    Prompt();
    std::string pending;
    while (!quit_) {
      std::string line;
      const int got = ReadLine(pending, line);
      if (got < 0) break;  // end of input
      if (got == 0) {
        OnTimer();
        continue;
      }
      RunLine(line);
      if (!quit_) Prompt();
    }
    if (!fatal_) Finish();
    return exit_code_;
  }

 private:
  void Prompt() {
    if (!interactive_) return;
    std::cout << (!tx_open_ ? "tx> " : tx_failed_ ? "tx!> " : "tx*> ") << std::flush;
  }

  // 1 and the line, 0 when a timer is due first, -1 at end of input.
  int ReadLine(std::string& pending, std::string& line) {
    for (;;) {
      if (const size_t nl = pending.find('\n'); nl != std::string::npos) {
        line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        return 1;
      }
      int timeout_ms = -1;
      if (std::optional<absl::Time> due = NextTimer()) {
        timeout_ms = static_cast<int>(
            std::max<int64_t>(0, absl::ToInt64Milliseconds(*due - absl::Now()) + 1));
      }
      pollfd fd{STDIN_FILENO, POLLIN, 0};
      const int ready = poll(&fd, 1, timeout_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) return 0;
      char buf[4096];
      const ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        if (pending.empty()) return -1;
        line.swap(pending);  // a last line without a newline
        pending.clear();
        return 1;
      }
      pending.append(buf, static_cast<size_t>(n));
    }
  }

  // The warning, then the checks for the broker's rollback.
  std::optional<absl::Time> NextTimer() const {
    if (!tx_open_ || tx_failed_) return std::nullopt;
    if (!warned_) return last_activity_ + options_.idle_limit - options_.warn_before;
    return next_check_;
  }

  void OnTimer() {
    const absl::Time now = absl::Now();
    if (!warned_) {
      warned_ = true;
      next_check_ = last_activity_ + options_.idle_limit + absl::Milliseconds(300);
      std::cerr << absl::StrFormat(
                       "\nwarning: the transaction has been idle for %s;\nthe broker rolls it "
                       "back after %s idle (BROKER_TX_IDLE_TIMEOUT).\nRun a statement, commit or "
                       "rollback within %s.\n",
                       HumanDuration(now - last_activity_), HumanDuration(options_.idle_limit),
                       HumanDuration(last_activity_ + options_.idle_limit - now))
                << std::flush;
      Prompt();
      return;
    }
    // Past the limit: ask the broker whether it rolled the transaction back.
    absl::StatusOr<sessionbroker::v1::Session> s = session_->Get();
    if (!s.ok()) {
      Fatal(s.status());
      return;
    }
    if (s->in_transaction() && !s->transaction_aborted()) {
      next_check_ = now + absl::Seconds(1);  // the broker's limit is longer than we were told
      return;
    }
    std::cerr << "\nThe broker rolled back the transaction:\n"
              << WrapText(s->abort_reason().empty() ? "it is no longer open" : s->abort_reason(),
                          80, "  ")
              << "Nothing of it was committed. The next statement begins a new transaction.\n"
              << std::flush;
    Acknowledge();
    Prompt();
  }

  bool Begin() {
    absl::Status s = session_->Begin(options_.transaction);
    if (!s.ok()) {
      Fatal(s);
      return false;
    }
    tx_open_ = true;
    tx_failed_ = false;
    Touch();
    return true;
  }

  void Touch() {
    last_activity_ = absl::Now();
    warned_ = false;
  }

  // Rollback acknowledges a transaction the broker rolled back (or a failed one).
  void Acknowledge() {
    absl::Status s = session_->Rollback();
    if (!s.ok()) {
      Fatal(s);
      return;
    }
    tx_open_ = false;
    tx_failed_ = false;
  }

  // The session is gone or the broker unreachable: nothing more can run.
  void Fatal(const absl::Status& status) {
    exit_code_ = PrintError(status);
    fatal_ = quit_ = true;
  }

  // A failed call: fatal if it ended the session or lost the broker.
  void Failed(const absl::Status& status) {
    const std::string reason = sessionbroker::ReasonOf(status).value_or("");
    if (status.code() == absl::StatusCode::kUnavailable || absl::StartsWith(reason, "SESSION_") ||
        reason == "BROKER_SHUTDOWN") {
      Fatal(status);
      return;
    }
    PrintError(status);
    if (reason == "TX_IDLE_TIMEOUT" || reason == "TX_MAX_DURATION") {
      std::cerr << "The broker rolled back the transaction; nothing of it was committed. The "
                   "next statement begins a new transaction.\n";
      Acknowledge();
    } else if (tx_open_) {
      tx_failed_ = true;
      std::cerr << "The transaction is aborted: type rollback.\n";
    }
  }

  void RunLine(const std::string& raw) {
    std::string line(absl::StripAsciiWhitespace(raw));
    std::string word = absl::AsciiStrToLower(line);
    while (!word.empty() && (word.back() == ';' || word.back() == ' ')) word.pop_back();
    if (word.empty()) return;
    if (word == "\\q" || word == "quit" || word == "exit") {
      quit_ = true;
      return;
    }
    if (word == "commit" || word == "end") {
      if (!tx_open_) {
        std::cerr << "no transaction is open\n";
        return;
      }
      absl::Status s = session_->Commit();
      if (s.ok()) {
        tx_open_ = false;
        std::cout << "COMMIT\n";
      } else if (s.code() == absl::StatusCode::kAborted) {
        PrintError(s);
        std::cerr << "Nothing was committed.\n";
        Acknowledge();
      } else {
        Failed(s);
      }
      return;
    }
    if (word == "rollback" || word == "abort") {
      absl::Status s = session_->Rollback();
      if (!s.ok()) return Failed(s);
      tx_open_ = tx_failed_ = false;
      std::cout << "ROLLBACK\n";
      return;
    }
    if (word == "begin" || word == "start transaction") {
      if (tx_open_) {
        std::cerr << "a transaction is already open\n";
        return;
      }
      if (Begin()) std::cout << "BEGIN\n";
      return;
    }
    if (!tx_open_) {
      if (!Begin()) return;
      std::cout << "BEGIN\n";
    }
    absl::StatusOr<sessionbroker::Result> result = session_->Execute(line);
    Touch();
    if (!result.ok()) return Failed(result.status());
    // CSV has no form for a statement without rows: its command tag, as psql prints.
    if (options_.format == OutputFormat::kCsv && result->proto().columns_size() == 0) {
      std::cout << result->command_tag() << "\n" << std::flush;
    } else {
      std::cout << FormatResult(result->proto(), options_.format) << std::flush;
    }
  }

  void Finish() {
    if (tx_open_) {
      absl::Status s = session_->Rollback();
      if (s.ok()) {
        std::cout << (interactive_ ? "\n" : "")
                  << "ROLLBACK (the open transaction was rolled back on exit)\n";
      }
    }
    (void)session_->End();
  }

  std::unique_ptr<Session> session_;
  TxOptions options_;
  bool interactive_ = false;
  bool tx_open_ = false;
  bool tx_failed_ = false;  // a statement failed: the broker rolled back already
  bool warned_ = false;
  bool quit_ = false;
  bool fatal_ = false;
  int exit_code_ = kExitOk;
  absl::Time last_activity_;
  absl::Time next_check_;
};

}  // namespace

int RunTx(const GlobalOptions& global, const Args& args) {
  int exit_code = 0;
  std::optional<ParsedFlags> flags = ParseCommandFlags(
      "tx",
      "brokerctl tx [--idle-limit DURATION] [--warn-before DURATION] [--isolation LEVEL] "
      "[--read-only] [--label TEXT] [--json|--csv]",
      "An interactive transaction: begins a session and a transaction and reads one\n"
      "statement per line, printing results as query does. commit (or end), rollback (or\n"
      "abort), begin; \\q, quit, exit or end of input quit (rolling back an open\n"
      "transaction). After commit or rollback the next statement begins a new transaction.\n"
      "The broker rolls back a transaction in which no statement ran for\n"
      "BROKER_TX_IDLE_TIMEOUT; brokerctl warns before that and reports the rollback.",
      {{"--idle-limit", "", "DURATION",
        "the broker's BROKER_TX_IDLE_TIMEOUT (default $BROKER_TX_IDLE_TIMEOUT, else 10s)"},
       {"--warn-before", "", "DURATION", "warn this long before the idle limit (default 3s)"},
       {"--isolation", "", "LEVEL", "read-committed, repeatable-read or serializable"},
       {"--read-only", "", "", "a READ ONLY transaction"},
       {"--label", "", "TEXT", "the session's label for operators (default \"brokerctl tx\")"},
       {"--json", "", "", "print results as JSON"},
       {"--csv", "", "", "print results as CSV"}},
      args, &exit_code);
  if (!flags) return exit_code;
  if (!flags->positional.empty()) return UsageError("tx", "takes no arguments");
  TxOptions options;
  absl::StatusOr<OutputFormat> format = OutputFormatOf(*flags);
  if (!format.ok()) return UsageError("tx", std::string(format.status().message()));
  options.format = *format;
  std::string idle = flags->Get("--idle-limit");
  if (idle.empty()) {
    const char* env = std::getenv("BROKER_TX_IDLE_TIMEOUT");
    if (env != nullptr) idle = env;
  }
  if (!idle.empty()) {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag("--idle-limit", idle);
    if (!d.ok()) return UsageError("tx", std::string(d.status().message()));
    options.idle_limit = *d;
  }
  if (flags->Has("--warn-before")) {
    absl::StatusOr<absl::Duration> d =
        ParseDurationFlag("--warn-before", flags->Get("--warn-before"));
    if (!d.ok()) return UsageError("tx", std::string(d.status().message()));
    options.warn_before = *d;
  }
  options.warn_before = std::min(options.warn_before, options.idle_limit);
  const std::string iso = flags->Get("--isolation");
  if (iso == "read-committed") {
    options.transaction.isolation = sessionbroker::Isolation::kReadCommitted;
  } else if (iso == "repeatable-read") {
    options.transaction.isolation = sessionbroker::Isolation::kRepeatableRead;
  } else if (iso == "serializable") {
    options.transaction.isolation = sessionbroker::Isolation::kSerializable;
  } else if (!iso.empty()) {
    return UsageError("tx", "--isolation: read-committed, repeatable-read or serializable");
  }
  options.transaction.read_only = flags->Has("--read-only");

  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());
  sessionbroker::SessionOptions session_options;
  session_options.label = flags->Get("--label", "brokerctl tx");
  absl::StatusOr<std::unique_ptr<Session>> session = (*client)->BeginSession(session_options);
  if (!session.ok()) return PrintError(session.status());
  return TxShell(*std::move(session), std::move(options)).Run();
}

}  // namespace brokerctl
