// The session broker's entry point: read configuration, wire, serve until
// SIGINT/SIGTERM, drain, exit 0. Configuration errors exit 2; failing to
// start (e.g. the port is taken) exits 1.
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
#include "server/logging.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
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

  const char* env_file = std::getenv("BROKER_ENV_FILE");
  absl::StatusOr<sessionbroker::EnvMap> env =
      sessionbroker::ReadEnvironment(env_file != nullptr ? env_file : ".env");
  if (!env.ok()) {
    std::fprintf(stderr, "session-broker: configuration error: %s\n",
                 std::string(env.status().message()).c_str());
    return 2;
  }
  absl::StatusOr<sessionbroker::Config> config = sessionbroker::LoadConfig(*env);
  if (!config.ok()) {
    std::fprintf(stderr, "session-broker: configuration error: %s\n",
                 std::string(config.status().message()).c_str());
    return 2;
  }
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
  // A second signal, or a drain that outlives the grace period by far (a
  // database that no longer answers cancel requests), ends the process.
  const absl::Duration hard_limit = server.shutdown_grace() + absl::Seconds(10);
  std::thread([signals, hard_limit] {
    const timespec timeout = absl::ToTimespec(hard_limit);
    const int again = sigtimedwait(&signals, nullptr, &timeout);
    spdlog::critical(again > 0 ? "second signal: exiting without finishing the drain"
                               : "drain did not finish in time: exiting");
    spdlog::shutdown();
    std::_Exit(1);
  }).detach();
  server.Shutdown();
  return 0;
}
