// libsodium must be initialised once before use (it picks implementations and
// seeds its random generator); EnsureSodium does so on first call and aborts
// if it cannot (no usable random source: nothing in auth could be trusted).
// Thread-safe. Internal to the auth room.
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_SODIUM_INIT_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_SODIUM_INIT_H_

#include <sodium.h>

#include <cstdio>
#include <cstdlib>

namespace sessionbroker::core {

inline void EnsureSodium() {
  static const bool initialised = [] {
    if (sodium_init() < 0) {
      std::fputs("session-broker: libsodium could not initialise\n", stderr);
      std::abort();
    }
    return true;
  }();
  (void)initialised;
}

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_SODIUM_INIT_H_
