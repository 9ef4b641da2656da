// The one place where the broker reaches into libpqxx's private members.
// libpqxx 6.4 keeps two things the adapter needs out of its public API:
//  - result::cmd_status() (PQcmdStatus, the command tag), which tells a
//    COMMIT from the ROLLBACK PostgreSQL answers for an aborted transaction;
//  - connection_base::m_conn, the libpq connection it owns: the adapter runs
//    the callers' statements on it with libpq itself (PQexecParams,
//    PQprepare, PQexecPrepared), because libpqxx 6.4 cannot send parameter
//    types, and reads their errors' fields with PQresultErrorField. libpqxx
//    keeps no state about those statements (the adapter prepares and
//    deallocates its statements itself, never through libpqxx), so the two
//    never disagree about the connection.
//
// How: access checks do not apply to the names in an explicit instantiation
// ([temp.explicit]), so instantiating a template on a pointer to the private
// member lets a friend function hand that pointer out. The members are
// exported from libpqxx.so, so this links against the stock library. It
// depends on private declarations, which any release may change: hence the
// version fence below.
//
// Include from pqxx_connection.cc only (the explicit instantiations must
// appear once in the program). Pure functions over the caller's objects;
// thread safety is that of the objects passed.
#ifndef SESSIONBROKER_SERVER_STORAGE_PQXX_INTERNALS_H_
#define SESSIONBROKER_SERVER_STORAGE_PQXX_INTERNALS_H_

#include <pqxx/pqxx>
#include <pqxx/version.hxx>
#include <string>

// Written against libpqxx 6.4 (Debian bookworm's libpqxx-dev). On another
// version, read that version's private declarations of result::cmd_status
// and connection_base::m_conn: if they are unchanged, widen this check; if
// not, adapt the accessors below, or use the public API the version offers
// instead (libpqxx 7 has result::cmd_status() public). The serving
// connection is to move to libpq's asynchronous API, which needs none of
// this.
#if PQXX_VERSION_MAJOR != 6 || PQXX_VERSION_MINOR != 4
#error "server/storage/pqxx_internals.h reaches private members of libpqxx 6.4 only; see there"
#endif

namespace sessionbroker::storage::pqxx_internals {

using CmdStatusFn = const char* (pqxx::result::*)() const noexcept;
struct CmdStatusTag {
  friend CmdStatusFn GetCmdStatus(CmdStatusTag);
};
template <CmdStatusFn kMember>
struct CmdStatusAccess {
  friend CmdStatusFn GetCmdStatus(CmdStatusTag) { return kMember; }
};
template struct CmdStatusAccess<&pqxx::result::cmd_status>;

using ConnMember = pqxx::internal::pq::PGconn* pqxx::connection_base::*;
struct ConnTag {
  friend ConnMember GetConn(ConnTag);
};
template <ConnMember kMember>
struct ConnAccess {
  friend ConnMember GetConn(ConnTag) { return kMember; }
};
template struct ConnAccess<&pqxx::connection_base::m_conn>;

// The result's command tag ("INSERT 0 1", "COMMIT"); empty if it has none.
inline std::string CommandTag(const pqxx::result& result) {
  const char* tag = (result.*GetCmdStatus(CmdStatusTag{}))();
  return tag == nullptr ? std::string() : std::string(tag);
}

// The libpq connection libpqxx owns; nullptr once it is closed
// (disconnect()). Owned by `conn`: never PQfinish it.
inline pqxx::internal::pq::PGconn* RawConnection(const pqxx::connection_base& conn) {
  return conn.*GetConn(ConnTag{});
}

}  // namespace sessionbroker::storage::pqxx_internals

#endif  // SESSIONBROKER_SERVER_STORAGE_PQXX_INTERNALS_H_
