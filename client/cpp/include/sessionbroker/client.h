// The C++ client of the session broker (docs/clients.md, "## C++").
//
//   sessionbroker::ClientOptions options;
//   options.target = "127.0.0.1:50051";
//   options.client_id = "billing";
//   auto client = sessionbroker::Client::Create(options);  // StatusOr
//   absl::StatusOr<Result> r = (*client)->Execute("SELECT $1::int4 + 1", {41});
//   int64_t answer = *(*r)[0].Get<int64_t>(0);
//
// Results of any size stream through Client::Stream / Session::Stream
// (row_stream.h); LISTEN/NOTIFY is Client::Listen (subscription.h).
//
// Client: one gRPC channel (keepalive pings; a service config that retries
// UNAVAILABLE only for the calls that are safe to repeat, and BeginSession
// retried by the client itself with one request_id for all attempts; a
// default deadline on every unary call), the "x-client-id" metadata on every
// call, and one KeepAlive stream (a background thread) that holds every
// Session the client has open, re-opened with backoff if it breaks, and one
// shared Pipeline stream that carries Execute/ExecuteBatch calls of many
// threads at once (ClientOptions::pipeline; unary calls as the fallback).
// Thread-safe: share one Client per broker across threads.
//
// Session: an RAII lease (BeginSession). Its destructor rolls back an open
// transaction and ends the session, never throwing. One thread at a time
// per Session (the broker runs a session's calls one at a time anyway).
// Sessions share the Client's internals, so they may outlive the Client.
//
// Errors are absl::Status with the broker's gRPC code and message; status.h
// reads the SQLSTATE, PostgreSQL's fields and the session reason from them.
//
// The monitoring and session-listing calls return the generated
// sessionbroker.v1 messages (installed with the library under
// sessionbroker/v1/), as do the raw stubs for anything else.
#ifndef SESSIONBROKER_CLIENT_CLIENT_H_
#define SESSIONBROKER_CLIENT_CLIENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "sessionbroker/result.h"
#include "sessionbroker/row_stream.h"
#include "sessionbroker/status.h"
#include "sessionbroker/subscription.h"
#include "sessionbroker/v1/broker.grpc.pb.h"
#include "sessionbroker/v1/monitor.grpc.pb.h"
#include "sessionbroker/value.h"

namespace sessionbroker {

namespace internal {
class ClientCore;
}  // namespace internal

// TLS to the broker from PEM files (docs/security.md, "Transport security"):
// `ca` is the bundle the broker's certificate must chain to (empty: the
// system's roots); `cert` and `key` are a client certificate chain and its
// private key, for a broker that asks for one (mutual TLS), both or neither.
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
};

// Credentials for ClientOptions::credentials from `files`, read once (a
// rotated client certificate takes a new Client). INVALID_ARGUMENT naming
// the file that cannot be read, or a cert without its key.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentials(const TlsFiles& files);

// When Execute and ExecuteBatch (one-shot and in a Session) go through the
// client's shared Pipeline stream (docs/clients.md, "Shared Pipeline
// stream") instead of a unary call each.
enum class PipelineMode {
  // Always unary.
  kOff,
  // The stream is opened once two of this client's Execute/ExecuteBatch
  // calls overlap; from then on, while it is open, every call uses it (a
  // lone call too: it is no slower on the stream). A client whose calls
  // never overlap holds no stream. The default.
  kConcurrent,
  // The first call opens the stream; every call uses it while it is open.
  kAlways,
};

