#include "server/core/sql/sql_classifier.h"

#include <climits>
#include <cstddef>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"

namespace sessionbroker::core {
namespace {

// Character classes, as in PostgreSQL's lexer (src/backend/parser/scan.l).
// Bytes >= 0x80 count as letters so that multibyte (e.g. UTF-8) names lex as
// one identifier, whatever the encoding.

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsIdentStart(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_' || u >= 0x80;
}

// `$` may continue an identifier (`a$1` is one name, not `a` and `$1`).
bool IsIdentCont(char c) { return IsIdentStart(c) || IsDigit(c) || c == '$'; }

// A dollar-quote tag is like an identifier but cannot contain `$`.
bool IsDollarTagCont(char c) { return IsIdentStart(c) || IsDigit(c); }

// Names whose use may outlive the statement: functions with session-level
// effects, and pg_settings, whose UPDATE rule runs a session-level SET.
constexpr absl::string_view kSessionStateFunctions[] = {
    "pg_settings",
    "set_config",
    "setseed",
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
    "dblink_connect",
    "dblink_connect_u",
    "lo_open",
};

// Statements that are transaction control whatever follows their first word.
// (PREPARE TRANSACTION needs a second look; see Classifier::OnToken.)
constexpr absl::string_view kTransactionControlStatements[] = {
    "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE",
};

// Statements that change session state whatever follows their first word.
// (SET and PREPARE need a second look; see Classifier::OnToken.) DO and CALL
// run code the lexer cannot see into, so they count as state-changing: a
// needless reset is cheap, a leak is not.
constexpr absl::string_view kSessionStateStatements[] = {
    "RESET", "DEALLOCATE", "LISTEN", "UNLISTEN", "DECLARE", "DISCARD", "LOAD", "DO", "CALL",
};

template <size_t N>
bool IsOneOf(absl::string_view word, const absl::string_view (&list)[N]) {
  for (absl::string_view candidate : list) {
    if (absl::EqualsIgnoreCase(word, candidate)) return true;
  }
  return false;
}

// Whether `name` (an identifier, quoted or not) names the pg_temp schema
// (pg_temp, or a backend's own pg_temp_N) or a session-state function.
// Quoted names are compared case-insensitively too: that can only add
// false positives.
bool IsSessionStateName(absl::string_view name) {
  return absl::StartsWithIgnoreCase(name, "pg_temp") || IsOneOf(name, kSessionStateFunctions);
}

enum class TokenKind {
  kWord,              // unquoted identifier or keyword
  kQuotedIdentifier,  // "..." or U&"..."
  kString,            // any string literal, including dollar-quoted ones
  kPlaceholder,       // $n
  kNumber,            // a run of digits
  kOther,             // any other single byte: ( ) . , + ...
};

// One pass over the bytes. The scanning loop (Run) splits the text into
// tokens, skipping whitespace and comments; OnToken applies the rules that
// look at a statement's first words, plus the rules that apply to any word.
class Classifier {
 public:
  explicit Classifier(absl::string_view sql) : sql_(sql) {}

  SqlInfo Run() {
    const size_t n = sql_.size();
    size_t i = 0;
    while (i < n) {
      const char c = sql_[i];
      const char next = i + 1 < n ? sql_[i + 1] : '\0';
      if (IsSpace(c)) {
        ++i;
      } else if (c == '-' && next == '-') {
        i = SkipLineComment(i + 2);
      } else if (c == '/' && next == '*') {
        i = SkipBlockComment(i + 2);
      } else if (c == ';') {
        EndStatement();
        ++i;
      } else if (c == '\'') {
        i = ScanQuoted(i + 1, '\'', /*backslash_escapes=*/false, TokenKind::kString);
      } else if (c == '"') {
        i = ScanQuoted(i + 1, '"', /*backslash_escapes=*/false, TokenKind::kQuotedIdentifier);
      } else if (IsIdentStart(c)) {
        i = ScanWordOrPrefixedLiteral(i);
      } else if (c == '$') {
        i = ScanDollar(i);
      } else if (IsDigit(c)) {
        // Only the digits: letters after them start a new word (PostgreSQL
        // before 15 lexes `1temp` as `1 temp`), which keeps keyword checks
        // conservative. `1.5`, `1e5` and `0x1F` lex as several tokens, which
        // no rule cares about.
        size_t end = i + 1;
        while (end < n && IsDigit(sql_[end])) ++end;
        OnToken(TokenKind::kNumber, sql_.substr(i, end - i));
        i = end;
      } else {
        OnToken(TokenKind::kOther, sql_.substr(i, 1));
        ++i;
      }
    }
    EndStatement();
    return std::move(info_);
  }

