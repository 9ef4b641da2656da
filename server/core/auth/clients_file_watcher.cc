#include "server/core/auth/clients_file_watcher.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace sessionbroker::core {
namespace {

absl::StatusOr<ClientsFileWatcher::FileStamp> StampOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read the clients file ", path, " (BROKER_CLIENTS_FILE): ", std::strerror(errno)));
  }
  ClientsFileWatcher::FileStamp stamp;
  stamp.device = st.st_dev;
  stamp.inode = st.st_ino;
  stamp.size = st.st_size;
  stamp.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1'000'000'000 + st.st_mtim.tv_nsec;
  return stamp;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ClientDirectory>> ClientsFileWatcher::Load(
    const std::string& path, FileStamp* stamp) {
  // Stamp first: a change while reading is then seen by the next poll.
  absl::StatusOr<FileStamp> before = StampOf(path);
  if (!before.ok()) return before.status();
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read the clients file ", path, " (BROKER_CLIENTS_FILE): ", std::strerror(errno)));
  }
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> directory =
      ClientDirectory::Parse(text.str());
  if (!directory.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", directory.status().message()));
  }
  if (stamp != nullptr) *stamp = *before;
  return directory;
}

ClientsFileWatcher::ClientsFileWatcher(std::string path, FileStamp loaded,
                                       Authenticator& authenticator, TimerQueue& timers,
                                       const Clock& clock, absl::Duration interval)
    : path_(std::move(path)),
      authenticator_(authenticator),
      clock_(clock),
      interval_(interval),
      loaded_(loaded),
      timer_(timers, [this](RearmingTimer::Token token) { OnTimer(token); }) {}

ClientsFileWatcher::~ClientsFileWatcher() { Stop(); }

void ClientsFileWatcher::Start() { timer_.ArmBy(clock_.Now() + interval_); }

void ClientsFileWatcher::Stop() {
  {
    MutexLock lock(&mu_);
    stopped_ = true;
  }
  timer_.Stop();
}

void ClientsFileWatcher::OnTimer(RearmingTimer::Token token) {
  {
    MutexLock lock(&mu_);
    if (stopped_ || !timer_.Fired(token)) return;
  }
  CheckNow();
  timer_.ArmBy(clock_.Now() + interval_);
}

void ClientsFileWatcher::SetReloadHook(std::function<void()> on_reload) {
  on_reload_ = std::move(on_reload);
}

bool ClientsFileWatcher::CheckNow() {
  const bool installed = ReloadIfChanged();
  // Outside mu_: the hook may take other locks (the pool's).
  if (installed && on_reload_) on_reload_();
  return installed;
}

bool ClientsFileWatcher::ReloadIfChanged() {
  absl::StatusOr<FileStamp> now = StampOf(path_);
  {
    MutexLock lock(&mu_);
    if (now.ok() && (*now == loaded_ || *now == failed_)) return false;
  }
  FileStamp stamp;
  absl::StatusOr<std::shared_ptr<const ClientDirectory>> directory =
      now.ok() ? Load(path_, &stamp) : now.status();
  MutexLock lock(&mu_);
  if (!directory.ok()) {
    const FileStamp failed = now.ok() ? *now : FileStamp{};
    if (!(failed == failed_) || failed_reloads_ == 0) {
      spdlog::error("clients file: reload failed, keeping the previous clients: {}",
                    std::string(directory.status().message()));
      ++failed_reloads_;
    }
    failed_ = failed;
    return false;
  }
  authenticator_.Replace(*std::move(directory));
  loaded_ = stamp;
  failed_ = FileStamp{};
  ++reloads_;
  spdlog::info("clients file: reloaded {} ({} clients)", path_,
               authenticator_.directory()->clients().size());
  return true;
}

int64_t ClientsFileWatcher::reloads() const {
  MutexLock lock(&mu_);
  return reloads_;
}

int64_t ClientsFileWatcher::failed_reloads() const {
  MutexLock lock(&mu_);
  return failed_reloads_;
}

}  // namespace sessionbroker::core
