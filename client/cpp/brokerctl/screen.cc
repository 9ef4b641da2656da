#include "client/cpp/brokerctl/screen.h"

#include <curses.h>
#include <langinfo.h>

#include <clocale>
#include <cstring>

namespace brokerctl {

std::unique_ptr<Screen> Screen::Open() {
  std::setlocale(LC_ALL, "");
  // newterm, unlike initscr, returns null instead of exiting on a terminal
  // it does not know.
  SCREEN* term = newterm(nullptr, stdout, stdin);
  if (term == nullptr) return nullptr;
  std::unique_ptr<Screen> screen(new Screen());
  screen->term_ = term;
  cbreak();
  noecho();
  keypad(stdscr, TRUE);
  curs_set(0);
  return screen;
}

Screen::~Screen() {
  endwin();
  delscreen(static_cast<SCREEN*>(term_));
}

bool Screen::LocaleIsUtf8() {
  std::setlocale(LC_ALL, "");
  return std::strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
}

int Screen::ReadKey(int timeout_ms) {
  timeout(timeout_ms);
  const int ch = getch();
  if (ch == KEY_RESIZE) return kResize;
  if (ch == ERR) return kNone;
  return ch;
}

int Screen::rows() const { return getmaxy(stdscr); }
int Screen::cols() const { return getmaxx(stdscr); }

void Screen::Draw(const std::vector<ScreenLine>& lines, const std::string& footer) {
  erase();
  const int height = rows();
  for (size_t i = 0; i < lines.size() && static_cast<int>(i) < height; ++i) {
    if (lines[i].bold) attron(A_BOLD);
    mvaddstr(static_cast<int>(i), 0, lines[i].text.c_str());
    if (lines[i].bold) attroff(A_BOLD);
  }
  if (!footer.empty() && height > 0) {
    attron(A_REVERSE);
    mvaddnstr(height - 1, 0, footer.c_str(), cols());
    attroff(A_REVERSE);
  }
  refresh();
}

}  // namespace brokerctl
