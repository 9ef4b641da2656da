#include "server/storage/conninfo.h"

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::storage {
namespace {

struct OptionsDeleter {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};
struct ErrorDeleter {
  void operator()(char* message) const { PQfreemem(message); }
};

// Shown first, in this order, by ToString(): where the connection goes and as
// whom, the way people usually write it.
constexpr absl::string_view kAddressKeywords[] = {"host", "hostaddr", "port", "dbname", "user"};

bool IsAddressKeyword(absl::string_view keyword) {
  for (const absl::string_view k : kAddressKeywords) {
    if (k == keyword) return true;
  }
  return false;
}

// libpq's key=value syntax: a value that is empty or holds whitespace, a quote
// or a backslash goes in single quotes, with ' and \ escaped by a backslash.
void AppendValue(absl::string_view value, std::string* out) {
  bool quote = value.empty();
  for (const char c : value) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == '\'' || c == '\\') quote = true;
  }
  if (!quote) {
    out->append(value.data(), value.size());
    return;
  }
  out->push_back('\'');
  for (const char c : value) {
    if (c == '\'' || c == '\\') out->push_back('\\');
    out->push_back(c);
  }
  out->push_back('\'');
}

// libpq's parse errors quote the offending part of the input, which may be a
// password ("invalid percent-encoded token: "Pa%zzword"") or the whole URL
// with its password. Each quoted excerpt that comes from the input is
// replaced by "...", unless it stands where an option name does (right
// before an '=') or is one punctuation character (libpq's "=", "]"...).
std::string ElideInputExcerpts(absl::string_view message, absl::string_view input) {
  std::string out;
  size_t i = 0;
  while (i < message.size()) {
    const size_t open = message.find('"', i);
    const size_t close = open == absl::string_view::npos ? open : message.find('"', open + 1);
    if (close == absl::string_view::npos) break;
    const absl::string_view excerpt = message.substr(open + 1, close - open - 1);
    out.append(message.data() + i, open + 1 - i);
    const bool punctuation =
        excerpt.size() == 1 && !absl::ascii_isalnum(static_cast<unsigned char>(excerpt[0]));
    const bool from_input = !excerpt.empty() && absl::StrContains(input, excerpt);
    if (!from_input || punctuation || absl::StrContains(input, absl::StrCat(excerpt, "="))) {
      out.append(excerpt.data(), excerpt.size());
    } else {
      out.append("...");
    }
    out.push_back('"');
    i = close + 1;
  }
  out.append(message.data() + i, message.size() - i);
  return out;
}

}  // namespace

bool IsConninfoUrl(absl::string_view text) {
  // The two prefixes libpq recognises (uri_prefix_length in fe-connect.c).
  return absl::StartsWith(text, "postgresql://") || absl::StartsWith(text, "postgres://");
}

absl::StatusOr<Conninfo> Conninfo::Parse(absl::string_view text) {
  const std::string copy(text);  // libpq wants a NUL-terminated string
  char* raw_error = nullptr;
  std::unique_ptr<PQconninfoOption, OptionsDeleter> parsed(
      PQconninfoParse(copy.c_str(), &raw_error));
  const std::unique_ptr<char, ErrorDeleter> error(raw_error);
  if (parsed == nullptr) {
    if (error == nullptr) {
      return absl::ResourceExhaustedError("out of memory while parsing the connection string");
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "not a valid PostgreSQL connection string (a postgresql:// URL or libpq key=value "
        "pairs): ",
        absl::StripAsciiWhitespace(ElideInputExcerpts(error.get(), text))));
  }
  std::vector<Option> options;
  for (const PQconninfoOption* o = parsed.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    options.push_back(Option{o->keyword, o->val, o->dispchar != nullptr && o->dispchar[0] == '*'});
  }
  return Conninfo(std::move(options), IsConninfoUrl(text));
}

bool Conninfo::IsSet(absl::string_view keyword) const {
  for (const Option& option : options_) {
    if (option.keyword == keyword) return true;
  }
  return false;
}

std::string Conninfo::Get(absl::string_view keyword) const {
  for (const Option& option : options_) {
    if (option.keyword == keyword) return option.value;
  }
  return std::string();
}

std::vector<std::string> Conninfo::SecretValues() const {
  std::vector<std::string> out;
  for (const Option& option : options_) {
    if (option.secret && !option.value.empty()) out.push_back(option.value);
  }
  return out;
}

std::string Conninfo::ToString() const { return Render(/*redact=*/false); }

std::string Conninfo::Redacted() const { return Render(/*redact=*/true); }

std::string Conninfo::Render(bool redact) const {
  std::string out;
  auto append = [&](const Option& option) {
    if (!out.empty()) out.push_back(' ');
    absl::StrAppend(&out, option.keyword, "=");
    if (redact && option.secret) {
      out.append("***");
    } else if (redact && option.keyword == "host" && absl::StrContains(option.value, '@')) {
      // No host name holds an '@': what precedes it was meant as a password.
      AppendValue(absl::StrCat("***", option.value.substr(option.value.rfind('@'))), &out);
    } else {
      AppendValue(option.value, &out);
    }
  };
  for (const absl::string_view keyword : kAddressKeywords) {
    for (const Option& option : options_) {
      if (option.keyword == keyword) append(option);
    }
  }
  for (const Option& option : options_) {
    if (!IsAddressKeyword(option.keyword)) append(option);
  }
  return out;
}

std::string RedactConninfo(absl::string_view text) {
  absl::StatusOr<Conninfo> parsed = Conninfo::Parse(text);
  if (!parsed.ok()) return "(a connection string that libpq cannot parse)";
  return parsed->Redacted();
}

}  // namespace sessionbroker::storage