struct ClientOptions {
  // The broker's address, e.g. "127.0.0.1:50051" or "dns:///broker:50051".
  std::string target;
  // Sent as "x-client-id" on every call: the broker's per-client session
  // quota and pool share, and what operators see. A broker with a clients
  // file ignores it and knows the client by its token.
  std::string client_id;
  // The bearer token the broker's clients file knows this service by, sent
  // as "authorization: Bearer <token>" on every call (the KeepAlive stream
  // too). Empty: the SB_TOKEN environment variable at Client::Create, if set.
  std::string token;
  // Channel credentials; null: insecure (plaintext). TlsCredentials() makes
  // TLS ones from PEM files.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  // The deadline of every unary call that sets none (CallOptions::deadline).
  absl::Duration default_deadline = absl::Seconds(30);
  // HTTP/2 keepalive pings while calls (such as the KeepAlive stream) are
  // open, so a dead connection is noticed; the broker accepts one every 10 s.
  absl::Duration keepalive_time = absl::Seconds(20);
  absl::Duration keepalive_timeout = absl::Seconds(10);
  // The KeepAlive stream's reconnect backoff after it breaks (doubling, with
  // jitter, up to the maximum).
  absl::Duration keepalive_reconnect_initial = absl::Milliseconds(100);
  absl::Duration keepalive_reconnect_max = absl::Seconds(5);
  // Calls on the shared Pipeline stream: opened on the first call that
  // would use it (that call and any until the broker's first message still
  // go unary), kept open, reopened after it breaks. Against a broker without
  // the method calls go unary (and the stream is tried again a minute
  // later). Outcomes are the unary calls' (codes, messages, SQLSTATE
  // details, deadlines), but for one: a call whose stream broke after it
  // was sent fails UNAVAILABLE and may or may not have been applied, as a
  // unary call that lost its connection; it is never resent.
  PipelineMode pipeline = PipelineMode::kConcurrent;
  // Extra channel arguments (e.g. GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH);
  // applied after the client's own.
  std::map<std::string, int> int_channel_args;
  // Use this channel instead of creating one from target/credentials (tests,
  // in-process servers); the service config and keepalive are then its own.
  std::shared_ptr<grpc::Channel> channel;
};

// Per call.
struct CallOptions {
  // Zero: ClientOptions::default_deadline.
  absl::Duration deadline = absl::ZeroDuration();
  // Execute, ExecuteBatch, Commit, and BeginSession (SessionOptions::call):
  // a retry with the same id returns the first outcome instead of doing the
  // work twice (docs/retries.md). At most 128 of A-Z a-z 0-9 - _ . : ~ (a
  // UUID); empty: none, but for BeginSession, which then makes one of its
  // own (Client::BeginSession). Ignored by the other calls.
  std::string request_id;
};

// A batch statement.
struct Statement {
  std::string sql;
  std::vector<Param> params;
};

enum class Isolation { kDefault, kReadCommitted, kRepeatableRead, kSerializable };

// BeginSession (docs/sessions.md).
struct SessionOptions {
  // Lease length; zero: the broker's BROKER_SESSION_DEFAULT_TTL. The
  // KeepAlive stream keeps renewing it while the Session lives.
  absl::Duration ttl = absl::ZeroDuration();
  bool read_only = false;
  Isolation isolation = Isolation::kDefault;
  // PostgreSQL settings for every statement of the session (search_path,
  // TimeZone, statement_timeout, ...: the broker's allow-list).
  std::map<std::string, std::string> settings;
  // Shown to operators.
  std::string label;
  CallOptions call;
};

class Session;

// Session::Begin and Client::Transaction.
struct TransactionOptions {
  Isolation isolation = Isolation::kDefault;  // kDefault: the session's
  bool read_only = false;
  bool deferrable = false;  // with kSerializable and read_only
  // Session::Begin only: CallOptions::request_id for BeginTransaction.
  std::string request_id;
  // Client::Transaction only: how many times fn runs at most (1: no retry),
  // and the backoff between attempts (exponential, full jitter).
  int max_attempts = 5;
  absl::Duration initial_backoff = absl::Milliseconds(20);
  absl::Duration max_backoff = absl::Seconds(1);
  // Client::Transaction only: run in this session (it must have no open
  // transaction) instead of a fresh one begun with session_options.
  Session* session = nullptr;
  SessionOptions session_options;
};

// A leased session. Obtained from Client::BeginSession.
class Session {
 public:
  // Rolls back an open transaction and ends the session (errors ignored;
  // each call's deadline capped at 5 s), unless End() already did.
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // The broker's session name (pass it to operators' tools).
  const std::string& name() const { return name_; }
  // A transaction begun here is open (as far as this object knows: the
  // broker may have rolled it back; then Commit fails with ABORTED).
  bool in_transaction() const { return in_transaction_; }

