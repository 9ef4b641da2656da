#include "server/storage/pq_pipeline_loop.h"

#include <libpq-fe.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/storage/pipeline_fair_queue.h"
#include "server/storage/pq_codec.h"
#include "server/storage/pq_error.h"
#include "server/storage/sql_error.h"

namespace sessionbroker::storage {
namespace {

// libpq gives an asynchronous connect no timeout of its own.
constexpr absl::Duration kConnectTimeout = absl::Seconds(10);

// The message PostgreSQL gives a statement stopped by a cancel request (as
// opposed to statement_timeout's, which is not retried).
constexpr char kCancelledByRequest[] = "due to user request";
// When a cancelled statement that still runs gets its cancel request again
// (ResendCancels): after the first gap, then at doubling gaps up to the last.
constexpr absl::Duration kFirstCancelResend = absl::Seconds(1);
constexpr absl::Duration kMaxCancelResend = absl::Seconds(8);

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
using CancelHandle = std::shared_ptr<PGcancel>;

void DiscardNotice(void*, const char*) {}

// std::mutex with Clang's thread-safety annotations. Not absl::Mutex:
// Debian's Abseil is not built with ThreadSanitizer, which would then not see
// the synchronization (core/base/mutex.h says the same; storage cannot
// include core).
class ABSL_LOCKABLE StdMutex final {
 public:
  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Waits on `cv`; the caller holds the lock (it is held again on return).
  void Wait(std::condition_variable& cv) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    cv.wait(lock);
    lock.release();
  }

 private:
  std::mutex mu_;
};

class ABSL_SCOPED_LOCKABLE StdLock final {
 public:
  explicit StdLock(StdMutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~StdLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  StdLock(const StdLock&) = delete;
  StdLock& operator=(const StdLock&) = delete;

 private:
  StdMutex* mu_;
};

absl::Status Lost(const absl::Status& cause) {
  return Recode(cause, absl::StatusCode::kUnavailable,
                "lost the pipelined connection to PostgreSQL (server restart, terminated session "
                "or network failure); a write that was running may or may not have been applied: ");
}

std::string ConnError(PGconn* pg) {
  const char* message = pg == nullptr ? nullptr : PQerrorMessage(pg);
  return ParseErrorText(message == nullptr ? "" : message).message;
}

bool IsTcp(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return false;
  return address.ss_family == AF_INET || address.ss_family == AF_INET6;
}

void SetCork(int fd, bool on) {
  const int value = on ? 1 : 0;
  // Best effort: without it each Sync is its own write.
  (void)setsockopt(fd, IPPROTO_TCP, TCP_CORK, &value, sizeof(value));
}

}  // namespace

class PqPipelineLoop::Impl {
 public:
  // Runs `options.connections` of the engine's `total_connections`, the
  // first of them being the engine's connection `first_connection` (which
  // spreads recycling over the whole hot set).
  Impl(Options options, int first_connection, int total_connections)
      : options_(std::move(options)),
        first_connection_(first_connection),
        total_connections_(std::max(total_connections, 1)),
        pending_(options_.fair_queuing) {
    if (!options_.now) options_.now = [] { return absl::Now(); };
    if (!options_.backoff) {
      options_.backoff = [](int failures) {
        return std::min(absl::Milliseconds(100) * (1 << std::min(failures - 1, 6)),
                        absl::Seconds(5));
      };
    }
    conns_.resize(static_cast<size_t>(std::max(options_.connections, 0)));
    {
      // What Stats() says before the loop's first turn publishes.
      StdLock lock(&mu_);
      stats_.loops = 1;
      stats_.connections = static_cast<int>(conns_.size());
      stats_.max_depth = options_.limits.max_depth;
    }
    event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    loop_ = std::thread([this] { Run(); });
    canceller_ = std::thread([this] { RunCanceller(); });
  }

  ~Impl() {
    {
      StdLock lock(&mu_);
      stop_ = true;
    }
    Wake();
    loop_.join();
    {
      StdLock lock(&cancel_mu_);
      cancel_stop_ = true;
    }
    cancel_cv_.notify_all();
    canceller_.join();
    close(event_fd_);
  }

  uint64_t Submit(PipelineCall call, PipelineDone done) {
    auto entry = std::make_unique<Call>();
    absl::StatusOr<PqParams> params = EncodeParams(call.statement.params);
    if (params.ok()) {
      entry->key = PreparedStatementKey(call.statement.sql, params->types);
      entry->params = *std::move(params);
    } else {
      entry->early_error = params.status();
    }
    entry->call = std::move(call);
    entry->done = std::move(done);
    return Enqueue(std::move(entry));
  }

  uint64_t SubmitBatch(PipelineBatch batch, PipelineBatchDone done) {
    auto entry = std::make_unique<Call>();
    entry->call.max_result_bytes = batch.max_result_bytes;
    entry->batch_writes = batch.writes;
    entry->call.deadline = batch.deadline;
    entry->call.client_id = std::move(batch.client_id);
    entry->call.weight = batch.weight;
    const size_t n = batch.statements.size();
    if (n == 0) entry->early_error = absl::InvalidArgumentError("a batch needs a statement");
    entry->batch.reserve(n);
    for (size_t k = 0; k < n && !entry->early_error.has_value(); ++k) {
      BatchPart part;
      absl::StatusOr<PqParams> params = EncodeParams(batch.statements[k].params);
      if (!params.ok()) {
        entry->early_error = ForStatement(params.status(), k, n);
        break;
      }
      part.key = PreparedStatementKey(batch.statements[k].sql, params->types);
      part.params = *std::move(params);
      part.statement = std::move(batch.statements[k]);
      entry->batch.push_back(std::move(part));
    }
    entry->is_batch = true;
    entry->batch_done = std::move(done);
    return Enqueue(std::move(entry));
  }

  void Cancel(uint64_t id, absl::Status why) {
    {
      StdLock lock(&mu_);
      cancels_.emplace_back(id, std::move(why));
    }
    Wake();
  }

  PipelineStats Stats() const {
    StdLock lock(&mu_);
    return stats_;
  }

  std::vector<int> BackendPids() const {
    StdLock lock(&mu_);
    return pids_;
  }

  int connections() const { return static_cast<int>(conns_.size()); }

  // Calls submitted and not answered yet (how Submit picks a loop).
  int64_t Open() const { return open_.load(std::memory_order_relaxed); }

