#include "server/core/base/clock.h"

namespace sessionbroker::core {

Clock& RealClock::Get() {
  static RealClock* const clock = new RealClock();
  return *clock;
}

}  // namespace sessionbroker::core
