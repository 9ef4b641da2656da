// brokerctl status, sessions and health: one call each, human or --json.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/cpp/brokerctl/commands.h"
#include "client/cpp/brokerctl/watch_view.h"
#include "google/protobuf/util/json_util.h"

namespace brokerctl {
namespace {

using sessionbroker::v1::ExecuteResponse;

std::string ProtoJson(const google::protobuf::Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &json, options);
  return json;
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

std::string TxState(const sessionbroker::v1::Session& s) {
  if (!s.in_transaction()) return "-";
  return s.transaction_aborted() ? "aborted" : "open";
}

void AddColumn(ExecuteResponse& r, const std::string& name, const std::string& type) {
  auto* c = r.add_columns();
  c->set_name(name);
  c->set_type_name(type);
}

}  // namespace

// ---- status ----

int RunStatus(const GlobalOptions& global, const Args& args) {
  int exit_code = 0;
  std::optional<ParsedFlags> flags = ParseCommandFlags(
      "status", "brokerctl status [--json]",
      "Prints one snapshot of the pool (GetPoolStatus): connections by state, waiters,\n"
      "percentiles, sessions, counters, the busiest clients. --json prints the PoolStatus\n"
      "message in protobuf's JSON mapping (docs/operations.md explains every field).",
      {{"--json", "", "", "print the snapshot as JSON"}}, args, &exit_code);
  if (!flags) return exit_code;
  if (!flags->positional.empty()) return UsageError("status", "takes no arguments");
  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());
  absl::StatusOr<sessionbroker::v1::PoolStatus> status = (*client)->GetPoolStatus();
  if (!status.ok()) return PrintError(status.status());
  std::cout << (flags->Has("--json") ? StatusJson(*status) : FormatStatus(*status)) << std::flush;
  return kExitOk;
}

// ---- sessions ----

std::string FormatSessionList(const std::vector<sessionbroker::v1::Session>& sessions,
                              absl::Time now) {
  ExecuteResponse table;
  AddColumn(table, "name", "text");
  AddColumn(table, "client", "text");
  AddColumn(table, "label", "text");
  AddColumn(table, "age", "text");
  AddColumn(table, "expires in", "text");
  AddColumn(table, "tx", "text");
  AddColumn(table, "held", "text");
  AddColumn(table, "queued", "int4");
  for (const auto& s : sessions) {
    auto* row = table.add_rows();
    row->add_values()->set_string_value(s.name());
    row->add_values()->set_string_value(s.client_id());
    row->add_values()->set_string_value(s.label());
    row->add_values()->set_string_value(HumanDuration(now - FromProto(s.create_time())));
    row->add_values()->set_string_value(HumanDuration(FromProto(s.expire_time()) - now));
    row->add_values()->set_string_value(TxState(s));
    row->add_values()->set_string_value(s.held_by_stream() ? "yes" : "no");
    row->add_values()->set_int64_value(s.queued_calls());
  }
  return FormatTable(table);
}