 private:
  struct Call;
  // A completed result waiting for the names of its columns' types (a
  // batch's: all of its results, in `results` and `shapes`).
  struct Parked {
    std::unique_ptr<Call> call;
    PgResult result;
    ResultShape shape;
    std::vector<PgResult> results;
    std::vector<ResultShape> shapes;
  };
  // One statement of a batch.
  struct BatchPart {
    Statement statement;
    PqParams params;
    std::string key;  // PreparedStatementKey
  };
  struct Call {
    uint64_t id = 0;
    PipelineCall call;
    PqParams params;
    std::string key;  // PreparedStatementKey
    PipelineDone done;
    std::optional<absl::Status> early_error;  // parameters that cannot be sent
    // A batch (SubmitBatch): its statements, sent under one Sync, answered
    // through batch_done; `call` then holds only the cap and the deadline.
    bool is_batch = false;
    bool batch_writes = false;  // PipelineBatch::writes
    std::vector<BatchPart> batch;
    PipelineBatchDone batch_done;
    bool answered = false;
    bool cancel_wanted = false;  // a cancel request goes out once it heads its connection
    bool cancel_sent = false;
    // While it still heads its connection after a cancel request, another
    // goes out at this time (ResendCancels), each gap twice the last.
    absl::Time cancel_resend_at = absl::InfiniteFuture();
    absl::Duration cancel_resend_gap = absl::ZeroDuration();
    int retries = 0;
    // The loop's own catalog lookup: the results it names.
    std::vector<uint32_t> lookup_oids;
    std::vector<Parked> parked;
  };
  // How a batch's results are read: what each query sent yields, in order.
  struct BatchRead {
    struct Query {
      size_t statement = 0;
      bool prepare = false;
    };
    std::vector<Query> queries;
    std::vector<std::string> names;  // per statement: the prepared statement run, or ""
    std::vector<PgResult> results;   // per statement
    size_t failed = 0;               // the statement whose error is Segment::error
  };
  // One statement sent on a connection: [Parse,] Bind/Execute, Sync. A
  // batch's: each statement's [Parse,] Bind/Execute, then one Sync (`batch`).
  struct Segment {
    std::unique_ptr<Call> call;
    bool prepares = false;
    std::string name;     // the prepared statement run; "" for unnamed
    int deallocates = 0;  // DEALLOCATEs of stale statements sent first
    int index = 0;        // which of its queries' results are being read
    bool got_result = false;
    absl::Time sent;
    std::optional<absl::Status> error;
    PgResult result;
    std::unique_ptr<BatchRead> batch;
  };
  enum class State { kDown, kConnecting, kSettingUp, kReady };
  struct Conn {
    PgConn pg;
    State state = State::kDown;
    PostgresPollingStatusType polling = PGRES_POLLING_WRITING;
    absl::Time retry_at = absl::InfinitePast();
    absl::Time connect_deadline = absl::InfiniteFuture();
    int failures = 0;
    absl::Time recycle_at = absl::InfiniteFuture();
    bool connect_failed = false;  // the last failure was a connect attempt's
    std::deque<Segment> in_flight;
    absl::flat_hash_map<std::string, std::string> prepared;  // key -> name
    // Prepared names that went stale: deallocated ahead of the next
    // statement sent, in its segment (libpq 15 has no PQsendClosePrepared).
    std::vector<std::string> stale;
    uint64_t names = 0;
    CancelHandle cancel;
    int pid = 0;
    bool tcp = false;
    bool wrote = false;        // in this dispatch round
    int round_statements = 0;  // written in this dispatch round
    bool want_write = false;   // libpq holds unflushed output
  };
  struct TypeEntry {
    std::string name;
    uint32_t element_oid = 0;
  };

  // Hands `entry` to the loop; returns its id.
  uint64_t Enqueue(std::unique_ptr<Call> entry) {
    uint64_t id;
    open_.fetch_add(1, std::memory_order_relaxed);
    {
      StdLock lock(&mu_);
      id = ++last_id_;
      entry->id = id;
      submissions_.push_back(std::move(entry));
    }
    Wake();
    return id;
  }

  void Wake() {
    const uint64_t one = 1;
    (void)!write(event_fd_, &one, sizeof(one));
  }

  // ---- the loop ----

  void Run() {
    std::vector<pollfd> fds;
    std::vector<size_t> owners;  // fds[k + 1] belongs to conns_[owners[k]]
    std::vector<std::unique_ptr<Call>> submissions;
    std::vector<std::pair<uint64_t, absl::Status>> cancels;
    for (;;) {
      const absl::Time now = options_.now();
      fds.clear();
      owners.clear();
      fds.push_back(pollfd{event_fd_, POLLIN, 0});
      absl::Time wake = absl::InfiniteFuture();
      for (size_t i = 0; i < conns_.size(); ++i) {
        Conn& conn = conns_[i];
        if (conn.state == State::kDown) {
          wake = std::min(wake, conn.retry_at);
          continue;
        }
        short events = POLLIN;
        if (conn.state == State::kConnecting) {
          events = conn.polling == PGRES_POLLING_READING ? POLLIN : POLLOUT;
          wake = std::min(wake, conn.connect_deadline);
        } else {
          if (conn.want_write) events |= POLLOUT;
          if (conn.state == State::kReady) wake = std::min(wake, conn.recycle_at);
        }
        fds.push_back(pollfd{PQsocket(conn.pg.get()), events, 0});
        owners.push_back(i);
      }
      wake = std::min(wake, NextDeadline());
      int timeout_ms = 1000;
      if (wake != absl::InfiniteFuture()) {
        timeout_ms = static_cast<int>(std::clamp<int64_t>(
            absl::ToInt64Milliseconds(absl::Ceil(wake - now, absl::Milliseconds(1))), 0, 1000));
      }
      poll(fds.data(), fds.size(), timeout_ms);
      // What this turn answers goes out together: a stream's write for its
      // results is started once, when the turn ends (CompletionRound).
      CompletionRound round;
      if (fds[0].revents != 0) {
        uint64_t count;
        (void)!read(event_fd_, &count, sizeof(count));
      }
      bool stop;
      {
        StdLock lock(&mu_);
        submissions.swap(submissions_);
        cancels.swap(cancels_);
        stop = stop_;
      }
      for (std::unique_ptr<Call>& call : submissions) Intake(std::move(call));
      submissions.clear();
      for (auto& [id, why] : cancels) HandleCancel(id, std::move(why));
      cancels.clear();
      if (stop) break;
      for (size_t k = 0; k < owners.size(); ++k) {
        if (fds[k + 1].revents != 0) Service(conns_[owners[k]], fds[k + 1].revents);
      }
      const absl::Time after = options_.now();
      Expire(after);
      ResendCancels(after);
      Reconnect(after);
      FailPendingIfAllDown();
      Dispatch(after);
      Publish();
    }
    Shutdown();
  }

