// SB_DCHECK(condition): an invariant the code relies on, checked in debug
// and sanitizer builds and free in release builds (Envoy's ASSERT policy).
//
// Checks are on when NDEBUG is not defined, or when SB_INVARIANTS is defined
// to a non-zero value (CMake does so for -DSB_SANITIZE=... and
// -DSB_INVARIANTS=ON: the TSan build is optimised, and its threads are where
// a broken invariant would show). SB_INVARIANTS_ON says which, for code that
// only exists to check (a CheckInvariantsLocked() body, a death test).
//
// A failed check logs the condition, file and line at critical level and
// aborts: a broken invariant means the state is already wrong, and carrying
// on would hand out a connection twice or lose one. With checks off the
// condition is not evaluated (it must have no side effects) but still
// compiles, so it cannot rot. For conditions that must hold in production
// too, return an error instead; this is not a substitute for handling input.
//
// Thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_BASE_INVARIANT_H_
#define SESSIONBROKER_SERVER_CORE_BASE_INVARIANT_H_

#if !defined(NDEBUG) || (defined(SB_INVARIANTS) && SB_INVARIANTS)
#define SB_INVARIANTS_ON 1
#else
#define SB_INVARIANTS_ON 0
#endif

namespace sessionbroker::core {

// Logs "invariant failed: <condition> at <file>:<line>" and aborts.
[[noreturn]] void InvariantFailed(const char* condition, const char* file, int line);

}  // namespace sessionbroker::core

#if SB_INVARIANTS_ON
#define SB_DCHECK(condition)                                                  \
  do {                                                                        \
    if (!(condition)) {                                                       \
      ::sessionbroker::core::InvariantFailed(#condition, __FILE__, __LINE__); \
    }                                                                         \
  } while (false)
#else
// Unevaluated: sizeof only type-checks its operand.
#define SB_DCHECK(condition)    \
  do {                          \
    (void)sizeof(!(condition)); \
  } while (false)
#endif

#endif  // SESSIONBROKER_SERVER_CORE_BASE_INVARIANT_H_
