// brokerctl listen: LISTEN/NOTIFY through the broker's Listen stream, one
// line per notification as it arrives (psql's wording, or JSON lines).
#include <iostream>
#include <optional>
#include <variant>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cpp/brokerctl/commands.h"

namespace brokerctl {
namespace {

constexpr char kUsage[] = "brokerctl listen CHANNEL... [--json] [--count N]";
constexpr char kSummary[] =
    "Subscribes to LISTEN/NOTIFY channels through the broker (names used exactly as given:\n"
    "\"Orders\" needs NOTIFY \"Orders\") and prints each notification on its own line as it\n"
    "arrives, in psql's wording or (--json) as one JSON object per line:\n"
    "  {\"channel\":\"orders\",\"payload\":\"42\",\"sender_pid\":4811}\n"
    "A line also says when notifications may have been missed (the broker's listener\n"
    "connection was replaced, or this listener read too slowly):\n"
    "  {\"gap\":\"reconnected\",\"dropped\":0,\"listener_pid\":4900}\n"
    "\"Listening on ...\" goes to stderr once the broker listens. Runs until Ctrl-C, until\n"
    "--count notifications have arrived (exit 0), or until the stream breaks (the broker\n"
    "restarts or drains: the error and exit code 3; listen again).";

std::string GapReason(sessionbroker::NotificationGap::Reason reason) {
  switch (reason) {
    case sessionbroker::NotificationGap::Reason::kReconnected:
      return "reconnected";
    case sessionbroker::NotificationGap::Reason::kOverflow:
      return "overflow";
    case sessionbroker::NotificationGap::Reason::kUnspecified:
      break;
  }
  return "unspecified";
}

}  // namespace

std::string FormatNotification(const sessionbroker::Notification& n, bool json) {
  if (json) {
    return absl::StrCat("{\"channel\":\"", JsonEscape(n.channel), "\",\"payload\":\"",
                        JsonEscape(n.payload), "\",\"sender_pid\":", n.sender_pid, "}\n");
  }
  // psql's own line for a notification.
  return absl::StrCat("Asynchronous notification \"", n.channel, "\"",
                      n.payload.empty() ? "" : absl::StrCat(" with payload \"", n.payload, "\""),
                      " received from server process with PID ", n.sender_pid, ".\n");
}

std::string FormatGap(const sessionbroker::NotificationGap& g, bool json) {
  if (json) {
    return absl::StrCat("{\"gap\":\"", GapReason(g.reason), "\",\"dropped\":", g.dropped,
                        ",\"listener_pid\":", g.listener_pid, "}\n");
  }
  if (g.reason == sessionbroker::NotificationGap::Reason::kOverflow) {
    return absl::StrCat("Notifications missed: this listener read too slowly and the oldest ",
                        g.dropped, " were dropped.\n");
  }
  return absl::StrCat(
      "Notifications may have been missed: the broker's listener connection was replaced "
      "(listener PID ",
      g.listener_pid, ").\n");
}

int RunListen(const GlobalOptions& global, const Args& args) {
  int exit_code = 0;
  std::optional<ParsedFlags> flags =
      ParseCommandFlags("listen", kUsage, kSummary,
                        {{"--json", "", "", "print one JSON object per line"},
                         {"--count", "", "N", "exit after N notifications"}},
                        args, &exit_code);
  if (!flags) return exit_code;
  if (flags->positional.empty()) return UsageError("listen", "no channel given");
  int64_t count = -1;
  if (auto it = flags->values.find("--count"); it != flags->values.end()) {
    if (!absl::SimpleAtoi(it->second.back(), &count) || count < 1) {
      return UsageError("listen", "--count " + it->second.back() + ": expected a count > 0");
    }
  }
  const bool json = flags->Has("--json");

  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());
  // No deadline: a subscription lasts until stopped.
  absl::StatusOr<std::unique_ptr<sessionbroker::Subscription>> sub =
      (*client)->Listen(flags->positional);
  if (!sub.ok()) return PrintError(sub.status());
  std::vector<std::string> quoted;
  for (const std::string& c : (*sub)->channels()) quoted.push_back(absl::StrCat("\"", c, "\""));
  // One write: a reader of stderr never sees half of the line.
  std::cerr << absl::StrCat("Listening on ", absl::StrJoin(quoted, ", "), " (listener PID ",
                            (*sub)->listener_pid(), ").\n")
            << std::flush;
  int64_t received = 0;
  while (std::optional<sessionbroker::ListenEvent> event = (*sub)->Next()) {
    if (const auto* n = std::get_if<sessionbroker::Notification>(&*event)) {
      std::cout << FormatNotification(*n, json) << std::flush;
      if (++received == count) return kExitOk;
    } else {
      std::cout << FormatGap(std::get<sessionbroker::NotificationGap>(*event), json) << std::flush;
    }
  }
  return PrintError((*sub)->status());
}

}  // namespace brokerctl