  void Intake(std::unique_ptr<Call> call) {
    if (call->early_error.has_value()) {
      Answer(*call, *call->early_error);
      return;
    }
    Call* raw = call.get();
    by_id_[raw->id] = raw;
    pending_.PushBack(raw->call.client_id, raw->call.weight, std::move(call));
  }

  absl::Time NextDeadline() const {
    absl::Time next = absl::InfiniteFuture();
    pending_.ForEach(
        [&next](const std::unique_ptr<Call>& call) { next = std::min(next, call->call.deadline); });
    for (const Conn& conn : conns_) {
      for (const Segment& seg : conn.in_flight) {
        if (!seg.call->answered) next = std::min(next, seg.call->call.deadline);
      }
      if (!conn.in_flight.empty()) {
        next = std::min(next, conn.in_flight.front().call->cancel_resend_at);
      }
    }
    return next;
  }

  // ---- answering ----

  void Answer(Call& call, absl::StatusOr<QueryResult> result) {
    if (call.answered) return;
    call.answered = true;
    ++calls_;
    if (!result.ok()) ++errors_;
    open_.fetch_sub(1, std::memory_order_relaxed);
    if (call.is_batch) {
      // Only failures come this way for a batch (AnswerBatch has its results).
      if (!call.batch_done) return;
      std::move(call.batch_done)(
          result.ok() ? absl::InternalError("a batch answered with one result") : result.status());
      return;
    }
    if (call.done) std::move(call.done)(std::move(result));
  }

  void AnswerBatch(Call& call, absl::StatusOr<std::vector<QueryResult>> results) {
    if (call.answered) return;
    call.answered = true;
    ++calls_;
    if (!results.ok()) ++errors_;
    open_.fetch_sub(1, std::memory_order_relaxed);
    if (call.is_batch && call.batch_done) std::move(call.batch_done)(std::move(results));
  }

  void Forget(const Call& call) { by_id_.erase(call.id); }

  // ---- cancels and deadlines ----

  void HandleCancel(uint64_t id, absl::Status why) {
    const auto it = by_id_.find(id);
    if (it == by_id_.end()) return;
    Call* call = it->second;
    const size_t waiting = pending_.RemoveIf([&](std::unique_ptr<Call>& p) {
      if (p.get() != call) return false;
      Answer(*call, why);
      Forget(*call);
      return true;
    });
    if (waiting > 0) return;
    Answer(*call, std::move(why));
    call->cancel_wanted = true;
    for (Conn& conn : conns_) MaybeCancelHead(conn);
  }

  void Expire(absl::Time now) {
    pending_.RemoveIf([&](std::unique_ptr<Call>& p) {
      if (p->call.deadline > now) return false;
      Answer(*p, absl::DeadlineExceededError(
                     "deadline exceeded while the statement waited for a pipelined "
                     "connection; it was not sent"));
      Forget(*p);
      return true;
    });
    for (Conn& conn : conns_) {
      for (Segment& seg : conn.in_flight) {
        if (seg.call->answered || seg.call->call.deadline > now) continue;
        Answer(*seg.call, absl::DeadlineExceededError(
                              "deadline exceeded while the statement was pipelined; it is "
                              "cancelled once it runs, and if it finished first, it was "
                              "committed"));
        seg.call->cancel_wanted = true;
      }
      MaybeCancelHead(conn);
    }
  }

  void MaybeCancelHead(Conn& conn) {
    if (conn.in_flight.empty() || conn.state != State::kReady) return;
    Call& head = *conn.in_flight.front().call;
    if (!head.cancel_wanted || head.cancel_sent || conn.cancel == nullptr) return;
    head.cancel_sent = true;
    ++cancels_sent_;
    head.cancel_resend_gap = kFirstCancelResend;
    head.cancel_resend_at = options_.now() + head.cancel_resend_gap;
    SendCancelRequest(conn);
  }

  // PostgreSQL drops a cancel request that reaches the backend while it waits
  // for the next message (the statement's own messages not yet read, under
  // load), and the statement then runs to its end, holding the queue behind
  // it. So while a cancelled statement still heads its connection, the
  // request is sent again, first after kFirstCancelResend, then at doubling
  // gaps up to kMaxCancelResend. A request that lands once the statement has
  // ended hits the next one on the connection, which fails 57014 without
  // having applied anything (its own Sync) and is sent again once (the
  // stray-cancel retry), as for any cancel.
  void ResendCancels(absl::Time now) {
    for (Conn& conn : conns_) {
      if (conn.in_flight.empty() || conn.state != State::kReady || conn.cancel == nullptr) {
        continue;
      }
      Call& head = *conn.in_flight.front().call;
      if (!head.cancel_sent || head.cancel_resend_at > now) continue;
      ++cancel_resends_;
      head.cancel_resend_gap = std::min(head.cancel_resend_gap * 2, kMaxCancelResend);
      head.cancel_resend_at = now + head.cancel_resend_gap;
      SendCancelRequest(conn);
    }
  }

  void SendCancelRequest(const Conn& conn) {
    {
      StdLock lock(&cancel_mu_);
      cancel_queue_.push_back(conn.cancel);
    }
    cancel_cv_.notify_one();
  }

  bool CancelReady() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(cancel_mu_) {
    return cancel_stop_ || !cancel_queue_.empty();
  }

  void RunCanceller() {
    for (;;) {
      CancelHandle handle;
      {
        StdLock lock(&cancel_mu_);
        while (!CancelReady()) cancel_mu_.Wait(cancel_cv_);
        if (cancel_queue_.empty()) return;
        handle = std::move(cancel_queue_.front());
        cancel_queue_.pop_front();
      }
      char error[256];
      // A failed request changes nothing: the statement runs to its end and
      // its caller has its answer already.
      (void)PQcancel(handle.get(), error, sizeof(error));
    }
  }

  // ---- connections ----

  absl::Time RecycleAt(const Conn& conn, absl::Time now) const {
    if (options_.recycle == absl::InfiniteDuration()) return absl::InfiniteFuture();
    const double index = static_cast<double>(first_connection_ + (&conn - conns_.data()));
    const double spread = 1.0 - 0.1 * index / static_cast<double>(total_connections_);
    return now + options_.recycle * spread;
  }

