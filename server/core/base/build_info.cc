#include "server/core/base/build_info.h"

// SB_VERSION is set for this file alone by server/CMakeLists.txt, so a new
// version recompiles one file.
#ifndef SB_VERSION
#error "SB_VERSION must be defined by the build (CMake project VERSION)"
#endif

namespace sessionbroker::core {

std::string BrokerVersion() { return SB_VERSION; }

}  // namespace sessionbroker::core
