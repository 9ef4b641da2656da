// The session broker's entry point: read configuration, wire, serve until
// SIGINT/SIGTERM, drain, exit 0. Configuration errors exit 2; failing to
// start (e.g. the port is taken) exits 1. `--print-config` shows the
// configuration it would serve with and exits; `--help` lists the modes.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/broker_server.h"
#include "server/config.h"
#include "server/core/auth/token_hash.h"
#include "server/logging.h"
#include "spdlog/spdlog.h"

namespace {

constexpr char kUsage[] =
    "usage: session-broker                    serve (configuration from the environment and "
    ".env)\n"
    "       session-broker --print-config     print every setting's effective value and where it\n"
    "                                         came from (environment, the .env file, default),\n"
    "                                         secrets redacted; connects to nothing\n"
    "       session-broker --print-config=env the same as NAME=value lines, values shell-quoted\n"
    "       session-broker hash-token         read a client's bearer token from stdin, print its\n"
    "                                         argon2id hash for the clients file\n"
    "                                         (BROKER_CLIENTS_FILE); the token is never echoed\n"
    "       session-broker --help             this text\n"
    "\n"
    "Exit codes: 0 done, 1 failed to start, 2 configuration error or bad usage.\n";

// Written with one fwrite: the text is over stdio's 4 KiB buffer, and a
// reader that stops early (`--help | grep -q`) would otherwise end the
// process with SIGPIPE between two writes.
void PrintUsage(std::FILE* to) {
  std::string text = kUsage;
  text += "\nSettings (environment variables, or .env lines):\n";
  for (const sessionbroker::SettingInfo& s : sessionbroker::DescribeSettings()) {
    const std::string default_value =
        s.required ? "required"
                   : "default: " + (s.default_value.empty() ? "none" : s.default_value);
    text += "  " + s.name + " (" + default_value + ")\n      " + s.description + "\n";
  }
  std::fwrite(text.data(), 1, text.size(), to);
}

int ConfigError(const absl::Status& status) {
  std::fprintf(stderr, "session-broker: configuration error: %s\n",
               std::string(status.message()).c_str());
  return 2;
}

// `hash-token`: the token is the whole of stdin but for one trailing newline
// (what `echo` or a here-string adds), so a script can pipe it in.
int HashTokenCommand() {
  std::string token;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0) {
    token.append(buffer, n);
    if (token.size() > 2 * sessionbroker::core::kMaxTokenBytes) break;
  }
  if (!token.empty() && token.back() == '\n') token.pop_back();
  if (!token.empty() && token.back() == '\r') token.pop_back();
  absl::StatusOr<std::string> hash = sessionbroker::core::HashToken(token);
  if (!hash.ok()) {
    std::fprintf(stderr, "session-broker hash-token: %s\n",
                 std::string(hash.status().message()).c_str());
    return 2;
  }
  std::printf("%s\n", hash->c_str());
  return std::fflush(stdout) == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "hash-token") return HashTokenCommand();
  enum class Mode { kServe, kPrintConfig, kPrintConfigEnv } mode = Mode::kServe;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      PrintUsage(stdout);
      return 0;
    } else if (arg == "--print-config" || arg == "--print-config=human") {
      mode = Mode::kPrintConfig;
    } else if (arg == "--print-config=env") {
      mode = Mode::kPrintConfigEnv;
    } else {
      std::fprintf(stderr, "session-broker: unknown argument '%s'\n\n%s", arg.c_str(), kUsage);
      return 2;
    }
  }
  // The environment and .env exactly as serving reads them.
  absl::StatusOr<sessionbroker::EnvSources> sources =
      sessionbroker::ReadEnvSources(sessionbroker::ProcessEnvironment());
  if (!sources.ok()) return ConfigError(sources.status());
  if (mode != Mode::kServe) {
    absl::StatusOr<std::string> text = sessionbroker::RenderConfig(
        *sources, mode == Mode::kPrintConfigEnv ? sessionbroker::ConfigFormat::kEnv
                                                : sessionbroker::ConfigFormat::kHuman);
    if (!text.ok()) return ConfigError(text.status());
    std::fputs(text->c_str(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }

  // Debian's Abseil keeps absl::Mutex deadlock detection on: every lock of an
  // absl::Mutex (gRPC's too) updates a global lock graph, a few percent of the
  // broker's CPU per call in a profile. Lock order is checked by clang's
  // thread-safety analysis and TSan instead.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Block the shutdown signals in every thread (threads inherit the mask);
  // main takes them synchronously with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::StatusOr<sessionbroker::Config> config =
      sessionbroker::LoadConfig(sessionbroker::MergeEnv(*sources));
  if (!config.ok()) return ConfigError(config.status());
  sessionbroker::InitLogging(config->log_level, config->log_format);

  sessionbroker::BrokerServer server(*std::move(config));
  if (absl::Status started = server.Start(); !started.ok()) {
    spdlog::critical("cannot start: {}", started.ToString());
    return 1;
  }
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  spdlog::info("received {}; draining (send it again to exit at once)",
               signal_number == SIGINT ? "SIGINT" : "SIGTERM");
  // SIGTERM is how Kubernetes (and service managers) stop the broker: the
  // drain window lets their routing converge first. SIGINT is a person at a
  // terminal (Ctrl-C, ./scripts/dev up): no one routes to it, so no window.
  const absl::Duration drain = signal_number == SIGTERM ? server.drain() : absl::ZeroDuration();
  // A second signal, or a drain that outlives the grace period by far (a
  // database that no longer answers cancel requests), ends the process.
  const absl::Duration hard_limit = drain + server.shutdown_grace() + absl::Seconds(10);
  std::thread([signals, hard_limit] {
    const timespec timeout = absl::ToTimespec(hard_limit);
    const int again = sigtimedwait(&signals, nullptr, &timeout);
    spdlog::critical(again > 0 ? "second signal: exiting without finishing the drain"
                               : "drain did not finish in time: exiting");
    spdlog::shutdown();
    std::_Exit(1);
  }).detach();
  server.Shutdown(drain);
  return 0;
}