  void Reconnect(absl::Time now) {
    for (Conn& conn : conns_) {
      if (conn.state == State::kReady && now >= conn.recycle_at && conn.in_flight.empty()) {
        // Old enough and drained (Dispatch stopped feeding it): a fresh one.
        ++recycles_;
        conn.prepared.clear();
        conn.stale.clear();
        conn.cancel.reset();
        conn.pg.reset();
        conn.pid = 0;
        conn.want_write = false;
        conn.state = State::kDown;
        conn.retry_at = now;
      }
      if (conn.state == State::kConnecting && now >= conn.connect_deadline) {
        ConnFailed(conn, absl::UnavailableError("connecting to PostgreSQL timed out"), now);
      }
      if (conn.state != State::kDown || now < conn.retry_at) continue;
      conn.pg.reset(PQconnectStart(options_.conninfo.c_str()));
      if (conn.pg == nullptr || PQstatus(conn.pg.get()) == CONNECTION_BAD) {
        ConnFailed(conn, absl::UnavailableError(ConnError(conn.pg.get())), now);
        continue;
      }
      conn.state = State::kConnecting;
      conn.polling = PGRES_POLLING_WRITING;
      conn.connect_deadline = now + kConnectTimeout;
    }
  }

  void ConnFailed(Conn& conn, const absl::Status& why, absl::Time now) {
    ++connection_failures_;
    // A connection that was up and got lost is retried before its callers
    // are told the database is unreachable.
    conn.connect_failed = conn.state != State::kReady;
    last_connect_error_ = why;
    for (Segment& seg : conn.in_flight) {
      Answer(*seg.call, Lost(why));
      Release(std::move(seg.call), /*named=*/false);
    }
    conn.in_flight.clear();
    conn.prepared.clear();
    conn.stale.clear();
    conn.cancel.reset();
    conn.pg.reset();
    conn.pid = 0;
    conn.want_write = false;
    conn.wrote = false;
    conn.state = State::kDown;
    ++conn.failures;
    conn.retry_at = now + options_.backoff(conn.failures);
  }

  // Drops a call that is done with; a catalog lookup's parked results are
  // answered, named (`named`) or not.
  void Release(std::unique_ptr<Call> call, bool named) {
    Forget(*call);
    for (Parked& parked : call->parked) {
      if (parked.call->is_batch) {
        if (named) {
          for (ResultShape& shape : parked.shapes) NameFromCache(&shape);
        }
        AnswerBatchWithResults(*parked.call, parked.results, std::move(parked.shapes));
      } else {
        if (named) NameFromCache(&parked.shape);
        AnswerWithResult(*parked.call, parked.result.get(), std::move(parked.shape));
      }
      Forget(*parked.call);
    }
  }

  void FailPendingIfAllDown() {
    if (pending_.empty() || conns_.empty()) return;
    for (const Conn& conn : conns_) {
      if (conn.state != State::kDown || !conn.connect_failed) return;
    }
    while (!pending_.empty()) {
      std::unique_ptr<Call> call = pending_.PopFront();
      Answer(*call, Recode(last_connect_error_, absl::StatusCode::kUnavailable,
                           "no pipelined connection to PostgreSQL is up: "));
      Release(std::move(call), /*named=*/false);
    }
  }

  void Service(Conn& conn, short revents) {
    const absl::Time now = options_.now();
    PGconn* pg = conn.pg.get();
    switch (conn.state) {
      case State::kDown:
        return;
      case State::kConnecting: {
        conn.polling = PQconnectPoll(pg);
        if (conn.polling == PGRES_POLLING_FAILED) {
          ConnFailed(conn, absl::UnavailableError(ConnError(pg)), now);
        } else if (conn.polling == PGRES_POLLING_OK) {
          PQsetNoticeProcessor(pg, DiscardNotice, nullptr);
          if (PQsetnonblocking(pg, 1) != 0 || PQsendQuery(pg, kBaselineSettingsSql) != 1) {
            ConnFailed(conn, absl::UnavailableError(ConnError(pg)), now);
            return;
          }
          conn.state = State::kSettingUp;
          Flush(conn, now);
        }
        return;
      }
      case State::kSettingUp: {
        if (conn.want_write) Flush(conn, now);
        if (conn.state != State::kSettingUp) return;
        if (PQconsumeInput(pg) != 1) {
          ConnFailed(conn, absl::UnavailableError(ConnError(pg)), now);
          return;
        }
        while (!PQisBusy(pg)) {
          PgResult result(PQgetResult(pg));
          if (result == nullptr) {
            if (PQenterPipelineMode(pg) != 1) {
              ConnFailed(conn, absl::UnavailableError(ConnError(pg)), now);
              return;
            }
            conn.cancel = CancelHandle(PQgetCancel(pg), PQfreeCancel);
            conn.pid = PQbackendPID(pg);
            conn.tcp = IsTcp(PQsocket(pg));
            conn.failures = 0;
            conn.state = State::kReady;
            conn.recycle_at = RecycleAt(conn, now);
            return;
          }
          if (PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
            ConnFailed(conn, StatusOfErrorResult(result.get()), now);
            return;
          }
        }
        return;
      }
      case State::kReady:
        if ((revents & POLLOUT) != 0 || conn.want_write) Flush(conn, now);
        if (conn.state != State::kReady) return;
        if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0) {
          if (PQconsumeInput(pg) != 1) {
            ConnFailed(conn, absl::UnavailableError(ConnError(pg)), now);
            return;
          }
          ReadResults(conn, now);
        }
        return;
    }
  }

  void Flush(Conn& conn, absl::Time now) {
    const int flushed = PQflush(conn.pg.get());
    if (flushed < 0) {
      ConnFailed(conn, absl::UnavailableError(ConnError(conn.pg.get())), now);
      return;
    }
    conn.want_write = flushed == 1;
  }

