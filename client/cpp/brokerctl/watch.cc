// brokerctl watch: the live view of the pool. A reader thread follows the
// WatchPoolStatus stream and leaves the newest snapshot in a slot; the main
// thread owns the terminal (ncurses), redraws on a new snapshot or a resize
// (KEY_RESIZE) and quits on q. Without a terminal on stdout (or with
// --plain) it prints one line per snapshot instead.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <optional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/numbers.h"
#include "absl/synchronization/mutex.h"
#include "client/cpp/brokerctl/commands.h"
#include "client/cpp/brokerctl/screen.h"
#include "client/cpp/brokerctl/watch_view.h"

namespace brokerctl {
namespace {

using sessionbroker::v1::PoolStatus;

// The newest snapshot and the stream's end, between the reader thread and
// the screen.
class Slot {
 public:
  void Put(const PoolStatus& status) {
    absl::MutexLock lock(&mu_);
    latest_ = status;
  }
  void Finish(absl::Status status) {
    absl::MutexLock lock(&mu_);
    done_ = std::move(status);
  }
  std::optional<PoolStatus> Take() {
    absl::MutexLock lock(&mu_);
    std::optional<PoolStatus> out = std::move(latest_);
    latest_.reset();
    return out;
  }
  std::optional<absl::Status> done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  absl::Mutex mu_;
  std::optional<PoolStatus> latest_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> done_ ABSL_GUARDED_BY(mu_);
};

int WatchScreen(sessionbroker::Client& client, std::unique_ptr<Screen> screen, bool unicode,
                const std::string& target, absl::Duration interval) {
  Slot slot;
  sessionbroker::WatchCanceller canceller;
  std::thread reader([&] {
    absl::Status s = client.WatchPoolStatus(
        interval,
        [&](const PoolStatus& status) {
          slot.Put(status);
          return true;
        },
        &canceller);
    slot.Finish(s);
  });

  PoolHistory history;
  std::optional<PoolStatus> last;
  std::optional<absl::Status> ended;
  bool dirty = true;
  for (;;) {
    // Waits at most 100 ms, so that new snapshots show promptly.
    const int ch = screen->ReadKey(100);
    if (ch == 'q' || ch == 'Q') break;
    if (ch == Screen::kResize) dirty = true;
    if (std::optional<PoolStatus> next = slot.Take()) {
      history.Add(*next);
      last = std::move(next);
      dirty = true;
    }
    if (!ended) {
      ended = slot.done();
      if (ended) dirty = true;
      // Never reached the broker: leave the screen and say why.
      if (ended && !ended->ok() && !last) break;
    }
    if (!dirty) continue;
    dirty = false;
    const int rows = screen->rows();
    const int cols = screen->cols();
    std::string footer;
    if (ended) {
      footer = ended->ok() ? " the broker ended the stream (it is shutting down); q quits "
                           : " " + FormatError(ReportFor(*ended)) + " (q quits) ";
      footer.erase(std::remove(footer.begin(), footer.end(), '\n'), footer.end());
    }
    if (last) {
      screen->Draw(RenderWatchScreen(*last, history, target, cols, std::max(0, rows - 1), unicode),
                   footer);
    } else {
      screen->Draw(
          {{"brokerctl watch  " + target + "  waiting for the first snapshot... (q quits)", true}},
          footer);
    }
  }
  screen.reset();  // the terminal as it was, before any error is printed
  canceller.Cancel();
  reader.join();
  if (ended && !ended->ok()) {
    // The stream failed: say why on the restored terminal, and exit as
    // the other commands do.
    return PrintError(*ended);
  }
  return kExitOk;
}

int WatchPlain(sessionbroker::Client& client, absl::Duration interval, int64_t count) {
  int64_t seen = 0;
  absl::Status s = client.WatchPoolStatus(interval, [&](const PoolStatus& status) {
    std::cout << PlainWatchLine(status) << std::endl;
    return count <= 0 || ++seen < count;
  });
  if (!s.ok()) return PrintError(s);
  return kExitOk;
}

}  // namespace

int RunWatch(const GlobalOptions& global, const Args& args) {
  int exit_code = 0;
  std::optional<ParsedFlags> flags = ParseCommandFlags(
      "watch", "brokerctl watch [--interval DURATION] [--plain] [--count N]",
      "A live view of the pool (WatchPoolStatus), like top: connections by state against\n"
      "the bound, waiters and the oldest wait, checkout-wait and statement-duration\n"
      "percentiles, sessions, sparklines of the last minute, the busiest clients. Follows\n"
      "the terminal's size; q quits. When stdout is not a terminal (or with --plain) it\n"
      "prints one line per snapshot instead.",
      {{"--interval", "", "DURATION", "time between snapshots (default 1s, at least 100ms)"},
       {"--plain", "", "", "one line per snapshot even on a terminal"},
       {"--count", "-n", "N", "plain lines: stop after N snapshots"}},
      args, &exit_code);
  if (!flags) return exit_code;
  if (!flags->positional.empty()) return UsageError("watch", "takes no arguments");
  absl::Duration interval = absl::Seconds(1);
  if (flags->Has("--interval")) {
    absl::StatusOr<absl::Duration> d = ParseDurationFlag("--interval", flags->Get("--interval"));
    if (!d.ok()) return UsageError("watch", std::string(d.status().message()));
    interval = *d;
  }
  int64_t count = 0;
  if (flags->Has("--count") && (!absl::SimpleAtoi(flags->Get("--count"), &count) || count < 1)) {
    return UsageError("watch", "--count needs a positive number");
  }
  auto client = MakeClient(global);
  if (!client.ok()) return PrintError(client.status());
  const bool terminal = isatty(STDOUT_FILENO) && isatty(STDIN_FILENO);
  if (!terminal || flags->Has("--plain") || count > 0) {
    return WatchPlain(**client, interval, count);
  }
  const bool unicode = Screen::LocaleIsUtf8();
  std::unique_ptr<Screen> screen = Screen::Open();
  if (screen == nullptr) {
    std::cerr << "brokerctl watch: this terminal (TERM) is unknown to ncurses; printing lines\n";
    return WatchPlain(**client, interval, count);
  }
  return WatchScreen(**client, std::move(screen), unicode, global.target, interval);
}

}  // namespace brokerctl