 private:
  // What the current statement's next token decides.
  enum class Expect {
    kFirstWord,    // Nothing but `(` so far.
    kSetScope,     // After SET: LOCAL / TRANSACTION / CONSTRAINTS, or a name.
    kSetScopeDot,  // After SET LOCAL (etc.): `.` means that word was the
                   // start of a qualified variable name (`SET local.x = 1`).
    kPrepareName,  // After PREPARE: TRANSACTION, or a statement name.
    kPrepareGid,   // After PREPARE TRANSACTION: a string literal (the gid),
                   // or else TRANSACTION was the name (`PREPARE transaction
                   // AS ...`).
    // Savepoint statements (the first statement only):
    kReleaseName,          // After RELEASE: SAVEPOINT, or the name.
    kRollbackTo,           // After ROLLBACK: WORK / TRANSACTION, or TO.
    kRollbackToAfterWork,  // After ROLLBACK WORK: TO.
    kRollbackToName,       // After ROLLBACK ... TO: SAVEPOINT, or the name.
    kSavepointName,        // The name, next.
    kSavepointEnd,         // After the name: nothing more may follow.
    kRest,                 // Only the statement-independent rules apply.
  };

  // Each Skip/Scan function takes the position of the first byte it should
  // look at and returns the position just past what it consumed, or
  // sql_.size() if the construct is unterminated: the rest of the text is
  // then inside it and PostgreSQL reports the syntax error.

  // `--` up to the end of the line.
  size_t SkipLineComment(size_t i) const {
    while (i < sql_.size() && sql_[i] != '\n' && sql_[i] != '\r') ++i;
    return i;
  }

  // `/* ... */`, which nests in PostgreSQL (unlike the SQL standard).
  size_t SkipBlockComment(size_t i) const {
    const size_t n = sql_.size();
    int depth = 1;
    while (i < n) {
      const char next = i + 1 < n ? sql_[i + 1] : '\0';
      if (sql_[i] == '/' && next == '*') {
        ++depth;
        i += 2;
      } else if (sql_[i] == '*' && next == '/') {
        i += 2;
        if (--depth == 0) return i;
      } else {
        ++i;
      }
    }
    return n;
  }

  // A quoted string or identifier whose body starts at `i`; a doubled quote
  // is an escaped quote. With `backslash_escapes` (E'...'), a backslash
  // escapes the next byte. Standard strings, N'', B'', X'' and U&'' all lex
  // alike here: a B'' or X'' body cannot contain a quote, and U&'' escapes
  // are `\XXXX` with no way to escape a quote.
  size_t ScanQuoted(size_t i, char quote, bool backslash_escapes, TokenKind kind) {
    const size_t n = sql_.size();
    const size_t body_start = i;
    while (i < n) {
      if (backslash_escapes && sql_[i] == '\\') {
        i += 2;
      } else if (sql_[i] == quote) {
        if (i + 1 < n && sql_[i + 1] == quote) {
          i += 2;
        } else {
          OnToken(kind, sql_.substr(body_start, i - body_start));
          return i + 1;
        }
      } else {
        ++i;
      }
    }
    // `i` may be n + 1 after a trailing backslash.
    OnToken(kind, sql_.substr(body_start));
    return n;
  }

  // An identifier or keyword starting at `i`, unless it is the prefix of a
  // string literal (E'', B'', X'', N'', U&'') or quoted identifier (U&"").
  size_t ScanWordOrPrefixedLiteral(size_t i) {
    const size_t n = sql_.size();
    const char prefix = absl::ascii_tolower(static_cast<unsigned char>(sql_[i]));
    const char next = i + 1 < n ? sql_[i + 1] : '\0';
    if (next == '\'') {
      if (prefix == 'e') {
        return ScanQuoted(i + 2, '\'', /*backslash_escapes=*/true, TokenKind::kString);
      }
      if (prefix == 'b' || prefix == 'x' || prefix == 'n') {
        return ScanQuoted(i + 2, '\'', /*backslash_escapes=*/false, TokenKind::kString);
      }
    }
    if (prefix == 'u' && next == '&' && i + 2 < n) {
      if (sql_[i + 2] == '\'') {
        return ScanQuoted(i + 3, '\'', /*backslash_escapes=*/false, TokenKind::kString);
      }
      if (sql_[i + 2] == '"') {
        return ScanQuoted(i + 3, '"', /*backslash_escapes=*/false, TokenKind::kQuotedIdentifier);
      }
    }
    size_t end = i + 1;
    while (end < n && IsIdentCont(sql_[end])) ++end;
    OnToken(TokenKind::kWord, sql_.substr(i, end - i));
    return end;
  }