  void ReadResults(Conn& conn, absl::Time now) {
    PGconn* pg = conn.pg.get();
    while (!conn.in_flight.empty() && !PQisBusy(pg)) {
      PGresult* raw = PQgetResult(pg);
      Segment& seg = conn.in_flight.front();
      if (raw == nullptr) {
        if (!seg.got_result) break;
        ++seg.index;
        seg.got_result = false;
        continue;
      }
      PgResult result(raw);
      const ExecStatusType status = PQresultStatus(raw);
      if (status == PGRES_PIPELINE_SYNC) {
        Segment done = std::move(conn.in_flight.front());
        conn.in_flight.pop_front();
        Finish(conn, std::move(done));
        MaybeCancelHead(conn);
        continue;
      }
      seg.got_result = true;
      // The DEALLOCATEs of stale copies sent ahead of the segment's own
      // queries (SendDeallocates).
      if (seg.index < seg.deallocates && status == PGRES_COMMAND_OK) continue;
      if (seg.batch != nullptr) {
        if (!ReadBatchResult(conn, seg, std::move(result), status, now)) return;
        continue;
      }
      const bool is_prepare = seg.prepares && seg.index == seg.deallocates;
      if (status == PGRES_FATAL_ERROR) {
        if (!seg.error.has_value()) seg.error = StatusOfErrorResult(raw);
        if (is_prepare) conn.prepared.erase(seg.call->key);
      } else if (status == PGRES_PIPELINE_ABORTED) {
        if (!seg.error.has_value()) seg.error = absl::InternalError("pipeline aborted");
      } else if (is_prepare) {
        // PGRES_COMMAND_OK: the statement is prepared.
      } else if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
        seg.result = std::move(result);
      } else {
        // COPY and other modes a pipeline refuses: libpq's state is unknown.
        ConnFailed(conn,
                   absl::UnimplementedError(absl::StrCat(
                       "a pipelined statement returned ", PQresStatus(status),
                       ", which the pipelined path does not support (COPY: use a session)")),
                   now);
        return;
      }
    }
    if (PQstatus(pg) == CONNECTION_BAD) {
      ConnFailed(conn, absl::UnavailableError(ConnError(pg)), now);
    }
  }

  // One result of a batch's queries (ReadResults); false when the
  // connection failed (it is down then, `seg` gone).
  bool ReadBatchResult(Conn& conn, Segment& seg, PgResult result, ExecStatusType status,
                       absl::Time now) {
    BatchRead& read = *seg.batch;
    const size_t q = static_cast<size_t>(seg.index - seg.deallocates);
    if (q >= read.queries.size()) {
      ConnFailed(conn,
                 absl::InternalError("a pipelined batch got more results than it sent queries"),
                 now);
      return false;
    }
    const BatchRead::Query query = read.queries[q];
    if (status == PGRES_FATAL_ERROR) {
      // The first error is the batch's; PostgreSQL skips the rest up to the
      // Sync (PGRES_PIPELINE_ABORTED) and rolls the transaction back.
      if (!seg.error.has_value()) {
        seg.error = StatusOfErrorResult(result.get());
        read.failed = query.statement;
      }
      if (query.prepare) conn.prepared.erase(seg.call->batch[query.statement].key);
    } else if (status == PGRES_PIPELINE_ABORTED) {
      if (!seg.error.has_value()) {
        seg.error = absl::InternalError("pipeline aborted");
        read.failed = query.statement;
      }
      // A Parse skipped after the error: the statement was not prepared.
      if (query.prepare) conn.prepared.erase(seg.call->batch[query.statement].key);
    } else if (query.prepare) {
      // PGRES_COMMAND_OK: the statement is prepared.
    } else if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
      read.results[query.statement] = std::move(result);
    } else {
      ConnFailed(conn,
                 absl::UnimplementedError(absl::StrCat(
                     "a pipelined statement returned ", PQresStatus(status),
                     ", which the pipelined path does not support (COPY: use a session)")),
                 now);
      return false;
    }
    return true;
  }

  // A prepared copy (`name`, for `key`) failed as stale: forgotten, and
  // deallocated with the next statement this connection sends, so stale
  // copies do not pile up on the server. Only the first of several calls
  // that ran the same copy does it (a second DEALLOCATE would fail the
  // statement it is sent with).
  static void ForgetStale(Conn& conn, const std::string& key, const std::string& name,
                          const std::string& sqlstate) {
    const auto it = conn.prepared.find(key);
    if (it == conn.prepared.end() || it->second != name) return;
    conn.prepared.erase(it);
    // 26000: it is gone already.
    if (sqlstate == "0A000") conn.stale.push_back(name);
  }

  // A batch whose Sync came back: all of it committed, or (an error) none.
  void FinishBatch(Conn& conn, Segment seg) {
    std::unique_ptr<Call> call = std::move(seg.call);
    BatchRead& read = *seg.batch;
    const size_t n = call->batch.size();
    if (seg.error.has_value()) {
      const absl::Status& error = *seg.error;
      const std::string sqlstate = SqlStateOf(error).value_or("");
      const bool stale =
          !read.names[read.failed].empty() && IsStalePreparedStatement(sqlstate, error.message());
      const bool stray_cancel = sqlstate == "57014" && !call->cancel_sent &&
                                absl::StrContains(error.message(), kCancelledByRequest);
      // Under one Sync nothing committed: the whole batch runs again.
      if ((stale || stray_cancel) && call->retries == 0 && !call->answered) {
        if (stale)
          ForgetStale(conn, call->batch[read.failed].key, read.names[read.failed], sqlstate);
        ++call->retries;
        ++retries_;
        pending_.PushUrgent(std::move(call));
        return;
      }
      Answer(*call, ForStatement(error, read.failed, n));
      Release(std::move(call), /*named=*/false);
      return;
    }
    if (call->answered) {
      Release(std::move(call), /*named=*/false);
      return;
    }
    std::vector<ResultShape> shapes;
    shapes.reserve(n);
    bool named = true;
    for (size_t k = 0; k < n; ++k) {
      if (read.results[k] == nullptr) {
        Answer(*call,
               ForStatement(absl::InternalError("a pipelined statement sent no result"), k, n));
        Release(std::move(call), /*named=*/false);
        return;
      }
      ResultShape shape = ShapeOf(read.results[k].get());
      if (!shape.all_named && !NameFromCache(&shape)) named = false;
      shapes.push_back(std::move(shape));
    }
    if (named) {
      AnswerBatchWithResults(*call, read.results, std::move(shapes));
      Release(std::move(call), /*named=*/false);
      return;
    }
    std::vector<uint32_t> oids;
    for (const ResultShape& shape : shapes) {
      for (const Column& column : shape.columns) {
        if (column.type_name.empty() && !types_.contains(column.type_oid) &&
            std::find(oids.begin(), oids.end(), column.type_oid) == oids.end()) {
          oids.push_back(column.type_oid);
        }
      }
    }
    Parked parked;
    parked.call = std::move(call);
    parked.results = std::move(read.results);
    parked.shapes = std::move(shapes);
    QueueLookup(std::move(oids), std::move(parked));
  }

  // The batch's results, converted and counted against its cap together (as
  // the pooled path counts a batch's), or the first one's failure.
  void AnswerBatchWithResults(Call& call, const std::vector<PgResult>& results,
                              std::vector<ResultShape> shapes) {
    if (call.answered) return;
    const size_t n = results.size();
    std::vector<QueryResult> out;
    out.reserve(n);
    size_t used = 0;
    for (size_t k = 0; k < n; ++k) {
      absl::StatusOr<QueryResult> one =
          ConvertResult(results[k].get(), std::move(shapes[k]),
                        /*in_transaction=*/true, call.call.max_result_bytes, &used);
      if (!one.ok()) {
        absl::Status error = one.status();
        if (call.batch_writes && error.code() == absl::StatusCode::kResourceExhausted) {
          // Read after the Sync: the writes are in.
          error = absl::ResourceExhaustedError(absl::StrCat(
              "result exceeds ", call.call.max_result_bytes,
              " bytes (BROKER_MAX_RESULT_BYTES); add a LIMIT or page with WHERE/ORDER BY; the "
              "batch's statements were committed (a batch of proved writes runs pipelined, "
              "whose results are read after the commit)"));
        }
        Answer(call, ForStatement(error, k, n));
        return;
      }
      out.push_back(*std::move(one));
    }
    AnswerBatch(call, std::move(out));
  }

  void Finish(Conn& conn, Segment seg) {
    if (seg.batch != nullptr) {
      FinishBatch(conn, std::move(seg));
      return;
    }
    std::unique_ptr<Call> call = std::move(seg.call);
    if (seg.error.has_value()) {
      const absl::Status& error = *seg.error;
      const std::string sqlstate = SqlStateOf(error).value_or("");
      const bool stale = !seg.name.empty() && IsStalePreparedStatement(sqlstate, error.message());
      const bool stray_cancel = sqlstate == "57014" && !call->cancel_sent &&
                                absl::StrContains(error.message(), kCancelledByRequest);
      if (stale) ForgetStale(conn, call->key, seg.name, sqlstate);
      if ((stale || stray_cancel) && call->retries == 0 && !call->answered) {
        ++call->retries;
        ++retries_;
        pending_.PushUrgent(std::move(call));
        return;
      }
      Answer(*call, error);
      Release(std::move(call), /*named=*/false);
      return;
    }
    if (!call->lookup_oids.empty()) {
      const PGresult* found = seg.result.get();
      for (int r = 0; found != nullptr && r < PQntuples(found); ++r) {
        uint32_t oid = 0;
        uint32_t element_oid = 0;
        if (absl::SimpleAtoi(PQgetvalue(found, r, 0), &oid) &&
            absl::SimpleAtoi(PQgetvalue(found, r, 2), &element_oid)) {
          types_.insert_or_assign(oid, TypeEntry{PQgetvalue(found, r, 1), element_oid});
        }
      }
      // Unknown to the server too (dropped since): remembered as nameless.
      for (const uint32_t oid : call->lookup_oids) types_.try_emplace(oid, TypeEntry{});
      Release(std::move(call), /*named=*/true);
      return;
    }
    if (call->answered || seg.result == nullptr) {
      if (!call->answered)
        Answer(*call, absl::InternalError("a pipelined statement sent no result"));
      Release(std::move(call), /*named=*/false);
      return;
    }
    ResultShape shape = ShapeOf(seg.result.get());
    if (shape.all_named || NameFromCache(&shape)) {
      AnswerWithResult(*call, seg.result.get(), std::move(shape));
      Release(std::move(call), /*named=*/false);
      return;
    }
    StartLookup(std::move(call), std::move(seg.result), std::move(shape));
  }

  bool NameFromCache(ResultShape* shape) const {
    bool complete = true;
    for (size_t c = 0; c < shape->columns.size(); ++c) {
      Column& column = shape->columns[c];
      if (!column.type_name.empty()) continue;
      const auto it = types_.find(column.type_oid);
      if (it == types_.end()) {
        complete = false;
        continue;
      }
      column.type_name = it->second.name;
      shape->element_oids[c] = it->second.element_oid;
    }
    shape->all_named = complete;
    return complete;
  }

  void AnswerWithResult(Call& call, const PGresult* result, ResultShape shape) {
    if (call.answered) return;
    size_t used = 0;
    Answer(call, ConvertResult(result, std::move(shape), /*in_transaction=*/false,
                               call.call.max_result_bytes, &used));
  }

  // Parks `call`'s result and queues a catalog lookup (ahead of everything)
  // for the types its columns need names for.
  void StartLookup(std::unique_ptr<Call> call, PgResult result, ResultShape shape) {
    std::vector<uint32_t> oids;
    for (const Column& column : shape.columns) {
      if (column.type_name.empty() && !types_.contains(column.type_oid)) {
        oids.push_back(column.type_oid);
      }
    }
    Parked parked;
    parked.call = std::move(call);
    parked.result = std::move(result);
    parked.shape = std::move(shape);
    QueueLookup(std::move(oids), std::move(parked));
  }

  // Queues (ahead of everything) a catalog lookup of `oids`, whose answer
  // names the results `parked` waits with.
  void QueueLookup(std::vector<uint32_t> oids, Parked parked) {
    auto lookup = std::make_unique<Call>();
    lookup->lookup_oids = std::move(oids);
    lookup->call.statement.sql = kTypeLookupSql;
    lookup->call.statement.cacheable = true;
    lookup->call.statement.params.push_back(
        Value::String(absl::StrCat("{", absl::StrJoin(lookup->lookup_oids, ","), "}")));
    absl::StatusOr<PqParams> params = EncodeParams(lookup->call.statement.params);
    lookup->key = PreparedStatementKey(kTypeLookupSql, params->types);
    lookup->params = *std::move(params);
    lookup->answered = true;  // nobody waits on it but the parked results
    lookup->id = ++internal_ids_ | (uint64_t{1} << 63);
    lookup->parked.push_back(std::move(parked));
    pending_.PushUrgent(std::move(lookup));
  }

  // ---- dispatch ----

  void Dispatch(absl::Time now) {
    loads_.resize(conns_.size());
    for (size_t i = 0; i < conns_.size(); ++i) {
      const Conn& conn = conns_[i];
      loads_[i].ready = conn.state == State::kReady && !conn.want_write && now < conn.recycle_at;
      loads_[i].in_flight = static_cast<int>(conn.in_flight.size());
      loads_[i].head_sent = conn.in_flight.empty() ? now : conn.in_flight.front().sent;
    }
    while (!pending_.empty()) {
      const int chosen = ChooseConnection(loads_, now, options_.limits);
      if (chosen < 0) break;
      Conn& conn = conns_[static_cast<size_t>(chosen)];
      std::unique_ptr<Call> call = pending_.PopFront();
      if (!Send(conn, call, now)) {
        // It keeps its place: first.
        pending_.PushUrgent(std::move(call));
        ConnFailed(conn, absl::UnavailableError(ConnError(conn.pg.get())), now);
        loads_[static_cast<size_t>(chosen)].ready = false;
        continue;
      }
      ConnectionLoad& load = loads_[static_cast<size_t>(chosen)];
      if (load.in_flight++ == 0) load.head_sent = now;
    }
    for (Conn& conn : conns_) {
      if (!conn.wrote || conn.state != State::kReady) continue;
      conn.wrote = false;
      ++flushes_;
      const double written = static_cast<double>(conn.round_statements);
      conn.round_statements = 0;
      // An exponential moving average over about the last 100 flushes.
      statements_per_flush_ =
          flushes_ == 1 ? written
                        : statements_per_flush_ + (written - statements_per_flush_) / 100.0;
      Flush(conn, now);
      if (conn.state == State::kReady && conn.tcp && options_.cork) {
        SetCork(PQsocket(conn.pg.get()), false);
      }
    }
  }

  bool Send(Conn& conn, std::unique_ptr<Call>& call, absl::Time now) {
    PGconn* pg = conn.pg.get();
    if (!conn.wrote) {
      conn.wrote = true;
      if (conn.tcp && options_.cork) SetCork(PQsocket(pg), true);
    }
    if (call->is_batch) return SendBatch(conn, call, now);
    Segment seg;
    bool ok = SendDeallocates(conn, seg) && SendStatement(conn, call->call.statement, call->params,
                                                          call->key, &seg.name, &seg.prepares);
    ok = ok && PQpipelineSync(pg) == 1;
    if (!ok) return false;
    ++statements_;
    ++conn.round_statements;
    seg.sent = now;
    seg.call = std::move(call);
    conn.in_flight.push_back(std::move(seg));
    return true;
  }

  // A batch's statements back to back, then one Sync: one implicit
  // transaction.
  bool SendBatch(Conn& conn, std::unique_ptr<Call>& call, absl::Time now) {
    Segment seg;
    seg.batch = std::make_unique<BatchRead>();
    BatchRead& read = *seg.batch;
    const size_t n = call->batch.size();
    read.names.resize(n);
    read.results.resize(n);
    if (!SendDeallocates(conn, seg)) return false;
    for (size_t k = 0; k < n; ++k) {
      const BatchPart& part = call->batch[k];
      bool prepares = false;
      if (!SendStatement(conn, part.statement, part.params, part.key, &read.names[k], &prepares)) {
        return false;
      }
      if (prepares) read.queries.push_back(BatchRead::Query{k, /*prepare=*/true});
      read.queries.push_back(BatchRead::Query{k, /*prepare=*/false});
    }
    if (PQpipelineSync(conn.pg.get()) != 1) return false;
    statements_ += n;
    conn.round_statements += static_cast<int>(n);
    ++batches_;
    seg.sent = now;
    seg.call = std::move(call);
    conn.in_flight.push_back(std::move(seg));
    return true;
  }

  // Queues a DEALLOCATE for each of the connection's stale prepared copies
  // (libpq 15 has no PQsendClosePrepared), ahead of `seg`'s own queries and
  // under its Sync; counted in seg.deallocates so that their results are
  // skipped. False when libpq refused.
  bool SendDeallocates(Conn& conn, Segment& seg) {
    bool ok = true;
    for (const std::string& name : conn.stale) {
      // Names are the loop's own (sb_pipe_N): nothing to quote.
      const std::string deallocate = absl::StrCat("DEALLOCATE ", name);
      ok = ok && PQsendQueryParams(conn.pg.get(), deallocate.c_str(), 0, nullptr, nullptr, nullptr,
                                   nullptr, 0) == 1;
      ++seg.deallocates;
    }
    conn.stale.clear();
    return ok;
  }

  // Queues one statement's [Parse,] Bind/Execute (no Sync): a cacheable one
  // runs as the connection's prepared copy (*name; *prepares when it is
  // prepared now, in the same round trip). False when libpq refused.
  bool SendStatement(Conn& conn, const Statement& statement, const PqParams& p,
                     const std::string& key, std::string* name, bool* prepares) {
    PGconn* pg = conn.pg.get();
    const std::string& sql = statement.sql;
    if (statement.cacheable) {
      const auto it = conn.prepared.find(key);
      if (it != conn.prepared.end()) {
        *name = it->second;
      } else if (conn.prepared.size() <
                 static_cast<size_t>(std::max(0, options_.statement_cache_size))) {
        *name = absl::StrCat("sb_pipe_", ++conn.names);
        *prepares = true;
        if (PQsendPrepare(pg, name->c_str(), sql.c_str(), p.count(), p.types.data()) != 1) {
          return false;
        }
        conn.prepared.emplace(key, *name);
      }
    }
    return name->empty()
               ? PQsendQueryParams(pg, sql.c_str(), p.count(), p.types.data(), p.values.data(),
                                   p.lengths.data(), p.formats.data(), 0) == 1
               : PQsendQueryPrepared(pg, name->c_str(), p.count(), p.values.data(),
                                     p.lengths.data(), p.formats.data(), 0) == 1;
  }

  void Publish() {
    PipelineStats stats;
    stats.loops = 1;
    stats.connections = static_cast<int>(conns_.size());
    stats.max_depth = options_.limits.max_depth;
    std::vector<int> pids;
    for (const Conn& conn : conns_) {
      if (conn.state != State::kReady) continue;
      ++stats.connections_up;
      stats.in_flight += static_cast<int64_t>(conn.in_flight.size());
      pids.push_back(conn.pid);
    }
    stats.queued = static_cast<int64_t>(pending_.size());
    stats.statements = statements_;
    stats.batches = batches_;
    stats.flushes = flushes_;
    stats.cancels_sent = cancels_sent_;
    stats.cancel_resends = cancel_resends_;
    stats.retries = retries_;
    stats.connection_failures = connection_failures_;
    stats.recycles = recycles_;
    stats.calls = calls_;
    stats.errors = errors_;
    stats.recent_statements_per_flush = statements_per_flush_;
    StdLock lock(&mu_);
    stats_ = stats;
    pids_ = std::move(pids);
  }

  void Shutdown() {
    const absl::Status why = absl::UnavailableError(
        "the broker is shutting down; the statement's outcome is unknown if it was sent");
    for (Conn& conn : conns_) {
      for (Segment& seg : conn.in_flight) {
        Answer(*seg.call, why);
        Release(std::move(seg.call), /*named=*/false);
      }
      conn.in_flight.clear();
      conn.pg.reset();
    }
    pending_.RemoveIf([&](std::unique_ptr<Call>& call) {
      Answer(*call, why);
      Release(std::move(call), /*named=*/false);
      return true;
    });
    std::vector<std::unique_ptr<Call>> late;
    {
      StdLock lock(&mu_);
      late.swap(submissions_);
      stats_.connections_up = 0;
      pids_.clear();
    }
    for (std::unique_ptr<Call>& call : late) Answer(*call, why);
  }

  Options options_;
  const int first_connection_;
  const int total_connections_;
  int event_fd_ = -1;
  std::atomic<int64_t> open_{0};

  mutable StdMutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_id_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::unique_ptr<Call>> submissions_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint64_t, absl::Status>> cancels_ ABSL_GUARDED_BY(mu_);
  PipelineStats stats_ ABSL_GUARDED_BY(mu_);
  std::vector<int> pids_ ABSL_GUARDED_BY(mu_);

  mutable StdMutex cancel_mu_;
  std::condition_variable cancel_cv_;
  bool cancel_stop_ ABSL_GUARDED_BY(cancel_mu_) = false;
  std::deque<CancelHandle> cancel_queue_ ABSL_GUARDED_BY(cancel_mu_);

  // The loop thread's own (no lock: nothing else touches them).
  std::vector<Conn> conns_;
  PipelineFairQueue<std::unique_ptr<Call>> pending_;
  absl::flat_hash_map<uint64_t, Call*> by_id_;
  absl::flat_hash_map<uint32_t, TypeEntry> types_;
  std::vector<ConnectionLoad> loads_;
  absl::Status last_connect_error_;
  uint64_t internal_ids_ = 0;
  uint64_t statements_ = 0;
  uint64_t batches_ = 0;
  uint64_t flushes_ = 0;
  uint64_t cancels_sent_ = 0;
  uint64_t cancel_resends_ = 0;
  uint64_t retries_ = 0;
  uint64_t connection_failures_ = 0;
  uint64_t recycles_ = 0;
  uint64_t calls_ = 0;
  uint64_t errors_ = 0;
  double statements_per_flush_ = 0;

  std::thread loop_;
  std::thread canceller_;
};

