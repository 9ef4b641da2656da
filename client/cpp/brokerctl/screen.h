// The terminal of `brokerctl watch`: a thin wrapper over ncurses, kept in a
// file of its own because <curses.h> defines macros (OK, timeout, erase, ...)
// that break gRPC and protobuf headers. One Screen at a time, used from one
// thread.
#ifndef SESSIONBROKER_CLIENT_CPP_BROKERCTL_SCREEN_H_
#define SESSIONBROKER_CLIENT_CPP_BROKERCTL_SCREEN_H_

#include <memory>
#include <string>
#include <vector>

namespace brokerctl {

struct ScreenLine {
  std::string text;  // UTF-8; at most the screen's width in display columns
  bool bold = false;
};

class Screen {
 public:
  // Takes over the terminal on stdin/stdout: no echo, keys one at a time,
  // no cursor. Null when ncurses cannot drive it (TERM unset or unknown).
  static std::unique_ptr<Screen> Open();
  // Gives the terminal back as it was.
  ~Screen();
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  // True when the locale's character set is UTF-8 (sparklines in blocks).
  static bool LocaleIsUtf8();

  enum Key { kNone = -1, kResize = -2 };
  // Waits at most `timeout_ms` for a key: its character, kResize when the
  // terminal changed size, kNone when none came.
  int ReadKey(int timeout_ms);
  int rows() const;
  int cols() const;
  // Replaces the screen: `lines` from the top, `footer` (if any) in reverse
  // video on the last row.
  void Draw(const std::vector<ScreenLine>& lines, const std::string& footer);

 private:
  Screen() = default;
  void* term_ = nullptr;  // the ncurses SCREEN, opaque here
};

}  // namespace brokerctl

#endif  // SESSIONBROKER_CLIENT_CPP_BROKERCTL_SCREEN_H_