  absl::StatusOr<Result> Execute(absl::string_view sql, std::vector<Param> params = {},
                                 const CallOptions& options = {});
  absl::StatusOr<std::vector<Result>> ExecuteBatch(std::vector<Statement> statements,
                                                   const CallOptions& options = {});
  // As Client::Stream, in this session (inside its transaction if one is
  // open; a failed stream fails the transaction as a failed Execute does).
  // Read the stream to its end before the session's next call: the broker
  // runs a session's calls one at a time.
  absl::StatusOr<std::unique_ptr<RowStream>> Stream(absl::string_view sql,
                                                    std::vector<Param> params = {},
                                                    const CallOptions& options = {});
  // BeginTransaction: pins a pooled connection until Commit or Rollback
  // (uses isolation, read_only and deferrable of `options`).
  absl::Status Begin(const TransactionOptions& options = {});
  // ABORTED: nothing was committed (the transaction is then still to be
  // rolled back: Rollback, or the destructor, does it).
  absl::Status Commit(const CallOptions& options = {});
  // Succeeds with no transaction open, as ROLLBACK does.
  absl::Status Rollback(const CallOptions& options = {});
  // Ends the session now (rolling back an open transaction); the destructor
  // then does nothing. Calls after End fail with FAILED_PRECONDITION.
  absl::Status End(const CallOptions& options = {});
  // The broker's view of the session (GetSession).
  absl::StatusOr<v1::Session> Get(const CallOptions& options = {});

 private:
  friend class Client;
  Session(std::shared_ptr<internal::ClientCore> core, std::string name);

  std::shared_ptr<internal::ClientCore> core_;
  std::string name_;
  bool in_transaction_ = false;
  bool ended_ = false;
};

// The shared Pipeline stream's counters (Client::pipeline_stats).
struct PipelineStats {
  int64_t streams_opened = 0;   // streams this client opened (or tried to)
  int64_t stream_calls = 0;     // calls answered through a stream
  int64_t stream_messages = 0;  // request messages written (calls / messages: coalescing)
  int64_t unary_calls = 0;      // Execute/ExecuteBatch calls sent as unary calls
  int64_t handed_back = 0;      // calls a stream returned unsent (they went unary)
  // Streams that ended before the broker's first message (UNIMPLEMENTED, a
  // draining or unreachable broker): calls then go unary for a while.
  int64_t streams_failed = 0;
  bool stream_ready = false;  // a stream is open and takes calls now
};

// grpc.health.v1 serving status.
enum class ServingStatus { kUnknown, kServing, kNotServing, kServiceUnknown };

// Lets another thread stop a WatchPoolStatus call. Thread-safe.
class WatchCanceller {
 public:
  WatchCanceller();
  ~WatchCanceller();
  // Ends the watch: WatchPoolStatus returns OK soon after, whether it has
  // started yet or not.
  void Cancel();

 private:
  friend class Client;
  struct State;
  std::shared_ptr<State> state_;
};

class Client {
 public:
  // Creates the channel (no connection is made until the first call).
  // INVALID_ARGUMENT without a target or channel.
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // One statement in autocommit mode on any pooled connection.
  absl::StatusOr<Result> Execute(absl::string_view sql, std::vector<Param> params = {},
                                 const CallOptions& options = {});
  // Statements in one transaction: all applied or none.
  absl::StatusOr<std::vector<Result>> ExecuteBatch(std::vector<Statement> statements,
                                                   const CallOptions& options = {});

  // One statement in autocommit mode, its result streamed in bounded memory
  // (StreamExecute; row_stream.h). Returns once the columns have arrived;
  // an error before them (syntax, permissions, the pool wait) is returned
  // here. No deadline unless options.deadline sets one (the deadline, when
  // set, also bounds the statement in PostgreSQL); options.request_id must
  // be empty (the broker refuses it for streams: INVALID_ARGUMENT).
  absl::StatusOr<std::unique_ptr<RowStream>> Stream(absl::string_view sql,
                                                    std::vector<Param> params = {},
                                                    const CallOptions& options = {});