PqPipelineLoop::PqPipelineLoop(Options options) {
  const int connections = std::max(options.connections, 0);
  const int loops = std::clamp(options.loops, 1, std::max(connections, 1));
  int first = 0;
  for (int i = 0; i < loops; ++i) {
    Options mine = options;
    // Connection counts differ by at most one; the first loops get the extra.
    mine.connections = connections / loops + (i < connections % loops ? 1 : 0);
    loops_.push_back(std::make_unique<Impl>(std::move(mine), first, connections));
    first += loops_.back()->connections();
  }
}
PqPipelineLoop::~PqPipelineLoop() = default;

size_t PqPipelineLoop::PickLoop() {
  // The loop with the fewest calls open; ties (and a lone loop) cost no
  // shared write but a relaxed counter that spreads the scan's start, so
  // equal loads alternate. No lock: each loop's count is an atomic.
  const size_t n = loops_.size();
  size_t best = next_.fetch_add(1, std::memory_order_relaxed) % n;
  int64_t best_open = loops_[best]->Open();
  for (size_t k = 1; k < n && best_open > 0; ++k) {
    const size_t i = (best + k) % n;
    const int64_t open = loops_[i]->Open();
    if (open < best_open) {
      best = i;
      best_open = open;
    }
  }
  return best;
}

