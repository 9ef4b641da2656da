// What `brokerctl watch` and `brokerctl status` show of a PoolStatus: the
// screen of the live view as lines of text (drawn by ncurses in watch.cc, so
// that the layout is testable without a terminal), the one-line form used
// when stdout is not a terminal, the human snapshot of `status`, and the
// last minute of samples behind the sparklines. Not thread-safe: one
// PoolHistory belongs to one watch loop; the functions are pure.
#ifndef SESSIONBROKER_CLIENT_CPP_BROKERCTL_WATCH_VIEW_H_
#define SESSIONBROKER_CLIENT_CPP_BROKERCTL_WATCH_VIEW_H_

#include <deque>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "client/cpp/brokerctl/screen.h"
#include "sessionbroker/v1/monitor.pb.h"

namespace brokerctl {

// The samples of the last `window` (one per snapshot), for sparklines.
class PoolHistory {
 public:
  explicit PoolHistory(absl::Duration window = absl::Minutes(1)) : window_(window) {}

  // Adds a snapshot; drops samples older than the window before its time.
  void Add(const sessionbroker::v1::PoolStatus& status);

  struct Sample {
    absl::Time time;
    double in_use = 0;
    double waiters = 0;
    // Statements per second since the previous sample (0 for the first).
    double statements_per_second = 0;
    // checkout_wait.p99 and statement_duration.p99, in milliseconds.
    double wait_p99_ms = 0;
    double statement_p99_ms = 0;
  };
  const std::deque<Sample>& samples() const { return samples_; }

 private:
  absl::Duration window_;
  std::deque<Sample> samples_;
  int64_t last_statements_ = -1;
};

// The newest `width` values as a sparkline of block characters
// ("▁▂▃▄▅▆▇█"), scaled from 0 to the largest value shown (all "▁" when
// every value is 0); shorter when there are fewer values. `unicode` false:
// the ASCII levels "_.:-=+*#" (terminals without a UTF-8 locale).
std::string Sparkline(const std::vector<double>& values, int width, bool unicode = true);

// "1.2ms", "850us", "3.4s", "2m05s", "1h02m".
std::string HumanDuration(absl::Duration d);

// The watch screen for a terminal of `width` x `height`: a title line, the
// connections by state with a bar against the bound, waiters and the oldest
// wait, percentiles of checkout wait and statement duration, sessions,
// sparklines of the last minute, and the busiest clients (as many as fit).
// At most `height` lines; each cut to `width` columns.
std::vector<ScreenLine> RenderWatchScreen(const sessionbroker::v1::PoolStatus& status,
                                          const PoolHistory& history, const std::string& target,
                                          int width, int height, bool unicode = true);

// One line per snapshot when stdout is not a terminal:
// "2026-12-02T15:40:01Z open=5/15 in_use=3 idle=2 opening=0 overflow=0
//  waiters=0 oldest_wait=0s wait_p99=1.2ms stmt_p99=3.0ms sessions=4
//  in_tx=1 db=up"
std::string PlainWatchLine(const sessionbroker::v1::PoolStatus& status);

// The human form of `brokerctl status`: every section of the snapshot.
std::string FormatStatus(const sessionbroker::v1::PoolStatus& status);

// The snapshot as JSON (protobuf's JSON mapping, field names as in the
// proto), one object followed by "\n".
std::string StatusJson(const sessionbroker::v1::PoolStatus& status);

}  // namespace brokerctl

#endif  // SESSIONBROKER_CLIENT_CPP_BROKERCTL_WATCH_VIEW_H_
