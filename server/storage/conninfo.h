// A libpq connection string (a postgresql:// URL or key=value pairs), parsed
// by libpq itself (PQconninfoParse), so that the broker reads it exactly as
// the connection will: percent-encoding, quoting, IPv6 hosts, host lists and
// query parameters all follow libpq, and there is no second parser to drift
// from it. Used to learn which options a DATABASE_URL sets (the adapter adds
// its own defaults only for the others), to build a connection string back,
// and to redact secrets for logs and messages.
//
// Secrets are the options libpq itself marks as such (dispchar "*" in its
// option table, the one PQconndefaults() reports): password and sslpassword
// in libpq 15.
//
// Conninfo is a value (copyable, no libpq state kept); thread-compatible. The
// free functions are thread-safe.
#ifndef SESSIONBROKER_SERVER_STORAGE_CONNINFO_H_
#define SESSIONBROKER_SERVER_STORAGE_CONNINFO_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::storage {

class Conninfo final {
 public:
  // One option the string sets, as libpq decoded it (percent-decoded,
  // unquoted). In libpq's option order, not the string's.
  struct Option {
    std::string keyword;
    std::string value;
    bool secret = false;  // libpq displays it as a password field
  };

  // INVALID_ARGUMENT with libpq's own explanation when `text` does not parse
  // (an unknown option, a malformed URL, an unterminated quote). Whatever
  // libpq quotes from `text` in that explanation is left out of the message,
  // since it may be (part of) a password. The empty string parses: it sets
  // nothing (libpq then uses its defaults and the PG* variables).
  static absl::StatusOr<Conninfo> Parse(absl::string_view text);

  // Whether the string sets `keyword` (an empty value counts as set).
  bool IsSet(absl::string_view keyword) const;

  // The value the string gives `keyword`; empty if unset.
  std::string Get(absl::string_view keyword) const;

  // Whether it was written as a URL (postgresql:// or postgres://).
  bool is_url() const { return is_url_; }

  const std::vector<Option>& options() const { return options_; }

  // The values of the secret options that are set (for scrubbing them from
  // messages that libpq or the server might echo them in).
  std::vector<std::string> SecretValues() const;

  // key=value pairs that libpq parses back into the same options; values are
  // quoted where they must be ('...', with \' and \\). The address (host,
  // hostaddr, port, dbname, user) comes first, then the rest in libpq's order.
  // Holds the secrets: never for logs.
  std::string ToString() const;

  // ToString() with each secret's value shown as ***. A host that contains
  // '@' (a URL whose password held an unencoded '@', which libpq reads as
  // part of the host) shows only what follows its last '@'.
  std::string Redacted() const;

 private:
  Conninfo(std::vector<Option> options, bool is_url)
      : options_(std::move(options)), is_url_(is_url) {}

  std::string Render(bool redact) const;

  std::vector<Option> options_;
  bool is_url_ = false;
};

// Whether libpq reads `text` as a URL rather than key=value pairs.
bool IsConninfoUrl(absl::string_view text);

// Conninfo::Parse(text)->Redacted(), or a placeholder that shows nothing of
// `text` when it does not parse. For logs.
std::string RedactConninfo(absl::string_view text);

}  // namespace sessionbroker::storage

#endif  // SESSIONBROKER_SERVER_STORAGE_CONNINFO_H_
