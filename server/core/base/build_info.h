// What build this is: the project version from CMake's project(VERSION ...),
// reported in PoolStatus, /metrics (sessionbroker_build_info) and the start-up
// log. Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_BUILD_INFO_H_
#define SESSIONBROKER_SERVER_CORE_BASE_BUILD_INFO_H_

#include <string>

namespace sessionbroker::core {

// e.g. "0.1.0".
std::string BrokerVersion();

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_BASE_BUILD_INFO_H_
