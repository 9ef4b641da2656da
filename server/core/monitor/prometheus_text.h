// Renders a PoolSnapshot in the Prometheus text exposition format (0.0.4),
// with conventional names: sessionbroker_* gauges, *_total counters, and
// histograms (_bucket{le=...}, _sum, _count) for checkout waits and statement
// durations. docs/operations.md lists every metric. Pure functions;
// thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_MONITOR_PROMETHEUS_TEXT_H_
#define SESSIONBROKER_SERVER_CORE_MONITOR_PROMETHEUS_TEXT_H_

#include <string>

#include "absl/strings/string_view.h"
#include "server/core/monitor/pool_snapshot.h"

namespace sessionbroker::core {

inline constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

std::string RenderPrometheus(const PoolSnapshot& snapshot);

// A label value with \, " and newlines escaped as the format requires.
std::string EscapeLabelValue(absl::string_view value);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_MONITOR_PROMETHEUS_TEXT_H_
