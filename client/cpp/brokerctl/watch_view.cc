#include "client/cpp/brokerctl/watch_view.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cpp/brokerctl/format.h"
#include "google/protobuf/util/json_util.h"

namespace brokerctl {
namespace {

using sessionbroker::v1::DurationSummary;
using sessionbroker::v1::PoolStatus;

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

double Millis(const google::protobuf::Duration& d) {
  return absl::ToDoubleMilliseconds(FromProto(d));
}

std::string Percentiles(const DurationSummary& s) {
  if (s.count() == 0)
    return absl::StrCat("none in the last ", HumanDuration(FromProto(s.window())));
  return absl::StrFormat("p50 %-7s p90 %-7s p99 %-7s max %-7s (%d in %s)",
                         HumanDuration(FromProto(s.p50())), HumanDuration(FromProto(s.p90())),
                         HumanDuration(FromProto(s.p99())), HumanDuration(FromProto(s.max())),
                         s.count(), HumanDuration(FromProto(s.window())));
}

// "[####====......]": in use, idle, free up to the bound.
std::string Bar(const PoolStatus& s, int width) {
  const int max = std::max(1, s.config().max_connections());
  auto cells = [&](int n) { return static_cast<int>(static_cast<int64_t>(n) * width / max); };
  const int in_use = std::min(width, cells(s.connections().in_use()));
  const int idle = std::min(width - in_use, cells(s.connections().idle()));
  const int pool = std::min(width, cells(s.config().pool_size()));
  std::string bar = "[";
  for (int i = 0; i < width; ++i) {
    if (i < in_use) {
      bar += '#';
    } else if (i < in_use + idle) {
      bar += '=';
    } else {
      bar += i < pool ? '.' : ' ';
    }
  }
  return bar + "]";
}

std::string TimeText(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", t, absl::UTCTimeZone());
}

// The limit on open connections in force: PoolConfig's bound until the
// database refuses connects for lack of slots (53300), then the connections
// that worked (PoolStatus.connection_limit; a broker without that field
// reports only the configured bound).
int EffectiveLimit(const PoolStatus& s) {
  if (s.has_connection_limit() && s.connection_limit().effective() > 0) {
    return s.connection_limit().effective();
  }
  return s.config().max_connections();
}

// "effective limit 15 (pool 5 + overflow 10)"; with the pipelined engine on,
// whose hot connections are carved out of DB_POOL_SIZE, "effective limit 13
// (pool 3 + overflow 10, + 2 pipelined)".
std::string LimitText(const PoolStatus& s) {
  const auto& cfg = s.config();
  std::string text = absl::StrFormat("effective limit %d (pool %d + overflow %d", EffectiveLimit(s),
                                     cfg.pool_size(), cfg.max_overflow());
  if (s.pipeline().enabled() && s.pipeline().connections() > 0) {
    absl::StrAppend(&text, ", + ", s.pipeline().connections(), " pipelined");
  }
  return text + ")";
}

// While the database holds the pool below its bound: why, and when the pool
// probes for another connection. Empty otherwise.
std::string LimitedText(const PoolStatus& s) {
  const auto& limit = s.connection_limit();
  if (!limit.limited()) return "";
  std::string out =
      absl::StrCat("LIMITED by the database (53300), ", limit.refusals(), " refusals");
  if (limit.has_next_probe()) {
    const absl::Duration in = FromProto(limit.next_probe()) - FromProto(s.time());
    absl::StrAppend(&out, ", next probe in ", HumanDuration(std::max(in, absl::ZeroDuration())));
  }
  return out;
}

}  // namespace

void PoolHistory::Add(const PoolStatus& status) {
  Sample s;
  s.time = FromProto(status.time());
  s.in_use = status.connections().in_use();
  s.waiters = status.waiters().count();
  s.wait_p99_ms = Millis(status.checkout_wait().p99());
  s.statement_p99_ms = Millis(status.statement_duration().p99());
  const int64_t statements = status.counters().statements();
  if (!samples_.empty() && last_statements_ >= 0 && statements >= last_statements_) {
    const double dt = absl::ToDoubleSeconds(s.time - samples_.back().time);
    if (dt > 0) s.statements_per_second = (statements - last_statements_) / dt;
  }
  last_statements_ = statements;
  samples_.push_back(s);
  while (!samples_.empty() && samples_.front().time < s.time - window_) samples_.pop_front();
}

std::string Sparkline(const std::vector<double>& values, int width, bool unicode) {
  static const char* const kUnicode[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  static const char* const kAscii[] = {"_", ".", ":", "-", "=", "+", "*", "#"};
  const char* const* kBlocks = unicode ? kUnicode : kAscii;
  if (width <= 0 || values.empty()) return "";
  const size_t n = std::min(values.size(), static_cast<size_t>(width));
  const double top = *std::max_element(values.end() - n, values.end());
  std::string out;
  for (size_t i = values.size() - n; i < values.size(); ++i) {
    int level = 0;
    if (top > 0 && values[i] > 0) {
      level = std::clamp(static_cast<int>(values[i] / top * 7.0 + 0.5), 1, 7);
    }
    out += kBlocks[level];
  }
  return out;
}

std::string HumanDuration(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  if (d == absl::ZeroDuration()) return "0s";
  if (d < absl::Milliseconds(1)) return absl::StrCat(absl::ToInt64Microseconds(d), "us");
  if (d < absl::Seconds(1)) return absl::StrFormat("%.1fms", absl::ToDoubleMilliseconds(d));
  if (d < absl::Minutes(1)) return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(d));
  const int64_t s = absl::ToInt64Seconds(d);
  if (d < absl::Hours(1)) return absl::StrFormat("%dm%02ds", s / 60, s % 60);
  if (d < absl::Hours(24)) return absl::StrFormat("%dh%02dm", s / 3600, (s % 3600) / 60);
  return absl::StrFormat("%dd%02dh", s / 86400, (s % 86400) / 3600);
}

std::vector<ScreenLine> RenderWatchScreen(const PoolStatus& s, const PoolHistory& history,
                                          const std::string& target, int width, int height,
                                          bool unicode) {
  std::vector<ScreenLine> lines;
  auto add = [&](std::string text, bool bold = false) { lines.push_back({std::move(text), bold}); };
  const auto& c = s.connections();
  const auto& cfg = s.config();
  add(absl::StrCat("brokerctl watch  ", target, "  broker ", s.broker().version(), "  up ",
                   HumanDuration(FromProto(s.broker().uptime())), "  ",
                   TimeText(FromProto(s.time())), "  (q quits)"),
      true);
  std::string db = s.database().reachable() ? "database reachable" : "DATABASE UNREACHABLE";
  if (!s.database().reachable() && !s.database().last_error().empty()) {
    absl::StrAppend(&db, ": ", s.database().last_error());
  }
  if (s.broker().draining()) absl::StrAppend(&db, "   DRAINING");
  absl::StrAppend(&db, "   watchers ", s.broker().watchers());
  add(db);
  add("");
  add("Connections   (# in use  = idle  . free in the pool)", true);
  add(absl::StrFormat("  in use %-4d idle %-4d opening %-3d open %d of %d   overflow in use %d",
                      c.in_use(), c.idle(), c.opening(), c.open(), cfg.max_connections(),
                      c.overflow_in_use()));
  add(absl::StrCat("  ", Bar(s, std::clamp(width - 50, 10, 60)), "  ", LimitText(s)));
  if (const std::string limited = LimitedText(s); !limited.empty())
    add(absl::StrCat("  ", limited));
  add(absl::StrFormat("  waiters %d  oldest wait %s  (max waiters %d, pool timeout %s)",
                      s.waiters().count(), HumanDuration(FromProto(s.waiters().oldest_wait())),
                      cfg.max_waiters(), HumanDuration(FromProto(cfg.timeout()))));
  add("");
  add(absl::StrCat("Checkout wait   ", Percentiles(s.checkout_wait())));
  add(absl::StrCat("Statement time  ", Percentiles(s.statement_duration())));
  const auto& ss = s.sessions();
  add(
      absl::StrFormat("Sessions        open %d  in transaction %d  held by stream %d  queued "
                      "calls %d",
                      ss.open(), ss.in_transaction(), ss.held_by_stream(), ss.queued_calls()));
  if (s.pipeline().enabled()) {
    const auto& pl = s.pipeline();
    add(absl::StrFormat(
        "Pipeline        %d/%d connections up on %d loops  queued %d  in flight "
        "%d (depth %d)  %.1f stmts/flush  calls %d  errors %d",
        pl.connections_up(), pl.connections(), pl.loops(), pl.queued(), pl.in_flight(),
        pl.max_depth(), pl.recent_statements_per_flush(), pl.calls(), pl.errors()));
  }
  const auto& k = s.counters();
  add(
      absl::StrFormat("Since start     checkouts %d  timeouts %d  rejected %d  statements %d  "
                      "errors %d  killed idle tx %d",
                      k.checkouts(), k.checkout_timeouts(), k.waiter_rejections(), k.statements(),
                      k.statement_errors(), ss.transactions_killed_idle()));
  add("");
  add("Last minute", true);
  const int spark_width = std::clamp(width - 36, 0, 60);
  auto spark = [&](const char* label, double PoolHistory::Sample::*field, int decimals) {
    std::vector<double> values;
    double top = 0;
    for (const auto& sample : history.samples()) {
      values.push_back(sample.*field);
      top = std::max(top, sample.*field);
    }
    const double now = values.empty() ? 0 : values.back();
    std::string spark_text = Sparkline(values, spark_width, unicode);
    spark_text += std::string(spark_width - DisplayWidth(spark_text), ' ');
    add(absl::StrCat("  ", absl::StrFormat("%-14s", label), spark_text, " ",
                     absl::StrFormat("%.*f (max %.*f)", decimals, now, decimals, top)));
  };
  spark("in use", &PoolHistory::Sample::in_use, 0);
  spark("waiters", &PoolHistory::Sample::waiters, 0);
  spark("statements/s", &PoolHistory::Sample::statements_per_second, 1);
  spark("wait p99 ms", &PoolHistory::Sample::wait_p99_ms, 1);
  spark("stmt p99 ms", &PoolHistory::Sample::statement_p99_ms, 1);
  add("");
  add(absl::StrFormat("%-26s  in use  waiting  sessions",
                      absl::StrFormat("Clients (%d of %d)", s.clients_size(), s.clients_total())),
      true);
  const int room = height - static_cast<int>(lines.size());
  for (int i = 0; i < s.clients_size(); ++i) {
    const auto& cl = s.clients(i);
    if (i == room - 1 && s.clients_size() > room) {
      add(absl::StrFormat("  ... %d more (make the window taller)", s.clients_size() - i));
      break;
    }
    std::string name = cl.client_id().empty() ? "(no client id)" : cl.client_id();
    name = TruncateToWidth(name, 24);
    name += std::string(24 - DisplayWidth(name), ' ');
    add(absl::StrFormat("  %s %7d %8d %9d", name, cl.in_use(), cl.waiting(), cl.sessions()));
  }
  if (static_cast<int>(lines.size()) > height) lines.resize(std::max(0, height));
  for (ScreenLine& line : lines) line.text = TruncateToWidth(line.text, width);
  return lines;
}

std::string PlainWatchLine(const PoolStatus& s) {
  const auto& c = s.connections();
  return absl::StrFormat(
      "%s open=%d/%d in_use=%d idle=%d opening=%d overflow=%d waiters=%d oldest_wait=%s "
      "wait_p99=%s stmt_p99=%s sessions=%d in_tx=%d db=%s%s",
      TimeText(FromProto(s.time())), c.open(), EffectiveLimit(s), c.in_use(), c.idle(), c.opening(),
      c.overflow_in_use(), s.waiters().count(), HumanDuration(FromProto(s.waiters().oldest_wait())),
      HumanDuration(FromProto(s.checkout_wait().p99())),
      HumanDuration(FromProto(s.statement_duration().p99())), s.sessions().open(),
      s.sessions().in_transaction(), s.database().reachable() ? "up" : "down",
      s.broker().draining() ? " draining" : "");
}

std::string FormatStatus(const PoolStatus& s) {
  const auto& c = s.connections();
  const auto& cfg = s.config();
  const auto& k = s.counters();
  const auto& ss = s.sessions();
  std::string out;
  absl::StrAppend(&out, "broker      ", s.broker().version(), ", up ",
                  HumanDuration(FromProto(s.broker().uptime())),
                  s.broker().draining() ? ", DRAINING" : "", ", ", s.broker().watchers(),
                  " watchers; snapshot at ", TimeText(FromProto(s.time())), "\n");
  absl::StrAppend(&out, "database    ", s.database().reachable() ? "reachable" : "UNREACHABLE");
  if (!s.database().last_error().empty()) {
    absl::StrAppend(&out, " (last error at ", TimeText(FromProto(s.database().last_error_time())),
                    ": ", s.database().last_error(), ")");
  }
  out += "\n";
  absl::StrAppend(
      &out, absl::StrFormat("pool        size %d%s, overflow %d, limit %d, timeout %s, recycle %s, "
                            "pre-ping %s, max waiters %d\n",
                            cfg.pool_size(),
                            s.pipeline().enabled() && s.pipeline().connections() > 0
                                ? absl::StrCat(" (+ ", s.pipeline().connections(), " pipelined)")
                                : std::string(),
                            cfg.max_overflow(), cfg.max_connections(),
                            HumanDuration(FromProto(cfg.timeout())),
                            cfg.has_recycle() ? HumanDuration(FromProto(cfg.recycle())) : "off",
                            cfg.pre_ping() ? "on" : "off", cfg.max_waiters()));
  absl::StrAppend(&out, "limit       ", LimitText(s));
  if (const std::string limited = LimitedText(s); !limited.empty()) {
    absl::StrAppend(&out, "; ", limited);
  }
  out += "\n";
  if (const auto& limit = s.connection_limit(); limit.server_max_connections() > 0) {
    absl::StrAppend(
        &out,
        absl::StrFormat(
            "budget      %d x %d replicas against the server's max_connections %d - "
            "reserved %d%s\n",
            cfg.max_connections() + (s.pipeline().enabled() ? s.pipeline().connections() : 0),
            limit.expected_replicas(), limit.server_max_connections(),
            limit.server_superuser_reserved_connections() + limit.server_reserved_connections(),
            limit.budget_exceeded() ? ": EXCEEDED (see docs/operations.md)" : ""));
  }
  absl::StrAppend(
      &out, absl::StrFormat("connections open %d (in use %d, idle %d, opening %d), "
                            "overflow in use %d\n",
                            c.open(), c.in_use(), c.idle(), c.opening(), c.overflow_in_use()));
  absl::StrAppend(&out, absl::StrFormat("waiters     %d, oldest %s\n", s.waiters().count(),
                                        HumanDuration(FromProto(s.waiters().oldest_wait()))));
  absl::StrAppend(&out, "checkout    ", Percentiles(s.checkout_wait()), "\n");
  absl::StrAppend(&out, "statements  ", Percentiles(s.statement_duration()), "\n");
  absl::StrAppend(&out, absl::StrFormat("sessions    open %d, in transaction %d, held by stream "
                                        "%d, queued calls %d\n",
                                        ss.open(), ss.in_transaction(), ss.held_by_stream(),
                                        ss.queued_calls()));
  absl::StrAppend(
      &out, absl::StrFormat("counters    connects %d (failed %d), checkouts %d, "
                            "timeouts %d, rejected %d,\n            statements %d (errors %d), "
                            "recycled %d, invalidated %d\n",
                            k.connects(), k.connect_failures(), k.checkouts(),
                            k.checkout_timeouts(), k.waiter_rejections(), k.statements(),
                            k.statement_errors(), k.recycled(), k.invalidated()));
  if (s.pipeline().enabled()) {
    const auto& pl = s.pipeline();
    absl::StrAppend(
        &out,
        absl::StrFormat("pipeline    %d of %d connections up on %d loops, depth %d; queued %d, "
                        "in flight %d; %.1f statements per flush (recent)\n            calls %d "
                        "(errors %d), statements %d, retries %d, cancels %d, connection "
                        "failures %d, recycled %d\n",
                        pl.connections_up(), pl.connections(), pl.loops(), pl.max_depth(),
                        pl.queued(), pl.in_flight(), pl.recent_statements_per_flush(), pl.calls(),
                        pl.errors(), pl.statements(), pl.retries(), pl.cancels_sent(),
                        pl.connection_failures(), pl.recycles()));
  } else {
    absl::StrAppend(
        &out,
        "pipeline    off (BROKER_PIPELINE_CONNECTIONS=0, or auto with DB_POOL_SIZE under 4)\n");
  }
  absl::StrAppend(
      &out, absl::StrFormat("tx killed   idle %d, max duration %d, session end %d\n",
                            ss.transactions_killed_idle(), ss.transactions_killed_max_duration(),
                            ss.transactions_killed_session_end()));
  absl::StrAppend(&out, absl::StrFormat("clients     %d with a share", s.clients_total()));
  for (const auto& cl : s.clients()) {
    absl::StrAppend(&out,
                    absl::StrFormat("\n  %-24s in use %d, waiting %d, sessions %d",
                                    cl.client_id().empty() ? "(no client id)" : cl.client_id(),
                                    cl.in_use(), cl.waiting(), cl.sessions()));
  }
  out += "\n";
  return out;
}

std::string StatusJson(const PoolStatus& s) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(s, &json, options);
  return json + "\n";
}

}  // namespace brokerctl