  // At a `$` that does not continue an identifier: a placeholder ($n), a
  // dollar-quoted string ($$...$$ or $tag$...$tag$), or a lone `$`.
  size_t ScanDollar(size_t i) {
    const size_t n = sql_.size();
    size_t end = i + 1;
    if (end < n && IsDigit(sql_[end])) {
      // Saturate instead of overflowing on absurd numbers.
      int number = 0;
      for (; end < n && IsDigit(sql_[end]); ++end) {
        const int digit = sql_[end] - '0';
        number = number > (INT_MAX - digit) / 10 ? INT_MAX : number * 10 + digit;
      }
      OnToken(TokenKind::kPlaceholder, sql_.substr(i, end - i));
      if (number > info_.max_placeholder) info_.max_placeholder = number;
      return end;
    }
    // A tag cannot start with a digit, so `$1$` is `$1` then `$`.
    if (end < n && IsIdentStart(sql_[end])) {
      ++end;
      while (end < n && IsDollarTagCont(sql_[end])) ++end;
    }
    if (end < n && sql_[end] == '$') {
      const absl::string_view delimiter = sql_.substr(i, end + 1 - i);
      const size_t body_start = end + 1;
      // PostgreSQL checks for the closing delimiter at every `$` of the body,
      // so the first occurrence of the delimiter ends the string.
      const size_t close = sql_.find(delimiter, body_start);
      if (close == absl::string_view::npos) {
        OnToken(TokenKind::kString, sql_.substr(body_start));
        return n;
      }
      OnToken(TokenKind::kString, sql_.substr(body_start, close - body_start));
      return close + delimiter.size();
    }
    // `$` alone or `$name` with no closing `$`: PostgreSQL returns the `$`
    // by itself and lexes what follows afresh.
    OnToken(TokenKind::kOther, sql_.substr(i, 1));
    return i + 1;
  }

  void OnToken(TokenKind kind, absl::string_view text) {
    if (!in_statement_) {
      in_statement_ = true;
      expect_ = Expect::kFirstWord;
      ++statements_;
      info_.empty = false;
      if (statements_ > 1) info_.multiple_statements = true;
    }

    const bool is_word = kind == TokenKind::kWord;
    switch (expect_) {
      case Expect::kFirstWord:
        if (kind == TokenKind::kOther && text == "(") break;
        expect_ = Expect::kRest;
        if (is_word) OnFirstWord(text);
        break;
      case Expect::kSetScope:
        if (is_word &&
            (absl::EqualsIgnoreCase(text, "LOCAL") || absl::EqualsIgnoreCase(text, "TRANSACTION") ||
             absl::EqualsIgnoreCase(text, "CONSTRAINTS"))) {
          expect_ = Expect::kSetScopeDot;
        } else {
          // SET var, SET SESSION ..., SET ROLE, SET "var", ...
          info_.changes_session_state = true;
          expect_ = Expect::kRest;
        }
        break;
      case Expect::kSetScopeDot:
        if (kind == TokenKind::kOther && text == ".") {
          info_.changes_session_state = true;
        }
        expect_ = Expect::kRest;
        break;
      case Expect::kPrepareName:
        if (is_word && absl::EqualsIgnoreCase(text, "TRANSACTION")) {
          expect_ = Expect::kPrepareGid;
        } else {
          info_.changes_session_state = true;
          expect_ = Expect::kRest;
        }
        break;
      case Expect::kPrepareGid:
        if (kind == TokenKind::kString) {
          info_.transaction_control = true;
        } else {
          info_.changes_session_state = true;
        }
        expect_ = Expect::kRest;
        break;
      case Expect::kReleaseName:
        if (is_word && absl::EqualsIgnoreCase(text, "SAVEPOINT")) {
          expect_ = Expect::kSavepointName;
        } else {
          OnSavepointName(kind, text);
        }
        break;
      case Expect::kRollbackTo:
        if (is_word &&
            (absl::EqualsIgnoreCase(text, "WORK") || absl::EqualsIgnoreCase(text, "TRANSACTION"))) {
          expect_ = Expect::kRollbackToAfterWork;
        } else if (is_word && absl::EqualsIgnoreCase(text, "TO")) {
          expect_ = Expect::kRollbackToName;
        } else {
          expect_ = Expect::kRest;
        }
        break;
      case Expect::kRollbackToAfterWork:
        expect_ =
            is_word && absl::EqualsIgnoreCase(text, "TO") ? Expect::kRollbackToName : Expect::kRest;
        break;
      case Expect::kRollbackToName:
        if (is_word && absl::EqualsIgnoreCase(text, "SAVEPOINT")) {
          expect_ = Expect::kSavepointName;
        } else {
          OnSavepointName(kind, text);
        }
        break;
      case Expect::kSavepointName:
        OnSavepointName(kind, text);
        break;
      case Expect::kSavepointEnd:
        pending_savepoint_ = SqlInfo::Savepoint::kNone;
        expect_ = Expect::kRest;
        break;
      case Expect::kRest:
        break;
    }

    // Rules that hold wherever the word appears. TEMP/TEMPORARY only as a
    // bare keyword: a quoted "temp" is an ordinary name.
    if (is_word) {
      if (in_copy_ &&
          (absl::EqualsIgnoreCase(text, "STDIN") || absl::EqualsIgnoreCase(text, "STDOUT"))) {
        info_.copy_stdio = true;
      }
      if (absl::EqualsIgnoreCase(text, "TEMP") || absl::EqualsIgnoreCase(text, "TEMPORARY") ||
          IsSessionStateName(text)) {
        info_.changes_session_state = true;
      }
    } else if (kind == TokenKind::kQuotedIdentifier) {
      if (IsSessionStateName(text)) info_.changes_session_state = true;
    }
  }

