// Bearer-token hashing for the clients file: argon2id through libsodium
// (crypto_pwhash_str), a slow salted hash, so that the file never holds a
// token an attacker who reads it could replay. Pure functions; thread-safe.
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_TOKEN_HASH_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_TOKEN_HASH_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::core {

// Tokens shorter than this are refused by HashToken: a short token is
// guessable whatever the hash.
inline constexpr size_t kMinTokenBytes = 16;
// And longer ones too (metadata is bounded anyway).
inline constexpr size_t kMaxTokenBytes = 4096;

// "$argon2id$v=19$m=65536,t=2,p=1$..." with a fresh random salt and
// libsodium's interactive limits. INVALID_ARGUMENT for a token out of the
// bounds above or holding whitespace or control characters (they would not
// survive an `authorization` header intact).
absl::StatusOr<std::string> HashToken(absl::string_view token);

// Whether `text` has the form of a hash HashToken writes (an argon2i or
// argon2id PHC string), so that a plain-text token in the clients file is
// refused at load.
bool LooksLikeTokenHash(absl::string_view text);

// Whether `token` matches `hash`. Slow by design (tens of milliseconds and
// the hash's memory limit): callers cache successes.
bool TokenMatches(const std::string& hash, absl::string_view token);

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_TOKEN_HASH_H_
