// What the subcommands share (commands.h).
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/cpp/brokerctl/commands.h"
#include "sessionbroker/status.h"

namespace brokerctl {

absl::StatusOr<std::unique_ptr<sessionbroker::Client>> MakeClient(const GlobalOptions& global) {
  sessionbroker::ClientOptions options;
  options.target = global.target;
  options.client_id = global.client_id;
  options.default_deadline = global.timeout;
  const sessionbroker::TlsFiles tls{global.tls_ca, global.tls_cert, global.tls_key};
  if (!tls.ca.empty() || !tls.cert.empty() || !tls.key.empty()) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
        sessionbroker::TlsCredentials(tls);
    if (!credentials.ok()) return credentials.status();
    options.credentials = *std::move(credentials);
  }
  return sessionbroker::Client::Create(std::move(options));
}

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (status.code() == absl::StatusCode::kUnavailable) return kExitUnavailable;
  if (sessionbroker::SqlStateOf(status).has_value()) return kExitSqlError;
  return kExitBrokerError;
}

ErrorReport ReportFor(const absl::Status& status) {
  ErrorReport r;
  r.grpc_code = absl::StatusCodeToString(status.code());
  r.message = std::string(status.message());
  if (auto sqlstate = sessionbroker::SqlStateOf(status)) r.sqlstate = *sqlstate;
  if (auto e = sessionbroker::SqlErrorOf(status)) {
    if (r.sqlstate.empty()) r.sqlstate = e->sqlstate;
    r.severity = e->severity;
    r.primary = e->message;
    r.detail = e->detail;
    r.hint = e->hint;
    r.position = e->position;
  }
  if (auto reason = sessionbroker::ReasonOf(status)) r.reason = *reason;
  return r;
}

int PrintError(const absl::Status& status) {
  std::cout.flush();
  std::cerr << FormatError(ReportFor(status)) << std::flush;
  return ExitCodeFor(status);
}

int UsageError(const std::string& command, const std::string& message) {
  const std::string name = command.empty() ? "brokerctl" : "brokerctl " + command;
  std::cerr << name << ": " << message << "\nRun '" << name << " --help' for usage.\n";
  return kExitUsage;
}

std::optional<ParsedFlags> ParseCommandFlags(const std::string& command, const std::string& usage,
                                             const std::string& summary,
                                             const std::vector<FlagSpec>& specs, const Args& args,
                                             int* exit_code) {
  absl::StatusOr<ParsedFlags> parsed = ParseFlags(specs, args);
  if (!parsed.ok()) {
    *exit_code = UsageError(command, std::string(parsed.status().message()));
    return std::nullopt;
  }
  if (parsed->help) {
    std::cout << HelpText(usage, summary, specs);
    *exit_code = kExitOk;
    return std::nullopt;
  }
  return *std::move(parsed);
}

absl::StatusOr<OutputFormat> OutputFormatOf(const ParsedFlags& flags) {
  if (flags.Has("--json") && flags.Has("--csv")) {
    return absl::InvalidArgumentError("--json and --csv exclude each other");
  }
  if (flags.Has("--json")) return OutputFormat::kJson;
  if (flags.Has("--csv")) return OutputFormat::kCsv;
  return OutputFormat::kTable;
}

}  // namespace brokerctl
