// The complete example of docs/clients.md ("## C++"), built against the
// installed package and run against a live broker by the install test.
// Usage: quickstart [BROKER_ADDRESS]   (default 127.0.0.1:50051)
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "sessionbroker/client.h"

using sessionbroker::Client;
using sessionbroker::ClientOptions;
using sessionbroker::Result;
using sessionbroker::Row;
using sessionbroker::Session;

int main(int argc, char** argv) {
  ClientOptions options;
  options.target = argc > 1 ? argv[1] : "127.0.0.1:50051";
  options.client_id = "quickstart";
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(options);
  if (!client.ok()) {
    std::cerr << client.status() << "\n";
    return 1;
  }
  Client& broker = **client;

  // Autocommit statements; parameters are typed from their C++ values.
  absl::Status s = broker
                       .Execute(
                           "CREATE TABLE IF NOT EXISTS accounts ("
                           " id int8 PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL,"
                           " note text)")
                       .status();
  if (s.ok()) s = broker.Execute("TRUNCATE accounts").status();
  if (s.ok()) {
    s = broker
            .ExecuteBatch({{"INSERT INTO accounts VALUES ($1, $2, $3, $4)",
                            {1, "alice", sessionbroker::Numeric{"100.00"}, std::nullopt}},
                           {"INSERT INTO accounts VALUES ($1, $2, $3, $4)",
                            {2, "bob", sessionbroker::Numeric{"20.00"}, "new"}}})
            .status();
  }
  if (!s.ok()) {
    std::cerr << "setup failed: " << s << "\n";
    return 1;
  }

  // A transaction, re-run on serialization failures and deadlocks.
  s = broker.Transaction([](Session& tx) -> absl::Status {
    const char* move = "UPDATE accounts SET balance = balance + $2 WHERE id = $1";
    absl::Status st = tx.Execute(move, {1, sessionbroker::Numeric{"-30.00"}}).status();
    if (!st.ok()) return st;
    return tx.Execute(move, {2, sessionbroker::Numeric{"30.00"}}).status();
  });
  if (!s.ok()) {
    std::cerr << "transfer failed: " << s << "\n";
    return 1;
  }

  // Typed reads: a NULL needs std::optional.
  absl::StatusOr<Result> rows =
      broker.Execute("SELECT id, owner, balance, note FROM accounts ORDER BY id");
  if (!rows.ok()) {
    std::cerr << rows.status() << "\n";
    return 1;
  }
  for (const Row& row : *rows) {
    absl::StatusOr<int64_t> id = row.Get<int64_t>("id");
    absl::StatusOr<std::string> owner = row.Get<std::string>("owner");
    absl::StatusOr<std::string> balance = row.Get<std::string>("balance");
    absl::StatusOr<std::optional<std::string>> note = row.Get<std::optional<std::string>>("note");
    if (!id.ok() || !owner.ok() || !balance.ok() || !note.ok()) {
      std::cerr << "unexpected row\n";
      return 1;
    }
    std::cout << *id << " " << *owner << " " << *balance << " " << note->value_or("-") << "\n";
  }

  // Results of any size: rows are read from the broker as they are
  // consumed, so memory stays bounded.
  absl::StatusOr<std::unique_ptr<sessionbroker::RowStream>> stream =
      broker.Stream("SELECT generate_series(1, $1::int4) AS n", {100000});
  if (!stream.ok()) {
    std::cerr << stream.status() << "\n";
    return 1;
  }
  int64_t sum = 0;
  while (std::optional<Row> row = (*stream)->Next()) sum += row->GetOr<int64_t>("n", 0);
  if (!(*stream)->status().ok()) {
    std::cerr << "stream failed: " << (*stream)->status() << "\n";
    return 1;
  }
  std::cout << (*stream)->command_tag() << " " << sum << "\n";

  // LISTEN/NOTIFY: Listen returns once the broker listens on the channel.
  absl::StatusOr<std::unique_ptr<sessionbroker::Subscription>> sub = broker.Listen({"accounts"});
  if (!sub.ok()) {
    std::cerr << sub.status() << "\n";
    return 1;
  }
  s = broker.Execute("SELECT pg_notify('accounts', 'changed')").status();
  std::optional<sessionbroker::ListenEvent> event = (*sub)->Next();
  if (!s.ok() || !event.has_value()) {
    std::cerr << "notify failed: " << s << " " << (*sub)->status() << "\n";
    return 1;
  }
  if (const auto* n = std::get_if<sessionbroker::Notification>(&*event)) {
    std::cout << n->channel << " " << n->payload << "\n";
  }

  // Errors carry the SQLSTATE and PostgreSQL's fields.
  s = broker.Execute("INSERT INTO accounts VALUES ($1, $2, 0)", {1, "mallory"}).status();
  if (std::optional<sessionbroker::SqlError> e = sessionbroker::SqlErrorOf(s)) {
    std::cout << s.code() << " " << e->sqlstate << " " << e->constraint << "\n";
  }
  return 0;
}
