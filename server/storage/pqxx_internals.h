// The one place where the broker reaches into libpqxx's private members.
// libpqxx 6.4 keeps two things the adapter needs out of its public API:
//  - result::cmd_status() (PQcmdStatus, the command tag), which tells a
//    COMMIT from the ROLLBACK PostgreSQL answers for an aborted transaction
//    and a completed statement from the start of a COPY;
//  - connection_base::m_prepared, its registry of prepared statements, which
//    marks each "registered" once PostgreSQL has prepared it. Statements
//    deallocated behind libpqxx's back (DISCARD ALL, or a stale plan the
//    adapter drops) must be unregistered or forgotten there, or libpqxx would
//    execute a statement the server no longer has.
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

#include <map>
#include <pqxx/pqxx>
#include <pqxx/version.hxx>
#include <string>

// Written against libpqxx 6.4 (Debian bookworm's libpqxx-dev). On another
// version, read that version's private declarations of result::cmd_status
// and connection_base::m_prepared (and prepare::internal::prepared_def's
// `registered` flag): if they are unchanged, widen this check; if not, adapt
// the accessors below, or use the public API the version offers instead
// (libpqxx 7 has result::cmd_status() public and no m_prepared at all). The
// serving connection is to move to libpq's asynchronous API, which needs none
// of this.
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

using PreparedMap = std::map<std::string, pqxx::prepare::internal::prepared_def>;
using PreparedMapMember = PreparedMap pqxx::connection_base::*;
struct PreparedMapTag {
  friend PreparedMapMember GetPreparedMap(PreparedMapTag);
};
template <PreparedMapMember kMember>
struct PreparedMapAccess {
  friend PreparedMapMember GetPreparedMap(PreparedMapTag) { return kMember; }
};
template struct PreparedMapAccess<&pqxx::connection_base::m_prepared>;

// The result's command tag ("INSERT 0 1", "COMMIT"); empty if it has none.
inline std::string CommandTag(const pqxx::result& result) {
  const char* tag = (result.*GetCmdStatus(CmdStatusTag{}))();
  return tag == nullptr ? std::string() : std::string(tag);
}

// Makes libpqxx prepare every statement it knows again on its next use (the
// server deallocated them all: DISCARD ALL).
inline void MarkAllUnprepared(pqxx::connection_base& conn) {
  for (auto& [name, definition] : conn.*GetPreparedMap(PreparedMapTag{})) {
    definition.registered = false;
  }
}

// Makes libpqxx forget the prepared statement `name`, without deallocating
// it on the server.
inline void ForgetPrepared(pqxx::connection_base& conn, const std::string& name) {
  (conn.*GetPreparedMap(PreparedMapTag{})).erase(name);
}

}  // namespace sessionbroker::storage::pqxx_internals

#endif  // SESSIONBROKER_SERVER_STORAGE_PQXX_INTERNALS_H_