uint64_t PqPipelineLoop::Submit(PipelineCall call, PipelineDone done) {
  const size_t n = loops_.size();
  const size_t best = PickLoop();
  // The loop's own id, with the loop's index folded in for Cancel.
  return loops_[best]->Submit(std::move(call), std::move(done)) * n + best;
}

void PqPipelineLoop::Cancel(uint64_t id, absl::Status why) {
  const size_t n = loops_.size();
  loops_[id % n]->Cancel(id / n, std::move(why));
}

PipelineStats PqPipelineLoop::Stats() const {
  PipelineStats total;
  double weighted_per_flush = 0;
  uint64_t weight = 0;
  for (const std::unique_ptr<Impl>& loop : loops_) {
    const PipelineStats s = loop->Stats();
    total.connections += s.connections;
    total.connections_up += s.connections_up;
    total.in_flight += s.in_flight;
    total.queued += s.queued;
    total.statements += s.statements;
    total.batches += s.batches;
    total.flushes += s.flushes;
    total.cancels_sent += s.cancels_sent;
    total.cancel_resends += s.cancel_resends;
    total.retries += s.retries;
    total.connection_failures += s.connection_failures;
    total.recycles += s.recycles;
    total.calls += s.calls;
    total.errors += s.errors;
    total.max_depth = s.max_depth;
    // Loops that flushed more weigh more in the mean.
    weighted_per_flush += s.recent_statements_per_flush * static_cast<double>(s.flushes);
    weight += s.flushes;
  }
  total.loops = static_cast<int>(loops_.size());
  if (weight > 0)
    total.recent_statements_per_flush = weighted_per_flush / static_cast<double>(weight);
  return total;
}

std::vector<int> PqPipelineLoop::BackendPids() const {
  std::vector<int> pids;
  for (const std::unique_ptr<Impl>& loop : loops_) {
    std::vector<int> mine = loop->BackendPids();
    pids.insert(pids.end(), mine.begin(), mine.end());
  }
  return pids;
}
uint64_t PqPipelineLoop::SubmitBatch(PipelineBatch batch, PipelineBatchDone done) {
  const size_t n = loops_.size();
  const size_t best = PickLoop();
  return loops_[best]->SubmitBatch(std::move(batch), std::move(done)) * n + best;
}

}  // namespace sessionbroker::storage