std::string FormatSessionDetail(const sessionbroker::v1::Session& s, absl::Time now) {
  auto time = [&](const google::protobuf::Timestamp& t) {
    const absl::Time at = FromProto(t);
    const absl::Duration d = at - now;
    return absl::StrCat(
        absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", at, absl::UTCTimeZone()), " (",
        d < absl::ZeroDuration() ? HumanDuration(-d) + " ago" : "in " + HumanDuration(d), ")");
  };
  std::string out;
  absl::StrAppend(&out, "name            ", s.name(), "\n");
  absl::StrAppend(&out, "client          ", s.client_id().empty() ? "(none)" : s.client_id(), "\n");
  absl::StrAppend(&out, "label           ", s.label(), "\n");
  absl::StrAppend(&out, "created         ", time(s.create_time()), "\n");
  absl::StrAppend(&out, "expires         ", time(s.expire_time()),
                  s.held_by_stream() ? ", held by a KeepAlive stream" : "", "\n");
  absl::StrAppend(&out, "max expiry      ", time(s.max_expire_time()), "\n");
  absl::StrAppend(
      &out, "ttl             ",
      HumanDuration(absl::Seconds(s.ttl().seconds()) + absl::Nanoseconds(s.ttl().nanos())), "\n");
  absl::StrAppend(&out, "read only       ", s.read_only() ? "yes" : "no", "\n");
  absl::StrAppend(&out, "isolation       ", sessionbroker::v1::IsolationLevel_Name(s.isolation()),
                  "\n");
  absl::StrAppend(&out, "transaction     ", TxState(s));
  if (s.in_transaction()) absl::StrAppend(&out, ", began ", time(s.transaction_start_time()));
  if (s.transaction_aborted()) absl::StrAppend(&out, "\n  abort reason  ", s.abort_reason());
  absl::StrAppend(&out, "\nqueued calls    ", s.queued_calls(), "\n");
  for (const auto& [k, v] : s.settings())
    absl::StrAppend(&out, "setting         ", k, " = ", v, "\n");
  return out;
}

int RunSessions(const GlobalOptions& global, const Args& args) {
  int exit_code = 0;
  std::optional<ParsedFlags> flags = ParseCommandFlags(
      "sessions", "brokerctl sessions [ls | show NAME | end NAME] [--client ID] [--json]",
      "ls (the default) lists the open sessions (every page of ListSessions), of one client\n"
      "with --client. show prints one session (GetSession). end ends one (EndSession): its\n"
      "running statement is cancelled and its open transaction rolled back.",
      {{"--client", "", "ID", "ls: only the sessions of this x-client-id"},
       {"--json", "", "", "print the sessions as JSON (protobuf's JSON mapping)"}},
      args, &exit_code);
  if (!flags) return exit_code;
  const std::vector<std::string>& pos = flags->positional;
  const std::string verb = pos.empty() ? "ls" : pos[0];
  if (verb != "ls" && verb != "show" && verb != "end") {
    return UsageError("sessions", "unknown subcommand \"" + verb + "\" (ls, show NAME, end NAME)");
  }
  const size_t want = verb == "ls" ? 1 : 2;
  if (pos.size() > want || (verb != "ls" && pos.size() < 2)) {
    return UsageError("sessions", verb == "ls" ? "ls takes no arguments"
                                               : verb + " takes exactly one session NAME");
  }
  if (verb != "ls" && flags->Has("--client")) {
    return UsageError("sessions", "--client applies to ls only");
  }
  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());
  const bool json = flags->Has("--json");

  if (verb == "ls") {
    std::vector<sessionbroker::v1::Session> sessions;
    std::string token;
    do {
      auto page = (*client)->ListSessions(flags->Get("--client"), 1000, token);
      if (!page.ok()) return PrintError(page.status());
      for (auto& s : *page->mutable_sessions()) sessions.push_back(std::move(s));
      token = page->next_page_token();
    } while (!token.empty());
    if (json) {
      std::string out = "[";
      for (size_t i = 0; i < sessions.size(); ++i) {
        if (i > 0) out += ",";
        out += ProtoJson(sessions[i]);
      }
      std::cout << out << "]\n" << std::flush;
    } else {
      std::cout << FormatSessionList(sessions, absl::Now()) << std::flush;
    }
    return kExitOk;
  }
  if (verb == "show") {
    auto s = (*client)->GetSession(pos[1]);
    if (!s.ok()) return PrintError(s.status());
    std::cout << (json ? ProtoJson(*s) + "\n" : FormatSessionDetail(*s, absl::Now())) << std::flush;
    return kExitOk;
  }
  auto rolled_back = (*client)->EndSession(pos[1]);
  if (!rolled_back.ok()) return PrintError(rolled_back.status());
  if (json) {
    std::cout << "{\"ended\":\"" << JsonEscape(pos[1])
              << "\",\"rolled_back\":" << (*rolled_back ? "true" : "false") << "}\n";
  } else {
    std::cout << "session " << pos[1] << " ended"
              << (*rolled_back ? "; its open transaction was rolled back" : "") << "\n";
  }
  return kExitOk;
}

// ---- health ----

int RunHealth(const GlobalOptions& global, const Args& args) {
  int exit_code = 0;
  std::optional<ParsedFlags> flags = ParseCommandFlags(
      "health", "brokerctl health [--service NAME] [--json]",
      "Asks grpc.health.v1 for liveness (service \"\") and readiness (service\n"
      "\"sessionbroker.v1.SessionBroker\": NOT_SERVING while the database is unreachable or\n"
      "the broker drains). Exit 0 when every service asked is SERVING, 3 when one is not or\n"
      "the broker cannot be reached, 4 for an unknown service.",
      {{"--service", "", "NAME", "ask about this service only"},
       {"--json", "", "", "print {\"SERVICE\": \"STATUS\", ...}"}},
      args, &exit_code);
  if (!flags) return exit_code;
  if (!flags->positional.empty()) return UsageError("health", "takes no arguments");
  std::vector<std::pair<std::string, std::string>> services = {
      {"liveness", ""}, {"readiness", "sessionbroker.v1.SessionBroker"}};
  if (flags->Has("--service")) services = {{"service", flags->Get("--service")}};
  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());

  int code = kExitOk;
  std::string text;
  std::string json = "{";
  for (const auto& [role, service] : services) {
    absl::StatusOr<sessionbroker::ServingStatus> s = (*client)->Health(service);
    if (!s.ok()) return PrintError(s.status());
    std::string name;
    switch (*s) {
      case sessionbroker::ServingStatus::kServing:
        name = "SERVING";
        break;
      case sessionbroker::ServingStatus::kNotServing:
        name = "NOT_SERVING";
        code = std::max<int>(code, kExitUnavailable);
        break;
      case sessionbroker::ServingStatus::kServiceUnknown:
        name = "SERVICE_UNKNOWN";
        code = kExitBrokerError;
        break;
      case sessionbroker::ServingStatus::kUnknown:
        name = "UNKNOWN";
        code = std::max<int>(code, kExitUnavailable);
        break;
    }
    const std::string quoted = "\"" + service + "\"";
    text += absl::StrFormat("%-10s %-34s %s\n", role, quoted, name);
    if (json.size() > 1) json += ",";
    json += quoted + ":\"" + name + "\"";
  }
  std::cout << (flags->Has("--json") ? json + "}\n" : text) << std::flush;
  return code;
}

}  // namespace brokerctl