  // Subscribes to LISTEN/NOTIFY `channels` (1 to 64 names, used exactly as
  // given: "Orders" needs NOTIFY "Orders"); returns once the broker listens
  // on all of them (subscription.h). No deadline unless options.deadline
  // sets one. INVALID_ARGUMENT for a bad channel list, UNAVAILABLE when the
  // broker cannot open its listener connection.
  absl::StatusOr<std::unique_ptr<Subscription>> Listen(std::vector<std::string> channels,
                                                       const CallOptions& options = {});

  // Leases a session, held by the client's KeepAlive stream until the
  // Session is destroyed or ended. The request carries
  // options.call.request_id, or a random UUID when it is empty. A BeginSession
  // that fails UNAVAILABLE (the connection broke under the call: a broker
  // restart, an idle connection closed just then) is made again, with the same
  // request_id, so that a broker which opened the session for an attempt whose
  // answer was lost answers with that session instead of leasing a second
  // (docs/retries.md): at most 3 attempts in all, 50 and 100 ms apart, all
  // within the one deadline of options.call, and none begun with less than
  // 250 ms of it left (the last UNAVAILABLE is returned then). Any other
  // error is returned at once.
  absl::StatusOr<std::unique_ptr<Session>> BeginSession(const SessionOptions& options = {});

  // Runs fn in a transaction (on options.session, or on a fresh session
  // begun as BeginSession does, retries included, and ended afterwards) and
  // commits. When fn or Commit fails with a retryable
  // error (IsRetryableTransactionError: ABORTED, SQLSTATE 40001/40P01), rolls
  // back, waits (exponential backoff with jitter) and runs fn again, at most
  // options.max_attempts times in all; returns the last error. Any other
  // error from fn rolls back and is returned as is; a failed Begin is
  // returned without a Rollback (it would undo a transaction options.session
  // already had open). fn must not Commit or
  // Rollback itself, and must be safe to run more than once.
  absl::Status Transaction(const std::function<absl::Status(Session&)>& fn,
                           const TransactionOptions& options = {});

  // ---- operators ----
  absl::StatusOr<v1::PoolStatus> GetPoolStatus(const CallOptions& options = {});
  // Calls on_status with a snapshot at once and then one every `interval`
  // (the broker's minimum is 100 ms) until on_status returns false, `cancel`
  // is cancelled (both: OK), or the stream fails (its error). Blocks.
  absl::Status WatchPoolStatus(absl::Duration interval,
                               const std::function<bool(const v1::PoolStatus&)>& on_status,
                               WatchCanceller* cancel = nullptr);
  // One page of open sessions; empty client_id: every client's.
  absl::StatusOr<v1::ListSessionsResponse> ListSessions(absl::string_view client_id = "",
                                                        int32_t page_size = 0,
                                                        absl::string_view page_token = "",
                                                        const CallOptions& options = {});
  absl::StatusOr<v1::Session> GetSession(absl::string_view name, const CallOptions& options = {});
  // Ends any session by name (an operator's tool); returns whether an open
  // transaction was rolled back.
  absl::StatusOr<bool> EndSession(absl::string_view name, const CallOptions& options = {});
  // grpc.health.v1 Check: "" is liveness, "sessionbroker.v1.SessionBroker"
  // readiness (docs/operations.md).
  absl::StatusOr<ServingStatus> Health(absl::string_view service = "",
                                       const CallOptions& options = {});

  // The shared Pipeline stream's counters (thread-safe).
  PipelineStats pipeline_stats() const;

  // ---- anything else ----
  const std::shared_ptr<grpc::Channel>& channel() const;
  v1::SessionBroker::Stub& broker_stub();
  v1::PoolMonitor::Stub& monitor_stub();
  // A ClientContext with this client's deadline and x-client-id, for calls
  // on the raw stubs.
  std::unique_ptr<grpc::ClientContext> NewContext(const CallOptions& options = {}) const;
  const ClientOptions& options() const;

 private:
  explicit Client(std::shared_ptr<internal::ClientCore> core);
  std::shared_ptr<internal::ClientCore> core_;
};

}  // namespace sessionbroker

#endif  // SESSIONBROKER_CLIENT_CLIENT_H_
