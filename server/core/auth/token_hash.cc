#include "server/core/auth/token_hash.h"

#include <sodium.h>

#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/core/auth/sodium_init.h"

namespace sessionbroker::core {

absl::StatusOr<std::string> HashToken(absl::string_view token) {
  if (token.size() < kMinTokenBytes || token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a token must be ", kMinTokenBytes, " to ", kMaxTokenBytes, " bytes; this one is ",
        token.size(), " (generate one, e.g. openssl rand -hex 32)"));
  }
  for (char c : token) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F) {
      return absl::InvalidArgumentError(
          "a token must not hold spaces or control characters: it travels in the authorization "
          "header as `Bearer <token>`");
    }
  }
  EnsureSodium();
  char out[crypto_pwhash_STRBYTES];
  if (crypto_pwhash_str(out, token.data(), token.size(), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0) {
    return absl::ResourceExhaustedError("hashing the token ran out of memory");
  }
  return std::string(out);
}

bool LooksLikeTokenHash(absl::string_view text) {
  return (absl::StartsWith(text, "$argon2id$") || absl::StartsWith(text, "$argon2i$")) &&
         text.size() < crypto_pwhash_STRBYTES;
}

bool TokenMatches(const std::string& hash, absl::string_view token) {
  if (!LooksLikeTokenHash(hash)) return false;
  EnsureSodium();
  return crypto_pwhash_str_verify(hash.c_str(), token.data(), token.size()) == 0;
}

}  // namespace sessionbroker::core
