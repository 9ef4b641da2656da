// ClientsFileWatcher: keeps an Authenticator's directory in step with the
// clients file on disk. Every `interval` it compares the file's identity
// (device, inode, size, modification time) with what it last loaded; on a
// change it parses the file again and, if the new one is valid, replaces the
// directory (cached verifications are dropped). A broken file (unreadable,
// invalid) keeps the previous directory and logs why once per change, so a
// half-written edit never locks every client out. Renames over the file
// (editors, Kubernetes' ConfigMap symlink swap) count as changes because the
// inode changes.
//
// Load() is also what the broker calls at start, where a broken file stops
// it. Thread-safe; the poll runs on the TimerQueue's thread (a stat per
// tick, a read and parse on change: no network, nothing slow). The
// TimerQueue must outlive the watcher.
#ifndef SESSIONBROKER_SERVER_CORE_AUTH_CLIENTS_FILE_WATCHER_H_
#define SESSIONBROKER_SERVER_CORE_AUTH_CLIENTS_FILE_WATCHER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/auth/authenticator.h"
#include "server/core/auth/client_directory.h"
#include "server/core/base/clock.h"
#include "server/core/base/mutex.h"
#include "server/core/base/rearming_timer.h"
#include "server/core/base/timer_queue.h"

namespace sessionbroker::core {

class ClientsFileWatcher final {
 public:
  // What identifies one version of the file.
  struct FileStamp {
    uint64_t device = 0;
    uint64_t inode = 0;
    int64_t size = -1;
    int64_t mtime_ns = 0;
    bool operator==(const FileStamp& o) const {
      return device == o.device && inode == o.inode && size == o.size && mtime_ns == o.mtime_ns;
    }
  };

  // Reads and parses `path`; INVALID_ARGUMENT naming the path and the
  // problem. `stamp`, if given, receives the version read.
  static absl::StatusOr<std::shared_ptr<const ClientDirectory>> Load(const std::string& path,
                                                                     FileStamp* stamp = nullptr);

  // `loaded`: the stamp of the version `authenticator` holds now.
  ClientsFileWatcher(std::string path, FileStamp loaded, Authenticator& authenticator,
                     TimerQueue& timers, const Clock& clock, absl::Duration interval);
  ~ClientsFileWatcher();  // Stop()
  ClientsFileWatcher(const ClientsFileWatcher&) = delete;
  ClientsFileWatcher& operator=(const ClientsFileWatcher&) = delete;

  // Called after each new directory is installed (e.g. to make the pool
  // re-read its quotas). Set before Start(); runs on the timer's thread.
  void SetReloadHook(std::function<void()> on_reload);
  void Start();
  void Stop();
  // One poll, now: true if a new directory was installed (the hook ran).
  bool CheckNow();
  int64_t reloads() const;
  int64_t failed_reloads() const;

 private:
  void OnTimer(RearmingTimer::Token token);
  bool ReloadIfChanged();

  const std::string path_;
  Authenticator& authenticator_;
  const Clock& clock_;
  const absl::Duration interval_;
  std::function<void()> on_reload_;
  mutable Mutex mu_;
  FileStamp loaded_ ABSL_GUARDED_BY(mu_);
  // The last version that failed to load: logged once, not every tick.
  FileStamp failed_ ABSL_GUARDED_BY(mu_);
  int64_t reloads_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t failed_reloads_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  // Last, so that it stops before what its callback touches goes away.
  RearmingTimer timer_;
};

}  // namespace sessionbroker::core

#endif  // SESSIONBROKER_SERVER_CORE_AUTH_CLIENTS_FILE_WATCHER_H_