  // The first word of a statement (after any `(`).
  void OnFirstWord(absl::string_view word) {
    if (statements_ == 1) info_.first_keyword = absl::AsciiStrToUpper(word);
    in_copy_ = absl::EqualsIgnoreCase(word, "COPY");
    if (IsOneOf(word, kTransactionControlStatements)) {
      info_.transaction_control = true;
      if (statements_ == 1) {
        if (absl::EqualsIgnoreCase(word, "SAVEPOINT")) {
          pending_savepoint_ = SqlInfo::Savepoint::kSavepoint;
          expect_ = Expect::kSavepointName;
        } else if (absl::EqualsIgnoreCase(word, "RELEASE")) {
          pending_savepoint_ = SqlInfo::Savepoint::kRelease;
          expect_ = Expect::kReleaseName;
        } else if (absl::EqualsIgnoreCase(word, "ROLLBACK")) {
          pending_savepoint_ = SqlInfo::Savepoint::kRollbackTo;
          expect_ = Expect::kRollbackTo;
        }
      }
    } else if (IsOneOf(word, kSessionStateStatements)) {
      info_.changes_session_state = true;
    } else if (absl::EqualsIgnoreCase(word, "SET")) {
      expect_ = Expect::kSetScope;
    } else if (absl::EqualsIgnoreCase(word, "PREPARE")) {
      expect_ = Expect::kPrepareName;
    }
  }

  // The name of a savepoint statement (only an identifier will do).
  void OnSavepointName(TokenKind kind, absl::string_view text) {
    if (kind == TokenKind::kWord) {
      savepoint_name_ = absl::AsciiStrToLower(text);
    } else if (kind == TokenKind::kQuotedIdentifier && !text.empty()) {
      savepoint_name_ = absl::StrReplaceAll(text, {{"\"\"", "\""}});
    } else {
      pending_savepoint_ = SqlInfo::Savepoint::kNone;
      expect_ = Expect::kRest;
      return;
    }
    // PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes, never
    // splitting a multibyte character.
    constexpr size_t kMaxNameBytes = 63;
    if (savepoint_name_.size() > kMaxNameBytes) {
      size_t cut = kMaxNameBytes;
      while (cut > 0 && (static_cast<unsigned char>(savepoint_name_[cut]) & 0xC0) == 0x80) --cut;
      savepoint_name_.resize(cut);
    }
    expect_ = Expect::kSavepointEnd;
  }

  // At `;` or the end of the text.
  void EndStatement() {
    if (!in_statement_) return;
    if (statements_ == 1) {
      if (expect_ == Expect::kSavepointEnd && pending_savepoint_ != SqlInfo::Savepoint::kNone) {
        info_.savepoint = pending_savepoint_;
        info_.savepoint_name = std::move(savepoint_name_);
      }
    } else {
      // Several statements: none of them is a savepoint statement alone.
      info_.savepoint = SqlInfo::Savepoint::kNone;
      info_.savepoint_name.clear();
    }
    in_statement_ = false;
    in_copy_ = false;
    // A statement cut short after SET or PREPARE is a syntax error; flag it
    // anyway rather than reason about what it might have been.
    if (expect_ == Expect::kSetScope || expect_ == Expect::kPrepareName ||
        expect_ == Expect::kPrepareGid) {
      info_.changes_session_state = true;
    }
  }

  const absl::string_view sql_;
  SqlInfo info_;
  int statements_ = 0;  // Non-empty statements seen so far.
  bool in_statement_ = false;
  bool in_copy_ = false;  // the current statement starts with COPY
  Expect expect_ = Expect::kFirstWord;
  // The first statement's savepoint command while it is being read.
  SqlInfo::Savepoint pending_savepoint_ = SqlInfo::Savepoint::kNone;
  std::string savepoint_name_;
};

}  // namespace

SqlInfo ClassifySql(absl::string_view sql) { return Classifier(sql).Run(); }

}  // namespace sessionbroker::core
